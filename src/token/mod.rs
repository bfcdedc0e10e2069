//! Agent identity: the tokens a request carries, verified in Rust and bound to the
//! workload presenting them and the task they were issued for.
//!
//! ```text
//! headers -> extract (Authorization: Bearer|DPoP, Txn-Token, DPoP proof)
//!         -> verify   (issuer, algorithm, key, signature, aud/exp/nbf/iat/lifetime; cached)
//!         -> bind     (certificate, DPoP key, workload claim; task header)
//!         -> Identity
//! ```

mod bind;
mod claims;
mod document;
mod dpop;
mod error;
mod issuer;
mod keys;
pub mod mint;
mod verify;

use std::sync::Arc;

pub use claims::AgentClaims;
pub use document::TokenDocument;
pub use dpop::DpopSettings;
pub use error::TokenError;
pub use issuer::{HumanRule, Issuer, IssuerConfig, KeySource, TokenKind};
pub use keys::KeySet;
pub use verify::{CacheStats, MissingKey, Unverified, VerifiedToken};

use crate::quote::Quoted;
use crate::request::{PathAllowances, Target};
use crate::view::RequestView;
use dpop::{DpopVerifier, ProofContext};
use verify::Verifier;

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Every request needs a valid, bound token, except on unauthenticated routes.
    Required,
    /// Tokens are not looked at; policy decides alone. Explicit, and warned about.
    Off,
}

/// Header names tokens and the task arrive in (lowercase, as Envoy sends them).
#[derive(Debug, Clone)]
pub struct TokenHeaders {
    pub authorization: String,
    pub dpop: String,
    pub txn_token: String,
    pub task: String,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub mode: TokenMode,
    pub issuers: Vec<IssuerConfig>,
    pub headers: TokenHeaders,
    /// Refuse tokens that name no task.
    pub require_task: bool,
    pub cache_entries: usize,
    pub dpop: DpopSettings,
    /// How request paths are read, so a DPoP `htu` is read the same way.
    pub paths: PathAllowances,
}

impl TokenSettings {
    /// The longest any trusted token can stay valid from now: the largest issuer
    /// `max_lifetime` plus its leeway (15 minutes when no issuer is configured).
    pub fn max_lifetime(&self) -> std::time::Duration {
        self.issuers
            .iter()
            .map(|i| i.max_lifetime + i.leeway)
            .max()
            .unwrap_or(std::time::Duration::from_secs(900))
    }

    /// The largest clock leeway any issuer is given.
    pub fn max_leeway(&self) -> std::time::Duration {
        self.issuers
            .iter()
            .map(|i| i.leeway)
            .max()
            .unwrap_or_default()
    }
}

/// How the primary token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    Bearer,
    Dpop,
    TxnToken,
}

impl Presentation {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Dpop => "dpop",
            Self::TxnToken => "txn_token",
        }
    }
}

/// What binds the token to this request. Each `true` was checked, not assumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// `cnf.x5t#S256` matched the client certificate.
    pub certificate: bool,
    /// A DPoP proof from the `cnf.jkt` key checked out.
    pub dpop: bool,
    /// The workload claim matched the peer's certificate identity.
    pub workload_claim: bool,
    /// The task the token and the request agree on.
    pub task: Option<Arc<str>>,
}

/// A request's verified, bound credentials.
#[derive(Debug, Clone)]
pub struct Identity {
    pub token: Arc<VerifiedToken>,
    pub presented: Presentation,
    /// A transaction token sent beside an access token.
    pub txn: Option<Arc<VerifiedToken>>,
    pub binding: Binding,
}

/// Why authentication could not finish now.
#[derive(Debug)]
pub enum AuthFailure {
    Denied(TokenError),
    /// Fetching the issuer's keys may let the token verify; try once more after.
    NeedKeys(MissingKey),
}

impl From<TokenError> for AuthFailure {
    fn from(err: TokenError) -> Self {
        Self::Denied(err)
    }
}

impl From<Unverified> for AuthFailure {
    fn from(err: Unverified) -> Self {
        match err {
            Unverified::Denied(e) => Self::Denied(e),
            Unverified::UnknownKey(missing) if missing.issuer.refetch_possible() => {
                Self::NeedKeys(missing)
            }
            Unverified::UnknownKey(missing) => Self::Denied(missing.denial()),
        }
    }
}

/// Verifies and binds the tokens of each request.
#[derive(Debug)]
pub struct Authenticator {
    settings: TokenSettings,
    verifier: Verifier,
    dpop: DpopVerifier,
}

impl Authenticator {
    pub fn new(settings: TokenSettings) -> Result<Self, String> {
        let issuers = settings
            .issuers
            .iter()
            .map(|c| {
                Issuer::new(c.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("issuer {}: {e}", c.issuer))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            verifier: Verifier::new(issuers, settings.cache_entries),
            dpop: DpopVerifier::new(settings.dpop.clone()),
            settings,
        })
    }

    pub fn mode(&self) -> TokenMode {
        self.settings.mode
    }

    pub fn issuers(&self) -> &[Arc<Issuer>] {
        self.verifier.issuers()
    }

    /// How the verified-token cache serves.
    pub fn cache_stats(&self) -> CacheStats {
        self.verifier.cache_stats()
    }

    /// Reads every issuer's JWKS file or URL once, as `serve` does at start: for the
    /// commands that decide or inspect without serving. A source that fails is logged
    /// and leaves its issuer without keys.
    pub async fn load_key_sources(&self) -> Result<(), String> {
        for issuer in self.issuers() {
            if issuer.refetch_possible() {
                let client = issuer.http_client()?;
                if let Err(err) = issuer.load(&client).await {
                    tracing::warn!(issuer = %issuer.config.issuer, "{err}");
                }
            }
        }
        Ok(())
    }

    /// Verifies a token's signature and claims (no binding), as `leash token inspect` does.
    pub fn verify_token(&self, raw: &str, now: i64) -> Result<Arc<VerifiedToken>, TokenError> {
        self.verifier.verify(raw, now).map_err(|err| match err {
            Unverified::Denied(e) => e,
            Unverified::UnknownKey(missing) => missing.denial(),
        })
    }

    /// Verifies the tokens of `view`, whose canonical target is `target`, at unix
    /// time `now`, and binds them to the workload and the task.
    pub fn authenticate(
        &self,
        view: &RequestView,
        target: &Target<'_>,
        now: i64,
    ) -> Result<Identity, AuthFailure> {
        let h = &self.settings.headers;
        let authorization = view
            .header(&h.authorization)
            .map(parse_authorization)
            .transpose()?;
        let txn_raw = view
            .header(&h.txn_token)
            .map(str::trim)
            .filter(|t| !t.is_empty());

        let (raw, presented, txn) = match (authorization, txn_raw) {
            (Some((presented, raw)), txn) => (raw, presented, txn),
            (None, Some(txn)) => (txn, Presentation::TxnToken, None),
            (None, None) => return Err(TokenError::Missing.into()),
        };
        let token = self.verifier.verify(raw, now)?;
        let expected_kind = match presented {
            Presentation::TxnToken => TokenKind::Transaction,
            Presentation::Bearer | Presentation::Dpop => TokenKind::Access,
        };
        if token.kind() != expected_kind {
            return Err(TokenError::WrongPlacement(match expected_kind {
                TokenKind::Access => {
                    format!("a transaction token belongs in the {} header", h.txn_token)
                }
                TokenKind::Transaction => {
                    "an access token does not belong in the transaction token header".into()
                }
            })
            .into());
        }
        let txn = match txn {
            None => None,
            Some(raw) => {
                let txn = self.verifier.verify(raw, now)?;
                if txn.kind() != TokenKind::Transaction {
                    return Err(TokenError::WrongPlacement(format!(
                        "the {} header holds a token from an issuer not configured for transaction tokens",
                        h.txn_token
                    ))
                    .into());
                }
                // Bound on its own terms, as when it comes alone: beside an access
                // token it still speaks for a workload, and for the same subject: else
                // one principal's transaction could lend its task to another's token.
                if txn.claims.subject.is_none() || txn.claims.subject != token.claims.subject {
                    return Err(TokenError::SubjectMismatch.into());
                }
                self.bind_workload(view, target, &txn, Presentation::TxnToken, raw, now)?;
                Some(txn)
            }
        };

        let mut binding = self.bind_workload(view, target, &token, presented, raw, now)?;
        binding.task = self.bind_task(view, &token, txn.as_deref())?;
        Ok(Identity {
            token,
            presented,
            txn,
            binding,
        })
    }

    fn bind_workload(
        &self,
        view: &RequestView,
        target: &Target<'_>,
        token: &VerifiedToken,
        presented: Presentation,
        raw: &str,
        now: i64,
    ) -> Result<Binding, TokenError> {
        let claims = &token.claims;
        let mut binding = Binding::default();
        match (presented, &claims.jkt) {
            (Presentation::Dpop, Some(jkt)) => {
                let proof = view.header(&self.settings.headers.dpop).ok_or_else(|| {
                    TokenError::DpopInvalid(format!(
                        "no {} proof header",
                        self.settings.headers.dpop
                    ))
                })?;
                self.dpop.verify(
                    proof,
                    &ProofContext {
                        method: &view.method,
                        target,
                        allow: self.settings.paths,
                        access_token: raw,
                        jkt,
                        now,
                    },
                )?;
                binding.dpop = true;
            }
            (Presentation::Dpop, None) => {
                return Err(TokenError::DpopInvalid(
                    "the token is not DPoP-bound (no cnf.jkt)".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(TokenError::DpopInvalid(
                    "a DPoP-bound token must be sent as Authorization: DPoP with a proof".into(),
                ));
            }
            (_, None) => {}
        }
        if let Some(expected) = &claims.x5t_s256 {
            match bind::certificate_thumbprint(&view.source_certificate) {
                Some(actual) if actual == *expected => binding.certificate = true,
                Some(_) => {
                    return Err(TokenError::WorkloadMismatch(
                        "the client certificate is not the one the token is bound to (cnf.x5t#S256)".into(),
                    ));
                }
                None => {
                    return Err(TokenError::WorkloadMismatch(
                        "the token is bound to a client certificate and the request has none"
                            .into(),
                    ));
                }
            }
        }
        if let Some(workload) = &claims.workload {
            if *workload != view.source_principal {
                return Err(TokenError::WorkloadMismatch(format!(
                    "the token's workload {} is not the peer {}",
                    Quoted(workload),
                    Quoted(&view.source_principal)
                )));
            }
            binding.workload_claim = true;
        }
        let bound = binding.certificate || binding.dpop || binding.workload_claim;
        if !bound && token.issuer.config.require_workload_binding {
            return Err(TokenError::Unbound);
        }
        Ok(binding)
    }

    /// The task the tokens name must be the request's task (header `x-agent-task` by
    /// default). A transaction token may carry the task for an access token that names
    /// none; when both name one, they must agree.
    fn bind_task(
        &self,
        view: &RequestView,
        token: &VerifiedToken,
        txn: Option<&VerifiedToken>,
    ) -> Result<Option<Arc<str>>, TokenError> {
        let header = &self.settings.headers.task;
        let requested = view.header(header).map(str::trim).filter(|t| !t.is_empty());
        let txn_task = txn.and_then(|t| t.claims.task.as_ref());
        let task = match (token.claims.task.as_ref(), txn_task) {
            (Some(access), Some(txn)) if access != txn => {
                return Err(TokenError::TaskMismatch(format!(
                    "the transaction token is for {}, the access token for {}",
                    Quoted(txn),
                    Quoted(access)
                )));
            }
            (access, txn) => access.or(txn),
        };
        let Some(task) = task else {
            if self.settings.require_task {
                return Err(TokenError::TaskMissing(
                    token.issuer.config.task_claim.clone(),
                ));
            }
            return Ok(None);
        };
        match requested {
            None => Err(TokenError::TaskMismatch(format!(
                "the token is for task {} and the request names none ({header})",
                Quoted(task)
            ))),
            Some(r) if r != task.as_ref() => Err(TokenError::TaskMismatch(format!(
                "the token is for task {}, the request for {}",
                Quoted(task),
                Quoted(r)
            ))),
            Some(_) => Ok(Some(task.clone())),
        }
    }
}

/// `Bearer <token>` or `DPoP <token>`; other schemes are not tokens leash accepts.
fn parse_authorization(value: &str) -> Result<(Presentation, &str), TokenError> {
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    let presented = if scheme.eq_ignore_ascii_case("bearer") {
        Presentation::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Presentation::Dpop
    } else {
        return Err(TokenError::Malformed(
            "the Authorization scheme must be Bearer or DPoP".into(),
        ));
    };
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok((presented, token))
}

/// Whole seconds of `d` as the claims count them, saturating.
fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

//! Token verification: find the issuer, check the algorithm, the signature and every
//! time claim, and remember the result. A repeated token is found in a bounded cache
//! keyed by the whole token and skips all signature work. Time claims
//! are checked on every hit, so a cached token is never accepted past its `exp`; it
//! leaves the cache when it is presented expired, when its issuer's keys change, or
//! when the bounded cache evicts it for newer tokens.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value as Json};

use super::claims::AgentClaims;
use super::document::TokenDocument;
use super::error::TokenError;
use super::issuer::{Issuer, TokenKind};
use super::keys::KeySet;
use super::secs;
use crate::quote::Quoted;
use regorus::Value;

/// A token whose signature and claims checked out.
#[derive(Debug)]
pub struct VerifiedToken {
    pub issuer: Arc<Issuer>,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: AgentClaims,
    /// What the policy sees of this token under `input.leash`.
    pub document: TokenDocument,
    /// The key set this token was verified against; a newer set means re-verify.
    keys: Option<Arc<KeySet>>,
}

impl VerifiedToken {
    pub fn kind(&self) -> TokenKind {
        self.issuer.config.kind
    }
}

/// Why verification could not finish now.
#[derive(Debug)]
pub enum Unverified {
    Denied(TokenError),
    /// The token names a key its issuer's set lacks; fetching the keys may help.
    UnknownKey(MissingKey),
}

/// A token naming a key its issuer has not published, or not yet.
#[derive(Debug)]
pub struct MissingKey {
    pub issuer: Arc<Issuer>,
    kid: String,
}

impl MissingKey {
    /// The denial when fetching the issuer's keys cannot help, or did not.
    pub fn denial(&self) -> TokenError {
        TokenError::UnknownKey(format!(
            "{} publishes no key {}",
            self.issuer.config.issuer,
            Quoted(&self.kid)
        ))
    }
}

impl From<TokenError> for Unverified {
    fn from(err: TokenError) -> Self {
        Self::Denied(err)
    }
}

/// Verified tokens by the whole token: a fast keyed hash finds the entry and a full
/// comparison confirms it, so no other token can ever be taken for a cached one, and a
/// repeated token costs no cryptographic digest.
pub type TokenCache = quick_cache::sync::Cache<Box<str>, Arc<VerifiedToken>>;

/// How the verified-token cache serves, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<Arc<Issuer>>,
    cache: TokenCache,
}

impl Verifier {
    pub fn new(issuers: Vec<Arc<Issuer>>, cache_entries: usize) -> Self {
        Self {
            issuers,
            cache: TokenCache::new(cache_entries.max(1)),
        }
    }

    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// The cache's hits, misses and entries so far.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.cache.hits(),
            misses: self.cache.misses(),
            entries: self.cache.len() as u64,
        }
    }

    /// Verifies `raw` at unix time `now`, from the cache when it can.
    pub fn verify(&self, raw: &str, now: i64) -> Result<Arc<VerifiedToken>, Unverified> {
        if let Some(hit) = self.cache.get(raw) {
            let keys_unchanged = hit
                .keys
                .as_ref()
                .is_none_or(|keys| Arc::ptr_eq(keys, &hit.issuer.keys()));
            if keys_unchanged {
                // Signature and shape were checked when it was cached; time moves on.
                if let Err(err) = check_times(&hit.claims, &hit.issuer, now) {
                    if matches!(err, TokenError::Expired { .. }) {
                        self.cache.remove(raw);
                    }
                    return Err(err.into());
                }
                return Ok(hit);
            }
            self.cache.remove(raw);
        }
        let verified = Arc::new(self.verify_uncached(raw, now)?);
        self.cache.insert(Box::from(raw), verified.clone());
        Ok(verified)
    }

    fn verify_uncached(&self, raw: &str, now: i64) -> Result<VerifiedToken, Unverified> {
        let parts = Parts::split(raw)?;
        let header = parts.header()?;
        let claims = parts.claims()?;

        let iss = claims
            .get("iss")
            .and_then(Json::as_str)
            .ok_or(TokenError::MissingClaim("iss"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(iss.to_owned()))?;

        let alg_name = header.get("alg").and_then(Json::as_str).unwrap_or("none");
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|alg| issuer.config.algorithms.contains(alg))
            // Quoted: the name comes from an unverified header and reaches the log.
            .ok_or_else(|| TokenError::AlgNotAllowed(Quoted(alg_name).to_string()))?;
        if issuer.config.kind == TokenKind::Transaction
            && header.get("typ").and_then(Json::as_str) != Some("txntoken+jwt")
        {
            return Err(TokenError::Malformed(
                "a transaction token must have typ txntoken+jwt".into(),
            )
            .into());
        }
        let kid = header.get("kid").and_then(Json::as_str);

        let keys = if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            // Only the configured secret: never a key from the JWKS.
            let key = issuer.hmac().ok_or_else(|| {
                TokenError::AlgNotAllowed(format!("{alg_name} (no HMAC secret is configured)"))
            })?;
            verify_signature(&parts, key, alg)?;
            None
        } else {
            let set = issuer.keys();
            let mut candidates = set.candidates(kid, alg).peekable();
            if candidates.peek().is_none() {
                return Err(match kid {
                    Some(kid) if !set.has_kid(kid) => Unverified::UnknownKey(MissingKey {
                        issuer: issuer.clone(),
                        kid: kid.to_owned(),
                    }),
                    Some(kid) => {
                        TokenError::AlgNotAllowed(format!("{alg_name} for key {}", Quoted(kid)))
                            .into()
                    }
                    None => TokenError::UnknownKey(format!("{iss} has no {alg_name} key")).into(),
                });
            }
            if !candidates.any(|k| verify_signature(&parts, &k.key, alg).is_ok()) {
                return Err(TokenError::BadSignature.into());
            }
            Some(Arc::clone(&set))
        };

        let agent = AgentClaims::read(&claims, &issuer.config)?;
        check_audience(&claims, &issuer.config.audiences)?;
        check_times(&agent, issuer, now)?;
        check_lifetime(&agent, issuer, now)?;
        let kind = match issuer.config.kind {
            TokenKind::Access => "access",
            TokenKind::Transaction => "transaction",
        };
        let document = TokenDocument::build(
            &issuer.config.issuer,
            kind,
            alg,
            kid,
            &agent,
            &Value::from(Json::Object(claims)),
        );
        Ok(VerifiedToken {
            issuer: issuer.clone(),
            alg,
            kid: kid.map(str::to_owned),
            claims: agent,
            document,
            keys,
        })
    }
}

/// The three parts of a compact JWS.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signed: &'a str,
    signature: &'a str,
}

impl<'a> Parts<'a> {
    fn split(raw: &'a str) -> Result<Self, TokenError> {
        let mut it = raw.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(TokenError::Malformed(
                "not a compact JWS (three dot-separated parts)".into(),
            ));
        };
        let signed = raw
            .get(..header.len() + 1 + payload.len())
            .ok_or_else(|| TokenError::Malformed("not a compact JWS".into()))?;
        Ok(Self {
            header,
            payload,
            signed,
            signature,
        })
    }

    fn header(&self) -> Result<Map<String, Json>, TokenError> {
        decode_json(self.header, "header")
    }

    fn claims(&self) -> Result<Map<String, Json>, TokenError> {
        decode_json(self.payload, "claims")
    }
}

pub(crate) fn decode_json(part: &str, what: &str) -> Result<Map<String, Json>, TokenError> {
    crate::jws::json_part(part, what).map_err(TokenError::Malformed)
}

fn verify_signature(
    parts: &Parts<'_>,
    key: &jsonwebtoken::DecodingKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    match jsonwebtoken::crypto::verify(parts.signature, parts.signed.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        _ => Err(TokenError::BadSignature),
    }
}

fn check_audience(claims: &Map<String, Json>, accepted: &[String]) -> Result<(), TokenError> {
    let listed: Vec<&str> = match claims.get("aud") {
        Some(Json::String(aud)) => vec![aud.as_str()],
        Some(Json::Array(auds)) => auds.iter().filter_map(Json::as_str).collect(),
        _ => return Err(TokenError::MissingClaim("aud")),
    };
    if listed.iter().any(|aud| accepted.iter().any(|a| a == aud)) {
        Ok(())
    } else {
        Err(TokenError::WrongAudience(listed.join(" ")))
    }
}

/// `exp` is required and must be ahead; `nbf` and `iat` must not be ahead.
fn check_times(claims: &AgentClaims, issuer: &Issuer, now: i64) -> Result<(), TokenError> {
    let leeway = secs(issuer.config.leeway);
    let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp });
    }
    for at in [claims.nbf, claims.iat].into_iter().flatten() {
        if at > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid { at });
        }
    }
    Ok(())
}

/// A token valid for longer than the issuer's maximum is standing authority. Without
/// `iat` or `nbf`, the lifetime is counted from now.
fn check_lifetime(claims: &AgentClaims, issuer: &Issuer, now: i64) -> Result<(), TokenError> {
    let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
    let start = claims.iat.or(claims.nbf).unwrap_or(now);
    let lifetime = exp.saturating_sub(start);
    let max = secs(issuer.config.max_lifetime);
    if lifetime > max {
        return Err(TokenError::LifetimeExceeded { lifetime, max });
    }
    Ok(())
}

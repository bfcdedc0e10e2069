//! The `tokens:` and `actions:` sections: trusted issuers and their keys, where tokens
//! arrive, routes that need none, and the operator's action rules and tool table.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::glob::RouteMatcher;
use crate::token::{
    DpopSettings, HumanRule, IssuerConfig, KeySource, TokenHeaders, TokenKind, TokenMode,
    TokenSettings,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokens {
    pub mode: String,
    pub require_task: bool,
    pub headers: RawHeaders,
    pub cache_entries: usize,
    pub key_wait: String,
    pub dpop: RawDpop,
    pub unauthenticated: Vec<RouteMatch>,
    pub issuers: Vec<RawIssuer>,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            mode: "required".into(),
            require_task: true,
            headers: RawHeaders::default(),
            cache_entries: 10_000,
            key_wait: "200ms".into(),
            dpop: RawDpop::default(),
            unauthenticated: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    pub authorization: String,
    pub dpop: String,
    pub txn_token: String,
    pub task: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            authorization: "authorization".into(),
            dpop: "dpop".into(),
            txn_token: "txn-token".into(),
            task: "x-agent-task".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDpop {
    pub max_age: String,
    pub leeway: String,
    pub algorithms: Vec<String>,
    pub replay_entries: usize,
}

impl Default for RawDpop {
    fn default() -> Self {
        Self {
            max_age: "60s".into(),
            leeway: "5s".into(),
            algorithms: ["ES256", "EdDSA", "RS256", "PS256"]
                .map(String::from)
                .to_vec(),
            replay_entries: 100_000,
        }
    }
}

/// A route, by host, path and method globs; empty lists match anything.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteMatch {
    pub name: String,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
}

impl RouteMatch {
    fn compile(&self, at: &str) -> Result<RouteMatcher, Invalid> {
        RouteMatcher::compile(&self.hosts, &self.paths, &self.methods)
            .map_err(|e| bad(at, &e.pattern, e.why))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIssuer {
    pub issuer: String,
    pub kind: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks: Option<serde_json::Value>,
    pub jwks_file: String,
    pub jwks_url: String,
    pub jwks_ca_file: String,
    pub hmac_secret_file: String,
    pub refresh: String,
    pub min_refetch: String,
    pub fetch_timeout: String,
    pub max_lifetime: String,
    pub leeway: String,
    pub task_claim: String,
    pub workload_claim: String,
    pub require_workload_binding: bool,
    pub human: RawHuman,
}

/// How an issuer's tokens name the human on whose behalf an agent acts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHuman {
    pub from: String,
    pub claim: String,
    pub grant_type_claim: String,
    pub machine_grant_types: Vec<String>,
}

impl Default for RawHuman {
    fn default() -> Self {
        Self {
            from: "delegation".into(),
            claim: String::new(),
            grant_type_claim: "gty".into(),
            machine_grant_types: ["client_credentials", "client-credentials"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Default for RawIssuer {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            kind: "access".into(),
            audiences: Vec::new(),
            algorithms: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
            jwks: None,
            jwks_file: String::new(),
            jwks_url: String::new(),
            jwks_ca_file: String::new(),
            hmac_secret_file: String::new(),
            refresh: "5m".into(),
            min_refetch: "30s".into(),
            fetch_timeout: "2s".into(),
            max_lifetime: "15m".into(),
            leeway: "30s".into(),
            task_claim: String::new(),
            workload_claim: String::new(),
            require_workload_binding: true,
            human: RawHuman::default(),
        }
    }
}

/// The validated sections.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub settings: TokenSettings,
    /// How long a Check waits for keys when a token names an unknown key id.
    pub key_wait: Duration,
    /// Routes that need no token, compiled.
    pub unauthenticated: Vec<RouteMatcher>,
    /// Settings that work but invite trouble, logged once logging is up.
    pub warnings: Vec<String>,
}

/// A validation failure: the key, the value, and how to fix it.
pub type Invalid = (String, String, String);

pub(super) fn bad(
    key: impl Into<String>,
    value: impl Into<String>,
    hint: impl Into<String>,
) -> Invalid {
    (key.into(), value.into(), hint.into())
}

pub(super) fn duration(key: &str, value: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(value)
        .map_err(|_| bad(key, value, "use a duration such as 500ms, 30s or 15m"))
}

/// Why a secret file deserves a warning: readable by others than its owner. Not a
/// refusal: Kubernetes mounts Secrets 0644 unless `defaultMode` says otherwise.
fn shared_secret(key: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{key}: {path} is readable by group or others (mode {mode:o}); chmod 600 it, or in Kubernetes set the Secret volume's defaultMode: 0400"
        )
    })
}

/// Key sources are read no more often than this on schedule...
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// ...nor on demand, however many tokens name unknown keys.
const MIN_REFETCH: Duration = Duration::from_secs(1);

fn at_least(key: &str, value: &str, min: Duration) -> Result<Duration, Invalid> {
    let d = duration(key, value)?;
    if d < min {
        return Err(bad(
            key,
            value,
            format!(
                "must be at least {}, or leash hammers the identity provider",
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

pub(super) fn header(key: &str, value: &str) -> Result<String, Invalid> {
    let name = value.trim().to_ascii_lowercase();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(key, value, "use a header name such as x-agent-task"));
    }
    Ok(name)
}

fn algorithms(key: &str, names: &[String], what: &str) -> Result<Vec<Algorithm>, Invalid> {
    if names.is_empty() {
        return Err(bad(
            key,
            "[]",
            format!("list the algorithms {what} may use, e.g. [RS256, ES256, EdDSA]"),
        ));
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") {
                return Err(bad(key, name, "unsigned tokens (alg none) are never accepted"));
            }
            Algorithm::from_str(name)
                .map_err(|_| bad(key, name, "use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA or HS256/384/512"))
        })
        .collect()
}

impl RawTokens {
    pub fn validate(&self) -> Result<TokensConfig, Invalid> {
        let mode = match self.mode.as_str() {
            "required" => TokenMode::Required,
            "off" => TokenMode::Off,
            other => return Err(bad("tokens.mode", other, "use required or off")),
        };
        let headers = TokenHeaders {
            authorization: header("tokens.headers.authorization", &self.headers.authorization)?,
            dpop: header("tokens.headers.dpop", &self.headers.dpop)?,
            txn_token: header("tokens.headers.txn_token", &self.headers.txn_token)?,
            task: header("tokens.headers.task", &self.headers.task)?,
        };
        let dpop_algorithms = algorithms(
            "tokens.dpop.algorithms",
            &self.dpop.algorithms,
            "DPoP proofs",
        )?;
        if let Some(hs) = dpop_algorithms
            .iter()
            .find(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(bad(
                "tokens.dpop.algorithms",
                format!("{hs:?}"),
                "DPoP proofs are signed with a private key: HMAC is not allowed",
            ));
        }
        let dpop = DpopSettings {
            max_age: duration("tokens.dpop.max_age", &self.dpop.max_age)?,
            leeway: duration("tokens.dpop.leeway", &self.dpop.leeway)?,
            algorithms: dpop_algorithms,
            replay_entries: self.dpop.replay_entries.max(1),
        };
        let issuers = self
            .issuers
            .iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("tokens.issuers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let warnings = self
            .issuers
            .iter()
            .enumerate()
            .filter(|(_, raw)| !raw.hmac_secret_file.is_empty())
            .filter_map(|(i, raw)| {
                shared_secret(
                    &format!("tokens.issuers[{i}].hmac_secret_file"),
                    &raw.hmac_secret_file,
                )
            })
            .collect();
        Ok(TokensConfig {
            warnings,
            settings: TokenSettings {
                mode,
                issuers,
                headers,
                require_task: self.require_task,
                cache_entries: self.cache_entries.max(1),
                dpop,
                // Set from `request:` once that section is read.
                paths: Default::default(),
            },
            key_wait: duration("tokens.key_wait", &self.key_wait)?,
            unauthenticated: self
                .unauthenticated
                .iter()
                .enumerate()
                .map(|(i, r)| r.compile(&format!("tokens.unauthenticated[{i}]")))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawIssuer {
    fn validate(&self, at: &str) -> Result<IssuerConfig, Invalid> {
        let key = |name: &str| format!("{at}.{name}");
        if self.issuer.trim().is_empty() {
            return Err(bad(
                key("issuer"),
                "",
                "set the `iss` value this issuer's tokens carry",
            ));
        }
        if self.audiences.is_empty() {
            return Err(bad(
                key("audiences"),
                "[]",
                "list the audiences leash accepts, e.g. [tools.example]",
            ));
        }
        let kind = match self.kind.as_str() {
            "access" => TokenKind::Access,
            "transaction" => TokenKind::Transaction,
            other => return Err(bad(key("kind"), other, "use access or transaction")),
        };
        let algorithms = algorithms(&key("algorithms"), &self.algorithms, "this issuer")?;
        let sources = [
            self.jwks.is_some(),
            !self.jwks_file.is_empty(),
            !self.jwks_url.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(bad(
                key("jwks"),
                "",
                "set only one of jwks, jwks_file and jwks_url",
            ));
        }
        let keys = if let Some(inline) = &self.jwks {
            KeySource::Inline(inline.to_string())
        } else if !self.jwks_file.is_empty() {
            KeySource::File(PathBuf::from(&self.jwks_file))
        } else if !self.jwks_url.is_empty() {
            if !self.jwks_url.starts_with("https://") {
                return Err(bad(
                    key("jwks_url"),
                    &self.jwks_url,
                    "keys are fetched over HTTPS only",
                ));
            }
            KeySource::Url {
                url: self.jwks_url.clone(),
                ca_file: (!self.jwks_ca_file.is_empty()).then(|| PathBuf::from(&self.jwks_ca_file)),
                timeout: duration(&key("fetch_timeout"), &self.fetch_timeout)?,
            }
        } else {
            KeySource::None
        };
        let hmac = algorithms
            .iter()
            .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac);
        let hmac_secret = if hmac {
            if self.hmac_secret_file.is_empty() {
                return Err(bad(
                    key("hmac_secret_file"),
                    "",
                    "HS* algorithms need an explicit secret file; a public key is never used as an HMAC secret",
                ));
            }
            let secret = std::fs::read(&self.hmac_secret_file).map_err(|e| {
                bad(
                    key("hmac_secret_file"),
                    &self.hmac_secret_file,
                    format!("cannot read it: {e}"),
                )
            })?;
            let secret = secret.trim_ascii().to_vec();
            if secret.len() < 32 {
                return Err(bad(
                    key("hmac_secret_file"),
                    &self.hmac_secret_file,
                    "the secret must be at least 32 bytes",
                ));
            }
            Some(secret)
        } else {
            None
        };
        let asymmetric = algorithms
            .iter()
            .any(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac);
        if asymmetric && keys == KeySource::None {
            return Err(bad(
                key("jwks_url"),
                "",
                "asymmetric algorithms need keys: set jwks_url, jwks_file or jwks",
            ));
        }
        if let KeySource::Inline(jwks) = &keys {
            crate::token::KeySet::from_jwks(jwks).map_err(|e| bad(key("jwks"), "", e))?;
        }
        let human = match self.human.from.as_str() {
            "delegation" => HumanRule::Delegation,
            "client" => HumanRule::Client,
            "claim" if !self.human.claim.trim().is_empty() => {
                HumanRule::Claim(self.human.claim.trim().to_owned())
            }
            "claim" => {
                return Err(bad(
                    key("human.claim"),
                    "",
                    "with human.from: claim, name the claim that holds the human, e.g. email",
                ));
            }
            other => {
                return Err(bad(
                    key("human.from"),
                    other,
                    "use delegation (act names the agents), client (azp or client_id names the agent) or claim",
                ));
            }
        };
        Ok(IssuerConfig {
            issuer: self.issuer.clone(),
            human,
            grant_type_claim: (!self.human.grant_type_claim.is_empty())
                .then(|| self.human.grant_type_claim.clone()),
            machine_grant_types: self.human.machine_grant_types.clone(),
            kind,
            audiences: self.audiences.clone(),
            algorithms,
            keys,
            hmac_secret,
            max_lifetime: duration(&key("max_lifetime"), &self.max_lifetime)?,
            leeway: duration(&key("leeway"), &self.leeway)?,
            task_claim: if self.task_claim.is_empty() {
                if kind == TokenKind::Transaction {
                    "txn".into()
                } else {
                    "task_id".into()
                }
            } else {
                self.task_claim.clone()
            },
            workload_claim: (!self.workload_claim.is_empty()).then(|| self.workload_claim.clone()),
            require_workload_binding: self.require_workload_binding,
            refresh: at_least(&key("refresh"), &self.refresh, MIN_REFRESH)?,
            min_refetch: at_least(&key("min_refetch"), &self.min_refetch, MIN_REFETCH)?,
        })
    }
}

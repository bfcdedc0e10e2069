//! Per-invocation credentials: after an allow, where the configuration or the policy
//! asks, leash mints a short-lived JWT for exactly this call (this resource, this
//! action class, this task, this human and agent chain) and sends it upstream in place
//! of the agent's token, which never reaches the tool.
//!
//! ```text
//! Permit + typed facts -> ceiling (configured audience, the action's scope, TTL)
//!                      -> narrowed by the policy's `mint` ask (wider: mint.widening)
//!                      -> claims -> signed with the ring's signer (fails: mint.failed)
//!                      -> Credential on the Permit (authorization set, the rest removed)
//! ```

mod exposure;
pub mod keys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::action::{ActionClass, Resource, ResourceKind};
use crate::effects::{Credential, MintAsk};

pub use exposure::{Exposure, exposed};
pub use keys::{KeyError, KeyRing, Signer, SigningAlgorithm};

/// The longest a minted credential may live, whatever is configured.
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// The claim naming the task, as leash reads it from agent tokens by default.
pub const TASK_CLAIM: &str = "task_id";

/// Which calls get a credential, and its claims.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// `iss` of every minted token.
    pub issuer: String,
    pub algorithm: SigningAlgorithm,
    /// The lifetime a credential gets, and the most a rule may give.
    pub ttl: Duration,
    /// Where the configuration asks for one, first match wins.
    pub rules: Vec<MintRule>,
    /// The header the credential is set in (the agent's `authorization`).
    pub header: Arc<str>,
    /// Headers removed from the upstream request with a credential: the agent's DPoP
    /// proof and transaction token, and the operator's own.
    pub remove: Arc<[String]>,
    /// `cnf.x5t#S256`: the certificate Envoy presents upstream, when configured.
    pub certificate_thumbprint: Option<String>,
    /// PEM private keys; `None` signs with a key generated at start.
    pub keys_dir: Option<PathBuf>,
    /// How often the key directory is looked at for a new key.
    pub watch_interval: Duration,
    /// How long beyond a credential's lifetime a superseded key stays published: the
    /// time every sidecar sharing the key directory takes to see the new key.
    pub rotation_grace: Duration,
}

impl CredentialSettings {
    /// Seconds a superseded key stays published at least: a credential's lifetime
    /// plus the rotation grace.
    pub fn linger(&self) -> i64 {
        secs(self.ttl.saturating_add(self.rotation_grace))
    }
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            issuer: "leash".into(),
            algorithm: SigningAlgorithm::EdDSA,
            ttl: Duration::from_secs(60),
            rules: Vec::new(),
            header: Arc::from("authorization"),
            remove: Arc::from(vec!["dpop".to_owned(), "txn-token".to_owned()]),
            certificate_thumbprint: None,
            keys_dir: None,
            watch_interval: Duration::from_secs(10),
            rotation_grace: Duration::from_secs(300),
        }
    }
}

/// A configured reason to mint: the resources it covers, and the claims it sets.
#[derive(Debug, Clone, Default)]
pub struct MintRule {
    pub resources: Vec<ResourcePattern>,
    /// `aud`; `None`: the canonical host.
    pub audience: Option<String>,
    /// At most the configured `ttl`.
    pub ttl: Option<Duration>,
}

/// A resource id pattern: `*`, `<kind>:*` or `<kind>:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcePattern {
    Any,
    Kind(ResourceKind),
    Exact(ResourceKind, String),
}

impl ResourcePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| "use *, <kind>:* or <kind>:<name>, e.g. tool:create_issue".to_owned())?;
        let kind = ResourceKind::parse(kind).ok_or_else(|| {
            format!("{kind:?} is no resource kind: use tool, resource, prompt, rule or host")
        })?;
        match name {
            "" => Err("name the resource after the colon, or * for all of its kind".into()),
            "*" => Ok(Self::Kind(kind)),
            name => Ok(Self::Exact(kind, name.to_owned())),
        }
    }

    fn matches(&self, resource: &Resource) -> bool {
        match self {
            Self::Any => true,
            Self::Kind(kind) => *kind == resource.kind,
            Self::Exact(kind, name) => *kind == resource.kind && **name == *resource.name,
        }
    }
}

/// Why no credential was minted: each denies the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The policy asked for more than the configuration gives.
    #[error("{0}")]
    Widening(String),
    /// Nothing to mint for, or signing failed: the agent's token is never sent instead.
    #[error("{0}")]
    Failed(String),
}

/// The call a credential is minted for, as leash verified it.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The delegating human, when there is one.
    pub human: Option<&'a str>,
    /// The party acting now.
    pub agent: &'a str,
    /// Every actor, current first (RFC 8693 `act`, flattened).
    pub chain: &'a [String],
    pub task: Option<&'a str>,
    pub resource: &'a Resource,
    pub class: ActionClass,
    /// The audience when no rule names one: the upstream as Envoy's route names it,
    /// else the canonical host (with its port when not the scheme's default).
    pub audience: &'a str,
    /// The earliest end of what authorizes the call: the agent's token, a
    /// transaction token beside it, the approval it spends.
    pub not_after: Option<i64>,
    pub now: i64,
}

/// Mints credentials with the serving key ring.
#[derive(Debug)]
pub struct Minter {
    settings: CredentialSettings,
    ring: ArcSwap<KeyRing>,
}

impl Minter {
    pub fn new(settings: CredentialSettings, ring: KeyRing) -> Self {
        Self {
            settings,
            ring: ArcSwap::from_pointee(ring),
        }
    }

    pub fn settings(&self) -> &CredentialSettings {
        &self.settings
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Makes `next` the signer at `now`; the old one stays published while its tokens
    /// can be valid. False when `next` already signs.
    pub fn rotate(&self, next: Signer, now: i64) -> bool {
        let current = self.ring.load();
        if current.signer().kid() == next.kid() {
            return false;
        }
        self.ring.store(Arc::new(current.rotate(
            Arc::new(next),
            now,
            secs(self.settings.ttl),
        )));
        true
    }

    /// The configured rule that asks for a credential on `resource`, if any.
    pub fn rule_for(&self, resource: &Resource) -> Option<&MintRule> {
        self.settings
            .rules
            .iter()
            .find(|rule| rule.resources.iter().any(|p| p.matches(resource)))
    }

    /// A credential for `call`, within `rule` (or the defaults, where only the policy
    /// asked) and narrowed by the policy's `ask`.
    pub fn mint(
        &self,
        call: &Invocation<'_>,
        rule: Option<&MintRule>,
        ask: Option<&MintAsk>,
    ) -> Result<Credential, MintError> {
        let audience = rule
            .and_then(|r| r.audience.as_deref())
            .unwrap_or(call.audience);
        let ceiling_ttl = secs(rule.and_then(|r| r.ttl).unwrap_or(self.settings.ttl));
        let scope = format!(
            "{}:{}:{}",
            call.resource.kind.name(),
            call.resource.name,
            call.class.name()
        );
        // A scope is one word: a name with a space in it would read as several scopes
        // to whoever splits the claim, one of them of the agent's choosing.
        if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(MintError::Failed(format!(
                "the resource {:?} holds whitespace or a control character, which no scope can carry",
                crate::quote::Quoted(&call.resource.name)
            )));
        }
        if let Some(asked) = ask.and_then(|a| a.audience.as_ref())
            && asked != audience
        {
            return Err(MintError::Widening(format!(
                "the policy asks for audience {asked:?}; this call's credential is for {audience:?} only"
            )));
        }
        let ttl = match ask.and_then(|a| a.ttl) {
            Some(0) => {
                return Err(MintError::Widening(
                    "the policy asks for a lifetime of 0 s".into(),
                ));
            }
            Some(t) if i64::try_from(t).map_or(true, |t| t > ceiling_ttl) => {
                return Err(MintError::Widening(format!(
                    "the policy asks for a lifetime of {t} s; at most {ceiling_ttl} s is configured"
                )));
            }
            Some(t) => i64::try_from(t).unwrap_or(ceiling_ttl),
            None => ceiling_ttl,
        };
        let scope = match ask.and_then(|a| a.scope.as_ref()) {
            None => scope,
            Some(asked) => {
                if let Some(wider) = asked.iter().find(|s| !covers(&scope, s)) {
                    return Err(MintError::Widening(format!(
                        "the policy asks for scope {wider:?}, which {scope:?} does not cover"
                    )));
                }
                asked.join(" ")
            }
        };
        let exp = call.not_after.map_or(call.now.saturating_add(ttl), |end| {
            end.min(call.now.saturating_add(ttl))
        });
        if exp <= call.now {
            return Err(MintError::Failed(
                "the agent's token or the approval ends now: no credential may outlive it".into(),
            ));
        }
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let claims = Claims {
            iss: &self.settings.issuer,
            sub: call.human.unwrap_or(call.agent),
            act: Act::of(call.chain, call.human.map(|_| call.agent)),
            aud: audience,
            scope: &scope,
            client_id: call.agent,
            task_id: call.task,
            jti: &jti,
            iat: call.now,
            exp,
            cnf: self
                .settings
                .certificate_thumbprint
                .as_deref()
                .map(|x5t| Cnf { x5t }),
        };
        let payload = serde_json::to_vec(&claims)
            .map_err(|e| MintError::Failed(format!("cannot write the claims: {e}")))?;
        let ring = self.ring.load();
        let signer = ring.signer();
        let token = signer
            .sign(&payload, exp)
            .map_err(|e| MintError::Failed(e.to_string()))?;
        Ok(Credential {
            header: self.settings.header.clone(),
            value: format!("Bearer {token}"),
            remove: self.settings.remove.clone(),
            jti: Arc::from(jti),
            exp,
            kid: signer.kid().clone(),
        })
    }
}

/// Whether `held` (`<kind>:<name>:<class>`) covers `asked`: the same resource, a class
/// no higher.
fn covers(held: &str, asked: &str) -> bool {
    let split = |s: &str| {
        s.rsplit_once(':')
            .and_then(|(resource, class)| Some((resource.to_owned(), level(class)?)))
    };
    match (split(held), split(asked)) {
        (Some((resource, held)), Some((asked_resource, asked))) => {
            resource == asked_resource && asked <= held
        }
        _ => false,
    }
}

fn level(class: &str) -> Option<u8> {
    match class {
        "read" => Some(1),
        "write" => Some(2),
        "destructive" => Some(3),
        _ => None,
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Act<'a>>,
    aud: &'a str,
    scope: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<&'a str>,
    jti: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Cnf<'a>>,
}

#[derive(Serialize)]
struct Cnf<'a> {
    #[serde(rename = "x5t#S256")]
    x5t: &'a str,
}

/// RFC 8693 `act`: the current actor outermost, each earlier one nested in it.
enum Act<'a> {
    Chain(&'a [String]),
    One(&'a str),
}

impl<'a> Act<'a> {
    /// The chain the token carried; else, when a human delegated, the agent alone.
    fn of(chain: &'a [String], agent_for_human: Option<&'a str>) -> Option<Self> {
        if chain.is_empty() {
            agent_for_human.map(Self::One)
        } else {
            Some(Self::Chain(chain))
        }
    }
}

impl Serialize for Act<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let (sub, rest) = match self {
            Self::One(sub) => (*sub, &[][..]),
            Self::Chain(chain) => match chain.split_first() {
                Some((first, rest)) => (first.as_str(), rest),
                None => ("", &[][..]),
            },
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("sub", sub)?;
        if !rest.is_empty() {
            map.serialize_entry("act", &Act::Chain(rest))?;
        }
        map.end()
    }
}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;

//! What a verified token says about who acts: the delegating human, the agent, the
//! chain of actors (RFC 8693 `act`), scopes, the task and the confirmation keys.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::HumanRule;
use super::error::TokenError;
use super::issuer::IssuerConfig;

/// The claims leash reads, taken from a verified token once and cached with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentClaims {
    pub subject: Option<String>,
    /// On whose behalf the request is made, when a human delegated.
    pub human: Option<Arc<str>>,
    /// The party acting now: the outermost `act`, else the client, else the subject.
    pub agent: Option<Arc<str>>,
    /// Every actor, outermost (current) first.
    pub chain: Vec<String>,
    pub scopes: Vec<String>,
    pub task: Option<Arc<str>>,
    /// `cnf.x5t#S256`: the certificate the token is bound to (RFC 8705).
    pub x5t_s256: Option<String>,
    /// `cnf.jkt`: the DPoP key the token is bound to (RFC 9449).
    pub jkt: Option<String>,
    /// The workload identity claim, when the issuer names one.
    pub workload: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    /// The token's id, by which it can be revoked.
    pub jti: Option<Arc<str>>,
}

impl AgentClaims {
    /// Reads the claims of a token from `issuer`. An `act` that does not name each
    /// actor is refused: delegation resting on a missing name is no delegation.
    pub fn read(claims: &Map<String, Value>, issuer: &IssuerConfig) -> Result<Self, TokenError> {
        // An empty string names nobody: it binds no workload and is no human.
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let time = |name: &str| claims.get(name).and_then(Value::as_i64);
        let workload_claim = issuer.workload_claim.as_deref();
        let subject = text("sub");
        let (chain, actor_ids) = actors(claims.get("act"))?;
        let client = text("client_id").or_else(|| text("azp"));
        let acting_client = client.filter(|c| Some(c) != subject.as_ref());
        let agent = chain
            .first()
            .cloned()
            .or_else(|| acting_client.clone())
            .or_else(|| workload_claim.and_then(&text))
            .or_else(|| subject.clone());
        // Delegation is real only when someone other than the actors is named, by any
        // of the names an actor carries.
        let delegated = subject
            .as_ref()
            .filter(|s| !chain.is_empty() && !actor_ids.contains(*s));
        let machine_grant = issuer
            .grant_type_claim
            .as_deref()
            .and_then(|name| claims.get(name))
            .is_some_and(|grant| match grant {
                Value::String(g) => issuer.machine_grant_types.contains(g),
                Value::Array(grants) => grants.iter().any(|g| {
                    g.as_str()
                        .is_some_and(|g| issuer.machine_grant_types.iter().any(|m| m == g))
                }),
                _ => false,
            });
        let human = if machine_grant {
            None
        } else {
            match &issuer.human {
                HumanRule::Delegation => delegated.cloned(),
                HumanRule::Client => delegated
                    .or_else(|| subject.as_ref().filter(|_| acting_client.is_some()))
                    .cloned(),
                HumanRule::Claim(name) => text(name),
            }
        };
        let cnf = claims.get("cnf").and_then(Value::as_object);
        let cnf_text = |name: &str| {
            cnf.and_then(|c| c.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Self {
            human: human.map(Arc::from),
            agent: agent.map(Arc::from),
            chain,
            scopes: scopes(claims),
            task: claims
                .get(&issuer.task_claim)
                .and_then(scalar_text)
                .map(Arc::from),
            x5t_s256: cnf_text("x5t#S256"),
            jkt: cnf_text("jkt"),
            workload: workload_claim.and_then(text),
            exp: time("exp"),
            iat: time("iat"),
            // A numeric `jti` is an id too: a revocation names it as text.
            jti: claims.get("jti").and_then(scalar_text).map(Arc::from),
            nbf: time("nbf"),
            subject,
        })
    }

    pub fn depth(&self) -> usize {
        self.chain.len()
    }
}

/// `act` nests prior actors inside the current one: `{"sub": "b", "act": {"sub": "a"}}`
/// means b acts now, for a who acted before. Returns the chain, current first, by each
/// actor's first name among `sub`, `client_id` and `azp`, and every name any actor
/// carries. An actor with none of them is refused.
fn actors(mut act: Option<&Value>) -> Result<(Vec<String>, Vec<String>), TokenError> {
    let mut chain = Vec::new();
    let mut ids = Vec::new();
    // Bounded: a token nesting deeper than this is not describing a real chain.
    for _ in 0..32 {
        let Some(actor) = act else { break };
        let Some(obj) = actor.as_object() else {
            return Err(TokenError::Malformed("act must be an object".into()));
        };
        let names: Vec<&str> = ["sub", "client_id", "azp"]
            .iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .collect();
        let Some(first) = names.first() else {
            return Err(TokenError::Malformed(
                "an actor in act names itself by no sub, client_id or azp".into(),
            ));
        };
        chain.push((*first).to_owned());
        ids.extend(names.iter().map(|n| (*n).to_owned()));
        act = obj.get("act");
    }
    Ok((chain, ids))
}

/// `scope` (separated by ASCII spaces only, RFC 6749 §3.3) or `scp` (array, or a string).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let split = |s: &str| {
        s.split(' ')
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => split(s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;

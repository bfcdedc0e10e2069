//! A verified token's part of `input.leash`, built once when the token is verified
//! and shared by every Check that presents it again.

use super::claims::AgentClaims;
use crate::document::{document_keys, object};
use regorus::Value;

document_keys! {
    issuer = "issuer", kind = "kind", alg = "alg", kid = "kid", expires_at = "expires_at",
    claims = "claims", chain = "chain", depth = "depth", may_act = "may_act",
}

/// Values the policy reads from one token.
#[derive(Debug, Clone)]
pub struct TokenDocument {
    /// `{issuer, kind, alg, kid, expires_at, claims}`.
    pub token: Value,
    pub human: Value,
    pub agent: Value,
    /// `{chain, depth, may_act}`.
    pub delegation: Value,
    pub scopes: Value,
    pub authorization_details: Value,
}

impl TokenDocument {
    pub(crate) fn build(
        issuer: &str,
        kind: &'static str,
        alg: jsonwebtoken::Algorithm,
        kid: Option<&str>,
        claims: &AgentClaims,
        all_claims: &Value,
    ) -> Self {
        let claim = |name: &str| match all_claims {
            Value::Object(o) => o.get(&Value::from(name)).cloned(),
            _ => None,
        };
        let text = |s: Option<&str>| s.map_or(Value::Null, Value::from);
        KEYS.with(|k| Self {
            token: object([
                (k.issuer.clone(), Value::from(issuer)),
                (k.kind.clone(), Value::from(kind)),
                (k.alg.clone(), Value::from(format!("{alg:?}"))),
                (k.kid.clone(), kid.map_or(Value::Null, Value::from)),
                (
                    k.expires_at.clone(),
                    claims.exp.map_or(Value::Null, Value::from),
                ),
                (k.claims.clone(), all_claims.clone()),
            ]),
            human: text(claims.human.as_deref()),
            agent: text(claims.agent.as_deref()),
            delegation: object([
                (k.chain.clone(), strings(&claims.chain)),
                (k.depth.clone(), Value::from(claims.depth())),
                (k.may_act.clone(), claim("may_act").unwrap_or(Value::Null)),
            ]),
            scopes: strings(&claims.scopes),
            authorization_details: claim("authorization_details").unwrap_or(Value::Null),
        })
    }
}

/// An array of strings as a document value.
fn strings(items: &[String]) -> Value {
    Value::from(
        items
            .iter()
            .map(|s| Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

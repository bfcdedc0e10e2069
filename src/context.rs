//! `input.leash`: what leash established about the request before policy runs, beside
//! the OPA-compatible document and never in place of any of it.
//!
//! ```text
//! authenticated        a token was verified and bound (false on unauthenticated routes)
//! token                {issuer, kind, presented, alg, kid, expires_at, claims}  (never the raw token)
//! txn_token            {issuer, claims} of a transaction token sent beside it, or null
//! binding              {certificate, dpop, workload_claim, bound, task}
//! human                on whose behalf (the subject when someone delegated), or null
//! agent                the current actor
//! workload             the peer's certificate identity, or null
//! task                 the task the token and the request agree on, or null
//! delegation           {chain: [current actor first], depth, may_act}
//! scopes               from `scope` or `scp`
//! authorization_details  RFC 9396, as the token carries them, or null
//! action               {class: read|write|destructive, tags, source}
//! tool                 {name, arguments, known} of an MCP tools/call, or null
//! ```

use crate::action::{Action, ActionSource, ToolCall};
use crate::policy::Value;
use crate::policy::input::object;
use crate::token::{Identity, VerifiedToken};
use crate::view::RequestView;

/// The `chaining` tag marks an agent acting through another: a delegation chain of
/// more than one actor.
const CHAINING: &str = "chaining";

pub fn leash_document(
    view: &RequestView,
    identity: Option<&Identity>,
    action: &Action,
    tool: Option<&ToolCall>,
) -> Value {
    let claims = identity.map(|id| &id.token.claims);
    let text = |s: Option<&String>| s.map_or(Value::Null, |s| Value::from(s.as_str()));
    let strings = |items: &[String]| {
        Value::from(
            items
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let token_claim = |name: &str| {
        identity
            .and_then(|id| claim(&id.token.document, name))
            .cloned()
            .unwrap_or(Value::Null)
    };

    let mut tags = action.tags.clone();
    if claims.is_some_and(|c| c.depth() > 1) && !tags.iter().any(|t| t == CHAINING) {
        tags.push(CHAINING.to_owned());
    }
    let source = match &action.source {
        ActionSource::Rule(name) => format!("rule:{name}"),
        ActionSource::Tool => "tool".to_owned(),
        ActionSource::UnknownTool => "unknown_tool".to_owned(),
        ActionSource::Method => "method".to_owned(),
    };

    object([
        (key("authenticated"), Value::Bool(identity.is_some())),
        (
            key("token"),
            identity.map_or(Value::Null, |id| {
                token(&id.token, Some(id.presented.name()))
            }),
        ),
        (
            key("txn_token"),
            identity
                .and_then(|id| id.txn.as_deref())
                .map_or(Value::Null, |t| token(t, None)),
        ),
        (
            key("binding"),
            identity.map_or(Value::Null, |id| {
                let b = &id.binding;
                object([
                    (key("certificate"), Value::Bool(b.certificate)),
                    (key("dpop"), Value::Bool(b.dpop)),
                    (key("workload_claim"), Value::Bool(b.workload_claim)),
                    (
                        key("bound"),
                        Value::Bool(b.certificate || b.dpop || b.workload_claim),
                    ),
                    (key("task"), Value::Bool(b.task.is_some())),
                ])
            }),
        ),
        (key("human"), text(claims.and_then(|c| c.human.as_ref()))),
        (key("agent"), text(claims.and_then(|c| c.agent.as_ref()))),
        (
            key("workload"),
            if view.source_principal.is_empty() {
                Value::Null
            } else {
                Value::from(view.source_principal.as_str())
            },
        ),
        (
            key("task"),
            text(identity.and_then(|id| id.binding.task.as_ref())),
        ),
        (
            key("delegation"),
            object([
                (key("chain"), strings(claims.map_or(&[][..], |c| &c.chain))),
                (key("depth"), Value::from(claims.map_or(0, |c| c.depth()))),
                (key("may_act"), token_claim("may_act")),
            ]),
        ),
        (
            key("scopes"),
            strings(claims.map_or(&[][..], |c| &c.scopes)),
        ),
        (
            key("authorization_details"),
            token_claim("authorization_details"),
        ),
        (
            key("action"),
            object([
                (key("class"), Value::from(action.class.name())),
                (key("tags"), strings(&tags)),
                (key("source"), Value::from(source)),
            ]),
        ),
        (
            key("tool"),
            tool.map_or(Value::Null, |t| {
                object([
                    (key("name"), Value::from(t.name.as_str())),
                    (key("arguments"), t.arguments.clone()),
                    (key("known"), Value::Bool(t.known)),
                ])
            }),
        ),
    ])
}

fn token(t: &VerifiedToken, presented: Option<&str>) -> Value {
    let mut entries = vec![
        (key("issuer"), Value::from(t.issuer.config.issuer.as_str())),
        (
            key("kind"),
            Value::from(match t.kind() {
                crate::token::TokenKind::Access => "access",
                crate::token::TokenKind::Transaction => "transaction",
            }),
        ),
        (key("alg"), Value::from(format!("{:?}", t.alg))),
        (
            key("kid"),
            t.kid.as_deref().map_or(Value::Null, Value::from),
        ),
        (
            key("expires_at"),
            t.claims.exp.map_or(Value::Null, Value::from),
        ),
        (key("claims"), t.document.clone()),
    ];
    if let Some(presented) = presented {
        entries.push((key("presented"), Value::from(presented)));
    }
    object(entries)
}

fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    match claims {
        Value::Object(o) => o
            .iter()
            .find_map(|(k, v)| matches!(k, Value::String(s) if s.as_ref() == name).then_some(v)),
        _ => None,
    }
}

fn key(name: &'static str) -> Value {
    Value::from(name)
}

//! `input.leash`: what leash established about the request before policy runs, beside
//! the OPA-compatible document and never in place of any of it.
//!
//! ```text
//! authenticated        a token was verified and bound (false on unauthenticated routes)
//! presented            bearer, dpop or txn_token; null when not authenticated
//! token                {issuer, kind, alg, kid, expires_at, claims}  (never the raw token)
//! txn_token            the same for a transaction token sent beside it, or null
//! binding              {certificate, dpop, workload_claim, bound, task}
//! human                on whose behalf (the subject when someone delegated), or null
//! agent                the current actor
//! workload             the peer's certificate identity, or null
//! task                 the task the token and the request agree on, or null
//! delegation           {chain: [current actor first], depth, may_act}
//! scopes               from `scope` or `scp`
//! authorization_details  RFC 9396, as the token carries them, or null
//! action               {class: read|write|destructive, tags, source}
//! resource             {kind: tool|resource|prompt|rule|host, name, id: "<kind>:<name>"}
//! tool                 {name, arguments, known} of an MCP tools/call, or null
//! mcp                  {method} of an MCP request, or null
//! request              {scheme, host, port, path, segments}: the canonical target
//! context              the live context: {task, session, risk}
//!   task               {id, status, human, agents, first_seen, ended}, or null when the
//!                      request names no task or the task is not recorded yet
//!   session            {agent, task, first_seen}, or null
//!   risk               per subject kind (agent, human, workload, task):
//!                      {max, signals: [{kind, score, source, expires_at}]}, live signals only
//!   approval           the approval last asked for this very action:
//!                      {id, status: pending|approved|denied|used|expired, uses_left,
//!                      expires_at}, or null
//!   counters           the session's behaviour over the window before this Check:
//!                      {window, calls: {read, write, destructive}, denials, body_bytes,
//!                      tools}, or null without a session
//! ```

use crate::action::{Action, ActionSource, ToolCall};
use crate::document::{document_keys, object};
use crate::mcp::Message;
use crate::policy::Value;
use crate::policy::library::{self, Class};
use crate::request::Target;
use crate::state::behaviour::Counts;
use crate::state::{Approval, ApprovalStatus, Live, RiskSignal, RiskSubject, Task};
use crate::token::Identity;
use crate::view::RequestView;

/// The `chaining` tag marks an agent acting through another: a delegation chain of
/// more than one actor.
const CHAINING: &str = "chaining";

document_keys! {
    authenticated = "authenticated", presented = "presented", token = "token",
    txn_token = "txn_token", binding = "binding", certificate = "certificate", dpop = "dpop",
    workload_claim = "workload_claim", bound = "bound", task = "task", human = "human",
    agent = "agent", workload = "workload", delegation = "delegation", chain = "chain",
    depth = "depth", may_act = "may_act", scopes = "scopes",
    authorization_details = "authorization_details", action = "action", class = "class",
    tags = "tags", source = "source", tool = "tool", name = "name", arguments = "arguments",
    known = "known", resource = "resource", kind = "kind", id = "id", mcp = "mcp",
    method = "method", request = "request", scheme = "scheme", host = "host", port = "port",
    path = "path", segments = "segments", context = "context", status = "status",
    agents = "agents", first_seen = "first_seen", ended = "ended", session = "session",
    risk = "risk", max = "max", signals = "signals", score = "score",
    expires_at = "expires_at", counters = "counters", window = "window", calls = "calls",
    denials = "denials", body_bytes = "body_bytes", tools = "tools", approval = "approval",
    uses_left = "uses_left",
}

/// What the pipeline established about a request before identity: the document
/// reads it all.
#[derive(Debug, Clone, Copy)]
pub struct Established<'a> {
    pub view: &'a RequestView,
    pub target: &'a Target<'a>,
    pub identity: Option<&'a Identity>,
    pub action: &'a Action,
    pub tool: Option<&'a ToolCall>,
    pub mcp: Option<&'a Message>,
    /// What the live context holds about the request (`None` without an identity).
    pub live: Option<&'a Live<'a>>,
    /// The session's behaviour counters before this Check (`None` without a session).
    pub counters: Option<&'a Counts>,
    /// The approval last asked for this very action, whatever its status.
    pub approval: Option<&'a Approval>,
    /// When the Check is decided, Unix seconds: risk signals live until then count.
    pub now: i64,
}

thread_local! {
    /// The delegation of a request without a token, one per thread like the keys.
    static NO_DELEGATION: Value = KEYS.with(|k| {
        object([
            (k.chain.clone(), Value::new_array()),
            (k.depth.clone(), Value::from(0)),
            (k.may_act.clone(), Value::Null),
        ])
    });
}

pub fn leash_document(facts: &Established<'_>) -> Value {
    KEYS.with(|k| document(facts, k))
}

/// What the shipped library reads of the same facts, typed: the Check path decides
/// with it and builds no document when the library in Rust serves. `None` for facts
/// outside the shape it decides (the document and the Rego then decide).
pub fn library_input<'a>(facts: &Established<'a>) -> Option<library::Input<'a>> {
    let Established {
        identity,
        action,
        tool,
        ..
    } = *facts;
    let doc = identity.map(|id| &id.token.document);
    let tagged = |name: &str| action.tags.iter().any(|t| t == name);
    let depth = match identity {
        Some(id) => i64::try_from(id.token.claims.depth()).ok()?,
        None => 0,
    };
    Some(library::Input {
        authenticated: identity.is_some(),
        class: Class::parse(action.class.name())?,
        export: tagged("export"),
        privilege: tagged("privilege"),
        opaque_body: tagged(crate::action::OPAQUE_BODY),
        kind: action.resource.kind.name(),
        name: &action.resource.name,
        human: doc.and_then(|d| library::human(&d.human)),
        scopes: library::array_or_empty(doc.map(|d| &d.scopes)),
        authorization_details: library::array_or_empty(doc.map(|d| &d.authorization_details)),
        task: identity.and_then(|id| id.binding.task.as_deref()),
        depth,
        tool: tool.map(|t| (t.name.as_str(), t.known)),
        approved: facts.approval.is_some_and(|a| a.usable(facts.now)),
        risk: facts.live.map_or(0, |live| {
            RiskSubject::ALL
                .into_iter()
                .flat_map(|subject| live.risk(subject))
                .filter(|s| s.live(facts.now))
                .map(|s| i64::from(s.score))
                .max()
                .unwrap_or(0)
        }),
    })
}

fn document(facts: &Established<'_>, k: &Keys) -> Value {
    let Established {
        view,
        target,
        identity,
        action,
        tool,
        mcp,
        live,
        counters,
        approval,
        now,
    } = *facts;
    let doc = identity.map(|id| &id.token.document);
    let from_token = |pick: fn(&crate::token::TokenDocument) -> &Value| {
        doc.map_or(Value::Null, |d| pick(d).clone())
    };

    let chaining = identity.is_some_and(|id| id.token.claims.depth() > 1)
        && !action.tags.iter().any(|t| t == CHAINING);
    let tags: Vec<Value> = action
        .tags
        .iter()
        .map(|t| Value::from(t.as_str()))
        .chain(chaining.then(|| Value::from(CHAINING)))
        .collect();
    let source = match &action.source {
        ActionSource::Rule(name) => Value::from(format!("rule:{name}")),
        ActionSource::Tool => Value::from("tool"),
        ActionSource::UnknownTool => Value::from("unknown_tool"),
        ActionSource::Mcp => Value::from("mcp"),
        ActionSource::Method => Value::from("method"),
    };
    let resource = &action.resource;
    let request = object([
        (k.scheme.clone(), Value::from(target.scheme.as_ref())),
        (k.host.clone(), Value::from(target.host.as_ref())),
        (
            k.port.clone(),
            target
                .port
                .map_or(Value::Null, |p| Value::from(u64::from(p))),
        ),
        (k.path.clone(), Value::from(target.path.as_ref())),
        (
            k.segments.clone(),
            Value::from(
                target
                    .segments()
                    .into_iter()
                    .map(Value::from)
                    .collect::<Vec<_>>(),
            ),
        ),
    ]);
    let binding = identity.map_or(Value::Null, |id| {
        let b = &id.binding;
        object([
            (k.certificate.clone(), Value::Bool(b.certificate)),
            (k.dpop.clone(), Value::Bool(b.dpop)),
            (k.workload_claim.clone(), Value::Bool(b.workload_claim)),
            (
                k.bound.clone(),
                Value::Bool(b.certificate || b.dpop || b.workload_claim),
            ),
            (k.task.clone(), Value::Bool(b.task.is_some())),
        ])
    });

    object([
        (k.authenticated.clone(), Value::Bool(identity.is_some())),
        (
            k.presented.clone(),
            identity.map_or(Value::Null, |id| Value::from(id.presented.name())),
        ),
        (k.token.clone(), from_token(|d| &d.token)),
        (
            k.txn_token.clone(),
            identity
                .and_then(|id| id.txn.as_deref())
                .map_or(Value::Null, |t| t.document.token.clone()),
        ),
        (k.binding.clone(), binding),
        (k.human.clone(), from_token(|d| &d.human)),
        (k.agent.clone(), from_token(|d| &d.agent)),
        (
            k.workload.clone(),
            if view.source_principal.is_empty() {
                Value::Null
            } else {
                Value::from(view.source_principal.as_str())
            },
        ),
        (
            k.task.clone(),
            identity
                .and_then(|id| id.binding.task.as_deref())
                .map_or(Value::Null, Value::from),
        ),
        (
            k.delegation.clone(),
            doc.map_or_else(
                || NO_DELEGATION.with(Value::clone),
                |d| d.delegation.clone(),
            ),
        ),
        (
            k.scopes.clone(),
            doc.map_or_else(Value::new_array, |d| d.scopes.clone()),
        ),
        (
            k.authorization_details.clone(),
            from_token(|d| &d.authorization_details),
        ),
        (
            k.action.clone(),
            object([
                (k.class.clone(), Value::from(action.class.name())),
                (k.tags.clone(), Value::from(tags)),
                (k.source.clone(), source),
            ]),
        ),
        (
            k.resource.clone(),
            object([
                (k.kind.clone(), Value::from(resource.kind.name())),
                (k.name.clone(), Value::from(resource.name.as_ref())),
                (
                    k.id.clone(),
                    Value::from(format!("{}:{}", resource.kind.name(), resource.name)),
                ),
            ]),
        ),
        (
            k.tool.clone(),
            tool.map_or(Value::Null, |t| {
                object([
                    (k.name.clone(), Value::from(t.name.as_str())),
                    (k.arguments.clone(), t.arguments.clone()),
                    (k.known.clone(), Value::Bool(t.known)),
                ])
            }),
        ),
        (
            k.mcp.clone(),
            mcp.map_or(Value::Null, |m| {
                object([(k.method.clone(), Value::from(m.method()))])
            }),
        ),
        (k.request.clone(), request),
        (
            k.context.clone(),
            live_document(live, counters, approval, now, k),
        ),
    ])
}

fn live_document(
    live: Option<&Live<'_>>,
    counters: Option<&Counts>,
    approval: Option<&Approval>,
    now: i64,
    k: &Keys,
) -> Value {
    // "approved" only while it allows something: an approval past its deadline reads
    // as expired, so a policy never needs the clock.
    let approval = approval.map_or(Value::Null, |a| {
        let status = match a.status {
            ApprovalStatus::Approved | ApprovalStatus::Pending if now >= a.expires_at => "expired",
            status => status.name(),
        };
        object([
            (k.id.clone(), Value::from(&*a.id)),
            (k.status.clone(), Value::from(status)),
            (k.uses_left.clone(), Value::from(u64::from(a.uses_left))),
            (k.expires_at.clone(), Value::from(a.expires_at)),
        ])
    });
    let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().map_or(Value::Null, Value::from);
    let task = live.and_then(|l| l.task).map_or(Value::Null, |t: &Task| {
        object([
            (k.id.clone(), Value::from(&*t.id)),
            (k.status.clone(), Value::from(t.status.name())),
            (k.human.clone(), text(&t.human)),
            (
                k.agents.clone(),
                Value::from(
                    t.agents
                        .iter()
                        .map(|a| Value::from(&**a))
                        .collect::<Vec<_>>(),
                ),
            ),
            (k.first_seen.clone(), Value::from(t.first_seen)),
            (k.ended.clone(), t.ended.map_or(Value::Null, Value::from)),
        ])
    });
    let session = live.and_then(|l| l.session).map_or(Value::Null, |s| {
        object([
            (k.agent.clone(), Value::from(&*s.agent)),
            (k.task.clone(), Value::from(&*s.task)),
            (k.first_seen.clone(), Value::from(s.first_seen)),
        ])
    });
    let risk = object(RiskSubject::ALL.into_iter().map(|subject| {
        let signals: Vec<&RiskSignal> = live
            .map(|l| l.risk(subject))
            .unwrap_or_default()
            .iter()
            .filter(|s| s.live(now))
            .collect();
        let max = signals.iter().map(|s| s.score).max().unwrap_or(0);
        let listed = signals
            .iter()
            .map(|s| {
                object([
                    (k.kind.clone(), Value::from(&*s.kind)),
                    (k.score.clone(), Value::from(u64::from(s.score))),
                    (k.source.clone(), Value::from(&*s.source)),
                    (k.expires_at.clone(), Value::from(s.expires_at)),
                ])
            })
            .collect::<Vec<_>>();
        (
            Value::from(subject.name()),
            object([
                (k.max.clone(), Value::from(u64::from(max))),
                (k.signals.clone(), Value::from(listed)),
            ]),
        )
    }));
    let counters = counters.map_or(Value::Null, |c| {
        let [read, write, destructive] = c.calls;
        object([
            (k.window.clone(), Value::from(c.window)),
            (
                k.calls.clone(),
                object([
                    (Value::from("read"), Value::from(read)),
                    (Value::from("write"), Value::from(write)),
                    (Value::from("destructive"), Value::from(destructive)),
                ]),
            ),
            (k.denials.clone(), Value::from(c.denials)),
            (k.body_bytes.clone(), Value::from(c.body_bytes)),
            (k.tools.clone(), Value::from(c.tools)),
        ])
    });
    object([
        (k.task.clone(), task),
        (k.session.clone(), session),
        (k.risk.clone(), risk),
        (k.counters.clone(), counters),
        (k.approval.clone(), approval),
    ])
}

//! The decision log. A Check only builds a record and offers it to a bounded queue;
//! a background task writes it. When the queue is full the record is counted as
//! dropped (`leash_decision_log_dropped_total`), never waited for.
//!
//! Records name the action (method, host, path without its query string, which may
//! carry credentials), the outcome, the reason code and the policy revision. Header
//! values and bodies never reach the log. Every value taken from the request is
//! written as an escaped string field (quoted in the text format) and cut at
//! [`quote::LIMIT`](crate::quote::LIMIT) bytes, so a request cannot write a line of its
//! own into the log.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::action::ActionClass;
use crate::config::AuditLevel;
use crate::decision::{Decision, DenyReason};
use crate::metrics::DropCounter;
use crate::pipeline::{Facts, Verdict};
use crate::view::RequestView;

#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub decision_id: String,
    pub reason: Option<DenyReason>,
    pub detail: Option<String>,
    pub status: u16,
    pub revision: Option<Arc<str>>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub source_principal: String,
    pub facts: Facts,
    /// The `jti` of the credential minted for the call (never the token).
    pub minted_jti: Option<Arc<str>>,
    pub took: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditSink {
    level: AuditLevel,
    tx: mpsc::Sender<DecisionRecord>,
    dropped: DropCounter,
}

/// Records held while the writer catches up; beyond this a burst is counted, not queued.
const QUEUE: usize = 16 * 1024;

impl AuditSink {
    /// The sink and the receiving end for [`write`].
    pub fn new(level: AuditLevel, dropped: DropCounter) -> (Self, mpsc::Receiver<DecisionRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { level, tx, dropped }, rx)
    }

    pub fn record(&self, verdict: &Verdict, view: Option<&RequestView>, took: Duration) {
        let wanted = match self.level {
            AuditLevel::All => true,
            AuditLevel::Deny => !verdict.decision.is_allow(),
            AuditLevel::Off => false,
        };
        if !wanted {
            return;
        }
        let (status, detail) = match &verdict.decision {
            Decision::Allow(_) => (200, None),
            Decision::Deny(denial) => (
                denial.response().status.code(),
                denial.detail().map(str::to_owned),
            ),
        };
        let (method, host, path, source_principal) = view.map_or_else(Default::default, |v| {
            (
                v.method.clone(),
                v.host.clone(),
                v.path
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                v.source_principal.clone(),
            )
        });
        let record = DecisionRecord {
            decision_id: verdict.decision_id.clone(),
            reason: verdict.decision.reason(),
            detail,
            status,
            revision: verdict.revision.clone(),
            method,
            host,
            path,
            source_principal,
            facts: verdict.facts.clone(),
            minted_jti: match &verdict.decision {
                Decision::Allow(permit) => permit.credential().map(|c| c.jti.clone()),
                Decision::Deny(_) => None,
            },
            took,
        };
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writes records until every sink is gone.
pub async fn write(mut rx: mpsc::Receiver<DecisionRecord>) {
    while let Some(r) = rx.recv().await {
        let resource = r
            .facts
            .resource
            .as_ref()
            .map(|res| format!("{}:{}", res.kind.name(), res.name));
        // String fields, never `%` Display: the text format quotes and escapes them.
        tracing::info!(
            target: "leash::decision",
            decision_id = r.decision_id.as_str(),
            decision = if r.reason.is_none() { "allow" } else { "deny" },
            reason = r.reason.map_or("", DenyReason::code),
            detail = clip(r.detail.as_deref().unwrap_or("")),
            status = r.status,
            revision = r.revision.as_deref().unwrap_or(""),
            method = clip(&r.method),
            host = clip(&r.host),
            path = clip(&r.path),
            source_principal = clip(&r.source_principal),
            human = clip(r.facts.human().unwrap_or("")),
            agent = clip(r.facts.agent().unwrap_or("")),
            task = clip(r.facts.task().unwrap_or("")),
            action = r.facts.action.map_or("", ActionClass::name),
            resource = clip(resource.as_deref().unwrap_or("")),
            tool = clip(r.facts.tool.as_deref().unwrap_or("")),
            minted_jti = r.minted_jti.as_deref().unwrap_or(""),
            took_us = u64::try_from(r.took.as_micros()).unwrap_or(u64::MAX),
            "decision"
        );
    }
}

/// At most [`quote::LIMIT`](crate::quote::LIMIT) bytes of `s`, cut at a character
/// boundary. Denial details hold several quoted values, so they get four times that.
fn clip(s: &str) -> &str {
    let limit = crate::quote::LIMIT * 4;
    if s.len() <= limit {
        return s;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

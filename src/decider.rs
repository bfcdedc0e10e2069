//! The decision core every front end calls: the ext_authz service today, and later a
//! second API (AuthZEN) or a replay. It knows no protocol: it takes a request view and
//! the moment it arrived, decides it (waiting a bounded time for an issuer's keys when
//! a token names one not yet published), and records the decision in the metrics and
//! the decision log. Front ends only convert in and out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::AuditSink;
use crate::decision::{Decision, DenyReason};
use crate::metrics::Metrics;
use crate::pipeline::{Facts, Pipeline, Verdict};
use crate::token::MissingKey;
use crate::view::RequestView;

/// Reads the wall clock, in Unix seconds. Injected, so tests decide at any time.
pub type Clock = fn() -> i64;

#[derive(Debug)]
pub struct Decider {
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub audit: AuditSink,
    /// How long a Check waits for an issuer's keys when its token names an unknown key.
    pub key_wait: Duration,
    pub clock: Clock,
}

impl Decider {
    /// Decides `view` without waiting, and records the decision; or says which keys
    /// to fetch (nothing is recorded then: [`after_keys`](Self::after_keys) does).
    pub fn try_decide(&self, view: &RequestView, arrived: Instant) -> Result<Verdict, MissingKey> {
        let verdict = self.pipeline.try_check(view, (self.clock)())?;
        self.record(&verdict, Some(view), arrived);
        Ok(verdict)
    }

    /// Decides `view` without waiting: a token naming an unknown key is denied.
    pub fn decide_now(&self, view: &RequestView, arrived: Instant) -> Verdict {
        let verdict = self.pipeline.check(view, (self.clock)());
        self.record(&verdict, Some(view), arrived);
        verdict
    }

    /// Asks `missing`'s issuer for its keys, waits at most `key_wait`, then decides
    /// `view` for good.
    pub async fn after_keys(
        &self,
        view: &RequestView,
        missing: MissingKey,
        arrived: Instant,
    ) -> Verdict {
        let issuer = &missing.issuer;
        if let Some(fetched) = issuer.refetch(arrived) {
            if tokio::time::timeout(self.key_wait, fetched).await.is_err() {
                tracing::warn!(issuer = %issuer.config.issuer, "keys did not arrive within {:?}", self.key_wait);
            }
        }
        self.decide_now(view, arrived)
    }

    /// Decides `view` as a Check would, at the injected clock's time, and returns the
    /// input document the policy stands for: `leash check`. Nothing is recorded.
    pub fn explain(&self, view: &RequestView) -> (Verdict, Option<crate::policy::Value>) {
        self.pipeline.explain(view, (self.clock)())
    }

    /// Denies a request that could not be read at all (not decodable, not a request),
    /// and records it like any other decision.
    pub fn refuse(&self, reason: DenyReason, detail: String, arrived: Option<Instant>) -> Verdict {
        let verdict = Verdict::new(Decision::deny(reason, detail), None, Facts::default());
        let took = arrived.map_or(Duration::ZERO, |at| at.elapsed());
        self.metrics.record_decision(Some(reason), took);
        self.audit.record(&verdict, None, took);
        verdict
    }

    fn record(&self, verdict: &Verdict, view: Option<&RequestView>, arrived: Instant) {
        let took = arrived.elapsed();
        self.metrics
            .record_decision(verdict.decision.reason(), took);
        self.audit.record(verdict, view, took);
    }
}

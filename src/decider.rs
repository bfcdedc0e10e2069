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
    /// The live context's writer: where an allow on an approval spends its use
    /// (without it, such an allow is refused: nothing could make the use durable), and
    /// where decisions are announced to watchers.
    pub approvals: Option<Arc<crate::state::Updater>>,
}

/// What a Check waits for before it can be answered.
#[derive(Debug)]
pub enum Wait {
    /// An issuer's keys: the token names one not published yet.
    Keys(MissingKey),
    /// A durable write: the allow spends a use of an approval.
    Approval(Box<Verdict>),
}

impl Decider {
    /// Decides `view` without waiting, and records the decision; or says what to wait
    /// for (nothing is recorded then: [`finish`](Self::finish) does).
    pub fn try_decide(&self, view: &RequestView, arrived: Instant) -> Result<Verdict, Wait> {
        let verdict = self
            .pipeline
            .try_check(view, (self.clock)())
            .map_err(Wait::Keys)?;
        if verdict.spends_approval.is_some() {
            return Err(Wait::Approval(Box::new(verdict)));
        }
        self.record(&verdict, Some(view), arrived);
        Ok(verdict)
    }

    /// Waits for what [`try_decide`](Self::try_decide) said, then answers for good.
    pub async fn finish(&self, view: &RequestView, wait: Wait, arrived: Instant) -> Verdict {
        let verdict = match wait {
            Wait::Keys(missing) => {
                self.fetch_keys(&missing, arrived).await;
                self.pipeline.check(view, (self.clock)())
            }
            Wait::Approval(verdict) => *verdict,
        };
        let verdict = match self.approvals.clone() {
            Some(updater) if verdict.spends_approval.is_some() => {
                let now = (self.clock)();
                // Kept for the denial should the blocking pool be gone: it stays this
                // Check's, facts and all.
                let fallback = verdict.clone();
                tokio::task::spawn_blocking(move || spend(&updater, verdict, now))
                    .await
                    .unwrap_or_else(|_| {
                        refused_use(
                            fallback,
                            DenyReason::ApprovalUnavailable,
                            "the approval could not be spent: the updater stopped",
                        )
                    })
            }
            _ => self.settle_blocking(verdict),
        };
        self.record(&verdict, Some(view), arrived);
        verdict
    }

    /// [`finish`](Self::finish) without waiting, for callers outside the async serving
    /// path: keys are not fetched (a token naming an unknown key is denied), and an
    /// approval is spent on this thread.
    pub fn finish_now(&self, view: &RequestView, wait: Wait, arrived: Instant) -> Verdict {
        let verdict = match wait {
            Wait::Keys(_) => self.pipeline.check(view, (self.clock)()),
            Wait::Approval(verdict) => *verdict,
        };
        let verdict = self.settle_blocking(verdict);
        self.record(&verdict, Some(view), arrived);
        verdict
    }

    fn settle_blocking(&self, verdict: Verdict) -> Verdict {
        if verdict.spends_approval.is_none() {
            return verdict;
        }
        match &self.approvals {
            Some(updater) => spend(updater, verdict, (self.clock)()),
            None => refused_use(
                verdict,
                DenyReason::ApprovalUnavailable,
                "no live context keeps approvals here",
            ),
        }
    }

    /// Asks `missing`'s issuer for its keys and waits at most `key_wait`.
    async fn fetch_keys(&self, missing: &MissingKey, arrived: Instant) {
        let issuer = &missing.issuer;
        if let Some(fetched) = issuer.refetch(arrived) {
            if tokio::time::timeout(self.key_wait, fetched).await.is_err() {
                tracing::warn!(issuer = %issuer.config.issuer, "keys did not arrive within {:?}", self.key_wait);
            }
        }
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
        match &verdict.decision {
            Decision::Allow(permit) if permit.credential().is_some() => {
                self.metrics.record_mint(Ok(()));
            }
            Decision::Deny(denial) => self.metrics.record_mint(Err(denial.reason())),
            Decision::Allow(_) => {}
        }
        self.audit.record(verdict, view, took);
        if let Some(updater) = self.approvals.as_ref().filter(|u| u.watched()) {
            let facts = &verdict.facts;
            updater.announce(crate::state::DecisionNote {
                decision_id: verdict.decision_id.clone(),
                at: (self.clock)(),
                allowed: verdict.decision.is_allow(),
                reason: verdict.decision.reason().map(DenyReason::code),
                action: facts.action.map(|a| a.name()),
                tool: facts.tool.clone(),
                agent: facts
                    .identity
                    .as_ref()
                    .and_then(|i| i.token.claims.agent.clone()),
                human: facts
                    .identity
                    .as_ref()
                    .and_then(|i| i.token.claims.human.clone()),
                task: facts.identity.as_ref().and_then(|i| i.binding.task.clone()),
                state_seq: updater.state().snapshot().seq,
            });
        }
    }
}

/// Spends the approval `verdict` allows on, durably; the allow stands only if this
/// Check got the use.
fn spend(updater: &crate::state::Updater, verdict: Verdict, now: i64) -> Verdict {
    let Some(id) = verdict.spends_approval.clone() else {
        return verdict;
    };
    match updater.spend_approval_blocking(&id, now) {
        Ok(true) => verdict,
        Ok(false) => refused_use(
            verdict,
            DenyReason::ApprovalRequired,
            &format!("approval {id} was spent, expired or decided otherwise meanwhile"),
        ),
        Err(err) => refused_use(
            verdict,
            DenyReason::ApprovalUnavailable,
            &format!("approval {id} could not be spent: {err}"),
        ),
    }
}

/// The allow turned into a denial because its approval's use could not be had. One
/// that could not be recorded is a 503 with `Retry-After`: the use is still there, and
/// an agent reads a 403 as final.
fn refused_use(verdict: Verdict, reason: DenyReason, why: &str) -> Verdict {
    let decision = match reason {
        DenyReason::ApprovalUnavailable => Decision::deny_with(
            reason,
            crate::decision::DenyResponse {
                status: crate::decision::HttpStatus::SERVICE_UNAVAILABLE,
                headers: vec![crate::decision::Header {
                    name: "retry-after".into(),
                    value: "1".into(),
                }],
                body: String::new(),
            },
            why.to_owned(),
        ),
        _ => Decision::deny(reason, why),
    };
    let mut refused = Verdict::new(decision, verdict.revision, verdict.facts);
    refused.decision_id = verdict.decision_id;
    refused
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::{
        Approval, ApprovalStatus, Binding, Change, Event, Party, Record, Store, StoreError, Stored,
        Updater,
    };

    /// A store that holds one approved approval and then cannot write.
    #[derive(Debug)]
    struct Broken(Approval);

    impl Store for Broken {
        fn load(&self) -> Result<Stored, StoreError> {
            Ok(Stored {
                seq: 1,
                records: vec![Record::Approval(Box::new(self.0.clone()))],
            })
        }
        fn commit(&self, _: &[Change], _: &str, _: i64) -> Result<u64, StoreError> {
            Err(gone())
        }
        fn swap(&self, _: &Record, _: &Record, _: &str, _: i64) -> Result<Option<u64>, StoreError> {
            Err(gone())
        }
        fn changes_since(&self, _: u64) -> Result<Option<Vec<Event>>, StoreError> {
            Ok(None)
        }
        fn describe(&self) -> String {
            "a broken disk".into()
        }
    }

    fn gone() -> StoreError {
        StoreError::Io(Box::new(redb::Error::Io(std::io::Error::other(
            "disk gone",
        ))))
    }

    fn allowed_on(approval: &str) -> Verdict {
        let mut verdict = Verdict::new(allow(), None, Facts::default());
        verdict.spends_approval = Some(Arc::from(approval));
        verdict
    }

    fn allow() -> Decision {
        match crate::policy::outcome::read(&crate::policy::Value::from(true)) {
            Ok(answer) => Decision::from_policy(answer),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn an_approval_whose_use_cannot_be_recorded_is_refused_as_unavailable() {
        let party = Party {
            issuer: "https://idp",
            task: "t1",
            agent: "planner",
            human: None,
        };
        let binding = Binding::http(party, "DELETE", "https://x/repo", b"");
        let approval = Approval {
            id: Arc::from("a1"),
            digest: Arc::from(binding.digest()),
            binding,
            reason: String::new(),
            status: ApprovalStatus::Approved,
            requested_at: 1_000,
            expires_at: 2_000,
            uses_left: 1,
            decided_by: Some("alice".into()),
            decided_reason: None,
        };
        let (updater, _inbox) = Updater::open(Box::new(Broken(approval))).unwrap();
        let refused = spend(&updater, allowed_on("a1"), 1_500);
        assert_eq!(
            refused.decision.reason(),
            Some(DenyReason::ApprovalUnavailable)
        );
        match &refused.decision {
            Decision::Deny(denial) => assert_eq!(denial.response().status.code(), 503),
            Decision::Allow(_) => panic!("allowed"),
        }
        // The use was not taken: the approval is still there for a retry.
        assert_eq!(
            updater
                .state()
                .snapshot()
                .approval("a1")
                .map(|a| a.uses_left),
            Some(1)
        );
        // One that is gone was lost to another call: the agent must ask again.
        let lost = spend(&updater, allowed_on("a2"), 1_500);
        assert_eq!(lost.decision.reason(), Some(DenyReason::ApprovalRequired));
    }
}

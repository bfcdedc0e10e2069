//! Policy reloads from every trigger (start, file watcher, SIGHUP, the control API),
//! logged and counted the same way. Compilation runs on a blocking thread so a large
//! policy never stalls the Checks sharing the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::{Metrics, ReloadResult};
use crate::policy::{EngineKind, PolicyStore, ReloadOutcome};

#[derive(Debug, Clone)]
pub struct Reloader {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    /// Reloads started so far.
    started: Arc<AtomicU64>,
    /// Held for the whole of one reload; remembers the last one's start and outcome.
    turn: Arc<tokio::sync::Mutex<LastReload>>,
}

#[derive(Debug, Default)]
struct LastReload {
    started: u64,
    outcome: Option<ReloadOutcome>,
}

impl Reloader {
    pub fn new(store: Arc<PolicyStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            started: Arc::default(),
            turn: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// Reloads and reports. `trigger` names the cause in the log. Applying and
    /// reporting happen together on the blocking thread, so a caller that gives up
    /// (a control client hanging up) cannot leave a swap unlogged and uncounted.
    ///
    /// Requests coalesce: one reload runs at a time, and a request that waited while
    /// another started after it was made takes that one's outcome (it read the files
    /// later than asked). A flood of requests therefore runs at most two reloads, and
    /// one blocking thread.
    pub async fn reload(&self, trigger: &'static str) -> ReloadOutcome {
        let asked_at = self.started.load(Ordering::Acquire);
        let mut last = self.turn.clone().lock_owned().await;
        if last.started > asked_at {
            if let Some(outcome) = &last.outcome {
                return outcome.clone();
            }
        }
        last.started = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let this = self.clone();
        // The turn is released only when the reload is over, even if the caller leaves.
        let run = tokio::spawn(async move {
            let reloader = this.clone();
            let outcome = tokio::task::spawn_blocking(move || reloader.reload_now(trigger))
                .await
                .unwrap_or_else(|err| failed(&err));
            last.outcome = Some(outcome.clone());
            outcome
        });
        run.await.unwrap_or_else(|err| failed(&err))
    }

    /// The blocking form, for start-up before the runtime serves anything.
    pub fn reload_now(&self, trigger: &'static str) -> ReloadOutcome {
        let outcome = self.store.reload();
        self.report(trigger, &outcome);
        outcome
    }

    fn report(&self, trigger: &'static str, outcome: &ReloadOutcome) {
        let source = self.store.source().describe();
        match outcome {
            ReloadOutcome::Applied(info) => {
                self.metrics
                    .record_reload(ReloadResult::applied, Some(unix_seconds(info.loaded_at)));
                tracing::info!(
                    trigger,
                    %source,
                    revision = %info.revision,
                    engine = info.engine.name(),
                    files = info.files.len(),
                    decision_rule = %info.decision_rule,
                    "policy applied"
                );
                match (&info.engine_note, info.engine) {
                    (Some(note), EngineKind::Interpreter) => tracing::info!(
                        %source,
                        "serving with the Rego interpreter rather than the bytecode VM: {note}"
                    ),
                    (Some(note), EngineKind::Vm | EngineKind::Native) => {
                        tracing::warn!(%source, "{note}");
                    }
                    (None, _) => {}
                }
            }
            ReloadOutcome::Unchanged(info) => {
                self.metrics.record_reload(ReloadResult::unchanged, None);
                tracing::debug!(trigger, %source, revision = %info.revision, "policy unchanged");
            }
            ReloadOutcome::Rejected(err) => {
                self.metrics.record_reload(ReloadResult::rejected, None);
                let serving = self.store.current();
                let keeps = serving.as_ref().map_or_else(
                    || "nothing (every Check denies with policy.unavailable)".to_owned(),
                    |s| format!("revision {}", s.info().revision),
                );
                for problem in &err.problems {
                    tracing::error!(trigger, %source, "policy rejected: {problem}");
                }
                tracing::error!(trigger, %source, "policy rejected; still serving {keeps}");
            }
        }
    }
}

fn failed(err: &tokio::task::JoinError) -> ReloadOutcome {
    ReloadOutcome::Rejected(
        crate::policy::Problem::general("reload", format!("reload task failed: {err}")).into(),
    )
}

/// Seconds since the Unix epoch, for Status.
pub fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

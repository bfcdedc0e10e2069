//! The serving policy set, swapped atomically. Checks read it without locks; reloads
//! build a complete new set beside it and swap only once it is compiled and warmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwapOption, Guard};

use super::problem::{PolicyLoadError, Problem};
use super::set::{LoadOptions, PolicyInfo, PolicySet, Warmup, revision};
use super::source::{PolicySource, SourceFiles};

#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwapOption<PolicySet>,
    source: PolicySource,
    options: LoadOptions,
    warmup: Warmup,
    /// Serializes reloads (watcher, SIGHUP, control API) so two never race to swap.
    reloading: std::sync::Mutex<()>,
    /// Turns true when the first set is applied; a rejected reload never turns it back.
    ready: tokio::sync::watch::Sender<bool>,
    /// Why the last reload was refused, until one applies: what `/readyz` says before
    /// any set serves.
    last_refusal: std::sync::Mutex<Option<String>>,
    /// Set while a compile runs on its own thread, including one abandoned past the
    /// load timeout: a second is not started beside it.
    compiling: Arc<AtomicBool>,
}

/// Files must have been still this long before they are read: editors and ConfigMap
/// updates write in steps.
const QUIET: Duration = Duration::from_millis(200);
/// How long a reload waits for files to settle before reading them anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// Reads of a tree that changed while being read, before the reload gives up.
const READ_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// A new revision serves.
    Applied(Arc<PolicyInfo>),
    /// The files produce the revision already serving; nothing was compiled.
    Unchanged(Arc<PolicyInfo>),
    /// The candidate set was refused; the previous set (if any) keeps serving.
    Rejected(PolicyLoadError),
}

impl PolicyStore {
    /// A store with nothing loaded: every Check denies until [`reload`](Self::reload) succeeds.
    pub fn new(source: PolicySource, options: LoadOptions, warmup: Warmup) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            source,
            options,
            warmup,
            reloading: std::sync::Mutex::new(()),
            ready: tokio::sync::watch::Sender::new(false),
            last_refusal: std::sync::Mutex::new(None),
            compiling: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Watches readiness: true once a policy set serves.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The serving set. Lock-free; hold the guard only for one Check.
    #[inline]
    pub fn current(&self) -> Guard<Option<Arc<PolicySet>>> {
        self.current.load()
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// Why no set serves yet, if a reload was refused.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the source and, if it changed, compiles, warms and swaps it in. Blocking:
    /// call it from a blocking thread, never from a Check.
    pub fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = self.reload_locked();
        let mut refusal = self
            .last_refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &outcome {
            ReloadOutcome::Applied(_) => *refusal = None,
            ReloadOutcome::Rejected(err) => *refusal = Some(err.to_string()),
            ReloadOutcome::Unchanged(_) => {}
        }
        outcome
    }

    fn reload_locked(&self) -> ReloadOutcome {
        let files = match self.read_settled() {
            Ok(files) => files,
            Err(err) => return ReloadOutcome::Rejected(err),
        };
        if let Some(serving) = self.current.load_full() {
            if *serving.info().revision == *revision(&files, &self.options) {
                return ReloadOutcome::Unchanged(serving.info_arc());
            }
        }
        match self.compile(files) {
            Ok(set) => {
                let info = set.info_arc();
                self.current.store(Some(Arc::new(set)));
                self.ready.send_replace(true);
                ReloadOutcome::Applied(info)
            }
            Err(err) => ReloadOutcome::Rejected(err),
        }
    }

    /// The source's files once they have been still for [`QUIET`], read again if they
    /// changed while being read: a file caught mid-write is never served.
    fn read_settled(&self) -> Result<SourceFiles, PolicyLoadError> {
        if matches!(self.source, PolicySource::Embedded) {
            return self.source.read();
        }
        let started = Instant::now();
        for _ in 0..READ_ATTEMPTS {
            let before = self.settled_fingerprint(started);
            let files = self.source.read()?;
            if self.source.fingerprint().ok() == before {
                return Ok(files);
            }
        }
        Err(Problem::general(
            self.source.describe(),
            format!("the files changed each time they were read ({READ_ATTEMPTS} reads); reload once they are written"),
        )
        .into())
    }

    /// Waits until no file changed in the last [`QUIET`] (at most [`SETTLE_LIMIT`]
    /// after `started`), then returns the fingerprint the read is checked against.
    fn settled_fingerprint(&self, started: Instant) -> Option<Fingerprint> {
        loop {
            let fingerprint = self.source.fingerprint().ok();
            let newest = fingerprint
                .iter()
                .flatten()
                .filter_map(|(_, _, modified)| *modified)
                .max();
            let still_for = newest.map_or(QUIET, |at| {
                SystemTime::now().duration_since(at).unwrap_or_default()
            });
            if still_for >= QUIET || started.elapsed() >= SETTLE_LIMIT {
                return fingerprint;
            }
            std::thread::sleep(QUIET.saturating_sub(still_for));
        }
    }

    /// Compiles on a thread of its own, abandoned past the load timeout: the serving
    /// set stays, the reload lock is released, and no other compile starts until the
    /// abandoned one ends.
    fn compile(&self, files: SourceFiles) -> Result<PolicySet, PolicyLoadError> {
        let Some(limit) = self.options.load_timeout else {
            return PolicySet::compile(&self.source, &files, &self.options, &self.warmup);
        };
        if self.compiling.swap(true, Ordering::AcqRel) {
            return Err(Problem::general(
                self.source.describe(),
                "an earlier load that ran past policy.load_timeout is still running; try again once it ends",
            )
            .into());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (source, options, warmup) = (
            self.source.clone(),
            self.options.clone(),
            self.warmup.clone(),
        );
        let compiling = self.compiling.clone();
        let spawned = std::thread::Builder::new()
            .name("leash-policy-load".into())
            .spawn(move || {
                let _ = tx.send(PolicySet::compile(&source, &files, &options, &warmup));
                compiling.store(false, Ordering::Release);
            });
        if let Err(err) = spawned {
            self.compiling.store(false, Ordering::Release);
            return Err(Problem::general("reload", format!("cannot start the load: {err}")).into());
        }
        rx.recv_timeout(limit).unwrap_or_else(|_| {
            Err(Problem::general(
                self.source.describe(),
                format!(
                    "loading took longer than {} (policy.load_timeout); the serving set stays",
                    humantime::format_duration(limit)
                ),
            )
            .into())
        })
    }
}

type Fingerprint = Vec<(std::path::PathBuf, u64, Option<SystemTime>)>;

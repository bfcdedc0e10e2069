//! The serving policy set, swapped atomically. Checks read it without locks; reloads
//! build a complete new set beside it and swap only once it is compiled and warmed.

use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};
use regorus::Value;

use super::problem::PolicyLoadError;
use super::set::{LoadOptions, PolicyInfo, PolicySet, revision};
use super::source::PolicySource;

#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwapOption<PolicySet>,
    source: PolicySource,
    options: LoadOptions,
    warmup: Vec<Value>,
    /// Serializes reloads (watcher, SIGHUP, control API) so two never race to swap.
    reloading: std::sync::Mutex<()>,
    /// Turns true when the first set is applied; a rejected reload never turns it back.
    ready: tokio::sync::watch::Sender<bool>,
}

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
    pub fn new(source: PolicySource, options: LoadOptions, warmup: Vec<Value>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            source,
            options,
            warmup,
            reloading: std::sync::Mutex::new(()),
            ready: tokio::sync::watch::Sender::new(false),
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

    /// Reads the source and, if it changed, compiles, warms and swaps it in. Blocking:
    /// call it from a blocking thread, never from a Check.
    pub fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let files = match self.source.read() {
            Ok(files) => files,
            Err(err) => return ReloadOutcome::Rejected(err),
        };
        if let Some(serving) = self.current.load_full() {
            if *serving.info().revision == *revision(&files, &self.options) {
                return ReloadOutcome::Unchanged(serving.info_arc());
            }
        }
        match PolicySet::compile(&self.source, &files, &self.options, &self.warmup) {
            Ok(set) => {
                let info = set.info_arc();
                self.current.store(Some(Arc::new(set)));
                self.ready.send_replace(true);
                ReloadOutcome::Applied(info)
            }
            Err(err) => ReloadOutcome::Rejected(err),
        }
    }
}

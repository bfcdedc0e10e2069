//! The write side: the only way the live context changes. A change is committed to
//! the store, then applied to a copy of the snapshot (sharing every untouched branch)
//! and published, then announced to watchers. Checks never wait for any of it.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::{
    Change, DecisionNote, Event, Key, Record, Session, Snapshot, State, Store, StoreError, Task,
    TaskStatus, Watched,
};

/// What a Check saw that the state has not recorded yet: a task, or an agent on it.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub task: Arc<str>,
    pub human: Option<Arc<str>>,
    pub agent: Option<Arc<str>>,
    pub at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state updater has stopped")]
    Stopped,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// How many agents a task lists; the sessions record every one.
const MAX_AGENTS_PER_TASK: usize = 64;

/// Who leash records its own changes as.
pub const LEASH: &str = "leash";

#[derive(Debug)]
pub struct Updater {
    state: Arc<State>,
    store: Box<dyn Store>,
    /// One writer at a time: the store's sequence and the published snapshot agree.
    writing: Mutex<()>,
    events: broadcast::Sender<Watched>,
    /// Decisions go to watchers apart from changes: a flood of Checks never pushes a
    /// revocation out of a watcher's buffer.
    decisions: broadcast::Sender<Arc<DecisionNote>>,
    reports: Reports,
}

/// Where Checks report what the state should record; neither ever waits.
#[derive(Debug, Clone)]
pub struct Reports {
    pub sightings: mpsc::Sender<Sighting>,
    pub pauses: mpsc::Sender<PauseRequest>,
    /// Approvals a policy asked for, to record as pending.
    pub approvals: mpsc::Sender<super::Approval>,
}

/// The receiving ends of [`Reports`], for [`Updater::record_reports`].
#[derive(Debug)]
pub struct Inbox {
    sightings: mpsc::Receiver<Sighting>,
    pauses: mpsc::Receiver<PauseRequest>,
    approvals: mpsc::Receiver<super::Approval>,
}

/// A session to pause because of what a Check showed: a behaviour rule fired, or the
/// policy asked.
#[derive(Debug, Clone)]
pub struct PauseRequest {
    pub agent: Arc<str>,
    pub task: Arc<str>,
    /// The behaviour rule's name, or `None` when the policy asked.
    pub rule: Option<String>,
    pub reason: String,
    /// Seconds; `None` holds until resumed.
    pub pause_for: Option<i64>,
    pub at: i64,
}

/// How many sightings may wait for the updater; more are dropped, and the next Check
/// that sees the same task sends it again.
const SIGHTINGS: usize = 4096;
/// How many pauses may wait; a behaviour rule fires once per window per session, so
/// this is only reached by a flood of sessions.
const PAUSES: usize = 1024;
/// How many events a watcher may fall behind before it is told it missed some.
const EVENTS: usize = 4096;

impl Updater {
    /// Loads what `store` keeps into a first snapshot. The inbox is for
    /// [`record_reports`](Self::record_reports).
    pub fn open(store: Box<dyn Store>) -> Result<(Arc<Self>, Inbox), StoreError> {
        let stored = store.load()?;
        let mut snapshot = Snapshot {
            seq: stored.seq,
            ..Snapshot::default()
        };
        for record in stored.records {
            snapshot.apply(&Change::Put(record));
        }
        let (sightings, seen) = mpsc::channel(SIGHTINGS);
        let (pauses, paused) = mpsc::channel(PAUSES);
        let (approvals, asked) = mpsc::channel(PAUSES);
        let (events, _) = broadcast::channel(EVENTS);
        let (decisions, _) = broadcast::channel(EVENTS);
        let updater = Arc::new(Self {
            state: Arc::new(State::new(snapshot)),
            store,
            writing: Mutex::new(()),
            events,
            decisions,
            reports: Reports {
                sightings,
                pauses,
                approvals,
            },
        });
        Ok((
            updater,
            Inbox {
                sightings: seen,
                pauses: paused,
                approvals: asked,
            },
        ))
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Where a Check sends what it saw that the state lacks, and the pauses it
    /// calls for.
    pub fn reports(&self) -> Reports {
        self.reports.clone()
    }

    pub fn watch(&self) -> broadcast::Receiver<Watched> {
        self.events.subscribe()
    }

    /// The decisions as they are made, for watchers that asked for them.
    pub fn watch_decisions(&self) -> broadcast::Receiver<Arc<DecisionNote>> {
        self.decisions.subscribe()
    }

    /// Whether anyone watches decisions: a Check builds its note only then.
    pub fn watched(&self) -> bool {
        self.decisions.receiver_count() > 0
    }

    /// Announces a decision to the watchers of decisions.
    pub fn announce(&self, note: DecisionNote) {
        let _ = self.decisions.send(Arc::new(note));
    }

    /// Builds changes from the snapshot serving now, commits them durably, then
    /// publishes them: when this returns `Ok`, the next Check sees them. Building and
    /// committing happen under one writer lock, so no change is made from a stale
    /// snapshot. Blocking (it waits for the disk): call it off the async workers, as
    /// [`update`](Self::update) does. Returns the sequence number of the last change.
    pub fn update_blocking<F>(&self, by: &str, at: i64, build: F) -> Result<u64, UpdateError>
    where
        F: FnOnce(&Snapshot) -> Result<Vec<Change>, UpdateError>,
    {
        let _writer = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.state.snapshot();
        let changes = build(&current)?;
        if changes.is_empty() {
            return Ok(current.seq);
        }
        let last = self.store.commit(&changes, by, at)?;
        self.publish(&current, changes, last, by, at);
        Ok(last)
    }

    /// Applies `changes`, committed up to sequence number `last`, to a copy of
    /// `current` and publishes it, then announces them. Under the writer lock.
    fn publish(&self, current: &Snapshot, changes: Vec<Change>, last: u64, by: &str, at: i64) {
        let mut next = Snapshot::clone(current);
        for change in &changes {
            next.apply(change);
        }
        next.seq = last;
        self.state.publish(next);
        let first = last + 1 - changes.len() as u64;
        let by: Arc<str> = Arc::from(by);
        for (seq, change) in (first..).zip(changes) {
            // No watcher is not an error.
            let _ = self.events.send(Watched::Change(Arc::new(Event {
                seq,
                at,
                by: by.clone(),
                change,
            })));
        }
    }

    /// Spends one use of approval `id` for a Check at `now`, durably, before that
    /// Check is answered: `true` when this Check got the use. An approval spent,
    /// expired or decided otherwise meanwhile, here or by another sidecar sharing the
    /// store, gives `false`.
    pub fn spend_approval_blocking(&self, id: &str, now: i64) -> Result<bool, UpdateError> {
        let _writer = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.state.snapshot();
        let Some(approval) = current.approval(id) else {
            return Ok(false);
        };
        let Ok(spent) = super::ops::spend(approval, now) else {
            return Ok(false);
        };
        let (expected, next) = (
            Record::Approval(Box::new(approval.clone())),
            Record::Approval(Box::new(spent)),
        );
        let Some(last) = self.store.swap(&expected, &next, LEASH, now)? else {
            return Ok(false);
        };
        self.publish(&current, vec![Change::Put(next)], last, LEASH, now);
        Ok(true)
    }

    /// [`update_blocking`](Self::update_blocking) on the blocking pool.
    pub async fn update<F>(
        self: &Arc<Self>,
        by: &str,
        at: i64,
        build: F,
    ) -> Result<u64, UpdateError>
    where
        F: FnOnce(&Snapshot) -> Result<Vec<Change>, UpdateError> + Send + 'static,
    {
        let this = Arc::clone(self);
        let by = by.to_owned();
        tokio::task::spawn_blocking(move || this.update_blocking(&by, at, build))
            .await
            .map_err(|_| UpdateError::Stopped)?
    }

    /// Records the tasks and sessions Checks saw (in batches) and the pauses they call
    /// for, until `stop` resolves or every sender is gone. A failed write is logged;
    /// the next sighting tries again.
    pub async fn record_reports(
        self: Arc<Self>,
        mut inbox: Inbox,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut seen = Vec::with_capacity(256);
        loop {
            tokio::select! {
                () = &mut stop => return,
                Some(pause) = inbox.pauses.recv() => self.pause(pause).await,
                Some(approval) = inbox.approvals.recv() => {
                    let (id, at) = (approval.id.clone(), approval.requested_at);
                    let action = approval.binding.action.clone();
                    let recorded = self
                        .update_changed(at, move |s| Ok(super::ops::request_approval(s, approval)))
                        .await;
                    match recorded {
                        Ok(true) => tracing::info!(approval = %id, %action, "approval requested"),
                        // Another for the same action waits, or there is no room.
                        Ok(false) => {}
                        Err(err) => tracing::error!(approval = %id, "could not record an approval request: {err}"),
                    }
                }
                n = inbox.sightings.recv_many(&mut seen, 256) => {
                    if n == 0 {
                        return;
                    }
                    let at = seen.iter().map(|s| s.at).max().unwrap_or_default();
                    let batch = std::mem::take(&mut seen);
                    if let Err(err) = self
                        .update(LEASH, at, move |snapshot| Ok(sighted(snapshot, &batch)))
                        .await
                    {
                        tracing::error!("could not record the tasks Checks saw: {err}");
                    }
                }
            }
        }
    }

    /// Makes the changes `build` returns, by leash itself; `true` when there were any.
    async fn update_changed<F>(self: &Arc<Self>, at: i64, build: F) -> Result<bool, UpdateError>
    where
        F: FnOnce(&Snapshot) -> Result<Vec<Change>, UpdateError> + Send + 'static,
    {
        let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = changed.clone();
        self.update(LEASH, at, move |snapshot| {
            let changes = build(snapshot)?;
            seen.store(!changes.is_empty(), std::sync::atomic::Ordering::Relaxed);
            Ok(changes)
        })
        .await?;
        Ok(changed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Pauses a session a Check called to pause, unless a pause already holds it.
    async fn pause(self: &Arc<Self>, request: PauseRequest) {
        let cause = match &request.rule {
            Some(rule) => format!("behaviour rule {rule:?}: {}", request.reason),
            None => format!("the policy asked: {}", request.reason),
        };
        // A reason is kept to 1 KiB; the pause must not fail for a long one.
        let mut why = cause.clone();
        if why.len() > super::ops::MAX_REASON_BYTES {
            let mut end = super::ops::MAX_REASON_BYTES;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
        }
        let (agent, task, at) = (request.agent.clone(), request.task.clone(), request.at);
        let ttl = request
            .pause_for
            .map_or(0, |s| u64::try_from(s).unwrap_or(0));
        let result = self
            .update_changed(at, move |snapshot| {
                if snapshot
                    .session(&agent, &task)
                    .is_some_and(|s| s.paused(at).is_some())
                {
                    return Ok(Vec::new());
                }
                let by = super::ops::By {
                    caller: LEASH,
                    now: at,
                };
                super::ops::pause_session(snapshot, &agent, &task, &why, ttl, by)
            })
            .await;
        match result {
            Ok(true) => tracing::warn!(
                agent = %request.agent,
                task = %request.task,
                rule = request.rule.as_deref().unwrap_or("policy"),
                "session paused automatically: {cause}"
            ),
            // A pause already holds it.
            Ok(false) => {}
            Err(err) => tracing::error!(
                agent = %request.agent,
                task = %request.task,
                "could not pause the session ({cause}): {err}"
            ),
        }
    }

    /// Removes what has nothing left to hold at `now`; see [`Snapshot::expired`].
    pub fn sweep_blocking(&self, now: i64) -> Result<u64, UpdateError> {
        self.update_blocking(LEASH, now, |snapshot| Ok(snapshot.expired(now)))
    }
}

/// The records that `seen` adds to `snapshot`: new tasks, new agents on known tasks,
/// new sessions. Nothing that is already there, and never a status: a task ended
/// meanwhile stays ended.
pub fn sighted(snapshot: &Snapshot, seen: &[Sighting]) -> Vec<Change> {
    let mut tasks: std::collections::HashMap<Arc<str>, Task> = Default::default();
    let mut sessions: std::collections::HashMap<Key, Session> = Default::default();
    let (mut task_room, mut session_room) = (
        super::MAX_RECORDED.saturating_sub(snapshot.task_count()),
        super::MAX_RECORDED.saturating_sub(snapshot.session_count()),
    );
    let mut full = false;
    for s in seen {
        if snapshot.task(&s.task).is_none() && !tasks.contains_key(&s.task) {
            if task_room == 0 {
                full = true;
                continue;
            }
            task_room -= 1;
        }
        let task = tasks.entry(s.task.clone()).or_insert_with(|| {
            snapshot.task(&s.task).cloned().unwrap_or_else(|| Task {
                id: s.task.clone(),
                human: s.human.clone(),
                agents: Vec::new(),
                status: TaskStatus::Active,
                first_seen: s.at,
                ended: None,
                ended_by: None,
                end_reason: None,
            })
        });
        if let Some(agent) = &s.agent {
            if !task.knows(agent) && task.agents.len() < MAX_AGENTS_PER_TASK {
                task.agents.push(agent.clone());
            }
            let key = Key::session(agent, &s.task);
            if snapshot.session(agent, &s.task).is_none() && !sessions.contains_key(&key) {
                if session_room == 0 {
                    full = true;
                    continue;
                }
                session_room -= 1;
                sessions.insert(
                    key,
                    Session {
                        agent: agent.clone(),
                        task: s.task.clone(),
                        first_seen: s.at,
                        pause: None,
                    },
                );
            }
        }
    }
    if full {
        tracing::warn!(
            max = super::MAX_RECORDED,
            "the live context holds as many tasks or sessions as Checks may record; new ones are not recorded"
        );
    }
    tasks
        .into_values()
        .filter(|t| snapshot.task(&t.id) != Some(t))
        .map(|t| Change::Put(Record::Task(t)))
        .chain(
            sessions
                .into_values()
                .map(|s| Change::Put(Record::Session(s))),
        )
        .collect()
}

//! The write side: the only way the live context changes. A change is committed to
//! the store, then applied to a copy of the snapshot (sharing every untouched branch)
//! and published, then announced to watchers. Checks never wait for any of it.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::{
    Change, Event, Key, Record, Session, Snapshot, State, Store, StoreError, Task, TaskStatus,
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
    events: broadcast::Sender<Event>,
    sightings: mpsc::Sender<Sighting>,
}

/// How many sightings may wait for the updater; more are dropped, and the next Check
/// that sees the same task sends it again.
const SIGHTINGS: usize = 4096;
/// How many events a watcher may fall behind before it is told it missed some.
const EVENTS: usize = 4096;

impl Updater {
    /// Loads what `store` keeps into a first snapshot. The receiver is for
    /// [`record_sightings`](Self::record_sightings).
    pub fn open(
        store: Box<dyn Store>,
    ) -> Result<(Arc<Self>, mpsc::Receiver<Sighting>), StoreError> {
        let stored = store.load()?;
        let mut snapshot = Snapshot {
            seq: stored.seq,
            ..Snapshot::default()
        };
        for record in stored.records {
            snapshot.apply(&Change::Put(record));
        }
        let (sightings, receiver) = mpsc::channel(SIGHTINGS);
        let (events, _) = broadcast::channel(EVENTS);
        let updater = Arc::new(Self {
            state: Arc::new(State::new(snapshot)),
            store,
            writing: Mutex::new(()),
            events,
            sightings,
        });
        Ok((updater, receiver))
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Where a Check sends what it saw that the state lacks; never waits.
    pub fn sightings(&self) -> mpsc::Sender<Sighting> {
        self.sightings.clone()
    }

    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
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
        let mut next = Snapshot::clone(&current);
        drop(current);
        for change in &changes {
            next.apply(change);
        }
        next.seq = last;
        self.state.publish(next);
        let first = last + 1 - changes.len() as u64;
        let by: Arc<str> = Arc::from(by);
        for (seq, change) in (first..).zip(changes) {
            // No watcher is not an error.
            let _ = self.events.send(Event {
                seq,
                at,
                by: by.clone(),
                change,
            });
        }
        Ok(last)
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

    /// Records the tasks and sessions Checks saw, in batches, until `stop` resolves or
    /// every sender is gone. A failed write is logged; the next sighting tries again.
    pub async fn record_sightings(
        self: Arc<Self>,
        mut receiver: mpsc::Receiver<Sighting>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                () = &mut stop => return,
                n = receiver.recv_many(&mut batch, 256) => if n == 0 { return },
            }
            let at = batch.iter().map(|s| s.at).max().unwrap_or_default();
            let seen = std::mem::take(&mut batch);
            if let Err(err) = self
                .update(LEASH, at, move |snapshot| Ok(sighted(snapshot, &seen)))
                .await
            {
                tracing::error!("could not record the tasks Checks saw: {err}");
            }
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
pub(super) fn sighted(snapshot: &Snapshot, seen: &[Sighting]) -> Vec<Change> {
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

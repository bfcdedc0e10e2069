//! Live context: what is true right now about tasks, revocations, sessions and risk.
//!
//! A Check reads one [`Snapshot`] without a lock. Only the [`Updater`] changes it:
//! every change is written to the [`Store`] first, then published as a new snapshot.
//! The maps are persistent (structurally shared), so publishing a change copies a
//! path, never the whole state, and a burst of writes stays linear.

pub mod approvals;
pub mod behaviour;
pub mod ops;
mod record;
pub mod revocations;
pub mod risk;
pub mod sessions;
pub mod store;
pub mod tasks;
mod updater;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

pub use approvals::{Approval, ApprovalStatus, Binding, Party};
pub use record::{Change, DecisionNote, Event, Key, Record, Table, Watched};
pub use revocations::{SubjectKind, SubjectRevocation, TokenRevocation};
pub use risk::{RiskSignal, RiskSubject};
pub use sessions::{Pause, Session};
pub use store::{RedbStore, Store, StoreError, Stored};
pub use tasks::{Task, TaskStatus};
pub use updater::{Inbox, PauseRequest, Reports, Sighting, UpdateError, Updater, sighted};

/// A persistent map by name. Hashed with foldhash, seeded per process: a Check looks up
/// a dozen names, and SipHash was most of what that cost. foldhash resists collision
/// floods only minimally; what bounds one here is where the names come from (verified
/// tokens, operators), and that imbl's trie slows only on full 64-bit collisions.
type Map<V> = imbl::GenericHashMap<
    Arc<str>,
    V,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// How long an ended task is kept: far longer than any token bound to it can live,
/// so that no such token finds the task unrecorded and records it afresh as active.
pub const ENDED_TASK_RETENTION: i64 = 7 * 24 * 3600;

/// How many tasks, and sessions, Checks may record: an agent that can name fresh tasks
/// cannot grow the state without bound. Beyond it, new ones are not recorded (an
/// operator can still end or pause them; ending one records it).
pub const MAX_RECORDED: usize = 100_000;

/// Everything live, at one sequence number.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The sequence number of the last change applied.
    pub seq: u64,
    tasks: Map<Task>,
    /// By `jti`, then issuer.
    tokens: Map<Map<TokenRevocation>>,
    /// By kind: agents, humans, workloads; `subjects` by `sub`, then issuer.
    agents: Map<SubjectRevocation>,
    humans: Map<SubjectRevocation>,
    workloads: Map<SubjectRevocation>,
    subjects: Map<Map<SubjectRevocation>>,
    /// By agent, then task ("" for every task).
    sessions: Map<Map<Session>>,
    /// By subject kind, then id: the signals, one per (kind, source).
    risk: [Map<Arc<[RiskSignal]>>; 4],
    /// By id, and the latest id by the digest of what it allows.
    approvals: Map<Approval>,
    approval_by_digest: Map<Arc<str>>,
    /// How many approvals each task has: a Check on a task with none skips working
    /// out which one applies (hashing its action).
    approvals_per_task: Map<usize>,
}

/// Who a verified request speaks for, as the state reads it. Plain strings: the state
/// knows nothing of tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub issuer: &'a str,
    pub jti: Option<&'a str>,
    pub iat: Option<i64>,
    pub subject: Option<&'a str>,
    pub agent: Option<&'a str>,
    /// Every actor of the delegation chain, current first: a revoked or paused agent
    /// does not act through another.
    pub actors: &'a [String],
    pub human: Option<&'a str>,
    pub workload: Option<&'a str>,
    pub task: Option<&'a str>,
}

impl Who<'_> {
    /// The first name the state could not hold: too long, or with a control
    /// character. A request naming one is refused, since no operator could revoke or
    /// pause it.
    pub fn ungovernable(&self) -> Option<(&'static str, &str)> {
        [
            ("jti", self.jti),
            ("sub", self.subject),
            ("agent", self.agent),
            ("human", self.human),
            ("workload", self.workload),
            ("task", self.task),
        ]
        .into_iter()
        .filter_map(|(what, v)| v.map(|v| (what, v)))
        .chain(self.actors.iter().map(|a| ("act", a.as_str())))
        .find(|(_, v)| !ops::valid_id(v))
    }

    fn agents(&self) -> impl Iterator<Item = &str> {
        self.agent
            .into_iter()
            .chain(self.actors.iter().map(String::as_str))
    }
}

/// Why the live context refuses a request before policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold<'a> {
    TokenRevoked(&'a TokenRevocation),
    SubjectRevoked(&'a SubjectRevocation),
    TaskEnded(&'a Task),
    SessionPaused(&'a Session),
}

/// What the live context holds about a request that it does not refuse: what the
/// policy sees under `input.leash.context`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live<'a> {
    pub task: Option<&'a Task>,
    pub session: Option<&'a Session>,
    /// Per [`RiskSubject`] (in `ALL` order), the subject's signals, live or not.
    pub risk: [Option<&'a [RiskSignal]>; 4],
}

impl<'a> Live<'a> {
    /// The signals about the request's subject of one kind, live or not.
    pub fn risk(&self, subject: RiskSubject) -> &'a [RiskSignal] {
        let [agent, human, workload, task] = self.risk;
        match subject {
            RiskSubject::Agent => agent,
            RiskSubject::Human => human,
            RiskSubject::Workload => workload,
            RiskSubject::Task => task,
        }
        .unwrap_or_default()
    }
}

impl Snapshot {
    /// The live context of `who` at `now`, or why it is refused. The order is fixed:
    /// the token, then its subjects, then the task, then the session.
    pub fn standing<'s>(&'s self, who: &Who<'_>, now: i64) -> Result<Live<'s>, Hold<'s>> {
        if let Some(rev) = who
            .jti
            .and_then(|jti| self.tokens.get(jti))
            .and_then(|by_issuer| by_issuer.get(who.issuer))
        {
            return Err(Hold::TokenRevoked(rev));
        }
        let subject = who
            .subject
            .and_then(|sub| self.subjects.get(sub))
            .and_then(|by_issuer| by_issuer.get(who.issuer));
        let agents = who.agents().filter_map(|a| self.agents.get(a));
        for rev in agents.chain(
            [
                who.human.and_then(|h| self.humans.get(h)),
                who.workload.and_then(|w| self.workloads.get(w)),
                subject,
            ]
            .into_iter()
            .flatten(),
        ) {
            if rev.covers(who.iat) {
                return Err(Hold::SubjectRevoked(rev));
            }
        }
        let task = who.task.and_then(|t| self.tasks.get(t));
        if let Some(task) = task.filter(|t| t.status != TaskStatus::Active) {
            return Err(Hold::TaskEnded(task));
        }
        let task_key = who.task.unwrap_or("");
        for sessions in who.agents().filter_map(|a| self.sessions.get(a)) {
            for held in [sessions.get(task_key), sessions.get("")]
                .into_iter()
                .flatten()
            {
                if held.paused(now).is_some() {
                    return Err(Hold::SessionPaused(held));
                }
            }
        }
        let session = who
            .agent
            .and_then(|a| self.sessions.get(a))
            .and_then(|s| s.get(task_key));
        let ids = [who.agent, who.human, who.workload, who.task];
        let mut risk = [None; 4];
        for ((slot, map), id) in risk.iter_mut().zip(&self.risk).zip(ids) {
            *slot = id.and_then(|id| map.get(id)).map(|s| &**s);
        }
        Ok(Live {
            task,
            session,
            risk,
        })
    }

    /// The signals about one kind of subject, by id.
    fn risk_of(&mut self, subject: RiskSubject) -> &mut Map<Arc<[RiskSignal]>> {
        let [agents, humans, workloads, tasks] = &mut self.risk;
        match subject {
            RiskSubject::Agent => agents,
            RiskSubject::Human => humans,
            RiskSubject::Workload => workloads,
            RiskSubject::Task => tasks,
        }
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.values().map(Map::len).sum()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn token_revocation(&self, issuer: &str, jti: &str) -> Option<&TokenRevocation> {
        self.tokens.get(jti).and_then(|m| m.get(issuer))
    }

    pub fn subject_revocation(
        &self,
        kind: SubjectKind,
        issuer: Option<&str>,
        id: &str,
    ) -> Option<&SubjectRevocation> {
        match (kind, issuer) {
            (SubjectKind::Agent, _) => self.agents.get(id),
            (SubjectKind::Human, _) => self.humans.get(id),
            (SubjectKind::Workload, _) => self.workloads.get(id),
            (SubjectKind::Subject, Some(issuer)) => {
                self.subjects.get(id).and_then(|m| m.get(issuer))
            }
            (SubjectKind::Subject, None) => None,
        }
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().flat_map(|by_task| by_task.values())
    }

    pub fn session(&self, agent: &str, task: &str) -> Option<&Session> {
        self.sessions.get(agent).and_then(|s| s.get(task))
    }

    /// Whether an approval was asked (and not yet swept) for an action of `task`. With
    /// none at all, as on most Checks, the task is not even hashed.
    pub fn approvals_on(&self, task: &str) -> bool {
        !self.approvals_per_task.is_empty() && self.approvals_per_task.contains_key(task)
    }

    pub fn approval(&self, id: &str) -> Option<&Approval> {
        self.approvals.get(id)
    }

    /// The latest approval asked for the action whose binding has `digest`.
    pub fn approval_for(&self, digest: &str) -> Option<&Approval> {
        self.approval_by_digest
            .get(digest)
            .and_then(|id| self.approvals.get(&**id))
    }

    pub fn approvals(&self) -> impl Iterator<Item = &Approval> {
        self.approvals.values()
    }

    pub fn risk_signals(&self) -> impl Iterator<Item = &RiskSignal> {
        self.risk
            .iter()
            .flat_map(|by_id| by_id.values().flat_map(|s| s.iter()))
    }

    /// How many entries each kind holds: tasks, token revocations, subject revocations,
    /// sessions, risk signals.
    pub fn counts(&self) -> [usize; 5] {
        let nested = |m: &Map<Map<_>>| m.values().map(Map::len).sum::<usize>();
        [
            self.tasks.len(),
            self.tokens.values().map(Map::len).sum(),
            self.agents.len() + self.humans.len() + self.workloads.len() + nested(&self.subjects),
            self.sessions.values().map(Map::len).sum(),
            self.risk
                .iter()
                .map(|m| m.values().map(|s| s.len()).sum::<usize>())
                .sum(),
        ]
    }

    /// Applies one change in place: the updater does this on its own copy, which
    /// shares every untouched branch with the snapshot being read.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Put(record) => self.put(record.clone()),
            Change::Delete(key) => self.delete(key),
        }
    }

    fn put(&mut self, record: Record) {
        match record {
            Record::Task(task) => {
                self.tasks.insert(task.id.clone(), task);
            }
            Record::Token(rev) => {
                self.tokens
                    .entry(rev.jti.clone())
                    .or_default()
                    .insert(rev.issuer.clone(), rev);
            }
            Record::Subject(rev) => match (rev.kind, rev.issuer.clone()) {
                (SubjectKind::Subject, Some(issuer)) => {
                    self.subjects
                        .entry(rev.id.clone())
                        .or_default()
                        .insert(issuer, rev);
                }
                // A subject revocation always names its issuer; the control API checks.
                (SubjectKind::Subject, None) => {}
                (kind, _) => {
                    if let Some(map) = self.by_kind(kind) {
                        map.insert(rev.id.clone(), rev);
                    }
                }
            },
            Record::Session(session) => {
                self.sessions
                    .entry(session.agent.clone())
                    .or_default()
                    .insert(session.task.clone(), session);
            }
            Record::Approval(approval) => {
                self.approval_by_digest
                    .insert(approval.digest.clone(), approval.id.clone());
                let task = approval.binding.task.clone();
                let replaced = self.approvals.insert(approval.id.clone(), *approval);
                // An id names one action, so one task; counted anew only if not.
                match replaced {
                    Some(old) if old.binding.task == task => {}
                    Some(old) => {
                        self.uncount_approval(&old.binding.task);
                        *self.approvals_per_task.entry(task).or_default() += 1;
                    }
                    None => *self.approvals_per_task.entry(task).or_default() += 1,
                }
            }
            Record::Risk(signal) => {
                let map = self.risk_of(signal.subject);
                let mut signals: Vec<RiskSignal> =
                    map.get(&*signal.id).map(|s| s.to_vec()).unwrap_or_default();
                signals.retain(|s| (&s.kind, &s.source) != (&signal.kind, &signal.source));
                let id = signal.id.clone();
                signals.push(signal);
                map.insert(id, signals.into());
            }
        }
    }

    fn uncount_approval(&mut self, task: &Arc<str>) {
        match self.approvals_per_task.get(&**task) {
            Some(&n) if n > 1 => {
                self.approvals_per_task.insert(task.clone(), n - 1);
            }
            _ => {
                self.approvals_per_task.remove(&**task);
            }
        }
    }

    /// The map of a kind keyed by id alone; one issuer's subjects are nested apart.
    fn by_kind(&mut self, kind: SubjectKind) -> Option<&mut Map<SubjectRevocation>> {
        match kind {
            SubjectKind::Agent => Some(&mut self.agents),
            SubjectKind::Human => Some(&mut self.humans),
            SubjectKind::Workload => Some(&mut self.workloads),
            SubjectKind::Subject => None,
        }
    }

    fn delete(&mut self, key: &Key) {
        let parts: Vec<&str> = key.parts().collect();
        fn remove_nested<V: Clone>(map: &mut Map<Map<V>>, outer: &str, inner: &str) {
            if let Some(m) = map.get_mut(outer) {
                m.remove(inner);
                if m.is_empty() {
                    map.remove(outer);
                }
            }
        }
        match (key.table, parts.as_slice()) {
            (Table::Tasks, [id]) => {
                self.tasks.remove(*id);
            }
            (Table::Approvals, [id]) => {
                if let Some(gone) = self.approvals.remove(*id) {
                    if self.approval_by_digest.get(&*gone.digest) == Some(&gone.id) {
                        self.approval_by_digest.remove(&*gone.digest);
                    }
                    self.uncount_approval(&gone.binding.task);
                }
            }
            (Table::Tokens, [issuer, jti]) => remove_nested(&mut self.tokens, jti, issuer),
            (Table::Subjects, ["subject", issuer, id]) => {
                remove_nested(&mut self.subjects, id, issuer);
            }
            (Table::Subjects, [kind, id]) => {
                if let Some(map) = SubjectKind::parse(kind).and_then(|k| self.by_kind(k)) {
                    map.remove(*id);
                }
            }
            (Table::Sessions, [agent, task]) => remove_nested(&mut self.sessions, agent, task),
            (Table::Risk, [subject, id, kind, source]) => {
                let Some(subject) = RiskSubject::parse(subject) else {
                    return;
                };
                let map = self.risk_of(subject);
                if let Some(signals) = map.get(*id) {
                    let kept: Vec<RiskSignal> = signals
                        .iter()
                        .filter(|s| (&*s.kind, &*s.source) != (*kind, *source))
                        .cloned()
                        .collect();
                    if kept.is_empty() {
                        map.remove(*id);
                    } else {
                        map.insert(Arc::from(*id), kept.into());
                    }
                }
            }
            _ => {}
        }
    }

    /// The changes that remove what has nothing left to hold at `now`: token
    /// revocations past their token's expiry, expired risk signals, pauses that ran
    /// out, and tasks ended more than [`ENDED_TASK_RETENTION`] ago.
    pub fn expired(&self, now: i64) -> Vec<Change> {
        // Read in place, every 30 s under the writer lock: only what goes is copied.
        // Subject revocations are kept (their `until` is never reached).
        let tokens = self
            .tokens
            .values()
            .flat_map(|m| m.values())
            .filter(|rev| rev.until <= now)
            .map(|rev| Key::token(&rev.issuer, &rev.jti));
        let signals = self
            .risk_signals()
            .filter(|signal| !signal.live(now))
            .map(Key::risk);
        let tasks = self
            .tasks
            .values()
            .filter(|t| {
                t.ended
                    .is_some_and(|ended| ended.saturating_add(ENDED_TASK_RETENTION) <= now)
            })
            .map(|t| Key::task(&t.id));
        // Kept an hour past its deadline, for the agent polling its status.
        let approvals = self
            .approvals
            .values()
            .filter(|a| a.expires_at.saturating_add(3600) <= now)
            .map(|a| Key::approval(&a.id));
        let mut gone: Vec<Change> = tokens
            .chain(signals)
            .chain(tasks)
            .chain(approvals)
            .map(Change::Delete)
            .collect();
        // A session outlives its pause: only the pause goes.
        gone.extend(
            self.sessions()
                .filter(|s| {
                    s.pause
                        .as_ref()
                        .is_some_and(|p| p.until.is_some_and(|u| u <= now))
                })
                .map(|s| {
                    Change::Put(Record::Session(Session {
                        pause: None,
                        ..s.clone()
                    }))
                }),
        );
        gone
    }
}

/// The read side: one snapshot, swapped whole. Cheap to share.
#[derive(Debug, Default)]
pub struct State {
    current: ArcSwap<Snapshot>,
}

impl State {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The snapshot serving now: no lock, no copy.
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

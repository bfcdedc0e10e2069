//! Behaviour counters per session (an agent on a task) over a sliding window, and the
//! rules that pause a session when its behaviour shifts: so many denials, so many
//! calls of a class, a burst, a tool never seen before once the task has settled.
//!
//! Counters live in memory, one shard lock per group of sessions: a Check touches one
//! uncontended lock. They restart empty with leash; the pauses they cause are durable
//! like any other.

use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Every Check hashes its session's names here: foldhash, seeded per process, costs a
/// fraction of SipHash on short names.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Denied Checks.
    Denials,
    /// Calls of any class.
    Calls,
    /// Calls of one class (read 0, write 1, destructive 2).
    Class(usize),
    /// Request body bytes leash saw.
    BodyBytes,
    /// A tool the session has not called before, once its task is `after` seconds old.
    NewTool { after: i64 },
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub trigger: Trigger,
    /// Fires when the count within `within` reaches this.
    pub at_least: u64,
    /// Seconds.
    pub within: i64,
    /// How long the pause holds, seconds; `None` until resumed.
    pub pause_for: Option<i64>,
}

/// The counts of one session over the window, before the Check being decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// The window, seconds.
    pub window: i64,
    /// Calls per class: read, write, destructive.
    pub calls: [u64; 3],
    pub denials: u64,
    pub body_bytes: u64,
    /// Distinct tools the session has called.
    pub tools: u64,
}

/// One Check, as the counters see it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub agent: &'a str,
    pub task: &'a str,
    /// read 0, write 1, destructive 2; `None` when the action was not classified.
    pub class: Option<usize>,
    pub tool: Option<&'a str>,
    pub denied: bool,
    pub body_bytes: u64,
    pub at: i64,
    /// When the task was first seen, for rules that wait for it to settle.
    pub task_since: Option<i64>,
}

/// A rule that fired: the session is to be paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub rule: String,
    pub detail: String,
    pub pause_for: Option<i64>,
}

impl Fired {
    /// Why the session is paused, as the denial and the log say it.
    pub fn summary(&self) -> String {
        format!(
            "behaviour rule {:?} paused the session: {}",
            self.rule, self.detail
        )
    }
}

/// Per bucket: read, write, destructive, denials, body bytes.
type Bucket = [u64; 5];

#[derive(Debug, Default)]
struct Session {
    /// (bucket start, counts), oldest first, none older than the window.
    buckets: VecDeque<(i64, Bucket)>,
    tools: HashMap<Arc<str>, ()>,
    last: i64,
    /// After a rule fires, none fires again for this session before this moment: the
    /// pause it asked for is on its way.
    quiet_until: i64,
    /// After a rule fires, the session's Checks are refused until this moment, while its
    /// pause is recorded; then the live context's pause holds.
    held_until: i64,
    /// Why: the rule that fired and what it counted.
    held_for: Option<Arc<str>>,
}

/// How long a rule's in-memory hold covers the pause it asked for while the updater
/// records it (milliseconds as a rule, fsync included). A resume within it waits it out.
pub const HOLD_SECONDS: i64 = 5;

/// How many tools a session remembers; beyond it, new tools are not counted as new.
pub const MAX_TOOLS: usize = 256;
/// Tool names longer than this are remembered as [`LONG_NAME`].
const MAX_TOOL_NAME: usize = 128;
const LONG_NAME: &str = "(a name over 128 bytes)";
const SHARDS: usize = 16;

/// The sessions of one shard, by agent, then task: looked up by borrowed names, so a
/// Check allocates only for a session's first call.
type Shard = HashMap<Arc<str>, HashMap<Arc<str>, Session>>;

#[derive(Debug)]
pub struct Behaviour {
    rules: Vec<Rule>,
    /// The longest window a rule reads, and the bucket width, seconds.
    window: i64,
    bucket: i64,
    /// Sessions kept per shard before idle ones are dropped.
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    shards: [Mutex<Shard>; SHARDS],
    /// The latest moment any session is held until: while none is, a Check takes no
    /// lock to learn that its own is not.
    holds_until: AtomicI64,
}

impl Behaviour {
    pub fn new(rules: Vec<Rule>, max_sessions: usize) -> Self {
        let window = rules.iter().map(|r| r.within).max().unwrap_or(60).max(1);
        Self {
            rules,
            window,
            // Sixty buckets over the longest window: each count is exact to 1/60 of it.
            bucket: (window / 60).max(1),
            per_shard: (max_sessions / SHARDS).max(1),
            hasher: Default::default(),
            shards: Default::default(),
            holds_until: AtomicI64::new(0),
        }
    }

    pub fn window(&self) -> i64 {
        self.window
    }

    /// Whether a rule reads the task's age, so that a Check looks it up only then.
    pub fn reads_task_age(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.trigger, Trigger::NewTool { .. }))
    }

    fn shard(&self, agent: &str, task: &str) -> &Mutex<Shard> {
        let i = usize::try_from(self.hasher.hash_one((agent, task)) % SHARDS as u64)
            .unwrap_or_default();
        let [first, ..] = &self.shards;
        self.shards.get(i).unwrap_or(first)
    }

    /// Why the session is held, if a rule fired on it less than [`HOLD_SECONDS`] ago:
    /// the Checks that arrive between a rule firing and its pause being recorded are
    /// refused too, not only the one that tripped it.
    pub fn held(&self, agent: &str, task: &str, now: i64) -> Option<Arc<str>> {
        if now >= self.holds_until.load(Ordering::Relaxed) {
            return None;
        }
        let shard = self
            .shard(agent, task)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let session = shard.get(agent).and_then(|tasks| tasks.get(task))?;
        (now < session.held_until)
            .then(|| session.held_for.clone())
            .flatten()
    }

    /// Holds the session from now for [`HOLD_SECONDS`], for `why`, while a pause the
    /// policy asked for is recorded: as after a rule fired.
    pub fn hold(&self, agent: &str, task: &str, now: i64, why: &str) {
        let mut shard = self
            .shard(agent, task)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(session) = shard.get_mut(agent).and_then(|t| t.get_mut(task)) {
            self.hold_session(session, now, why);
        }
    }

    /// Refuses `session`'s Checks for [`HOLD_SECONDS`] from `now`, for `why`.
    fn hold_session(&self, session: &mut Session, now: i64, why: &str) {
        session.held_until = now.saturating_add(HOLD_SECONDS);
        session.held_for = Some(Arc::from(why));
        self.holds_until
            .fetch_max(session.held_until, Ordering::Relaxed);
    }

    /// Lets a session's rules fire again at once: the pause the last one asked for
    /// could not be sent.
    pub fn rearm(&self, agent: &str, task: &str) {
        let mut shard = self
            .shard(agent, task)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(session) = shard.get_mut(agent).and_then(|t| t.get_mut(task)) {
            session.quiet_until = 0;
            session.held_until = 0;
        }
    }

    /// The session's counts over the window at `now`.
    pub fn counts(&self, agent: &str, task: &str, now: i64) -> Counts {
        let shard = self
            .shard(agent, task)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counts = Counts {
            window: self.window,
            ..Counts::default()
        };
        if let Some(session) = shard.get(agent).and_then(|tasks| tasks.get(task)) {
            let [read, write, destructive, denials, body_bytes] = sum(session, now - self.window);
            counts.calls = [read, write, destructive];
            counts.denials = denials;
            counts.body_bytes = body_bytes;
            counts.tools = session.tools.len() as u64;
        }
        counts
    }

    /// Counts one Check, and returns the first rule it makes fire.
    pub fn observe(&self, o: &Observation<'_>) -> Option<Fired> {
        let mut shard = self
            .shard(o.agent, o.task)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = shard
            .get(o.agent)
            .is_some_and(|tasks| tasks.contains_key(o.task));
        if !known {
            let count = |shard: &Shard| shard.values().map(HashMap::len).sum::<usize>();
            if count(&shard) >= self.per_shard {
                let idle = o.at - self.window;
                shard.retain(|_, tasks| {
                    tasks.retain(|_, s| s.last > idle);
                    !tasks.is_empty()
                });
                // Full of live sessions, one makes room: not counting the new one
                // would let an agent escape every rule by opening sessions until the
                // table is full.
                if count(&shard) >= self.per_shard && !make_room(&mut shard, o.agent, o.at) {
                    return None;
                }
            }
            shard
                .entry(Arc::from(o.agent))
                .or_default()
                .insert(Arc::from(o.task), Session::default());
        }
        let session = shard
            .get_mut(o.agent)
            .and_then(|tasks| tasks.get_mut(o.task))?;
        session.last = o.at;
        let start = o.at - o.at.rem_euclid(self.bucket);
        while session
            .buckets
            .front()
            .is_some_and(|(at, _)| *at <= o.at - self.window)
        {
            session.buckets.pop_front();
        }
        if session.buckets.back().is_none_or(|(at, _)| *at != start) {
            session.buckets.push_back((start, [0; 5]));
        }
        if let Some((_, [read, write, destructive, denials, bytes])) = session.buckets.back_mut() {
            match o.class {
                Some(0) => *read += 1,
                Some(1) => *write += 1,
                Some(2) => *destructive += 1,
                _ => {}
            }
            *denials += u64::from(o.denied);
            *bytes = bytes.saturating_add(o.body_bytes);
        }
        // A tool counts as seen once a call to it was allowed: probing every tool early
        // with denied calls does not make later ones look familiar. Names are the
        // agent's words: a long one is remembered as one shared name.
        let name = o.tool.map(|t| {
            if t.len() > MAX_TOOL_NAME {
                LONG_NAME
            } else {
                t
            }
        });
        let new_tool = match name {
            Some(tool) if !session.tools.contains_key(tool) => {
                if !o.denied && session.tools.len() < MAX_TOOLS {
                    session.tools.insert(Arc::from(tool), ());
                }
                true
            }
            _ => false,
        };
        if o.at < session.quiet_until {
            return None;
        }
        let fired = self.rules.iter().find_map(|rule| {
            let [read, write, destructive, denials, bytes] = sum(session, o.at - rule.within);
            let count = match rule.trigger {
                Trigger::NewTool { after } => {
                    let settled = o.task_since.is_some_and(|since| o.at - since >= after);
                    return (new_tool && settled).then(|| Fired {
                        rule: rule.name.clone(),
                        detail: format!(
                            "tool {:?} was never called in this session, {after} s or more into its task",
                            o.tool.unwrap_or_default()
                        ),
                        pause_for: rule.pause_for,
                    });
                }
                Trigger::Denials => denials,
                Trigger::BodyBytes => bytes,
                Trigger::Calls => read + write + destructive,
                Trigger::Class(0) => read,
                Trigger::Class(1) => write,
                Trigger::Class(_) => destructive,
            };
            (count >= rule.at_least).then(|| Fired {
                rule: rule.name.clone(),
                detail: format!(
                    "{count} {} within {} s (the rule pauses at {})",
                    what(rule.trigger),
                    rule.within,
                    rule.at_least
                ),
                pause_for: rule.pause_for,
            })
        });
        if let Some(fired) = &fired {
            session.quiet_until = o.at.saturating_add(self.window);
            self.hold_session(session, o.at, &fired.summary());
        }
        fired
    }
}

fn what(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Denials => "denials",
        Trigger::Calls => "calls",
        Trigger::Class(0) => "reads",
        Trigger::Class(1) => "writes",
        Trigger::Class(_) => "destructive calls",
        Trigger::BodyBytes => "request body bytes",
        Trigger::NewTool { .. } => "new tools",
    }
}

/// The counts of the buckets that start after `since`.
fn sum(session: &Session, since: i64) -> Bucket {
    let mut total = [0u64; 5];
    for (_, bucket) in session.buckets.iter().filter(|(at, _)| *at > since) {
        for (t, b) in total.iter_mut().zip(bucket) {
            *t = t.saturating_add(*b);
        }
    }
    total
}

/// Drops a session from a full `shard` for `agent`'s new one: the least recent of the
/// agent's own if it has any here, so that an agent opening sessions pushes out only
/// its own; else the least recent of any. Never one held after a rule fired. False
/// when every candidate is held.
fn make_room(shard: &mut Shard, agent: &str, now: i64) -> bool {
    let own = shard
        .get_key_value(agent)
        .filter(|(_, tasks)| !tasks.is_empty());
    let oldest = match own {
        Some((agent, tasks)) => least_recent(agent, tasks, now),
        None => shard
            .iter()
            .filter_map(|(agent, tasks)| least_recent(agent, tasks, now))
            .min_by_key(|(last, _, _)| *last),
    }
    .map(|(_, agent, task)| (agent.clone(), task.clone()));
    let Some((agent, task)) = oldest else {
        return false;
    };
    if let Some(tasks) = shard.get_mut(&agent) {
        tasks.remove(&task);
        if tasks.is_empty() {
            shard.remove(&agent);
        }
    }
    true
}

/// The session of `agent` not held at `now` whose last call is the oldest.
fn least_recent<'a>(
    agent: &'a Arc<str>,
    tasks: &'a HashMap<Arc<str>, Session>,
    now: i64,
) -> Option<(i64, &'a Arc<str>, &'a Arc<str>)> {
    tasks
        .iter()
        .filter(|(_, s)| now >= s.held_until)
        .map(|(task, s)| (s.last, agent, task))
        .min_by_key(|(last, _, _)| *last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(sessions: &[(&str, &str, i64, i64)]) -> Shard {
        let mut shard = Shard::default();
        for &(agent, task, last, held_until) in sessions {
            shard.entry(Arc::from(agent)).or_default().insert(
                Arc::from(task),
                Session {
                    last,
                    held_until,
                    ..Session::default()
                },
            );
        }
        shard
    }

    fn has(shard: &Shard, agent: &str, task: &str) -> bool {
        shard.get(agent).is_some_and(|t| t.contains_key(task))
    }

    #[test]
    fn room_is_made_from_the_agents_own_sessions_first_and_never_from_held_ones() {
        // The newcomer's agent has sessions here: its own oldest goes, not the older
        // session of another agent.
        let mut s = shard(&[
            ("victim", "v", 10, 0),
            ("mallory", "m1", 20, 0),
            ("mallory", "m2", 30, 0),
        ]);
        assert!(make_room(&mut s, "mallory", 100));
        assert!(has(&s, "victim", "v") && !has(&s, "mallory", "m1") && has(&s, "mallory", "m2"));
        // A newcomer with none here takes the oldest of anyone's, skipping a held one.
        let mut s = shard(&[("a", "held", 10, 200), ("b", "t", 20, 0), ("c", "t", 30, 0)]);
        assert!(make_room(&mut s, "new", 100));
        assert!(has(&s, "a", "held") && !has(&s, "b", "t") && has(&s, "c", "t"));
        // Nothing but held sessions: no room.
        let mut s = shard(&[("a", "t", 10, 200)]);
        assert!(!make_room(&mut s, "new", 100));
        assert!(has(&s, "a", "t"));
    }
}

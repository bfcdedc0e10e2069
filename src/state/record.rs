//! The unit a store keeps and a change carries: one record under one key. A fleet
//! store (Redis) keeps the same records under the same keys.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Approval, RiskSignal, Session, SubjectKind, SubjectRevocation, Task, TokenRevocation};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Not `kind`: risk signals and subject revocations have a field of that name.
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Task(Task),
    Token(TokenRevocation),
    Subject(SubjectRevocation),
    Session(Session),
    Risk(RiskSignal),
    Approval(Box<Approval>),
}

/// Where a record lives. The names are the store's table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Tasks,
    Tokens,
    Subjects,
    Sessions,
    Risk,
    Approvals,
}

impl Table {
    pub const ALL: [Self; 6] = [
        Self::Tasks,
        Self::Tokens,
        Self::Subjects,
        Self::Sessions,
        Self::Risk,
        Self::Approvals,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::Tokens => "tokens",
            Self::Subjects => "subjects",
            Self::Sessions => "sessions",
            Self::Risk => "risk",
            Self::Approvals => "approvals",
        }
    }
}

/// A record's key: its table and its id parts joined by U+001F, which no id may hold
/// (the control API refuses control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub table: Table,
    pub id: String,
}

const SEPARATOR: char = '\u{1f}';

impl Key {
    fn new<'a>(table: Table, parts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut id = String::new();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                id.push(SEPARATOR);
            }
            id.push_str(part);
        }
        Self { table, id }
    }

    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.id.split(SEPARATOR)
    }

    pub fn task(id: &str) -> Self {
        Self::new(Table::Tasks, [id])
    }

    pub fn token(issuer: &str, jti: &str) -> Self {
        Self::new(Table::Tokens, [issuer, jti])
    }

    pub fn subject(kind: SubjectKind, issuer: Option<&str>, id: &str) -> Self {
        match (kind, issuer) {
            (SubjectKind::Subject, Some(issuer)) => {
                Self::new(Table::Subjects, [kind.name(), issuer, id])
            }
            _ => Self::new(Table::Subjects, [kind.name(), id]),
        }
    }

    pub fn session(agent: &str, task: &str) -> Self {
        Self::new(Table::Sessions, [agent, task])
    }

    pub fn approval(id: &str) -> Self {
        Self::new(Table::Approvals, [id])
    }

    pub fn risk(signal: &RiskSignal) -> Self {
        Self::new(
            Table::Risk,
            [
                signal.subject.name(),
                &*signal.id,
                &*signal.kind,
                &*signal.source,
            ],
        )
    }
}

impl Record {
    pub fn key(&self) -> Key {
        match self {
            Self::Task(t) => Key::task(&t.id),
            Self::Token(r) => Key::token(&r.issuer, &r.jti),
            Self::Subject(r) => Key::subject(r.kind, r.issuer.as_deref(), &r.id),
            Self::Session(s) => Key::session(&s.agent, &s.task),
            Self::Risk(s) => Key::risk(s),
            Self::Approval(a) => Key::approval(&a.id),
        }
    }
}

/// One change to the state: a record written whole, or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Put(Record),
    Delete(Key),
}

impl Change {
    pub fn key(&self) -> Key {
        match self {
            Self::Put(record) => record.key(),
            Self::Delete(key) => key.clone(),
        }
    }
}

/// A change as watchers see it, in sequence order: what, when and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// Who made it: a control API caller, `leash` for what leash records itself.
    pub by: Arc<str>,
    pub change: Change,
}

/// A decision as watchers see it: what was asked, by whom, and the answer. Never a
/// token.
#[derive(Debug, Clone, Default)]
pub struct DecisionNote {
    pub decision_id: String,
    /// Unix seconds.
    pub at: i64,
    pub allowed: bool,
    /// The reason code of a denial.
    pub reason: Option<&'static str>,
    pub action: Option<&'static str>,
    pub tool: Option<String>,
    pub agent: Option<Arc<str>>,
    pub human: Option<Arc<str>>,
    pub task: Option<Arc<str>>,
    /// The sequence number of the state the decision was made against.
    pub state_seq: u64,
}

/// What a watcher of changes receives, in sequence order.
#[derive(Debug, Clone)]
pub enum Watched {
    Change(Arc<Event>),
}

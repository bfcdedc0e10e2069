//! Tasks: recorded the first time a verified token names one, ended by an operator.
//! An ended task denies every token bound to it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Active,
    Completed,
    Revoked,
}

impl TaskStatus {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: Arc<str>,
    /// The human who delegated it, as the first token naming it said.
    pub human: Option<Arc<str>>,
    /// Every agent seen working on it, in the order they were first seen.
    pub agents: Vec<Arc<str>>,
    pub status: TaskStatus,
    /// Unix seconds.
    pub first_seen: i64,
    pub ended: Option<i64>,
    /// Who ended it and why, as the control API caller said.
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
}

impl Task {
    /// Whether `agent` is already on record for this task.
    pub fn knows(&self, agent: &str) -> bool {
        self.agents.iter().any(|known| &**known == agent)
    }
}

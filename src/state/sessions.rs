//! Sessions: an agent working on a task. A paused session denies until it is resumed
//! or its pause runs out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub agent: Arc<str>,
    /// Empty for a pause that holds the agent on every task.
    pub task: Arc<str>,
    pub first_seen: i64,
    pub pause: Option<Pause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub reason: String,
    pub by: String,
    pub at: i64,
    /// Unix seconds; `None` holds until resumed.
    pub until: Option<i64>,
}

impl Session {
    /// The pause holding this session at `now`, if any.
    pub fn paused(&self, now: i64) -> Option<&Pause> {
        self.pause
            .as_ref()
            .filter(|p| p.until.is_none_or(|until| now < until))
    }
}

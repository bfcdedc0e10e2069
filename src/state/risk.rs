//! Risk signals: a score from 0 to 100 about an agent, a human, a workload or a task,
//! from a source, until it expires. Policies see the live signals and the maximum
//! score per subject kind; expired signals are ignored on read and swept later.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSubject {
    Agent,
    Human,
    Workload,
    Task,
}

impl RiskSubject {
    pub const ALL: [Self; 4] = [Self::Agent, Self::Human, Self::Workload, Self::Task];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Human => "human",
            Self::Workload => "workload",
            Self::Task => "task",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskSignal {
    pub subject: RiskSubject,
    pub id: Arc<str>,
    /// What the signal is about, e.g. `credential_leak`, `anomalous_volume`.
    pub kind: Arc<str>,
    /// 0 (none) to 100 (certain harm).
    pub score: u8,
    /// Who reported it: a detector, an identity provider, an operator.
    pub source: Arc<str>,
    pub at: i64,
    pub expires_at: i64,
}

impl RiskSignal {
    pub fn live(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

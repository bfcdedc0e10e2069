//! Revocations: a token by its `jti`, or a subject (agent, human, workload, or one
//! issuer's `sub`) from a moment on. A revoked subject's tokens issued at or before
//! that moment, or carrying no `iat`, are refused; later ones pass.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevocation {
    pub issuer: Arc<str>,
    pub jti: Arc<str>,
    /// Unix seconds after which the token is expired anyway and the entry is swept.
    pub until: i64,
    pub at: i64,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Agent,
    Human,
    Workload,
    /// One issuer's `sub`, whatever it names.
    Subject,
}

impl SubjectKind {
    pub const ALL: [Self; 4] = [Self::Agent, Self::Human, Self::Workload, Self::Subject];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Human => "human",
            Self::Workload => "workload",
            Self::Subject => "subject",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRevocation {
    pub kind: SubjectKind,
    pub id: Arc<str>,
    /// Set for [`SubjectKind::Subject`] only: whose `sub` this is.
    pub issuer: Option<Arc<str>>,
    /// Tokens issued at or before this Unix second are refused.
    pub after: i64,
    /// Once no token issued by `after` can still be valid, the entry is swept.
    pub until: i64,
    pub by: String,
    pub reason: String,
}

impl SubjectRevocation {
    /// Whether a token issued at `iat` falls under this revocation.
    pub fn covers(&self, iat: Option<i64>) -> bool {
        iat.is_none_or(|iat| iat <= self.after)
    }
}

//! The answer to one Check, independent of Envoy and of Rego.
//!
//! A [`Decision`] is either a [`Permit`] or a [`Denial`]; nothing else can leave the
//! pipeline. Only `policy::outcome`, reading a policy's result, can make a `Permit`, so
//! code that holds one knows a policy said yes. Every `Denial` carries a [`DenyReason`]
//! whose [`code`](DenyReason::code) is what logs, metrics and headers record.

pub use crate::effects::{
    AGENT_HEADER, Credential, DenyResponse, HUMAN_HEADER, Header, HttpStatus, LEASH_HEADER_PREFIX,
    Metadata, MintAsk, Mutations, TASK_HEADER, Vouched, is_leash_header,
};
pub use crate::policy::outcome::{Permit, PolicyAnswer};
pub use crate::reason::DenyReason;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    reason: DenyReason,
    response: DenyResponse,
    metadata: Metadata,
    detail: Option<String>,
}

impl Decision {
    pub fn from_policy(answer: PolicyAnswer) -> Self {
        match answer {
            PolicyAnswer::Allow(permit) => Self::Allow(permit),
            PolicyAnswer::Deny {
                response,
                metadata,
                stated_reason,
            } => Self::Deny(Denial {
                reason: DenyReason::PolicyDenied,
                response,
                metadata,
                detail: stated_reason,
            }),
        }
    }

    /// A denial with its own response: leash's answer when an approval is required.
    pub fn deny_with(reason: DenyReason, response: DenyResponse, detail: String) -> Self {
        Self::Deny(Denial {
            reason,
            response,
            metadata: Metadata::new(),
            detail: Some(detail),
        })
    }

    /// A denial leash makes on its own: 403, no body, with a reason and what went wrong.
    pub fn deny(reason: DenyReason, detail: impl Into<String>) -> Self {
        Self::Deny(Denial {
            reason,
            response: DenyResponse::default(),
            metadata: Metadata::new(),
            detail: Some(detail.into()),
        })
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Allow(permit) => permit.metadata(),
            Self::Deny(denial) => &denial.metadata,
        }
    }

    /// The reason code, or `None` for an allow.
    pub fn reason(&self) -> Option<DenyReason> {
        match self {
            Self::Allow(_) => None,
            Self::Deny(denial) => Some(denial.reason),
        }
    }
}

impl Denial {
    pub fn reason(&self) -> DenyReason {
        self.reason
    }

    pub fn response(&self) -> &DenyResponse {
        &self.response
    }

    /// Why, in words, for the decision log. Never shown to the client.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;

//! Why a request's credentials were refused. Each maps to one stable reason code;
//! none carries the token itself, so any of them may be logged.

use crate::decision::DenyReason;
use crate::quote::Quoted;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the request carries no token")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the issuer {} is not trusted", Quoted(.0))]
    UnknownIssuer(String),
    #[error("no verification key: {0}")]
    UnknownKey(String),
    #[error("the algorithm {0} is not allowed")]
    AlgNotAllowed(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the claim {0} is missing")]
    MissingClaim(&'static str),
    #[error("the audience {} is not accepted", Quoted(.0))]
    WrongAudience(String),
    #[error("the token expired at {exp}")]
    Expired { exp: i64 },
    #[error("the token is not valid before {at}")]
    NotYetValid { at: i64 },
    #[error("the token lives {lifetime}s, more than the {max}s allowed")]
    LifetimeExceeded { lifetime: i64, max: i64 },
    #[error("{0}")]
    WrongPlacement(String),
    #[error(
        "the token is not bound to the calling workload (no certificate, DPoP key or workload claim)"
    )]
    Unbound,
    #[error("workload binding fails: {0}")]
    WorkloadMismatch(String),
    #[error("the token names no task (claim {0})")]
    TaskMissing(String),
    #[error("task binding fails: {0}")]
    TaskMismatch(String),
    #[error("the transaction token is for another subject than the access token")]
    SubjectMismatch,
    #[error("DPoP proof invalid: {0}")]
    DpopInvalid(String),
    #[error("DPoP proof replayed (jti seen before)")]
    DpopReplay,
    #[error(
        "the DPoP replay cache is full of unexpired proofs (tokens.dpop.replay_entries); refusing rather than forgetting one"
    )]
    DpopReplayCacheFull,
}

impl TokenError {
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::Missing => DenyReason::TokenMissing,
            Self::Malformed(_)
            | Self::BadSignature
            | Self::MissingClaim(_)
            | Self::WrongPlacement(_) => DenyReason::TokenInvalid,
            Self::UnknownIssuer(_) => DenyReason::TokenUnknownIssuer,
            Self::UnknownKey(_) => DenyReason::TokenUnknownKey,
            Self::AlgNotAllowed(_) => DenyReason::TokenAlgNotAllowed,
            Self::WrongAudience(_) => DenyReason::TokenWrongAudience,
            Self::Expired { .. } => DenyReason::TokenExpired,
            Self::NotYetValid { .. } => DenyReason::TokenNotYetValid,
            Self::LifetimeExceeded { .. } => DenyReason::TokenLifetimeExceeded,
            Self::Unbound => DenyReason::BindingUnbound,
            Self::WorkloadMismatch(_) => DenyReason::BindingWorkloadMismatch,
            Self::TaskMissing(_) => DenyReason::BindingTaskMissing,
            Self::TaskMismatch(_) => DenyReason::BindingTaskMismatch,
            Self::SubjectMismatch => DenyReason::BindingSubjectMismatch,
            Self::DpopInvalid(_) => DenyReason::DpopInvalid,
            Self::DpopReplay => DenyReason::DpopReplay,
            Self::DpopReplayCacheFull => DenyReason::DpopReplayCacheFull,
        }
    }
}

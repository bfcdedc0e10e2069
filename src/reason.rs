//! Why a request was denied: the stable reason codes logs, metrics and headers record.

/// Why a request was denied. [`code`](Self::code) values are stable: dashboards,
/// alerts and log queries depend on them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::EnumCount, strum::VariantArray,
)]
pub enum DenyReason {
    /// The policy evaluated and said no.
    PolicyDenied,
    /// The decision rule has no value for this input.
    PolicyUndefined,
    /// The decision is not a bool or an object of the documented shape.
    PolicyInvalidResult,
    /// `http_status` is not a status Envoy can send.
    PolicyInvalidStatus,
    /// Evaluation failed (a builtin error, a conflict, ...).
    PolicyError,
    /// Evaluation hit its time or instruction limit.
    PolicyLimitExceeded,
    /// No policy set has been loaded yet.
    PolicyUnavailable,
    /// The CheckRequest carries no HTTP request.
    RequestNoHttp,
    /// The CheckRequest could not be decoded.
    RequestMalformed,
    /// A header, path or body field is not valid UTF-8.
    RequestInvalidUtf8,
    /// The CheckRequest exceeds the configured receive size.
    RequestTooLarge,
    /// The request path cannot be percent-decoded, or is not an origin-form path.
    RequestInvalidPath,
    /// The request names no host, or one that is not a DNS name or an IP literal.
    RequestInvalidHost,
    /// The path has more than one reading (`%2F`, an encoded dot segment, `;`, NUL, a
    /// backslash, a fragment, a path-override header).
    RequestAmbiguousPath,
    /// The path exceeds the configured length.
    RequestPathTooLong,
    /// The header block exceeds the configured size.
    RequestHeadersTooLarge,
    /// The body exceeds the configured parse limit.
    RequestBodyTooLarge,
    /// The JSON body nests deeper than the configured limit.
    RequestBodyTooDeep,
    /// No token where one is required.
    TokenMissing,
    /// A token that is malformed, fails its signature, lacks a required claim, or is
    /// sent where its kind does not belong.
    TokenInvalid,
    /// A token from an issuer leash does not trust.
    TokenUnknownIssuer,
    /// A token naming a key its issuer does not publish.
    TokenUnknownKey,
    /// A token past its `exp`.
    TokenExpired,
    /// A token before its `nbf`, or issued in the future.
    TokenNotYetValid,
    /// A token valid for longer than the issuer's maximum lifetime: standing authority.
    TokenLifetimeExceeded,
    /// A token signed with an algorithm the issuer is not allowed (including `none`).
    TokenAlgNotAllowed,
    /// A token for another audience.
    TokenWrongAudience,
    /// A token not bound to any workload where binding is required.
    BindingUnbound,
    /// A token bound to another workload (certificate or workload identity).
    BindingWorkloadMismatch,
    /// A token that names no task where one is required.
    BindingTaskMissing,
    /// A token issued for another task than the request's.
    BindingTaskMismatch,
    /// A transaction token sent beside an access token for another subject.
    BindingSubjectMismatch,
    /// A DPoP proof that is missing, malformed or does not match the request or token.
    DpopInvalid,
    /// A DPoP proof used before.
    DpopReplay,
    /// A full DPoP replay cache: a new proof is refused rather than an old one forgotten.
    DpopReplayCacheFull,
    /// An MCP request leash cannot read as exactly one valid message.
    McpInvalidRequest,
    /// An MCP request whose `Mcp-Method`/`Mcp-Name` headers disagree with its body.
    McpHeaderMismatch,
    /// A token revoked by its `jti`.
    TokenRevoked,
    /// A token of an agent revoked at or after the token was issued.
    AgentRevoked,
    /// A token on behalf of a human revoked at or after the token was issued.
    HumanRevoked,
    /// A token of a workload revoked at or after the token was issued.
    WorkloadRevoked,
    /// A token whose issuer's subject was revoked at or after it was issued.
    SubjectRevoked,
    /// A token bound to a task that was completed.
    TaskCompleted,
    /// A token bound to a task that was revoked.
    TaskRevoked,
    /// The agent's session on this task is paused.
    SessionPaused,
    /// The policy asks a human to approve this very action first.
    ApprovalRequired,
    /// An approval allows the call, but its use could not be recorded durably (the
    /// store failed, or nothing keeps approvals here): refused rather than spent twice.
    ApprovalUnavailable,
    /// A credential was to be minted for the call and could not be: nothing to mint
    /// for, or signing failed. The agent's token is never sent instead.
    MintFailed,
    /// The policy asked for a credential wider (audience, scope, lifetime) than the
    /// configuration gives.
    MintWidening,
    /// The call gets a minted credential, and the agent's token also sits where the
    /// tool would read it (a parameter, another header, the body).
    MintTokenExposed,
}

impl DenyReason {
    /// Every reason, in [`index`](Self::index) order, derived from the enum itself.
    pub const ALL: &'static [Self] = <Self as strum::VariantArray>::VARIANTS;

    /// How many reasons there are.
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;

    /// A dense index, for tables kept per reason (metrics): the variant's position.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn code(self) -> &'static str {
        match self {
            Self::PolicyDenied => "policy.denied",
            Self::PolicyUndefined => "policy.undefined",
            Self::PolicyInvalidResult => "policy.invalid_result",
            Self::PolicyInvalidStatus => "policy.invalid_status",
            Self::PolicyError => "policy.error",
            Self::PolicyLimitExceeded => "policy.limit_exceeded",
            Self::PolicyUnavailable => "policy.unavailable",
            Self::RequestNoHttp => "request.no_http",
            Self::RequestMalformed => "request.malformed",
            Self::RequestInvalidUtf8 => "request.invalid_utf8",
            Self::RequestTooLarge => "request.too_large",
            Self::RequestInvalidPath => "request.invalid_path",
            Self::RequestInvalidHost => "request.invalid_host",
            Self::RequestAmbiguousPath => "request.ambiguous_path",
            Self::RequestPathTooLong => "request.path_too_long",
            Self::RequestHeadersTooLarge => "request.headers_too_large",
            Self::RequestBodyTooLarge => "request.body_too_large",
            Self::RequestBodyTooDeep => "request.body_too_deep",
            Self::TokenMissing => "token.missing",
            Self::TokenInvalid => "token.invalid",
            Self::TokenUnknownIssuer => "token.unknown_issuer",
            Self::TokenUnknownKey => "token.unknown_key",
            Self::TokenExpired => "token.expired",
            Self::TokenNotYetValid => "token.not_yet_valid",
            Self::TokenLifetimeExceeded => "token.lifetime_exceeded",
            Self::TokenAlgNotAllowed => "token.alg_not_allowed",
            Self::TokenWrongAudience => "token.wrong_audience",
            Self::BindingUnbound => "binding.unbound",
            Self::BindingWorkloadMismatch => "binding.workload_mismatch",
            Self::BindingTaskMissing => "binding.task_missing",
            Self::BindingTaskMismatch => "binding.task_mismatch",
            Self::BindingSubjectMismatch => "binding.subject_mismatch",
            Self::DpopInvalid => "dpop.invalid",
            Self::DpopReplay => "dpop.replay",
            Self::DpopReplayCacheFull => "dpop.replay_cache_full",
            Self::McpInvalidRequest => "mcp.invalid_request",
            Self::McpHeaderMismatch => "mcp.header_mismatch",
            Self::TokenRevoked => "token.revoked",
            Self::AgentRevoked => "agent.revoked",
            Self::HumanRevoked => "human.revoked",
            Self::WorkloadRevoked => "workload.revoked",
            Self::SubjectRevoked => "subject.revoked",
            Self::TaskCompleted => "task.completed",
            Self::TaskRevoked => "task.revoked",
            Self::SessionPaused => "session.paused",
            Self::ApprovalRequired => "approval.required",
            Self::ApprovalUnavailable => "approval.unavailable",
            Self::MintFailed => "mint.failed",
            Self::MintWidening => "mint.widening",
            Self::MintTokenExposed => "mint.token_exposed",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

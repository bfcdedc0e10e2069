//! The answer to one Check, independent of Envoy and of Rego.
//!
//! A [`Decision`] is either a [`Permit`] or a [`Denial`]; nothing else can leave the
//! pipeline. A `Permit` can only be made from an allowing [`PolicyAnswer`], so code
//! that holds one knows a policy said yes. Every `Denial` carries a [`DenyReason`]
//! whose [`code`](DenyReason::code) is what logs, metrics and headers record.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

/// Free-form metadata a policy attaches to its decision (`dynamic_metadata`).
pub type Metadata = Map<String, Json>;

/// One header to send, in order. A name that repeats adds a value instead of replacing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// What an allowing policy asks Envoy to change on the request and its response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Set on the request before it goes upstream.
    pub headers: Vec<Header>,
    /// Added to the response the client receives.
    pub response_headers_to_add: Vec<Header>,
    pub request_headers_to_remove: Vec<String>,
    pub query_parameters_to_set: Vec<(String, String)>,
    pub query_parameters_to_remove: Vec<String>,
}

/// What the client receives when the request is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: HttpStatus,
    pub headers: Vec<Header>,
    pub body: String,
}

impl Default for DenyResponse {
    fn default() -> Self {
        Self {
            status: HttpStatus::FORBIDDEN,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// A policy's result once its shape has been checked.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAnswer {
    Allow {
        mutations: Mutations,
        metadata: Metadata,
    },
    Deny {
        response: DenyResponse,
        metadata: Metadata,
        /// The policy's own explanation (`reason` in its result), for the decision log.
        stated_reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

/// Proof that a policy allowed the request. Only [`Decision::from_policy`] builds one.
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    mutations: Mutations,
    metadata: Metadata,
    vouched: Vouched,
}

/// Who acts, as leash verified it, for the tool: `x-leash-agent`, `x-leash-human` and
/// `x-leash-task` on the upstream request. Shared, not copied, from the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouched {
    pub agent: Option<Arc<str>>,
    pub human: Option<Arc<str>>,
    pub task: Option<Arc<str>>,
}

/// The headers leash sets on every allowed request from what it verified.
pub const AGENT_HEADER: &str = "x-leash-agent";
pub const HUMAN_HEADER: &str = "x-leash-human";
pub const TASK_HEADER: &str = "x-leash-task";

impl Vouched {
    /// The headers to set, each with a value a header can carry.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        [
            (AGENT_HEADER, self.agent.as_deref()),
            (HUMAN_HEADER, self.human.as_deref()),
            (TASK_HEADER, self.task.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            // A value a header cannot carry is left out rather than sent mangled.
            value
                .filter(|v| !v.bytes().any(|b| b.is_ascii_control()))
                .map(|v| (name, v))
        })
    }
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
            PolicyAnswer::Allow {
                mutations,
                metadata,
            } => Self::Allow(Permit {
                mutations,
                metadata,
                vouched: Vouched::default(),
            }),
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
            Self::Allow(permit) => &permit.metadata,
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

impl Permit {
    pub fn mutations(&self) -> &Mutations {
        &self.mutations
    }

    /// The identity leash vouches for to the tool.
    pub fn vouched(&self) -> &Vouched {
        &self.vouched
    }

    /// Every header set on the upstream request, in order: leash's own first, so that
    /// each replaces what the client sent under that name, then the policy's.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let vouched = self
            .vouched
            .headers()
            .map(|(name, value)| (name as &str, value));
        vouched.chain(
            self.mutations
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str())),
        )
    }

    /// Vouches for `vouched` and removes every other header of the client's under
    /// leash's prefix. Envoy applies removals after sets, so a vouched name is
    /// overwritten rather than removed.
    pub(crate) fn vouch<'a>(
        &mut self,
        vouched: Vouched,
        client_headers: impl Iterator<Item = &'a str>,
    ) {
        let policy_removals = self.mutations.request_headers_to_remove.len();
        for name in client_headers {
            if matches!(name.as_bytes().first(), Some(b'x' | b'X'))
                && is_leash_header(name)
                && !vouched.headers().any(|(set, _)| set == name)
            {
                self.mutations
                    .request_headers_to_remove
                    .push(name.to_owned());
            }
        }
        // The client's headers come in hash order; the response is the same every time.
        if let Some(added) = self
            .mutations
            .request_headers_to_remove
            .get_mut(policy_removals..)
        {
            added.sort_unstable();
        }
        self.vouched = vouched;
    }
}

/// The prefix of the headers leash vouches for. No policy may set one, and no client's
/// reaches the tool.
pub const LEASH_HEADER_PREFIX: &str = "x-leash-";

/// A header under leash's prefix, in either spelling (`x-leash-`, `x_leash_`, any
/// case): some servers read `_` and `-` in header names alike.
pub fn is_leash_header(name: &str) -> bool {
    name.get(..LEASH_HEADER_PREFIX.len()).is_some_and(|head| {
        head.bytes()
            .zip(LEASH_HEADER_PREFIX.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    })
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
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An HTTP status that Envoy's `envoy.type.v3.StatusCode` enum defines; others are
/// rejected by Envoy, so they cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus(u16);

impl HttpStatus {
    pub const FORBIDDEN: Self = Self(403);

    /// Every code in `envoy.type.v3.StatusCode` except `Empty` (0).
    pub(crate) const KNOWN: [u16; 56] = [
        100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
        308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
        417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508,
        510, 511,
    ];

    pub fn new(code: i64) -> Option<Self> {
        let code = u16::try_from(code).ok()?;
        Self::KNOWN.contains(&code).then_some(Self(code))
    }

    pub const fn code(self) -> u16 {
        self.0
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;

//! What a decision asks of Envoy, as plain data: headers to set and remove, query
//! changes, the denial response, metadata, and the identity leash vouches for to the
//! tool. Built by `policy::outcome` from a policy's result and by the pipeline; read by
//! the edge.

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

/// What a policy asks of the credential leash mints for an allowed call
/// (`mint: {ttl, audience, scope}`): each field may only narrow what the configuration
/// would give. An empty ask mints with the configured claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintAsk {
    /// Seconds the credential lives.
    pub ttl: Option<u64>,
    pub audience: Option<String>,
    /// Scopes, each covered by the action's own.
    pub scope: Option<Vec<String>>,
}

/// A credential leash minted for one call: it replaces the agent's on the upstream
/// request. The token goes to Envoy only; logs and metadata carry the `jti`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The header it is set in, and its value (`Bearer <token>`).
    pub header: Arc<str>,
    pub value: String,
    /// Headers that carry the agent's credentials, removed from the upstream request.
    pub remove: Arc<[String]>,
    pub jti: Arc<str>,
    pub exp: i64,
    pub kid: Arc<str>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header)
            .field("jti", &self.jti)
            .field("exp", &self.exp)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
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

/// An HTTP status that Envoy's `envoy.type.v3.StatusCode` enum defines; others are
/// rejected by Envoy, so they cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus(u16);

impl HttpStatus {
    pub const FORBIDDEN: Self = Self(403);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);

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

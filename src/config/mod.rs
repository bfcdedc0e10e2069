//! leash's configuration: a YAML file, command-line overrides on top, every setting
//! with a default. [`RawConfig`] is what the file says; [`Config`] is checked and typed.
//!
//! Overrides are applied to the YAML document before it is read, so a flag and the
//! file key it stands for can never disagree about parsing or defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod credentials;
mod tokens;

use tokens::RawTokens;
pub use tokens::{RouteMatch, TokensConfig};

use crate::action::{Actions, ActionsConfig};
use crate::glob::RouteMatcher;
use crate::policy::input::InputLimits;
use crate::policy::{
    DecisionRule, EngineChoice, EvalLimits, LoadOptions, PolicySource, RegoVersion,
};
use crate::request::{PathAllowances, RequestLimits, RequestOptions};

/// The commented default configuration; `leash config` prints it.
pub const EXAMPLE: &str = include_str!("../../deploy/leash.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{key}` = {value:?} is invalid: {hint}")]
    Invalid {
        origin: String,
        key: String,
        value: String,
        hint: String,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: RawListen,
    pub runtime: RawRuntime,
    pub policy: RawPolicy,
    pub request: RawRequest,
    pub response: RawResponse,
    pub log: RawLog,
    pub tokens: RawTokens,
    pub actions: ActionsConfig,
    pub mcp: RawMcp,
    pub control: RawControl,
    pub state: RawState,
    pub behaviour: RawBehaviour,
    pub credentials: credentials::RawCredentials,
}

/// Rules that pause a session when its behaviour shifts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBehaviour {
    pub rules: Vec<RawBehaviourRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBehaviourRule {
    pub name: String,
    /// denials, calls, read, write, destructive, body_bytes or new_tool.
    pub when: String,
    pub at_least: u64,
    pub within: String,
    /// For new_tool: how old the task must be before a new tool pauses it.
    pub after: String,
    /// How long the pause holds; empty holds until resumed.
    pub pause_for: String,
}

/// Where the live context (tasks, revocations, sessions, risk) is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    /// The store file; empty means `$XDG_STATE_HOME/leash/state.redb`, else
    /// `~/.local/state/leash/state.redb`.
    pub path: String,
}

/// Who may call the control API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    /// Bearer tokens, each read from a file, with the role it grants.
    pub tokens: Vec<RawControlToken>,
    /// Where the admin token is written and read when `tokens` and `clients` are empty.
    pub admin_token_file: String,
    /// TLS on `listen.control`, and the CA client certificates are verified against.
    pub tls: RawControlTls,
    /// Client certificate identities allowed to call (needs `tls.client_ca_file`).
    pub clients: Vec<RawControlClient>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControlTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: String,
    /// PEM certificate revocation lists of the client CA.
    pub client_crl_files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlClient {
    pub name: String,
    pub identity: String,
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlToken {
    pub name: String,
    pub file: String,
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListen {
    pub grpc: String,
    pub grpc_uds: String,
    pub control_uds: String,
    pub admin: String,
    /// The admin port as agents reach it, for the `status_url` of an approval; empty
    /// means `http://` and `admin`.
    pub admin_url: String,
    pub control: String,
    pub max_receive_bytes: usize,
    pub max_connections: usize,
    pub max_streams_per_connection: u32,
    pub max_buffered_bytes: usize,
    pub request_timeout: String,
    pub max_connection_age: String,
    pub keepalive_interval: String,
    pub keepalive_timeout: String,
    pub header_read_timeout: String,
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            grpc: "127.0.0.1:9191".into(),
            grpc_uds: String::new(),
            control_uds: String::new(),
            admin: "127.0.0.1:9192".into(),
            admin_url: String::new(),
            control: "127.0.0.1:9193".into(),
            max_receive_bytes: 4 * 1024 * 1024,
            max_connections: 128,
            max_streams_per_connection: 256,
            max_buffered_bytes: 32 * 1024 * 1024,
            request_timeout: "5s".into(),
            max_connection_age: "2m".into(),
            keepalive_interval: "30s".into(),
            keepalive_timeout: "10s".into(),
            header_read_timeout: "5s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    pub worker_threads: usize,
}

impl Default for RawRuntime {
    /// One thread: Envoy sends every Check of a worker over one HTTP/2 connection, and a
    /// second thread mostly adds the wake-ups that hand each stream between threads
    /// (BENCHMARKS.md, "One worker thread").
    fn default() -> Self {
        Self { worker_threads: 1 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub dir: String,
    pub library: String,
    pub decision: String,
    pub rego_version: String,
    pub engine: String,
    pub watch_interval: String,
    pub eval_timeout: String,
    pub max_instructions: usize,
    pub load_timeout: String,
}

impl Default for RawPolicy {
    fn default() -> Self {
        let limits = EvalLimits::default();
        Self {
            dir: String::new(),
            library: "auto".into(),
            decision: "envoy/authz/allow".into(),
            rego_version: "v1".into(),
            engine: "auto".into(),
            watch_interval: "1s".into(),
            eval_timeout: humantime::format_duration(limits.timeout).to_string(),
            max_instructions: limits.max_instructions.get(),
            load_timeout: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRequest {
    pub max_body_bytes: usize,
    pub max_body_depth: usize,
    pub max_path_bytes: usize,
    pub max_header_bytes: usize,
    pub allow_encoded_slashes: bool,
    pub allow_semicolons: bool,
}

impl Default for RawRequest {
    fn default() -> Self {
        let body = InputLimits::default();
        let target = RequestLimits::default();
        Self {
            max_body_bytes: body.max_body_bytes,
            max_body_depth: body.max_body_depth,
            max_path_bytes: target.max_path_bytes,
            max_header_bytes: target.max_header_bytes,
            allow_encoded_slashes: false,
            allow_semicolons: false,
        }
    }
}

/// `mcp:`: where MCP requests are read strictly even without an `Mcp-Method` header
/// or a JSON-RPC body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMcp {
    pub routes: Vec<McpRoute>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpRoute {
    pub name: String,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
}

impl Default for RawMcp {
    fn default() -> Self {
        Self {
            routes: vec![McpRoute {
                name: "mcp".into(),
                hosts: Vec::new(),
                paths: vec!["/mcp/**".into()],
            }],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawResponse {
    pub reason_header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
    pub decisions: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            decisions: "deny".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    /// Threads serving Checks (1 unless configured); `None` means one per CPU.
    pub worker_threads: Option<NonZeroUsize>,
    pub policy: PolicyConfig,
    pub request: RequestConfig,
    pub response: ResponseConfig,
    pub log: LogConfig,
    pub tokens: TokensConfig,
    /// The operator's rules, tools and hosts, compiled.
    pub actions: Actions,
    /// Routes whose requests are MCP requests, compiled.
    pub mcp_routes: Vec<RouteMatcher>,
    pub control: ControlConfig,
    /// The live context's store file.
    pub state_path: PathBuf,
    /// The rules that pause a session automatically.
    pub behaviour: Vec<crate::state::behaviour::Rule>,
    /// The credentials minted for calls in place of the agent's token.
    pub credentials: crate::credential::CredentialSettings,
}

/// Who may call the control API: the configured token files, or else the admin token
/// file (`None` when neither `control.admin_token_file` nor a home folder names one).
#[derive(Debug, Clone, Default)]
pub struct ControlConfig {
    pub tokens: Vec<crate::access::TokenFile>,
    pub clients: Vec<crate::access::CertClient>,
    pub admin_token_file: Option<PathBuf>,
    pub tls: Option<ControlTls>,
}

/// The control port's certificate and key, and the CA its clients' certificates must
/// chain to (every client then presents one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_crl_files: Vec<PathBuf>,
}

/// How leash reads a request before anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestConfig {
    pub target: RequestOptions,
    pub body: InputLimits,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub grpc: SocketAddr,
    pub grpc_uds: Option<PathBuf>,
    /// The control API on a Unix socket too, for pods: a socket in a volume the agent's
    /// container does not mount is out of its reach, where a loopback port is not.
    pub control_uds: Option<PathBuf>,
    pub admin: Option<SocketAddr>,
    /// Where agents poll an approval's status: the admin port as they reach it, ending
    /// in the approvals path.
    pub approvals_url: String,
    pub control: Option<SocketAddr>,
    pub max_receive_bytes: NonZeroUsize,
    pub limits: PortLimits,
}

/// What one peer can hold on each port leash listens on (gRPC, control and admin).
#[derive(Debug, Clone, Copy)]
pub struct PortLimits {
    /// Open connections per port; more are closed on accept and counted.
    pub max_connections: NonZeroUsize,
    /// HTTP/2 streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Bytes of partly received gRPC messages held across all streams of a port.
    pub max_buffered_bytes: NonZeroUsize,
    /// A request not answered by then is cancelled, its stream reset.
    pub request_timeout: Duration,
    /// After this a gRPC connection is asked to go (GOAWAY) and closes once its
    /// streams finish, so no connection lives forever.
    pub max_connection_age: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A connection that sends nothing by then is closed; on the admin port each
    /// request's headers must be in by then, and idle keep-alive connections close.
    pub header_read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub source: PolicySource,
    pub load: LoadOptions,
    /// `None` turns the file watcher off.
    pub watch_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct ResponseConfig {
    /// When set, leash's own denials carry their reason code in this response header.
    pub reason_header: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which decisions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditLevel {
    /// Every decision.
    All,
    /// Denials only: at high request rates the log then costs nothing for allows.
    #[default]
    Deny,
    Off,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub decisions: AuditLevel,
}

impl Config {
    /// Reads `path` (if any), applies `overrides` (`section.key` = value) and validates.
    pub fn load(path: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            ),
            None => ("configuration".to_owned(), String::new()),
        };
        Self::from_yaml(&origin, &text, overrides)
    }

    pub fn from_yaml(
        origin: &str,
        text: &str,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let parse_error = |err: yaml_serde::Error| ConfigError::Parse {
            origin: origin.to_owned(),
            message: err.to_string(),
        };
        let mut doc: yaml_serde::Value = if text.trim().is_empty() {
            yaml_serde::Value::Mapping(Default::default())
        } else {
            // Reading the text itself first keeps line numbers in the file's errors;
            // errors after the overrides below can only come from a flag.
            yaml_serde::from_str::<RawConfig>(text).map_err(parse_error)?;
            yaml_serde::from_str(text).map_err(parse_error)?
        };
        for (key, value) in overrides {
            set_path(&mut doc, key, value).map_err(|message| ConfigError::Parse {
                origin: format!("--{}", key.replace(['.', '_'], "-")),
                message,
            })?;
        }
        // Every invalid value is reported in one run: each error names its key, so the
        // key is set back to its default and the rest validated again.
        let mut problems = Vec::new();
        loop {
            let raw: RawConfig = match yaml_serde::from_value(doc.clone()) {
                Ok(raw) => raw,
                Err(err) if problems.is_empty() => {
                    return Err(ConfigError::Parse {
                        origin: "command line".to_owned(),
                        message: err.to_string(),
                    });
                }
                // The key set back was one a list entry needs (a client's role): what
                // was found so far is the report.
                Err(_) => break,
            };
            let err = match raw.validate(origin) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => break,
                Err(err) => err,
            };
            let reset = match &err {
                ConfigError::Invalid { key, .. } => remove_path(&mut doc, key),
                _ => false,
            };
            problems.push(err);
            if !reset || problems.len() >= MAX_REPORTED {
                break;
            }
        }
        match problems.len() {
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }
}

/// Sets `a.b` in a YAML mapping to `value`, read as YAML so numbers stay numbers.
/// Errors reported from one configuration before leash stops looking.
const MAX_REPORTED: usize = 32;

/// Removes `key` (`section.key`, `tokens.issuers[0].refresh`) from `doc`, so that its
/// default applies. False when there was nothing to remove.
fn remove_path(doc: &mut yaml_serde::Value, key: &str) -> bool {
    let mut slot = doc;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(map) = slot.as_mapping_mut() else {
            return false;
        };
        let name = yaml_serde::Value::String(name.to_owned());
        if parts.peek().is_none() && index.is_none() {
            return map.remove(&name).is_some();
        }
        let Some(next) = map.get_mut(&name) else {
            return false;
        };
        slot = match index {
            Some(i) => match next.as_sequence_mut().and_then(|s| s.get_mut(i)) {
                Some(item) => item,
                None => return false,
            },
            None => next,
        };
    }
    false
}

fn set_path(doc: &mut yaml_serde::Value, key: &str, value: &str) -> Result<(), String> {
    let parsed: yaml_serde::Value =
        yaml_serde::from_str(value).unwrap_or_else(|_| yaml_serde::Value::String(value.to_owned()));
    // An empty flag value means "off", which the file spells as an empty string.
    let parsed = if value.is_empty() || parsed.is_null() {
        yaml_serde::Value::String(value.to_owned())
    } else {
        parsed
    };
    let mut slot = doc;
    for part in key.split('.') {
        let map = slot
            .as_mapping_mut()
            .ok_or_else(|| format!("cannot set {key}: a parent is not a mapping"))?;
        slot = map
            .entry(yaml_serde::Value::String(part.to_owned()))
            .or_insert_with(|| yaml_serde::Value::Mapping(Default::default()));
    }
    *slot = parsed;
    Ok(())
}

impl RawConfig {
    pub fn validate(self, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, value: &str, hint: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            hint: hint.to_owned(),
        };
        let addr = |key: &'static str, value: &str| -> Result<SocketAddr, ConfigError> {
            value.parse().map_err(|_| {
                invalid(
                    key,
                    value,
                    "use host:port with an IP address, e.g. 127.0.0.1:9191",
                )
            })
        };
        let optional_addr =
            |key: &'static str, value: &str| -> Result<Option<SocketAddr>, ConfigError> {
                if value.is_empty() {
                    Ok(None)
                } else {
                    addr(key, value).map(Some)
                }
            };
        let duration = |key: &'static str, value: &str| -> Result<Duration, ConfigError> {
            humantime::parse_duration(value)
                .map_err(|_| invalid(key, value, "use a duration such as 500ms, 1s or 2m"))
        };

        let positive = |key: &'static str, value: Duration| -> Result<Duration, ConfigError> {
            if value.is_zero() {
                return Err(invalid(key, "0s", "must be longer than 0s"));
            }
            Ok(value)
        };
        let span = |key: &'static str, value: &str| positive(key, duration(key, value)?);
        let l = &self.listen;
        let admin = optional_addr("listen.admin", &l.admin)?;
        let listen = ListenConfig {
            grpc: addr("listen.grpc", &l.grpc)?,
            grpc_uds: (!l.grpc_uds.is_empty()).then(|| PathBuf::from(&l.grpc_uds)),
            control_uds: (!l.control_uds.is_empty()).then(|| PathBuf::from(&l.control_uds)),
            admin,
            approvals_url: approvals_url(&l.admin_url, admin)
                .map_err(|hint| invalid("listen.admin_url", &l.admin_url, hint))?,
            control: optional_addr("listen.control", &l.control)?,
            max_receive_bytes: NonZeroUsize::new(l.max_receive_bytes).ok_or_else(|| {
                invalid(
                    "listen.max_receive_bytes",
                    "0",
                    "must be at least 1; the default is 4194304 (4 MiB)",
                )
            })?,
            limits: PortLimits {
                max_connections: NonZeroUsize::new(l.max_connections).ok_or_else(|| {
                    invalid(
                        "listen.max_connections",
                        "0",
                        "must be at least 1; the default is 128",
                    )
                })?,
                max_streams_per_connection: match l.max_streams_per_connection {
                    0 => {
                        return Err(invalid(
                            "listen.max_streams_per_connection",
                            "0",
                            "must be at least 1; the default is 256",
                        ));
                    }
                    n => n,
                },
                max_buffered_bytes: NonZeroUsize::new(l.max_buffered_bytes)
                    .filter(|n| n.get() >= l.max_receive_bytes)
                    .ok_or_else(|| {
                        invalid(
                            "listen.max_buffered_bytes",
                            &l.max_buffered_bytes.to_string(),
                            "must be at least listen.max_receive_bytes; the default is 33554432 (32 MiB)",
                        )
                    })?,
                request_timeout: span("listen.request_timeout", &l.request_timeout)?,
                max_connection_age: span("listen.max_connection_age", &l.max_connection_age)?,
                keepalive_interval: span("listen.keepalive_interval", &l.keepalive_interval)?,
                keepalive_timeout: span("listen.keepalive_timeout", &l.keepalive_timeout)?,
                header_read_timeout: span("listen.header_read_timeout", &l.header_read_timeout)?,
            },
        };

        let p = &self.policy;
        let decision = DecisionRule::parse(&p.decision)
            .map_err(|hint| invalid("policy.decision", &p.decision, &hint))?;
        let rego_version = match p.rego_version.as_str() {
            "v1" | "1" => RegoVersion::V1,
            "v0" | "0" => RegoVersion::V0,
            other => {
                return Err(invalid(
                    "policy.rego_version",
                    other,
                    "use v1 (OPA 1.x) or v0",
                ));
            }
        };
        let engine = match p.engine.as_str() {
            "auto" => EngineChoice::Auto,
            "vm" => EngineChoice::Vm,
            "interpreter" => EngineChoice::Interpreter,
            other => {
                return Err(invalid(
                    "policy.engine",
                    other,
                    "use auto, vm or interpreter",
                ));
            }
        };
        let watch = duration("policy.watch_interval", &p.watch_interval)?;
        let timeout = duration("policy.eval_timeout", &p.eval_timeout)?;
        if timeout.is_zero() {
            return Err(invalid(
                "policy.eval_timeout",
                &p.eval_timeout,
                "must be more than zero",
            ));
        }
        let max_instructions = NonZeroUsize::new(p.max_instructions)
            .ok_or_else(|| invalid("policy.max_instructions", "0", "must be at least 1"))?;
        let source = match (p.library.as_str(), p.dir.is_empty()) {
            ("auto" | "embedded", true) => PolicySource::Embedded,
            ("auto" | "none", false) => PolicySource::Dir(PathBuf::from(&p.dir)),
            ("embedded", false) => PolicySource::Layered(PathBuf::from(&p.dir)),
            ("none", true) => {
                return Err(invalid(
                    "policy.library",
                    "none",
                    "with no embedded library, set policy.dir to your policy",
                ));
            }
            (other, _) => {
                return Err(invalid(
                    "policy.library",
                    other,
                    "use auto (the embedded library unless policy.dir is set), embedded (with policy.dir: extend it) or none",
                ));
            }
        };
        let policy = PolicyConfig {
            source,
            load: LoadOptions {
                decision,
                rego_version,
                engine,
                limits: EvalLimits {
                    timeout,
                    max_instructions,
                },
                prepare: None,
                load_timeout: Some(span("policy.load_timeout", &p.load_timeout)?),
            },
            watch_interval: (!watch.is_zero()).then_some(watch),
        };

        let r = &self.request;
        for (key, value) in [
            ("request.max_body_depth", r.max_body_depth),
            ("request.max_path_bytes", r.max_path_bytes),
            ("request.max_header_bytes", r.max_header_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "0", "must be at least 1"));
            }
        }
        let request = RequestConfig {
            target: RequestOptions {
                limits: RequestLimits {
                    max_path_bytes: r.max_path_bytes,
                    max_header_bytes: r.max_header_bytes,
                },
                allow: PathAllowances {
                    encoded_slashes: r.allow_encoded_slashes,
                    semicolons: r.allow_semicolons,
                },
            },
            body: InputLimits {
                max_body_bytes: r.max_body_bytes,
                max_body_depth: r.max_body_depth,
            },
        };

        let reason_header = self.response.reason_header.trim().to_ascii_lowercase();
        if !reason_header.is_empty()
            && !reason_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "response.reason_header",
                &reason_header,
                "use a header name such as x-leash-reason",
            ));
        }
        let response = ResponseConfig {
            reason_header: (!reason_header.is_empty()).then_some(reason_header),
        };

        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log.format", other, "use text or json")),
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "use error, warn, info, debug, trace or a filter like leash=debug",
            ));
        }
        let decisions = match self.log.decisions.as_str() {
            "all" => AuditLevel::All,
            "deny" => AuditLevel::Deny,
            "off" => AuditLevel::Off,
            other => return Err(invalid("log.decisions", other, "use all, deny or off")),
        };
        let log = LogConfig {
            level: self.log.level,
            format,
            decisions,
        };

        let mut tokens =
            self.tokens
                .validate()
                .map_err(|(key, value, hint)| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key,
                    value,
                    hint,
                })?;

        tokens.settings.paths = request.target.allow;
        let actions = self
            .actions
            .compile()
            .map_err(|(at, e)| invalid(&format!("actions.{at}"), &e.pattern, &e.why))?;
        let mcp_routes = self
            .mcp
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RouteMatcher::compile(&r.hosts, &r.paths, &[])
                    .map_err(|e| invalid(&format!("mcp.routes[{i}]"), &e.pattern, &e.why))
            })
            .collect::<Result<Vec<_>, _>>()?;

        if tokens.key_wait >= listen.limits.request_timeout {
            return Err(invalid(
                "tokens.key_wait",
                &self.tokens.key_wait,
                "must be shorter than listen.request_timeout, or every Check waiting for keys is cut off",
            ));
        }
        let control = ControlConfig {
            tokens: self
                .control
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let role = crate::access::Role::parse(&t.role).ok_or_else(|| {
                        invalid(
                            &format!("control.tokens[{i}].role"),
                            &t.role,
                            "use viewer, operator, approver or admin",
                        )
                    })?;
                    if t.file.is_empty() || t.name.is_empty() {
                        return Err(invalid(
                            &format!("control.tokens[{i}]"),
                            &t.name,
                            "each token needs a name and a file",
                        ));
                    }
                    Ok(crate::access::TokenFile {
                        name: t.name.clone(),
                        file: PathBuf::from(&t.file),
                        role,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            clients: control_clients(&self.control.clients, &invalid)?,
            admin_token_file: if self.control.admin_token_file.is_empty() {
                crate::access::default_admin_token_file()
            } else {
                Some(PathBuf::from(&self.control.admin_token_file))
            },
            tls: control_tls(
                &self.control,
                listen.control.is_some(),
                listen.control_uds.is_some(),
                &invalid,
            )?,
        };
        let state_path = if self.state.path.is_empty() {
            crate::state::store::default_path().ok_or_else(|| {
                invalid(
                    "state.path",
                    "",
                    "neither XDG_STATE_HOME nor HOME is set: name the state store file",
                )
            })?
        } else {
            PathBuf::from(&self.state.path)
        };
        let behaviour = behaviour_rules(&self.behaviour, &invalid)?;
        let credentials = self
            .credentials
            .validate(&tokens.settings.headers, listen.admin)
            .map_err(|(key, value, hint)| invalid(&key, &value, &hint))?;
        Ok(Config {
            behaviour,
            credentials,
            state_path,
            control,
            tokens,
            actions,
            mcp_routes,
            listen,
            worker_threads: NonZeroUsize::new(self.runtime.worker_threads),
            policy,
            request,
            response,
            log,
        })
    }
}

/// Where the admin port serves an approval's status to the agent that asked, by id.
pub const APPROVALS_PATH: &str = "/v1/approvals/";

/// The base of every approval's `status_url`: `listen.admin_url` (scheme and authority,
/// nothing after), else the admin listener's own address.
fn approvals_url(admin_url: &str, admin: Option<SocketAddr>) -> Result<String, &'static str> {
    if admin_url.is_empty() {
        return Ok(match admin {
            Some(addr) => format!("http://{addr}{APPROVALS_PATH}"),
            None => APPROVALS_PATH.to_owned(),
        });
    }
    let fix = "use the admin port's URL as agents reach it, such as https://leash.agents.svc:9192, with nothing after the port";
    let uri: http::Uri = admin_url.parse().map_err(|_| fix)?;
    // Rebuilt from its parts: nothing the parser set aside comes along.
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority))
            if !authority.as_str().contains('@')
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none()
                && !admin_url.contains('#') =>
        {
            Ok(format!("{scheme}://{authority}{APPROVALS_PATH}"))
        }
        _ => Err(fix),
    }
}

/// `control.clients`: each with a name, a role and an identity that is a URI (such as
/// a SPIFFE ID) or a DNS name, no two sharing a name or an identity.
fn control_clients(
    raw: &[RawControlClient],
    invalid: &impl Fn(&str, &str, &str) -> ConfigError,
) -> Result<Vec<crate::access::CertClient>, ConfigError> {
    let mut clients: Vec<crate::access::CertClient> = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let key = |field: &str| format!("control.clients[{i}].{field}");
        let role = crate::access::Role::parse(&c.role).ok_or_else(|| {
            invalid(
                &key("role"),
                &c.role,
                "use viewer, operator, approver or admin",
            )
        })?;
        if c.name.trim().is_empty() {
            return Err(invalid(
                &key("name"),
                &c.name,
                "name the client for the log",
            ));
        }
        let identity = crate::access::Identity::parse(&c.identity).ok_or_else(|| {
            invalid(
                &key("identity"),
                &c.identity,
                "use the certificate's URI SAN (such as spiffe://cluster.local/ns/sec/sa/console) \
                 or its DNS SAN (such as console.sec.svc), exactly: no wildcards",
            )
        })?;
        if let Some(twin) = clients
            .iter()
            .find(|t| t.name == c.name || t.identity == identity)
        {
            return Err(invalid(
                &key("identity"),
                &c.identity,
                &format!(
                    "{} already lists this name or identity: each client once",
                    twin.name
                ),
            ));
        }
        clients.push(crate::access::CertClient {
            name: c.name.clone(),
            identity,
            role,
        });
    }
    Ok(clients)
}

/// `control.tls`: a certificate and its key together, a client CA only with them, and
/// listed clients only with a client CA to verify them.
fn control_tls(
    raw: &RawControl,
    tcp_port: bool,
    uds_port: bool,
    invalid: &impl Fn(&str, &str, &str) -> ConfigError,
) -> Result<Option<ControlTls>, ConfigError> {
    let t = &raw.tls;
    let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
    let tls = match (path(&t.cert_file), path(&t.key_file)) {
        (Some(cert_file), Some(key_file)) => Some(ControlTls {
            cert_file,
            key_file,
            client_ca_file: path(&t.client_ca_file),
            client_crl_files: t.client_crl_files.iter().map(PathBuf::from).collect(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "control.tls.key_file",
                "",
                "the certificate needs its key",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "control.tls.cert_file",
                "",
                "the key needs its certificate",
            ));
        }
    };
    if tls.is_none() && !t.client_ca_file.is_empty() {
        return Err(invalid(
            "control.tls.client_ca_file",
            &t.client_ca_file,
            "client certificates are verified over TLS: set control.tls.cert_file and key_file",
        ));
    }
    if !t.client_crl_files.is_empty() && t.client_ca_file.is_empty() {
        return Err(invalid(
            "control.tls.client_crl_files",
            "",
            "revocation lists apply to client certificates: set control.tls.client_ca_file",
        ));
    }
    if tls.is_some() && !tcp_port {
        return Err(invalid(
            "control.tls",
            &t.cert_file,
            "TLS serves listen.control, which is off: set it, or leave control.tls empty",
        ));
    }
    if !raw.clients.is_empty() && raw.tokens.is_empty() && uds_port {
        return Err(invalid(
            "control.clients",
            "",
            "listen.control_uds has no TLS and so no client certificates: with no \
             control.tokens no caller could use it; list a token too, or turn the socket off",
        ));
    }
    let verifies = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    if let (Some(first), false) = (raw.clients.first(), verifies) {
        return Err(invalid(
            "control.clients",
            &first.name,
            "clients are known by certificates verified against control.tls.client_ca_file: set it",
        ));
    }
    Ok(tls)
}

/// `behaviour.rules`, checked: each names what it counts, a threshold and a window.
fn behaviour_rules(
    raw: &RawBehaviour,
    invalid: &impl Fn(&str, &str, &str) -> ConfigError,
) -> Result<Vec<crate::state::behaviour::Rule>, ConfigError> {
    use crate::state::behaviour::{Rule, Trigger};
    let seconds = |key: &str, value: &str| -> Result<i64, ConfigError> {
        let d = humantime::parse_duration(value)
            .map_err(|_| invalid(key, value, "use a duration such as 30s, 5m or 1h"))?;
        if d.is_zero() || d > Duration::from_secs(24 * 3600) {
            return Err(invalid(key, value, "must be more than 0s and at most 24h"));
        }
        Ok(i64::try_from(d.as_secs()).unwrap_or(1).max(1))
    };
    let mut names = std::collections::HashSet::new();
    raw.rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = |field: &str| format!("behaviour.rules[{i}].{field}");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    &r.name,
                    "each rule needs a name of its own",
                ));
            }
            let trigger = match r.when.as_str() {
                "denials" => Trigger::Denials,
                "calls" => Trigger::Calls,
                "read" => Trigger::Class(0),
                "write" => Trigger::Class(1),
                "destructive" => Trigger::Class(2),
                "body_bytes" => Trigger::BodyBytes,
                "new_tool" => Trigger::NewTool {
                    after: seconds(&key("after"), &r.after)?,
                },
                other => {
                    return Err(invalid(
                        &key("when"),
                        other,
                        "use denials, calls, read, write, destructive, body_bytes or new_tool",
                    ));
                }
            };
            let (at_least, within) = match trigger {
                Trigger::NewTool { after } => (1, after),
                _ => {
                    if r.at_least == 0 {
                        return Err(invalid(
                            &key("at_least"),
                            "0",
                            "the count that pauses the session: 1 or more",
                        ));
                    }
                    (r.at_least, seconds(&key("within"), &r.within)?)
                }
            };
            let pause_for = if r.pause_for.is_empty() {
                None
            } else {
                Some(seconds(&key("pause_for"), &r.pause_for)?)
            };
            Ok(Rule {
                name: r.name.clone(),
                trigger,
                at_least,
                within,
                pause_for,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

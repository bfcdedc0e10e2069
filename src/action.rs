//! What a request asks to do, and to what: a class (`read`, `write`, `destructive`)
//! with tags such as `export` or `privilege`, and a typed resource, so that each class
//! passes through its own gate and a scope for one resource never covers another.
//!
//! ```text
//! MCP request     the method table below; tools/call by the operator's tool table
//!                 (unknown tools are destructive); an operator rule replaces the
//!                 table only where it says `override_tools: true`
//! other requests  the first operator rule matching the canonical target and method,
//!                 else the method: GET, HEAD, OPTIONS read; POST, PUT, PATCH write;
//!                 DELETE and every other method destructive
//! ```
//!
//! A method override (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`,
//! `_method` in the query or the body) raises the class to that of the method it
//! names (frameworks run it as that method) and tags the request `method_override`.
//! A body leash cannot read, on a request no rule names, is tagged `opaque_body`.
//!
//! The resource is, most specific first: the tool, MCP resource or prompt the body
//! names; the operator rule that classified the request; else a host, named by
//! Envoy's route (`context_extensions.leash_resource`), by the operator's host list,
//! or else the generic host `*`, which only a wildcard scope covers. The agent writes
//! `Host`, so a host never names a tool or a rule.
//!
//! Annotations tool servers publish about their own tools are never consulted.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde::Deserialize;

use crate::glob::{GlobError, RouteMatcher};
use crate::mcp::{self, Message, Named};
use crate::policy::Value;
use crate::request::Target;
use crate::view::RequestView;

/// The tag of a request whose body leash could not read for what it does.
pub const OPAQUE_BODY: &str = "opaque_body";
/// The tag of a request that names another method than its own.
pub const METHOD_OVERRIDE: &str = "method_override";

/// Headers through which frameworks let a client run another method.
const OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// The parameter (query, form or JSON body) through which they do the same.
const OVERRIDE_PARAM: &str = "_method";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    Read,
    Write,
    Destructive,
}

impl ActionClass {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }
}

/// Where a classification came from, for the policy and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSource {
    /// An operator rule, by name.
    Rule(Arc<str>),
    /// The operator's tool table.
    Tool,
    /// A tool the table does not list: treated as destructive.
    UnknownTool,
    /// The MCP method table.
    Mcp,
    /// The HTTP method.
    Method,
}

/// What kind of thing a resource is. A scope names one kind; it never covers another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// An MCP tool, named in a `tools/call`.
    Tool,
    /// An MCP resource, by URI.
    Resource,
    /// An MCP prompt.
    Prompt,
    /// An operator rule's route.
    Rule,
    /// An upstream host or service.
    Host,
}

impl ResourceKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Resource => "resource",
            Self::Prompt => "prompt",
            Self::Rule => "rule",
            Self::Host => "host",
        }
    }
}

/// What the request acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: ResourceKind,
    /// `*` for a host nobody named: only a wildcard scope covers it.
    pub name: Arc<str>,
}

/// The name of the host resource neither Envoy nor the operator named.
static ANY_HOST: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("*"));

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub class: ActionClass,
    pub tags: Vec<String>,
    pub source: ActionSource,
    pub resource: Resource,
}

/// An MCP `tools/call`.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
    /// Listed in the operator's tool table.
    pub known: bool,
}

/// Operator configuration: `actions:` in the config file, or `data.leash.actions`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    pub rules: Vec<RuleConfig>,
    pub tools: BTreeMap<String, ToolConfig>,
    /// Upstream hosts by resource name; list only hosts Envoy routes to their own upstream.
    pub hosts: Vec<HostConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Host globs (`*` stops at `.`; `:port` for one port only); empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path globs (`*` stops at `/`, `**` spans segments); empty matches any path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Methods, uppercase; empty matches GET, HEAD, OPTIONS, POST, PUT, PATCH and DELETE.
    #[serde(default)]
    pub methods: Vec<String>,
    pub class: ActionClass,
    #[serde(default)]
    pub tags: Vec<String>,
    /// On an MCP request, this rule decides instead of the MCP method and tool tables.
    #[serde(default)]
    pub override_tools: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub class: ActionClass,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    pub hosts: Vec<String>,
}

/// A rule, compiled.
#[derive(Debug, Clone)]
struct Rule {
    name: Arc<str>,
    matcher: RouteMatcher,
    class: ActionClass,
    tags: Vec<String>,
    override_tools: bool,
}

impl Rule {
    /// The rule's class for `method`: a rule that does not name an unusual method
    /// cannot vouch for it.
    fn class_for(&self, method: &str) -> ActionClass {
        if is_standard(method) || self.matcher.names_method(method) {
            self.class
        } else {
            ActionClass::Destructive
        }
    }
}

/// An [`ActionsConfig`] with every glob compiled.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    rules: Vec<Rule>,
    tools: BTreeMap<String, ToolConfig>,
    hosts: Vec<(Arc<str>, RouteMatcher)>,
}

impl ActionsConfig {
    /// Compiles every glob; an error names the entry (`rules[2]`, `hosts[0]`).
    pub fn compile(&self) -> Result<Actions, (String, GlobError)> {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let matcher = RouteMatcher::compile(&r.hosts, &r.paths, &r.methods)
                    .map_err(|e| (format!("rules[{i}]"), e))?;
                Ok(Rule {
                    name: Arc::from(r.name.as_str()),
                    matcher,
                    class: r.class,
                    tags: r.tags.clone(),
                    override_tools: r.override_tools,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                RouteMatcher::compile(&h.hosts, &[], &[])
                    .map(|m| (Arc::from(h.name.as_str()), m))
                    .map_err(|e| (format!("hosts[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Actions {
            rules,
            tools: self.tools.clone(),
            hosts,
        })
    }
}

/// Reads and compiles `data.leash.actions` of a policy set, if it has one.
pub fn from_data(data: &Value) -> Result<Option<Actions>, String> {
    let Some(actions) = mcp::field(data, "leash").and_then(|l| mcp::field(l, "actions")) else {
        return Ok(None);
    };
    let json = serde_json::to_value(actions).map_err(|e| e.to_string())?;
    let config: ActionsConfig =
        serde_json::from_value(json).map_err(|e| format!("data.leash.actions: {e}"))?;
    config
        .compile()
        .map(Some)
        .map_err(|(at, e)| format!("data.leash.actions.{at}: {e}"))
}

/// What classification reads of a request besides the view: its canonical target,
/// the parsed query and body, and the MCP message when it is one.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub view: &'a RequestView,
    pub target: &'a Target<'a>,
    /// `parsed_query`.
    pub query: &'a Value,
    /// `parsed_body`, `null` when leash could not read it.
    pub body: &'a Value,
    pub truncated: bool,
    pub mcp: Option<&'a Message>,
}

/// Rules, tools and hosts from configuration and policy data, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<Rule>,
    tools: BTreeMap<String, ToolConfig>,
    hosts: Vec<(Arc<str>, RouteMatcher)>,
}

impl Classifier {
    /// Configuration first, then `data.leash.actions` (its tools replace same-named ones).
    pub fn new(config: &Actions, data: Option<&Actions>) -> Self {
        let mut this = Self {
            rules: config.rules.clone(),
            tools: config.tools.clone(),
            hosts: config.hosts.clone(),
        };
        if let Some(data) = data {
            this.rules.extend(data.rules.iter().cloned());
            this.tools
                .extend(data.tools.iter().map(|(k, v)| (k.clone(), v.clone())));
            this.hosts.extend(data.hosts.iter().cloned());
        }
        this
    }

    pub fn classify(&self, req: &Request<'_>) -> (Action, Option<ToolCall>) {
        let overrides = method_overrides(req);
        let (mut action, tool) = match req.mcp {
            Some(message) => {
                let (mut action, tool) = self.mcp(req, message);
                for method in &overrides {
                    action.class = action.class.max(method_class(method));
                }
                (action, tool)
            }
            None => self.http(req, &overrides),
        };
        if !overrides.is_empty() {
            action.tags.push(METHOD_OVERRIDE.to_owned());
        }
        (action, tool)
    }

    fn mcp(&self, req: &Request<'_>, message: &Message) -> (Action, Option<ToolCall>) {
        let tool = match message {
            Message::Call {
                named: Some(Named::Tool(name)),
                arguments,
                ..
            } => Some(ToolCall {
                known: self.tools.contains_key(name),
                name: name.clone(),
                arguments: arguments.clone(),
            }),
            _ => None,
        };
        let named = match message {
            Message::Call {
                named: Some(named), ..
            } => Some(match named {
                Named::Tool(n) => (ResourceKind::Tool, n),
                Named::Resource(n) => (ResourceKind::Resource, n),
                Named::Prompt(n) => (ResourceKind::Prompt, n),
            }),
            _ => None,
        };
        let overriding = self
            .rules
            .iter()
            .find(|r| r.override_tools && r.matcher.matches(req.target, &req.view.method));
        let (class, tags, source) = match (overriding, &tool) {
            (Some(rule), _) => (
                rule.class,
                rule.tags.clone(),
                ActionSource::Rule(rule.name.clone()),
            ),
            (None, Some(call)) => match self.tools.get(&call.name) {
                Some(entry) => (entry.class, entry.tags.clone(), ActionSource::Tool),
                None => (
                    ActionClass::Destructive,
                    Vec::new(),
                    ActionSource::UnknownTool,
                ),
            },
            (None, None) => (mcp_class(message.method()), Vec::new(), ActionSource::Mcp),
        };
        let resource = match (named, overriding) {
            (Some((kind, name)), _) => Resource {
                kind,
                name: Arc::from(name.as_str()),
            },
            (None, Some(rule)) => Resource {
                kind: ResourceKind::Rule,
                name: rule.name.clone(),
            },
            (None, None) => self.host(req),
        };
        let action = Action {
            class,
            tags,
            source,
            resource,
        };
        (action, tool)
    }

    fn http(&self, req: &Request<'_>, overrides: &[String]) -> (Action, Option<ToolCall>) {
        let method = req.view.method.as_str();
        let rule = self.rule_for(req.target, method);
        let mut action = match rule {
            Some(rule) => Action {
                class: rule.class_for(method),
                tags: rule.tags.clone(),
                source: ActionSource::Rule(rule.name.clone()),
                resource: Resource {
                    kind: ResourceKind::Rule,
                    name: rule.name.clone(),
                },
            },
            None => Action {
                class: method_class(method),
                tags: Vec::new(),
                source: ActionSource::Method,
                resource: self.host(req),
            },
        };
        // The method a framework runs instead is classified as that method would be.
        for method in overrides {
            match self.rule_for(req.target, method) {
                Some(other) => {
                    action.class = action.class.max(other.class_for(method));
                    for tag in &other.tags {
                        if !action.tags.contains(tag) {
                            action.tags.push(tag.clone());
                        }
                    }
                }
                None => action.class = action.class.max(method_class(method)),
            }
        }
        if rule.is_none() && is_opaque(req) {
            action.tags.push(OPAQUE_BODY.to_owned());
        }
        (action, None)
    }

    fn rule_for(&self, target: &Target<'_>, method: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(target, method))
    }

    /// The host resource: as Envoy's route names it, else as the operator's host list
    /// does, else the generic `*`.
    fn host(&self, req: &Request<'_>) -> Resource {
        let name = req
            .view
            .route_resource
            .clone()
            .or_else(|| {
                self.hosts
                    .iter()
                    .find(|(_, m)| m.matches_location(req.target))
                    .map(|(name, _)| name.clone())
            })
            .unwrap_or_else(|| ANY_HOST.clone());
        Resource {
            kind: ResourceKind::Host,
            name,
        }
    }
}

/// The methods HTTP defines for APIs; any other is destructive unless a rule names it.
fn is_standard(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "POST" | "PUT" | "PATCH" | "DELETE"
    )
}

/// GET, HEAD and OPTIONS read; POST, PUT and PATCH write; DELETE and every method
/// outside these (MOVE, PURGE, a lowercase `get`...) destroy.
fn method_class(method: &str) -> ActionClass {
    match method {
        "GET" | "HEAD" | "OPTIONS" => ActionClass::Read,
        "POST" | "PUT" | "PATCH" => ActionClass::Write,
        _ => ActionClass::Destructive,
    }
}

/// The class of each MCP method; `tools/call` goes to the tool table instead.
fn mcp_class(method: &str) -> ActionClass {
    match method {
        "initialize"
        | "ping"
        | "stream"
        | "end_session"
        | "response"
        | "completion/complete"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "prompts/get"
        | "tasks/get"
        | "tasks/result" => ActionClass::Read,
        "logging/setLevel" | "tasks/cancel" => ActionClass::Write,
        m if m.starts_with("notifications/") || m.ends_with("/list") => ActionClass::Read,
        _ => ActionClass::Destructive,
    }
}

/// Every method the request names besides its own, uppercase as frameworks read them.
/// A body leash cannot parse that mentions `_method` names one it cannot know: `?`,
/// which classifies as destructive.
fn method_overrides(req: &Request<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |value: &str| {
        for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let m = m.to_ascii_uppercase();
            if m != req.view.method && !out.contains(&m) {
                out.push(m);
            }
        }
    };
    for name in OVERRIDE_HEADERS {
        if let Some(value) = req.view.header(name) {
            add(value);
        }
    }
    for source in [req.query, req.body] {
        let Value::Object(fields) = source else {
            continue;
        };
        for (key, value) in fields.iter() {
            let Value::String(key) = key else { continue };
            if !key.eq_ignore_ascii_case(OVERRIDE_PARAM) {
                continue;
            }
            match value {
                Value::String(v) => add(v),
                Value::Array(items) => items.iter().for_each(|v| {
                    if let Value::String(v) = v {
                        add(v);
                    }
                }),
                _ => add("?"),
            }
        }
    }
    let raw = req.view.body.as_bytes();
    if matches!(req.body, Value::Null)
        && raw
            .windows(OVERRIDE_PARAM.len())
            .any(|w| w.eq_ignore_ascii_case(OVERRIDE_PARAM.as_bytes()))
    {
        add("?");
    }
    out
}

/// A body was sent and leash could not read it.
fn is_opaque(req: &Request<'_>) -> bool {
    req.truncated || (matches!(req.body, Value::Null) && !req.view.body.as_bytes().is_empty())
}

#[cfg(test)]
#[path = "action_tests.rs"]
mod tests;

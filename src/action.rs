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

use crate::body::{self, Reading};
use crate::glob::{GlobError, RouteMatcher};
use crate::mcp::{self, Message, Named};
use crate::policy::Value;
use crate::request::{HeaderNotes, METHOD_OVERRIDE_HEADERS, Target, is_header};
use crate::view::RequestView;

/// The tag of a request whose body leash could not read for what it does.
pub const OPAQUE_BODY: &str = "opaque_body";
/// The tag of a request that names another method than its own.
pub const METHOD_OVERRIDE: &str = "method_override";

/// The parameter (query, form or JSON body) through which they do the same.
const OVERRIDE_PARAM: &str = "_method";
/// The method a request may run when leash cannot tell which: classed destructive.
const UNKNOWN_METHOD: &str = "?";
/// Distinct override methods read from one request before the rest is unknown.
const MAX_OVERRIDES: usize = 4;

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

    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Tool,
            Self::Resource,
            Self::Prompt,
            Self::Rule,
            Self::Host,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
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
    /// Upstreams by the name Envoy's route gives them (`leash_resource`); empty matches
    /// any. Unlike `hosts`, the agent cannot choose these.
    #[serde(default)]
    pub routes: Vec<String>,
    pub class: ActionClass,
    #[serde(default)]
    pub tags: Vec<String>,
    /// On an MCP request on an MCP route, this rule decides instead of the MCP method
    /// and tool tables.
    #[serde(default)]
    pub override_tools: bool,
    /// The route takes bodies leash cannot read (uploads): they are not tagged
    /// `opaque_body`, and the rule's class stands for them.
    #[serde(default)]
    pub allow_opaque_body: bool,
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
    routes: Vec<Arc<str>>,
    class: ActionClass,
    tags: Vec<String>,
    override_tools: bool,
    allow_opaque_body: bool,
}

impl Rule {
    fn on_route(&self, req: &Request<'_>) -> bool {
        self.routes.is_empty()
            || req
                .view
                .route_resource
                .as_ref()
                .is_some_and(|r| self.routes.contains(r))
    }

    fn matches(&self, req: &Request<'_>, method: &str) -> bool {
        self.on_route(req) && self.matcher.matches(req.target, method)
    }

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
                    routes: r.routes.iter().map(|n| Arc::from(n.as_str())).collect(),
                    class: r.class,
                    tags: r.tags.clone(),
                    override_tools: r.override_tools,
                    allow_opaque_body: r.allow_opaque_body,
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
/// the parsed body, and the MCP message when it is one.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub view: &'a RequestView,
    pub target: &'a Target<'a>,
    /// `parsed_body`, `null` when leash could not read it.
    pub body: &'a Value,
    pub truncated: bool,
    pub mcp: Option<&'a Message>,
    /// On a configured MCP route: the MCP tables decide alone there.
    pub on_mcp_route: bool,
    pub notes: HeaderNotes,
}

/// Rules, tools and hosts from configuration and policy data, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    actions: Actions,
}

impl Classifier {
    /// Configuration first, then `data.leash.actions` (its tools replace same-named ones).
    pub fn new(config: &Actions, data: Option<&Actions>) -> Self {
        let mut actions = config.clone();
        if let Some(data) = data {
            actions.rules.extend(data.rules.iter().cloned());
            actions
                .tools
                .extend(data.tools.iter().map(|(k, v)| (k.clone(), v.clone())));
            actions.hosts.extend(data.hosts.iter().cloned());
        }
        Self { actions }
    }

    pub fn classify(&self, req: &Request<'_>) -> (Action, Option<ToolCall>) {
        let reading = body::read(req.view, req.body, req.truncated);
        let overrides = method_overrides(req, &reading);
        let (mut action, tool) = match req.mcp {
            Some(message) if req.on_mcp_route => {
                let (mut action, tool) = self.mcp(req, message);
                for method in &overrides {
                    action.class = action.class.max(method_class(method));
                }
                (action, tool)
            }
            // Off an MCP route, the server may be an MCP server no route names, or one
            // that ignores MCP headers and JSON-RPC members: both readings count, and
            // the stricter class wins.
            Some(message) => {
                let (mcp, tool) = self.mcp(req, message);
                let (http, _) = self.http(req, &overrides, &reading);
                (stricter(mcp, http), tool)
            }
            None => self.http(req, &overrides, &reading),
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
                known: self.actions.tools.contains_key(name),
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
            .actions
            .rules
            .iter()
            .find(|r| r.override_tools && req.on_mcp_route && r.matches(req, &req.view.method));
        let (class, tags, source) = match (overriding, &tool) {
            (Some(rule), _) => (
                rule.class,
                rule.tags.clone(),
                ActionSource::Rule(rule.name.clone()),
            ),
            (None, Some(call)) => match self.actions.tools.get(&call.name) {
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

    fn http(
        &self,
        req: &Request<'_>,
        overrides: &[String],
        reading: &Reading<'_>,
    ) -> (Action, Option<ToolCall>) {
        let method = req.view.method.as_str();
        let rule = self.rule_for(req, method);
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
            match self.rule_for(req, method) {
                Some(other) => raise(&mut action, other, method),
                None => action.class = action.class.max(method_class(method)),
            }
        }
        // A case-insensitive server (Express, ASP.NET) or one that serves `/x.json` as
        // `/x` (Rails formats) runs a rule's route under other spellings: those can
        // only raise the class and add tags, never lower them.
        if !self.actions.rules.is_empty() {
            let extensionless = without_extension(&req.target.path);
            for method in std::iter::once(method).chain(overrides.iter().map(String::as_str)) {
                for other in self.actions.rules.iter().filter(|r| {
                    r.on_route(req) && r.matcher.matches_loosely(req.target, extensionless, method)
                }) {
                    raise(&mut action, other, method);
                }
            }
        }
        if !rule.is_some_and(|r| r.allow_opaque_body) && matches!(reading, Reading::Opaque) {
            action.tags.push(OPAQUE_BODY.to_owned());
        }
        (action, None)
    }

    fn rule_for(&self, req: &Request<'_>, method: &str) -> Option<&Rule> {
        self.actions.rules.iter().find(|r| r.matches(req, method))
    }

    /// The host resource: as Envoy's route names it, else as the operator's host list
    /// does, else the generic `*`.
    fn host(&self, req: &Request<'_>) -> Resource {
        let name = req
            .view
            .route_resource
            .clone()
            .or_else(|| {
                self.actions
                    .hosts
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

/// Raises `action` to what `rule` says of `method`, adding its tags.
fn raise(action: &mut Action, rule: &Rule, method: &str) {
    action.class = action.class.max(rule.class_for(method));
    for tag in &rule.tags {
        if !action.tags.contains(tag) {
            action.tags.push(tag.clone());
        }
    }
}

/// Both readings of a request off an MCP route that may or may not be MCP: the higher
/// class and every tag, on the resource the HTTP reading names. The tool the body names
/// is no resource here: a server that ignores JSON-RPC members would act on the route,
/// and a tool scope must not open it.
fn stricter(mcp: Action, http: Action) -> Action {
    let (class, source) = if http.class > mcp.class {
        (http.class, http.source)
    } else {
        (mcp.class, mcp.source)
    };
    let mut tags = mcp.tags;
    for tag in http.tags {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Action {
        class,
        tags,
        source,
        resource: http.resource,
    }
}

/// The canonical path with a `.ext` suffix of its last segment removed.
fn without_extension(path: &str) -> &str {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path.get(last..).and_then(|segment| segment.rfind('.')) {
        Some(dot) if dot > 0 => path.get(..last + dot).unwrap_or(path),
        _ => path,
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
/// A body leash cannot read that mentions the parameter names a method it cannot know:
/// `?`, which classifies as destructive.
fn method_overrides(req: &Request<'_>, reading: &Reading<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |value: &str| {
        for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            // A request naming many methods is up to something: past a few, the rest
            // is unknowable, and the work per request stays bounded.
            if out.len() >= MAX_OVERRIDES {
                if !out.iter().any(|o| o == UNKNOWN_METHOD) {
                    out.push(UNKNOWN_METHOD.to_owned());
                }
                return;
            }
            let m = m.to_ascii_uppercase();
            if m != req.view.method && !out.contains(&m) {
                out.push(m);
            }
        }
    };
    let headers = req.notes.method_override.then_some(&req.view.headers);
    for (name, value) in headers.into_iter().flatten() {
        if METHOD_OVERRIDE_HEADERS.iter().any(|h| is_header(name, h)) {
            add(value);
        }
    }
    // Only a query that could name a method at all is split: almost none does.
    let query = req.view.path.split_once('?').map_or("", |(_, q)| q);
    if query.contains('%') || mentions(query.as_bytes(), b"method") {
        form_overrides(query, &mut add);
    }
    match reading {
        Reading::Empty => {}
        Reading::Form(text) => form_overrides(text, &mut add),
        Reading::Json(body) => {
            let Value::Object(fields) = body.as_ref() else {
                return out;
            };
            let mut named = false;
            for (key, value) in fields.iter() {
                let Value::String(key) = key else { continue };
                if !is_override_param(key) {
                    continue;
                }
                named = true;
                match value {
                    Value::String(v) => add(v),
                    Value::Array(items) => items.iter().for_each(|v| {
                        if let Value::String(v) = v {
                            add(v);
                        }
                    }),
                    _ => add(UNKNOWN_METHOD),
                }
            }
            // The parse keeps one of two equal keys (`_method` and `\u005fmethod`); a
            // server may keep the other.
            if named && mcp::no_duplicate_keys(req.view.body.as_bytes()).is_err() {
                add(UNKNOWN_METHOD);
            }
        }
        // May still carry the parameter, in any spelling or encoding. A compressed
        // body or MIME encoded-words (`=?UTF-8?B?...?=`, which multipart parsers decode
        // in field names) hide it from any scan.
        Reading::Opaque => {
            let raw = req.view.body.as_bytes();
            if mentions_override(raw)
                || mentions_override(&body::unescaped(raw))
                || body::is_encoded(req.view)
                || (body::media_type(req.view).starts_with("multipart/")
                    && (mentions(raw, b"name=\"=?") || mentions(raw, b"name==?")))
            {
                add(UNKNOWN_METHOD);
            }
        }
    }
    out
}

/// The override parameter in a query or form, split as servers split it (on `&` and
/// `;`), names decoded leniently (a bad escape stays as written, as PHP keeps it).
fn form_overrides(text: &str, add: &mut impl FnMut(&str)) {
    for pair in text.split(['&', ';']) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_override_param(&decode_lossy(name)) {
            add(&decode_lossy(value));
        }
    }
}

/// Percent-decodes a query component (`+` is a space), keeping bad escapes as written.
fn decode_lossy(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| {
                let hi = crate::request::hex(*bytes.get(i + 1)?)?;
                let lo = crate::request::hex(*bytes.get(i + 2)?)?;
                Some((hi << 4) | lo)
            })
            .flatten();
        match (escaped, b) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// `_method` as a framework reads a parameter name: as PHP (and so Laravel) does, or
/// as `qs` (Express, Koa) and Rack (Rails) do.
fn is_override_param(key: &str) -> bool {
    is_override_name(php_name(key)) || is_override_name(bracket_name(key))
}

/// PHP: leading spaces dropped, cut at NUL; `_method[]` and `_method[0]` are arrays
/// whose first value frameworks take. `.`, ` ` and `[` read as `_` (see below).
fn php_name(key: &str) -> &str {
    let key = key.trim_start_matches(' ');
    let key = key.split('\0').next().unwrap_or(key);
    match key.find('[') {
        Some(open) if open > 0 && key.ends_with(']') => key.get(..open).unwrap_or(key),
        _ => key,
    }
}

/// `qs` and Rack: leading brackets dropped, the name ends at the first bracket, so
/// `[_method]`, `_method]` and `]]_method` all name `_method`.
fn bracket_name(key: &str) -> &str {
    let key = key.trim_start_matches(['[', ']']);
    key.split(['[', ']']).next().unwrap_or(key)
}

fn is_override_name(name: &str) -> bool {
    name.len() == OVERRIDE_PARAM.len()
        && name.bytes().zip(OVERRIDE_PARAM.bytes()).all(|(a, b)| {
            a.to_ascii_lowercase() == b || (b == b'_' && matches!(a, b'.' | b' ' | b'['))
        })
}

/// Whether `raw` holds `word`, ignoring ASCII case.
fn mentions(raw: &[u8], word: &[u8]) -> bool {
    raw.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// Raw bytes naming the override parameter in any spelling a server reads as
/// `_method`: `method` after `_`, `.`, a space or `[`, plain or percent-encoded.
fn mentions_override(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"method";
    const PREFIXES: [&[u8]; 8] = [b"_", b".", b" ", b"[", b"%5f", b"%2e", b"%20", b"%5b"];
    raw.windows(NAME.len()).enumerate().any(|(at, w)| {
        w.eq_ignore_ascii_case(NAME)
            && PREFIXES.iter().any(|p| {
                at.checked_sub(p.len())
                    .and_then(|start| raw.get(start..at))
                    .is_some_and(|before| before.eq_ignore_ascii_case(p))
            })
    })
}

#[cfg(test)]
#[path = "action_tests.rs"]
mod tests;

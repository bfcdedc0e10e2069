//! What a request asks to do: `read`, `write` or `destructive`, with tags such as
//! `export` or `privilege`, so that each class can pass through its own gate.
//!
//! Sources, most specific first: operator rules (host, path, method), MCP tool calls
//! looked up in the operator's tool table, then the HTTP method. Annotations a tool
//! server publishes about its own tools (`readOnlyHint`, ...) are never consulted.
//!
//! A body leash cannot read (cut by Envoy, neither JSON nor a form, or a JSON-RPC
//! batch) could hold any tool call, so the method's class alone would understate it:
//! such a request, when no rule names its route, carries the tag `opaque_body`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::glob;
use crate::policy::Value;
use crate::view::RequestView;

/// The tag of a request whose body leash could not read for what it does.
pub const OPAQUE_BODY: &str = "opaque_body";

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
    Rule(String),
    /// The operator's tool table.
    Tool,
    /// A tool the table does not list: treated as destructive.
    UnknownTool,
    /// The HTTP method's default.
    Method,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub class: ActionClass,
    pub tags: Vec<String>,
    pub source: ActionSource,
}

/// An MCP `tools/call`, read from the JSON-RPC body.
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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Host globs (`*` stops at `.`); empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path globs (`*` stops at `/`, `**` spans segments); empty matches any path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Methods; empty matches any.
    #[serde(default)]
    pub methods: Vec<String>,
    pub class: ActionClass,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl RuleConfig {
    fn route(&self) -> glob::Route<'_> {
        glob::Route {
            hosts: &self.hosts,
            paths: &self.paths,
            methods: &self.methods,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub class: ActionClass,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Why classification refused the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MCP headers disagree with the body: {0}")]
pub struct McpHeaderMismatch(pub String);

/// Rules and tools, from configuration and policy data, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<RuleConfig>,
    tools: BTreeMap<String, ToolConfig>,
}

impl Classifier {
    /// Configuration first, then `data.leash.actions` (its tools replace same-named ones).
    pub fn new(config: &ActionsConfig, data: Option<&ActionsConfig>) -> Self {
        let mut rules = config.rules.clone();
        let mut tools = config.tools.clone();
        if let Some(data) = data {
            rules.extend(data.rules.iter().cloned());
            tools.extend(data.tools.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Self { rules, tools }
    }

    /// Classifies `view`, whose parsed body (`null` when unreadable) is `body`.
    pub fn classify(
        &self,
        view: &RequestView,
        body: &Value,
    ) -> Result<(Action, Option<ToolCall>), McpHeaderMismatch> {
        let tool = mcp_tool_call(view, body)?.map(|(name, arguments)| ToolCall {
            known: self.tools.contains_key(&name),
            name,
            arguments,
        });
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.route().matches(&view.host, &view.path, &view.method))
        {
            let action = Action {
                class: rule.class,
                tags: rule.tags.clone(),
                source: ActionSource::Rule(rule.name.clone()),
            };
            return Ok((action, tool));
        }
        let mut action = match &tool {
            Some(call) => match self.tools.get(&call.name) {
                Some(entry) => Action {
                    class: entry.class,
                    tags: entry.tags.clone(),
                    source: ActionSource::Tool,
                },
                None => Action {
                    class: ActionClass::Destructive,
                    tags: Vec::new(),
                    source: ActionSource::UnknownTool,
                },
            },
            None => Action {
                class: method_class(&view.method),
                tags: Vec::new(),
                source: ActionSource::Method,
            },
        };
        if tool.is_none() && is_opaque(view, body) {
            action.tags.push(OPAQUE_BODY.to_owned());
        }
        Ok((action, tool))
    }
}

/// `data.leash.actions` of a policy set, if it has one.
pub fn from_data(data: &Value) -> Result<Option<ActionsConfig>, String> {
    let Some(actions) = field(data, "leash").and_then(|l| field(l, "actions")) else {
        return Ok(None);
    };
    let json = serde_json::to_value(actions).map_err(|e| e.to_string())?;
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| format!("data.leash.actions: {e}"))
}

/// A body was sent and leash could not read one call from it.
fn is_opaque(view: &RequestView, body: &Value) -> bool {
    match body {
        Value::Null => !view.body.as_bytes().is_empty(),
        Value::Array(items) => items
            .iter()
            .any(|item| field(item, "jsonrpc").is_some() && field(item, "method").is_some()),
        _ => false,
    }
}

/// GET, HEAD and OPTIONS read; DELETE destroys; everything else writes.
fn method_class(method: &str) -> ActionClass {
    let is = |name: &str| method.eq_ignore_ascii_case(name);
    if is("GET") || is("HEAD") || is("OPTIONS") {
        ActionClass::Read
    } else if is("DELETE") {
        ActionClass::Destructive
    } else {
        ActionClass::Write
    }
}

/// The tool an MCP `tools/call` names, checked against the `Mcp-Method` and
/// `Mcp-Name` headers (MCP 2026-07-28): a request whose headers say one thing and
/// whose body says another is refused.
fn mcp_tool_call(
    view: &RequestView,
    body: &Value,
) -> Result<Option<(String, Value)>, McpHeaderMismatch> {
    let rpc_method = field(body, "method").and_then(as_str);
    let params = field(body, "params");
    let name_in_body = params
        .and_then(|p| field(p, "name").or_else(|| field(p, "uri")))
        .and_then(as_str);
    if let Some(header) = view.header("mcp-method") {
        match rpc_method {
            Some(m) if m == header => {}
            Some(m) => {
                return Err(McpHeaderMismatch(format!(
                    "Mcp-Method is {header:?}, the body's method {m:?}"
                )));
            }
            None => {
                return Err(McpHeaderMismatch(format!(
                    "Mcp-Method is {header:?} and the body is not a JSON-RPC request leash could read"
                )));
            }
        }
    }
    if let Some(header) = view.header("mcp-name") {
        if name_in_body != Some(header) {
            return Err(McpHeaderMismatch(format!(
                "Mcp-Name is {header:?}, the body names {:?}",
                name_in_body.unwrap_or("nothing")
            )));
        }
    }
    if rpc_method != Some("tools/call") || field(body, "jsonrpc").and_then(as_str) != Some("2.0") {
        return Ok(None);
    }
    let Some(name) = name_in_body else {
        return Ok(None);
    };
    let arguments = params
        .and_then(|p| field(p, "arguments"))
        .cloned()
        .unwrap_or_else(Value::new_object);
    Ok(Some((name.to_owned(), arguments)))
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) => o
            .iter()
            .find_map(|(k, v)| matches!(k, Value::String(s) if s.as_ref() == name).then_some(v)),
        _ => None,
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "action_tests.rs"]
mod tests;

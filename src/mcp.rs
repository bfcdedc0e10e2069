//! MCP over Streamable HTTP, read strictly: leash must see the message the tool
//! server will run, or refuse it (`mcp.invalid_request`).
//!
//! A request is an MCP request when it carries an `Mcp-Method` header, is on a
//! configured MCP route, or its body looks like JSON-RPC. Then:
//!
//! ```text
//! POST    exactly one JSON-RPC 2.0 message with a JSON media type: a request or a
//!         notification (string `method`, object `params`), or a response to a
//!         request of the server's; `tools/call` and `prompts/get` name a string
//!         `params.name`, `resources/read|subscribe|unsubscribe` a string `params.uri`;
//!         no object repeats a key, keys compared under Unicode case folding (a Go
//!         server matches `NAME` and `naſe`-style spellings to `name`)
//! GET     no body: the server's event stream
//! DELETE  no body, with Mcp-Session-Id: the client ends its session
//! ```
//!
//! Anything else is refused. Fields are looked up with the same folding, so the
//! value leash reads is the one a case-insensitive server reads. `parsed_body` stays
//! as OPA's plugin builds it; this module reads the raw body itself.

use std::collections::HashSet;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use unicase::UniCase;

use crate::body;
use crate::decision::DenyReason;
use crate::policy::Value;
use crate::quote::Quoted;
use crate::request::HeaderNotes;
use crate::view::RequestView;

/// What an MCP request names beyond its method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Tool(String),
    Resource(String),
    Prompt(String),
}

/// One MCP request, as the tool server will read it.
#[derive(Debug, Clone)]
pub enum Message {
    /// A body-less GET: the stream the server sends its own messages on.
    Stream,
    /// A body-less DELETE with `Mcp-Session-Id`: the client ends its session.
    EndSession,
    /// A JSON-RPC response to a request the server sent (sampling, elicitation).
    Response,
    /// A request or a notification.
    Call {
        method: String,
        named: Option<Named>,
        /// `params.arguments` of a `tools/call`, else an empty object.
        arguments: Value,
    },
}

impl Message {
    /// The JSON-RPC method, or what a message without one is: `stream`,
    /// `end_session` or `response`.
    pub fn method(&self) -> &str {
        match self {
            Self::Stream => "stream",
            Self::EndSession => "end_session",
            Self::Response => "response",
            Self::Call { method, .. } => method,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    #[error("not a valid MCP request: {0}")]
    Invalid(String),
    #[error("MCP headers disagree with the body: {0}")]
    HeaderMismatch(String),
}

impl McpError {
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::Invalid(_) => DenyReason::McpInvalidRequest,
            Self::HeaderMismatch(_) => DenyReason::McpHeaderMismatch,
        }
    }
}

fn invalid(why: impl Into<String>) -> McpError {
    McpError::Invalid(why.into())
}

/// The request as leash read it before MCP: its parsed body (`parsed_body`, `null`
/// when not JSON or unreadable) and whether Envoy cut it.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub parsed: &'a Value,
    pub truncated: bool,
}

/// Reads `view` as MCP. `Ok(None)`: not an MCP request. `notes` says whether any
/// `Mcp-*` header is there to look up.
pub fn read(
    view: &RequestView,
    body: Body<'_>,
    on_route: bool,
    notes: HeaderNotes,
) -> Result<Option<Message>, McpError> {
    let header_method = notes.mcp.then(|| view.header("mcp-method")).flatten();
    let raw = view.body.as_bytes();
    if raw.is_empty() && header_method.is_none() && !on_route {
        // No header, no route, no body to carry JSON-RPC: not MCP.
        return Ok(None);
    }
    // A body sent under another media type (a form, text, none) is parsed here only
    // to tell whether it is MCP: servers that ignore the media type would run it.
    // The plugin-style parse is used only when it read the body as JSON.
    let sniffed;
    let value = match body::parsed_as_json(view, body.parsed) {
        Some(parsed) => parsed,
        None if body::starts_like_json(raw) => {
            let text = String::from_utf8_lossy(raw);
            sniffed =
                Value::from_json_str(text.trim_start_matches('\u{feff}')).unwrap_or(Value::Null);
            &sniffed
        }
        None => body.parsed,
    };
    let rpc = rpc_shaped(value) || (matches!(value, Value::Null) && mentions_jsonrpc(raw));
    if header_method.is_none() && !on_route && !rpc {
        return Ok(None);
    }
    match view.method.as_str() {
        "GET" if raw.is_empty() && !body.truncated => Ok(Some(Message::Stream)),
        "DELETE"
            if raw.is_empty() && !body.truncated && view.header("mcp-session-id").is_some() =>
        {
            Ok(Some(Message::EndSession))
        }
        "POST" => post(view, value, body.truncated).map(Some),
        "GET" | "DELETE" => Err(invalid(
            "a GET must have no body, a DELETE no body and an Mcp-Session-Id header",
        )),
        other => Err(invalid(format!(
            "MCP over HTTP uses POST, GET and DELETE, not {}",
            Quoted(other)
        ))),
    }
}

fn post(view: &RequestView, value: &Value, truncated: bool) -> Result<Message, McpError> {
    let media = body::media_type(view);
    if media != "application/json" {
        return Err(invalid(format!(
            "the body must be application/json, not {}",
            Quoted(&media)
        )));
    }
    if let Some(encoding) = view
        .header("content-encoding")
        .filter(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(invalid(format!(
            "a body with content-encoding {} cannot be read",
            Quoted(encoding)
        )));
    }
    if truncated {
        return Err(invalid(
            "Envoy forwarded only part of the body (raise with_request_body.max_request_bytes)",
        ));
    }
    match value {
        Value::Object(_) => {}
        Value::Array(_) => {
            return Err(invalid("a JSON-RPC batch: send one message per request"));
        }
        Value::Null => return Err(invalid("the body is not JSON")),
        _ => return Err(invalid("the body is not a JSON-RPC message")),
    }
    no_duplicate_keys(view.body.as_bytes())?;
    if field(value, "jsonrpc").and_then(as_str) != Some("2.0") {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    let params = match field(value, "params") {
        None => None,
        Some(p @ Value::Object(_)) => Some(p),
        Some(_) => return Err(invalid("params must be an object")),
    };
    let message = match field(value, "method") {
        Some(Value::String(method)) => call(method, params)?,
        Some(_) => return Err(invalid("method must be a string")),
        None if field(value, "id").is_some()
            && (field(value, "result").is_some() || field(value, "error").is_some()) =>
        {
            Message::Response
        }
        None => {
            return Err(invalid(
                "neither a request (no method) nor a response (id with result or error)",
            ));
        }
    };
    check_headers(view, &message)?;
    Ok(message)
}

fn call(method: &str, params: Option<&Value>) -> Result<Message, McpError> {
    let text = |name: &str| -> Result<String, McpError> {
        match params.and_then(|p| field(p, name)) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(invalid(format!(
                "{} needs a string params.{name}",
                Quoted(method)
            ))),
        }
    };
    let (named, arguments) = match method {
        "tools/call" => {
            let arguments = match params.and_then(|p| field(p, "arguments")) {
                None => Value::new_object(),
                Some(a @ Value::Object(_)) => a.clone(),
                Some(_) => return Err(invalid("params.arguments must be an object")),
            };
            (Some(Named::Tool(text("name")?)), arguments)
        }
        "prompts/get" => (Some(Named::Prompt(text("name")?)), Value::new_object()),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            (Some(Named::Resource(text("uri")?)), Value::new_object())
        }
        _ => (None, Value::new_object()),
    };
    Ok(Message::Call {
        method: method.to_owned(),
        named,
        arguments,
    })
}

/// `Mcp-Method` and `Mcp-Name` (MCP 2026-07-28) must say what the body says.
fn check_headers(view: &RequestView, message: &Message) -> Result<(), McpError> {
    let (method, name) = match message {
        Message::Call { method, named, .. } => (
            Some(method.as_str()),
            named.as_ref().map(|n| match n {
                Named::Tool(s) | Named::Resource(s) | Named::Prompt(s) => s.as_str(),
            }),
        ),
        _ => (None, None),
    };
    if let Some(header) = view.header("mcp-method") {
        if method != Some(header) {
            return Err(McpError::HeaderMismatch(format!(
                "Mcp-Method is {}, the body's method {}",
                Quoted(header),
                Quoted(method.unwrap_or("none"))
            )));
        }
    }
    if let Some(header) = view.header("mcp-name") {
        if name != Some(header) {
            return Err(McpError::HeaderMismatch(format!(
                "Mcp-Name is {}, the body names {}",
                Quoted(header),
                Quoted(name.unwrap_or("nothing"))
            )));
        }
    }
    Ok(())
}

/// A body leash could not parse that still names JSON-RPC: some server may parse it.
fn mentions_jsonrpc(raw: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"jsonrpc\"";
    raw.windows(NEEDLE.len())
        .any(|w| w.eq_ignore_ascii_case(NEEDLE))
}

/// An object with `jsonrpc`, or a `method` naming an MCP method, or an array holding
/// one: what a tool server might run.
fn rpc_shaped(value: &Value) -> bool {
    match value {
        Value::Object(_) => {
            field(value, "jsonrpc").is_some()
                || field(value, "method")
                    .and_then(as_str)
                    .is_some_and(is_mcp_method)
        }
        Value::Array(items) => items.iter().any(rpc_shaped),
        _ => false,
    }
}

/// A method MCP defines, by name or namespace: `{"method": "oauth/token"}` in a REST
/// body is not one.
fn is_mcp_method(method: &str) -> bool {
    const NAMESPACES: [&str; 10] = [
        "tools/",
        "resources/",
        "prompts/",
        "notifications/",
        "completion/",
        "logging/",
        "tasks/",
        "sampling/",
        "elicitation/",
        "roots/",
    ];
    matches!(method, "initialize" | "ping") || NAMESPACES.iter().any(|n| method.starts_with(n))
}

/// The member of `object` whose key equals `name` under Unicode case folding.
/// Duplicates are refused first, so at most one matches.
pub fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Object(o) = object else {
        return None;
    };
    let wanted = UniCase::new(name);
    o.iter().find_map(|(k, v)| match k {
        Value::String(k) if UniCase::new(k.as_ref()) == wanted => Some(v),
        _ => None,
    })
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

/// Refuses a body in which any object repeats a key, compared under Unicode case
/// folding: a server would read one of the two, and leash cannot know which.
pub fn no_duplicate_keys(raw: &[u8]) -> Result<(), McpError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    NoDuplicates
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| invalid(e.to_string()))
}

struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(UniCase::new(key.as_ref()).to_folded_case()) {
                return Err(de::Error::custom(format!(
                    "the key {} appears twice (keys are compared ignoring case)",
                    Quoted(&key)
                )));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;

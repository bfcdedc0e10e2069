//! The Rego input document: the one OPA's Envoy plugin builds, so its policies run
//! unchanged. leash's own context will sit beside it under `input.leash`.
//!
//! ```text
//! attributes      the CheckRequest attributes, protojson-shaped (built at the edge)
//! parsed_path     path before `?`, percent-decoded, split on `/`
//! parsed_query    name -> [values]
//! parsed_body     JSON or form-urlencoded body; null otherwise or when unparseable
//! truncated_body  Envoy sent only part of the body
//! version         {ext_authz: "v3", encoding: "protojson"}
//! source_principal  the peer's certificate identity, when there is one
//! leash           leash's agent context (token, binding, delegation, action, tool)
//! ```

use regorus::Value;

use crate::body::{self, PluginParse};
use crate::document::{document_keys, object};
use crate::view::RequestView;

/// Bounds on the work a request body can cause before policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Larger bodies are denied (`request.body_too_large`).
    pub max_body_bytes: usize,
    /// JSON bodies nesting deeper are denied (`request.body_too_deep`).
    pub max_body_depth: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_body_depth: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("path {0:?} is not validly percent-encoded UTF-8")]
    InvalidPath(String),
    #[error("body of {size} bytes exceeds the {limit}-byte limit")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("JSON body nests deeper than the limit of {limit}")]
    BodyTooDeep { limit: usize },
}

/// Builds `input` for one request, without agent context: the plugin's document.
pub fn build(view: &RequestView, limits: &InputLimits) -> Result<Value, InputError> {
    Ok(parse(view, limits)?.assemble(view, None))
}

/// The parts of the document leash derives from the request: parsed before the rest of
/// the pipeline runs, since classification reads the body too.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub path: Value,
    pub query: Value,
    /// The parsed body, or `null`.
    pub body: Value,
    pub truncated: bool,
}

pub fn parse(view: &RequestView, limits: &InputLimits) -> Result<Parsed, InputError> {
    let (path, query) = split_target(&view.path);
    let parsed_path = parse_path(path).ok_or_else(|| InputError::InvalidPath(path.to_owned()))?;
    let (body, truncated) = parse_body(view, limits)?;
    Ok(Parsed {
        path: parsed_path,
        query: parse_query(query),
        body,
        truncated,
    })
}

impl Parsed {
    /// The input document, with leash's agent context under `leash` when given.
    pub fn assemble(self, view: &RequestView, leash: Option<Value>) -> Value {
        KEYS.with(|k| self.assemble_with(view, leash, k))
    }

    fn assemble_with(self, view: &RequestView, leash: Option<Value>, k: &Keys) -> Value {
        let mut object = regorus::value::Object::new();
        object.insert(k.attributes.clone(), view.attributes_document());
        object.insert(k.parsed_path.clone(), self.path);
        object.insert(k.parsed_query.clone(), self.query);
        object.insert(k.parsed_body.clone(), self.body);
        object.insert(k.truncated_body.clone(), Value::Bool(self.truncated));
        object.insert(k.version.clone(), VERSION.with(Value::clone));
        if !view.source_principal.is_empty() {
            object.insert(
                k.source_principal.clone(),
                Value::from(view.source_principal.as_str()),
            );
        }
        if let Some(leash) = leash {
            object.insert(k.leash.clone(), leash);
        }
        object.into_value()
    }
}

document_keys! {
    attributes = "attributes",
    parsed_path = "parsed_path",
    parsed_query = "parsed_query",
    parsed_body = "parsed_body",
    truncated_body = "truncated_body",
    version = "version",
    source_principal = "source_principal",
    leash = "leash",
}

thread_local! {
    /// `input.version`, the same for every request.
    static VERSION: Value = object([
        (Value::from("ext_authz"), Value::from("v3")),
        (Value::from("encoding"), Value::from("protojson")),
    ]);
}

/// Splits a request target into path and query; a fragment is dropped.
fn split_target(target: &str) -> (&str, &str) {
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

/// Like the plugin (Go's `url.Parse`): decode the whole path, then drop leading `/`
/// and split, so `/a%2Fb` gives `["a", "b"]` and `/` gives `[""]`.
fn parse_path(path: &str) -> Option<Value> {
    let decoded = String::from_utf8(percent_decode(path, false)?).ok()?;
    let segments = decoded
        .trim_start_matches('/')
        .split('/')
        .map(Value::from)
        .collect::<Vec<_>>();
    Some(Value::from(segments))
}

/// Go's `url.ParseQuery` as the plugin uses it: pairs split on `&`, `+` is a space,
/// pairs with `;` or a bad escape are skipped, a name may repeat.
fn parse_query(query: &str) -> Value {
    let mut map: std::collections::BTreeMap<Value, Vec<Value>> = Default::default();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (decode_component(key), decode_component(value)) else {
            continue;
        };
        map.entry(Value::from(key))
            .or_default()
            .push(Value::from(value));
    }
    object(map.into_iter().map(|(k, v)| (k, Value::from(v))))
}

fn decode_component(s: &str) -> Option<String> {
    String::from_utf8(percent_decode(s, true)?).ok()
}

/// Strict percent-decoding: `%` must be followed by two hex digits.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Returns `(parsed_body, truncated_body)`.
fn parse_body(view: &RequestView, limits: &InputLimits) -> Result<(Value, bool), InputError> {
    let body = view.body.as_bytes();
    if body.len() > limits.max_body_bytes {
        return Err(InputError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let partial = view
        .header("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let content_type = view.header("content-type").unwrap_or_default();
    let Some(kind) = body::plugin_parse(content_type) else {
        return Ok((Value::Null, partial));
    };
    if body.is_empty() {
        return Ok((Value::Null, partial));
    }
    // A body shorter than its declared length was cut by Envoy: parsing a prefix
    // would hand the policy a document the client never sent.
    let declared = view
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if partial || declared.is_some_and(|len| len > body.len()) {
        return Ok((Value::Null, true));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok((Value::Null, false));
    };
    let parsed = match kind {
        PluginParse::Json => {
            if json_depth_exceeds(body, limits.max_body_depth) {
                return Err(InputError::BodyTooDeep {
                    limit: limits.max_body_depth,
                });
            }
            Value::from_json_str(text).unwrap_or(Value::Null)
        }
        PluginParse::Form => parse_query(text),
    };
    Ok((parsed, false))
}

/// True if `[`/`{` nesting outside strings goes deeper than `limit`. Runs before
/// parsing, so a hostile body costs one linear scan, not a deep recursion.
fn json_depth_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;

//! Reads a policy's result into a [`PolicyAnswer`], accepting exactly the shapes OPA's
//! Envoy plugin accepts: a bool, or an object with `allowed` and optional response
//! fields. Anything else is an error, and an error denies.

use regorus::Value;
use regorus::value::Object;

use crate::effects::{
    Credential, DenyResponse, Header, HttpStatus, Metadata, MintAsk, Mutations, Vouched,
    is_leash_header,
};
use crate::reason::DenyReason;

/// A policy's result once its shape has been checked.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAnswer {
    Allow(Permit),
    Deny {
        response: DenyResponse,
        metadata: Metadata,
        /// The policy's own explanation (`reason` in its result), for the decision log.
        stated_reason: Option<String>,
    },
}

/// Proof that a policy allowed the request. Its fields are private to this module:
/// nothing but [`read`] makes one, and no other code can, in leash or outside it:
///
/// ```compile_fail
/// let forged = leash::decision::Permit {
///     mutations: Default::default(),
///     metadata: Default::default(),
///     vouched: Default::default(),
///     credential: None,
/// };
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    mutations: Mutations,
    metadata: Metadata,
    vouched: Vouched,
    /// The credential minted for this call, sent in place of the agent's.
    credential: Option<Credential>,
}

impl Permit {
    fn new(mutations: Mutations, metadata: Metadata) -> Self {
        Self {
            mutations,
            metadata,
            vouched: Vouched::default(),
            credential: None,
        }
    }

    pub fn mutations(&self) -> &Mutations {
        &self.mutations
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The identity leash vouches for to the tool.
    pub fn vouched(&self) -> &Vouched {
        &self.vouched
    }

    /// The credential minted for this call, if one was.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// Every header set on the upstream request, in order: leash's own first, so that
    /// each replaces what the client sent under that name, then the policy's.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let vouched = self
            .vouched
            .headers()
            .map(|(name, value)| (name as &str, value));
        let credential = self
            .credential
            .iter()
            .map(|c| (c.header.as_ref(), c.value.as_str()));
        vouched.chain(credential).chain(
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

    /// Sends `credential` upstream in place of the agent's: set in its header, with the
    /// other credential headers removed. Refused when the policy sets that header too,
    /// which would send a second credential beside it, or removes it, which would send
    /// none while the log says one went.
    pub(crate) fn carry(&mut self, credential: Credential) -> Result<(), String> {
        if let Some(h) = self
            .mutations
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&credential.header))
        {
            return Err(format!(
                "the policy sets {:?}, where leash sends the credential it minted",
                h.name
            ));
        }
        if let Some(name) = self
            .mutations
            .request_headers_to_remove
            .iter()
            .find(|name| name.eq_ignore_ascii_case(&credential.header))
        {
            return Err(format!(
                "the policy removes {name:?}, where leash sends the credential it minted"
            ));
        }
        for name in credential.remove.iter() {
            if !self.mutations.request_headers_to_remove.contains(name) {
                self.mutations.request_headers_to_remove.push(name.clone());
            }
        }
        self.credential = Some(credential);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    #[error("the decision is undefined for this input")]
    Undefined,
    #[error("{0}")]
    Invalid(String),
    #[error("http_status {0} is not a status Envoy can send")]
    UnknownStatus(String),
}

impl OutcomeError {
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::Undefined => DenyReason::PolicyUndefined,
            Self::Invalid(_) => DenyReason::PolicyInvalidResult,
            Self::UnknownStatus(_) => DenyReason::PolicyInvalidStatus,
        }
    }
}

pub fn read(result: &Value) -> Result<PolicyAnswer, OutcomeError> {
    match result {
        Value::Undefined => Err(OutcomeError::Undefined),
        Value::Bool(true) => Ok(PolicyAnswer::Allow(Permit::new(
            Mutations::default(),
            Metadata::new(),
        ))),
        Value::Bool(false) => Ok(PolicyAnswer::Deny {
            response: DenyResponse::default(),
            metadata: Metadata::new(),
            stated_reason: None,
        }),
        Value::Object(object) => read_object(object),
        other => Err(invalid(format!(
            "the decision must be a bool or an object, not {}",
            type_name(other)
        ))),
    }
}

/// The fields a decision object may carry. Unknown fields are ignored, as the plugin does.
#[derive(Default)]
struct Fields<'a> {
    allowed: Option<&'a Value>,
    headers: Option<&'a Value>,
    response_headers_to_add: Option<&'a Value>,
    request_headers_to_remove: Option<&'a Value>,
    query_parameters_to_set: Option<&'a Value>,
    query_parameters_to_remove: Option<&'a Value>,
    http_status: Option<&'a Value>,
    body: Option<&'a Value>,
    dynamic_metadata: Option<&'a Value>,
    reason: Option<&'a Value>,
}

impl<'a> Fields<'a> {
    /// One pass over the object, no key allocations.
    fn of(object: &'a Object) -> Self {
        let mut f = Self::default();
        for (key, value) in object.iter() {
            let Value::String(key) = key else { continue };
            let slot = match key.as_ref() {
                "allowed" => &mut f.allowed,
                "headers" => &mut f.headers,
                "response_headers_to_add" => &mut f.response_headers_to_add,
                "request_headers_to_remove" => &mut f.request_headers_to_remove,
                "query_parameters_to_set" => &mut f.query_parameters_to_set,
                "query_parameters_to_remove" => &mut f.query_parameters_to_remove,
                "http_status" => &mut f.http_status,
                "body" => &mut f.body,
                "dynamic_metadata" => &mut f.dynamic_metadata,
                "reason" => &mut f.reason,
                _ => continue,
            };
            *slot = Some(value);
        }
        f
    }
}

fn read_object(object: &Object) -> Result<PolicyAnswer, OutcomeError> {
    let f = Fields::of(object);
    let allowed = match f.allowed {
        Some(Value::Bool(allowed)) => *allowed,
        Some(other) => {
            return Err(invalid(format!(
                "`allowed` must be a bool, not {}",
                type_name(other)
            )));
        }
        None => return Err(invalid("the decision object has no `allowed` field")),
    };
    let headers = header_list(f.headers, "headers")?;
    let metadata = match f.dynamic_metadata {
        None => Metadata::new(),
        Some(value @ Value::Object(_)) => match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map)) => {
                within("dynamic_metadata", json_len(&map), MAX_METADATA_BYTES, map)?
            }
            _ => return Err(invalid("`dynamic_metadata` cannot be represented as JSON")),
        },
        Some(other) => {
            return Err(invalid(format!(
                "`dynamic_metadata` must be an object, not {}",
                type_name(other)
            )));
        }
    };
    if allowed {
        if let Some(h) = headers.iter().find(|h| is_leash_header(&h.name)) {
            return Err(invalid(format!(
                "`headers` sets {:?} on the request: headers under x-leash- reach the tool only as leash sets them, from what it verified",
                h.name
            )));
        }
        return Ok(PolicyAnswer::Allow(Permit::new(
            Mutations {
                headers,
                response_headers_to_add: header_list(
                    f.response_headers_to_add,
                    "response_headers_to_add",
                )?,
                request_headers_to_remove: header_names(
                    f.request_headers_to_remove,
                    "request_headers_to_remove",
                )?,
                query_parameters_to_set: query_to_set(f.query_parameters_to_set)?,
                query_parameters_to_remove: query_names(strings(
                    f.query_parameters_to_remove,
                    "query_parameters_to_remove",
                )?)?,
            },
            metadata,
        )));
    }
    let status = match f.http_status {
        None => HttpStatus::FORBIDDEN,
        Some(value) => status(value)?,
    };
    let body = match f.body {
        None => String::new(),
        Some(Value::String(body)) => within("body", body.len(), MAX_BODY_BYTES, body.to_string())?,
        Some(other) => {
            return Err(invalid(format!(
                "`body` must be a string, not {}",
                type_name(other)
            )));
        }
    };
    let stated_reason = match f.reason {
        Some(Value::String(reason)) => Some(within(
            "reason",
            reason.len(),
            MAX_REASON_BYTES,
            reason.to_string(),
        )?),
        _ => None,
    };
    Ok(PolicyAnswer::Deny {
        response: DenyResponse {
            status,
            headers,
            body,
        },
        metadata,
        stated_reason,
    })
}

/// leash's own addition to the decision object: `pause: {reason}` asks leash to pause
/// the agent's session on its task from the next Check. `None` without one; an
/// error (the decision is then refused) for any other shape.
pub fn requested_pause(result: &Value) -> Result<Option<String>, OutcomeError> {
    leash_request(result, "pause")
}

/// leash's own addition to a denial: `require_approval: {reason}` asks a human to
/// approve this very action. On an allow it is refused: an allow needs no approval.
pub fn requested_approval(result: &Value) -> Result<Option<String>, OutcomeError> {
    let asked = leash_request(result, "require_approval")?;
    let allowed = || match result {
        Value::Object(o) => allows(o),
        _ => false,
    };
    if asked.is_some() && allowed() {
        return Err(invalid(
            "`require_approval` comes with `allowed: false`: an allow needs no approval",
        ));
    }
    Ok(asked)
}

/// leash's own addition to an allow: `mint: {ttl, audience, scope}` asks for a
/// credential minted for this call, each field narrowing the configured one (all
/// optional). `None` without the field; an error for any other shape, or on a denial.
pub fn requested_mint(result: &Value) -> Result<Option<MintAsk>, OutcomeError> {
    let Value::Object(object) = result else {
        return Ok(None);
    };
    let Some(ask) = object
        .iter()
        .find_map(|(k, v)| matches!(k, Value::String(k) if k.as_ref() == "mint").then_some(v))
    else {
        return Ok(None);
    };
    if !allows(object) {
        return Err(invalid(
            "`mint` comes with `allowed: true`: a denied call gets no credential",
        ));
    }
    let Value::Object(fields) = ask else {
        return Err(invalid(
            "`mint` must be an object: {}, or with ttl, audience and scope",
        ));
    };
    let mut out = MintAsk::default();
    for (key, value) in fields.iter() {
        let key = match key {
            Value::String(k) => Ok(k.as_ref()),
            _ => Err(()),
        };
        match (key, value) {
            (Ok("ttl"), Value::Number(n)) => {
                out.ttl = Some(n.as_u64().filter(|t| *t > 0).ok_or_else(|| {
                    invalid("`mint.ttl` must be a whole number of seconds, 1 or more")
                })?);
            }
            (Ok("audience"), Value::String(aud)) => out.audience = Some(aud.to_string()),
            (Ok("scope"), Value::String(scope)) => {
                out.scope = Some(scope.split_whitespace().map(str::to_owned).collect());
            }
            (Ok("scope"), Value::Array(scopes)) => {
                out.scope = Some(
                    scopes
                        .iter()
                        .map(|s| match s {
                            Value::String(s) if !s.is_empty() => Ok(s.to_string()),
                            _ => Err(invalid("`mint.scope` holds only non-empty strings")),
                        })
                        .collect::<Result<_, _>>()?,
                );
            }
            (Ok(name @ ("ttl" | "audience" | "scope")), _) => {
                return Err(invalid(format!("`mint.{name}` has the wrong type")));
            }
            _ => {
                return Err(invalid(
                    "`mint` takes only ttl, audience and scope: a claim leash does not set cannot be asked for",
                ));
            }
        }
    }
    Ok(Some(out))
}

/// Whether a decision object says `allowed: true`, found by walking the keys: a lookup
/// would allocate the key.
fn allows(object: &Object) -> bool {
    object.iter().any(|(k, v)| {
        matches!(k, Value::String(k) if k.as_ref() == "allowed") && *v == Value::Bool(true)
    })
}

/// `<field>: {reason}`: the reason, `None` without the field, an error otherwise.
fn leash_request(result: &Value, field: &str) -> Result<Option<String>, OutcomeError> {
    let Value::Object(object) = result else {
        return Ok(None);
    };
    // Found by walking the keys: a lookup would allocate the key on every Check.
    let Some(request) = object
        .iter()
        .find_map(|(k, v)| matches!(k, Value::String(k) if k.as_ref() == field).then_some(v))
    else {
        return Ok(None);
    };
    let reason = match request {
        Value::Object(request) => request.get(&Value::from("reason")),
        _ => None,
    };
    match reason {
        Some(Value::String(reason)) if !reason.chars().any(char::is_control) => Ok(Some(within(
            field,
            reason.len(),
            MAX_REASON_BYTES,
            reason.to_string(),
        )?)),
        _ => Err(invalid(format!(
            "`{field}` must be an object with a `reason` string without control characters"
        ))),
    }
}

fn status(value: &Value) -> Result<HttpStatus, OutcomeError> {
    let code = value
        .as_i64()
        .map_err(|_| invalid(format!("`http_status` must be an integer, not {value}")))?;
    HttpStatus::new(code).ok_or_else(|| OutcomeError::UnknownStatus(code.to_string()))
}

/// An object of name -> string or [string], or an array of such objects.
fn header_list(value: Option<&Value>, name: &str) -> Result<Vec<Header>, OutcomeError> {
    let mut out = Vec::new();
    match value {
        None => {}
        Some(Value::Object(map)) => push_headers(map, name, &mut out)?,
        Some(Value::Array(list)) => {
            for item in list.iter() {
                let Value::Object(map) = item else {
                    return Err(invalid(format!(
                        "`{name}` items must be objects, not {}",
                        type_name(item)
                    )));
                };
                push_headers(map, name, &mut out)?;
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "`{name}` must be an object or an array of objects, not {}",
                type_name(other)
            )));
        }
    }
    Ok(out)
}

fn push_headers(map: &Object, field: &str, out: &mut Vec<Header>) -> Result<(), OutcomeError> {
    let mut total: usize = out.iter().map(|h| h.name.len() + h.value.len()).sum();
    for (key, value) in map.iter() {
        let name = header_name(key, field)?;
        for value in string_or_strings(value, field)? {
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(invalid(format!(
                    "`{field}` value for {name:?} contains a control character (a line break, NUL, ...), which Envoy refuses"
                )));
            }
            total += name.len() + value.len();
            within(field, total, MAX_HEADER_BYTES, ())?;
            out.push(Header {
                name: name.clone(),
                value,
            });
        }
    }
    Ok(())
}

/// Header names must be HTTP tokens: anything else would let a policy smuggle a
/// second header through Envoy.
fn header_name(key: &Value, field: &str) -> Result<String, OutcomeError> {
    let Value::String(name) = key else {
        return Err(invalid(format!("`{field}` keys must be strings")));
    };
    header_token(name, field)
}

/// A header name a policy may set or remove, lowercase.
fn header_token(name: &str, field: &str) -> Result<String, OutcomeError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(invalid(format!(
            "`{field}` has {name:?}, which is not a valid header name"
        )));
    }
    let name = name.to_ascii_lowercase();
    if is_framing(&name) {
        return Err(invalid(format!(
            "`{field}` has {name:?}: hop-by-hop and framing headers are Envoy's to set, and a tool may read a message framed twice"
        )));
    }
    Ok(name)
}

/// Headers that frame or route the message, or belong to one hop: a policy setting
/// or removing them could make Envoy and the tool read different requests.
fn is_framing(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "keep-alive"
    ) || name.starts_with("proxy-")
}

fn string_or_strings(value: &Value, field: &str) -> Result<Vec<String>, OutcomeError> {
    match value {
        Value::String(s) => Ok(vec![s.to_string()]),
        Value::Array(list) => list
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.to_string()),
                other => Err(invalid(format!(
                    "`{field}` values must be strings, not {}",
                    type_name(other)
                ))),
            })
            .collect(),
        other => Err(invalid(format!(
            "`{field}` values must be a string or an array of strings, not {}",
            type_name(other)
        ))),
    }
}

fn strings(value: Option<&Value>, name: &str) -> Result<Vec<String>, OutcomeError> {
    let items: Box<dyn Iterator<Item = &Value>> = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => Box::new(list.iter()),
        Some(Value::Set(set)) => Box::new(set.iter()),
        Some(other) => {
            return Err(invalid(format!(
                "`{name}` must be an array of strings, not {}",
                type_name(other)
            )));
        }
    };
    items
        .map(|item| match item {
            Value::String(s) => Ok(s.to_string()),
            other => Err(invalid(format!(
                "`{name}` items must be strings, not {}",
                type_name(other)
            ))),
        })
        .collect()
}

/// `query_parameters_to_set`: an object of name -> string or [string].
fn query_to_set(value: Option<&Value>) -> Result<Vec<(String, String)>, OutcomeError> {
    const NAME: &str = "query_parameters_to_set";
    match value {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            let mut out = Vec::new();
            let mut total = 0;
            for (key, value) in map.iter() {
                let Value::String(key) = key else {
                    return Err(invalid(format!("`{NAME}` keys must be strings")));
                };
                query_part(key, NAME, true)?;
                for value in string_or_strings(value, NAME)? {
                    query_part(&value, NAME, false)?;
                    total += key.len() + value.len();
                    within(NAME, total, MAX_HEADER_BYTES, ())?;
                    out.push((key.to_string(), value));
                }
            }
            Ok(out)
        }
        Some(other) => Err(invalid(format!(
            "`{NAME}` must be an object, not {}",
            type_name(other)
        ))),
    }
}

/// Envoy writes query parameters as given: a `&` or `#` would add parameters or cut
/// the query, a control character makes Envoy fail the request. Percent escapes pass
/// as written, so a policy that encodes its values keeps working.
fn query_part(part: &str, field: &str, is_name: bool) -> Result<(), OutcomeError> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let ok = match b {
            b'%' => {
                let escape = bytes.get(i + 1..i + 3).unwrap_or_default();
                let ok = escape.len() == 2 && escape.iter().all(u8::is_ascii_hexdigit);
                i += 2;
                ok
            }
            b'=' => !is_name,
            b'&' | b'#' => false,
            b => b.is_ascii_alphanumeric() || b"-._~!$'()*+,;:@/?".contains(&b),
        };
        if !ok {
            return Err(invalid(format!(
                "`{field}` has {part:?}: percent-encode everything but letters, digits and -._~!$'()*+,;:@/? (and = in values)"
            )));
        }
        i += 1;
    }
    if is_name && part.is_empty() {
        return Err(invalid(format!("`{field}` has an empty parameter name")));
    }
    Ok(())
}

fn query_names(names: Vec<String>) -> Result<Vec<String>, OutcomeError> {
    within(
        "query_parameters_to_remove",
        names.iter().map(String::len).sum(),
        MAX_HEADER_BYTES,
        (),
    )?;
    for name in &names {
        query_part(name, "query_parameters_to_remove", true)?;
    }
    Ok(names)
}

/// `request_headers_to_remove`: header names, lowercase. Envoy removes after it sets,
/// so removing an `x-leash-` header would strip what leash vouched for.
fn header_names(value: Option<&Value>, field: &str) -> Result<Vec<String>, OutcomeError> {
    let names = strings(value, field)?;
    within(
        field,
        names.iter().map(String::len).sum(),
        MAX_HEADER_BYTES,
        (),
    )?;
    names
        .iter()
        .map(|name| {
            let name = header_token(name, field)?;
            if is_leash_header(&name) {
                return Err(invalid(format!(
                    "`{field}` removes {name:?}: headers under x-leash- carry what leash verified"
                )));
            }
            Ok(name)
        })
        .collect()
}

/// What a decision may ask Envoy to carry. Envoy refuses header blocks past 60 KiB by
/// default, and every byte here is copied on every Check that carries it.
const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The policy's own explanation goes into every decision record.
const MAX_REASON_BYTES: usize = 4 * 1024;

fn within<T>(field: &str, size: usize, max: usize, value: T) -> Result<T, OutcomeError> {
    if size > max {
        return Err(invalid(format!(
            "`{field}` is {size} bytes; a decision may carry at most {max}"
        )));
    }
    Ok(value)
}

/// The length of `value` as JSON, without building the text.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn invalid(message: impl Into<String>) -> OutcomeError {
    OutcomeError::Invalid(message.into())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Set(_) => "a set",
        Value::Object(_) => "an object",
        Value::Undefined => "undefined",
    }
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;

//! The canonical target of a request: scheme, host, port and path, derived once per
//! Check so that every match leash makes (action rules, unauthenticated routes, MCP
//! routes, resources, DPoP `htu`) reads the request one way.
//!
//! The agent writes the request, so any spelling a tool server could read differently
//! from leash is a way around a rule. Spellings with one meaning are folded into one
//! form; spellings with more than one are refused:
//!
//! ```text
//! host   lowercase, trailing dot removed, the scheme's default port dropped;
//!        empty, missing, not a DNS name or IP literal, or a second host in
//!        X-Forwarded-Host or Forwarded: request.invalid_host
//! path   unreserved characters percent-decoded, other escapes in uppercase hex,
//!        characters outside RFC 3986 percent-encoded, dot segments resolved,
//!        slashes merged, a trailing slash dropped;
//!        %2F or %5C in a segment, an encoded dot segment, an encoded escape
//!        (%252e), a `;` parameter, a NUL, a backslash, a fragment, or a
//!        path-override header: request.ambiguous_path
//! ```
//!
//! `%2F`/`%5C` and `;` can each be allowed ([`PathAllowances`]) for tools that use
//! them; they are then kept, encoded, inside their segment.

use std::borrow::Cow;

use crate::decision::DenyReason;
use crate::quote::Quoted;
use crate::view::RequestView;

/// Bounds on the request line and headers, each with its own reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longer paths (query included) are refused: `request.path_too_long`.
    pub max_path_bytes: usize,
    /// Larger header blocks (names and values) are refused: `request.headers_too_large`.
    pub max_header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_path_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Path spellings refused by default that an operator may allow, one class each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathAllowances {
    /// `%2F` and `%5C` inside a segment (e.g. GitLab's `group%2Fproject`).
    pub encoded_slashes: bool,
    /// `;` in a segment, kept as part of it (matrix parameters).
    pub semicolons: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub limits: RequestLimits,
    pub allow: PathAllowances,
}

/// Why a request's target has no single meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid host: {0}")]
    InvalidHost(String),
    #[error("ambiguous path: {0}")]
    AmbiguousPath(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("the path is {len} bytes, more than the {limit}-byte limit (request.max_path_bytes)")]
    PathTooLong { len: usize, limit: usize },
    #[error(
        "the headers are {size} bytes, more than the {limit}-byte limit (request.max_header_bytes)"
    )]
    HeadersTooLarge { size: usize, limit: usize },
}

impl RequestError {
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::InvalidHost(_) => DenyReason::RequestInvalidHost,
            Self::AmbiguousPath(_) => DenyReason::RequestAmbiguousPath,
            Self::InvalidPath(_) => DenyReason::RequestInvalidPath,
            Self::PathTooLong { .. } => DenyReason::RequestPathTooLong,
            Self::HeadersTooLarge { .. } => DenyReason::RequestHeadersTooLarge,
        }
    }
}

/// Headers some frameworks route by instead of the request line: a second path.
const PATH_OVERRIDE_HEADERS: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-override-url"];

/// Headers some frameworks take the host from instead of `Host`: a second host.
const HOST_OVERRIDE_HEADERS: [&str; 2] = ["x-forwarded-host", "x-host"];

/// Headers through which frameworks let a client run another method than its own.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What a header is to leash, by name (in either spelling, `-` or `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    Other,
    Mcp,
    Leash,
    MethodOverride,
    PathOverride,
    HostOverride,
    Forwarded,
}

/// Cheap for the common header: only names of a length some header of interest has
/// are compared.
fn header_kind(name: &str) -> HeaderKind {
    let first = name.as_bytes().first().map(u8::to_ascii_lowercase);
    if first == Some(b'm') {
        return if name
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("mcp-"))
        {
            HeaderKind::Mcp
        } else {
            HeaderKind::Other
        };
    }
    if first != Some(b'x') && first != Some(b'f') {
        return HeaderKind::Other;
    }
    if crate::decision::is_leash_header(name) {
        return HeaderKind::Leash;
    }
    let is = |list: &[&str]| list.iter().any(|h| is_header(name, h));
    match name.len() {
        9 if is(&["forwarded"]) => HeaderKind::Forwarded,
        6 | 16 if is(&HOST_OVERRIDE_HEADERS) => HeaderKind::HostOverride,
        13 | 14 if is(&PATH_OVERRIDE_HEADERS) => HeaderKind::PathOverride,
        13 | 17 | 22 if is(&METHOD_OVERRIDE_HEADERS) => HeaderKind::MethodOverride,
        _ => HeaderKind::Other,
    }
}

/// What the one pass over the headers saw, so later steps look only where there is
/// something to see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderNotes {
    /// A method-override header, in any spelling.
    pub method_override: bool,
    /// A header under leash's prefix, which the tool must not receive.
    pub leash: bool,
    /// A header starting `mcp-`.
    pub mcp: bool,
}

/// Whether header `name` is `wanted` (lowercase, with `-`), as servers that read `_`
/// and `-` alike (CGI, PHP, WSGI) would see it.
pub(crate) fn is_header(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// The request's target, canonical. Borrows from the view when it already is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Lowercase; `http` when the request did not say.
    pub scheme: Cow<'a, str>,
    /// Lowercase, no trailing dot; an IPv6 literal keeps its brackets.
    pub host: Cow<'a, str>,
    /// `None` when the request named no port or the scheme's default one.
    pub port: Option<u16>,
    /// Canonical, without query; `/` for the root.
    pub path: Cow<'a, str>,
}

impl<'a> Target<'a> {
    /// The canonical target of `view`, or why it has none.
    pub fn of(view: &'a RequestView, options: &RequestOptions) -> Result<Self, RequestError> {
        Self::read(view, options).map(|(target, _)| target)
    }

    /// The canonical target of `view` and what its headers hold, in one pass over
    /// them. Checks the limits first, so a hostile path costs one length comparison.
    pub fn read(
        view: &'a RequestView,
        options: &RequestOptions,
    ) -> Result<(Self, HeaderNotes), RequestError> {
        let limits = options.limits;
        if view.path.len() > limits.max_path_bytes {
            return Err(RequestError::PathTooLong {
                len: view.path.len(),
                limit: limits.max_path_bytes,
            });
        }
        let mut size = 0usize;
        let mut notes = HeaderNotes::default();
        for (name, value) in &view.headers {
            size = size.saturating_add(name.len()).saturating_add(value.len());
            match header_kind(name) {
                HeaderKind::Other => {}
                HeaderKind::Mcp => notes.mcp = true,
                HeaderKind::Leash => notes.leash = true,
                HeaderKind::MethodOverride => notes.method_override = true,
                HeaderKind::PathOverride => {
                    return Err(RequestError::AmbiguousPath(format!(
                        "the {} header names a second path",
                        Quoted(name)
                    )));
                }
                HeaderKind::Forwarded if !value.to_ascii_lowercase().contains("host=") => {}
                HeaderKind::HostOverride | HeaderKind::Forwarded => {
                    return Err(RequestError::InvalidHost(format!(
                        "the {} header names a second host",
                        Quoted(name)
                    )));
                }
            }
        }
        if size > limits.max_header_bytes {
            return Err(RequestError::HeadersTooLarge {
                size,
                limit: limits.max_header_bytes,
            });
        }
        let scheme = scheme(&view.scheme);
        let (host, port) = host(&view.host, default_port(&scheme))?;
        let raw_path = match view.path.bytes().position(|b| b == b'?') {
            Some(end) => view.path.get(..end).unwrap_or_default(),
            None => &view.path,
        };
        let target = Self {
            scheme,
            host,
            port,
            path: path(raw_path, options.allow)?,
        };
        Ok((target, notes))
    }

    /// The port the request goes to: the one it named, else the scheme's default.
    pub fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(&self.scheme))
    }

    /// The path's segments, percent-decoded (the root has none).
    pub fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(&decode(s)).into_owned())
            .collect()
    }

    /// Parses an absolute `http(s)` URL (a DPoP proof's `htu`) into the same form;
    /// its query and fragment are not part of it.
    pub fn of_url(url: &'a str, allow: PathAllowances) -> Result<Self, RequestError> {
        let url = url.split(['?', '#']).next().unwrap_or(url);
        let (scheme_raw, rest) = url
            .split_once("://")
            .ok_or_else(|| RequestError::InvalidPath("not an absolute URL".into()))?;
        let (authority, raw_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let scheme = scheme(scheme_raw);
        let (host, port) = host(authority, default_port(&scheme))?;
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        Ok(Self {
            scheme,
            host,
            port,
            path: path(raw_path, allow)?,
        })
    }
}

fn scheme(raw: &str) -> Cow<'_, str> {
    if raw.is_empty() {
        Cow::Borrowed("http")
    } else if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Splits an authority into a canonical host and its port (`None` for the default).
fn host(
    authority: &str,
    default: Option<u16>,
) -> Result<(Cow<'_, str>, Option<u16>), RequestError> {
    let invalid = |why: &str| RequestError::InvalidHost(format!("{}: {why}", Quoted(authority)));
    let (name, port) = if let Some(literal) = authority.strip_prefix('[') {
        let (inside, after) = literal
            .split_once(']')
            .ok_or_else(|| invalid("an unterminated IPv6 literal"))?;
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(invalid("not an IPv6 address"));
        }
        let port = match after {
            "" => "",
            _ => after
                .strip_prefix(':')
                .ok_or_else(|| invalid("text after the IPv6 literal"))?,
        };
        let end = inside.len() + 2;
        (authority.get(..end).unwrap_or(authority), port)
    } else {
        match authority.bytes().rposition(|b| b == b':') {
            Some(colon) => (
                authority.get(..colon).unwrap_or_default(),
                authority.get(colon + 1..).unwrap_or_default(),
            ),
            None => (authority, ""),
        }
    };
    let port = match port_number(port) {
        Some(Some(number)) => (Some(number) != default).then_some(number),
        Some(None) => None,
        None => return Err(invalid("the port is not a number from 0 to 65535")),
    };
    if name.starts_with('[') {
        return Ok((lowercase(name), port));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    match dns_name(name.as_bytes()) {
        Some(false) => Ok((Cow::Borrowed(name), port)),
        Some(true) => Ok((Cow::Owned(name.to_ascii_lowercase()), port)),
        None if authority.is_empty() => Err(invalid("the request names no host")),
        None if authority.contains('@') => Err(invalid("user information is not part of a host")),
        None => Err(invalid("not a DNS name or an IP address")),
    }
}

/// `Some(None)` for no port, `Some(Some(n))` for a port number, `None` for anything else.
fn port_number(port: &str) -> Option<Option<u16>> {
    if port.is_empty() {
        return Some(None);
    }
    if port.len() > 5 {
        return None;
    }
    let mut number: u32 = 0;
    for b in port.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        number = number * 10 + u32::from(b - b'0');
    }
    u16::try_from(number).ok().map(Some)
}

/// One pass over a DNS name (or IPv4 address): labels of letters, digits, `-` and `_`,
/// none empty, at most 253 bytes. Returns whether it has an uppercase letter.
fn dns_name(name: &[u8]) -> Option<bool> {
    if name.len() > 253 {
        return None;
    }
    let (mut label, mut upper) = (0usize, false);
    for &b in name {
        match b {
            b'.' if label == 0 => return None,
            b'.' => label = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => {
                label += 1;
                upper = true;
            }
            _ => return None,
        }
    }
    (label > 0).then_some(upper)
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters RFC 3986 allows unencoded in a segment, `;` aside (it is a parameter).
pub(crate) const fn is_plain(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// The canonical form of `raw` (a path without its query).
pub(crate) fn path(raw: &str, allow: PathAllowances) -> Result<Cow<'_, str>, RequestError> {
    if is_canonical(raw.as_bytes(), allow) {
        return Ok(Cow::Borrowed(raw));
    }
    canonicalize(raw, allow).map(Cow::Owned)
}

/// True when `raw` needs no change: the fast path every well-formed request takes.
fn is_canonical(raw: &[u8], allow: PathAllowances) -> bool {
    if raw == b"/" {
        return true;
    }
    if raw.first() != Some(&b'/') || raw.last() == Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    let mut i = 1;
    while let Some(&b) = raw.get(i) {
        match b {
            b'/' => {
                if !plain_segment(raw.get(segment_start..i).unwrap_or_default()) {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' => {
                let (Some(&hi), Some(&lo)) = (raw.get(i + 1), raw.get(i + 2)) else {
                    return false;
                };
                let (Some(h), Some(l)) = (upper_hex(hi), upper_hex(lo)) else {
                    return false;
                };
                let value = (h << 4) | l;
                let slash = value == b'/' || value == b'\\';
                if value == 0
                    || value == b'%'
                    || value >= 0x80
                    || is_plain(value)
                    || value == b';'
                    || (slash && !allow.encoded_slashes)
                {
                    return false;
                }
                i += 2;
            }
            b';' if allow.semicolons => {}
            _ if is_plain(b) => {}
            _ => return false,
        }
        i += 1;
    }
    plain_segment(raw.get(segment_start..).unwrap_or_default())
}

/// A segment that is not empty and not a dot segment.
fn plain_segment(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

/// Uppercase hexadecimal digits only: lowercase escapes are not canonical.
const fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub(crate) const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    for nibble in [b >> 4, b & 0xF] {
        out.push(char::from(
            DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
        ));
    }
}

/// The slow path: rebuilds the path segment by segment.
fn canonicalize(raw: &str, allow: PathAllowances) -> Result<String, RequestError> {
    let ambiguous = |why: &str| RequestError::AmbiguousPath(format!("{}: {why}", Quoted(raw)));
    if raw.contains('#') {
        return Err(ambiguous("a fragment in the request target"));
    }
    if !raw.starts_with('/') {
        return Err(RequestError::InvalidPath(format!(
            "{}: the path must start with /",
            Quoted(raw)
        )));
    }
    let bytes = raw.as_bytes();
    let mut segments: Vec<String> = Vec::new();
    let mut segment = String::new();
    let mut encoded_dot = false;
    let mut decoded_non_ascii = false;
    let mut i = 0;
    let mut finish = |segment: &mut String, encoded_dot: &mut bool| -> Result<(), RequestError> {
        match segment.as_str() {
            "" => {}
            "." | ".." if *encoded_dot => {
                return Err(ambiguous("a percent-encoded dot segment"));
            }
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(std::mem::take(segment)),
        }
        segment.clear();
        *encoded_dot = false;
        Ok(())
    };
    while let Some(&b) = bytes.get(i) {
        match b {
            b'/' => finish(&mut segment, &mut encoded_dot)?,
            b'\\' => return Err(ambiguous("a backslash, which some servers read as /")),
            0 => return Err(ambiguous("a NUL byte")),
            b';' if !allow.semicolons => {
                return Err(ambiguous(
                    "a ; parameter, which some servers strip before routing",
                ));
            }
            b'%' => {
                let value = match (
                    bytes.get(i + 1).and_then(|h| hex(*h)),
                    bytes.get(i + 2).and_then(|l| hex(*l)),
                ) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => {
                        return Err(RequestError::InvalidPath(format!(
                            "{}: % is not followed by two hexadecimal digits",
                            Quoted(raw)
                        )));
                    }
                };
                match value {
                    0 => return Err(ambiguous("an encoded NUL (%00)")),
                    b'/' | b'\\' if !allow.encoded_slashes => {
                        return Err(ambiguous(
                            "an encoded slash (%2F or %5C), which some servers decode before routing",
                        ));
                    }
                    b'.' => {
                        encoded_dot = true;
                        segment.push('.');
                    }
                    // Servers decode these before routing: `/repos/1%3Aarchive` is
                    // the `:archive` verb, and a rule naming it must see it so.
                    b';' if !allow.semicolons => {
                        return Err(ambiguous(
                            "an encoded ; (%3B), which some servers decode and then strip as a parameter",
                        ));
                    }
                    v if is_plain(v) || v == b';' => segment.push(char::from(v)),
                    v => {
                        decoded_non_ascii |= v >= 0x80;
                        push_escaped(&mut segment, v);
                    }
                }
                i += 2;
            }
            b if is_plain(b) || b == b';' => segment.push(char::from(b)),
            b => {
                decoded_non_ascii |= b >= 0x80;
                push_escaped(&mut segment, b);
            }
        }
        i += 1;
    }
    finish(&mut segment, &mut encoded_dot)?;
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    // Checked on the result, so that escaped digits (`%25%32%65`) count as digits.
    if encodes_escape(&out) {
        return Err(ambiguous(
            "an encoded escape (%25 and two hex digits), which a second decoding reads differently",
        ));
    }
    if decoded_non_ascii && std::str::from_utf8(&decode(&out)).is_err() {
        return Err(RequestError::InvalidPath(format!(
            "{}: the path does not decode to UTF-8",
            Quoted(raw)
        )));
    }
    Ok(out)
}

/// A `%25` followed by two hex digits: what a server that decodes twice reads as an
/// escape of its own.
fn encodes_escape(canonical: &str) -> bool {
    canonical.match_indices("%25").any(|(at, _)| {
        let digits = canonical.as_bytes().get(at + 3..at + 5).unwrap_or_default();
        digits.len() == 2 && digits.iter().all(|d| hex(*d).is_some())
    })
}

/// Percent-decodes a canonical path or segment (whose escapes are all valid).
fn decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if let (b'%', Some(h), Some(l)) = (
            b,
            bytes.get(i + 1).and_then(|h| hex(*h)),
            bytes.get(i + 2).and_then(|l| hex(*l)),
        ) {
            out.push((h << 4) | l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

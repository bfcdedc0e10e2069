//! The agent's token anywhere the tool could read it besides the headers leash
//! replaces: while a call gets a minted credential, such a request is refused, or the
//! tool would receive the token minting exists to keep from it.
//!
//! Looked for: RFC 6750's `access_token` parameter (query or form body), and a copy of
//! any credential the request carries (its signature part, which no one can replay a
//! token without) in the path (as sent and canonical), the query, another header, or
//! the body, raw, form-decoded or with JSON-style escapes (`\u0041`, `\/`) undone,
//! whether or not the body parses. A body Envoy sent only in part is refused before
//! this (the pipeline): its rest cannot be searched. A token the agent re-encodes on purpose
//! (base64, split in pieces) is not found: the tool then holds a token it was never
//! configured to trust, since it verifies leash's credentials.

use memchr::memmem;

use crate::view::RequestView;

/// Where a credential was found outside the headers leash replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// An `access_token` parameter, in the query or a form body.
    Parameter(&'static str),
    /// A copy of a credential, in the path, query, body or the named header.
    Copy(String),
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parameter(at) => write!(
                f,
                "the request carries an access_token parameter in its {at}, which would reach the tool"
            ),
            Self::Copy(at) => write!(
                f,
                "the request carries a copy of its credential in the {at}, which would reach the tool"
            ),
        }
    }
}

/// The shortest tail of a credential looked for; shorter values are no tokens.
const MIN_SECRET: usize = 16;

/// `None` when no credential of `view` (in the headers named `replaced`) shows
/// anywhere else; `decoded_path` is the canonical path.
pub fn exposed(view: &RequestView, decoded_path: &str, replaced: &[&str]) -> Option<Exposure> {
    let secrets: Vec<&[u8]> = replaced
        .iter()
        .filter_map(|name| view.header(name))
        .filter_map(secret)
        .collect();
    let found = |haystack: &[u8]| secrets.iter().any(|s| memmem::find(haystack, s).is_some());
    let query = view.path.split_once('?').map_or("", |(_, q)| q);
    if let Some(at) = parameters(query.as_bytes(), "query", &found) {
        return Some(at);
    }
    if found(view.path.as_bytes()) || found(decoded_path.as_bytes()) {
        return Some(Exposure::Copy("path".into()));
    }
    for (name, value) in &view.headers {
        if !replaced.contains(&name.as_str()) && name != ":path" && found(value.as_bytes()) {
            return Some(Exposure::Copy(format!("{name} header")));
        }
    }
    let body = view.body.as_bytes();
    if body.is_empty() {
        return None;
    }
    if found(body) {
        return Some(Exposure::Copy("body".into()));
    }
    let form = view.header("content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if form && let Some(at) = parameters(body, "form body", &found) {
        return Some(at);
    }
    if memmem::find(body, b"\\").is_some() && found(&unescaped(body)) {
        return Some(Exposure::Copy("body".into()));
    }
    None
}

/// The part of a credential header's value a copy would hold: the JWS signature, or
/// the whole value when it is no JWS.
fn secret(value: &str) -> Option<&[u8]> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((_scheme, token)) => token.trim(),
        None => value,
    };
    let tail = token.rsplit('.').next().unwrap_or(token);
    let tail = if tail.len() >= MIN_SECRET {
        tail
    } else {
        token
    };
    (tail.len() >= MIN_SECRET).then_some(tail.as_bytes())
}

/// An `access_token` parameter, or a copy in a decoded name or value.
fn parameters(
    encoded: &[u8],
    at: &'static str,
    found: &impl Fn(&[u8]) -> bool,
) -> Option<Exposure> {
    for (name, value) in form_urlencoded::parse(encoded) {
        if name == "access_token" {
            return Some(Exposure::Parameter(at));
        }
        if found(name.as_bytes()) || found(value.as_bytes()) {
            return Some(Exposure::Copy(at.into()));
        }
    }
    None
}

/// `body` with the escapes a JSON (or JavaScript) parser would undo, undone: `\uXXXX`
/// below 0x80 and `\/`. Credentials are ASCII, so nothing else can spell one.
fn unescaped(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match rest {
            [b'u', a, b, c, d, tail @ ..] => {
                let code = [*a, *b, *c, *d];
                match std::str::from_utf8(&code)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .filter(u8::is_ascii)
                {
                    Some(ascii) => {
                        out.push(ascii);
                        rest = tail;
                    }
                    None => out.push(byte),
                }
            }
            [b'/', tail @ ..] => {
                out.push(b'/');
                rest = tail;
            }
            _ => out.push(byte),
        }
    }
    out
}

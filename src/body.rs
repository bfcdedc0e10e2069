//! The request body as leash reads it for what the request does: JSON, a form, or
//! opaque. `parsed_body` in the input document stays as OPA's plugin builds it (it
//! matches media types by substring); this is the stricter reading classification
//! rests on, so that a server reading the body differently cannot run more than the
//! class says.
//!
//! ```text
//! empty      no body, nothing cut
//! JSON       media type application/json or */*+json (essence, any case), parsed
//! form       media type application/x-www-form-urlencoded, not JSON in disguise
//! opaque     anything else: another media type (multipart, text), a content encoding
//!            leash does not undo, a body Envoy cut, JSON that does not parse
//! ```

use std::borrow::Cow;

use regorus::Value;

use crate::view::RequestView;

#[derive(Debug, Clone)]
pub enum Reading<'a> {
    Empty,
    Json(Cow<'a, Value>),
    /// The raw form text, for readers that split it themselves.
    Form(Cow<'a, str>),
    Opaque,
}

/// Reads `view`'s body, given the plugin-style `parsed` body and whether Envoy cut it.
pub fn read<'a>(view: &'a RequestView, parsed: &'a Value, truncated: bool) -> Reading<'a> {
    let raw = view.body.as_bytes();
    if truncated {
        return Reading::Opaque;
    }
    if raw.is_empty() {
        return Reading::Empty;
    }
    if is_encoded(view) {
        return Reading::Opaque;
    }
    let media = media_type(view);
    if is_json(&media) {
        if plugin_parsed_json(view, parsed) {
            return Reading::Json(Cow::Borrowed(parsed));
        }
        return std::str::from_utf8(raw)
            .ok()
            .and_then(|text| Value::from_json_str(text).ok())
            .map_or(Reading::Opaque, |v| Reading::Json(Cow::Owned(v)));
    }
    if media == "application/x-www-form-urlencoded" && !starts_like_json(raw) {
        return Reading::Form(String::from_utf8_lossy(raw));
    }
    Reading::Opaque
}

/// A content encoding leash does not undo (gzip, deflate, ...): the bytes it sees are
/// not the ones the server reads.
pub fn is_encoded(view: &RequestView) -> bool {
    view.header("content-encoding")
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"))
}

/// How OPA's Envoy plugin picks a parser for `parsed_body`: by substring of the whole
/// header, case-sensitive, JSON first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginParse {
    Json,
    Form,
}

pub fn plugin_parse(content_type: &str) -> Option<PluginParse> {
    if content_type.contains("application/json") {
        Some(PluginParse::Json)
    } else if content_type.contains("application/x-www-form-urlencoded") {
        Some(PluginParse::Form)
    } else {
        None
    }
}

/// The plugin-style `parsed` body when it is the JSON of a body whose media type is
/// JSON. `Application/JSON; x=application/x-www-form-urlencoded` is JSON to servers
/// but a form to the plugin: its form parse must not stand for the JSON.
pub fn parsed_as_json<'a>(view: &RequestView, parsed: &'a Value) -> Option<&'a Value> {
    (is_json(&media_type(view)) && plugin_parsed_json(view, parsed)).then_some(parsed)
}

/// Whether `parsed` is the plugin's JSON parse of the body, not its form parse.
fn plugin_parsed_json(view: &RequestView, parsed: &Value) -> bool {
    let content_type = view.header("content-type").unwrap_or_default();
    plugin_parse(content_type) == Some(PluginParse::Json) && !matches!(parsed, Value::Null)
}

/// The media type's essence, lowercase: what is before `;`, trimmed. A list of types
/// (`application/json, text/plain`, two headers merged) stays whole and so matches
/// none: a server may read either.
pub fn media_type(view: &RequestView) -> Cow<'_, str> {
    let value = view.header("content-type").unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(essence.to_ascii_lowercase())
    } else {
        Cow::Borrowed(essence)
    }
}

/// `application/json` or a structured `+json` type (`application/merge-patch+json`).
pub fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype.ends_with("+json"))
}

/// The first byte after whitespace and a UTF-8 byte order mark opens a JSON object or
/// array.
pub fn starts_like_json(raw: &[u8]) -> bool {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    matches!(
        raw.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// `raw` with percent escapes and JSON `\u00XX` escapes of ASCII characters decoded:
/// what a search for a name must look at, since servers decode both before reading it.
pub fn unescaped(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = |at: usize, n: usize| {
            raw.get(at..at + n).and_then(|h| {
                std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
            })
        };
        match b {
            b'%' => match hex(i + 1, 2) {
                Some(v) => {
                    out.push(u8::try_from(v).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                None => out.push(b),
            },
            b'\\' if raw.get(i + 1) == Some(&b'u') => match hex(i + 2, 4) {
                Some(v) if v < 0x80 => {
                    out.push(u8::try_from(v).unwrap_or(b'?'));
                    i += 6;
                    continue;
                }
                _ => out.push(b),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(content_type: &str, body: &str) -> RequestView {
        let mut v =
            RequestView::for_test("POST", "http", "h", "/", &[("content-type", content_type)]);
        v.body = crate::view::Body::Text(body.into());
        v
    }

    #[test]
    fn media_types_are_read_by_their_essence() {
        let multipart = view(
            "multipart/form-data; boundary=b; x=application/x-www-form-urlencoded",
            "--b--",
        );
        let parsed = Value::new_object();
        assert!(matches!(read(&multipart, &parsed, false), Reading::Opaque));
        let patch = view("application/merge-patch+json", r#"{"a":1}"#);
        assert!(matches!(
            read(&patch, &Value::Null, false),
            Reading::Json(_)
        ));
        let upper = view("Application/JSON", r#"{"a":1}"#);
        assert!(matches!(
            read(&upper, &Value::Null, false),
            Reading::Json(_)
        ));
        let form = view("application/x-www-form-urlencoded", "a=1");
        assert!(matches!(read(&form, &parsed, false), Reading::Form(_)));
        let disguised = view(
            "application/x-www-form-urlencoded",
            "\u{feff} {\"jsonrpc\":1}",
        );
        assert!(matches!(read(&disguised, &parsed, false), Reading::Opaque));
        let listed = view("application/json, text/plain", r#"{"a":1}"#);
        assert!(matches!(read(&listed, &parsed, false), Reading::Opaque));
        let broken = view("application/json", r#"{"a":1e400}"#);
        assert!(matches!(
            read(&broken, &Value::Null, false),
            Reading::Opaque
        ));
    }

    #[test]
    fn an_encoded_body_is_opaque() {
        let mut v = view("application/x-www-form-urlencoded", "x");
        v.headers
            .insert("content-encoding".into(), "deflate".into());
        assert!(matches!(read(&v, &Value::Null, false), Reading::Opaque));
    }

    #[test]
    fn escapes_are_undone_for_searching() {
        assert_eq!(unescaped(br#"\u005f%6Dethod"#), b"_method".to_vec());
        assert_eq!(unescaped(b"100%"), b"100%".to_vec());
        assert_eq!(unescaped(br#"\u2028"#), br#"\u2028"#.to_vec());
    }
}

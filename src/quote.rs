//! Request values quoted in a log line or a denial. The agent writes them, so each is
//! escaped (quotes, backslashes, control and non-ASCII characters) and cut at
//! [`LIMIT`] bytes: a value can neither forge a log line nor flood one.

use std::fmt::{self, Write as _};

/// The most bytes of one request value a log line or denial quotes.
pub const LIMIT: usize = 256;

/// Displays a request value in double quotes, escaped and truncated.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        let mut written = 0usize;
        for c in self.0.chars() {
            let mut buf = [0u8; 12];
            let piece = escape(c, &mut buf);
            if written + piece.len() > LIMIT {
                f.write_str("…")?;
                break;
            }
            written += piece.len();
            f.write_str(piece)?;
        }
        f.write_char('"')
    }
}

/// `c` as it appears inside the quotes.
fn escape(c: char, buf: &mut [u8; 12]) -> &str {
    match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        ' '..='~' => c.encode_utf8(buf),
        c => {
            let mut cursor = Cursor { buf, len: 0 };
            // `\u{…}` fits 12 bytes for every char; a failed write leaves a prefix.
            let _ = write!(cursor, "{}", c.escape_unicode());
            let len = cursor.len;
            std::str::from_utf8(buf.get(..len).unwrap_or_default()).unwrap_or("?")
        }
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8; 12],
    len: usize,
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The quoted form as an owned string, for records kept past the request.
pub fn quoted(s: &str) -> String {
    Quoted(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_start_a_log_line_and_quotes_stay_inside() {
        assert_eq!(
            quoted("/a\ndecision=\"allow\""),
            r#""/a\u{a}decision=\"allow\"""#
        );
        assert_eq!(quoted("é\u{0}"), r#""\u{e9}\u{0}""#);
        assert_eq!(quoted("plain/path"), "\"plain/path\"");
    }

    #[test]
    fn long_values_are_cut_at_the_limit() {
        let long = "a".repeat(1000);
        let q = quoted(&long);
        assert!(q.len() <= LIMIT + "\"…\"".len(), "{}", q.len());
        assert!(q.ends_with("…\""));
        let escapes = "\n".repeat(1000);
        assert!(quoted(&escapes).len() <= LIMIT + "\"…\"".len());
    }
}

//! Glob patterns for hosts and paths, with the semantics of Rego's `glob.match` with a
//! delimiter: `*` matches within one segment, `**` matches any number of segments.

/// Whether `value` matches `pattern`, segments split on `delimiter`.
pub fn matches(pattern: &str, value: &str, delimiter: char) -> bool {
    let pattern: Vec<&str> = pattern.split(delimiter).collect();
    let value: Vec<&str> = value.split(delimiter).collect();
    segments(&pattern, &value)
}

fn segments(pattern: &[&str], value: &[&str]) -> bool {
    match pattern.split_first() {
        None => value.is_empty(),
        Some((&"**", rest)) => {
            (0..=value.len()).any(|skip| value.get(skip..).is_some_and(|v| segments(rest, v)))
        }
        Some((first, rest)) => match value.split_first() {
            Some((v, vrest)) => segment(first.as_bytes(), v.as_bytes()) && segments(rest, vrest),
            None => false,
        },
    }
}

/// `*` matches any run of characters and `?` one character, within a segment.
fn segment(pattern: &[u8], value: &[u8]) -> bool {
    match pattern.split_first() {
        None => value.is_empty(),
        Some((b'*', rest)) => {
            (0..=value.len()).any(|skip| value.get(skip..).is_some_and(|v| segment(rest, v)))
        }
        Some((b'?', rest)) => value.split_first().is_some_and(|(_, v)| segment(rest, v)),
        Some((c, rest)) => value
            .split_first()
            .is_some_and(|(v, vrest)| v == c && segment(rest, vrest)),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_stay_in_their_segment() {
        assert!(matches("/v1/items/*", "/v1/items/42", '/'));
        assert!(!matches("/v1/items/*", "/v1/items/42/secret", '/'));
        assert!(matches("/v1/**", "/v1/items/42/secret", '/'));
        assert!(matches("/v1/**", "/v1", '/'));
        assert!(matches("*.example.com", "api.example.com", '.'));
        assert!(!matches("*.example.com", "evil.api.example.com", '.'));
        assert!(matches("api-?.example.com", "api-2.example.com", '.'));
        assert!(matches("*", "anything", '.'));
        assert!(!matches("/a", "/b", '/'));
    }
}

//! Glob patterns for hosts and paths, with the semantics of Rego's `glob.match` with a
//! delimiter: `*` matches within one segment, `**` matches any number of segments.
//! Matching walks the strings in place: it runs on every Check that has routes or
//! rules configured, so it allocates nothing.

/// Whether `value` matches `pattern`, segments split on `delimiter`.
pub fn matches(pattern: &str, value: &str, delimiter: char) -> bool {
    segments(Some(pattern), Some(value), delimiter)
}

/// A request matcher by host globs, path globs and methods; an empty list matches
/// anything. Shared by operator action rules and unauthenticated routes.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub hosts: &'a [String],
    pub paths: &'a [String],
    pub methods: &'a [String],
}

impl Route<'_> {
    /// Whether a request to `host` and `path` (query and fragment ignored) with
    /// `method` matches.
    pub fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or("/");
        (self.hosts.is_empty() || self.hosts.iter().any(|h| matches(h, host, '.')))
            && (self.paths.is_empty() || self.paths.iter().any(|p| matches(p, path, '/')))
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// The first segment of `s` and what follows its delimiter, if anything does.
fn first(s: &str, delimiter: char) -> (&str, Option<&str>) {
    match s.split_once(delimiter) {
        Some((head, rest)) => (head, Some(rest)),
        None => (s, None),
    }
}

/// `None` stands for no segments left; `Some("")` is one empty segment.
fn segments(pattern: Option<&str>, value: Option<&str>, delimiter: char) -> bool {
    let Some(pattern) = pattern else {
        return value.is_none();
    };
    let (p, p_rest) = first(pattern, delimiter);
    if p == "**" {
        let mut value = value;
        loop {
            if segments(p_rest, value, delimiter) {
                return true;
            }
            match value {
                Some(v) => value = first(v, delimiter).1,
                None => return false,
            }
        }
    }
    match value {
        Some(value) => {
            let (v, v_rest) = first(value, delimiter);
            segment(p.as_bytes(), v.as_bytes()) && segments(p_rest, v_rest, delimiter)
        }
        None => false,
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
    use super::{Route, matches};

    #[test]
    fn stars_stay_in_their_segment() {
        assert!(matches("/v1/items/*", "/v1/items/42", '/'));
        assert!(!matches("/v1/items/*", "/v1/items/42/secret", '/'));
        assert!(matches("/v1/**", "/v1/items/42/secret", '/'));
        assert!(matches("/v1/**", "/v1", '/'));
        assert!(matches("/v1/**/delete", "/v1/a/b/delete", '/'));
        assert!(!matches("/v1/**/delete", "/v1/a/b/delete/x", '/'));
        assert!(matches("*.example.com", "api.example.com", '.'));
        assert!(!matches("*.example.com", "evil.api.example.com", '.'));
        assert!(!matches("*.example.com", "example.com", '.'));
        assert!(matches("api-?.example.com", "api-2.example.com", '.'));
        assert!(matches("*", "anything", '.'));
        assert!(!matches("/a", "/b", '/'));
        assert!(!matches("/a", "/a/", '/'));
    }

    #[test]
    fn routes_match_host_path_and_method_ignoring_the_query() {
        let hosts = ["*.example.com".to_owned()];
        let paths = ["/v1/**".to_owned()];
        let methods = ["get".to_owned()];
        let route = Route {
            hosts: &hosts,
            paths: &paths,
            methods: &methods,
        };
        assert!(route.matches("api.example.com", "/v1/items?x=/etc", "GET"));
        assert!(!route.matches("api.example.com", "/v2/items", "GET"));
        assert!(!route.matches("api.example.org", "/v1/items", "GET"));
        assert!(!route.matches("api.example.com", "/v1/items", "POST"));
        let any = Route {
            hosts: &[],
            paths: &[],
            methods: &[],
        };
        assert!(any.matches("x", "/", "DELETE"));
    }
}

//! Host and path globs, compiled once when the configuration or the policy data loads
//! into automata (the `regex` crate) that match in time linear in the request, never
//! per Check and never by backtracking.
//!
//! Semantics, as Rego's `glob.match` with a delimiter: `*` matches within one segment
//! (a host label or a path segment), `?` one character of it, and a segment that is
//! exactly `**` matches any number of whole segments, none included. Path globs are
//! written like paths and matched against the canonical path ([`crate::request`]):
//! repeated and trailing slashes do not matter, escapes of unreserved characters
//! mean the character. A host glob written with a port matches that port only;
//! without one, every port.

use regex::Regex;

use crate::request::{PathAllowances, Target, is_plain};

/// Globs longer than this are refused: a pattern is a route, not a program.
pub const MAX_GLOB_BYTES: usize = 512;

/// Why a glob cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("glob {pattern:?}: {why}")]
pub struct GlobError {
    pub pattern: String,
    pub why: String,
}

fn error(pattern: &str, why: impl Into<String>) -> GlobError {
    GlobError {
        pattern: pattern.to_owned(),
        why: why.into(),
    }
}

/// A host glob with an optional port.
#[derive(Debug, Clone)]
struct HostGlob {
    name: Regex,
    port: Option<u16>,
}

/// A path glob without wildcards, or one that is a literal path and `/**`: matched
/// by comparing strings, as most rules and routes are written.
#[derive(Debug, Clone)]
enum Literal {
    /// Exactly this canonical path.
    Exact(String),
    /// This canonical path or anything below it.
    Subtree(String),
}

impl Literal {
    /// `pattern` as a literal, if it is one.
    fn of(pattern: &str) -> Option<Self> {
        let pattern = pattern.trim();
        let (base, subtree) = match pattern.strip_suffix("/**") {
            Some(base) => (if base.is_empty() { "/" } else { base }, true),
            None => (pattern, false),
        };
        if !base.starts_with('/') || base.contains(['*', '?']) {
            return None;
        }
        let all = PathAllowances {
            encoded_slashes: true,
            semicolons: true,
        };
        let canonical = crate::request::path(base, all).ok()?.into_owned();
        Some(if subtree {
            Self::Subtree(canonical)
        } else {
            Self::Exact(canonical)
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(literal) => path == literal,
            Self::Subtree(base) if base == "/" => true,
            Self::Subtree(base) => path
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

/// Path globs: literals compared as strings, the rest as one automaton.
#[derive(Debug, Clone)]
struct Paths {
    literals: Vec<Literal>,
    others: Option<Regex>,
}

impl Paths {
    fn matches(&self, path: &str) -> bool {
        self.literals.iter().any(|l| l.matches(path))
            || self.others.as_ref().is_some_and(|r| r.is_match(path))
    }
}

/// A request matcher by host globs, path globs and methods, compiled. An empty list
/// matches anything; a method matches only as written, in uppercase.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    hosts: Vec<HostGlob>,
    /// `None` matches any path.
    paths: Option<Paths>,
    /// The same, ignoring case.
    loose_paths: Option<Regex>,
    methods: Vec<String>,
}

impl RouteMatcher {
    pub fn compile(
        hosts: &[String],
        paths: &[String],
        methods: &[String],
    ) -> Result<Self, GlobError> {
        let hosts = hosts
            .iter()
            .map(|h| host_glob(h))
            .collect::<Result<Vec<_>, _>>()?;
        let (paths, loose_paths) = if paths.is_empty() {
            (None, None)
        } else {
            let alternatives = paths
                .iter()
                .map(|p| path_regex(p).map(|regex| (Literal::of(p), regex)))
                .collect::<Result<Vec<_>, _>>()?;
            let compile = |flags: &str, parts: &[&str]| {
                Regex::new(&format!("(?{flags})\\A(?:{})\\z", parts.join("|")))
                    .map_err(|e| error(&paths.join(" "), e.to_string()))
            };
            let others: Vec<&str> = alternatives
                .iter()
                .filter(|(literal, _)| literal.is_none())
                .map(|(_, regex)| regex.as_str())
                .collect();
            let every: Vec<&str> = alternatives.iter().map(|(_, r)| r.as_str()).collect();
            let loose = compile("si", &every)?;
            let others = (!others.is_empty())
                .then(|| compile("s", &others))
                .transpose()?;
            let literals = alternatives.into_iter().filter_map(|(l, _)| l).collect();
            (Some(Paths { literals, others }), Some(loose))
        };
        let methods = methods
            .iter()
            .map(|m| {
                let m = m.trim();
                if m.is_empty()
                    || !m
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
                {
                    Err(error(m, "a method is a word such as GET or DELETE"))
                } else {
                    Ok(m.to_ascii_uppercase())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hosts,
            paths,
            loose_paths,
            methods,
        })
    }

    /// Whether a request to `target` with `method` matches.
    pub fn matches(&self, target: &Target<'_>, method: &str) -> bool {
        self.matches_location(target) && self.matches_method(method)
    }

    /// Whether `target` matches, whatever the method.
    pub fn matches_location(&self, target: &Target<'_>) -> bool {
        self.matches_host(target)
            && self
                .paths
                .as_ref()
                .is_none_or(|paths| paths.matches(&target.path))
    }

    /// Whether a server that reads paths without regard to case, or `extensionless`
    /// (the path without a `.ext` suffix) as the path, would route the request here.
    pub fn matches_loosely(&self, target: &Target<'_>, extensionless: &str, method: &str) -> bool {
        self.matches_host(target)
            && self.matches_method(method)
            && self
                .loose_paths
                .as_ref()
                .is_none_or(|paths| paths.is_match(&target.path) || paths.is_match(extensionless))
    }

    fn matches_host(&self, target: &Target<'_>) -> bool {
        self.hosts.is_empty()
            || self.hosts.iter().any(|h| {
                h.name.is_match(&target.host)
                    && h.port.is_none_or(|p| Some(p) == target.effective_port())
            })
    }

    fn matches_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// Whether the matcher lists `method` by name (an empty list names none).
    pub fn names_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// Compiles one path glob; used where a single glob is matched on its own.
pub fn path_matcher(pattern: &str) -> Result<Regex, GlobError> {
    let body = path_regex(pattern)?;
    Regex::new(&format!("(?s)\\A(?:{body})\\z")).map_err(|e| error(pattern, e.to_string()))
}

fn check_length(pattern: &str) -> Result<(), GlobError> {
    if pattern.is_empty() {
        return Err(error(
            pattern,
            "an empty glob matches nothing; leave the list empty to match anything",
        ));
    }
    if pattern.len() > MAX_GLOB_BYTES {
        return Err(error(
            pattern,
            format!("longer than {MAX_GLOB_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn host_glob(pattern: &str) -> Result<HostGlob, GlobError> {
    check_length(pattern)?;
    let lower = pattern.trim().to_ascii_lowercase();
    let (name, port) = match lower.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((inside, port)) => (format!("[{inside}]"), Some(port)),
            None => (lower.clone(), None),
        },
        None => match lower.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (lower.clone(), None),
        },
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| error(pattern, "the port must be a number"))
        })
        .transpose()?;
    let name = name.strip_suffix('.').unwrap_or(&name);
    if name.is_empty() {
        return Err(error(pattern, "no host name"));
    }
    let body = segments_regex(name.split('.'), '.', |label, out| {
        for c in label.chars() {
            literal_or_wildcard(c, '.', out);
        }
        Ok(())
    })
    .map_err(|why| error(pattern, why))?;
    let name =
        Regex::new(&format!("(?s)\\A(?:{body})\\z")).map_err(|e| error(pattern, e.to_string()))?;
    Ok(HostGlob { name, port })
}

/// The regex (unanchored) of a path glob, over the canonical path.
fn path_regex(pattern: &str) -> Result<String, GlobError> {
    check_length(pattern)?;
    let trimmed = pattern.trim();
    if !trimmed.starts_with('/') && !trimmed.starts_with("**") {
        return Err(error(pattern, "a path glob starts with / (or **)"));
    }
    // Segments as the canonical path has them: no empty ones, a leading "" for the root.
    let mut segments: Vec<&str> = Vec::new();
    if trimmed.starts_with('/') {
        segments.push("");
    }
    for segment in trimmed.split('/').filter(|s| !s.is_empty()) {
        if matches!(segment, "." | "..") {
            return Err(error(
                pattern,
                "dot segments never appear in a canonical path",
            ));
        }
        segments.push(segment);
    }
    if segments == [""] {
        // The root: "/" is its canonical path.
        return Ok("/".to_owned());
    }
    segments_regex(segments.into_iter(), '/', |segment, out| {
        path_segment(segment, out)
    })
    .map_err(|why| error(pattern, why))
}

/// One path segment's characters as the canonical path spells them.
fn path_segment(segment: &str, out: &mut String) -> Result<(), String> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'*' | b'?' => literal_or_wildcard(char::from(b), '/', out),
            b'%' => {
                let value = match (
                    bytes.get(i + 1).and_then(|h| crate::request::hex(*h)),
                    bytes.get(i + 2).and_then(|l| crate::request::hex(*l)),
                ) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => return Err("% must be followed by two hexadecimal digits".to_owned()),
                };
                if is_plain(value) || value == b';' {
                    out.push_str(&regex::escape(&char::from(value).to_string()));
                } else {
                    out.push_str(&format!("%{value:02X}"));
                }
                i += 2;
            }
            b if is_plain(b) || b == b';' => {
                out.push_str(&regex::escape(&char::from(b).to_string()));
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
        i += 1;
    }
    Ok(())
}

/// `*` and `?` within a segment, anything else literally.
fn literal_or_wildcard(c: char, delimiter: char, out: &mut String) {
    let not_delimiter = regex::escape(&delimiter.to_string());
    match c {
        '*' => out.push_str(&format!("[^{not_delimiter}]*")),
        '?' => out.push_str(&format!("[^{not_delimiter}]")),
        c => out.push_str(&regex::escape(&c.to_string())),
    }
}

/// Joins per-segment regexes with the delimiter; a `**` segment matches any number
/// of whole segments (none included), so it carries one adjacent delimiter with it.
fn segments_regex<'a>(
    segments: impl Iterator<Item = &'a str>,
    delimiter: char,
    mut segment: impl FnMut(&str, &mut String) -> Result<(), String>,
) -> Result<String, String> {
    let mut merged: Vec<&str> = Vec::new();
    for s in segments {
        if s == "**" && merged.last() == Some(&"**") {
            continue;
        }
        merged.push(s);
    }
    let d = regex::escape(&delimiter.to_string());
    let last = merged.len().saturating_sub(1);
    let mut out = String::new();
    let mut after_leading_stars = false;
    for (i, s) in merged.iter().enumerate() {
        if *s == "**" {
            match (i == 0, i == last) {
                (true, true) => out.push_str("(?:.*)"),
                (true, false) => {
                    out.push_str(&format!("(?:.*{d})?"));
                    after_leading_stars = true;
                }
                (false, _) => out.push_str(&format!("(?:{d}.*)?")),
            }
            continue;
        }
        if i > 0 && !after_leading_stars {
            out.push_str(&d);
        }
        after_leading_stars = false;
        segment(s, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "glob_tests.rs"]
mod tests;

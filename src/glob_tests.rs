use std::borrow::Cow;

use super::*;

fn target(host: &str, port: Option<u16>, path: &str) -> Target<'static> {
    Target {
        scheme: Cow::Borrowed("https"),
        host: Cow::Owned(host.to_owned()),
        port,
        path: Cow::Owned(path.to_owned()),
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    path_matcher(pattern).unwrap().is_match(path)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn stars_stay_in_their_segment() {
    assert!(path_matches("/v1/items/*", "/v1/items/42"));
    assert!(!path_matches("/v1/items/*", "/v1/items/42/secret"));
    assert!(path_matches("/v1/**", "/v1/items/42/secret"));
    assert!(path_matches("/v1/**", "/v1"));
    assert!(!path_matches("/v1/**", "/v10"));
    assert!(path_matches("/v1/**/delete", "/v1/a/b/delete"));
    assert!(path_matches("/v1/**/delete", "/v1/delete"));
    assert!(!path_matches("/v1/**/delete", "/v1/a/b/delete/x"));
    assert!(path_matches("**/delete", "/v1/delete"));
    assert!(path_matches("/**", "/"));
    assert!(path_matches("/**", "/anything/at/all"));
    assert!(path_matches("/api-?/x", "/api-2/x"));
    assert!(!path_matches("/a", "/b"));
    assert!(path_matches("/", "/"));
}

#[test]
fn path_globs_are_read_like_canonical_paths() {
    // Written with a trailing or doubled slash, or an escape the canonical path decodes,
    // a glob means what the canonical path spells.
    assert!(path_matches("/api//items/", "/api/items"));
    assert!(path_matches("/%61pi/items", "/api/items"));
    assert!(path_matches("/a b", "/a%20b"));
    assert!(path_matches("/group%2fproject", "/group%2Fproject"));
    assert!(path_matches("/repos/*%3Aarchive", "/repos/1:archive"));
    assert!(path_matches("/repos/*:archive", "/repos/1:archive"));
    assert!(path_matcher("/a/../b").is_err());
    assert!(path_matcher("relative").is_err());
    assert!(path_matcher(&format!("/{}", "a".repeat(MAX_GLOB_BYTES))).is_err());
}

#[test]
fn host_globs_stop_at_dots_and_ports_only_where_written() {
    let any_port = RouteMatcher::compile(&strings(&["*.example.com"]), &[], &[]).unwrap();
    assert!(any_port.matches_location(&target("api.example.com", None, "/")));
    assert!(any_port.matches_location(&target("api.example.com", Some(8443), "/")));
    assert!(!any_port.matches_location(&target("evil.api.example.com", None, "/")));
    assert!(!any_port.matches_location(&target("example.com", None, "/")));

    let one_port = RouteMatcher::compile(&strings(&["CRM.example.com.:8443"]), &[], &[]).unwrap();
    assert!(one_port.matches_location(&target("crm.example.com", Some(8443), "/")));
    assert!(!one_port.matches_location(&target("crm.example.com", None, "/")));
    assert!(!one_port.matches_location(&target("crm.example.com", Some(9443), "/")));

    let default_port = RouteMatcher::compile(&strings(&["crm.example.com:443"]), &[], &[]).unwrap();
    assert!(
        default_port.matches_location(&target("crm.example.com", None, "/")),
        "https's default port is the port a request without one goes to"
    );
}

#[test]
fn methods_match_as_written_in_uppercase() {
    let m = RouteMatcher::compile(&[], &strings(&["/x"]), &strings(&["delete", "PURGE"])).unwrap();
    let t = target("h", None, "/x");
    assert!(m.matches(&t, "DELETE"));
    assert!(m.matches(&t, "PURGE"));
    assert!(
        !m.matches(&t, "delete"),
        "a lowercase method is another method"
    );
    assert!(!m.matches(&t, "GET"));
    assert!(m.names_method("PURGE"));
    let any = RouteMatcher::compile(&[], &[], &[]).unwrap();
    assert!(any.matches(&t, "MOVE"));
    assert!(!any.names_method("MOVE"));
    assert!(RouteMatcher::compile(&[], &[], &strings(&["GET /"])).is_err());
}

#[test]
fn hostile_globs_compile_and_decide() {
    // A backtracking matcher would take exponential time on these; benches/check.rs
    // times the automaton (`parts/glob_worst`).
    let pattern = format!("/**/{}b/**/{}c", "a*".repeat(40), "*x".repeat(40));
    let m = path_matcher(&pattern).unwrap();
    assert!(!m.is_match(&format!("/{}", "a".repeat(8 * 1024 - 1))));
    assert!(m.is_match(&format!("/q/{}b/r/{}c", "a".repeat(40), "x".repeat(40))));
}

#[test]
fn literal_globs_match_as_their_automata_do() {
    let patterns = [
        "/",
        "/mcp",
        "/mcp/**",
        "/**",
        "/a b/**",
        "/api//x/",
        "/%61pi/items",
        "/a;b",
    ];
    let paths = [
        "/",
        "/mcp",
        "/mcp/x",
        "/mcp/x/y",
        "/mcpx",
        "/mc",
        "/a%20b",
        "/a%20b/c",
        "/api/x",
        "/api/items",
        "/a;b",
        "/x",
    ];
    for pattern in patterns {
        let automaton = path_matcher(pattern).unwrap();
        let matcher = RouteMatcher::compile(&[], &strings(&[pattern]), &[]).unwrap();
        for path in paths {
            assert_eq!(
                matcher.matches_location(&target("h", None, path)),
                automaton.is_match(path),
                "{pattern} on {path}"
            );
        }
    }
}

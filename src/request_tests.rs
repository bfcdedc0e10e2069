use super::*;

fn view(scheme: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView::for_test("GET", scheme, host, path, headers)
}

fn target(host: &str, path: &str) -> Result<(String, Option<u16>, String), RequestError> {
    let v = view("http", host, path, &[]);
    Target::of(&v, &RequestOptions::default())
        .map(|t| (t.host.into_owned(), t.port, t.path.into_owned()))
}

fn path_of(path: &str) -> Result<String, RequestError> {
    target("tools.example", path).map(|(_, _, p)| p)
}

fn ambiguous(path: &str) -> bool {
    matches!(path_of(path), Err(RequestError::AmbiguousPath(_)))
}

#[test]
fn hosts_are_lowercased_without_trailing_dot_or_default_port() {
    for spelling in [
        "crm.example.com",
        "CRM.Example.com",
        "crm.example.com.",
        "crm.example.com:80",
        "crm.example.com.:80",
    ] {
        assert_eq!(
            target(spelling, "/").unwrap(),
            ("crm.example.com".into(), None, "/".into()),
            "{spelling}"
        );
    }
    assert_eq!(
        target("crm.example.com:8443", "/").unwrap().1,
        Some(8443),
        "another port is kept, never refused"
    );
    let https = view("HTTPS", "crm.example.com:443", "/", &[]);
    let t = Target::of(&https, &RequestOptions::default()).unwrap();
    assert_eq!(
        (t.scheme.as_ref(), t.port, t.effective_port()),
        ("https", None, Some(443))
    );
    assert_eq!(
        target("[::1]:8080", "/").unwrap(),
        ("[::1]".into(), Some(8080), "/".into())
    );
    assert_eq!(target("10.0.0.1", "/").unwrap().0, "10.0.0.1");
}

#[test]
fn hosts_without_a_single_meaning_are_refused() {
    for host in [
        "",
        ".",
        "a..b",
        "user@crm.example.com",
        "crm.example.com:http",
        "crm.example.com:99999",
        "crm example.com",
        "crm.example.com%2e",
        "[::1",
        "[zz]",
        "[::1]x",
        "ex\u{e4}mple.com",
    ] {
        assert!(
            matches!(target(host, "/"), Err(RequestError::InvalidHost(_))),
            "{host:?}"
        );
    }
}

#[test]
fn paths_fold_into_one_spelling() {
    for (raw, canonical) in [
        ("/", "/"),
        ("/api/items", "/api/items"),
        ("//api//items", "/api/items"),
        ("/api/./items", "/api/items"),
        ("/api/x/../items", "/api/items"),
        ("/api/items/", "/api/items"),
        ("/api/items//", "/api/items"),
        ("/../api/items", "/api/items"),
        ("/%61pi/it%65ms", "/api/items"),
        ("/a%2eb", "/a.b"),
        ("/a b", "/a%20b"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/café", "/caf%C3%A9"),
        ("/a/%7euser", "/a/~user"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/repos/1%3Aarchive", "/repos/1:archive"),
        ("/a%40b%21%24%26%27%28%29%2A%2B%2C%3D", "/a@b!$&'()*+,="),
        ("/a?x=/etc/../y", "/a"),
    ] {
        assert_eq!(path_of(raw).unwrap(), canonical, "{raw}");
    }
}

#[test]
fn the_fast_path_borrows_an_already_canonical_path() {
    let v = view("http", "127.0.0.1:10000", "/a/b%20c/d?x=1&x=2&y=z", &[]);
    let t = Target::of(&v, &RequestOptions::default()).unwrap();
    assert!(matches!(t.path, Cow::Borrowed("/a/b%20c/d")));
    assert!(matches!(t.host, Cow::Borrowed("127.0.0.1")));
    assert_eq!(t.port, Some(10000));
    assert_eq!(t.segments(), vec!["a", "b c", "d"]);
}

#[test]
fn paths_with_more_than_one_reading_are_refused() {
    for path in [
        "/api%2Fadmin",
        "/api%2fadmin",
        "/api%5Cadmin",
        "/public/%2e%2e/admin",
        "/public/%2E./admin",
        "/public/.%2e/admin",
        "/public/%2e/admin",
        "/admin;jsessionid=1",
        "/admin;/x",
        "/a\\..\\admin",
        "/a\u{0}b",
        "/a%00b",
        "/a#/../admin",
        "/public/%252e%252e/admin",
        "/a%252Fb",
        "/public/%25%32%65%25%32%65/admin",
        "/a%252%65",
        "/a%25%32%46b",
        "/a%25%25%32%65",
        "/admin%3B/x",
        "/admin%3bjsessionid=1",
    ] {
        assert!(ambiguous(path), "{path:?}");
    }
    // A percent sign not followed by an escape is just a percent sign.
    assert_eq!(path_of("/100%25").unwrap(), "/100%25");
    assert_eq!(path_of("/a%25zz").unwrap(), "/a%25zz");
    for path in ["/a%zz", "/a%4", "*", "", "http://x/y", "/a%FF"] {
        assert!(
            matches!(path_of(path), Err(RequestError::InvalidPath(_))),
            "{path:?}"
        );
    }
}

#[test]
fn each_refusal_class_with_a_switch_can_be_allowed() {
    let allow = RequestOptions {
        allow: PathAllowances {
            encoded_slashes: true,
            semicolons: true,
        },
        ..Default::default()
    };
    let v = view(
        "http",
        "gitlab.example",
        "/api/v4/projects/group%2fproject/issues;x",
        &[],
    );
    let t = Target::of(&v, &allow).unwrap();
    assert_eq!(t.path, "/api/v4/projects/group%2Fproject/issues;x");
    let encoded = view("http", "g", "/a%3Bx", &[]);
    assert_eq!(Target::of(&encoded, &allow).unwrap().path, "/a;x");
    assert_eq!(
        t.segments(),
        vec!["api", "v4", "projects", "group/project", "issues;x"]
    );
    let v = view("http", "g", "/a/%2e%2e/b", &[]);
    assert!(matches!(
        Target::of(&v, &allow),
        Err(RequestError::AmbiguousPath(_))
    ));
}

#[test]
fn limits_have_their_own_reasons() {
    let options = RequestOptions {
        limits: RequestLimits {
            max_path_bytes: 16,
            max_header_bytes: 64,
        },
        ..Default::default()
    };
    let long = view("http", "h", "/aaaaaaaaaaaaaaaaaaaa", &[]);
    assert_eq!(
        Target::of(&long, &options).unwrap_err().reason(),
        DenyReason::RequestPathTooLong
    );
    let big = "x".repeat(80);
    let heavy = view("http", "h", "/", &[("x-big", &big)]);
    assert_eq!(
        Target::of(&heavy, &options).unwrap_err().reason(),
        DenyReason::RequestHeadersTooLarge
    );
}

#[test]
fn a_second_host_in_a_header_is_refused() {
    for (name, value) in [
        ("x-forwarded-host", "admin.example"),
        ("x_forwarded_host", "admin.example"),
        ("forwarded", "for=1.2.3.4;host=admin.example"),
    ] {
        let v = view("http", "h", "/", &[(name, value)]);
        assert!(
            matches!(
                Target::of(&v, &RequestOptions::default()),
                Err(RequestError::InvalidHost(_))
            ),
            "{name}"
        );
    }
    let v = view("http", "h", "/", &[("forwarded", "for=1.2.3.4")]);
    assert!(Target::of(&v, &RequestOptions::default()).is_ok());
}

#[test]
fn path_override_headers_are_refused() {
    for name in ["x-original-url", "x-rewrite-url", "x_original_url"] {
        let v = view("http", "h", "/public", &[(name, "/admin")]);
        assert!(matches!(
            Target::of(&v, &RequestOptions::default()),
            Err(RequestError::AmbiguousPath(_))
        ));
    }
}

#[test]
fn urls_read_the_same_way_for_dpop() {
    let t = Target::of_url(
        "HTTPS://Tools.Example:443//mcp/./x/?q=1#f",
        PathAllowances::default(),
    )
    .unwrap();
    assert_eq!(
        (t.scheme.as_ref(), t.host.as_ref(), t.port, t.path.as_ref()),
        ("https", "tools.example", None, "/mcp/x")
    );
    assert!(Target::of_url("tools.example/mcp", PathAllowances::default()).is_err());
}

#[test]
fn denials_quote_request_text_escaped() {
    let err = path_of("/a\u{0}\n").unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
}

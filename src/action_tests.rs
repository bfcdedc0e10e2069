use super::*;
use crate::glob::RouteMatcher;
use crate::policy::input::{InputLimits, parse};
use crate::request::RequestOptions;

fn view(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView::for_test(method, "https", host, path, headers)
}

/// `view` with a JSON body.
fn json(method: &str, host: &str, path: &str, body: &str) -> RequestView {
    let mut v = view(method, host, path, &[("content-type", "application/json")]);
    v.body = crate::view::Body::Text(body.into());
    v
}

/// (what, headers, path, body)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);

fn config() -> Actions {
    let raw: ActionsConfig = yaml_serde::from_str(
        r#"
rules:
  - { name: exports, hosts: ["*.crm.example"], paths: ["/v1/exports/**"], methods: [POST], class: read, tags: [export] }
  - { name: admin, paths: ["/admin/**"], class: destructive, tags: [privilege] }
  - { name: cache, paths: ["/cache/**"], methods: [PURGE], class: write }
  - { name: items, hosts: ["api.example:8443"], paths: ["/items/*"], methods: [DELETE], class: write }
  - { name: mcp-admin, hosts: ["admin-mcp.example"], paths: ["/mcp"], class: destructive, override_tools: true }
  - { name: mcp-catchall, paths: ["/mcp"], class: read }
  - { name: repo-delete, paths: ["/api/repos/*/delete"], methods: [POST], class: destructive }
  - { name: billing, routes: [billing], class: write, tags: [export] }
  - { name: uploads, paths: ["/api/uploads/**"], methods: [POST], class: write, allow_opaque_body: true }
tools:
  search: { class: read }
  delete_repo: { class: destructive, tags: [privilege] }
hosts:
  - { name: crm, hosts: ["crm.example.com"] }
"#,
    )
    .unwrap();
    raw.compile().unwrap()
}

/// The pipeline's steps up to classification, with `classifier` and the default MCP
/// route (`/mcp/**`).
fn classify_with(classifier: &Classifier, v: &RequestView) -> (Action, Option<ToolCall>) {
    let (target, notes) = Target::read(v, &RequestOptions::default()).unwrap();
    let parsed = parse(v, &InputLimits::default()).unwrap();
    let mcp_route = RouteMatcher::compile(&[], &["/mcp/**".to_owned()], &[]).unwrap();
    let on_mcp_route = mcp_route.matches_location(&target);
    let message = crate::mcp::read(
        v,
        crate::mcp::Body {
            parsed: &parsed.body,
            truncated: parsed.truncated,
        },
        on_mcp_route,
        notes,
    )
    .unwrap();
    classifier.classify(&Request {
        view: v,
        target: &target,
        body: &parsed.body,
        truncated: parsed.truncated,
        mcp: message.as_ref(),
        on_mcp_route,
        notes,
    })
}

fn classify(v: &RequestView) -> (Action, Option<ToolCall>) {
    classify_with(&Classifier::new(&config(), None), v)
}

fn class(v: &RequestView) -> ActionClass {
    classify(v).0.class
}

fn call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"q":"x"}}}}}}"#
    )
}

fn rpc(method: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"n","uri":"file:///a"}}}}"#
    )
}

#[test]
fn http_methods_give_the_default_class() {
    for (method, class) in [
        ("GET", ActionClass::Read),
        ("HEAD", ActionClass::Read),
        ("OPTIONS", ActionClass::Read),
        ("POST", ActionClass::Write),
        ("PUT", ActionClass::Write),
        ("PATCH", ActionClass::Write),
        ("DELETE", ActionClass::Destructive),
        ("MOVE", ActionClass::Destructive),
        ("PURGE", ActionClass::Destructive),
        ("UNLINK", ActionClass::Destructive),
        ("CONNECT", ActionClass::Destructive),
        ("get", ActionClass::Destructive),
    ] {
        let (action, tool) = classify(&view(method, "api.example", "/x", &[]));
        assert_eq!(
            (action.class, action.source),
            (class, ActionSource::Method),
            "{method}"
        );
        assert!(tool.is_none());
    }
}

#[test]
fn operator_rules_come_first_and_name_the_resource() {
    let (action, _) = classify(&view(
        "POST",
        "eu.crm.example",
        "/v1/exports/2026/q3?all=1",
        &[],
    ));
    assert_eq!(action.class, ActionClass::Read);
    assert_eq!(action.tags, vec!["export"]);
    assert_eq!(action.source, ActionSource::Rule("exports".into()));
    assert_eq!(
        action.resource,
        Resource {
            kind: ResourceKind::Rule,
            name: "exports".into()
        }
    );
    let (action, _) = classify(&view("GET", "x", "/admin/users", &[]));
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Destructive, vec!["privilege".to_owned()])
    );
    // `*` stays within one host label.
    let (action, _) = classify(&view("POST", "a.eu.crm.example", "/v1/exports/1", &[]));
    assert_eq!(action.source, ActionSource::Method);
}

#[test]
fn rules_match_the_canonical_target_whatever_its_spelling() {
    for (host, path) in [
        ("EU.CRM.example", "/v1/exports/1"),
        ("eu.crm.example.", "//v1//exports/1/"),
        ("eu.crm.example:443", "/v1/./x/../exports/1"),
        ("eu.crm.example:9999", "/v1/%65xports/1"),
    ] {
        let (action, _) = classify(&view("POST", host, path, &[]));
        assert_eq!(
            action.source,
            ActionSource::Rule("exports".into()),
            "{host} {path}"
        );
    }
    // A rule written with a port matches that port only.
    assert_eq!(
        class(&view("DELETE", "api.example:8443", "/items/7", &[])),
        ActionClass::Write
    );
    assert_eq!(
        class(&view("DELETE", "api.example", "/items/7", &[])),
        ActionClass::Destructive
    );
}

#[test]
fn unusual_methods_are_destructive_unless_a_rule_names_them() {
    assert_eq!(
        class(&view("PURGE", "x", "/cache/a", &[])),
        ActionClass::Write
    );
    // The admin rule matches any of the usual methods, and names no PURGE.
    assert_eq!(
        class(&view("GET", "x", "/admin/a", &[])),
        ActionClass::Destructive
    );
    let (action, _) = classify(&view("MOVE", "x", "/v1/exports/1", &[]));
    assert_eq!(action.class, ActionClass::Destructive);
}

#[test]
fn method_overrides_raise_the_class_and_are_tagged() {
    let cases: [Case<'_>; 6] = [
        (
            "header",
            &[("x-http-method-override", "DELETE")],
            "/v1/repos/1",
            "",
        ),
        (
            "x-http-method",
            &[("x-http-method", "delete")],
            "/v1/repos/1",
            "",
        ),
        (
            "x-method-override",
            &[("x-method-override", "PUT, DELETE")],
            "/v1/repos/1",
            "",
        ),
        ("query", &[], "/v1/repos/1?_method=DELETE", ""),
        (
            "form",
            &[("content-type", "application/x-www-form-urlencoded")],
            "/v1/repos/1",
            "a=1&_method=delete",
        ),
        (
            "json",
            &[("content-type", "application/json")],
            "/v1/repos/1",
            r#"{"_method":"DELETE"}"#,
        ),
    ];
    for (name, headers, path, body) in cases {
        let mut v = view("POST", "api.example", path, headers);
        if !body.is_empty() {
            v.body = crate::view::Body::Text(body.into());
        }
        let (action, _) = classify(&v);
        assert_eq!(action.class, ActionClass::Destructive, "{name}");
        assert!(action.tags.contains(&METHOD_OVERRIDE.to_owned()), "{name}");
    }
    // A body leash cannot parse that mentions the parameter names a method it cannot know.
    let mut multipart = view(
        "POST",
        "api.example",
        "/v1/repos/1",
        &[("content-type", "multipart/form-data; boundary=x")],
    );
    multipart.body = crate::view::Body::Text(
        "--x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--x--".into(),
    );
    assert_eq!(class(&multipart), ActionClass::Destructive);
    // Overriding to the same method, or to a read, changes nothing but the tag.
    let (action, _) = classify(&view("POST", "api.example", "/x?_method=GET", &[]));
    assert_eq!(action.class, ActionClass::Write);
    // A rule for the overriding method applies too.
    let (action, _) = classify(&view(
        "GET",
        "eu.crm.example",
        "/v1/exports/1",
        &[("x-http-method-override", "POST")],
    ));
    assert_eq!(action.class, ActionClass::Read);
    assert_eq!(action.tags, vec!["export", METHOD_OVERRIDE]);
}

#[test]
fn mcp_tool_calls_are_looked_up_in_the_tool_table() {
    let (action, tool) = classify(&json("POST", "mcp.example", "/mcp", &call("search")));
    assert_eq!(
        (action.class, action.source),
        (ActionClass::Read, ActionSource::Tool)
    );
    assert_eq!(
        action.resource,
        Resource {
            kind: ResourceKind::Tool,
            name: "search".into()
        }
    );
    let tool = tool.unwrap();
    assert_eq!((tool.name.as_str(), tool.known), ("search", true));
    assert_eq!(
        serde_json::to_value(&tool.arguments).unwrap(),
        serde_json::json!({"q": "x"})
    );
    let (action, _) = classify(&json("POST", "mcp.example", "/mcp", &call("delete_repo")));
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Destructive, vec!["privilege".to_owned()])
    );
}

#[test]
fn unknown_tools_are_destructive_whatever_the_server_claims() {
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"harmless","arguments":{},
        "annotations":{"readOnlyHint":true,"destructiveHint":false}}}"#;
    let (action, tool) = classify(&json("POST", "mcp.example", "/mcp", body));
    assert_eq!(
        (action.class, action.source),
        (ActionClass::Destructive, ActionSource::UnknownTool)
    );
    assert!(!tool.unwrap().known);
}

#[test]
fn on_mcp_requests_the_tables_decide_unless_a_rule_overrides_them() {
    // mcp-catchall names /mcp as read, but does not say it overrides the tables.
    assert_eq!(
        class(&json("POST", "mcp.example", "/mcp", &call("delete_repo"))),
        ActionClass::Destructive
    );
    let (action, _) = classify(&json("POST", "admin-mcp.example", "/mcp", &call("search")));
    assert_eq!(
        (action.class, action.source),
        (
            ActionClass::Destructive,
            ActionSource::Rule("mcp-admin".into())
        )
    );
    assert_eq!(
        action.resource.kind,
        ResourceKind::Tool,
        "the tool is still what is acted on"
    );
}

#[test]
fn every_mcp_method_has_a_class() {
    for (method, class) in [
        ("initialize", ActionClass::Read),
        ("ping", ActionClass::Read),
        ("tools/list", ActionClass::Read),
        ("resources/list", ActionClass::Read),
        ("resources/templates/list", ActionClass::Read),
        ("prompts/list", ActionClass::Read),
        ("notifications/initialized", ActionClass::Read),
        ("resources/read", ActionClass::Read),
        ("resources/subscribe", ActionClass::Read),
        ("prompts/get", ActionClass::Read),
        ("completion/complete", ActionClass::Read),
        ("tasks/get", ActionClass::Read),
        ("tasks/result", ActionClass::Read),
        ("tasks/list", ActionClass::Read),
        ("logging/setLevel", ActionClass::Write),
        ("tasks/cancel", ActionClass::Write),
        ("sampling/createMessage", ActionClass::Destructive),
        ("tools/execute", ActionClass::Destructive),
    ] {
        let (action, _) = classify(&json("POST", "mcp.example", "/mcp", &rpc(method)));
        assert_eq!(
            (action.class, &action.source),
            (class, &ActionSource::Mcp),
            "{method}"
        );
    }
    let (action, _) = classify(&json("POST", "mcp.example", "/mcp", &rpc("resources/read")));
    assert_eq!(
        action.resource,
        Resource {
            kind: ResourceKind::Resource,
            name: "file:///a".into()
        }
    );
    let (action, _) = classify(&json("POST", "mcp.example", "/mcp", &rpc("prompts/get")));
    assert_eq!(action.resource.kind, ResourceKind::Prompt);
}

#[test]
fn a_host_is_named_by_envoy_then_the_operator_and_otherwise_by_nobody() {
    let (action, _) = classify(&view("GET", "create_ticket", "/x", &[]));
    assert_eq!(
        action.resource,
        Resource {
            kind: ResourceKind::Host,
            name: "*".into()
        },
        "a Host header never names a tool"
    );
    let (action, _) = classify(&view("GET", "CRM.example.com.:443", "/x", &[]));
    assert_eq!(action.resource.name.as_ref(), "crm");
    let mut routed = view("GET", "crm.example.com", "/x", &[]);
    routed.route_resource = Some("billing".into());
    assert_eq!(classify(&routed).0.resource.name.as_ref(), "billing");
}

#[test]
fn bodies_leash_cannot_read_are_tagged_opaque_unless_a_rule_names_the_route() {
    let mut binary = view(
        "POST",
        "api.example",
        "/upload",
        &[("content-type", "application/octet-stream")],
    );
    binary.body = crate::view::Body::Bytes(vec![0xff, 0x00]);
    let (action, tool) = classify(&binary);
    assert!(tool.is_none());
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Write, vec![OPAQUE_BODY.to_owned()])
    );
    // A JSON array that is not JSON-RPC, and no body at all, are read as they are.
    let (action, _) = classify(&json("POST", "api.example", "/items", "[1, 2]"));
    assert!(action.tags.is_empty());
    let (action, _) = classify(&view("POST", "api.example", "/items", &[]));
    assert!(action.tags.is_empty());
}

#[test]
fn policy_data_extends_the_configuration() {
    let data = Value::from_json_str(
        r#"{"leash":{"actions":{"tools":{"search":{"class":"write","tags":["export"]},"new_tool":{"class":"read"}}}}}"#,
    )
    .unwrap();
    let from_data = from_data(&data).unwrap();
    let classifier = Classifier::new(&config(), from_data.as_ref());
    let (action, _) = classify_with(&classifier, &json("POST", "m", "/mcp", &call("search")));
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Write, vec!["export".to_owned()])
    );
    for bad in [
        r#"{"leash":{"actions":{"tools":{"x":{"class":"sometimes"}}}}}"#,
        r#"{"leash":{"actions":{"rules":[{"name":"r","paths":["/a/../b"],"class":"read"}]}}}"#,
    ] {
        let err = super::from_data(&Value::from_json_str(bad).unwrap()).unwrap_err();
        assert!(err.contains("data.leash.actions"), "{err}");
    }
}

#[test]
fn off_an_mcp_route_both_readings_count_and_the_stricter_wins() {
    // A REST server ignores MCP headers: this DELETE deletes.
    let delete = view(
        "DELETE",
        "api.example",
        "/api/repos/1",
        &[("mcp-method", "x"), ("mcp-session-id", "s")],
    );
    assert_eq!(class(&delete), ActionClass::Destructive);
    // A JSON-RPC ping body does not make a destructive route a read.
    let (action, _) = classify(&json(
        "POST",
        "api.example",
        "/api/repos/1/delete",
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    ));
    assert_eq!(
        (action.class, action.source),
        (
            ActionClass::Destructive,
            ActionSource::Rule("repo-delete".into())
        )
    );
    // A tool call off the route is still read as the tool, but the resource stays the
    // HTTP one: a scope for the tool must not reach whatever the REST server does.
    let (action, tool) = classify(&json("POST", "api.example", "/messages", &call("search")));
    assert_eq!(tool.unwrap().name, "search");
    assert_eq!(
        (action.class, action.resource.kind),
        (ActionClass::Write, ResourceKind::Host)
    );
}

#[test]
fn spellings_a_lenient_server_routes_the_same_only_raise_the_class() {
    for path in [
        "/API/repos/1/delete",
        "/api/repos/1/Delete",
        "/api/repos/1/delete.json",
    ] {
        let (action, _) = classify(&view("POST", "api.example", path, &[]));
        assert_eq!(action.class, ActionClass::Destructive, "{path}");
    }
    // A read rule matched loosely does not lower a write.
    let (action, _) = classify(&view("POST", "EU.crm.example", "/V1/EXPORTS/1", &[]));
    assert_eq!(action.class, ActionClass::Write);
    assert_eq!(action.tags, vec!["export"]);
}

#[test]
fn rules_can_name_the_upstream_envoy_routed_to() {
    let mut routed = view("GET", "anything.example", "/x", &[]);
    routed.route_resource = Some("billing".into());
    let (action, _) = classify(&routed);
    assert_eq!(action.source, ActionSource::Rule("billing".into()));
    assert_eq!(action.tags, vec!["export"]);
    // The agent cannot reach the rule by Host alone.
    assert_eq!(
        classify(&view("GET", "billing", "/x", &[])).0.source,
        ActionSource::Method
    );
}

#[test]
fn bodies_leash_cannot_read_are_tagged_on_every_class_and_rule_unless_it_allows_them() {
    let mut weird = json("GET", "api.example", "/api/run", r#"{"a":1e400}"#);
    assert!(classify(&weird).0.tags.contains(&OPAQUE_BODY.to_owned()));
    weird.method = "POST".into();
    weird.path = "/api/repos/1/delete".into();
    assert!(classify(&weird).0.tags.contains(&OPAQUE_BODY.to_owned()));
    // JSON sent as a form is read by servers that ignore the media type.
    let mut form = view(
        "POST",
        "api.example",
        "/api/items",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    form.body = crate::view::Body::Text(r#"{"name":"x"}"#.into());
    assert!(classify(&form).0.tags.contains(&OPAQUE_BODY.to_owned()));
    let mut upload = view(
        "POST",
        "api.example",
        "/api/uploads/a.bin",
        &[("content-type", "application/octet-stream")],
    );
    upload.body = crate::view::Body::Bytes(vec![0xff, 0x00]);
    let (action, _) = classify(&upload);
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Write, Vec::<String>::new())
    );
}

#[test]
fn a_request_naming_many_methods_is_bounded_and_unknowable() {
    let many: Vec<String> = (0..20_000).map(|i| format!("M{i}")).collect();
    let mut v = view(
        "POST",
        "api.example",
        "/api/items",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    v.body = crate::view::Body::Text(format!("_method={}", many.join(",")));
    assert_eq!(class(&v), ActionClass::Destructive);
}

#[test]
fn override_parameters_are_read_as_php_reads_their_names() {
    for (path, body) in [
        ("/api/items/1", ".method=DELETE"),
        ("/api/items/1", " _method=DELETE"),
        ("/api/items/1", "_METHOD=delete"),
        ("/api/items/1", "_method%00x=DELETE"),
        ("/api/items/1?.method=DELETE", ""),
        ("/api/items/1?x=1;_method=DELETE", ""),
        ("/api/items/1?%5Fmethod=DELETE", ""),
        ("/api/items/1?_%6Dethod=DELETE", ""),
        // qs (Express, Koa) and Rack (Rails) drop brackets around a name.
        ("/api/items/1", "[_method]=DELETE"),
        ("/api/items/1", "_method]=DELETE"),
        ("/api/items/1", "]]_method=DELETE"),
        ("/api/items/1?%5B_method%5D=DELETE", ""),
    ] {
        let mut v = view(
            "POST",
            "api.example",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        v.body = crate::view::Body::Text(body.into());
        let (action, _) = classify(&v);
        assert_eq!(action.class, ActionClass::Destructive, "{path} {body}");
        assert!(action.tags.contains(&METHOD_OVERRIDE.to_owned()));
    }
    let underscored = view(
        "POST",
        "api.example",
        "/api/items/1",
        &[("x_http_method_override", "DELETE")],
    );
    assert_eq!(class(&underscored), ActionClass::Destructive);
    // A parameter that merely ends in "method" is not an override.
    let mut plain = view(
        "POST",
        "api.example",
        "/api/items",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    plain.body = crate::view::Body::Text("payment_method=card&method=x".into());
    assert_eq!(class(&plain), ActionClass::Write);
}

#[test]
fn bodies_are_read_by_their_media_type_not_a_parameter_naming_one() {
    let cases: [Case<'_>; 10] = [
        // The plugin reads this as a form (its match is case-sensitive); servers read
        // JSON, and so does leash.
        (
            "JSON type in capitals naming the form type",
            &[(
                "content-type",
                "Application/JSON; x=application/x-www-form-urlencoded",
            )],
            "/v1/repos/1",
            r#"{"_method":"DELETE"}"#,
        ),
        // Multipart parsers decode MIME encoded-words in field names: `_method`.
        (
            "multipart with an encoded-word name",
            &[("content-type", "multipart/form-data; boundary=x")],
            "/api/uploads/x",
            "--x\r\nContent-Disposition: form-data; name=\"=?UTF-8?B?X21ldGhvZA==?=\"\r\n\r\nDELETE\r\n--x--",
        ),
        // A compressed body hides every name, even on a route that allows opaque bodies.
        (
            "gzip upload",
            &[
                ("content-type", "application/octet-stream"),
                ("content-encoding", "gzip"),
            ],
            "/api/uploads/x",
            "\u{1f}\u{8b}...",
        ),
        // A parameter naming the form type does not make multipart a form.
        (
            "multipart naming a form",
            &[(
                "content-type",
                "multipart/form-data; boundary=x; a=application/x-www-form-urlencoded",
            )],
            "/v1/repos/1",
            "--x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--x--",
        ),
        // A bad escape after the name: PHP keeps the name, and the body is read as written.
        (
            "form name with a bad escape",
            &[("content-type", "application/x-www-form-urlencoded")],
            "/v1/repos/1",
            "_method%00%zz=DELETE",
        ),
        (
            "form array",
            &[("content-type", "application/x-www-form-urlencoded")],
            "/v1/repos/1",
            "_method[]=DELETE",
        ),
        (
            "deflated form",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-encoding", "deflate"),
            ],
            "/v1/repos/1",
            "x_method=DELETE",
        ),
        (
            "escaped name in an opaque body",
            &[("content-type", "text/plain")],
            "/v1/repos/1",
            "%5Fmethod=DELETE",
        ),
        (
            "two spellings of one JSON key",
            &[("content-type", "application/json")],
            "/v1/repos/1",
            r#"{"_method":"DELETE","\u005fmethod":"GET"}"#,
        ),
        (
            "a structured JSON type",
            &[("content-type", "Application/Merge-Patch+JSON")],
            "/v1/repos/1",
            r#"{"_method":"DELETE"}"#,
        ),
    ];
    for (name, headers, path, body) in cases {
        let mut v = view("POST", "api.example", path, headers);
        v.body = crate::view::Body::Text(body.into());
        assert_eq!(class(&v), ActionClass::Destructive, "{name}");
    }
}

#[test]
fn json_under_a_json_type_is_readable_and_json_in_disguise_is_not() {
    let tags = |content_type: &str, body: &str| {
        let mut v = view(
            "POST",
            "api.example",
            "/v1/items",
            &[("content-type", content_type)],
        );
        v.body = crate::view::Body::Text(body.into());
        classify(&v).0.tags
    };
    let opaque = vec![OPAQUE_BODY.to_owned()];
    assert!(tags("application/json", r#"{"a":1}"#).is_empty());
    assert!(tags("APPLICATION/JSON; charset=utf-8", r#"{"a":1}"#).is_empty());
    assert!(tags("application/vnd.api+json", r#"{"a":1}"#).is_empty());
    assert_eq!(
        tags("application/x-www-form-urlencoded", "\u{feff}{\"a\":1}"),
        opaque
    );
    assert_eq!(tags("application/json, text/plain", r#"{"a":1}"#), opaque);
}

#[test]
fn a_rest_body_naming_a_non_mcp_method_is_not_mcp() {
    let v = json(
        "POST",
        "auth.example",
        "/oauth/exchange",
        r#"{"method":"oauth/token","code":"x"}"#,
    );
    let (action, tool) = classify(&v);
    assert!(tool.is_none());
    assert_eq!(
        (action.class, action.resource.kind),
        (ActionClass::Write, ResourceKind::Host)
    );
}

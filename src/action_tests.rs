use std::collections::HashMap;

use super::*;

fn view(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView {
        attributes: Value::new_object(),
        method: method.into(),
        scheme: "https".into(),
        host: host.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        body: crate::view::Body::None,
        source_principal: String::new(),
        source_certificate: String::new(),
    }
}

fn body(json: &str) -> Value {
    Value::from_json_str(json).unwrap()
}

fn config() -> ActionsConfig {
    yaml_serde::from_str(
        r#"
rules:
  - { name: exports, hosts: ["*.crm.example"], paths: ["/v1/exports/**"], methods: [POST], class: read, tags: [export] }
  - { name: admin, paths: ["/admin/**"], class: destructive, tags: [privilege] }
tools:
  search: { class: read }
  delete_repo: { class: destructive, tags: [privilege] }
"#,
    )
    .unwrap()
}

fn classify(view: &RequestView, body: &Value) -> (Action, Option<ToolCall>) {
    Classifier::new(&config(), None)
        .classify(view, body)
        .unwrap()
}

const CALL_SEARCH: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#;

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
    ] {
        let (action, tool) = classify(&view(method, "api.example", "/x", &[]), &Value::Null);
        assert_eq!(
            (action.class, action.source),
            (class, ActionSource::Method),
            "{method}"
        );
        assert!(tool.is_none());
    }
}

#[test]
fn operator_rules_come_first() {
    let (action, _) = classify(
        &view("POST", "eu.crm.example", "/v1/exports/2026/q3?all=1", &[]),
        &Value::Null,
    );
    assert_eq!(action.class, ActionClass::Read);
    assert_eq!(action.tags, vec!["export"]);
    assert_eq!(action.source, ActionSource::Rule("exports".into()));
    let (action, _) = classify(&view("GET", "x", "/admin/users", &[]), &Value::Null);
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Destructive, vec!["privilege".to_owned()])
    );
    // `*` stays within one host label.
    let (action, _) = classify(
        &view("POST", "a.eu.crm.example", "/v1/exports/1", &[]),
        &Value::Null,
    );
    assert_eq!(action.source, ActionSource::Method);
}

#[test]
fn mcp_tool_calls_are_looked_up_in_the_tool_table() {
    let (action, tool) = classify(
        &view("POST", "mcp.example", "/mcp", &[]),
        &body(CALL_SEARCH),
    );
    assert_eq!(
        (action.class, action.source),
        (ActionClass::Read, ActionSource::Tool)
    );
    let tool = tool.unwrap();
    assert_eq!((tool.name.as_str(), tool.known), ("search", true));
    assert_eq!(
        serde_json::to_value(&tool.arguments).unwrap(),
        serde_json::json!({"q": "x"})
    );

    let delete = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#;
    let (action, _) = classify(&view("POST", "mcp.example", "/mcp", &[]), &body(delete));
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Destructive, vec!["privilege".to_owned()])
    );
}

#[test]
fn bodies_leash_cannot_read_are_tagged_opaque_unless_a_rule_names_the_route() {
    let mut cut = view("POST", "mcp.example", "/mcp", &[]);
    cut.body = crate::view::Body::Text(r#"{"jsonrpc":"2.0","method":"tools/call","par"#.into());
    let (action, tool) = classify(&cut, &Value::Null);
    assert!(tool.is_none());
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Write, vec![OPAQUE_BODY.to_owned()])
    );

    let batch = format!("[{CALL_SEARCH}, {CALL_SEARCH}]");
    let (action, tool) = classify(&view("POST", "mcp.example", "/mcp", &[]), &body(&batch));
    assert!(tool.is_none());
    assert_eq!(action.tags, vec![OPAQUE_BODY.to_owned()]);

    // A JSON array that is not JSON-RPC, and no body at all, are read as they are.
    let (action, _) = classify(&view("POST", "api.example", "/items", &[]), &body("[1, 2]"));
    assert!(action.tags.is_empty());
    let (action, _) = classify(&view("POST", "api.example", "/items", &[]), &Value::Null);
    assert!(action.tags.is_empty());

    // The operator's rule says what the route does, whatever its body.
    let mut upload = view("POST", "x", "/admin/upload", &[]);
    upload.body = crate::view::Body::Bytes(vec![0xff, 0x00]);
    let (action, _) = classify(&upload, &Value::Null);
    assert_eq!(action.tags, vec!["privilege".to_owned()]);
}

#[test]
fn unknown_tools_are_destructive_whatever_the_server_claims() {
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"harmless","arguments":{},
        "annotations":{"readOnlyHint":true,"destructiveHint":false}}}"#;
    let (action, tool) = classify(&view("POST", "mcp.example", "/mcp", &[]), &body(call));
    assert_eq!(
        (action.class, action.source),
        (ActionClass::Destructive, ActionSource::UnknownTool)
    );
    assert!(!tool.unwrap().known);
}

#[test]
fn mcp_headers_must_agree_with_the_body() {
    let classifier = Classifier::new(&config(), None);
    let ok = view(
        "POST",
        "mcp.example",
        "/mcp",
        &[("mcp-method", "tools/call"), ("mcp-name", "search")],
    );
    assert!(classifier.classify(&ok, &body(CALL_SEARCH)).is_ok());
    for headers in [
        [("mcp-method", "tools/call"), ("mcp-name", "delete_repo")],
        [("mcp-method", "tools/list"), ("mcp-name", "search")],
    ] {
        let v = view("POST", "mcp.example", "/mcp", &headers);
        assert!(
            classifier.classify(&v, &body(CALL_SEARCH)).is_err(),
            "{headers:?}"
        );
    }
    // A header naming a call whose body leash cannot read is not trusted either.
    let v = view(
        "POST",
        "mcp.example",
        "/mcp",
        &[("mcp-method", "tools/call")],
    );
    assert!(classifier.classify(&v, &Value::Null).is_err());
}

#[test]
fn policy_data_extends_the_configuration() {
    let data = body(
        r#"{"leash":{"actions":{"tools":{"search":{"class":"write","tags":["export"]},"new_tool":{"class":"read"}}}}}"#,
    );
    let from_data = from_data(&data).unwrap();
    let classifier = Classifier::new(&config(), from_data.as_ref());
    let (action, _) = classifier
        .classify(&view("POST", "m", "/mcp", &[]), &body(CALL_SEARCH))
        .unwrap();
    assert_eq!(
        (action.class, action.tags),
        (ActionClass::Write, vec!["export".to_owned()])
    );
    assert!(
        from_data_err(r#"{"leash":{"actions":{"tools":{"x":{"class":"sometimes"}}}}}"#)
            .contains("data.leash.actions")
    );
}

fn from_data_err(json: &str) -> String {
    from_data(&body(json)).unwrap_err()
}

use std::collections::HashMap;

use super::*;
use crate::policy::input::{InputLimits, parse};

fn view(method: &str, headers: &[(&str, &str)], body: &str) -> RequestView {
    let mut headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if !body.is_empty() {
        headers
            .entry("content-length".into())
            .or_insert_with(|| body.len().to_string());
    }
    let mut v = RequestView::for_test(method, "http", "tools.example", "/mcp", &[]);
    v.headers = headers;
    v.body = crate::view::Body::Text(body.into());
    v
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn read_as(v: &RequestView, on_route: bool) -> Result<Option<Message>, McpError> {
    let parsed = parse(v, &InputLimits::default()).unwrap();
    let (_, notes) = crate::request::Target::read(v, &Default::default()).unwrap();
    read(
        v,
        Body {
            parsed: &parsed.body,
            truncated: parsed.truncated,
        },
        on_route,
        notes,
    )
}

fn post(body: &str) -> Result<Option<Message>, McpError> {
    read_as(&view("POST", &[JSON], body), false)
}

fn invalid(result: Result<Option<Message>, McpError>) -> bool {
    matches!(result, Err(McpError::Invalid(_)))
}

fn tool_of(result: Result<Option<Message>, McpError>) -> (String, Value) {
    match result {
        Ok(Some(Message::Call {
            named: Some(Named::Tool(name)),
            arguments,
            ..
        })) => (name, arguments),
        other => panic!("not a tool call: {other:?}"),
    }
}

#[test]
fn a_tool_call_names_its_tool_and_arguments() {
    let (name, arguments) = tool_of(post(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
    ));
    assert_eq!(name, "search");
    assert_eq!(arguments, Value::from_json_str(r#"{"q":"x"}"#).unwrap());
}

#[test]
fn requests_that_are_not_mcp_are_left_alone() {
    for body in [
        r#"{"method":"card","id":7,"amount":3}"#,
        r#"{"name":"x"}"#,
        "plain text",
        "",
    ] {
        assert!(matches!(post(body), Ok(None)), "{body}");
    }
}

#[test]
fn an_mcp_request_is_known_by_header_route_or_body() {
    let bare = r#"{"method":"tools/call","params":{"name":"delete_repository"}}"#;
    assert!(
        invalid(post(bare)),
        "a tools/call without jsonrpc is still MCP"
    );
    let v = view("POST", &[("content-type", "text/plain")], "hello");
    assert!(invalid(read_as(&v, true)), "on an MCP route");
    let v = view("POST", &[("mcp-method", "tools/list")], "");
    assert!(invalid(read_as(&v, false)), "with an Mcp-Method header");
    let unparseable = view(
        "POST",
        &[("content-type", "text/plain")],
        r#"{"jsonrpc": "2.0", "method": "tools/call"} trailing"#,
    );
    assert!(invalid(read_as(&unparseable, false)));
}

#[test]
fn keys_repeated_under_case_folding_are_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","NAME":"delete_repository"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"},"param\u017f":{"name":"delete_repository"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_repository"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/tmp/a","PATH":"/etc/shadow"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"list":[{"k":1,"\u212a":2}]}}}"#,
    ] {
        let err = post(body).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{body}: {err}");
    }
}

#[test]
fn fields_are_read_as_a_case_insensitive_server_reads_them() {
    let (name, _) = tool_of(post(
        r#"{"JSONRPC":"2.0","id":1,"Method":"tools/call","PARAMS":{"Name":"delete_repository"}}"#,
    ));
    assert_eq!(name, "delete_repository");
}

#[test]
fn malformed_messages_are_refused() {
    for body in [
        r#"{"id":1,"method":"tools/call","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["x"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":""}}"#,
        r#"{"jsonrpc":"2.0"}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}"#,
    ] {
        assert!(invalid(post(body)), "{body}");
    }
}

#[test]
fn the_media_type_must_be_json_parsed_properly() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    for content_type in [
        "text/plain",
        "text/plain; x=application/json",
        "application/json-patch+json",
        "application/json, text/plain",
    ] {
        let v = view("POST", &[("content-type", content_type)], call);
        assert!(invalid(read_as(&v, true)), "{content_type}");
    }
    let v = view(
        "POST",
        &[("content-type", "Application/JSON; charset=utf-8")],
        call,
    );
    assert!(read_as(&v, true).unwrap().is_some());
    let gzip = view("POST", &[JSON, ("content-encoding", "gzip")], call);
    assert!(invalid(read_as(&gzip, true)));
}

#[test]
fn a_cut_body_is_refused() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    let v = view("POST", &[JSON, ("x-envoy-auth-partial-body", "true")], call);
    assert!(invalid(read_as(&v, true)));
}

#[test]
fn streams_sessions_and_responses_are_what_they_are() {
    let v = view("GET", &[("accept", "text/event-stream")], "");
    assert!(matches!(read_as(&v, true), Ok(Some(Message::Stream))));
    let v = view("DELETE", &[("mcp-session-id", "s-1")], "");
    assert!(matches!(read_as(&v, true), Ok(Some(Message::EndSession))));
    let v = view("DELETE", &[], "");
    assert!(invalid(read_as(&v, true)));
    let v = view(
        "GET",
        &[JSON],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert!(invalid(read_as(&v, true)));
    let v = view(
        "PUT",
        &[JSON],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert!(invalid(read_as(&v, true)));
    assert!(matches!(
        post(r#"{"jsonrpc":"2.0","id":"s-7","result":{"content":[]}}"#),
        Ok(Some(Message::Response))
    ));
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ] {
        assert!(
            matches!(post(body), Ok(Some(Message::Call { named: None, .. }))),
            "{body}"
        );
    }
}

#[test]
fn headers_must_agree_with_the_body() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;
    let agree = view(
        "POST",
        &[JSON, ("mcp-method", "tools/call"), ("mcp-name", "search")],
        call,
    );
    assert!(read_as(&agree, false).is_ok());
    for headers in [
        [JSON, ("mcp-method", "tools/list"), ("mcp-name", "search")],
        [
            JSON,
            ("mcp-method", "tools/call"),
            ("mcp-name", "delete_repository"),
        ],
    ] {
        let v = view("POST", &headers, call);
        assert!(matches!(
            read_as(&v, false),
            Err(McpError::HeaderMismatch(_))
        ));
    }
}

#[test]
fn a_tool_call_under_a_form_media_type_is_still_read_as_mcp() {
    let call =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repository"}}"#;
    for content_type in ["application/x-www-form-urlencoded", "text/plain", ""] {
        let v = view("POST", &[("content-type", content_type)], call);
        assert!(invalid(read_as(&v, false)), "{content_type:?}");
    }
    let get = view(
        "GET",
        &[("content-type", "application/x-www-form-urlencoded")],
        call,
    );
    assert!(invalid(read_as(&get, false)));
}

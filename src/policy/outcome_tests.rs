use super::*;
use crate::decision::PolicyAnswer;

fn read_json(json: &str) -> Result<PolicyAnswer, OutcomeError> {
    read(&Value::from_json_str(json).unwrap())
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn bools_allow_and_deny() {
    assert!(matches!(
        read(&Value::Bool(true)),
        Ok(PolicyAnswer::Allow(_))
    ));
    let Ok(PolicyAnswer::Deny { response, .. }) = read(&Value::Bool(false)) else {
        panic!()
    };
    assert_eq!(response, DenyResponse::default());
}

#[test]
fn an_allow_object_carries_every_mutation() {
    let answer = read_json(
        r#"{"allowed": true,
            "headers": {"X-Agent": "a1", "x-multi": ["1", "2"]},
            "response_headers_to_add": [{"x-r": "r"}],
            "request_headers_to_remove": ["authorization"],
            "query_parameters_to_set": {"q": "1", "many": ["a", "b"]},
            "query_parameters_to_remove": ["secret"],
            "dynamic_metadata": {"k": {"n": 1}},
            "http_status": 999, "body": "ignored on allow"}"#,
    )
    .unwrap();
    let PolicyAnswer::Allow(permit) = answer else {
        panic!()
    };
    assert_eq!(
        *permit.mutations(),
        Mutations {
            headers: vec![
                header("x-agent", "a1"),
                header("x-multi", "1"),
                header("x-multi", "2")
            ],
            response_headers_to_add: vec![header("x-r", "r")],
            request_headers_to_remove: vec!["authorization".into()],
            query_parameters_to_set: vec![
                ("many".into(), "a".into()),
                ("many".into(), "b".into()),
                ("q".into(), "1".into())
            ],
            query_parameters_to_remove: vec!["secret".into()],
        }
    );
    assert_eq!(
        serde_json::Value::Object(permit.metadata().clone()),
        serde_json::json!({"k": {"n": 1}})
    );
}

#[test]
fn a_deny_object_carries_status_body_headers_and_reason() {
    let answer = read_json(
        r#"{"allowed": false, "http_status": 401, "body": "no", "headers": {"www-authenticate": "Bearer"},
            "reason": "token missing", "request_headers_to_remove": ["ignored-on-deny"]}"#,
    )
    .unwrap();
    let PolicyAnswer::Deny {
        response,
        stated_reason,
        ..
    } = answer
    else {
        panic!()
    };
    assert_eq!(response.status.code(), 401);
    assert_eq!(response.body, "no");
    assert_eq!(response.headers, vec![header("www-authenticate", "Bearer")]);
    assert_eq!(stated_reason.as_deref(), Some("token missing"));
}

#[test]
fn every_malformed_result_is_an_error_with_its_reason() {
    let cases = [
        ("1", DenyReason::PolicyInvalidResult),
        (r#""yes""#, DenyReason::PolicyInvalidResult),
        ("null", DenyReason::PolicyInvalidResult),
        ("[true]", DenyReason::PolicyInvalidResult),
        ("{}", DenyReason::PolicyInvalidResult),
        (r#"{"allowed": "true"}"#, DenyReason::PolicyInvalidResult),
        (
            r#"{"allowed": true, "headers": "x"}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "headers": {"x": 1}}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "headers": [1]}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "headers": {"bad name": "v"}}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "headers": {"x": "a\r\nset-cookie: s=1"}}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "request_headers_to_remove": "x"}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "query_parameters_to_set": ["a"]}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": true, "dynamic_metadata": "x"}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": false, "body": 1}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": false, "http_status": "403"}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": false, "http_status": 403.5}"#,
            DenyReason::PolicyInvalidResult,
        ),
        (
            r#"{"allowed": false, "http_status": 418}"#,
            DenyReason::PolicyInvalidStatus,
        ),
        (
            r#"{"allowed": false, "http_status": 0}"#,
            DenyReason::PolicyInvalidStatus,
        ),
    ];
    for (json, reason) in cases {
        let err = read_json(json).unwrap_err();
        assert_eq!(err.reason(), reason, "{json}: {err}");
    }
    assert_eq!(
        read(&Value::Undefined).unwrap_err().reason(),
        DenyReason::PolicyUndefined
    );
}

#[test]
fn effects_envoy_or_the_tool_could_misread_are_refused() {
    let big = "a".repeat(70 * 1024);
    let refused = [
        r#"{"allowed": true, "headers": {"Transfer-Encoding": "chunked"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"content-length": "5"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"host": "admin.internal"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"connection": "close"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"te": "trailers"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"upgrade": "websocket"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"keep-alive": "1"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"proxy-authorization": "x"}}"#.to_owned(),
        r#"{"allowed": true, "response_headers_to_add": {"content-length": "1"}}"#.to_owned(),
        r#"{"allowed": true, "request_headers_to_remove": ["content-length"]}"#.to_owned(),
        r#"{"allowed": true, "request_headers_to_remove": ["bad name"]}"#.to_owned(),
        r#"{"allowed": true, "request_headers_to_remove": ["X-Leash-Agent"]}"#.to_owned(),
        r#"{"allowed": false, "headers": {"transfer-encoding": "chunked"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"x": "a\u0001b"}}"#.to_owned(),
        r#"{"allowed": true, "headers": {"x": "a\u007fb"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a": "1\r\nx: y"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a": "1&admin=true"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a": "1#frag"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a=b": "1"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"": "1"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a": "x y"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_set": {"a": "%zz"}}"#.to_owned(),
        r#"{"allowed": true, "query_parameters_to_remove": ["a&b"]}"#.to_owned(),
        format!(r#"{{"allowed": true, "headers": {{"x": "{big}"}}}}"#),
        format!(r#"{{"allowed": true, "dynamic_metadata": {{"x": "{big}"}}}}"#),
        format!(r#"{{"allowed": false, "body": "{big}"}}"#),
        format!(r#"{{"allowed": false, "reason": "{big}"}}"#),
        format!(r#"{{"allowed": true, "request_headers_to_remove": ["{big}"]}}"#),
        format!(r#"{{"allowed": true, "query_parameters_to_set": {{"x": "{big}"}}}}"#),
    ];
    for json in &refused {
        let err = read_json(json).unwrap_err();
        assert_eq!(
            err.reason(),
            DenyReason::PolicyInvalidResult,
            "{}: {err}",
            json.get(..120).unwrap_or(json)
        );
    }
    // What a policy may well mean passes: a tab, an escaped value, `=` in a value.
    let fine = read_json(
        r#"{"allowed": true, "headers": {"x-a": "a\tb"},
            "query_parameters_to_set": {"redirect": "https%3A%2F%2Fx/y?z=1", "b64": "YQ=="}}"#,
    );
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn a_mint_ask_is_read_strictly() {
    let ask = |json: &str| requested_mint(&Value::from_json_str(json).unwrap());
    assert_eq!(ask(r#"{"allowed": true}"#), Ok(None));
    assert_eq!(ask("true"), Ok(None));
    assert_eq!(
        ask(r#"{"allowed": true, "mint": {}}"#),
        Ok(Some(MintAsk::default()))
    );
    assert_eq!(
        ask(
            r#"{"allowed": true, "mint": {"ttl": 5, "audience": "a", "scope": "x:y:read z:w:read"}}"#
        ),
        Ok(Some(MintAsk {
            ttl: Some(5),
            audience: Some("a".into()),
            scope: Some(vec!["x:y:read".into(), "z:w:read".into()]),
        }))
    );
    assert_eq!(
        ask(r#"{"allowed": true, "mint": {"scope": ["x:y:read"]}}"#)
            .unwrap()
            .unwrap()
            .scope,
        Some(vec!["x:y:read".into()])
    );
    for refused in [
        r#"{"allowed": false, "mint": {}}"#,
        r#"{"allowed": true, "mint": true}"#,
        r#"{"allowed": true, "mint": {"ttl": 0}}"#,
        r#"{"allowed": true, "mint": {"ttl": 1.5}}"#,
        r#"{"allowed": true, "mint": {"ttl": "60"}}"#,
        r#"{"allowed": true, "mint": {"scope": [""]}}"#,
        r#"{"allowed": true, "mint": {"sub": "root"}}"#,
    ] {
        assert!(
            matches!(ask(refused), Err(OutcomeError::Invalid(_))),
            "{refused}"
        );
    }
}

#[test]
fn a_permit_carrying_a_credential_sets_it_and_removes_the_others() {
    let Ok(PolicyAnswer::Allow(mut permit)) =
        read_json(r#"{"allowed": true, "request_headers_to_remove": ["dpop"]}"#)
    else {
        panic!()
    };
    let credential = Credential {
        header: "authorization".into(),
        value: "Bearer minted".into(),
        remove: vec!["dpop".to_owned(), "txn-token".to_owned()].into(),
        jti: "j".into(),
        exp: 1,
        kid: "k".into(),
    };
    permit.carry(credential.clone()).unwrap();
    assert_eq!(
        permit.upstream_headers().collect::<Vec<_>>(),
        [("authorization", "Bearer minted")]
    );
    assert_eq!(
        permit.mutations().request_headers_to_remove,
        ["dpop", "txn-token"]
    );
    // A policy that sets the credential header itself would send a second one.
    let Ok(PolicyAnswer::Allow(mut permit)) =
        read_json(r#"{"allowed": true, "headers": {"Authorization": "Bearer other"}}"#)
    else {
        panic!()
    };
    assert!(permit.carry(credential.clone()).is_err());
    // Nor may it remove it: the call would go out with no credential while the log
    // says one went.
    let Ok(PolicyAnswer::Allow(mut permit)) =
        read_json(r#"{"allowed": true, "request_headers_to_remove": ["Authorization"]}"#)
    else {
        panic!()
    };
    assert!(permit.carry(credential).is_err());
}

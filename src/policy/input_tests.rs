use super::*;
use crate::view::Body;

fn view(path: &str, headers: &[(&str, &str)], body: Body) -> RequestView {
    let mut v = RequestView::for_test("POST", "http", "tools.example", path, headers);
    v.body = body;
    v
}

fn json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn input(view: &RequestView) -> serde_json::Value {
    json(&build(view, &InputLimits::default()).unwrap())
}

#[test]
fn path_is_decoded_then_split_like_the_plugin() {
    let cases: [(&str, &[&str]); 6] = [
        ("/a/b%20c/d?x=1", &["a", "b c", "d"]),
        ("/", &[""]),
        ("", &[""]),
        ("//a//b/", &["a", "", "b", ""]),
        ("/a%2Fb", &["a", "b"]),
        ("/a+b#frag", &["a+b"]),
    ];
    for (path, want) in cases {
        let got = input(&view(path, &[], Body::None));
        assert_eq!(got["parsed_path"], serde_json::json!(want), "{path}");
    }
}

#[test]
fn query_keeps_repeats_and_decodes_plus_as_space() {
    let got = input(&view(
        "/p?x=1&x=2&y=z&sp=a+b%21&empty=&flag&;bad=1&bad%zz=2&=anon",
        &[],
        Body::None,
    ));
    assert_eq!(
        got["parsed_query"],
        serde_json::json!({
            "x": ["1", "2"], "y": ["z"], "sp": ["a b!"], "empty": [""], "flag": [""], "": ["anon"]
        })
    );
    assert_eq!(
        input(&view("/p", &[], Body::None))["parsed_query"],
        serde_json::json!({})
    );
}

#[test]
fn an_undecodable_path_is_an_error() {
    for path in ["/a%zz", "/a%2", "/%ff%fe"] {
        let err = build(&view(path, &[], Body::None), &InputLimits::default()).unwrap_err();
        assert!(matches!(err, InputError::InvalidPath(_)), "{path}: {err}");
    }
}

#[test]
fn json_bodies_are_parsed_from_text_or_bytes() {
    let ct = [("content-type", "application/json; charset=utf-8")];
    let text = input(&view("/", &ct, Body::Text(r#"{"a":[1,true,null]}"#.into())));
    assert_eq!(
        text["parsed_body"],
        serde_json::json!({"a": [1, true, null]})
    );
    assert_eq!(text["truncated_body"], false);
    let bytes = input(&view("/", &ct, Body::Bytes(br#"[1,2]"#.to_vec())));
    assert_eq!(bytes["parsed_body"], serde_json::json!([1, 2]));
}

#[test]
fn a_malformed_json_body_is_null_and_left_to_the_policy() {
    let got = input(&view(
        "/",
        &[("content-type", "application/json")],
        Body::Text("{not json".into()),
    ));
    assert_eq!(got["parsed_body"], serde_json::Value::Null);
    assert_eq!(got["truncated_body"], false);
}

#[test]
fn form_bodies_become_name_to_values() {
    let got = input(&view(
        "/",
        &[("content-type", "application/x-www-form-urlencoded")],
        Body::Text("a=1&a=2&b=x+y".into()),
    ));
    assert_eq!(
        got["parsed_body"],
        serde_json::json!({"a": ["1", "2"], "b": ["x y"]})
    );
}

#[test]
fn other_bodies_are_null() {
    for (ct, body) in [
        ("text/plain", "hello"),
        ("", "{}"),
        ("application/json", ""),
    ] {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let got = input(&view("/", &headers, Body::Text(body.into())));
        assert_eq!(got["parsed_body"], serde_json::Value::Null, "{ct} {body}");
    }
}

#[test]
fn truncation_is_reported_from_length_or_envoys_partial_header() {
    let short = input(&view(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-length", "100"),
        ],
        Body::Text(r#"{"a":1}"#.into()),
    ));
    assert_eq!(short["truncated_body"], true);
    assert_eq!(short["parsed_body"], serde_json::Value::Null);

    let partial = input(&view(
        "/",
        &[
            ("content-type", "application/json"),
            ("x-envoy-auth-partial-body", "true"),
        ],
        Body::Text(r#"{"a":1}"#.into()),
    ));
    assert_eq!(partial["truncated_body"], true);
    assert_eq!(partial["parsed_body"], serde_json::Value::Null);

    let unparsed = input(&view(
        "/",
        &[("x-envoy-auth-partial-body", "true")],
        Body::Text("abc".into()),
    ));
    assert_eq!(unparsed["truncated_body"], true);
}

#[test]
fn bodies_over_the_limit_are_refused() {
    let limits = InputLimits {
        max_body_bytes: 8,
        max_body_depth: 64,
    };
    let err = build(&view("/", &[], Body::Text("123456789".into())), &limits).unwrap_err();
    assert_eq!(err, InputError::BodyTooLarge { size: 9, limit: 8 });
}

#[test]
fn json_nesting_deeper_than_the_limit_is_refused_before_parsing() {
    let limits = InputLimits {
        max_body_bytes: 1 << 20,
        max_body_depth: 4,
    };
    let ct = [("content-type", "application/json")];
    let ok = build(
        &view("/", &ct, Body::Text(r#"{"a":[{"b":[1]}]}"#.into())),
        &limits,
    );
    assert!(ok.is_ok());
    let deep = build(
        &view("/", &ct, Body::Text(r#"{"a":[{"b":[[1]]}]}"#.into())),
        &limits,
    );
    assert_eq!(deep.unwrap_err(), InputError::BodyTooDeep { limit: 4 });
    // Brackets inside strings are text, not nesting.
    let quoted = build(
        &view("/", &ct, Body::Text(r#"{"a":"[[[[[[\"[[[["}"#.into())),
        &limits,
    );
    assert!(quoted.is_ok());
}

#[test]
fn version_and_source_principal_sit_beside_attributes() {
    let mut v = view("/", &[], Body::None);
    let got = input(&v);
    assert_eq!(
        got["version"],
        serde_json::json!({"ext_authz": "v3", "encoding": "protojson"})
    );
    assert!(got.get("source_principal").is_none());
    v.source_principal = "spiffe://cluster.local/ns/agents/sa/planner".into();
    assert_eq!(
        input(&v)["source_principal"],
        "spiffe://cluster.local/ns/agents/sa/planner"
    );
}

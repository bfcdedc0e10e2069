//! Compatibility with OPA's Envoy plugin: the input document leash builds must be the
//! one the plugin builds, field for field, so existing policies run unchanged.
//!
//! `fixtures/opa-envoy-input.json` was captured from OPA's plugin v1.9.0 behind
//! Envoy 1.40 for `curl -H 'x-agent-id: a1' 'http://127.0.0.1:10000/a/b%20c/d?x=1&x=2&y=z'`.

use crate::common;

use common::captured_request;
use leash::policy::input::{InputLimits, build};
use leash::view::RequestView;

#[test]
fn the_input_document_matches_opas_plugin_field_for_field() {
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/opa-envoy-input.json")).unwrap();
    let view = RequestView::try_from(captured_request()).unwrap();
    let input = build(&view, &InputLimits::default()).unwrap();
    let got = serde_json::to_value(&input).unwrap();
    assert_eq!(got, expected, "\n got: {got:#}\nwant: {expected:#}");
}

#[test]
fn a_policy_written_for_the_plugin_decides_the_same() {
    // In the style of OPA's Envoy tutorials: imports, header checks, parsed fields.
    let policy = r#"
package envoy.authz

import rego.v1
import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "GET"
	http_request.headers["x-agent-id"] == "a1"
	input.parsed_path == ["a", "b c", "d"]
	input.parsed_query.x == ["1", "2"]
	input.version.ext_authz == "v3"
	input.attributes.source.address.socketAddress.portValue == 58762
	input.attributes.request.time.seconds > 0
}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), policy).unwrap();
    let source = leash::policy::PolicySource::Dir(dir.path().to_owned());
    let set =
        leash::policy::PolicySet::load(&source, &Default::default(), &Default::default()).unwrap();
    let view = RequestView::try_from(captured_request()).unwrap();
    let input = build(&view, &InputLimits::default()).unwrap();
    assert_eq!(
        set.evaluate(input).unwrap(),
        leash::policy::Value::Bool(true)
    );
}

#[test]
fn optional_attributes_appear_only_when_envoy_sets_them() {
    let mut req = captured_request();
    let attrs = req.attributes.as_mut().unwrap();
    let source = attrs.source.as_mut().unwrap();
    source.principal = "spiffe://cluster.local/ns/agents/sa/planner".into();
    source.certificate = "-----BEGIN%20CERTIFICATE-----".into();
    attrs
        .context_extensions
        .insert("route".into(), "tools".into());
    let http = attrs.request.as_mut().unwrap().http.as_mut().unwrap();
    http.size = 17;
    http.raw_body = b"\x00\x01binary".to_vec();
    attrs.tls_session = Some(Default::default());

    let view = RequestView::try_from(req).unwrap();
    let got = serde_json::to_value(build(&view, &InputLimits::default()).unwrap()).unwrap();
    let a = &got["attributes"];
    assert_eq!(
        a["source"]["principal"],
        "spiffe://cluster.local/ns/agents/sa/planner"
    );
    assert_eq!(a["source"]["certificate"], "-----BEGIN%20CERTIFICATE-----");
    assert_eq!(
        a["contextExtensions"],
        serde_json::json!({"route": "tools"})
    );
    assert_eq!(
        a["request"]["http"]["size"], 17,
        "int64 as a number, as the plugin gives it"
    );
    assert_eq!(
        a["request"]["http"]["rawBody"], "AAFiaW5hcnk=",
        "bytes as base64"
    );
    assert_eq!(
        a["tlsSession"],
        serde_json::json!({}),
        "present but empty stays present"
    );
    assert_eq!(
        got["source_principal"],
        "spiffe://cluster.local/ns/agents/sa/planner"
    );
}

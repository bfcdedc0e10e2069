//! Compatibility with OPA's Envoy plugin: the input document leash builds must be the
//! one the plugin builds, field for field, so existing policies run unchanged.
//!
//! `fixtures/opa-envoy-input.json` was captured from OPA's plugin v1.9.0 behind
//! Envoy 1.40 for `curl -H 'x-agent-id: a1' 'http://127.0.0.1:10000/a/b%20c/d?x=1&x=2&y=z'`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step must fail the test loudly"
)]

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;
use leash::policy::input::{InputLimits, build};
use leash::view::RequestView;

fn peer(port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// The CheckRequest Envoy sent for the captured request.
fn captured_request() -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "127.0.0.1:10000"),
        (":method", "GET"),
        (":path", "/a/b%20c/d?x=1&x=2&y=z"),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "curl/7.88.1"),
        ("x-agent-id", "a1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "7e29e6f9-23cf-48d1-8a63-95279bd44030"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(58762)),
            destination: Some(peer(10000)),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_795_894_829,
                    nanos: 971_539_000,
                }),
                http: Some(HttpRequest {
                    id: "17815245274434290172".into(),
                    method: "GET".into(),
                    headers,
                    path: "/a/b%20c/d?x=1&x=2&y=z".into(),
                    host: "127.0.0.1:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Metadata::default()),
            route_metadata_context: Some(Metadata::default()),
            ..Default::default()
        }),
    }
}

#[test]
fn the_input_document_matches_opas_plugin_field_for_field() {
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/opa-envoy-input.json")).unwrap();
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
    let set = leash::policy::PolicySet::load(&source, &Default::default(), &[]).unwrap();
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

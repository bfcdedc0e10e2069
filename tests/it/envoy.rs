//! End to end through a real Envoy 1.40: the shipped bootstrap, the `leash` binary,
//! and an upstream that records what reached it.

use crate::common;

use std::time::Duration;

use common::envoy::{Envoy, LeashAddr, Upstream, require_envoy};
use common::{LeashProcess, PolicyDir, eventually};

const POLICY: &str = r#"package envoy.authz

import rego.v1

default allow := false

http := input.attributes.request.http

# A read with an agent id passes, with headers for the upstream and the client.
allow := {
	"allowed": true,
	"headers": {"x-checked": "yes", "x-agent-id": "verified-a1"},
	"response_headers_to_add": {"x-leash-note": "allowed"},
	"request_headers_to_remove": ["x-secret"],
	"dynamic_metadata": {"route": "read"},
} if {
	http.method == "GET"
	input.parsed_path[0] == "read"
	http.headers["x-agent-id"] == "a1"
}

# A custom denial: status, body and headers chosen by the policy.
allow := {
	"allowed": false,
	"http_status": 401,
	"body": "{\"error\":\"login first\"}",
	"headers": {"content-type": "application/json", "www-authenticate": "Bearer"},
} if input.parsed_path[0] == "login"

# The OPA-compatible parsed fields, visible to the policy.
allow if {
	input.parsed_path == ["parsed", "b c"]
	input.parsed_query.x == ["1", "2"]
	input.parsed_body.tool == "search"
	input.truncated_body == false
}
"#;

async fn setup(policy: &PolicyDir, extra: &[&str]) -> Option<(LeashProcess, Envoy, Upstream)> {
    let envoy_bin = require_envoy()?;
    let upstream = Upstream::start().await;
    let dir = policy.path_str();
    let mut args = vec![
        "--policy",
        dir.as_str(),
        "--watch-interval",
        "100ms",
        "--log-decisions",
        "all",
    ];
    args.extend_from_slice(extra);
    let leash = LeashProcess::start(&args).await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Tcp(leash.grpc), upstream.addr).await;
    Some((leash, envoy, upstream))
}

#[tokio::test]
async fn allow_mutates_the_request_and_deny_shapes_the_response() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let Some((leash, envoy, upstream)) = setup(&policy, &[]).await else {
        return;
    };

    let ok = envoy
        .send(
            "GET",
            "/read/1",
            &[("x-agent-id", "a1"), ("x-secret", "s3cr3t")],
            "",
        )
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, "upstream ok");
    assert_eq!(ok.header("x-leash-note"), Some("allowed"));
    let seen = upstream.last().expect("the upstream saw the request");
    assert_eq!(seen.header("x-checked"), vec!["yes"]);
    assert_eq!(
        seen.header("x-agent-id"),
        vec!["verified-a1"],
        "policy headers replace the client's"
    );
    assert!(
        seen.header("x-secret").is_empty(),
        "removed before upstream"
    );

    let hits = upstream.hits();
    let denied = envoy.send("GET", "/login", &[], "").await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.body, r#"{"error":"login first"}"#);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    assert_eq!(denied.header("content-type"), Some("application/json"));

    let plain = envoy
        .send("GET", "/read/1", &[("x-agent-id", "someone-else")], "")
        .await;
    assert_eq!(plain.status, 403);
    assert_eq!(
        upstream.hits(),
        hits,
        "denied requests never reach the upstream"
    );

    let parsed = envoy
        .send(
            "POST",
            "/parsed/b%20c?x=1&x=2",
            &[("content-type", "application/json")],
            r#"{"tool":"search"}"#,
        )
        .await;
    assert_eq!(
        parsed.status, 200,
        "parsed_path, parsed_query and parsed_body reach the policy"
    );

    // Envoy's access log carries leash's decision id, and leash's decision log has the same id.
    // Envoy flushes its access log about once a second.
    let mut login = serde_json::Value::Null;
    eventually(Duration::from_secs(10), async || {
        login = envoy
            .access_log()
            .into_iter()
            .find(|l| l["path"] == "/login")
            .unwrap_or_default();
        !login.is_null()
    })
    .await;
    let id = login["decision_id"]
        .as_str()
        .expect("decision_id in the access log");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(login["leash_reason"], "policy.denied");
    let logged = leash
        .wait_log(|l| l["decision_id"] == id)
        .await
        .expect("leash logged the same decision id");
    assert_eq!(logged["decision"], "deny");
    assert_eq!(logged["reason"], "policy.denied");
    assert_eq!(logged["path"], "/login");
    assert!(envoy.stat("http.agent_egress.ext_authz.leash.denied").await >= 2);
    assert!(envoy.stat("http.agent_egress.ext_authz.leash.ok").await >= 2);
}

#[tokio::test]
async fn an_undefined_decision_denies_with_403() {
    let policy = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if input.parsed_path[0] == \"open\"\n",
    )]);
    let Some((leash, envoy, upstream)) = setup(&policy, &[]).await else {
        return;
    };
    assert_eq!(envoy.send("GET", "/open", &[], "").await.status, 200);
    let resp = envoy.send("GET", "/closed", &[], "").await;
    assert_eq!(resp.status, 403);
    assert_eq!(upstream.hits(), 1);
    let line = leash.wait_log(|l| l["reason"] == "policy.undefined").await;
    assert!(line.is_some(), "leash logged policy.undefined");
}

#[tokio::test]
async fn a_stopped_leash_fails_closed() {
    let policy = PolicyDir::new(&[("authz.rego", "package envoy.authz\nallow := true\n")]);
    let Some((mut leash, envoy, upstream)) = setup(&policy, &[]).await else {
        return;
    };
    assert_eq!(envoy.send("GET", "/x", &[], "").await.status, 200);
    leash.kill().await;
    for _ in 0..3 {
        assert_eq!(envoy.send("GET", "/x", &[], "").await.status, 403);
    }
    assert_eq!(
        upstream.hits(),
        1,
        "no request reached the upstream without a decision"
    );
}

#[tokio::test]
async fn policy_edits_apply_live_and_broken_edits_keep_the_old_decisions() {
    let v1 = "package envoy.authz\nimport rego.v1\nallow if input.parsed_path[0] == \"a\"\n";
    let v2 = "package envoy.authz\nimport rego.v1\nallow if input.parsed_path[0] == \"b\"\n";
    let policy = PolicyDir::new(&[("authz.rego", v1)]);
    let Some((leash, envoy, _upstream)) = setup(&policy, &[]).await else {
        return;
    };
    assert_eq!(envoy.send("GET", "/a", &[], "").await.status, 200);
    assert_eq!(envoy.send("GET", "/b", &[], "").await.status, 403);

    policy.write("authz.rego", v2);
    let switched = eventually(Duration::from_secs(10), async || {
        envoy.send("GET", "/b", &[], "").await.status == 200
    })
    .await;
    assert!(switched, "the edit was applied without a restart");
    assert_eq!(envoy.send("GET", "/a", &[], "").await.status, 403);

    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if {\n  input.parsed_path[0] ==\n}\n",
    );
    let rejected = leash
        .wait_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("authz.rego:5"))
        })
        .await;
    assert!(
        rejected.is_some(),
        "the broken file was reported with its line: {:?}",
        leash.log()
    );
    assert_eq!(
        envoy.send("GET", "/b", &[], "").await.status,
        200,
        "the old set keeps serving"
    );
    assert_eq!(envoy.send("GET", "/a", &[], "").await.status, 403);
}

#[tokio::test]
async fn envoy_reaches_leash_over_a_unix_socket() {
    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    let policy = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if input.parsed_path[0] == \"ok\"\n",
    )]);
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("authz.sock");
    let upstream = Upstream::start().await;
    let dir = policy.path_str();
    let sock_str = sock.display().to_string();
    let _leash = LeashProcess::start(&["--policy", &dir, "--grpc-uds", &sock_str]).await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Unix(sock), upstream.addr).await;
    assert_eq!(envoy.send("GET", "/ok", &[], "").await.status, 200);
    assert_eq!(envoy.send("GET", "/nope", &[], "").await.status, 403);
}

/// `envoy --mode validate` accepts both shipped bootstraps as written (the mTLS one
/// with its certificate paths pointed at real files).
#[test]
fn the_shipped_bootstraps_validate() {
    let Some(binary) = require_envoy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("validate CA");
    let server = ca.server();
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), &server.key).unwrap();
    std::fs::write(dir.path().join("agents-ca.pem"), &ca.pem).unwrap();
    for bootstrap in ["envoy.yaml", "envoy-mtls.yaml"] {
        let shipped = std::fs::read_to_string(format!(
            "{}/deploy/envoy/{bootstrap}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for setting in [
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "headers_with_underscores_action: REJECT_REQUEST",
            "context_extensions: { leash_resource: tools }",
        ] {
            assert!(shipped.contains(setting), "{bootstrap} lacks {setting}");
        }
        let tls = format!("{}/", dir.path().display());
        if let Err(refused) =
            common::envoy::validate(&binary, &shipped.replace("/etc/envoy/tls/", &tls))
        {
            panic!("{bootstrap}: {refused}");
        }
    }
}

/// Effects a policy asks for that Envoy would refuse or the tool would misread are
/// refused by leash first: the request is denied and never reaches the upstream.
#[tokio::test]
async fn effects_envoy_or_the_tool_could_misread_are_refused_first() {
    let policy = PolicyDir::new(&[(
        "authz.rego",
        r#"package envoy.authz
import rego.v1

effects := {
	"framing": {"headers": {"content-length": "5", "transfer-encoding": "chunked"}},
	"hop": {"headers": {"connection": "close"}},
	"control": {"headers": {"x-a": "a\u0001b"}},
	"crlf-query": {"query_parameters_to_set": {"a": "1\r\nx"}},
	"amp-query": {"query_parameters_to_set": {"a": "1&admin=true"}},
	"big-metadata": {"dynamic_metadata": {"x": concat("", [c | some _ in numbers.range(1, 70000); c := "a"])}},
	"ok": {"query_parameters_to_set": {"a": "1"}},
}

allow := object.union({"allowed": true}, effects[input.parsed_path[0]])
"#,
    )]);
    let Some((leash, envoy, upstream)) = setup(&policy, &[]).await else {
        return;
    };
    let ok = envoy.send("GET", "/ok", &[], "").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    for effect in [
        "framing",
        "hop",
        "control",
        "crlf-query",
        "amp-query",
        "big-metadata",
    ] {
        let hits = upstream.hits();
        let path = format!("/{effect}");
        let resp = envoy.send("GET", &path, &[], "").await;
        assert_eq!(resp.status, 403, "{effect}: {resp:?}");
        assert_eq!(upstream.hits(), hits, "{effect} reached the upstream");
        let logged = leash
            .wait_log(|l| l["path"] == path.as_str() && l["reason"] == "policy.invalid_result")
            .await;
        assert!(
            logged.is_some(),
            "{effect}: leash logged policy.invalid_result"
        );
    }
}

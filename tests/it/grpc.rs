//! leash's gRPC surface in process: ext_authz Check on bad input and failing
//! policies, grpc.health.v1, the control API, and the admin endpoints.

use crate::common;

use std::time::Duration;

use common::{Leash, PolicyDir, eventually, is_allowed, reason, request, request_with_body};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use leash::edge::control::proto::control_client::ControlClient;
use leash::edge::control::proto::{ReloadPolicyRequest, ReloadPolicyResponse, StatusRequest};
use prost::Message as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ALLOW_GETS: &str = "package envoy.authz\nimport rego.v1\nallow if input.attributes.request.http.method == \"GET\"\n";

async fn leash_with(policy: &PolicyDir, extra: &[(&str, &str)]) -> Leash {
    let dir = policy.path_str();
    let mut overrides = vec![
        ("policy.dir", dir.as_str()),
        ("policy.watch_interval", "0s"),
    ];
    overrides.extend_from_slice(extra);
    Leash::start(&overrides).await
}

async fn denied_for(leash: &Leash, req: CheckRequest) -> String {
    let resp = leash.check(req).await;
    assert!(!is_allowed(&resp), "{resp:?}");
    reason(&resp).expect("a deny carries its reason code")
}

#[tokio::test]
async fn malformed_requests_deny_with_a_reason_code() {
    let policy = PolicyDir::new(&[("authz.rego", "package envoy.authz\nallow := true\n")]);
    let leash = leash_with(
        &policy,
        &[
            ("request.max_body_bytes", "1024"),
            ("request.max_body_depth", "8"),
        ],
    )
    .await;

    assert_eq!(
        denied_for(&leash, CheckRequest { attributes: None }).await,
        "request.no_http"
    );
    let no_http = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: None,
            }),
            ..Default::default()
        }),
    };
    assert_eq!(denied_for(&leash, no_http).await, "request.no_http");

    let big = "x".repeat(2000);
    assert_eq!(
        denied_for(&leash, request_with_body("POST", "/", &[], &big)).await,
        "request.body_too_large"
    );
    let deep = format!("{}1{}", "[".repeat(50), "]".repeat(50));
    assert_eq!(
        denied_for(
            &leash,
            request_with_body("POST", "/", &[("content-type", "application/json")], &deep)
        )
        .await,
        "request.body_too_deep"
    );
    assert_eq!(
        denied_for(&leash, request("GET", "/a%zz", &[])).await,
        "request.invalid_path"
    );

    // The same request, well-formed, is allowed: the denials above are about the input.
    assert!(is_allowed(&leash.check(request("GET", "/a", &[])).await));
}

/// A CheckRequest whose header value is not UTF-8 cannot be decoded as protobuf; it is
/// denied with `request.invalid_utf8` rather than failing the RPC.
#[tokio::test]
async fn a_header_that_is_not_utf8_is_denied() {
    let policy = PolicyDir::new(&[("authz.rego", "package envoy.authz\nallow := true\n")]);
    let leash = leash_with(&policy, &[]).await;
    let mut bytes = request("GET", "/", &[("x-bad", "MARK")]).encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"MARK").unwrap();
    bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let resp = raw_check(&leash, bytes)
        .await
        .expect("a CheckResponse, not an RPC error");
    assert!(!is_allowed(&resp));
    assert_eq!(reason(&resp).as_deref(), Some("request.invalid_utf8"));
    // In the body too; and bytes that are no CheckRequest at all are malformed.
    let mut bytes = request_with_body("POST", "/", &[], "MARK").encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"MARK").unwrap();
    bytes[at] = 0xc3;
    let resp = raw_check(&leash, bytes).await.unwrap();
    assert_eq!(reason(&resp).as_deref(), Some("request.invalid_utf8"));
    let resp = raw_check(&leash, vec![0x0a, 0xff, 0xff]).await.unwrap();
    assert_eq!(reason(&resp).as_deref(), Some("request.malformed"));
}

/// A 10 MiB header block is over the 4 MiB receive limit: tonic refuses it before
/// leash decodes it, Envoy turns the error into a 403, and leash counts the denial.
#[tokio::test]
async fn an_oversized_check_request_is_refused_and_counted() {
    let policy = PolicyDir::new(&[("authz.rego", "package envoy.authz\nallow := true\n")]);
    let leash = leash_with(&policy, &[]).await;
    let huge = "h".repeat(10 * 1024 * 1024);
    let err = leash
        .client()
        .await
        .max_encoding_message_size(64 << 20)
        .check(request("GET", "/", &[("x-huge", &huge)]))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    let counted = eventually(Duration::from_secs(5), async || {
        leash
            .metric(r#"leash_decisions_total{decision="deny",reason="request.too_large"}"#)
            .await
            == 1.0
    })
    .await;
    assert!(counted);
}

#[tokio::test]
async fn failing_policies_deny_on_both_engines() {
    let cases = [
        // Only for this request: a policy that spins on every input is refused at load.
        (
            "loops",
            "allow if {\n input.parsed_path[0] == \"spin\"\n count([1 | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000)]) > 0\n}",
            "policy.limit_exceeded",
        ),
        ("string result", "allow := \"yes\"", "policy.invalid_result"),
        (
            "no allowed field",
            "allow := {\"headers\": {}}",
            "policy.invalid_result",
        ),
        (
            "unknown status",
            "allow := {\"allowed\": false, \"http_status\": 418}",
            "policy.invalid_status",
        ),
        ("undefined", "allow if input.nothing", "policy.undefined"),
    ];
    for engine in ["vm", "interpreter"] {
        for (name, rule, code) in cases {
            let text = format!("package envoy.authz\nimport rego.v1\n{rule}\n");
            let policy = PolicyDir::new(&[("authz.rego", &text)]);
            let leash = leash_with(
                &policy,
                &[("policy.engine", engine), ("policy.eval_timeout", "50ms")],
            )
            .await;
            let resp = leash.check(request("GET", "/spin", &[])).await;
            assert!(!is_allowed(&resp), "{engine} {name}");
            assert_eq!(reason(&resp).as_deref(), Some(code), "{engine} {name}");
        }
    }
}

#[tokio::test]
async fn an_evaluation_error_denies_with_policy_error() {
    // Conflicting values for a complete rule: an error in the interpreter (the VM
    // reports it as undefined; both deny).
    let text = "package envoy.authz\nimport rego.v1\nallow := true if input.parsed_path[0] == \"x\"\nallow := false if input.parsed_path[0] == \"x\"\n";
    let policy = PolicyDir::new(&[("authz.rego", text)]);
    let leash = leash_with(&policy, &[("policy.engine", "interpreter")]).await;
    assert_eq!(
        denied_for(&leash, request("GET", "/x", &[])).await,
        "policy.error"
    );
    let leash = leash_with(&policy, &[("policy.engine", "vm")]).await;
    assert_eq!(
        denied_for(&leash, request("GET", "/x", &[])).await,
        "policy.undefined"
    );
}

#[tokio::test]
async fn without_a_loadable_policy_every_check_denies_until_one_loads() {
    // The decision rule (envoy/authz/allow) is defined nowhere in this set.
    let policy = PolicyDir::new(&[(
        "other.rego",
        "package other\nimport rego.v1\nallow := true\n",
    )]);
    let leash = leash_with(&policy, &[]).await;
    assert_eq!(
        denied_for(&leash, request("GET", "/", &[])).await,
        "policy.unavailable"
    );
    let (status, why) = leash.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        why.contains("data.envoy.authz.allow"),
        "readyz says why: {why}"
    );
    assert_eq!(health(&leash).await, ServingStatus::NotServing);

    let mut control = leash.control_client().await;
    let reply = reload(&mut control).await;
    assert!(!reply.applied);
    assert!(
        reply.problems[0].message.contains("data.envoy.authz.allow"),
        "{reply:?}"
    );

    policy.write("authz.rego", ALLOW_GETS);
    let reply = reload(&mut control).await;
    assert!(reply.applied, "{reply:?}");
    assert!(is_allowed(&leash.check(request("GET", "/", &[])).await));
    assert_eq!(leash.admin_get("/readyz").await.0, 200);
    let serving = eventually(Duration::from_secs(5), async || {
        health(&leash).await == ServingStatus::Serving
    })
    .await;
    assert!(serving);
}

#[tokio::test]
async fn a_broken_reload_is_reported_with_file_and_line_and_the_old_set_serves() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(&policy, &[]).await;
    let mut control = leash.control_client().await;
    let before = control
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(before.engine, "interpreter");

    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n",
    );
    policy.write(
        "extra.rego",
        "package envoy.authz\nimport rego.v1\nhelper if unknown_fn(1)\n",
    );
    let reply = reload(&mut control).await;
    assert!(!reply.applied);
    let problem = &reply.problems[0];
    assert_eq!(problem.file, "authz.rego");
    assert_eq!(problem.line, 6, "{problem:?}");
    assert!(!problem.message.is_empty());
    assert_eq!(
        reply.policy.unwrap().revision,
        before.revision,
        "the old revision still serves"
    );
    assert!(is_allowed(&leash.check(request("GET", "/", &[])).await));
    assert!(!is_allowed(&leash.check(request("DELETE", "/", &[])).await));

    // Reloading unchanged files is a no-op, not a new revision.
    policy.write("authz.rego", ALLOW_GETS);
    std::fs::remove_file(policy.path().join("extra.rego")).unwrap();
    let reply = reload(&mut control).await;
    assert!(!reply.applied && reply.problems.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let dir = policy.path_str();
    let leash = common::LeashProcess::start(&["--policy", &dir, "--watch-interval", "0s"]).await;
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(leash.grpc).await,
        );
    let post = || request("POST", "/", &[]);
    assert!(!is_allowed(
        &client.check(post()).await.unwrap().into_inner()
    ));

    policy.write("authz.rego", "package envoy.authz\nallow := true\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !is_allowed(&client.check(post()).await.unwrap().into_inner()),
        "the watcher is off: nothing reloads on its own"
    );
    leash.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), async || {
        is_allowed(&client.check(post()).await.unwrap().into_inner())
    })
    .await;
    assert!(reloaded, "SIGHUP applied the edit");
    assert!(
        leash
            .wait_log(|l| l["trigger"] == "SIGHUP" && l["message"] == "policy applied")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn an_empty_policy_directory_serves_nothing_but_denials() {
    let policy = PolicyDir::new(&[]);
    let leash = leash_with(&policy, &[]).await;
    assert_eq!(
        denied_for(&leash, request("GET", "/", &[])).await,
        "policy.unavailable"
    );
    let (status, body) = leash.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn agent_context_is_added_only_for_policies_that_read_it() {
    // Written for OPA's plugin: the input has exactly the plugin's six keys.
    let plugin = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if count(object.keys(input)) == 6\n",
    )]);
    let leash = leash_with(&plugin, &[]).await;
    assert!(is_allowed(&leash.check(request("GET", "/", &[])).await));

    // A policy that reads input.leash gets it.
    let agentic = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if input.leash.action.class == \"read\"\n",
    )]);
    let leash = leash_with(&agentic, &[]).await;
    assert!(is_allowed(&leash.check(request("GET", "/", &[])).await));
    assert_eq!(
        denied_for(&leash, request("POST", "/", &[])).await,
        "policy.undefined"
    );
}

#[tokio::test]
async fn status_and_metrics_count_decisions() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(&policy, &[]).await;
    for _ in 0..3 {
        leash.check(request("GET", "/", &[])).await;
    }
    leash.check(request("POST", "/", &[])).await;
    let mut control = leash.control_client().await;
    let status = control.status(StatusRequest {}).await.unwrap().into_inner();
    let counts = status.decisions.unwrap();
    assert_eq!((counts.allowed, counts.denied), (3, 1));
    assert_eq!(counts.denied_by_reason.get("policy.undefined"), Some(&1));
    let policy_status = status.policy.unwrap();
    assert_eq!(policy_status.files, vec!["authz.rego".to_owned()]);
    assert_eq!(policy_status.decision_rule, "data.envoy.authz.allow");

    assert_eq!(
        leash
            .metric(r#"leash_decisions_total{decision="allow",reason="none"}"#)
            .await,
        3.0
    );
    assert_eq!(
        leash.metric("leash_check_duration_seconds_count").await,
        4.0
    );
    assert_eq!(
        leash
            .metric(r#"leash_policy_reloads_total{result="applied"}"#)
            .await,
        1.0
    );
    assert_eq!(leash.metric("leash_policy_ready").await, 1.0);
    assert_eq!(leash.admin_get("/healthz").await, (200, "ok\n".to_owned()));
}

#[tokio::test]
async fn the_embedded_policy_serves_with_no_setup() {
    // The defaults: tokens required, no issuer configured: nothing gets through.
    let leash = Leash::start(&[("tokens.mode", "required")]).await;
    let resp = leash.check(request("GET", "/v1/items", &[])).await;
    assert_eq!(reason(&resp).as_deref(), Some("token.missing"));
    assert_eq!(leash.admin_get("/readyz").await.0, 200);

    // Without tokens, the governance library lets reads through and nothing else.
    let open = Leash::start(&[]).await;
    assert!(is_allowed(
        &open.check(request("GET", "/v1/items", &[])).await
    ));
    let resp = open.check(request("POST", "/v1/items", &[])).await;
    assert_eq!(reason(&resp).as_deref(), Some("policy.denied"));
    let Some(
        envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(
            denied,
        ),
    ) = resp.http_response
    else {
        panic!("a denied response")
    };
    assert!(
        denied
            .body
            .contains("unauthenticated requests may only read"),
        "{}",
        denied.body
    );
}

async fn reload(control: &mut common::Control) -> ReloadPolicyResponse {
    control
        .reload_policy(ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn health(leash: &Leash) -> ServingStatus {
    let mut client = HealthClient::new(common::channel(leash.grpc).await);
    let resp = client
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(resp.status).unwrap()
}

/// Sends pre-encoded bytes as a CheckRequest.
async fn raw_check(leash: &Leash, bytes: Vec<u8>) -> Result<CheckResponse, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    struct Raw;
    struct RawEncoder;
    struct ResponseDecoder;
    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use prost::bytes::BufMut as _;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for ResponseDecoder {
        type Item = CheckResponse;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut DecodeBuf<'_>,
        ) -> Result<Option<CheckResponse>, tonic::Status> {
            CheckResponse::decode(src)
                .map(Some)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = CheckResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }
    let mut grpc = tonic::client::Grpc::new(common::channel(leash.grpc).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    grpc.unary(tonic::Request::new(bytes), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// Opens `streams` Check streams on one HTTP/2 connection, each sending only the
/// 5-byte gRPC prefix of a 4 MiB message and never the rest. Returns what keeps them open.
async fn half_sent_checks(
    addr: std::net::SocketAddr,
    streams: usize,
) -> Vec<(
    h2::client::ResponseFuture,
    h2::SendStream<prost::bytes::Bytes>,
)> {
    unfinished_checks(addr, streams, 0).await
}

/// Like [`half_sent_checks`], with `sent` bytes of the message after the prefix.
async fn unfinished_checks(
    addr: std::net::SocketAddr,
    streams: usize,
    sent: usize,
) -> Vec<(
    h2::client::ResponseFuture,
    h2::SendStream<prost::bytes::Bytes>,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut open = Vec::new();
    let mut client = client;
    for _ in 0..streams {
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), client.ready()).await else {
            break; // the server's stream limit: this connection takes no more
        };
        let Ok(ready) = ready else { break };
        client = ready;
        let request = http::Request::post(format!(
            "http://{addr}/envoy.service.auth.v3.Authorization/Check"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let Ok((response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&(4u32 << 20).to_be_bytes());
        prefix.resize(prefix.len() + sent, b'h');
        stream
            .send_data(prost::bytes::Bytes::from(prefix), false)
            .unwrap();
        open.push((response, stream));
    }
    open
}

/// How much leash grows while 10 connections hold `streams` unfinished Checks each,
/// with `sent` bytes of their 4 MiB message, measured after `settle`; and the open
/// streams, which stay open as long as the caller keeps them.
async fn growth_while_held(
    leash: &common::LeashProcess,
    streams: usize,
    sent: usize,
    settle: Duration,
) -> (u64, Vec<impl Sized>) {
    let before = leash.rss_bytes();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(unfinished_checks(leash.grpc, streams, sent).await);
    }
    tokio::time::sleep(settle).await;
    let grown = leash.rss_bytes().saturating_sub(before);
    (grown, held.into_iter().flatten().collect())
}

/// An agent sharing the pod's network can reach the gRPC port. Streams that declare a
/// large message and never send it must cost what they sent, not what they declared,
/// and leash goes on answering Envoy.
#[tokio::test]
async fn streams_that_declare_large_messages_cost_only_what_they_send() {
    let leash = common::LeashProcess::start(&[]).await;
    let (grown, held) = growth_while_held(&leash, 100, 0, Duration::from_millis(500)).await;
    assert_eq!(held.len(), 1000, "every stream was accepted");
    assert!(
        grown < 64 << 20,
        "1,000 half-sent streams grew leash by {} MiB",
        grown >> 20
    );
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(leash.grpc).await,
        );
    let answered = client.check(request("GET", "/", &[])).await;
    assert!(
        answered.is_ok(),
        "answered while 1,000 streams are held: {answered:?}"
    );
    drop(held);
}

/// Whole messages on streams that never end stay charged while their requests wait:
/// sending them costs leash at most a bounded multiple of listen.max_buffered_bytes.
#[tokio::test]
async fn whole_messages_on_streams_that_never_end_are_bounded_too() {
    let leash = common::LeashProcess::start(&[]).await;
    // Long enough for the bytes to arrive, short of listen.request_timeout (5 s).
    let (grown, _) = growth_while_held(&leash, 10, 4 << 20, Duration::from_secs(4)).await;
    assert!(
        grown < 160 << 20,
        "100 streams holding 4 MiB messages grew leash by {} MiB",
        grown >> 20
    );
}

/// Waits until the peer closes `conn`, reading and discarding what it sends.
async fn closed_within(conn: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// No connection holds a slot forever: silent, idle and half-sent peers are cut off
/// on every port, and past the connection cap new connections are closed and counted.
#[tokio::test]
async fn silent_idle_and_half_sent_peers_are_cut_off_and_connections_are_capped() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(
        &policy,
        &[
            ("listen.max_connections", "3"),
            ("listen.request_timeout", "1s"),
            ("listen.max_connection_age", "1s"),
            ("listen.header_read_timeout", "1s"),
        ],
    )
    .await;
    let connect = tokio::net::TcpStream::connect;

    // A client that connects and never speaks, on each port.
    for addr in [leash.grpc, leash.control, leash.admin] {
        let mut silent = connect(addr).await.unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "a silent connection to {addr} stayed open"
        );
    }

    // An admin client that sends half its headers.
    let mut slow = connect(leash.admin).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);

    // A Check stream whose message never completes is answered with an error.
    let (response, _stream) = half_sent_checks(leash.grpc, 1).await.pop().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered within the request timeout")
        .unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        status.as_deref().is_some_and(|s| s != "0"),
        "a half-sent Check ends in a gRPC error, not {status:?}"
    );
    assert_eq!(
        leash
            .metric(r#"leash_requests_timed_out_total{port="grpc"}"#)
            .await,
        1.0,
        "the timeout is counted"
    );

    // Three connections fill the gRPC port; a fourth is closed at once and counted,
    // and a Check goes through again once they are gone.
    let mut full = Vec::new();
    for _ in 0..3 {
        full.push(connect(leash.grpc).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = connect(leash.grpc).await.unwrap();
    assert!(closed_within(&mut refused, Duration::from_millis(500)).await);
    assert_eq!(
        leash
            .metric(r#"leash_connections_refused_total{port="grpc"}"#)
            .await,
        1.0
    );
    drop(full);
    let answered = eventually(Duration::from_secs(5), async || {
        let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{}", leash.grpc))
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(channel);
        client.check(request("GET", "/", &[])).await.is_ok()
    })
    .await;
    assert!(answered);
}

/// The agent writes the path: in the text log it must stay inside its own record,
/// never start a line of its own that reads like a decision.
#[tokio::test]
async fn a_path_with_a_newline_stays_on_its_decision_line() {
    let leash =
        common::LeashProcess::start(&["--log-format", "text", "--set", "log.decisions=all"]).await;
    let forged = "/x\nleash::decision: decision=\"allow\" path=/admin";
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(leash.grpc).await,
        );
    client.check(request("GET", forged, &[])).await.unwrap();
    let logged = eventually(Duration::from_secs(10), async || {
        leash.lines().iter().any(|l| l.contains("decision_id="))
    })
    .await;
    assert!(logged, "{:#?}", leash.lines());
    let lines = leash.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("leash::decision")),
        "the path began a line of its own: {lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("decision=")).count(),
        1,
        "{lines:#?}"
    );
}

/// A policy file caught mid-write is never served: a reload waits until the files
/// have been still, and reads them again if they change while it reads.
#[tokio::test]
async fn a_reload_waits_for_files_being_written() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(&policy, &[]).await;
    let mut control = leash.control_client().await;
    // The first half of the new file is a policy of its own, and it allows everything.
    let path = policy.path().join("authz.rego");
    std::fs::write(&path, "package envoy.authz\nimport rego.v1\nallow := true").unwrap();
    let finish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(
            &mut file,
            b" if input.attributes.request.http.method == \"HEAD\"\n",
        )
        .unwrap();
    });
    let reply = reload(&mut control).await;
    finish.await.unwrap();
    assert!(reply.applied, "{reply:?}");
    assert!(
        !is_allowed(&leash.check(request("DELETE", "/", &[])).await),
        "the half-written policy was served"
    );
    assert!(is_allowed(&leash.check(request("HEAD", "/", &[])).await));
}

/// A control client that gives up mid-reload does not make the reload silent: what
/// is applied is logged and counted.
#[tokio::test]
async fn a_reload_whose_caller_gives_up_is_still_counted() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(&policy, &[]).await;
    let mut control = leash.control_client().await;
    let applied = r#"leash_policy_reloads_total{result="applied"}"#;
    let before = leash.metric(applied).await;
    // Fresh files make the reload wait for them to settle: longer than the caller waits.
    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow := true\n",
    );
    let mut impatient = tonic::Request::new(ReloadPolicyRequest {});
    impatient.set_timeout(Duration::from_millis(20));
    let gave_up = control.reload_policy(impatient).await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    let counted = eventually(Duration::from_secs(10), async || {
        leash.metric(applied).await == before + 1.0
    })
    .await;
    assert!(
        counted,
        "the abandoned reload was applied without being counted"
    );
    assert!(is_allowed(&leash.check(request("DELETE", "/", &[])).await));
}

/// A load that runs past policy.load_timeout is abandoned; the serving set stays.
#[tokio::test]
async fn a_load_past_its_time_limit_is_abandoned_and_the_old_set_serves() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    // No watcher: only the reload asked for below may load the slow files.
    let leash = leash_with(
        &policy,
        &[
            ("policy.load_timeout", "20ms"),
            ("policy.watch_interval", "0s"),
        ],
    )
    .await;
    let mut control = leash.control_client().await;
    // Nested literals are slow to parse: 20 of them, within the nesting budget, take
    // far longer than the limit (5 did not always, on a fast run).
    let nested = format!("{}1{}", "[".repeat(12), "]".repeat(12));
    let slow = format!(
        "package envoy.authz\nimport rego.v1\nallow := true\n{}",
        (0..20)
            .map(|i| format!("x{i} := {nested}\n"))
            .collect::<String>()
    );
    // The reload itself waits for the new file to settle before it loads it.
    policy.write("authz.rego", &slow);
    let reply = reload(&mut control).await;
    assert!(!reply.applied);
    assert!(
        reply.problems[0].message.contains("policy.load_timeout"),
        "{reply:?}"
    );
    assert!(!is_allowed(&leash.check(request("DELETE", "/", &[])).await));
}

/// Reload requests that arrive together share reloads: a flood on the control port
/// cannot queue work behind the reload lock.
#[tokio::test]
async fn concurrent_reload_requests_share_a_reload() {
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let leash = leash_with(&policy, &[]).await;
    let control = leash.control_client().await;
    let count = async || {
        let mut n = 0.0;
        for result in ["applied", "unchanged", "rejected"] {
            n += leash
                .metric(&format!(
                    r#"leash_policy_reloads_total{{result="{result}"}}"#
                ))
                .await;
        }
        n
    };
    let before = count().await;
    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow := true\n",
    );
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut control = control.clone();
        calls.spawn(async move { control.reload_policy(ReloadPolicyRequest {}).await });
    }
    while let Some(reply) = calls.join_next().await {
        assert!(reply.unwrap().is_ok());
    }
    let ran = count().await - before;
    assert!(ran <= 2.0, "50 requests ran {ran} reloads");
    assert!(is_allowed(&leash.check(request("DELETE", "/", &[])).await));
}

/// A denial records what leash established before it: a request refused for its
/// token still names the action it asked for and the policy revision serving.
#[tokio::test]
async fn a_token_denial_records_the_action_and_the_revision() {
    let leash =
        common::LeashProcess::start(&["--set", "tokens.mode=required", "--log-decisions", "all"])
            .await;
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(leash.grpc).await,
        );
    let resp = client
        .check(request("GET", "/api/items", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&resp).as_deref(), Some("token.missing"));
    let line = leash
        .wait_log(|l| l["reason"] == "token.missing")
        .await
        .expect("the denial is logged");
    assert_eq!(line["action"], "read", "{line}");
    assert!(
        line["revision"].as_str().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
}

/// The gRPC code of a call's outcome.
fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// `message` with `authorization: Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The control API answers only callers with a known token, each within its role, and
/// a refused call changes nothing.
#[tokio::test]
async fn the_control_api_refuses_callers_without_a_token_or_without_the_role() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = |name: &str, token: &str| common::secret_file(secrets.path(), name, token);
    let (viewer, operator) = ("v".repeat(43), "o".repeat(43));
    let yaml = format!(
        "control:\n  tokens:\n    - {{ name: dashboard, file: {}, role: viewer }}\n    - {{ name: oncall, file: {}, role: operator }}\n",
        token_file("viewer", &viewer),
        token_file("operator", &operator)
    );
    let policy = PolicyDir::new(&[("authz.rego", ALLOW_GETS)]);
    let dir = policy.path_str();
    let leash = Leash::start_yaml(
        &yaml,
        &[
            ("policy.dir", dir.as_str()),
            ("policy.watch_interval", "0s"),
        ],
    )
    .await;
    let mut control = ControlClient::new(common::channel(leash.control).await);

    assert_eq!(
        code(control.status(StatusRequest {}).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(
            control
                .status(with_token(StatusRequest {}, &"x".repeat(43)))
                .await
        ),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(control.status(with_token(StatusRequest {}, &viewer)).await),
        tonic::Code::Ok
    );

    // A new policy that allows every POST, which only an operator may load.
    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow := true\n",
    );
    let post = || request("POST", "/", &[]);
    assert_eq!(
        code(control.reload_policy(ReloadPolicyRequest {}).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(
            control
                .reload_policy(with_token(ReloadPolicyRequest {}, &viewer))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    assert!(
        !is_allowed(&leash.check(post()).await),
        "a refused reload loaded nothing"
    );
    let reply = control
        .reload_policy(with_token(ReloadPolicyRequest {}, &operator))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied, "{reply:?}");
    assert!(is_allowed(&leash.check(post()).await));
}

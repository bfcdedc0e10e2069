//! The hostile corpus (`cases/hostile.yaml`): requests an agent shapes to get past
//! leash, and benign ones that must still pass. Each is decided three ways: in process
//! (a CheckRequest as Envoy builds it), and as raw bytes through a real Envoy on the
//! shipped bootstrap and on the same bootstrap without its hardening. The tool behind
//! Envoy records what reaches it: no header of the client's under `x-leash-` ever may.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::Leash;
use common::envoy::{Envoy, LeashAddr, Upstream, require_envoy};
use common::keys::{jwks, signing_key};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jsonwebtoken::Algorithm;
use leash::token::mint::SigningKey;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: &str = include_str!("../cases/hostile.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    /// The Host header; `null` sends none.
    #[serde(default = "default_host")]
    host: Option<String>,
    /// Headers as sent, in order; a name may repeat.
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    /// `PAD` in the path, a header value or the body stands for this many `x`s.
    #[serde(default)]
    pad: usize,
    /// `none`, or claims merged into the default token's (`null` removes one).
    #[serde(default)]
    token: Token,
    /// Claims merged into a transaction token's, sent beside the access token.
    #[serde(default)]
    txn: Option<Value>,
    /// Read by a leash with `request.allow_encoded_slashes` behind a bootstrap that
    /// keeps them (`path_with_escaped_slashes_action: KEEP_UNCHANGED`).
    #[serde(default)]
    encoded_slashes: bool,
    /// In process, and through Envoy unless overridden below.
    expect: Expect,
    /// Through the shipped bootstrap, where it decides differently.
    #[serde(default)]
    shipped: Option<Expect>,
    /// Through the bootstrap without its hardening, where it decides differently.
    #[serde(default)]
    plain: Option<Expect>,
}

fn get() -> String {
    "GET".into()
}

fn default_host() -> Option<String> {
    Some("tools.example".into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Token {
    #[default]
    Default,
    Named(String),
    Claims(serde_json::Map<String, Value>),
}

/// `allow`, a deny reason code, or the status Envoy answers without asking leash.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
enum Expect {
    Status(u16),
    Outcome(String),
}

const AGENT_SCOPES: &str = "tool:search:read tool:create_ticket:write \
    tool:delete_repository:destructive host:tools:write rule:repo-delete:destructive \
    rule:crm-export:read";

fn config(key: &SigningKey) -> String {
    let keys = jwks(&[(key, "k1")]);
    format!(
        r#"
response: {{ reason_header: x-leash-reason }}
log: {{ decisions: "off" }}
policy: {{ watch_interval: 0s }}
tokens:
  unauthenticated:
    - {{ name: public, paths: ["/public/**"], methods: [GET] }}
  issuers:
    - {{ issuer: "https://idp.test", audiences: [tools], algorithms: [ES256], jwks: {keys},
        require_workload_binding: false }}
    - {{ issuer: "https://bound.test", audiences: [tools], algorithms: [ES256], jwks: {keys},
        workload_claim: spiffe_id }}
    - {{ issuer: "https://txn.test", kind: transaction, audiences: [tools], algorithms: [ES256],
        jwks: {keys}, workload_claim: req_wl }}
actions:
  rules:
    - {{ name: repo-delete, paths: ["/api/repos/*/delete"], methods: [POST], class: destructive }}
    - {{ name: repo-archive, paths: ["/api/repos/*:archive"], methods: [POST], class: destructive }}
    - {{ name: crm-export, hosts: [crm.example.com], paths: ["/api/exports/**"], methods: [POST],
        class: read, tags: [export] }}
  tools:
    search: {{ class: read }}
    create_ticket: {{ class: write }}
    delete_repository: {{ class: destructive }}
"#
    )
}

/// Claims patched by `patch`: `null` removes a claim.
fn patched(
    mut claims: serde_json::Map<String, Value>,
    patch: Option<&Value>,
) -> serde_json::Map<String, Value> {
    if let Some(Value::Object(patch)) = patch {
        for (k, v) in patch {
            if v.is_null() {
                claims.remove(k);
            } else {
                claims.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

fn tokens(case: &Case, key: &SigningKey) -> Vec<(String, String)> {
    let now = leash::clock::unix_now();
    let mut headers = Vec::new();
    let patch = match &case.token {
        Token::Named(none) if none == "none" => return headers,
        Token::Named(other) => panic!("{}: token {other:?} is not `none`", case.name),
        Token::Default => None,
        Token::Claims(claims) => Some(Value::Object(claims.clone())),
    };
    let access = patched(
        json!({
            "iss": "https://idp.test", "aud": "tools", "sub": "alice", "act": {"sub": "planner"},
            "task_id": "t-1", "iat": now, "exp": now + 600, "scope": AGENT_SCOPES,
        })
        .as_object()
        .unwrap()
        .clone(),
        patch.as_ref(),
    );
    let token = key.sign(&access, Some("k1"), None).unwrap();
    headers.push(("authorization".into(), format!("Bearer {token}")));
    if let Some(txn) = &case.txn {
        let claims = patched(
            json!({"iss": "https://txn.test", "aud": "tools", "sub": "alice", "txn": "t-1",
                   "iat": now, "exp": now + 300})
            .as_object()
            .unwrap()
            .clone(),
            Some(txn),
        );
        let token = key.sign(&claims, Some("k1"), Some("txntoken+jwt")).unwrap();
        headers.push(("txn-token".into(), token));
    }
    if !case
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-agent-task"))
    {
        headers.push(("x-agent-task".into(), "t-1".into()));
    }
    headers
}

impl Case {
    fn padded(&self, text: &str) -> String {
        if self.pad == 0 {
            text.to_owned()
        } else {
            text.replace("PAD", &"x".repeat(self.pad))
        }
    }

    fn body(&self) -> String {
        self.padded(&self.body)
    }

    fn path(&self) -> String {
        self.padded(&self.path)
    }

    /// The case's headers, then the credentials.
    fn headers(&self, credentials: &[(String, String)]) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.clone(), self.padded(v)))
            .chain(credentials.iter().cloned())
            .collect()
    }

    /// The CheckRequest Envoy builds for this request behind the shipped route.
    fn check_request(&self, credentials: &[(String, String)]) -> CheckRequest {
        let body = self.body();
        let mut headers: HashMap<String, String> = HashMap::new();
        let mut add = |name: &str, value: &str| {
            headers
                .entry(name.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        };
        if let Some(host) = &self.host {
            add(":authority", host);
        }
        let path = self.path();
        add(":method", &self.method);
        add(":path", &path);
        add(":scheme", "http");
        for (k, v) in &self.headers(credentials) {
            if k.eq_ignore_ascii_case("host") {
                add(":authority", v);
            } else {
                add(k, v);
            }
        }
        if !body.is_empty() {
            add("content-length", &body.len().to_string());
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: self.method.clone(),
                        path,
                        host: self.host.clone().unwrap_or_default(),
                        scheme: "http".into(),
                        protocol: "HTTP/1.1".into(),
                        body,
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("leash_resource".to_owned(), "tools".to_owned())].into(),
                ..Default::default()
            }),
        }
    }

    /// The request as bytes on the wire, exactly as written.
    fn raw(&self, credentials: &[(String, String)]) -> Vec<u8> {
        let body = self.body();
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path()).into_bytes();
        if let Some(host) = &self.host {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (k, v) in &self.headers(credentials) {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if !body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// What came back through Envoy: the status and leash's reason header, if any.
async fn send_raw(listener: SocketAddr, raw: &[u8]) -> (u16, Option<String>) {
    let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut response = Vec::new();
    // Envoy may answer (400, 431) before reading all of a request it refuses.
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reason = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-leash-reason")
            .then(|| v.trim().to_owned())
    });
    (status, reason)
}

fn cases() -> Vec<Case> {
    let cases: Vec<Case> = yaml_serde::from_str(CASES).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert(&case.name),
            "two cases are named {:?}",
            case.name
        );
    }
    cases
}

fn outcome(resp: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> String {
    if common::is_allowed(resp) {
        "allow".into()
    } else {
        common::reason(resp).unwrap_or_else(|| "deny without a reason".into())
    }
}

/// A response with what differs per Check taken out, to compare: the decision id in
/// the metadata, an approval's id, address and deadline (each leash records its own),
/// and a minted credential and its `jti` (each leash signs with its own key).
fn without_decision_id(
    mut resp: envoy_types::pb::envoy::service::auth::v3::CheckResponse,
) -> String {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    if let Some(meta) = resp.dynamic_metadata.as_mut() {
        meta.fields.remove("decision_id");
        meta.fields.remove("minted_jti");
    }
    if let Some(HttpResponse::OkResponse(ok)) = resp.http_response.as_mut() {
        for option in &mut ok.headers {
            if let Some(h) = option.header.as_mut().filter(|h| h.key == "authorization") {
                h.value = "(minted per leash)".into();
            }
        }
    }
    if let Some(HttpResponse::DeniedResponse(denied)) = resp.http_response.as_mut() {
        if let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&denied.body) {
            if let Some(approval) = body.get_mut("approval").and_then(|a| a.as_object_mut()) {
                for field in ["id", "status_url", "expires_at"] {
                    approval.insert(field.into(), "(per leash)".into());
                }
                denied.body = body.to_string();
            }
        }
    }
    format!("{resp:?}")
}

/// The two leashes of the corpus: as configured, and with encoded slashes allowed.
async fn leashes(key: &SigningKey) -> (Leash, Leash) {
    let yaml = config(key);
    let strict = Leash::start_yaml(&yaml, &[("tokens.mode", "required")]).await;
    let lenient = Leash::start_yaml(
        &yaml,
        &[
            ("tokens.mode", "required"),
            ("request.allow_encoded_slashes", "true"),
        ],
    )
    .await;
    (strict, lenient)
}

#[tokio::test]
async fn every_hostile_request_is_decided_as_written_in_process() {
    let cases = cases();
    let hostile = cases
        .iter()
        .filter(|c| c.expect != Expect::Outcome("allow".into()))
        .count();
    assert!(hostile >= 60, "the corpus has {hostile} hostile requests");
    let key = signing_key(Algorithm::ES256);
    let (strict, lenient) = leashes(&key).await;
    // The shipped library is decided in Rust; the Rego it stands for, on the VM, must
    // answer every request of the corpus with the very same response.
    let rego = Leash::start_yaml(
        &config(&key),
        &[("tokens.mode", "required"), ("policy.engine", "vm")],
    )
    .await;
    let mut failures = Vec::new();
    for case in &cases {
        let leash = if case.encoded_slashes {
            &lenient
        } else {
            &strict
        };
        let Expect::Outcome(expected) = &case.expect else {
            panic!(
                "{}: in process, expect is allow or a reason code",
                case.name
            );
        };
        let credentials = tokens(case, &key);
        let resp = leash.check(case.check_request(&credentials)).await;
        let got = outcome(&resp);
        if got != *expected {
            failures.push(format!("{}: expected {expected}, got {got}", case.name));
        }
        if !case.encoded_slashes {
            let by_rego = rego.check(case.check_request(&credentials)).await;
            if without_decision_id(resp) != without_decision_id(by_rego) {
                failures.push(format!("{}: the VM answers otherwise", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bootstrap edits that undo its hardening.
const UNHARDENED: [(&str, &str); 5] = [
    ("normalize_path: true", ""),
    ("merge_slashes: true", ""),
    ("path_with_escaped_slashes_action: REJECT_REQUEST", ""),
    ("common_http_protocol_options:", ""),
    ("headers_with_underscores_action: REJECT_REQUEST", ""),
];

#[tokio::test]
async fn every_hostile_request_is_decided_as_written_through_envoy() {
    let Some(binary) = require_envoy() else {
        return;
    };
    let cases = cases();
    let key = signing_key(Algorithm::ES256);
    let (strict, lenient) = leashes(&key).await;
    let upstream = Upstream::start().await;
    let shipped = Envoy::start(&binary, &LeashAddr::Tcp(strict.grpc), upstream.addr).await;
    let plain = Envoy::start_edited(
        &binary,
        &LeashAddr::Tcp(strict.grpc),
        upstream.addr,
        &UNHARDENED,
    )
    .await;
    let keeps_slashes = Envoy::start_edited(
        &binary,
        &LeashAddr::Tcp(lenient.grpc),
        upstream.addr,
        &[(
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
        )],
    )
    .await;

    let mut failures = Vec::new();
    for case in &cases {
        let runs: Vec<(&str, &Envoy, &Expect)> = if case.encoded_slashes {
            vec![("keeping encoded slashes", &keeps_slashes, &case.expect)]
        } else {
            vec![
                (
                    "shipped",
                    &shipped,
                    case.shipped.as_ref().unwrap_or(&case.expect),
                ),
                (
                    "unhardened",
                    &plain,
                    case.plain.as_ref().unwrap_or(&case.expect),
                ),
            ]
        };
        for (bootstrap, envoy, expected) in runs {
            let hits = upstream.hits();
            let raw = case.raw(&tokens(case, &key));
            let (status, reason) = send_raw(envoy.listener, &raw).await;
            let reached = upstream.hits() - hits;
            let ok = match expected {
                Expect::Outcome(allow) if allow == "allow" => status == 200 && reached == 1,
                Expect::Outcome(code) => {
                    status == 403 && reason.as_deref() == Some(code) && reached == 0
                }
                Expect::Status(want) => status == *want && reached == 0,
            };
            if !ok {
                failures.push(format!(
                    "{} ({bootstrap}): expected {expected:?}, got status {status}, reason {reason:?}, {reached} upstream requests",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Whatever the client sent under leash's prefix, the tool never saw it; what it did
    // see there, leash set from the verified token.
    let seen = upstream.seen.lock().unwrap();
    assert!(
        seen.iter().any(|s| s.header("x-leash-agent") == ["planner"]
            && s.header("x-leash-human") == ["alice"]
            && s.header("x-leash-task") == ["t-1"]),
        "no allowed request carried the identity leash verified"
    );
    for seen in seen.iter() {
        for (name, value) in &seen.headers {
            assert!(
                !(leash::decision::is_leash_header(name) && value.contains("forged")),
                "the tool received the client's {name}: {value} ({} {})",
                seen.method,
                seen.uri
            );
        }
    }
}

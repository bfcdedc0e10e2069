//! Agent identity end to end: agents with workload certificates call tools through
//! Envoy's mTLS listener (the shipped `envoy-mtls.yaml`); leash verifies their tokens
//! against an identity provider's JWKS served over HTTPS, binds them to the
//! certificate and the task, and decides with the embedded governance library.

use crate::common;

use std::sync::Arc;

use common::LeashProcess;
use common::envoy::{Envoy, LeashAddr, Response, Upstream, require_envoy};
use common::jwks::JwksServer;
use common::keys::{bearer, claims, jwks, sign_edited, signing_key};
use common::pki::{Ca, Issued, client_config};
use jsonwebtoken::Algorithm;
use leash::token::mint::{SigningKey, act_chain, certificate_thumbprint};
use serde_json::{Map, Value, json};

const ISS: &str = "https://idp.test";
const AUD: &str = "tools.test";
const AGENT_A: &str = "spiffe://test/ns/agents/sa/planner";
const AGENT_B: &str = "spiffe://test/ns/agents/sa/intruder";

struct World {
    idp: SigningKey,
    jwks: JwksServer,
    leash: LeashProcess,
    envoy: Envoy,
    upstream: Upstream,
    agent_a: Issued,
    tls_a: Arc<rustls::ClientConfig>,
    tls_b: Arc<rustls::ClientConfig>,
    now: i64,
    _dir: tempfile::TempDir,
}

async fn world() -> Option<World> {
    let envoy_bin = require_envoy()?;
    let ca = Ca::new("leash test CA");
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let server = ca.server();
    std::fs::write(tls.join("server.pem"), &server.cert).unwrap();
    std::fs::write(tls.join("server-key.pem"), &server.key).unwrap();
    std::fs::write(tls.join("agents-ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("idp-ca.pem"), &ca.pem).unwrap();
    std::fs::create_dir_all(dir.path().join("policy")).unwrap();

    let idp = signing_key(Algorithm::RS256);
    let jwks_server = JwksServer::start(&ca, jwks(&[(&idp, "k1")])).await;
    let config = format!(
        r#"
policy:
  library: embedded
  dir: {dir}/policy
  watch_interval: 0s
response:
  reason_header: x-leash-reason
log:
  decisions: all
tokens:
  mode: required
  key_wait: 2s
  issuers:
    - issuer: {ISS}
      audiences: [{AUD}]
      algorithms: [RS256, EdDSA]
      jwks_url: {url}
      jwks_ca_file: {dir}/idp-ca.pem
      refresh: 1h
      min_refetch: 1s
      workload_claim: spiffe_id
      max_lifetime: 15m
      leeway: 5s
actions:
  tools:
    search: {{ class: read }}
    delete_repo: {{ class: destructive }}
"#,
        dir = dir.path().display(),
        url = jwks_server.url(),
    );
    let config_path = dir.path().join("leash.yaml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.display().to_string();
    let leash = LeashProcess::start(&["-c", &config_arg, "--set", "tokens.mode=required"]).await;
    leash
        .wait_log(|l| l["message"] == "issuer keys loaded")
        .await
        .expect("leash fetched the issuer's keys");

    let upstream = Upstream::start().await;
    let envoy =
        Envoy::start_mtls(&envoy_bin, &LeashAddr::Tcp(leash.grpc), upstream.addr, &tls).await;
    let agent_a = ca.workload(AGENT_A);
    let agent_b = ca.workload(AGENT_B);
    Some(World {
        tls_a: Arc::new(client_config(&ca, Some(&agent_a))),
        tls_b: Arc::new(client_config(&ca, Some(&agent_b))),
        idp,
        jwks: jwks_server,
        leash,
        envoy,
        upstream,
        agent_a,
        now: leash::clock::unix_now(),
        _dir: dir,
    })
}

fn tool_call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"q": "x"}}})
        .to_string()
}

impl World {
    /// Claims of a token agent A holds for task t-1, delegated by alice through `planner`.
    fn claims(&self) -> Map<String, Value> {
        claims(json!({
            "iss": ISS, "aud": AUD, "sub": "alice",
            "iat": self.now, "exp": self.now + 300, "jti": uuid(),
            "task_id": "t-1", "spiffe_id": AGENT_A,
            "scope": "tool:search:read tool:delete_repo:destructive",
            "act": {"sub": "planner"},
        }))
    }

    fn token(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        sign_edited(&self.idp, "k1", self.claims(), edit)
    }

    /// An MCP call to `tool` as agent A (or B), with `authorization` and task t-1.
    async fn call(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        tool: &str,
        authorization: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
            ("x-agent-task", "t-1"),
            ("authorization", authorization),
        ];
        headers.extend_from_slice(extra);
        self.envoy
            .send_tls(tls, "POST", "/mcp", &headers, &tool_call(tool))
            .await
    }

    /// A call to `tool` as agent A with exactly `headers`.
    async fn post_mcp(&self, headers: &[(&str, &str)], tool: &str) -> Response {
        self.envoy
            .send_tls(&self.tls_a, "POST", "/mcp", headers, &tool_call(tool))
            .await
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_bound_token_reaches_the_tool_and_the_policy_sees_who_acts() {
    let Some(w) = world().await else { return };
    let resp = w
        .call(&w.tls_a, "search", &bearer(&w.token(|_| {})), &[])
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = w.upstream.last().unwrap();
    assert_eq!(seen.header("x-leash-agent"), vec!["planner"]);
    assert_eq!(seen.header("x-leash-human"), vec!["alice"]);
    assert_eq!(seen.header("x-leash-task"), vec!["t-1"]);

    // A nested act chain reaches the policy: two agents deep is within the limit...
    let two = w.token(|c| {
        c.insert(
            "act".into(),
            act_chain(&["planner".into(), "orchestrator".into()]).unwrap(),
        );
    });
    assert_eq!(
        w.call(&w.tls_a, "search", &bearer(&two), &[]).await.status,
        200
    );
    // ...three is not.
    let three = w.token(|c| {
        c.insert(
            "act".into(),
            act_chain(&["planner".into(), "orchestrator".into(), "ui".into()]).unwrap(),
        );
    });
    let resp = w.call(&w.tls_a, "search", &bearer(&three), &[]).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("x-leash-reason"), Some("policy.denied"));
    assert!(
        resp.body
            .contains("a delegation chain of 3 agents exceeds the limit of 2"),
        "{}",
        resp.body
    );

    // The decision log names the human, the agent, the task and the action.
    let logged = w
        .leash
        .wait_log(|l| l["message"] == "decision" && l["decision"] == "allow")
        .await
        .unwrap();
    assert_eq!(
        (logged["human"].as_str(), logged["agent"].as_str()),
        (Some("alice"), Some("planner"))
    );
    assert_eq!(
        (
            logged["task"].as_str(),
            logged["action"].as_str(),
            logged["tool"].as_str()
        ),
        (Some("t-1"), Some("read"), Some("search"))
    );
}

#[tokio::test]
async fn a_destructive_tool_is_denied_while_a_read_tool_passes() {
    let Some(w) = world().await else { return };
    let token = w.token(|_| {});
    let hits = w.upstream.hits();
    let resp = w.call(&w.tls_a, "delete_repo", &bearer(&token), &[]).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.body
            .contains("destructive action on tool:delete_repo needs an explicit grant"),
        "{}",
        resp.body
    );
    assert_eq!(w.upstream.hits(), hits);
    assert_eq!(
        w.call(&w.tls_a, "search", &bearer(&token), &[])
            .await
            .status,
        200
    );
    // A tool the operator's table does not list is refused, whatever it claims to be.
    let resp = w.call(&w.tls_a, "mystery", &bearer(&token), &[]).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.body
            .contains("tool mystery is not in the operator's tool table"),
        "{}",
        resp.body
    );
    // Headers that disagree with the body are refused before policy.
    let resp = w
        .post_mcp(
            &[
                ("content-type", "application/json"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "search"),
                ("x-agent-task", "t-1"),
                ("authorization", &bearer(&token)),
            ],
            "delete_repo",
        )
        .await;
    assert_eq!(resp.header("x-leash-reason"), Some("mcp.header_mismatch"));
}

#[tokio::test]
async fn every_hard_denial_reaches_the_client_with_its_reason() {
    let Some(w) = world().await else { return };
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&Value::Object(w.claims()))
    );
    let public_jwk = w.idp.public_jwk(Some("k1")).unwrap().to_string();
    let confused = SigningKey::from_pem(Algorithm::HS256, public_jwk.as_bytes())
        .unwrap()
        .sign(&w.claims(), Some("k1"), None)
        .unwrap();
    let cert_bound = w.token(|c| {
        c.remove("spiffe_id");
        c.insert(
            "cnf".into(),
            json!({"x5t#S256": certificate_thumbprint(&w.agent_a.cert).unwrap()}),
        );
    });
    let now = w.now;
    let cases: Vec<(&str, String, &Arc<rustls::ClientConfig>, &str)> = vec![
        ("alg none", unsigned, &w.tls_a, "token.alg_not_allowed"),
        (
            "HS256 with the RSA public key",
            confused,
            &w.tls_a,
            "token.alg_not_allowed",
        ),
        (
            "expired",
            w.token(|c| {
                c.insert("iat".into(), json!(now - 900));
                c.insert("exp".into(), json!(now - 600));
            }),
            &w.tls_a,
            "token.expired",
        ),
        (
            "not yet valid",
            w.token(|c| {
                c.insert("nbf".into(), json!(now + 120));
            }),
            &w.tls_a,
            "token.not_yet_valid",
        ),
        (
            "wrong audience",
            w.token(|c| {
                c.insert("aud".into(), json!("elsewhere.test"));
            }),
            &w.tls_a,
            "token.wrong_audience",
        ),
        (
            "over-long lifetime",
            w.token(|c| {
                c.insert("exp".into(), json!(now + 86_400));
            }),
            &w.tls_a,
            "token.lifetime_exceeded",
        ),
        (
            "another task",
            w.token(|c| {
                c.insert("task_id".into(), json!("t-2"));
            }),
            &w.tls_a,
            "binding.task_mismatch",
        ),
        (
            "another workload's token",
            w.token(|_| {}),
            &w.tls_b,
            "binding.workload_mismatch",
        ),
        (
            "certificate-bound token from another certificate",
            cert_bound.clone(),
            &w.tls_b,
            "binding.workload_mismatch",
        ),
    ];
    for (name, token, tls, reason) in cases {
        let resp = w.call(tls, "search", &bearer(&token), &[]).await;
        assert_eq!(resp.status, 403, "{name}: {resp:?}");
        assert_eq!(resp.header("x-leash-reason"), Some(reason), "{name}");
    }
    // The certificate-bound token does pass from its own certificate.
    assert_eq!(
        w.call(&w.tls_a, "search", &bearer(&cert_bound), &[])
            .await
            .status,
        200
    );
    let resp = w
        .post_mcp(
            &[
                ("x-agent-task", "t-1"),
                ("content-type", "application/json"),
            ],
            "search",
        )
        .await;
    assert_eq!(resp.header("x-leash-reason"), Some("token.missing"));
    // The request's own shape is checked first: a malformed MCP call without a token
    // is refused for what it is.
    let resp = w
        .post_mcp(
            &[("x-agent-task", "t-1"), ("content-type", "text/plain")],
            "search",
        )
        .await;
    assert_eq!(resp.header("x-leash-reason"), Some("mcp.invalid_request"));
    assert_eq!(
        w.upstream.hits(),
        1,
        "only the one good request reached the tool"
    );
}

#[tokio::test]
async fn a_dpop_proof_is_good_once() {
    let Some(w) = world().await else { return };
    let holder = signing_key(Algorithm::ES256);
    let token = w.token(|c| {
        c.remove("spiffe_id");
        c.insert("cnf".into(), json!({"jkt": holder.thumbprint().unwrap()}));
    });
    let proof = holder
        .dpop_proof("POST", "https://tools.example/mcp", &token, w.now, &uuid())
        .unwrap();
    let dpop = format!("DPoP {token}");
    let first = w.call(&w.tls_a, "search", &dpop, &[("dpop", &proof)]).await;
    assert_eq!(first.status, 200, "{first:?}");
    let replay = w.call(&w.tls_a, "search", &dpop, &[("dpop", &proof)]).await;
    assert_eq!(replay.status, 403);
    assert_eq!(replay.header("x-leash-reason"), Some("dpop.replay"));
    let fresh = holder
        .dpop_proof("POST", "https://tools.example/mcp", &token, w.now, &uuid())
        .unwrap();
    assert_eq!(
        w.call(&w.tls_a, "search", &dpop, &[("dpop", &fresh)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_rotated_jwks_is_picked_up_without_restart() {
    let Some(w) = world().await else { return };
    let next = signing_key(Algorithm::EdDSA);
    w.jwks.publish(jwks(&[(&w.idp, "k1"), (&next, "k2")]));
    let fetches = w.jwks.fetches();
    let token = next.sign(&w.claims(), Some("k2"), None).unwrap();
    let resp = w.call(&w.tls_a, "search", &bearer(&token), &[]).await;
    assert_eq!(
        resp.status, 200,
        "the first request with the new key passes: {resp:?}"
    );
    assert!(
        w.jwks.fetches() > fetches,
        "the unknown kid made leash fetch the JWKS"
    );
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_keys_already_loaded() {
    let Some(w) = world().await else { return };
    w.jwks.stop();
    // A token leash has never seen, signed with the known key: verified with cached keys.
    let fresh = w.token(|_| {});
    assert_eq!(
        w.call(&w.tls_a, "search", &bearer(&fresh), &[])
            .await
            .status,
        200
    );
    // A key the outage hides stays unknown, and the request is refused, not waved through.
    let stranger = signing_key(Algorithm::RS256);
    let token = stranger.sign(&w.claims(), Some("k9"), None).unwrap();
    let resp = w.call(&w.tls_a, "search", &bearer(&token), &[]).await;
    assert_eq!(resp.header("x-leash-reason"), Some("token.unknown_key"));
    let warned = w
        .leash
        .wait_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("keeping the 1 keys already loaded"))
        })
        .await;
    assert!(warned.is_some(), "leash said it kept the old keys");
}

#[tokio::test]
async fn an_oversized_jwks_is_refused_and_the_old_keys_kept() {
    let Some(w) = world().await else { return };
    let next = signing_key(Algorithm::EdDSA);
    // A valid key set, padded past what any real JWKS needs.
    let doc = jwks(&[(&w.idp, "k1"), (&next, "k2")]);
    w.jwks
        .publish(format!("{doc}{}", " ".repeat(2 * 1024 * 1024)));
    let token = next.sign(&w.claims(), Some("k2"), None).unwrap();
    let resp = w.call(&w.tls_a, "search", &bearer(&token), &[]).await;
    assert_eq!(resp.header("x-leash-reason"), Some("token.unknown_key"));
    let warned = w
        .leash
        .wait_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("exceeds") && m.contains("keeping the 1 keys"))
        })
        .await;
    assert!(warned.is_some(), "leash said why it kept the old keys");
    // The keys it had still verify.
    let known = w.token(|_| {});
    assert_eq!(
        w.call(&w.tls_a, "search", &bearer(&known), &[])
            .await
            .status,
        200
    );
}

/// A JWKS endpoint may move within its origin; a redirect to another origin would let
/// whoever answers first choose the keys, so leash does not follow it.
#[tokio::test]
async fn jwks_redirects_are_followed_only_within_the_origin() {
    let ca = Ca::new("redirect CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let idp = signing_key(Algorithm::EdDSA);
    let home = JwksServer::start(&ca, jwks(&[(&idp, "k1")])).await;
    let elsewhere = JwksServer::start(&ca, jwks(&[(&idp, "k1")])).await;
    let loaded = async |url: String| {
        let yaml = format!(
            "tokens:\n  issuers:\n    - {{ issuer: {ISS}, audiences: [{AUD}], algorithms: [EdDSA], jwks_url: \"{url}\", jwks_ca_file: {} }}\n",
            ca_file.display()
        );
        let config = leash::config::Config::from_yaml("t.yaml", &yaml, &[]).unwrap();
        let auth = leash::token::Authenticator::new(config.tokens.settings).unwrap();
        auth.load_key_sources().await.unwrap();
        auth.issuers()[0].keys().len()
    };
    home.redirect_to("/moved.json");
    assert_eq!(
        loaded(home.url()).await,
        1,
        "a same-origin redirect is followed"
    );
    home.redirect_to(&elsewhere.url());
    let asked = elsewhere.fetches();
    assert_eq!(loaded(home.url()).await, 0, "no keys from another origin");
    assert_eq!(
        elsewhere.fetches(),
        asked,
        "the other origin was never asked"
    );
}

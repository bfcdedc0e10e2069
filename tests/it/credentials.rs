//! Per-invocation credentials: a token minted for one call replaces the agent's on the
//! upstream request. Verified here as a tool would: with jsonwebtoken and the JWKS
//! leash's admin port publishes, never with leash's own code.

use crate::common;

use std::time::Duration;

use common::envoy::{Governed, governed};
use common::keys::{bearer, claims, jwks, signing_key};
use common::{Leash, PolicyDir, eventually, is_allowed, metadata_string, reason};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, check_response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use leash::token::mint::SigningKey;
use serde_json::{Value, json};

const ISS: &str = "https://idp.credentials";

/// An issuer the sidecar trusts, and operator rules naming two upstream routes.
struct Issuer {
    key: SigningKey,
    yaml: String,
}

fn issuer(extra_yaml: &str) -> Issuer {
    let key = signing_key(Algorithm::EdDSA);
    let yaml = format!(
        "tokens:
  mode: required
  issuers:
    - issuer: {ISS}
      audiences: [tools]
      algorithms: [EdDSA]
      require_workload_binding: false
      jwks: {}
  unauthenticated:
    - {{name: open, paths: [\"/open/**\"]}}
actions:
  rules:
    - {{name: issues, paths: [\"/issues/**\"], methods: [POST], class: write, allow_opaque_body: true}}
    - {{name: repos, paths: [\"/repos/**\"], methods: [GET], class: read}}
{extra_yaml}",
        jwks(&[(&key, "k1")])
    );
    Issuer { key, yaml }
}

impl Issuer {
    /// Agent `planner`, acting for `alice` on task t-1, with scopes for both routes.
    fn token(&self, jti: &str) -> String {
        let now = leash::clock::unix_now();
        let claims = claims(json!({
            "iss": ISS, "aud": "tools", "sub": "alice", "act": {"sub": "planner"},
            "task_id": "t-1", "jti": jti, "scope": "rule:issues:write rule:repos:read",
            "iat": now - 5, "exp": now + 600,
        }));
        self.key.sign(&claims, Some("k1"), None).unwrap()
    }
}

fn call(method: &str, path: &str, token: &str, extra: &[(&str, &str)], body: &str) -> CheckRequest {
    let auth = bearer(token);
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("x-agent-task", "t-1"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    common::request_with_body(method, path, &headers, body)
}

/// The value the OK response sets `name` to, if it sets it.
fn set_header(resp: &CheckResponse, name: &str) -> Option<String> {
    let Some(check_response::HttpResponse::OkResponse(ok)) = &resp.http_response else {
        return None;
    };
    ok.headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.clone())
}

fn removed(resp: &CheckResponse) -> Vec<String> {
    match &resp.http_response {
        Some(check_response::HttpResponse::OkResponse(ok)) => ok.headers_to_remove.clone(),
        _ => Vec::new(),
    }
}

/// The claims of `token` after verifying it as a tool would: the signature against
/// `jwks`, the audience, the issuer and the expiry.
fn verify(token: &str, jwks: &str, audience: &str, issuer: &str) -> Result<Value, String> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = set
        .find(header.kid.as_deref().ok_or("no kid")?)
        .ok_or("the JWKS lacks the token's key")?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

fn minted(resp: &CheckResponse) -> String {
    set_header(resp, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .expect("a minted credential in the OK response")
}

#[tokio::test]
async fn a_write_carries_a_credential_minted_for_it_alone() {
    let issuer = issuer(
        "credentials:\n  mint:\n    - {resources: [\"rule:repos\"], audience: https://repos.internal, ttl: 30s}\n",
    );
    let leash = Leash::start_yaml(&issuer.yaml, &[("tokens.mode", "required")]).await;
    let agent_token = issuer.token("a-1");

    // The library mints for writes by default.
    let resp = leash
        .check(call(
            "POST",
            "/issues/7",
            &agent_token,
            &[],
            r#"{"title":"x"}"#,
        ))
        .await;
    assert!(is_allowed(&resp), "{:?}", reason(&resp));
    let token = minted(&resp);
    assert_ne!(token, agent_token);
    for header in ["dpop", "txn-token"] {
        assert!(removed(&resp).contains(&header.to_owned()), "{header}");
    }
    let (status, jwks) = leash.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let (status, discovery) = leash.admin_get("/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    let discovery: Value = serde_json::from_str(&discovery).unwrap();
    assert_eq!(discovery["issuer"], "leash");
    assert!(
        discovery["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/.well-known/jwks.json")
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    let claims = verify(&token, &jwks, "tools.example", "leash").unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"], json!({"sub": "planner"}));
    assert_eq!(claims["scope"], "rule:issues:write");
    assert_eq!(claims["task_id"], "t-1");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert_eq!(
        metadata_string(&resp, "minted_jti").as_deref(),
        claims["jti"].as_str()
    );
    // Not for another tool: the audience is this host's.
    assert!(verify(&token, &jwks, "other.example", "leash").is_err());

    // A read keeps the agent's token, unless the configuration asks: here for repos.
    let resp = leash
        .check(call("GET", "/repos/1", &agent_token, &[], ""))
        .await;
    let token = minted(&resp);
    let claims = verify(&token, &jwks, "https://repos.internal", "leash").unwrap();
    assert_eq!(claims["scope"], "rule:repos:read");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30
    );
    assert_eq!(leash.metric("leash_credentials_minted_total").await, 2.0);
    // The agent's token was verified once, then found in the cache.
    assert_eq!(leash.metric("leash_token_cache_misses_total").await, 1.0);
    assert_eq!(leash.metric("leash_token_cache_hits_total").await, 1.0);
}

#[tokio::test]
async fn the_agents_token_anywhere_the_tool_could_read_it_is_refused_while_minting() {
    let issuer = issuer("");
    let leash = Leash::start_yaml(&issuer.yaml, &[("tokens.mode", "required")]).await;
    let token = issuer.token("a-2");
    let exposed = [
        call("POST", "/issues/7?access_token=x", &token, &[], "{}"),
        call("POST", "/issues/7", &token, &[("x-api-key", &token)], "{}"),
        call(
            "POST",
            "/issues/7",
            &token,
            &[],
            &json!({"note": token}).to_string(),
        ),
    ];
    for req in exposed {
        let resp = leash.check(req).await;
        assert_eq!(reason(&resp).as_deref(), Some("mint.token_exposed"));
    }
    // A body Envoy sent only in part: its rest could hold the token.
    let resp = leash
        .check(call(
            "POST",
            "/issues/7",
            &token,
            &[("x-envoy-auth-partial-body", "true")],
            "{}",
        ))
        .await;
    assert_eq!(reason(&resp).as_deref(), Some("mint.token_exposed"));
    assert_eq!(
        leash
            .metric("leash_credential_mint_failures_total{reason=\"mint.token_exposed\"}")
            .await,
        4.0
    );
    // Where no credential is minted (a read), the parameter is the tool's business.
    let resp = leash
        .check(call("GET", "/repos/1?access_token=x", &token, &[], ""))
        .await;
    assert!(is_allowed(&resp), "{:?}", reason(&resp));
    assert_eq!(set_header(&resp, "authorization"), None);
}

/// leash in process, trusting `issuer` and serving `rego` as its policy.
async fn serving(issuer: &Issuer, rego: &str) -> (Leash, PolicyDir) {
    let policy = PolicyDir::new(&[("authz.rego", rego)]);
    let dir = policy.path_str();
    let leash = Leash::start_yaml(
        &issuer.yaml,
        &[
            ("tokens.mode", "required"),
            ("policy.dir", dir.as_str()),
            ("policy.watch_interval", "0s"),
        ],
    )
    .await;
    (leash, policy)
}

/// Mints when the request's `x-ask` header (JSON) says how.
const ASKING: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow := {"allowed": true, "mint": json.unmarshal(input.attributes.request.http.headers["x-ask"])}
"#;

#[tokio::test]
async fn a_policy_may_narrow_the_credential_but_never_widen_it() {
    let issuer = issuer("");
    let (leash, _policy) = serving(&issuer, ASKING).await;
    let token = issuer.token("a-3");
    let ask = |json: &str| {
        let json = json.to_owned();
        let token = token.clone();
        let leash = &leash;
        async move {
            leash
                .check(call("POST", "/issues/7", &token, &[("x-ask", &json)], "{}"))
                .await
        }
    };
    let resp = ask(r#"{"ttl": 5, "scope": "rule:issues:read"}"#).await;
    assert!(is_allowed(&resp), "{:?}", reason(&resp));
    let (_, jwks) = leash.admin_get("/.well-known/jwks.json").await;
    let claims = verify(&minted(&resp), &jwks, "tools.example", "leash").unwrap();
    assert_eq!(claims["scope"], "rule:issues:read");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        5
    );

    for wider in [
        r#"{"ttl": 600}"#,
        r#"{"audience": "https://everything.internal"}"#,
        r#"{"scope": "rule:issues:destructive"}"#,
        r#"{"scope": "rule:*:write"}"#,
    ] {
        let resp = ask(wider).await;
        assert_eq!(reason(&resp).as_deref(), Some("mint.widening"), "{wider}");
    }
    let resp = ask(r#"{"sub": "root"}"#).await;
    assert_eq!(reason(&resp).as_deref(), Some("policy.invalid_result"));
}

#[tokio::test]
async fn a_call_no_credential_can_be_minted_for_is_denied() {
    let issuer = issuer("");
    let (leash, _policy) = serving(
        &issuer,
        "package envoy.authz\nimport rego.v1\nallow := {\"allowed\": true, \"mint\": {}}\n",
    )
    .await;
    // An unauthenticated route: no verified token to mint for, and the request is
    // never passed on without one.
    let resp = leash.check(common::request("GET", "/open/docs", &[])).await;
    assert_eq!(reason(&resp).as_deref(), Some("mint.failed"));
    assert_eq!(set_header(&resp, "authorization"), None);
}

#[tokio::test]
async fn keys_rotate_from_the_key_directory_and_the_old_key_lingers_until_its_credentials_expire() {
    let keys = KeyDir::new();
    keys.add("2026-11.pem");
    let issuer = issuer(&keys.yaml(
        "  ttl: 2s\n  rotation_grace: 0s\n  watch_interval: 100ms\n  issuer: https://leash.test\n",
    ));
    let leash = Leash::start_yaml(&issuer.yaml, &[("tokens.mode", "required")]).await;
    let token = issuer.token("a-4");
    let write = || call("POST", "/issues/7", &token, &[], "{}");
    let kid = |resp: &CheckResponse| jsonwebtoken::decode_header(minted(resp)).unwrap().kid;

    let first = leash.check(write()).await;
    let old_kid = kid(&first);
    keys.add("2026-12.pem");
    assert!(
        eventually(Duration::from_secs(10), async || kid(&leash
            .check(write())
            .await)
            != old_kid)
        .await,
        "the newer key never took over"
    );
    let (_, jwks) = leash.admin_get("/.well-known/jwks.json").await;
    verify(
        &minted(&first),
        &jwks,
        "tools.example",
        "https://leash.test",
    )
    .expect("the old key still verifies what it signed");
    assert_eq!(
        leash.metric("leash_credential_key_rotations_total").await,
        1.0
    );
    let old = old_kid.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || !leash
            .admin_get("/.well-known/jwks.json")
            .await
            .1
            .contains(&old))
        .await,
        "the old key stayed published after its credentials expired"
    );
}

/// A key directory as a Secret holds one: PEM Ed25519 keys, added by name.
struct KeyDir(tempfile::TempDir);

impl KeyDir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn add(&self, name: &str) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(self.0.path().join(name), pair.serialize_pem()).unwrap();
    }

    /// `credentials` configuration over this directory, with `extra` keys.
    fn yaml(&self, extra: &str) -> String {
        format!(
            "credentials:\n  keys_dir: {}\n{extra}",
            self.0.path().display()
        )
    }
}

/// The JWKS a tool finds from the admin port's discovery document.
async fn discovered_jwks(admin: std::net::SocketAddr) -> String {
    let (status, discovery) = common::http_get(admin, "/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    let discovery: Value = serde_json::from_str(&discovery).unwrap();
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .unwrap()
        .split_once("//")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap();
    let (status, jwks) = common::http_get(admin, &jwks_path).await;
    assert_eq!(status, 200);
    jwks
}

#[tokio::test]
async fn through_envoy_the_tool_receives_a_minted_credential_and_never_the_agents_token() {
    let keys = KeyDir::new();
    keys.add("2026-11.pem");
    let issuer = issuer(&keys.yaml("  ttl: 3s\n  rotation_grace: 0s\n  watch_interval: 100ms\n"));
    let Some(Governed {
        leash,
        envoy,
        upstream,
        ..
    }) = governed(&issuer.yaml, &[]).await
    else {
        return;
    };

    let agent_token = issuer.token("a-5");
    let auth = bearer(&agent_token);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-agent-task", "t-1"),
        ("content-type", "application/json"),
    ];
    let write = async || {
        let resp = envoy
            .send("POST", "/issues/7", &headers, r#"{"title":"x"}"#)
            .await;
        assert_eq!(resp.status, 200, "{:?}", resp.header("x-leash-reason"));
        let seen = upstream.last().expect("the tool was called");
        let signature = agent_token.rsplit('.').next().unwrap();
        for (name, value) in &seen.headers {
            assert!(
                !value.contains(signature),
                "the agent's token reached the tool in {name}"
            );
        }
        let authorization = seen.header("authorization");
        assert_eq!(authorization.len(), 1);
        authorization[0].strip_prefix("Bearer ").unwrap().to_owned()
    };
    let first = write().await;

    // The tool fetches the keys from the admin port, as any JWT library would. The
    // shipped bootstrap names the upstream (leash_resource: tools), which the agent
    // cannot choose, unlike Host: that name is the audience.
    let jwks = discovered_jwks(leash.admin).await;
    let claims = verify(&first, &jwks, "tools", "leash").unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"], json!({"sub": "planner"}));
    assert_eq!(claims["scope"], "rule:issues:write");
    assert_eq!(claims["task_id"], "t-1");
    let now = leash::clock::unix_now();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 3, "exp {exp}, now {now}");

    // A new key file: it takes over, and what the old key signed still verifies
    // while it lives; then the old key leaves the JWKS.
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let old_kid = kid(&first);
    keys.add("2026-12.pem");
    let mut second = String::new();
    assert!(
        eventually(Duration::from_secs(10), async || {
            second = write().await;
            kid(&second) != old_kid
        })
        .await,
        "the newer key never took over"
    );
    let jwks = discovered_jwks(leash.admin).await;
    verify(&second, &jwks, "tools", "leash").unwrap();
    if leash::clock::unix_now() < exp {
        verify(&first, &jwks, "tools", "leash").expect("the old key verifies what it signed");
    }
    assert!(
        eventually(Duration::from_secs(10), async || !discovered_jwks(
            leash.admin
        )
        .await
        .contains(&old_kid))
        .await,
        "the old key stayed published after its credentials expired"
    );

    // A read through the library keeps the agent's token (reads are not minted by default).
    let resp = envoy.send("GET", "/repos/1", &headers, "").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        upstream.last().unwrap().header("authorization"),
        [auth.as_str()]
    );
}

/// Mints as the request's `x-ask` header (JSON) says; on /open/, with no token at all.
const ASKING_OR_OPEN: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow := {"allowed": true, "mint": json.unmarshal(input.attributes.request.http.headers["x-ask"])} if {
	input.attributes.request.http.headers["x-ask"]
}
allow := {"allowed": true, "mint": {}} if startswith(input.attributes.request.http.path, "/open/")
"#;

#[tokio::test]
async fn through_envoy_a_widening_policy_and_a_failure_to_mint_reach_no_tool() {
    let issuer = issuer("");
    let policy = PolicyDir::new(&[("authz.rego", ASKING_OR_OPEN)]);
    let dir = policy.path_str();
    let Some(Governed {
        leash,
        envoy,
        upstream,
        ..
    }) = governed(&issuer.yaml, &["--policy", dir.as_str()]).await
    else {
        return;
    };
    let token = issuer.token("a-7");
    let auth = bearer(&token);
    let ask = async |json: &str| {
        let headers = [
            ("authorization", auth.as_str()),
            ("x-agent-task", "t-1"),
            ("content-type", "application/json"),
            ("x-ask", json),
        ];
        let resp = envoy.send("POST", "/issues/7", &headers, "{}").await;
        (
            resp.status,
            resp.header("x-leash-reason").map(str::to_owned),
        )
    };
    assert_eq!(
        ask(r#"{"ttl": 600}"#).await,
        (403, Some("mint.widening".to_owned()))
    );
    assert_eq!(
        ask(r#"{"audience": "https://everything.internal"}"#).await,
        (403, Some("mint.widening".to_owned()))
    );
    let resp = envoy.send("GET", "/open/docs", &[], "").await;
    assert_eq!(
        (resp.status, resp.header("x-leash-reason")),
        (403, Some("mint.failed"))
    );
    assert_eq!(upstream.hits(), 0, "a refused call reached the tool");

    assert_eq!(ask(r#"{"ttl": 5}"#).await, (200, None));
    let seen = upstream.last().unwrap();
    let minted = seen.header("authorization")[0]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let claims = verify(
        &minted,
        &discovered_jwks(leash.admin).await,
        "tools",
        "leash",
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        5
    );
}

#[tokio::test]
async fn the_cli_publishes_the_key_directory_and_explains_a_minted_credential() {
    let keys = KeyDir::new();
    keys.add("2026-12.pem");
    let issuer = issuer(&keys.yaml("  issuer: https://leash.test\n"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.yaml");
    std::fs::write(&config, &issuer.yaml).unwrap();
    let leash = Leash::start_yaml(&issuer.yaml, &[("tokens.mode", "required")]).await;
    let resp = leash
        .check(call("POST", "/issues/7", &issuer.token("a-6"), &[], "{}"))
        .await;
    let token = minted(&resp);
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();

    let run = |args: &[&str]| {
        std::process::Command::new(common::leash_bin())
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&["token", "jwks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    verify(
        &token,
        &jwks.to_string(),
        "tools.example",
        "https://leash.test",
    )
    .unwrap();

    let out = run(&["token", "inspect", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "valid");
    assert_eq!(report["signature"], "verified with credentials.keys_dir");
    assert_eq!(report["explained"]["may"], json!(["rule:issues:write"]));
    assert_eq!(report["explained"]["actors"], json!(["planner"]));
    assert_eq!(report["explained"]["on_behalf_of"], "alice");

    // One character inside the signature changed (the last one may carry only padding
    // bits): refused, and the exit code says so.
    let at = token.len() - 10;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    let out = run(&["token", "inspect", &forged]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "invalid");
}

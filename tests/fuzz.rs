//! Fuzz targets (bolero). Under `cargo test` each target runs its committed corpus
//! (`tests/__fuzz__/<target>/corpus/`) and then random inputs, for
//! `BOLERO_RANDOM_TEST_TIME_MS` when set (`.ci/run` sets it) or bolero's default
//! iteration count. `cargo bolero test <target>` runs one coverage-guided where a
//! nightly toolchain and cargo-bolero are installed.
//!
//! What each asserts beyond "no panic, always an answer" is what a user relies on:
//! a denial carries a reason code, an allow needs positive evidence, and a policy's
//! effects never carry what Envoy or the tool would misread.

mod common;

use std::sync::LazyLock;

use common::keys::{claims, jwks, signing_key};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use jsonwebtoken::Algorithm;
use leash::config::Config;
use leash::decision::{Decision, PolicyAnswer};
use leash::edge::authz::{Authz, Incoming};
use leash::token::mint::SigningKey;
use regorus::Value;

const ISS: &str = "https://idp.fuzz";

/// The issuer's key, the configuration and a token it signed for the `search` tool.
struct Fixture {
    strict: leash::app::App,
    open: leash::app::App,
    token: String,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key: SigningKey = signing_key(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[(&key, "k1")])).unwrap();
    let yaml = format!(
        "log: {{ decisions: off }}\ntokens:\n  mode: required\n  issuers:\n    - {{ issuer: {ISS}, audiences: [tools], algorithms: [EdDSA], jwks_file: {},\n        require_workload_binding: false }}\nactions:\n  tools: {{ search: {{ class: read }}, delete_repo: {{ class: destructive }} }}\n",
        jwks_file.display()
    );
    let stores = std::sync::atomic::AtomicUsize::new(0);
    let app = |overrides: &[(&str, String)]| {
        // Each app its own state store: a store file serves one leash at a time.
        let n = stores.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = dir
            .path()
            .join(format!("state-{n}.redb"))
            .display()
            .to_string();
        // No control API: the fuzz targets never serve, and it would write a token.
        let overrides: Vec<(&str, String)> =
            [("listen.control", String::new()), ("state.path", store)]
                .into_iter()
                .chain(overrides.iter().cloned())
                .collect();
        let config = Config::from_yaml("fuzz.yaml", &yaml, &overrides).unwrap();
        leash::app::App::build(config).unwrap()
    };
    let strict = app(&[]);
    // Keys from a file load when a refresh loop runs; the fuzz targets never serve.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(
            strict
                .authz
                .decider
                .pipeline
                .authenticator()
                .load_key_sources(),
        )
        .unwrap();
    let now = leash::clock::unix_now();
    let token = key
        .sign(
            &claims(serde_json::json!({
                "iss": ISS, "aud": "tools", "sub": "alice", "act": {"sub": "planner"},
                "scope": "tool:search:read", "task_id": "t-1", "iat": now, "exp": now + 600,
            })),
            Some("k1"),
            None,
        )
        .unwrap();
    Fixture {
        strict,
        open: app(&[("tokens.mode", "off".to_owned())]),
        token,
        _dir: dir,
    }
});

fn authz(app: &leash::app::App) -> &Authz {
    &app.authz
}

/// Every answer is an allow, or a denial with a reason code.
#[track_caller]
fn is_an_answer(resp: &CheckResponse) {
    let allowed = resp.status.as_ref().is_some_and(|s| s.code == 0);
    if !allowed {
        let reason = common::reason(resp);
        assert!(
            reason.as_deref().is_some_and(|r| !r.is_empty()),
            "a denial without a reason code: {resp:?}"
        );
    }
}

/// Bytes as Envoy's gRPC message: decoded, or refused as undecodable, then decided
/// with tokens required. Random bytes carry no valid token: nothing is allowed.
#[test]
fn check_request_bytes() {
    // The fixture is a static, read inside each target: closures over it would have to
    // be unwind-safe, which the metrics registry is not.
    bolero::check!().for_each(|bytes: &[u8]| {
        let authz = authz(&FIXTURE.strict);
        let resp = authz.check(Incoming::decode(bytes));
        is_an_answer(&resp);
        assert!(
            !common::is_allowed(&resp),
            "allowed without a token: {resp:?}"
        );
    });
}

const METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "PATCH", "MOVE"];
const PATHS: [&str; 5] = ["/mcp", "/api/items/1", "/public/x", "/v1/repos/1", "/"];
const TYPES: [&str; 7] = [
    "application/json",
    "Application/JSON; x=application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "text/plain",
    "application/merge-patch+json",
    "",
];
/// Bodies shaped like what tool servers run, with the fuzzer's text spliced in.
const BODIES: [&str; 6] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"@"}}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"@","params":{"name":"search"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","@":"delete_repo"}}"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"@"}}]"#,
    "name=x&@=DELETE",
    "--b\r\nContent-Disposition: form-data; name=\"@\"\r\n\r\nDELETE\r\n--b--",
];

/// Requests shaped like agents' tool calls, with a valid token for the read tool
/// `search`: MCP and body reading, method overrides and classification all run. A
/// call the fuzzer turned into anything but a plain `search` must not be allowed as
/// one; what is allowed is only ever a read.
#[test]
fn tool_calls_with_a_valid_token() {
    bolero::check!()
        .with_type::<(u8, u8, u8, u8, String, String, String)>()
        .for_each(|(method, path, kind, body, splice, header, value)| {
            let fixture = &*FIXTURE;
            let bearer = format!("Bearer {}", fixture.token);
            let method = METHODS[usize::from(*method) % METHODS.len()];
            let path = PATHS[usize::from(*path) % PATHS.len()];
            let content_type = TYPES[usize::from(*kind) % TYPES.len()];
            let body = BODIES[usize::from(*body) % BODIES.len()].replace('@', splice);
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-agent-task", "t-1"),
                ("content-type", content_type),
                (header.as_str(), value.as_str()),
            ];
            let req = common::request_with_body(method, path, &headers, &body);
            if let Ok(view) = leash::view::RequestView::try_from(req.clone()) {
                let verdict = fixture
                    .strict
                    .authz
                    .decider
                    .pipeline
                    .check(&view, leash::clock::unix_now());
                if matches!(verdict.decision, Decision::Allow(_)) {
                    assert_eq!(
                        verdict.facts.action,
                        Some(leash::action::ActionClass::Read),
                        "allowed: {method} {path} {content_type} {body:?} {header}={value:?}"
                    );
                }
            }
            is_an_answer(&authz(&fixture.strict).check(Incoming::Request(req.clone())));
            is_an_answer(&authz(&fixture.open).check(Incoming::Request(req)));
        });
}

/// Tokens: random text, and JWT-shaped text whose parts decode to the fuzzer's JSON.
/// Nothing the fuzzer writes verifies: it has no key.
#[test]
fn tokens() {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    bolero::check!()
        .with_type::<(String, String, String, Vec<u8>)>()
        .for_each(|(raw, header, payload, signature)| {
            let authenticator = FIXTURE.strict.authz.decider.pipeline.authenticator();
            let now = leash::clock::unix_now();
            assert!(authenticator.verify_token(raw, now).is_err());
            let _ = leash::policy::opa::decode(raw);
            let header = format!(r#"{{"alg":"EdDSA","kid":"k1",{header}}}"#);
            let payload = format!(r#"{{"iss":"{ISS}","aud":"tools",{payload}}}"#);
            let jwt = format!(
                "{}.{}.{}",
                b64(header.as_bytes()),
                b64(payload.as_bytes()),
                b64(signature)
            );
            assert!(authenticator.verify_token(&jwt, now).is_err(), "{jwt}");
            let _ = leash::policy::opa::decode(&jwt);
        });
}

/// Decision objects as a policy could write them. Whatever is accepted carries only
/// effects Envoy applies as meant.
#[test]
fn decision_shapes() {
    bolero::check!()
        .with_type::<(
            bool,
            Vec<(String, String)>,
            Vec<(String, String)>,
            String,
            u16,
            String,
        )>()
        .for_each(|(allowed, headers, query, body, status, json)| {
            let object = serde_json::json!({
                "allowed": allowed,
                "headers": object_of(headers),
                "query_parameters_to_set": object_of(query),
                "request_headers_to_remove": headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "body": body,
                "http_status": status,
            });
            let value = Value::from_json_str(&object.to_string()).unwrap();
            check_effects(leash::policy::outcome::read(&value));
            if let Ok(value) = Value::from_json_str(json) {
                check_effects(leash::policy::outcome::read(&value));
            }
        });
}

fn object_of(pairs: &[(String, String)]) -> serde_json::Value {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn check_effects(answer: Result<PolicyAnswer, leash::policy::outcome::OutcomeError>) {
    let Ok(PolicyAnswer::Allow(permit)) = answer else {
        return;
    };
    let mutations = permit.mutations();
    for h in mutations
        .headers
        .iter()
        .chain(&mutations.response_headers_to_add)
    {
        assert!(
            !h.value.bytes().any(|b| b.is_ascii_control() && b != b'\t'),
            "{h:?}"
        );
        assert!(
            ![
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "te",
                "upgrade"
            ]
            .contains(&h.name.as_str()),
            "{h:?}"
        );
    }
    for (name, value) in &mutations.query_parameters_to_set {
        assert!(
            !name.is_empty() && !name.contains(['&', '#', '=']),
            "{name:?}"
        );
        assert!(
            !value.contains(['&', '#']) && !value.bytes().any(|b| b.is_ascii_control()),
            "{value:?}"
        );
    }
}

/// The fuzzed tool calls start from a call that is allowed, so the property on what
/// is allowed has something to hold.
#[test]
fn the_unfuzzed_tool_call_is_allowed() {
    let bearer = format!("Bearer {}", FIXTURE.token);
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-agent-task", "t-1"),
        ("content-type", "application/json"),
    ];
    let body = BODIES[0].replace('@', "x");
    let resp = authz(&FIXTURE.strict).check(Incoming::Request(common::request_with_body(
        "POST", "/mcp", &headers, &body,
    )));
    assert!(common::is_allowed(&resp), "{resp:?}");
}

/// The shipped library with five kinds of data, as Rego on the VM and in Rust.
struct Libraries {
    sets: Vec<(leash::policy::PolicySet, leash::policy::PolicySet)>,
    _dirs: Vec<tempfile::TempDir>,
}

static LIBRARIES: LazyLock<Libraries> = LazyLock::new(|| {
    let data = [
        "{}",
        r#"{"settings": {"max_delegation_depth": 1, "human_required_for": ["destructive"], "allow_unknown_tools": true}}"#,
        r#"{"grants": {"t-1": {"destructive": ["tool:delete_repo", "host:*"], "export": ["*"]}}, "settings": {"human_required_for": []}}"#,
        r#"{"settings": {"max_risk": {"read": 60, "destructive": 0}, "mint_for": ["read", 7]}}"#,
        r#"{"settings": {"mint_for": "write"}}"#,
    ];
    let mut sets = Vec::new();
    let mut dirs = Vec::new();
    for data in data {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("leash")).unwrap();
        std::fs::write(dir.path().join("leash/data.json"), data).unwrap();
        let set = |engine: &str| {
            let config = Config::from_yaml(
                "fuzz.yaml",
                "",
                &[
                    ("policy.library", "embedded".into()),
                    ("policy.dir", dir.path().display().to_string()),
                    ("policy.engine", engine.into()),
                ],
            )
            .unwrap();
            let store = leash::app::policy_store(&config);
            store.reload();
            store.current().as_ref().unwrap().as_ref().clone()
        };
        let native = set("auto");
        assert_eq!(native.info().engine, leash::policy::EngineKind::Native);
        sets.push((native, set("vm")));
        dirs.push(dir);
    }
    Libraries { sets, _dirs: dirs }
});

/// Names as requests and tokens spell them: plain, wildcards, colons, case, Unicode.
const NAMES: [&str; 8] = [
    "search",
    "delete_repo",
    "*",
    "",
    "file:///a:b",
    "Search",
    "ſearch",
    "mcp.example",
];
const KINDS: [&str; 6] = ["tool", "resource", "prompt", "rule", "host", "Tool"];
const CLASSES: [&str; 5] = ["read", "write", "destructive", "admin", ""];

fn pick<'a>(items: &[&'a str], at: u8) -> &'a str {
    items[usize::from(at) % items.len()]
}

/// `input.leash` drawn from the pieces requests and tokens are made of: whatever the
/// library in Rust decides, it decides exactly as the Rego on the VM does, down to the
/// body and the reason.
#[test]
fn library_in_rust_decides_as_the_rego() {
    bolero::check!()
        .with_type::<(
            (u8, u8, u8, bool, Option<u8>, u8),
            Vec<(u8, u8, u8, u8)>,
            (u8, u8, Option<(u8, bool)>, Option<u8>),
            [u8; 4],
            u8,
        )>()
        .for_each(|(head, scopes, tail, risk, approval)| {
            let (data, class, resource, authenticated, human, depth) = *head;
            let (tags, details, tool, task) = *tail;
            // Scores around every default limit (20, 50, 80) and the ends.
            const SCORES: [u8; 12] = [0, 19, 20, 21, 49, 50, 51, 60, 79, 80, 81, 100];
            let score = |i: usize| SCORES[usize::from(risk[i]) % SCORES.len()];
            let kind = pick(&KINDS[..5], resource);
            let name = pick(&NAMES, resource / 8);
            // A scope of 1 to 4 parts, or a grant of a kind for a resource.
            let scopes: Vec<String> = scopes
                .iter()
                .map(|&(shape, a, b, c)| match shape % 4 {
                    0 => format!("{}:{}:{}", pick(&KINDS, a), pick(&NAMES, b), pick(&CLASSES, c)),
                    1 => format!(
                        "{}:{}:{}",
                        pick(&["destructive", "export", "privilege", "tool"], a),
                        pick(&KINDS, b),
                        pick(&NAMES, c)
                    ),
                    2 => pick(&["destructive:*", "tool:*:read", "x", ""], a).to_owned(),
                    _ => format!("{}:{}", pick(&KINDS, a), pick(&NAMES, b)),
                })
                .collect();
            let tags: Vec<&str> = ["export", "privilege", "opaque_body", "chaining"]
                .into_iter()
                .enumerate()
                .filter(|(i, _)| tags & (1 << i) != 0)
                .map(|(_, t)| t)
                .collect();
            let id = format!("{kind}:{name}");
            let details = match details % 5 {
                0 => serde_json::Value::Null,
                1 => serde_json::json!([{"type": "leash", "actions": ["destructive", "export", "privilege"], "identifier": id}]),
                2 => serde_json::json!([{"type": "leash", "actions": ["destructive"], "identifier": format!("{kind}:*")}]),
                3 => serde_json::json!(["leash", {"type": "other", "actions": ["export"], "identifier": "*"}]),
                _ => serde_json::json!({"type": "leash"}),
            };
            // Approvals that allow, and shapes that must not.
            let approval = match approval % 6 {
                0 => serde_json::Value::Null,
                1 => serde_json::json!({"id": "a", "status": "approved", "uses_left": 1, "expires_at": 1}),
                2 => serde_json::json!({"id": "a", "status": "approved", "uses_left": 0, "expires_at": 1}),
                3 => serde_json::json!({"id": "a", "status": "pending", "uses_left": 0, "expires_at": 1}),
                4 => serde_json::json!({"id": "a", "status": "approved", "uses_left": "1", "expires_at": 1}),
                _ => serde_json::json!({"status": "approved", "uses_left": 0.5}),
            };
            let input = serde_json::json!({"leash": {
                "authenticated": authenticated,
                "human": human.map(|h| pick(&["alice", ""], h)),
                "task": task.map(|t| pick(&["t-1", "t-2"], t)),
                "delegation": {"depth": depth % 5},
                "scopes": scopes,
                "authorization_details": details,
                "action": {"class": pick(&CLASSES[..3], class), "tags": tags},
                "resource": {"kind": kind, "name": name, "id": id},
                "tool": tool.map(|(n, known)| serde_json::json!({"name": pick(&NAMES, n), "known": known})),
                "context": {
                    "approval": approval,
                    "risk": {
                        "agent": {"max": score(0), "signals": []},
                        "human": {"max": score(1), "signals": []},
                        "workload": {"max": score(2), "signals": []},
                        "task": {"max": score(3), "signals": []},
                    },
                },
            }});
            let value = Value::from(input);
            let libraries = &LIBRARIES.sets;
            let (native, vm) = &libraries[usize::from(data) % libraries.len()];
            assert_eq!(
                native.evaluate(value.clone()),
                vm.evaluate(value),
                "the library in Rust and the Rego decide differently"
            );
        });
}

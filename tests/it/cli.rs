//! The policy author's commands, run as the `leash` binary.

use crate::common;

use std::process::{Command, Output};

use common::PolicyDir;

fn leash(args: &[&str]) -> Output {
    Command::new(common::leash_bin())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

const POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := {"allowed": false, "http_status": 401, "body": "nope", "reason": "not a GET from a1"}
allow := {"allowed": true, "headers": {"x-checked": "1"}} if {
	input.attributes.request.http.method == "GET"
	input.attributes.request.http.headers["x-agent-id"] == "a1"
}
"#;

#[test]
fn check_decides_a_check_request_written_as_json() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let req = policy.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"attributes": {"request": {"http": {"method": "GET", "path": "/a/b?x=1",
            "host": "tools.example", "headers": {"x-agent-id": "a1"}}}}}"#,
    )
    .unwrap();
    let out = leash(&[
        "check",
        "--policy",
        &policy.path_str(),
        "--input",
        req.to_str().unwrap(),
        "--show-input",
        "--set",
        "tokens.mode=off",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decision"], "allow");
    assert_eq!(
        report["upstream_headers"][0],
        serde_json::json!({"name": "x-checked", "value": "1"})
    );
    assert_eq!(report["policy_result"]["allowed"], true);
    assert_eq!(
        report["input"]["parsed_path"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(
        report["input"]["parsed_query"],
        serde_json::json!({"x": ["1"]})
    );
}

#[test]
fn check_decides_an_input_document_as_is() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let doc = policy.path().join("input.json");
    std::fs::write(
        &doc,
        r#"{"attributes": {"request": {"http": {"method": "POST", "headers": {"x-agent-id": "a1"}}}},
            "parsed_path": [], "parsed_query": {}, "parsed_body": null, "truncated_body": false,
            "version": {"ext_authz": "v3", "encoding": "protojson"}}"#,
    )
    .unwrap();
    let out = leash(&[
        "check",
        "--policy",
        &policy.path_str(),
        "--input",
        doc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decision"], "deny");
    assert_eq!(report["reason"], "policy.denied");
    assert_eq!(report["detail"], "not a GET from a1");
    assert_eq!(report["http_status"], 401);
    assert_eq!(report["body"], "nope");
}

#[test]
fn check_reports_an_unreadable_input_with_its_file() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let bad = policy.path().join("bad.json");
    std::fs::write(&bad, "{nope").unwrap();
    let out = leash(&[
        "check",
        "--policy",
        &policy.path_str(),
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    has(&stderr(&out), "bad.json");
}

#[test]
fn test_runs_rego_tests_and_fails_on_a_failing_one() {
    let passing = PolicyDir::new(&[
        ("authz.rego", POLICY),
        (
            "authz_test.rego",
            "package envoy.authz_test\nimport rego.v1\nimport data.envoy.authz\n\
             test_get_from_a1 if authz.allow.allowed with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"GET\", \"headers\": {\"x-agent-id\": \"a1\"}}}}}\n\
             todo_test_later if false\n",
        ),
    ]);
    let out = leash(&["test", &passing.path_str(), "-v"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    has(
        &stdout(&out),
        "PASS  data.envoy.authz_test.test_get_from_a1",
    );
    assert!(stdout(&out).contains("SKIP  data.envoy.authz_test.todo_test_later"));
    has(&stdout(&out), "PASS: 1/2");

    passing.write(
        "more_test.rego",
        "package envoy.more_test\nimport rego.v1\nimport data.envoy.authz\n\
         test_post_is_allowed if authz.allow.allowed with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"POST\"}}}}\n\
         test_errors if { print(\"dividing\"); 1 / 0 }\n",
    );
    let out = leash(&["test", &passing.path_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    has(
        &stdout(&out),
        "FAIL  data.envoy.more_test.test_post_is_allowed (more_test.rego)",
    );
    has(&stdout(&out), "ERROR data.envoy.more_test.test_errors");
    has(&stdout(&out), "dividing");
}

#[test]
fn test_without_a_directory_runs_the_embedded_library() {
    let out = leash(&["test"]);
    assert!(out.status.success(), "{}", stdout(&out));
    has(&stdout(&out), "PASS: ");
}

#[test]
fn validate_reports_every_problem_with_file_and_line() {
    let policy = PolicyDir::new(&[
        ("authz.rego", POLICY),
        ("broken/one.rego", "package one\nimport rego.v1\nx if {\n"),
        ("data.json", "{\"a\": 1}"),
        ("sub/data.yaml", "b: [1\n"),
    ]);
    let out = leash(&["policy", "validate", &policy.path_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    has(&err, "broken/one.rego:4:");
    has(&err, "sub/data.yaml: cannot parse");

    let fixed = PolicyDir::new(&[("authz.rego", POLICY), ("data.json", "{\"a\": 1}")]);
    let out = leash(&["policy", "validate", &fixed.path_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "engine interpreter");
    has(
        &stdout(&out),
        "modules other than the shipped library run on the interpreter",
    );
    let out = leash(&["policy", "validate", &fixed.path_str(), "--engine", "vm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "engine vm");
}

#[test]
fn validate_refuses_a_policy_that_spins_on_every_request() {
    let policy = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if count([1 | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000)]) > 0\n",
    )]);
    let out = leash(&[
        "policy",
        "validate",
        &policy.path_str(),
        "--set",
        "policy.eval_timeout=20ms",
    ]);
    assert_eq!(out.status.code(), Some(1));
    has(&stderr(&out), "limit");
}

#[test]
fn validate_names_a_missing_decision_rule() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let out = leash(&[
        "policy",
        "validate",
        &policy.path_str(),
        "--decision",
        "envoy/authz/permit",
    ]);
    assert_eq!(out.status.code(), Some(1));
    has(&stderr(&out), "data.envoy.authz.permit is not defined");
}

#[test]
fn bad_configuration_exits_64_with_the_fix() {
    let out = leash(&["serve", "--grpc-addr", "localhost:9191"]);
    assert_eq!(out.status.code(), Some(64));
    has(&stderr(&out), "listen.grpc");
    let out = leash(&["serve", "--set", "policy.engine=fast"]);
    assert_eq!(out.status.code(), Some(64));
    has(&stderr(&out), "auto, vm or interpreter");
}

#[test]
fn config_prints_a_complete_commented_example() {
    let out = leash(&["config"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for key in [
        "grpc:",
        "grpc_uds:",
        "admin:",
        "control:",
        "max_receive_bytes:",
        "decision:",
        "eval_timeout:",
        "reason_header:",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

#[test]
fn a_port_in_use_names_the_flag_that_moves_it() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let state_path = format!("state.path={}", state.path().join("s.redb").display());
    let out = leash(&[
        "serve",
        "--set",
        &state_path,
        "--grpc-addr",
        &addr,
        "--admin-addr",
        "",
        "--control-addr",
        "",
    ]);
    assert!(!out.status.success());
    has(&stderr(&out), "pick a free port with --grpc-addr");
}

/// An ES256 signing key and its JWKS (kid k1), written into `dir` as `idp.pem` and
/// `jwks.json`; returns the key's path.
fn es256_issuer(dir: &std::path::Path) -> String {
    let key = dir.join("idp.pem");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(&key, pair.serialize_pem()).unwrap();
    let key_arg = key.to_str().unwrap().to_owned();
    let jwks = leash(&[
        "token", "jwks", "--key", &key_arg, "--alg", "ES256", "--kid", "k1",
    ]);
    assert!(jwks.status.success(), "{}", stderr(&jwks));
    std::fs::write(dir.join("jwks.json"), &jwks.stdout).unwrap();
    key_arg
}

/// A token `leash token mint` signs with `key` (ES256, kid k1) from `iss` for audience
/// tools, subject alice and task t-1, with `extra` arguments.
fn mint(key: &str, iss: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token", "mint", "--key", key, "--alg", "ES256", "--kid", "k1", "--iss", iss, "--aud",
        "tools", "--sub", "alice", "--task", "t-1",
    ];
    args.extend_from_slice(extra);
    let out = leash(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

#[test]
fn token_mint_and_inspect_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key_arg = &es256_issuer(dir.path());
    let jwks_path = dir.path().join("jwks.json");
    let config = dir.path().join("leash.yaml");
    std::fs::write(
        &config,
        format!(
            "tokens:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [tools]\n      algorithms: [ES256]\n      jwks_file: {}\n      workload_claim: spiffe_id\n",
            jwks_path.display()
        ),
    )
    .unwrap();
    let mint = |extra: &[&str]| {
        let mut args = vec![
            "--act",
            "planner,orchestrator",
            "--claim",
            "spiffe_id=spiffe://test/agent",
        ];
        args.extend_from_slice(extra);
        mint(key_arg, "https://idp.test", &args)
    };
    let good = mint(&[]);
    let out = leash(&["token", "inspect", &good, "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "accepted");
    assert_eq!(
        report["delegation"]["chain"],
        serde_json::json!(["planner", "orchestrator"])
    );
    has(&stdout(&out), "x-agent-task: t-1");
    has(&stdout(&out), "spiffe://test/agent");

    let long = mint(&["--ttl", "2h"]);
    let out = leash(&["token", "inspect", &long, "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reason"], "token.lifetime_exceeded");
}

/// In `dir`: a configuration trusting an ES256 issuer (with `extra` appended) and a
/// CheckRequest calling the read tool `search` with agent planner's token for task t-1.
fn search_call(dir: &std::path::Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key_arg = &es256_issuer(dir);
    let config = dir.join("leash.yaml");
    std::fs::write(
        &config,
        format!(
            "tokens:\n  issuers:\n    - {{ issuer: https://idp.local, audiences: [tools], algorithms: [ES256], jwks_file: {}/jwks.json,\n        require_workload_binding: false }}\nactions:\n  tools: {{ search: {{ class: read }} }}\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    let token = mint(
        key_arg,
        "https://idp.local",
        &["--act", "planner", "--scope", "tool:search:read"],
    );
    let request = dir.join("req.json");
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#;
    std::fs::write(
        &request,
        serde_json::json!({"attributes": {"request": {"http": {
            "method": "POST", "host": "tools.example", "path": "/mcp", "body": call,
            "headers": {"content-type": "application/json", "authorization": format!("Bearer {token}"),
                        "x-agent-task": "t-1"},
        }}}})
        .to_string(),
    )
    .unwrap();
    (config, request)
}

/// The README's token example, end to end through `leash check -c`: the key set in
/// `jwks_file` is loaded as `serve` loads it.
#[test]
fn check_with_a_config_loads_its_jwks_file_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let (config, request) = search_call(dir.path(), "");
    let out = leash(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "--input",
        request.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decision"], "allow", "{report:#}");
    assert_eq!(
        report["upstream_headers"],
        serde_json::json!([
            {"name": "x-leash-agent", "value": "planner"},
            {"name": "x-leash-human", "value": "alice"},
            {"name": "x-leash-task", "value": "t-1"},
        ])
    );
}

/// `leash check --context` decides as if an operator, a detector or the agent's earlier
/// calls had made the live context so: each hard denial with its own reason, risk
/// against the library's limits, counters in the input and against the behaviour rules.
#[test]
fn check_decides_as_if_an_assumed_live_context_held() {
    let dir = tempfile::tempdir().unwrap();
    let (config, request) = search_call(
        dir.path(),
        "behaviour:\n  rules:\n    - { name: too-many-denials, when: denials, at_least: 3, within: 1m }\n",
    );
    let context = dir.path().join("context.yaml");
    let run = |assumed: &str| {
        std::fs::write(&context, assumed).unwrap();
        leash(&[
            "check",
            "-c",
            config.to_str().unwrap(),
            "--input",
            request.to_str().unwrap(),
            "--context",
            context.to_str().unwrap(),
            "--show-input",
        ])
    };
    let check = |assumed: &str| {
        let out = run(assumed);
        assert!(out.status.success(), "{assumed}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report
    };

    // Recorded as after the first Check: the task active, the session; risk under
    // the read limit (80), and the counters as the policy reads them.
    let report = check("risk: { agent: 60 }\ntask_age: 20m\ncounters: { read: 2, tools: 1 }\n");
    assert_eq!(report["decision"], "allow", "{report:#}");
    let live = &report["input"]["leash"]["context"];
    assert_eq!(live["task"]["id"], "t-1", "{live:#}");
    assert_eq!(live["task"]["status"], "active");
    let age = leash::clock::unix_now() - live["task"]["first_seen"].as_i64().unwrap();
    assert!((1200..1300).contains(&age), "{live:#}");
    assert_eq!(live["session"]["agent"], "planner");
    assert_eq!(live["risk"]["agent"]["max"], 60);
    assert_eq!(live["counters"]["calls"]["read"], 2);
    assert_eq!(live["counters"]["tools"], 1);

    // Over the read limit: the library refuses.
    let report = check("risk: { agent: 90 }\n");
    assert_eq!(report["decision"], "deny", "{report:#}");
    has(&report["detail"].to_string(), "risk");

    // Each hard denial, before policy.
    for (assumed, reason) in [
        ("task: completed\n", "task.completed"),
        ("task: revoked\n", "task.revoked"),
        ("paused: looks odd\n", "session.paused"),
        ("revoked: [agent]\n", "agent.revoked"),
        ("revoked: [human]\n", "human.revoked"),
        ("revoked: [token]\n", "token.revoked"),
        ("revoked: [subject]\n", "subject.revoked"),
    ] {
        let report = check(assumed);
        assert_eq!(report["decision"], "deny", "{assumed}: {report:#}");
        assert_eq!(report["reason"], reason, "{assumed}: {report:#}");
    }

    // Three denials already in the window trip the configured rule.
    let report = check("counters: { denials: 3 }\n");
    assert_eq!(report["reason"], "session.paused", "{report:#}");
    has(&report["detail"].to_string(), "too-many-denials");

    // A mistake names the file and what to write instead; nothing is decided.
    for (bad, says) in [
        (
            "revoked: [everyone]\n",
            "token, agent, human, workload or subject",
        ),
        ("risk: { agent: 101 }\n", "score 101 is not 0 to 100"),
        ("revoked: [workload]\n", "no workload"),
        ("counters: { tools: 300 }\n", "at most 256 tools"),
        ("task_age: soon\n", "task_age"),
        ("colour: red\n", "colour"),
    ] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad}");
        has(&stderr(&out), says);
    }
}

/// The warm-up evaluates a candidate on a request with every part of the live context
/// filled, so a rule that fails only once a task is live is refused at load, not met
/// on the first governed Check.
#[test]
fn validate_refuses_a_policy_that_fails_only_on_a_live_context() {
    let failing = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if {\n\tx := input.leash.context.task.first_seen / 0\n\tx > 1\n}\n",
    )]);
    let out = leash(&["policy", "validate", &failing.path_str()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    has(&stderr(&out), "warm-up");
    has(&stderr(&out), "authz.rego:5");
}

/// Policy sources that cost far more to load than their size are refused before
/// parsing, each with its own message naming the file.
#[test]
fn validate_refuses_sources_that_would_cost_far_more_than_their_size() {
    let allow = (
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if true\n",
    );
    let deep = format!(
        "package envoy.authz\nimport rego.v1\nallow if true\nx := {}1{}\n",
        "[".repeat(20),
        "]".repeat(20)
    );
    let nested = PolicyDir::new(&[allow, ("deep.rego", &deep)]);
    let out = leash(&["policy", "validate", &nested.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "deep.rego:4:18");
    has(&stderr(&out), "nest more than 12 deep");

    // Nine levels of nine aliases: a few hundred bytes standing for 9^9 values.
    let mut yaml = String::from("l0: &l0 [a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=9 {
        let prev = level - 1;
        yaml.push_str(&format!(
            "l{level}: &l{level} [*l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}]\n"
        ));
    }
    let bomb = PolicyDir::new(&[allow, ("data.yaml", &yaml)]);
    let out = leash(&["policy", "validate", &bomb.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "data.yaml");
    has(&stderr(&out), "expands past");

    // A FIFO would block the reader until someone writes to it.
    let fifo = PolicyDir::new(&[allow]);
    let made = Command::new("mkfifo")
        .arg(fifo.path().join("data.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let out = leash(&["policy", "validate", &fifo.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "not a regular file");

    let many = PolicyDir::new(&[allow]);
    for i in 0..1001 {
        many.write(&format!("p{i}.rego"), &format!("package p{i}\n"));
    }
    let out = leash(&["policy", "validate", &many.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "more than 1000 policy and data files");
}

/// Links cannot pull files from outside the policy directory, nor read one folder
/// twice; a ConfigMap-style tree of links inside the directory loads.
#[test]
fn validate_follows_links_only_inside_the_directory_and_once() {
    use std::os::unix::fs::symlink;
    let allow = (
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if true\n",
    );
    let outside = PolicyDir::new(&[("secret.rego", "package secret\n")]);
    let escaping = PolicyDir::new(&[allow]);
    symlink(outside.path(), escaping.path().join("lib")).unwrap();
    let out = leash(&["policy", "validate", &escaping.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "outside the policy directory");

    let fanned = PolicyDir::new(&[allow, ("lib/x.rego", "package lib\n")]);
    symlink(fanned.path().join("lib"), fanned.path().join("again")).unwrap();
    let out = leash(&["policy", "validate", &fanned.path_str()]);
    assert!(!out.status.success());
    has(&stderr(&out), "a second time");

    // Kubernetes mounts a ConfigMap as links to a hidden snapshot folder.
    let configmap = PolicyDir::new(&[]);
    let snapshot = configmap.path().join("..2026_11_29");
    std::fs::create_dir(&snapshot).unwrap();
    std::fs::write(snapshot.join(allow.0), allow.1).unwrap();
    symlink("..2026_11_29", configmap.path().join("..data")).unwrap();
    symlink("..data/authz.rego", configmap.path().join("authz.rego")).unwrap();
    let out = leash(&["policy", "validate", &configmap.path_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `leash ctl` calls a running leash's control API with the admin token `serve` wrote:
/// text for people, JSON for scripts, and a clear refusal for a token it does not know.
#[tokio::test]
async fn ctl_reads_status_and_reloads_with_the_admin_token() {
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let dir = policy.path_str();
    let serving = common::LeashProcess::start(&["--policy", &dir]).await;
    let addr = serving.control.to_string();
    let token = serving.control_token_file().display().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            leash(&args)
        })
    };
    let ctl = |rest: &[&str]| {
        let mut args: Vec<String> = ["ctl", "--addr", &addr, "--token-file", &token]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        args
    };

    let out = run(ctl(&["status"])).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "policy:   revision");
    has(&stdout(&out), "engine:   interpreter");

    let out = run(ctl(&["--json", "status"])).await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["policy"]["engine"], "interpreter");

    policy.write(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow if {\n",
    );
    let out = run(ctl(&["reload"])).await.unwrap();
    assert!(!out.status.success(), "a rejected reload fails");
    has(&stdout(&out), "rejected; the serving set stays");
    has(&stdout(&out), "authz.rego:");

    let stranger = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stranger.path(), "s".repeat(43)).unwrap();
    let out = run(vec![
        "ctl".into(),
        "--addr".into(),
        addr.clone(),
        "--token-file".into(),
        stranger.path().display().to_string(),
        "status".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    has(&stderr(&out), "Unauthenticated");
}

/// Zero setup: `serve` with no control credential configured writes a random admin
/// token to a 0600 file under the user's runtime folder, logs the path and never the
/// token, and `leash ctl` finds it there without being told.
#[test]
fn ctl_finds_the_admin_token_serve_wrote_without_being_told() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let env = |cmd: &mut Command| {
        cmd.env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("XDG_STATE_HOME");
    };
    let mut serve = Command::new(common::leash_bin());
    env(&mut serve);
    let mut child = serve
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--control-addr", "127.0.0.1:0", "--log-format", "text"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let output = child.stdout.take().unwrap();
    let child = Kill(child);
    let mut log = Vec::new();
    let mut addr = None;
    for line in std::io::BufReader::new(output).lines() {
        let line = line.unwrap();
        if line.contains("control API (leash.v1.Control) listening") {
            addr = line
                .split_once("addr=")
                .and_then(|(_, a)| a.split_whitespace().next())
                .map(str::to_owned);
        }
        log.push(line);
        if addr.is_some() {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no control address in:\n{}", log.join("\n")));

    let file = runtime.join("leash/control.token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.trim().len() >= 32);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let log = log.join("\n");
    has(&log, &file.display().to_string());
    assert!(!log.contains(token.trim()), "the token is in the log");

    let mut ctl = Command::new(common::leash_bin());
    env(&mut ctl);
    let out = ctl
        .args(["ctl", "--addr", &addr, "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "policy:   revision");
    drop(child);
}

/// In a pod, the control API sits on a Unix socket in a volume the agent's container
/// does not mount; `leash ctl --addr unix:PATH` reaches it there.
#[tokio::test]
async fn ctl_reaches_the_control_api_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let serving = common::LeashProcess::start(&["--control-uds", socket.to_str().unwrap()]).await;
    let token = serving.control_token_file().display().to_string();
    let addr = format!("unix:{}", socket.display());
    let out = tokio::task::spawn_blocking(move || {
        leash(&[
            "ctl",
            "--addr",
            &addr,
            "--token-file",
            &token,
            "--json",
            "status",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "\"revision\"");
}

/// With `control.tls` and `control.clients`, the control port speaks only TLS, wants
/// a client certificate from its CA, and knows callers by the certificate's URI SAN:
/// a listed operator reloads, a listed viewer reads but may not reload, and a workload
/// of the same CA that is not listed, a certificate from another CA, a caller with no
/// certificate and a plain-text caller all get nothing.
#[tokio::test]
async fn ctl_calls_the_control_api_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca = common::pki::Ca::new("leash control CA");
    let server = ca.server();
    let ca_file = write("ca.pem", &ca.pem);
    let crl_file = write("ca.crl", &ca.crl(&[666]));
    let config = format!(
        "control:\n  tls: {{ cert_file: {}, key_file: {}, client_ca_file: {ca_file}, client_crl_files: [{crl_file}] }}\n  clients:\n    - {{ name: oncall, identity: \"spiffe://corp/ns/sec/sa/oncall\", role: operator }}\n    - {{ name: dash, identity: \"spiffe://corp/ns/sec/sa/dash\", role: viewer }}\n    - {{ name: ops, identity: ops.corp.internal, role: operator }}\n",
        write("server.pem", &server.cert),
        write("server.key", &server.key),
    );
    let config_file = write("leash.yaml", &config);
    let identity = |name: &str, issued: &common::pki::Issued| {
        [
            "--cert-file".to_owned(),
            write(&format!("{name}.pem"), &issued.cert),
            "--key-file".to_owned(),
            write(&format!("{name}.key"), &issued.key),
        ]
    };
    let oncall = identity("oncall", &ca.workload("spiffe://corp/ns/sec/sa/oncall"));
    let dash = identity("dash", &ca.workload("spiffe://corp/ns/sec/sa/dash"));
    let agent = identity("agent", &ca.workload("spiffe://corp/ns/agents/sa/agent"));
    let revoked = identity(
        "revoked",
        &ca.workload_numbered("spiffe://corp/ns/sec/sa/oncall", 666),
    );
    // A server's certificate for a listed DNS name is not a client certificate.
    let server_named = identity("server-named", &ca.named("ops.corp.internal"));
    let forged = identity(
        "forged",
        &common::pki::Ca::new("another CA").workload("spiffe://corp/ns/sec/sa/oncall"),
    );
    let serving = common::LeashProcess::start(&["--config", &config_file]).await;
    let addr = serving.control.to_string();
    let ctl = |tls: &[String], rest: &[&str]| {
        let mut args: Vec<String> = vec!["ctl".into(), "--addr".into(), addr.clone()];
        args.extend(tls.iter().cloned());
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            leash(&args)
        })
    };
    let with_ca = |id: &[String; 4]| {
        let mut args = vec!["--ca-file".to_owned(), ca_file.clone()];
        args.extend(id.iter().cloned());
        args
    };

    let out = ctl(&with_ca(&oncall), &["reload"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl(&with_ca(&dash), &["--json", "status"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    has(&stdout(&out), "\"revision\"");
    let out = ctl(&with_ca(&dash), &["--json", "tasks"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed["tasks"], serde_json::json!([]));
    let out = ctl(&with_ca(&dash), &["reload"]).await.unwrap();
    assert!(!out.status.success());
    has(&stderr(&out), "PermissionDenied");
    has(&stderr(&out), "dash has the role viewer");

    let out = ctl(&with_ca(&agent), &["status"]).await.unwrap();
    assert!(!out.status.success());
    has(&stderr(&out), "Unauthenticated");
    has(&stderr(&out), "spiffe://corp/ns/agents/sa/agent");
    let out = ctl(&with_ca(&server_named), &["status"]).await.unwrap();
    assert!(!out.status.success());
    has(&stderr(&out), "Unauthenticated");

    // A revoked certificate, one from another CA, or none at all, does not get past
    // the handshake, even with a token; nor does plain text.
    let out = ctl(&with_ca(&revoked), &["status"]).await.unwrap();
    assert!(!out.status.success());
    assert!(
        common::eventually(std::time::Duration::from_secs(5), async || serving
            .lines()
            .iter()
            .any(|l| l.contains("TLS handshake refused") && l.contains("Revoked")))
        .await,
        "the revoked certificate is refused as revoked"
    );
    let out = ctl(&with_ca(&forged), &["status"]).await.unwrap();
    assert!(!out.status.success());
    let token = write("token", &"t".repeat(43));
    let out = ctl(
        &[
            "--ca-file".to_owned(),
            ca_file.clone(),
            "--token-file".to_owned(),
            token.clone(),
        ],
        &["status"],
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let out = ctl(&["--token-file".to_owned(), token], &["status"])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        serving
            .lines()
            .iter()
            .any(|l| l.contains("TLS handshake refused")),
        "refused handshakes are logged"
    );
    assert!(
        !serving.control_token_file().exists(),
        "with certificate clients listed, no admin token is written"
    );
}

/// Kubernetes updates a mounted ConfigMap by pointing `..data` at a new snapshot
/// folder in one rename; the watcher serves the new policy.
#[tokio::test]
async fn a_configmap_update_reloads_the_policy() {
    use std::os::unix::fs::symlink;
    let configmap = PolicyDir::new(&[]);
    let root = configmap.path();
    let snapshot = |name: &str, decision: &str| {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("authz.rego"),
            format!("package envoy.authz\nimport rego.v1\ndefault allow := {decision}\n"),
        )
        .unwrap();
    };
    snapshot("..2026_12_04_1", "false");
    symlink("..2026_12_04_1", root.join("..data")).unwrap();
    symlink("..data/authz.rego", root.join("authz.rego")).unwrap();
    let dir = configmap.path_str();
    let serving = common::LeashProcess::start(&[
        "--policy",
        &dir,
        "--watch-interval",
        "100ms",
        "--set",
        "tokens.mode=off",
    ])
    .await;
    let mut authz =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            common::channel(serving.grpc).await,
        );
    let check = common::request("GET", "/", &[]);
    let resp = authz.check(check.clone()).await.unwrap().into_inner();
    assert!(!common::is_allowed(&resp));

    // As the kubelet does it: a new snapshot, a new link, renamed over `..data`.
    snapshot("..2026_12_04_2", "true");
    symlink("..2026_12_04_2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_12_04_1")).unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(10), async || {
            authz
                .check(check.clone())
                .await
                .is_ok_and(|r| common::is_allowed(r.get_ref()))
        })
        .await,
        "the swapped policy never served"
    );
}

/// `leash probe`, the image's health check: 0 once a policy serves, 1 (with why) when
/// nothing answers.
#[tokio::test]
async fn probe_says_whether_leash_is_ready() {
    let serving = common::LeashProcess::start(&[]).await;
    let ready = format!("http://{}/readyz", serving.admin);
    let out = tokio::task::spawn_blocking(move || leash(&["probe", &ready]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/readyz", closed.local_addr().unwrap());
    drop(closed);
    let out = tokio::task::spawn_blocking(move || leash(&["probe", &gone]))
        .await
        .unwrap();
    assert!(!out.status.success());
    has(&stderr(&out), "leash probe:");
}

//! Decision fixtures (`cases/decisions.yaml`) run on the bytecode VM and on the
//! interpreter: same decisions, same reasons, same responses.

use crate::common;

use std::collections::BTreeMap;

use leash::config::Config;
use leash::decision::Decision;
use leash::pipeline::Pipeline;
use leash::policy::{EngineKind, ReloadOutcome};
use leash::view::RequestView;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    embedded: bool,
    /// Extra files (path -> text) written over the policy directory.
    #[serde(default)]
    files: BTreeMap<String, String>,
    requests: Vec<Req>,
}

#[derive(Deserialize)]
struct Req {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    /// `allow`, or the expected deny reason code.
    expect: String,
}

/// The configuration serving `dir` on `engine` (auto, vm or interpreter), tokens off.
fn config(dir: &std::path::Path, engine: &str) -> Config {
    Config::from_yaml(
        "test",
        "",
        &[
            ("tokens.mode", "off".into()),
            ("policy.dir", dir.display().to_string()),
            ("policy.engine", engine.into()),
        ],
    )
    .unwrap()
}

fn pipeline(dir: &std::path::Path, engine: &str) -> (Pipeline, EngineKind) {
    let config = config(dir, engine);
    let store = leash::app::policy_store(&config);
    let info = match store.reload() {
        ReloadOutcome::Applied(info) => info,
        other => panic!("the fixture policy does not load with {engine}: {other:?}"),
    };
    (leash::app::pipeline(&config, store).unwrap(), info.engine)
}

fn without_id(decision: &Decision) -> String {
    format!("{decision:?}")
}

#[test]
fn vm_and_interpreter_decide_every_fixture_identically() {
    let cases: Vec<Case> = yaml_serde::from_str(include_str!("../cases/decisions.yaml")).unwrap();
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        if case.embedded {
            for (path, text) in leash::policy::embedded_files() {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
        } else {
            std::fs::write(dir.path().join("policy.rego"), &case.policy).unwrap();
        }
        for (path, text) in &case.files {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        let (vm, vm_kind) = pipeline(dir.path(), "vm");
        let (interp, interp_kind) = pipeline(dir.path(), "interpreter");
        assert_eq!(
            (vm_kind, interp_kind),
            (EngineKind::Vm, EngineKind::Interpreter)
        );
        for req in &case.requests {
            let headers: Vec<(&str, &str)> = req
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let check = common::request_with_body(&req.method, &req.path, &headers, &req.body);
            let view = RequestView::try_from(check).unwrap();
            let a = vm.check(&view, leash::clock::unix_now()).decision;
            let b = interp.check(&view, leash::clock::unix_now()).decision;
            let label = format!("{}: {} {}", case.name, req.method, req.path);
            assert_eq!(
                without_id(&a),
                without_id(&b),
                "{label}: VM and interpreter differ"
            );
            let got = a.reason().map_or("allow", |r| r.code());
            assert_eq!(got, req.expect, "{label}: {a:?}");
        }
    }
}

#[test]
fn auto_serves_operator_modules_on_the_interpreter_and_the_vm_refuses_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.rego"),
        "package envoy.authz\nimport rego.v1\nallow if ok with data.y as 1\nok if data.y == 1\n",
    )
    .unwrap();
    let (auto, kind) = pipeline(dir.path(), "auto");
    assert_eq!(kind, EngineKind::Interpreter);
    let note = auto
        .policy()
        .current()
        .as_ref()
        .unwrap()
        .info()
        .engine_note
        .clone();
    assert!(note.is_some_and(|n| n.contains("modules other than the shipped library")));

    let store = leash::app::policy_store(&config(dir.path(), "vm"));
    assert!(
        matches!(store.reload(), ReloadOutcome::Rejected(_)),
        "engine: vm refuses it"
    );
}

/// The governance library's shared cases (`rego/leash/testcases/cases_test.yaml`, also
/// run by its Rego tests).
#[derive(Deserialize)]
struct LibraryCases {
    base: serde_json::Value,
    cases: Vec<LibraryCase>,
}

#[derive(Deserialize)]
struct LibraryCase {
    name: String,
    /// Merged into `base.leash`.
    #[serde(default = "empty_object")]
    leash: serde_json::Value,
    /// `data.leash.settings` and `data.leash.grants` for the case.
    #[serde(default)]
    data: serde_json::Value,
    allowed: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// The embedded library with `data` under `data.leash`, on both Rego engines and in
/// Rust (what `auto` serves).
struct Library {
    vm: leash::policy::PolicySet,
    interpreter: leash::policy::PolicySet,
    native: leash::policy::PolicySet,
    _dir: tempfile::TempDir,
}

impl Library {
    fn load(data: &serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("leash")).unwrap();
        let data = if data.is_null() {
            serde_json::json!({})
        } else {
            data.clone()
        };
        std::fs::write(dir.path().join("leash/data.json"), data.to_string()).unwrap();
        let set = |engine: &str| {
            let mut config = config(dir.path(), engine);
            config.policy.source = leash::policy::PolicySource::Layered(dir.path().to_owned());
            let store = leash::app::policy_store(&config);
            assert!(matches!(store.reload(), ReloadOutcome::Applied(_)));
            store.current().as_ref().unwrap().as_ref().clone()
        };
        let native = set("auto");
        assert_eq!(native.info().engine, EngineKind::Native, "{data}");
        Self {
            vm: set("vm"),
            interpreter: set("interpreter"),
            native,
            _dir: dir,
        }
    }

    /// Whether the engines allow `input`; they must agree. Where the library in Rust
    /// decides, its result is the VM's, member for member: the body, the reason and
    /// the status the client and the decision log see.
    fn allows(&self, input: &serde_json::Value, what: &str) -> bool {
        let value = leash::policy::Value::from(input.clone());
        let allowed = |result: &Result<leash::policy::Value, _>| {
            result
                .as_ref()
                .is_ok_and(|v| v["allowed"] == leash::policy::Value::Bool(true))
        };
        let vm = self.vm.evaluate(value.clone());
        let interpreter = self.interpreter.evaluate(value.clone());
        assert_eq!(
            allowed(&vm),
            allowed(&interpreter),
            "{what}: the VM and the interpreter disagree"
        );
        if leash::policy::library::Input::read(&value).is_some() {
            NATIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(
            self.native.evaluate(value),
            vm,
            "{what}: the library in Rust and the VM disagree"
        );
        allowed(&vm)
    }
}

/// Inputs the library in Rust decided: the comparisons must not pass by never using it.
static NATIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Objects merge member by member; anything else replaces (Rego's `object.union`).
fn merge(base: &serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                let merged = b.get(k).map_or_else(|| v.clone(), |old| merge(old, v));
                out.insert(k.clone(), merged);
            }
            serde_json::Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}

/// One edit of an input: a member removed, or a member or array element nulled.
enum Edit {
    Remove(Vec<String>),
    Null(Vec<String>),
}

impl Edit {
    fn apply(&self, input: &serde_json::Value) -> serde_json::Value {
        let mut out = input.clone();
        let (path, remove) = match self {
            Edit::Remove(p) => (p, true),
            Edit::Null(p) => (p, false),
        };
        let (last, parents) = path.split_last().unwrap();
        let mut slot = &mut out;
        for key in parents {
            slot = match slot {
                serde_json::Value::Object(o) => o.get_mut(key).unwrap(),
                serde_json::Value::Array(a) => a.get_mut(key.parse::<usize>().unwrap()).unwrap(),
                _ => unreachable!(),
            };
        }
        match slot {
            serde_json::Value::Object(o) if remove => {
                o.remove(last);
            }
            serde_json::Value::Object(o) => {
                o.insert(last.clone(), serde_json::Value::Null);
            }
            serde_json::Value::Array(a) => {
                a[last.parse::<usize>().unwrap()] = serde_json::Value::Null
            }
            _ => unreachable!(),
        }
        out
    }

    fn describe(&self) -> String {
        match self {
            Edit::Remove(p) => format!("without {}", p.join(".")),
            Edit::Null(p) => format!("with {} null", p.join(".")),
        }
    }
}

/// Every member of `input.leash` at any depth (removed, or nulled), every array
/// element below it (nulled), and every top-level member of `input`.
fn edits(input: &serde_json::Value) -> Vec<Edit> {
    fn walk(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Edit>) {
        match value {
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    path.push(k.clone());
                    out.push(Edit::Remove(path.clone()));
                    if !v.is_null() {
                        out.push(Edit::Null(path.clone()));
                    }
                    walk(v, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    if !v.is_null() {
                        out.push(Edit::Null(path.clone()));
                    }
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for key in input.as_object().unwrap().keys() {
        out.push(Edit::Remove(vec![key.clone()]));
        out.push(Edit::Null(vec![key.clone()]));
    }
    walk(&input["leash"], &mut vec!["leash".to_owned()], &mut out);
    out
}

/// What an allow rests on: without any of these, the library has no evidence.
fn required(input: &serde_json::Value) -> Vec<Vec<String>> {
    let leash = &input["leash"];
    let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
    let mut out: Vec<Vec<String>> = [
        "leash",
        "leash.authenticated",
        "leash.action",
        "leash.action.class",
        "leash.action.tags",
        "leash.resource",
        "leash.resource.kind",
        "leash.resource.name",
        "leash.delegation",
        "leash.delegation.depth",
    ]
    .into_iter()
    .map(path)
    .collect();
    if leash["authenticated"] == true {
        out.push(path("leash.scopes"));
    }
    if leash["resource"]["kind"] == "tool" {
        out.extend(["leash.tool", "leash.tool.name", "leash.tool.known"].map(path));
    }
    let tags = leash["action"]["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if leash["action"]["class"] != "read" || tags.contains(&"privilege".into()) {
        out.push(path("leash.human"));
    }
    out
}

/// A small deterministic generator, so a failure names a seed that reproduces it.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn coin(&mut self) -> bool {
        self.next() % 2 == 0
    }
}

/// An `input.leash` patch drawn at random: classes, tags, resources of every kind,
/// scopes and grants that do and do not fit, with and without a human.
fn random_leash(rng: &mut XorShift) -> serde_json::Value {
    let kind = *rng.pick(&["tool", "resource", "prompt", "rule", "host"]);
    let name = *rng.pick(&["search", "delete_repo", "*", "file:///a"]);
    let class = *rng.pick(&["read", "write", "destructive"]);
    let tags: Vec<&str> = [
        "export",
        "privilege",
        "opaque_body",
        "chaining",
        "method_override",
    ]
    .into_iter()
    .filter(|_| rng.next() % 4 == 0)
    .collect();
    let id = format!("{kind}:{name}");
    let pool = [
        format!("{kind}:{name}:{class}"),
        format!("{kind}:*:destructive"),
        format!("{kind}:{name}:read"),
        "tool:*:read".to_owned(),
        "host:*:write".to_owned(),
        format!("destructive:{id}"),
        format!("export:{id}"),
        format!("privilege:{kind}:*"),
        "destructive:*".to_owned(),
        format!("other:{id}"),
    ];
    let scopes: Vec<&String> = pool.iter().filter(|_| rng.coin()).collect();
    let details = match rng.next() % 4 {
        0 => {
            serde_json::json!([{"type": "leash", "actions": ["destructive", "export", "privilege"], "identifier": id}])
        }
        1 => serde_json::json!([{"type": "leash", "actions": ["destructive"]}]),
        _ => serde_json::Value::Null,
    };
    let depth = rng.next() % 4;
    serde_json::json!({
        "authenticated": rng.next() % 5 != 0,
        "human": if rng.coin() { serde_json::json!("alice") } else { serde_json::Value::Null },
        "delegation": {"depth": depth},
        "scopes": scopes,
        "authorization_details": details,
        "action": {"class": class, "tags": tags},
        "resource": {"kind": kind, "name": name, "id": id},
        "tool": if kind == "tool" {
            serde_json::json!({"name": name, "arguments": {}, "known": rng.coin()})
        } else {
            serde_json::Value::Null
        },
    })
}

#[test]
fn the_library_decides_its_shared_cases_on_both_engines() {
    let cases: LibraryCases =
        yaml_serde::from_str(include_str!("../../rego/leash/testcases/cases_test.yaml")).unwrap();
    let mut libraries: BTreeMap<String, Library> = BTreeMap::new();
    for case in &cases.cases {
        let library = libraries
            .entry(case.data.to_string())
            .or_insert_with(|| Library::load(&case.data));
        let input = merge(&cases.base, &serde_json::json!({"leash": case.leash}));
        assert_eq!(
            library.allows(&input, &case.name),
            case.allowed,
            "{}",
            case.name
        );
    }
}

/// Removing or nulling any single member of `input.leash`, at any depth, or any
/// top-level member of `input`, never turns a denial into an allow; and an allow
/// never survives losing what it rests on.
#[test]
fn the_library_never_allows_on_missing_evidence() {
    let cases: LibraryCases =
        yaml_serde::from_str(include_str!("../../rego/leash/testcases/cases_test.yaml")).unwrap();
    let mut inputs: Vec<(String, serde_json::Value, serde_json::Value)> = cases
        .cases
        .iter()
        .map(|c| {
            let input = merge(&cases.base, &serde_json::json!({"leash": c.leash}));
            (c.name.clone(), input, c.data.clone())
        })
        .collect();
    let mut rng = XorShift(0x5eed_1ea5_u64);
    for i in 0..120 {
        let input = merge(
            &cases.base,
            &serde_json::json!({"leash": random_leash(&mut rng)}),
        );
        inputs.push((format!("random input {i}"), input, serde_json::Value::Null));
    }
    let mut libraries: BTreeMap<String, Library> = BTreeMap::new();
    let (mut allowed, mut checked) = (0, 0);
    for (name, input, data) in &inputs {
        let library = libraries
            .entry(data.to_string())
            .or_insert_with(|| Library::load(data));
        let before = library.allows(input, name);
        allowed += usize::from(before);
        let must_deny = if before { required(input) } else { Vec::new() };
        for edit in edits(input) {
            let edited = edit.apply(input);
            let what = format!("{name}, {}", edit.describe());
            let after = library.allows(&edited, &what);
            checked += 1;
            assert!(before || !after, "{what}: a denial turned into an allow");
            let path = match &edit {
                Edit::Remove(p) | Edit::Null(p) => p,
            };
            if must_deny.contains(path) {
                assert!(!after, "{what}: allowed without the evidence it rests on");
            }
        }
    }
    // The inputs must exercise both outcomes, or the property says nothing.
    assert!(
        allowed > 20 && allowed < inputs.len() - 20,
        "{allowed} of {}",
        inputs.len()
    );
    assert!(checked > 5_000, "{checked}");
    let native = NATIVE.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        native > checked / 2,
        "the library in Rust decided {native} of {checked}"
    );
}

/// regorus's VM does not fail a body on `x := <undefined>`, so `not f(x)` succeeds
/// there. Such a policy must not be served by the VM: a request without the header
/// would be allowed where OPA and the interpreter deny it.
#[test]
fn a_policy_the_vm_would_open_on_a_missing_value_is_served_by_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.rego"),
        r#"package envoy.authz
import rego.v1
default allow := false
allow if {
	token := input.attributes.request.http.headers["x-agent-id"]
	not startswith(token, "blocked")
}
"#,
    )
    .unwrap();
    let (auto, kind) = pipeline(dir.path(), "auto");
    assert_eq!(kind, EngineKind::Interpreter);
    let without = RequestView::try_from(common::request("GET", "/", &[])).unwrap();
    assert_eq!(
        auto.check(&without, leash::clock::unix_now())
            .decision
            .reason()
            .map(|r| r.code()),
        Some("policy.denied")
    );
    let with = RequestView::try_from(common::request("GET", "/", &[("x-agent-id", "a1")])).unwrap();
    assert!(
        auto.check(&with, leash::clock::unix_now())
            .decision
            .is_allow()
    );
    let store = leash::app::policy_store(&config(dir.path(), "vm"));
    match store.reload() {
        ReloadOutcome::Rejected(err) => assert!(
            format!("{err:?}").contains("without input.attributes"),
            "{err:?}"
        ),
        other => panic!("engine: vm must refuse it: {other:?}"),
    }
}

/// The VM makes a rule body that raises an error not match: an operator's deny rule
/// that errors would vanish there. Operator modules are served by the interpreter,
/// where the error denies.
#[test]
fn an_operator_gate_that_errors_denies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("leash")).unwrap();
    // A folder named like the embedded library does not make the module part of it.
    std::fs::create_dir_all(dir.path().join("embedded:leash")).unwrap();
    std::fs::write(
        dir.path().join("embedded:leash/limits.rego"),
        r#"package leash.gates
import rego.v1
deny contains "at most 100 results" if to_number(input.leash.tool.arguments.limit) > 100
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leash/data.json"),
        r#"{"actions": {"tools": {"search": {"class": "read"}}}}"#,
    )
    .unwrap();
    let mut config = config(dir.path(), "auto");
    config.policy.source = leash::policy::PolicySource::Layered(dir.path().to_owned());
    let store = leash::app::policy_store(&config);
    let info = match store.reload() {
        ReloadOutcome::Applied(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.engine, EngineKind::Interpreter);
    let pipeline = leash::app::pipeline(&config, store).unwrap();
    let call = |limit: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search","arguments":{{"limit":{limit}}}}}}}"#
        );
        let req = common::request_with_body(
            "POST",
            "/mcp",
            &[("content-type", "application/json")],
            &body,
        );
        pipeline
            .check(
                &RequestView::try_from(req).unwrap(),
                leash::clock::unix_now(),
            )
            .decision
    };
    assert!(call("5").is_allow());
    assert_eq!(
        call("500").reason().map(|r| r.code()),
        Some("policy.denied")
    );
    // "0x1388" is 5000 to a JavaScript tool and an error to to_number: it denies.
    assert_eq!(
        call(r#""0x1388""#).reason().map(|r| r.code()),
        Some("policy.error")
    );
}

/// Data under the library's own rule paths clashes with its rules: the VM refuses it
/// and the interpreter lets it override a rule (`data.leash.lib.max_delegation_depth`
/// of 0 denies a chain of one). The library in Rust would not see it, so it must not
/// serve such a set; nor a depth limit `%d` prints otherwise than Rust does.
#[test]
fn data_the_library_in_rust_cannot_stand_for_leaves_the_decision_to_the_rego() {
    for (path, text) in [
        ("leash/lib/data.json", r#"{"max_delegation_depth": 0}"#),
        ("leash/gates/data.json", r#"{"unmet": []}"#),
        ("envoy/authz/data.json", r#"{"allow": true}"#),
        (
            "leash/data.json",
            r#"{"settings": {"max_delegation_depth": -1}}"#,
        ),
        (
            "leash/data.json",
            r#"{"settings": {"max_delegation_depth": 1.5}}"#,
        ),
        ("leash/data.json", r#"{"grants": {"t-1": ["tool:x"]}}"#),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        let mut config = config(dir.path(), "auto");
        config.policy.source = leash::policy::PolicySource::Layered(dir.path().to_owned());
        let store = leash::app::policy_store(&config);
        if let ReloadOutcome::Applied(info) = store.reload() {
            assert_ne!(info.engine, EngineKind::Native, "{path}: {text}");
        }
    }
}

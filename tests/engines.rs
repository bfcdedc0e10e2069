//! Decision fixtures (`cases/decisions.yaml`) run on the bytecode VM and on the
//! interpreter: same decisions, same reasons, same responses.

mod common;

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
    let cases: Vec<Case> = yaml_serde::from_str(include_str!("cases/decisions.yaml")).unwrap();
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
            let a = vm.check(&view).decision;
            let b = interp.check(&view).decision;
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
fn auto_falls_back_to_the_interpreter_for_what_the_vm_cannot_run() {
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
    assert!(note.is_some_and(|n| n.contains("with")));

    let store = leash::app::policy_store(&config(dir.path(), "vm"));
    assert!(
        matches!(store.reload(), ReloadOutcome::Rejected(_)),
        "engine: vm refuses it"
    );
}

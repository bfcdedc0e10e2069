//! In-process cost of one Check: CheckRequest in, CheckResponse out (input mapping,
//! evaluation, response building, metrics), and of its parts.
//!
//! `cargo bench --bench check`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group};
use leash::audit::{AuditLevel, AuditSink};
use leash::config::Config;
use leash::edge::authz::{Authz, Incoming};
use leash::metrics::Metrics;
use leash::policy::input::{InputLimits, build};
use leash::policy::{EngineChoice, LoadOptions, PolicySource, PolicyStore, ReloadOutcome};
use leash::view::RequestView;

#[path = "../tests/common/mod.rs"]
#[allow(unused, reason = "the benchmark needs only the captured request")]
mod common;

/// The allocator the `leash` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The policy of the reference measurements: allow GET with `x-agent-id: a1`.
const METHOD_HEADER: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if {
	input.attributes.request.http.method == "GET"
	input.attributes.request.http.headers["x-agent-id"] == "a1"
}
"#;

/// Routes for the shipped default library, the request below matching the last.
const ROUTES: &str = r#"routes:
  - { name: health, paths: ["/healthz"] }
  - { name: search, methods: [GET], hosts: ["search.example"], paths: ["/v1/search"] }
  - { name: items, methods: [GET, HEAD], hosts: ["127.0.0.1:10000"], paths: ["/a/*/*"] }
"#;

fn store(files: &[(&str, &str)], engine: EngineChoice) -> (Arc<PolicyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let options = LoadOptions {
        engine,
        ..Default::default()
    };
    let store = Arc::new(PolicyStore::new(
        PolicySource::Dir(dir.path().to_owned()),
        options,
        Vec::new(),
    ));
    assert!(matches!(store.reload(), ReloadOutcome::Applied(_)));
    (store, dir)
}

fn authz(store: Arc<PolicyStore>) -> Authz {
    let config = Config::from_yaml("bench", "", &[("tokens.mode", "off".into())]).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (audit, _rx) = AuditSink::new(AuditLevel::Off, metrics.decision_log_dropped());
    Authz {
        pipeline: Arc::new(leash::app::pipeline(&config, store).unwrap()),
        metrics,
        audit,
        egress: Default::default(),
        key_wait: config.tokens.key_wait,
    }
}

fn default_library() -> Vec<(&'static str, &'static str)> {
    let mut files: Vec<(&str, &str)> = leash::policy::embedded_files()
        .iter()
        .filter(|(path, _)| *path != "leash/data.yaml")
        .copied()
        .collect();
    files.push(("leash/data.yaml", ROUTES));
    files
}

fn bench_check(c: &mut Criterion) {
    // The request of the reference measurements (and of OPA's plugin capture).
    let req = common::captured_request();
    let library = default_library();
    type Files<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Files, EngineChoice); 3] = [
        (
            "method_header/vm",
            &[("authz.rego", METHOD_HEADER)],
            EngineChoice::Vm,
        ),
        (
            "method_header/interpreter",
            &[("authz.rego", METHOD_HEADER)],
            EngineChoice::Interpreter,
        ),
        ("default_policy/vm", &library, EngineChoice::Vm),
    ];
    let mut group = c.benchmark_group("check");
    for (name, files, engine) in cases {
        let (store, _dir) = store(files, engine);
        let authz = authz(store);
        // Cloning the request is setup: Envoy's request arrives owned.
        group.bench_function(name, |b| {
            b.iter_batched(
                || Incoming::Request(req.clone()),
                |incoming| black_box(authz.check(incoming)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    let mut parts = c.benchmark_group("parts");
    parts.bench_function("request_view", |b| {
        b.iter_batched(
            || req.clone(),
            |r| black_box(RequestView::try_from(r).unwrap()),
            BatchSize::SmallInput,
        );
    });
    let view = RequestView::try_from(req.clone()).unwrap();
    parts.bench_function("input_document", |b| {
        b.iter(|| black_box(build(&view, &InputLimits::default()).unwrap()));
    });
    let input = build(&view, &InputLimits::default()).unwrap();
    for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
        let (store, _dir) = store(&[("authz.rego", METHOD_HEADER)], engine);
        let set = store.current().as_ref().unwrap().clone();
        parts.bench_function(format!("evaluate/{engine:?}"), |b| {
            b.iter(|| black_box(set.evaluate(input.clone()).unwrap()));
        });
    }
    parts.finish();
}

/// Criterion reports means; the target is on the median Check, so time single calls too.
fn percentiles() {
    const CALLS: usize = 200_000;
    let req = common::captured_request();
    let (store, _dir) = store(&[("authz.rego", METHOD_HEADER)], EngineChoice::Vm);
    let authz = authz(store);
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let incoming = Incoming::Request(req.clone());
        let started = std::time::Instant::now();
        black_box(authz.check(incoming));
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((CALLS as f64) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "check/method_header/vm single calls: p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs ({CALLS} calls)",
        at(0.50),
        at(0.90),
        at(0.99)
    );
}

criterion_group!(benches, bench_check);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}

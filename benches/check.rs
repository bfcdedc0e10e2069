//! In-process cost of one Check: CheckRequest in, CheckResponse out (input mapping,
//! token verification and binding, classification, evaluation, response building,
//! metrics), and of its parts.
//!
//! `cargo bench --bench check`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use jsonwebtoken::Algorithm;
use leash::audit::AuditSink;
use leash::config::AuditLevel;
use leash::config::Config;
use leash::edge::authz::{Authz, Incoming};
use leash::metrics::Metrics;
use leash::policy::input::{InputLimits, build};
use leash::policy::{EngineChoice, PolicySource, PolicyStore, ReloadOutcome};
use leash::request::Target;
use leash::token::mint::SigningKey;
use leash::view::RequestView;

#[path = "../tests/common/mod.rs"]
#[allow(unused, reason = "the benchmark needs only requests and keys")]
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

const ISS: &str = "https://idp.bench";
const SPIFFE: &str = "spiffe://bench/ns/agents/sa/planner";

/// The bench configuration; with `issuer` keys, tokens are required and verified.
fn config(issuer: Option<&[(&SigningKey, &str)]>) -> Config {
    config_with(issuer, "")
}

/// As [`config`], with `extra` YAML sections.
fn config_with(issuer: Option<&[(&SigningKey, &str)]>, extra: &str) -> Config {
    let yaml = match issuer {
        None => "tokens: { mode: off }".to_owned(),
        Some(keys) => format!(
            "tokens:\n  issuers:\n    - issuer: {ISS}\n      audiences: [tools]\n      algorithms: [RS256, EdDSA]\n      jwks: {}\n      workload_claim: spiffe_id\n\
             actions:\n  tools:\n    search: {{ class: read }}\n",
            common::keys::jwks(keys)
        ),
    };
    Config::from_yaml("bench", &format!("{yaml}\n{extra}"), &[]).unwrap()
}

/// A policy store for `config` serving `files` (with the embedded library when
/// `library`) on `engine`, loaded as `serve` loads it.
fn store(
    config: &Config,
    files: &[(&str, &str)],
    library: bool,
    engine: EngineChoice,
) -> (Arc<PolicyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut config = config.clone();
    config.policy.load.engine = engine;
    config.policy.source = if library {
        PolicySource::Layered(dir.path().to_owned())
    } else {
        PolicySource::Dir(dir.path().to_owned())
    };
    let store = leash::app::policy_store(&config);
    assert!(matches!(store.reload(), ReloadOutcome::Applied(_)));
    (store, dir)
}

/// The governance library minting an `alg` credential for every allowed call; checks
/// that `req` gets one.
fn minting(
    keys: &[(&SigningKey, &str)],
    alg: &str,
    req: &CheckRequest,
) -> (Authz, tempfile::TempDir) {
    let config = config_with(
        Some(keys),
        &format!("credentials:\n  algorithm: {alg}\n  mint:\n    - {{ resources: [\"*\"] }}\n"),
    );
    let (store, dir) = store(&config, &[], true, EngineChoice::Auto);
    let minted = authz(&config, store);
    let resp = minted.check(Incoming::Request(req.clone()));
    assert!(common::is_allowed(&resp));
    assert!(common::metadata_string(&resp, "minted_jti").is_some());
    (minted, dir)
}

/// The `Authz` the gRPC service calls, over `store`.
fn authz(config: &Config, store: Arc<PolicyStore>) -> Authz {
    authz_on(config, leash::app::pipeline(config, store).unwrap())
}

/// As [`authz`], reading the live context `updater` keeps.
fn authz_live(config: &Config, store: Arc<PolicyStore>, updater: &leash::state::Updater) -> Authz {
    let pipeline = leash::app::pipeline(config, store)
        .unwrap()
        .with_state(updater.state().clone(), updater.reports())
        .with_behaviour(Arc::new(leash::state::behaviour::Behaviour::new(
            config.behaviour.clone(),
            leash::state::MAX_RECORDED,
        )));
    authz_on(config, pipeline)
}

fn authz_on(config: &Config, pipeline: leash::pipeline::Pipeline) -> Authz {
    let metrics = Arc::new(Metrics::new());
    let (audit, _rx) = AuditSink::new(AuditLevel::Off, metrics.decision_log_dropped());
    Authz {
        decider: Arc::new(leash::app::decider(
            config,
            Arc::new(pipeline),
            metrics,
            audit,
        )),
        egress: Default::default(),
    }
}

/// The bench issuer, as revocations name it.
fn trust() -> leash::state::ops::Trust<'static> {
    static ISSUERS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![ISS.to_owned()]);
    leash::state::ops::Trust {
        issuers: &ISSUERS,
        longest: 900,
        leeway: 60,
    }
}

/// A state store holding what a busy fleet member might: 100 000 revoked tokens (none
/// of them the bench's), 10 000 live tasks (t-1 among them, with its session) and a
/// few risk signals. Loaded in large commits, as a restart loads it.
fn loaded_state(dir: &std::path::Path) -> Arc<leash::state::Updater> {
    use leash::state::ops::{self, By};
    use leash::state::{Change, Record, Session, Task, TaskStatus};
    let (updater, _sightings) = leash::state::Updater::open(Box::new(
        leash::state::RedbStore::open(&dir.join("state.redb")).unwrap(),
    ))
    .unwrap();
    let by = By {
        caller: "bench",
        now: leash::clock::unix_now(),
    };
    for chunk in 0..10 {
        updater
            .update_blocking("bench", by.now, move |snapshot| {
                let mut changes = Vec::new();
                for i in chunk * 10_000..(chunk + 1) * 10_000 {
                    changes.extend(ops::revoke_token(
                        snapshot,
                        ISS,
                        &format!("revoked-{i}"),
                        0,
                        "",
                        trust(),
                        by,
                    )?);
                }
                Ok(changes)
            })
            .unwrap();
    }
    updater
        .update_blocking("bench", by.now, move |_| {
            let mut changes = Vec::new();
            for i in 0..10_000 {
                // Live tasks, as Checks record them.
                changes.push(Change::Put(Record::Task(Task {
                    id: Arc::from(format!("t-{i}")),
                    human: Some(Arc::from("alice")),
                    agents: vec![Arc::from("planner")],
                    status: TaskStatus::Active,
                    first_seen: by.now,
                    ended: None,
                    ended_by: None,
                    end_reason: None,
                })));
            }
            // The bench agent's session on its task, as its first Check records it.
            changes.push(Change::Put(Record::Session(Session {
                agent: Arc::from("planner"),
                task: Arc::from("t-1"),
                first_seen: by.now,
                pause: None,
            })));
            for (kind, id) in [("agent", "someone"), ("task", "t-2"), ("human", "bob")] {
                changes.extend(ops::report_risk(
                    &ops::Report {
                        subject_kind: kind,
                        subject_id: id,
                        kind: "k",
                        score: 90,
                        source: "s",
                        ttl_seconds: 3600,
                    },
                    by,
                )?);
            }
            Ok(changes)
        })
        .unwrap();
    updater
}

/// The reference request, carrying `key`'s token for task t-1 from `SPIFFE`, bound by
/// its workload claim.
fn with_token(key: &SigningKey, kid: &str) -> CheckRequest {
    with_bound_token(key, kid, None)
}

/// As [`with_token`]; with `cert`, also bound to that client certificate (RFC 8705).
fn with_bound_token(key: &SigningKey, kid: &str, cert: Option<&str>) -> CheckRequest {
    let now = leash::clock::unix_now();
    let mut claims = serde_json::json!({
        "iss": ISS, "aud": "tools", "sub": "alice", "iat": now, "exp": now + 600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "task_id": "t-1", "spiffe_id": SPIFFE, "scope": "tool:search:read host:*:read",
        "act": {"sub": "planner"},
    });
    if let Some(cert) = cert {
        claims["cnf"] = serde_json::json!({"x5t#S256": leash::token::mint::certificate_thumbprint(cert).unwrap()});
    }
    let token = key
        .sign(claims.as_object().unwrap(), Some(kid), None)
        .unwrap();
    let mut req = common::captured_request();
    let attrs = req.attributes.as_mut().unwrap();
    let source = attrs.source.as_mut().unwrap();
    source.principal = SPIFFE.into();
    if let Some(cert) = cert {
        source.certificate = common::keys::url_encode(cert);
    }
    let http = attrs.request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers
        .insert("authorization".into(), format!("Bearer {token}"));
    http.headers.insert("x-agent-task".into(), "t-1".into());
    req
}

fn bench(c: &mut Criterion, group: &str, name: &str, authz: &Authz, req: &CheckRequest) {
    c.benchmark_group(group).bench_function(name, |b| {
        // Cloning the request is setup: Envoy's request arrives owned.
        b.iter_batched(
            || Incoming::Request(req.clone()),
            |incoming| black_box(authz.check(incoming)),
            BatchSize::SmallInput,
        );
    });
}

fn bench_check(c: &mut Criterion) {
    // The request of the reference measurements (and of OPA's plugin capture).
    let req = common::captured_request();
    let plain = config(None);
    for (name, engine) in [
        ("method_header/vm", EngineChoice::Vm),
        ("method_header/interpreter", EngineChoice::Interpreter),
    ] {
        let (store, _dir) = store(&plain, &[("authz.rego", METHOD_HEADER)], false, engine);
        let authz = authz(&plain, store);
        assert!(common::is_allowed(
            &authz.check(Incoming::Request(req.clone()))
        ));
        bench(c, "check", name, &authz, &req);
    }

    // Agent identity: a token bound to the workload and the task, verified once and
    // then found in the cache, as for every repeated call of an agent.
    let rsa = common::keys::signing_key(Algorithm::RS256);
    let ed = common::keys::signing_key(Algorithm::EdDSA);
    let keys: [(&SigningKey, &str); 2] = [(&rsa, "rsa"), (&ed, "ed")];
    let with_keys = config(Some(&keys));
    let (store_mh, _d1) = store(
        &with_keys,
        &[("authz.rego", METHOD_HEADER)],
        false,
        EngineChoice::Vm,
    );
    let identity = authz(&with_keys, store_mh);
    for (name, key, kid) in [
        ("method_header/rs256_cached", &rsa, "rsa"),
        ("method_header/eddsa_cached", &ed, "ed"),
    ] {
        let token_req = with_token(key, kid);
        assert!(common::is_allowed(
            &identity.check(Incoming::Request(token_req.clone()))
        ));
        bench(c, "check_token", name, &identity, &token_req);
    }
    let (cert, _) = common::keys::client_certificate(SPIFFE);
    let cert_req = with_bound_token(&rsa, "rsa", Some(&cert));
    assert!(common::is_allowed(
        &identity.check(Incoming::Request(cert_req.clone()))
    ));
    bench(
        c,
        "check_token",
        "method_header/rs256_cert_bound_cached",
        &identity,
        &cert_req,
    );
    let (store_lib, _d2) = store(&with_keys, &[], true, EngineChoice::Auto);
    let governed = authz(&with_keys, store_lib);
    let token_req = with_token(&rsa, "rsa");
    assert!(common::is_allowed(
        &governed.check(Incoming::Request(token_req.clone()))
    ));
    bench(
        c,
        "check_token",
        "governance_library/rs256_cached",
        &governed,
        &token_req,
    );
    // The same Check, with a credential minted for the call in place of the token.
    for alg in ["EdDSA", "ES256", "RS256"] {
        let (minted, _dm) = minting(&keys, alg, &token_req);
        bench(
            c,
            "check_token",
            &format!(
                "governance_library/rs256_cached_minted_{}",
                alg.to_lowercase()
            ),
            &minted,
            &token_req,
        );
    }
    let state_dir = tempfile::tempdir().unwrap();
    let updater = loaded_state(state_dir.path());
    let (store_live, _d3) = store(&with_keys, &[], true, EngineChoice::Auto);
    let live = authz_live(&with_keys, store_live, &updater);
    assert!(common::is_allowed(
        &live.check(Incoming::Request(token_req.clone()))
    ));
    bench(
        c,
        "check_token",
        "governance_library/rs256_cached_100k_revocations_10k_tasks",
        &live,
        &token_req,
    );

    let mut parts = c.benchmark_group("parts");
    parts.bench_function("request_view", |b| {
        b.iter_batched(
            || req.clone(),
            |r| black_box(RequestView::try_from(r).unwrap()),
            BatchSize::SmallInput,
        );
    });
    // The worst a glob the configuration allows can cost: MAX_GLOB_BYTES of stars
    // and super-stars against a path at the default length limit that almost matches.
    let worst = {
        let mut glob = String::from("/**");
        while glob.len() + 8 < leash::glob::MAX_GLOB_BYTES {
            glob.push_str("/*a*b*/**");
        }
        glob + "/z"
    };
    assert!(worst.len() <= leash::glob::MAX_GLOB_BYTES);
    let matcher = leash::glob::path_matcher(&worst).unwrap();
    let limit = leash::request::RequestLimits::default().max_path_bytes;
    let mut path = String::new();
    while path.len() + 4 <= limit {
        path.push_str("/ab");
    }
    assert!(!matcher.is_match(&path));
    parts.bench_function(format!("glob_worst/{}", path.len()), |b| {
        b.iter(|| black_box(matcher.is_match(black_box(&path))));
    });
    let view = RequestView::try_from(req.clone()).unwrap();
    parts.bench_function("input_document", |b| {
        b.iter(|| black_box(build(&view, &InputLimits::default()).unwrap()));
    });
    let input = build(&view, &InputLimits::default()).unwrap();
    for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
        let (store, _dir) = store(&plain, &[("authz.rego", METHOD_HEADER)], false, engine);
        let set = store.current().as_ref().unwrap().clone();
        parts.bench_function(format!("evaluate/{engine:?}"), |b| {
            b.iter(|| black_box(set.evaluate(input.clone()).unwrap()));
        });
    }
    // Signature work a cache miss costs: 64 distinct tokens cycling through a one-entry cache.
    for (name, key, kid) in [
        ("verify_uncached/rs256", &rsa, "rsa"),
        ("verify_uncached/eddsa", &ed, "ed"),
    ] {
        let config = Config::from_yaml(
            "bench",
            &format!(
                "tokens:\n  cache_entries: 1\n  issuers:\n    - issuer: {ISS}\n      audiences: [tools]\n      algorithms: [RS256, EdDSA]\n      jwks: {}\n      workload_claim: spiffe_id\n",
                common::keys::jwks(&keys)
            ),
            &[],
        )
        .unwrap();
        let auth = leash::token::Authenticator::new(config.tokens.settings).unwrap();
        let views: Vec<RequestView> = (0..64)
            .map(|_| {
                let mut v = RequestView::try_from(with_token(key, kid)).unwrap();
                v.source_principal = SPIFFE.into();
                v
            })
            .collect();
        let targets: Vec<Target<'_>> = views
            .iter()
            .map(|v| Target::of(v, &Default::default()).unwrap())
            .collect();
        let now = leash::clock::unix_now();
        let mut i = 0usize;
        parts.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let at = i % views.len();
                black_box(auth.authenticate(&views[at], &targets[at], now).is_ok())
            });
        });
    }
    parts.finish();
}

/// Criterion reports means; the targets are on the median Check, so time single calls too.
fn percentiles(name: &str, authz: &Authz, req: &CheckRequest) {
    const CALLS: usize = 200_000;
    assert!(
        common::is_allowed(&authz.check(Incoming::Request(req.clone()))),
        "{name} must time an allow"
    );
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
        "{name} single calls: p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs ({CALLS} calls)",
        at(0.50),
        at(0.90),
        at(0.99)
    );
}

criterion_group!(benches, bench_check);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();

    let plain = config(None);
    let (store_plain, _d1) = store(
        &plain,
        &[("authz.rego", METHOD_HEADER)],
        false,
        EngineChoice::Vm,
    );
    percentiles(
        "check/method_header/vm",
        &authz(&plain, store_plain),
        &common::captured_request(),
    );
    let rsa = common::keys::signing_key(Algorithm::RS256);
    let ed = common::keys::signing_key(Algorithm::EdDSA);
    let keys: [(&SigningKey, &str); 2] = [(&rsa, "rsa"), (&ed, "ed")];
    let with_keys = config(Some(&keys));
    let (tokens, _d2) = store(
        &with_keys,
        &[("authz.rego", METHOD_HEADER)],
        false,
        EngineChoice::Vm,
    );
    let identity = authz(&with_keys, tokens);
    percentiles(
        "check_token/method_header/rs256_cached",
        &identity,
        &with_token(&rsa, "rsa"),
    );
    percentiles(
        "check_token/method_header/eddsa_cached",
        &identity,
        &with_token(&ed, "ed"),
    );

    // The governance library with an empty live context, then with a loaded one, then
    // while 10 000 revocations are committed one by one beside it.
    let token_req = with_token(&rsa, "rsa");
    let (store_lib, _d3) = store(&with_keys, &[], true, EngineChoice::Auto);
    percentiles(
        "check_token/governance_library/rs256_cached (empty live context)",
        &authz(&with_keys, store_lib),
        &token_req,
    );
    // The same Check, with a credential minted for the call in place of the token.
    // RS256 takes about 0.3 ms to sign: criterion times it, 200 000 calls would not.
    for alg in ["EdDSA", "ES256"] {
        let (minted, _dm) = minting(&keys, alg, &token_req);
        percentiles(
            &format!("check_token/governance_library/rs256_cached, minted {alg}"),
            &minted,
            &token_req,
        );
    }
    let state_dir = tempfile::tempdir().unwrap();
    let updater = loaded_state(state_dir.path());
    let (store_live, _d4) = store(&with_keys, &[], true, EngineChoice::Auto);
    let live = authz_live(&with_keys, store_live, &updater);
    percentiles(
        "check_token/governance_library/rs256_cached (100k revocations, 10k tasks)",
        &live,
        &token_req,
    );
    let burst = {
        let updater = updater.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let by = leash::state::ops::By {
                caller: "bench",
                now: leash::clock::unix_now(),
            };
            for i in 0..10_000 {
                updater
                    .update_blocking("bench", by.now, move |snapshot| {
                        leash::state::ops::revoke_token(
                            snapshot,
                            ISS,
                            &format!("burst-{i}"),
                            0,
                            "",
                            trust(),
                            by,
                        )
                    })
                    .unwrap();
            }
            started.elapsed()
        })
    };
    let mut took = Vec::new();
    while !burst.is_finished() {
        let incoming = Incoming::Request(token_req.clone());
        let started = std::time::Instant::now();
        black_box(live.check(incoming));
        took.push(started.elapsed());
    }
    let burst_took = burst.join().unwrap();
    took.sort();
    let at = |q: f64| took[((took.len() as f64) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "check_token/governance_library/rs256_cached during 10 000 revocations committed one by one \
         ({:.1} s, fsync each): p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, max {:.0} µs ({} calls)",
        burst_took.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        took.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        took.len()
    );
}

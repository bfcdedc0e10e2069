//! What ships under `deploy/` is checked here: the Kubernetes and Istio manifests
//! parse (`.ci/run` also validates the Kubernetes ones against the schemas), the
//! configuration and policy in the ConfigMaps load in leash, the pod's Envoy bootstrap
//! passes `envoy --mode validate`, and the dashboard and alerts name only metrics that
//! a live leash and a live Envoy export.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every document of every YAML file in `dir`.
fn documents(dir: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let value: serde_json::Value =
                yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for key in ["apiVersion", "kind"] {
                assert!(value[key].is_string(), "{}: no {key}", file.display());
            }
            assert!(
                value["metadata"]["name"].is_string(),
                "{}: no metadata.name",
                file.display()
            );
            out.push((file.display().to_string(), value));
        }
    }
    out
}

fn configmap<'a>(docs: &'a [(String, serde_json::Value)], name: &str) -> &'a serde_json::Value {
    &docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))
        .1["data"]
}

#[test]
fn the_kubernetes_configmaps_hold_a_configuration_and_policy_leash_loads() {
    let docs = documents("kubernetes");
    let config = configmap(&docs, "leash-config")["leash.yaml"]
        .as_str()
        .unwrap();
    let policy = configmap(&docs, "leash-policy");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in policy.as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let policy_dir = dir.path().display().to_string();
    let config = leash::config::Config::from_yaml(
        "leash-config/leash.yaml",
        config,
        &[("policy.dir", policy_dir)],
    )
    .expect("the ConfigMap's leash.yaml is a valid configuration");
    assert!(
        config.listen.control.is_none(),
        "the control API stays off TCP"
    );
    assert!(config.listen.control_uds.is_some());
    let store = leash::app::policy_store(&config);
    assert!(
        matches!(store.reload(), leash::policy::ReloadOutcome::Applied(_)),
        "{:?}",
        store.last_refusal()
    );
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Secret",
        "ConfigMap",
    ] {
        assert!(kinds.contains(kind), "no {kind}");
    }
}

#[test]
fn the_istio_files_parse_and_name_leash_as_a_custom_provider() {
    let docs = documents("istio");
    let provider = docs
        .iter()
        .find(|(_, d)| d["kind"] == "IstioOperator")
        .map(|(_, d)| &d["spec"]["meshConfig"]["extensionProviders"][0])
        .unwrap();
    assert_eq!(provider["name"], "leash");
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    assert!(provider["envoyExtAuthzGrpc"]["includeRequestBodyInCheck"].is_object());
    let custom = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "AuthorizationPolicy" && d["spec"]["action"] == "CUSTOM")
        .inspect(|(_, d)| assert_eq!(d["spec"]["provider"]["name"], "leash"))
        .count();
    assert!(custom >= 2, "the egress gateway and the waypoint ask leash");
    // Only the gateway and the waypoint may call leash's ext_authz port.
    assert!(docs.iter().any(|(_, d)| d["kind"] == "AuthorizationPolicy"
        && d["spec"]["action"] == "ALLOW"
        && d["metadata"]["namespace"] == "leash-system"));
    let config = configmap(&docs, "leash-mesh-config")["leash.yaml"]
        .as_str()
        .unwrap();
    leash::config::Config::from_yaml("leash-mesh-config/leash.yaml", config, &[])
        .expect("the mesh's leash.yaml is a valid configuration");
}

/// The pod's Envoy bootstrap passes `envoy --mode validate` (the two under
/// deploy/envoy are validated in tests/it/envoy.rs).
#[test]
fn the_pods_envoy_bootstrap_passes_envoy_validate() {
    let Some(envoy) = common::envoy::require_envoy() else {
        return;
    };
    let docs = documents("kubernetes");
    let pod = configmap(&docs, "envoy-bootstrap")["envoy.yaml"]
        .as_str()
        .unwrap();
    if let Err(refused) = common::envoy::validate(&envoy, pod) {
        panic!("the envoy-bootstrap ConfigMap: {refused}");
    }
}

/// The metric names a PromQL text refers to, by prefix.
fn metric_names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find(prefix) {
        let start = at + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// Whether an exposition names `metric`: as a sample, or as a family whose samples
/// carry a suffix (`_total`, `_bucket`) or none yet (a family without children).
fn exported(exposition: &str, metric: &str) -> bool {
    let family = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| metric.strip_suffix(s))
        .unwrap_or(metric);
    exposition.lines().any(|line| {
        line.strip_prefix(metric)
            .is_some_and(|r| r.starts_with(['{', ' ']))
            || line
                .strip_prefix("# TYPE ")
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|name| name == family || name == metric)
    })
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    use common::envoy::{Envoy, LeashAddr, Upstream, require_envoy};
    let dashboard =
        std::fs::read_to_string(deploy("observability/grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let alerts = std::fs::read_to_string(deploy("observability/alerts.yaml")).unwrap();
    let rules: serde_json::Value = yaml_serde::from_str(&alerts).unwrap();
    assert!(
        rules["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| r.len() >= 5)
    );
    let both = format!("{dashboard}\n{alerts}");

    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    let leash = common::LeashProcess::start(&["--set", "tokens.mode=off"]).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Tcp(leash.grpc), upstream.addr).await;
    envoy.send("GET", "/", &[], "").await;
    let (_, leash_metrics) = common::http_get(leash.admin, "/metrics").await;
    let (_, envoy_stats) = common::http_get(envoy.admin, "/stats/prometheus").await;
    let leash_names = metric_names(&both, "leash_");
    let envoy_names = metric_names(&both, "envoy_");
    assert!(leash_names.len() >= 10 && envoy_names.len() >= 4);
    for name in &leash_names {
        assert!(exported(&leash_metrics, name), "leash exports no {name}");
    }
    for name in &envoy_names {
        assert!(exported(&envoy_stats, name), "Envoy exports no {name}");
    }
}

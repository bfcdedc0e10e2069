//! The admin HTTP endpoints: liveness, readiness and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::policy::PolicyStore;

#[derive(Debug, Clone)]
struct Admin {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
}

pub fn router(store: Arc<PolicyStore>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Admin { store, metrics })
}

/// Ready once a policy set is compiled and warmed; until then Envoy would only get denials.
async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    match admin.store.current().as_ref() {
        Some(set) => (
            StatusCode::OK,
            format!("ready: policy revision {}\n", set.info().revision),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            match admin.store.last_refusal() {
                Some(why) => format!("not ready: no policy set serves: {why}\n"),
                None => "not ready: the policy is loading\n".to_owned(),
            },
        ),
    }
}

async fn metrics_text(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.encode(),
    )
}

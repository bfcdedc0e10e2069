//! The admin HTTP endpoints: liveness, readiness, Prometheus metrics, the status of an
//! approval for the agent that asked for it, and the keys tools verify leash's minted
//! credentials with (a JWKS and a discovery document).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::policy::PolicyStore;

#[derive(Debug, Clone)]
struct Admin {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    approvals: Option<Approvals>,
    minter: Option<Arc<crate::credential::Minter>>,
}

/// What the approval status endpoint reads: the live context, and the verifier of the
/// agent's own token.
#[derive(Debug, Clone)]
pub struct Approvals {
    pub state: Arc<crate::state::State>,
    pub tokens: Arc<crate::token::Authenticator>,
}

pub use crate::config::APPROVALS_PATH;

/// Where tools fetch the keys of leash's minted credentials.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The discovery document naming the issuer, the JWKS and the algorithms.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

pub fn router(
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    approvals: Option<Approvals>,
    minter: Option<Arc<crate::credential::Minter>>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/approvals/{id}", get(approval_status))
        .route(JWKS_PATH, get(jwks))
        .route(DISCOVERY_PATH, get(discovery))
        .with_state(Admin {
            store,
            metrics,
            approvals,
            minter,
        })
}

type Json = (StatusCode, [(header::HeaderName, &'static str); 2], String);

/// The answer of the credential endpoints where leash mints nothing.
fn no_minter() -> Json {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        r#"{"error":"not_found"}"#.to_owned(),
    )
}

/// The keys a minted credential may name: the signer's, and each retired key while a
/// credential it signed can still be valid. Verifiers may keep it a minute: standard
/// libraries fetch it again when a token names a `kid` they have not seen.
async fn jwks(State(admin): State<Admin>) -> Json {
    let Some(minter) = admin.minter else {
        return no_minter();
    };
    let body = minter.ring().jwks(crate::clock::unix_now()).to_string();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        body,
    )
}

/// Enough of an OpenID discovery document for a JWT library to find the keys: the
/// issuer, the JWKS address, the algorithm. The address is the issuer's when the issuer
/// is a URL (as it should be for tools to discover it); else the port as this request
/// reached it, never cached.
async fn discovery(State(admin): State<Admin>, headers: HeaderMap) -> Json {
    let Some(minter) = admin.minter else {
        return no_minter();
    };
    let settings = minter.settings();
    let issuer = settings.issuer.trim_end_matches('/');
    let jwks_uri = if issuer.starts_with("https://") || issuer.starts_with("http://") {
        format!("{issuer}{JWKS_PATH}")
    } else {
        // host[:port] only: a Host of anything else names no address of this port.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            })
            .unwrap_or("127.0.0.1");
        format!("http://{host}{JWKS_PATH}")
    };
    let body = serde_json::json!({
        "issuer": settings.issuer,
        "jwks_uri": jwks_uri,
        "id_token_signing_alg_values_supported": [settings.algorithm.name()],
        "token_signing_alg_values_supported": [settings.algorithm.name()],
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
}

/// An approval's status, for the agent that asked: its bearer token must verify and
/// name the approval's agent and task. Anyone else learns nothing, not even whether
/// the id exists.
async fn approval_status(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let json = |status: StatusCode, body: serde_json::Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
    };
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        )
    };
    let Some(approvals) = admin.approvals else {
        return not_found();
    };
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = crate::clock::unix_now();
    let Some(token) = raw.and_then(|raw| approvals.tokens.verify_token(raw.trim(), now).ok())
    else {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "unauthorized", "hint": "send the token that asked, as a bearer token"}),
        );
    };
    let snapshot = approvals.state.snapshot();
    let Some(approval) = snapshot.approval(&id).filter(|a| {
        *token.issuer.config.issuer == *a.binding.issuer
            && token.claims.agent.as_deref() == Some(&*a.binding.agent)
            && token.claims.task.as_deref() == Some(&*a.binding.task)
    }) else {
        return not_found();
    };
    let status = match approval.status {
        crate::state::ApprovalStatus::Approved | crate::state::ApprovalStatus::Pending
            if now >= approval.expires_at =>
        {
            "expired"
        }
        other => other.name(),
    };
    json(
        StatusCode::OK,
        serde_json::json!({
            "id": &*approval.id,
            "status": status,
            "action": approval.binding.action,
            "arguments_sha256": approval.binding.arguments,
            "expires_at": approval.expires_at,
            "uses_left": approval.uses_left,
        }),
    )
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

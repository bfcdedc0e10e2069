//! The demo's tool: a small MCP server (Streamable HTTP, JSON answers) with one read,
//! one write and one destructive tool. It records the credential each call carried,
//! so the demo can show what reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

/// The tools, by class, as the demo's tool table lists them.
pub const TOOLS: [(&str, &str); 3] = [
    ("search_issues", "read"),
    ("create_issue", "write"),
    ("delete_repo", "destructive"),
];

/// What reached the tool on its last call.
#[derive(Debug, Clone, Default)]
pub struct LastCall {
    pub tool: String,
    /// The `authorization` header as the tool received it.
    pub authorization: Option<String>,
}

#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Option<LastCall>>>);

impl Seen {
    pub fn take(&self) -> Option<LastCall> {
        self.0.lock().ok().and_then(|mut last| last.take())
    }
}

/// Serves the tool on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(call))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn call(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let tool = request
        .pointer("/params/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut last) = seen.0.lock() {
        *last = Some(LastCall {
            tool: tool.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    let text = match tool.as_str() {
        "search_issues" => "3 issues match",
        "create_issue" => "issue #42 created",
        "delete_repo" => "repository deleted",
        _ => "no such tool",
    };
    let answer = json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"content": [{"type": "text", "text": text}]},
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
}

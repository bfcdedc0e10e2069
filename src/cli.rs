//! The policy author's commands: `leash check`, `leash test`, `leash policy validate`.
//! Each runs the same code a live Check runs; `main` only prints.

use serde_json::{Value as Json, json};

use crate::config::Config;
use crate::decision::{Decision, Header};
use crate::edge;
use crate::pipeline::Verdict;
use crate::policy::{PolicyInfo, PolicyLoadError, ReloadOutcome, Value};
use crate::view::RequestView;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("policy does not load")]
    Policy(#[from] PolicyLoadError),
}

/// What `leash check` reports.
#[derive(Debug)]
pub struct CheckReport {
    pub input: Value,
    /// The decision rule's raw value (`undefined` when it has none).
    pub result: Value,
    pub verdict: Verdict,
}

/// Decides one request read from `file` (an input document, or a CheckRequest as
/// JSON) with the configured policy.
pub fn check(config: &Config, file: &str, text: &str) -> Result<CheckReport, CliError> {
    let bad = |message: String| CliError::Input {
        file: file.to_owned(),
        message,
    };
    let doc: Json = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let store = crate::app::policy_store(config);
    if let ReloadOutcome::Rejected(err) = store.reload() {
        return Err(err.into());
    }
    let pipeline = crate::app::pipeline(config, store.clone()).map_err(|e| bad(e.to_string()))?;

    // An input document carries what leash derives (`parsed_path`, `version`); a
    // CheckRequest carries only `attributes`.
    let is_document = ["parsed_path", "parsed_query", "version"]
        .iter()
        .any(|k| doc.get(k).is_some());
    let (input, verdict) = if is_document {
        let input = Value::from(doc);
        (input.clone(), pipeline.decide(input))
    } else {
        let request = edge::json::check_request(&doc).map_err(bad)?;
        let view = RequestView::try_from(request).map_err(|e| bad(e.to_string()))?;
        let input = pipeline.input(&view).map_err(|e| bad(e.to_string()))?;
        (input, pipeline.check(&view))
    };
    let result = store.current().as_ref().map_or(Value::Undefined, |set| {
        set.evaluate(input.clone()).unwrap_or(Value::Undefined)
    });
    Ok(CheckReport {
        input,
        result,
        verdict,
    })
}

impl CheckReport {
    pub fn to_json(&self, with_input: bool) -> Json {
        let mut out = verdict_json(&self.verdict);
        if let Json::Object(map) = &mut out {
            map.insert("policy_result".into(), value_json(&self.result));
            if with_input {
                map.insert("input".into(), value_json(&self.input));
            }
        }
        out
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Undefined => Json::String("<undefined>".into()),
        v => serde_json::to_value(v).unwrap_or(Json::Null),
    }
}

fn headers_json(headers: &[Header]) -> Json {
    Json::Array(
        headers
            .iter()
            .map(|h| json!({ "name": h.name, "value": h.value }))
            .collect(),
    )
}

/// The decision as Envoy will apply it.
pub fn verdict_json(verdict: &Verdict) -> Json {
    let metadata = Json::Object(verdict.decision.metadata().clone());
    match &verdict.decision {
        Decision::Allow(permit) => {
            let m = permit.mutations();
            json!({
                "decision": "allow",
                "decision_id": verdict.decision_id,
                "revision": verdict.revision.as_deref(),
                "upstream_headers": headers_json(&m.headers),
                "response_headers_to_add": headers_json(&m.response_headers_to_add),
                "request_headers_to_remove": m.request_headers_to_remove,
                "query_parameters_to_set": m.query_parameters_to_set,
                "query_parameters_to_remove": m.query_parameters_to_remove,
                "dynamic_metadata": metadata,
            })
        }
        Decision::Deny(denial) => {
            let r = denial.response();
            json!({
                "decision": "deny",
                "decision_id": verdict.decision_id,
                "revision": verdict.revision.as_deref(),
                "reason": denial.reason().code(),
                "detail": denial.detail(),
                "http_status": r.status.code(),
                "headers": headers_json(&r.headers),
                "body": r.body,
                "dynamic_metadata": metadata,
            })
        }
    }
}

/// Compiles and warms the configured policy without serving it.
pub fn validate(config: &Config) -> Result<PolicyInfo, PolicyLoadError> {
    match crate::app::policy_store(config).reload() {
        ReloadOutcome::Applied(info) | ReloadOutcome::Unchanged(info) => Ok((*info).clone()),
        ReloadOutcome::Rejected(err) => Err(err),
    }
}

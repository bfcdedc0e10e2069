//! [`Verdict`] -> `CheckResponse`. The only place that writes Envoy's response types.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, QueryParameter};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;

use crate::decision::{Decision, Header, Metadata};
use crate::pipeline::Verdict;

/// The dynamic-metadata key Envoy's access log reads the decision id from.
pub const DECISION_ID_KEY: &str = "decision_id";
/// The dynamic-metadata key holding the deny reason code.
pub const REASON_KEY: &str = "leash_reason";
/// The dynamic-metadata key holding the `jti` of the credential minted for the call.
pub const MINTED_JTI_KEY: &str = "minted_jti";

#[derive(Debug, Clone, Default)]
pub struct EgressOptions {
    /// When set, denials carry their reason code in this response header.
    pub reason_header: Option<String>,
}

pub fn response(verdict: &Verdict, options: &EgressOptions) -> CheckResponse {
    let mut metadata = metadata_struct(verdict.decision.metadata());
    metadata
        .fields
        .insert(DECISION_ID_KEY.to_owned(), string(&verdict.decision_id));
    match &verdict.decision {
        Decision::Allow(permit) => {
            if let Some(credential) = permit.credential() {
                metadata
                    .fields
                    .insert(MINTED_JTI_KEY.to_owned(), string(&credential.jti));
            }
            let m = permit.mutations();
            CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::Ok as i32,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: header_options(permit.upstream_headers(), Repeat::Append),
                    headers_to_remove: m.request_headers_to_remove.clone(),
                    response_headers_to_add: header_options(
                        pairs(&m.response_headers_to_add),
                        Repeat::Add,
                    ),
                    query_parameters_to_set: m
                        .query_parameters_to_set
                        .iter()
                        .map(|(key, value)| QueryParameter {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    query_parameters_to_remove: m.query_parameters_to_remove.clone(),
                    ..Default::default()
                })),
                dynamic_metadata: Some(metadata),
            }
        }
        Decision::Deny(denial) => {
            let response = denial.response();
            let mut headers = header_options(pairs(&response.headers), Repeat::Append);
            if let Some(name) = &options.reason_header {
                headers.push(set_header(name, denial.reason().code()));
            }
            metadata
                .fields
                .insert(REASON_KEY.to_owned(), string(denial.reason().code()));
            CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::PermissionDenied as i32,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(response.status.code()),
                    }),
                    headers,
                    body: response.body.clone(),
                })),
                dynamic_metadata: Some(metadata),
            }
        }
    }
}

/// How a second value for the same header name is sent.
#[derive(Clone, Copy)]
enum Repeat {
    /// `headers` of OK and denied responses: the first value replaces what the request
    /// had (Envoy's default for these fields), later ones are appended.
    Append,
    /// `response_headers_to_add`: every value is added.
    Add,
}

fn pairs(headers: &[Header]) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|h| (h.name.as_str(), h.value.as_str()))
}

fn header_options<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    repeat: Repeat,
) -> Vec<HeaderValueOption> {
    let (least, most) = headers.size_hint();
    let mut out: Vec<HeaderValueOption> = Vec::with_capacity(most.unwrap_or(least));
    for (name, value) in headers {
        let seen = out
            .iter()
            .any(|o| o.header.as_ref().is_some_and(|h| h.key == name));
        let mut option = set_header(name, value);
        if let (Repeat::Append, true) = (repeat, seen) {
            // Envoy reads only this (deprecated) field for `headers`, not `append_action`.
            #[allow(
                deprecated,
                reason = "Envoy's ext_authz reads `append` for these headers"
            )]
            let append = &mut option.append;
            *append = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
        }
        out.push(option);
    }
    out
}

fn set_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn metadata_struct(map: &Metadata) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect::<HashMap<_, _>>(),
    }
}

fn json_value(v: &serde_json::Value) -> PbValue {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(metadata_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;

//! `CheckRequest` -> [`RequestView`]. The only place that reads Envoy's request types.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::protojson;
use crate::decision::DenyReason;
use crate::view::{Attributes, Body, ROUTE_RESOURCE_KEY, RequestView};

/// Why a CheckRequest cannot be decided on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCheckRequest {
    #[error("the CheckRequest has no HTTP request attributes")]
    NoHttp,
    #[error("header {0:?} is not valid UTF-8")]
    InvalidUtf8(String),
}

impl InvalidCheckRequest {
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::NoHttp => DenyReason::RequestNoHttp,
            Self::InvalidUtf8(_) => DenyReason::RequestInvalidUtf8,
        }
    }
}

impl TryFrom<CheckRequest> for RequestView {
    type Error = InvalidCheckRequest;

    /// Moves the headers and body out of the message into the view, copies the small
    /// fields leash reads, and keeps the rest for `input.attributes`, built only when
    /// a policy document needs it.
    fn try_from(req: CheckRequest) -> Result<Self, Self::Error> {
        let mut ctx = req.attributes.ok_or(InvalidCheckRequest::NoHttp)?;
        let (source_principal, source_certificate) = ctx
            .source
            .as_ref()
            .map(|peer| (peer.principal.clone(), peer.certificate.clone()))
            .unwrap_or_default();
        let route_resource = ctx
            .context_extensions
            .get(ROUTE_RESOURCE_KEY)
            .filter(|name| !name.is_empty())
            .map(|name| std::sync::Arc::from(name.as_str()));
        let http = ctx
            .request
            .as_mut()
            .and_then(|r| r.http.as_mut())
            .ok_or(InvalidCheckRequest::NoHttp)?;
        // With `encode_raw_headers` the document keeps Envoy's `headerMap` and the view
        // reads a copy; otherwise the view takes the map and lends it back.
        let lent_headers = !http.headers.is_empty();
        let headers = if lent_headers {
            std::mem::take(&mut http.headers)
        } else {
            raw_headers(http.header_map.as_ref())?
        };
        let body = if !http.raw_body.is_empty() {
            Body::Bytes(std::mem::take(&mut http.raw_body))
        } else if !http.body.is_empty() {
            Body::Text(std::mem::take(&mut http.body))
        } else {
            Body::None
        };
        let host = headers
            .get(":authority")
            .cloned()
            .unwrap_or_else(|| http.host.clone());
        let (method, scheme, path) = (http.method.clone(), http.scheme.clone(), http.path.clone());
        let attributes = Attributes::new(move |view: &RequestView| {
            protojson::attributes(
                &ctx,
                protojson::Lent {
                    headers: lent_headers.then_some(&view.headers),
                    body: &view.body,
                },
            )
        });
        Ok(Self {
            attributes,
            method,
            scheme,
            host,
            path,
            headers,
            body,
            source_principal,
            source_certificate,
            route_resource,
        })
    }
}

/// With `encode_raw_headers`, Envoy sends headers as a list with byte values;
/// repeated names are joined with `,` as HTTP allows.
fn raw_headers(
    map: Option<&envoy_types::pb::envoy::config::core::v3::HeaderMap>,
) -> Result<HashMap<String, String>, InvalidCheckRequest> {
    let mut headers: HashMap<String, String> = HashMap::new();
    for header in map.map(|m| m.headers.as_slice()).unwrap_or_default() {
        let value = if header.raw_value.is_empty() {
            header.value.clone()
        } else {
            String::from_utf8(header.raw_value.clone())
                .map_err(|_| InvalidCheckRequest::InvalidUtf8(header.key.clone()))?
        };
        headers
            .entry(header.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(headers)
}

/// Requests shaped like Envoy's, for warming a policy set before it serves: a read
/// and a JSON write, so body parsing and header lookups are exercised too.
pub fn sample_requests() -> Vec<CheckRequest> {
    vec![
        sample_request("GET", "/v1/items?limit=10", &[("x-agent-id", "warmup")], ""),
        sample_request(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("x-agent-id", "warmup"),
            ],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
        ),
    ]
}

/// A CheckRequest as Envoy 1.40 sends it for `method path` to `tools.example`, with
/// `headers` beside the usual ones and `body` as `with_request_body` forwards it.
pub fn sample_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::google::protobuf::Timestamp;

    let peer = |port: u32| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let mut all: HashMap<String, String> = [
        (":authority", "tools.example"),
        (":method", method),
        (":path", path),
        (":scheme", "http"),
        ("user-agent", "leash-sample"),
        ("x-request-id", "00000000-0000-4000-8000-000000000000"),
    ]
    .iter()
    .chain(headers)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    if !body.is_empty() {
        all.entry("content-length".into())
            .or_insert_with(|| body.len().to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(40000)),
            destination: Some(peer(10000)),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: method.into(),
                    headers: all,
                    path: path.into(),
                    host: "tools.example".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    body: body.into(),
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Default::default()),
            route_metadata_context: Some(Default::default()),
            ..Default::default()
        }),
    }
}

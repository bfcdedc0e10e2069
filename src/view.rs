//! The request facts leash decides on, owned and free of Envoy's types.
//!
//! `attributes` builds the OPA-compatible `input.attributes` document straight from
//! the protobuf message the edge kept, when a policy needs a document at all; the
//! typed fields are what leash itself reads.

use std::collections::HashMap;
use std::sync::Arc;

use regorus::Value;

#[derive(Debug, Clone)]
pub struct RequestView {
    /// `input.attributes`: the CheckRequest's attributes as protojson names and shapes.
    pub attributes: Attributes,
    pub method: String,
    /// `http` or `https`, as the client spoke to Envoy.
    pub scheme: String,
    /// The request's authority (`:authority`, else Envoy's `host`).
    pub host: String,
    /// `:path` as Envoy saw it, query included.
    pub path: String,
    /// Header names are lowercase, as Envoy sends them.
    pub headers: HashMap<String, String>,
    pub body: Body,
    /// The peer's identity from its certificate (a SPIFFE ID under Istio), or empty.
    pub source_principal: String,
    /// The peer's certificate as URL-encoded PEM (`include_peer_certificate`), or empty.
    pub source_certificate: String,
    /// The upstream resource Envoy's route names (`context_extensions.leash_resource`):
    /// what Envoy decided, where the agent wrote `Host`.
    pub route_resource: Option<Arc<str>>,
}

/// Builds `input.attributes` on demand. Most of a Check's documents are never built:
/// the shipped library, decided in Rust, reads none of `input.attributes`. The edge
/// keeps its message here, less the headers and body it moved into the view, and the
/// builder takes those back from the view.
#[derive(Clone)]
pub struct Attributes(Arc<AttributesFn>);

type AttributesFn = dyn Fn(&RequestView) -> Value + Send + Sync;

impl Attributes {
    pub fn new(build: impl Fn(&RequestView) -> Value + Send + Sync + 'static) -> Self {
        Self(Arc::new(build))
    }

    /// Attributes that are a value already.
    pub fn fixed(value: Value) -> Self {
        Self::new(move |_| value.clone())
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attributes(..)")
    }
}

/// The context extension through which an Envoy route names its upstream resource.
pub const ROUTE_RESOURCE_KEY: &str = "leash_resource";

/// The request body as Envoy forwarded it (`with_request_body`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Body {
    #[default]
    None,
    Text(String),
    /// `pack_as_bytes: true` sends the body as bytes.
    Bytes(Vec<u8>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::None => &[],
            Self::Text(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

impl RequestView {
    /// The `input.attributes` document.
    pub fn attributes_document(&self) -> Value {
        (self.attributes.0)(self)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A request as unit tests need it: `method` to `scheme://host path`, with
    /// `headers` and no body, attributes or peer.
    #[cfg(test)]
    pub(crate) fn for_test(
        method: &str,
        scheme: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        Self {
            attributes: Attributes::fixed(Value::new_object()),
            method: method.into(),
            scheme: scheme.into(),
            host: host.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Body::None,
            source_principal: String::new(),
            source_certificate: String::new(),
            route_resource: None,
        }
    }
}

//! The request facts leash decides on, owned and free of Envoy's types.
//!
//! `attributes` is the OPA-compatible `input.attributes` document, built once at the
//! edge straight from the protobuf message; the typed fields are what leash itself
//! reads (body parsing now, token binding and action classification later).

use std::collections::HashMap;

use crate::policy::Value;

#[derive(Debug, Clone)]
pub struct RequestView {
    /// `input.attributes`: the CheckRequest's attributes as protojson names and shapes.
    pub attributes: Value,
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
}

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
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

//! A CheckRequest whose strings are all bytes, decoded only after the real decode
//! failed: it tells a request carrying text that is not UTF-8 (a header value, say)
//! from bytes that are no CheckRequest at all, without reading prost's error text.
//! Field numbers are those of envoy.service.auth.v3; fields holding no text are left
//! out, and a map is read as the repeated entries it is on the wire.

use prost::Message as _;

/// Whether `bytes`, which are not a valid CheckRequest, would be one if its strings
/// were allowed to hold any bytes.
pub fn only_text_is_invalid(bytes: &[u8]) -> bool {
    CheckRequest::decode(bytes).is_ok()
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    request: Option<Request>,
    #[prost(message, repeated, tag = "10")]
    context_extensions: Vec<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Peer {
    #[prost(message, optional, tag = "1")]
    address: Option<Address>,
    #[prost(bytes = "vec", tag = "2")]
    service: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    labels: Vec<Entry>,
    #[prost(bytes = "vec", tag = "4")]
    principal: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    certificate: Vec<u8>,
}

/// `envoy.config.core.v3.Address`: its oneof members, each as an optional field.
#[derive(Clone, PartialEq, prost::Message)]
struct Address {
    #[prost(message, optional, tag = "1")]
    socket_address: Option<SocketAddress>,
    #[prost(message, optional, tag = "2")]
    pipe: Option<Pipe>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SocketAddress {
    #[prost(bytes = "vec", tag = "2")]
    address: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    named_port: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    resolver_name: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Pipe {
    #[prost(bytes = "vec", tag = "1")]
    path: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(message, optional, tag = "2")]
    http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HttpRequest {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    method: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    headers: Vec<Entry>,
    #[prost(bytes = "vec", tag = "4")]
    path: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    host: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    scheme: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    query: Vec<u8>,
    #[prost(bytes = "vec", tag = "8")]
    fragment: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    protocol: Vec<u8>,
    #[prost(bytes = "vec", tag = "11")]
    body: Vec<u8>,
    #[prost(message, optional, tag = "13")]
    header_map: Option<HeaderMap>,
}

/// A `map<string, string>` entry.
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    headers: Vec<HeaderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

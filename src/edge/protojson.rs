//! `AttributeContext` -> `input.attributes`, straight from the protobuf message.
//!
//! The shape is what OPA's Envoy plugin gives policies: protobuf JSON names
//! (lowerCamelCase), fields at their zero value left out, messages that are present
//! kept even when empty (`metadataContext: {}`), `Timestamp` as `{seconds, nanos}`,
//! 64-bit integers and enums as numbers, bytes as base64, `Struct` as plain JSON.

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, Metadata, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::google::protobuf::{self as pbuf, value::Kind};
use std::collections::HashMap;

use crate::document::document_keys;
use crate::policy::{Object, Value};
use crate::view::Body;

/// What the view took out of the message: the HTTP headers (unless Envoy sent them
/// as a `headerMap`, which the message keeps) and the body.
#[derive(Clone, Copy)]
pub(crate) struct Lent<'a> {
    pub headers: Option<&'a HashMap<String, String>>,
    pub body: &'a Body,
}

pub(crate) fn attributes(ctx: &AttributeContext, lent: Lent<'_>) -> Value {
    KEYS.with(|k| attributes_with(ctx, lent, k))
}

fn attributes_with(ctx: &AttributeContext, lent: Lent<'_>, k: &Keys) -> Value {
    let mut o = Object::new();
    if let Some(source) = &ctx.source {
        o.insert(k.source.clone(), peer(source, k));
    }
    if let Some(destination) = &ctx.destination {
        o.insert(k.destination.clone(), peer(destination, k));
    }
    if let Some(request) = &ctx.request {
        o.insert(k.request.clone(), self::request(request, lent, k));
    }
    if !ctx.context_extensions.is_empty() {
        o.insert(
            k.context_extensions.clone(),
            string_map(&ctx.context_extensions),
        );
    }
    if let Some(metadata) = &ctx.metadata_context {
        o.insert(k.metadata_context.clone(), self::metadata(metadata, k));
    }
    if let Some(metadata) = &ctx.route_metadata_context {
        o.insert(
            k.route_metadata_context.clone(),
            self::metadata(metadata, k),
        );
    }
    if let Some(tls) = &ctx.tls_session {
        o.insert(k.tls_session.clone(), tls_session(tls, k));
    }
    o.into_value()
}

fn peer(peer: &Peer, k: &Keys) -> Value {
    let mut o = Object::new();
    if let Some(address) = &peer.address {
        o.insert(k.address.clone(), self::address(address, k));
    }
    put_str(&mut o, &k.service, &peer.service);
    if !peer.labels.is_empty() {
        o.insert(k.labels.clone(), string_map(&peer.labels));
    }
    put_str(&mut o, &k.principal, &peer.principal);
    put_str(&mut o, &k.certificate, &peer.certificate);
    o.into_value()
}

fn address(addr: &Address, k: &Keys) -> Value {
    let mut o = Object::new();
    match &addr.address {
        Some(address::Address::SocketAddress(sa)) => {
            let mut s = Object::new();
            put_int(&mut s, &k.protocol, i64::from(sa.protocol));
            put_str(&mut s, &k.address, &sa.address);
            match &sa.port_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port)) => {
                    put_int(&mut s, &k.port_value, i64::from(*port));
                }
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::NamedPort(name)) => {
                    put_str(&mut s, &k.named_port, name);
                }
                None => {}
            }
            put_str(&mut s, &k.resolver_name, &sa.resolver_name);
            if sa.ipv4_compat {
                s.insert(k.ipv4_compat.clone(), Value::Bool(true));
            }
            o.insert(k.socket_address.clone(), s.into_value());
        }
        Some(address::Address::Pipe(pipe)) => {
            let mut p = Object::new();
            put_str(&mut p, &k.path, &pipe.path);
            put_int(&mut p, &k.mode, i64::from(pipe.mode));
            o.insert(k.pipe.clone(), p.into_value());
        }
        Some(address::Address::EnvoyInternalAddress(internal)) => {
            let mut i = Object::new();
            if let Some(envoy_types::pb::envoy::config::core::v3::envoy_internal_address::AddressNameSpecifier::ServerListenerName(name)) =
                &internal.address_name_specifier
            {
                put_str(&mut i, &k.server_listener_name, name);
            }
            put_str(&mut i, &k.endpoint_id, &internal.endpoint_id);
            o.insert(k.envoy_internal_address.clone(), i.into_value());
        }
        None => {}
    }
    o.into_value()
}

fn request(req: &Request, lent: Lent<'_>, k: &Keys) -> Value {
    let mut o = Object::new();
    if let Some(time) = &req.time {
        o.insert(k.time.clone(), timestamp(time, k));
    }
    if let Some(http) = &req.http {
        o.insert(k.http.clone(), self::http(http, lent, k));
    }
    o.into_value()
}

fn timestamp(ts: &pbuf::Timestamp, k: &Keys) -> Value {
    let mut o = Object::new();
    put_int(&mut o, &k.seconds, ts.seconds);
    put_int(&mut o, &k.nanos, i64::from(ts.nanos));
    o.into_value()
}

fn http(http: &HttpRequest, lent: Lent<'_>, k: &Keys) -> Value {
    let mut o = Object::new();
    put_str(&mut o, &k.id, &http.id);
    put_str(&mut o, &k.method, &http.method);
    let headers = lent.headers.unwrap_or(&http.headers);
    if !headers.is_empty() {
        o.insert(k.headers.clone(), string_map(headers));
    }
    if let Some(map) = &http.header_map {
        o.insert(k.header_map.clone(), header_map(map, k));
    }
    put_str(&mut o, &k.path, &http.path);
    put_str(&mut o, &k.host, &http.host);
    put_str(&mut o, &k.scheme, &http.scheme);
    put_str(&mut o, &k.query, &http.query);
    put_str(&mut o, &k.fragment, &http.fragment);
    put_int(&mut o, &k.size, http.size);
    put_str(&mut o, &k.protocol, &http.protocol);
    let (body, raw_body) = match lent.body {
        Body::Text(text) => (text.as_str(), http.raw_body.as_slice()),
        Body::Bytes(bytes) => (http.body.as_str(), bytes.as_slice()),
        Body::None => (http.body.as_str(), http.raw_body.as_slice()),
    };
    put_str(&mut o, &k.body, body);
    put_bytes(&mut o, &k.raw_body, raw_body);
    o.into_value()
}

fn header_map(map: &HeaderMap, k: &Keys) -> Value {
    let headers = map
        .headers
        .iter()
        .map(|h| {
            let mut o = Object::new();
            put_str(&mut o, &k.key, &h.key);
            put_str(&mut o, &k.value, &h.value);
            put_bytes(&mut o, &k.raw_value, &h.raw_value);
            o.into_value()
        })
        .collect::<Vec<_>>();
    let mut o = Object::new();
    if !headers.is_empty() {
        o.insert(k.headers.clone(), Value::from(headers));
    }
    o.into_value()
}

fn tls_session(tls: &TlsSession, k: &Keys) -> Value {
    let mut o = Object::new();
    put_str(&mut o, &k.sni, &tls.sni);
    o.into_value()
}

fn metadata(md: &Metadata, k: &Keys) -> Value {
    let mut o = Object::new();
    if !md.filter_metadata.is_empty() {
        let filters = md
            .filter_metadata
            .iter()
            .map(|(ns, s)| (Value::from(ns.as_str()), structure(s)))
            .collect::<Object>();
        o.insert(k.filter_metadata.clone(), filters.into_value());
    }
    if !md.typed_filter_metadata.is_empty() {
        let typed = md
            .typed_filter_metadata
            .iter()
            .map(|(ns, any)| {
                let mut a = Object::new();
                put_str(&mut a, &k.type_url, &any.type_url);
                put_bytes(&mut a, &k.value, &any.value);
                (Value::from(ns.as_str()), a.into_value())
            })
            .collect::<Object>();
        o.insert(k.typed_filter_metadata.clone(), typed.into_value());
    }
    o.into_value()
}

/// `google.protobuf.Struct` becomes the JSON object it stands for.
fn structure(s: &pbuf::Struct) -> Value {
    s.fields
        .iter()
        .map(|(key, v)| (Value::from(key.as_str()), struct_value(v)))
        .collect::<Object>()
        .into_value()
}

fn struct_value(v: &pbuf::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => structure(s),
        Some(Kind::ListValue(list)) => {
            Value::from(list.values.iter().map(struct_value).collect::<Vec<_>>())
        }
    }
}

fn string_map(map: &HashMap<String, String>) -> Value {
    map.iter()
        .map(|(key, value)| (Value::from(key.as_str()), Value::from(value.as_str())))
        .collect::<Object>()
        .into_value()
}

fn put_str(o: &mut Object, key: &Value, value: &str) {
    if !value.is_empty() {
        o.insert(key.clone(), Value::from(value));
    }
}

fn put_int(o: &mut Object, key: &Value, value: i64) {
    if value != 0 {
        o.insert(key.clone(), Value::from(value));
    }
}

fn put_bytes(o: &mut Object, key: &Value, value: &[u8]) {
    if !value.is_empty() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        o.insert(key.clone(), Value::from(encoded));
    }
}

document_keys! {
    source = "source", destination = "destination", request = "request",
    context_extensions = "contextExtensions", metadata_context = "metadataContext",
    route_metadata_context = "routeMetadataContext", tls_session = "tlsSession",
    address = "address", service = "service", labels = "labels", principal = "principal",
    certificate = "certificate", socket_address = "socketAddress", protocol = "protocol",
    port_value = "portValue", named_port = "namedPort", resolver_name = "resolverName",
    ipv4_compat = "ipv4Compat", pipe = "pipe", path = "path", mode = "mode",
    envoy_internal_address = "envoyInternalAddress", server_listener_name = "serverListenerName",
    endpoint_id = "endpointId", time = "time", http = "http", seconds = "seconds", nanos = "nanos",
    id = "id", method = "method", headers = "headers", header_map = "headerMap", host = "host",
    scheme = "scheme", query = "query", fragment = "fragment", size = "size", body = "body",
    raw_body = "rawBody", key = "key", value = "value", raw_value = "rawValue", sni = "sni",
    filter_metadata = "filterMetadata", typed_filter_metadata = "typedFilterMetadata",
    type_url = "typeUrl",
}

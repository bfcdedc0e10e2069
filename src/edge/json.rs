//! A CheckRequest written as JSON (protobuf JSON names, or the proto's snake_case
//! names), for `leash check`: policy authors can replay a request Envoy logged.

use std::collections::HashMap;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{self as pbuf, value::Kind};
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, String>;

pub fn check_request(doc: &Value) -> Result<CheckRequest> {
    let attributes = match get(doc, "attributes") {
        None => None,
        Some(v) => Some(attribute_context(v, "attributes")?),
    };
    Ok(CheckRequest { attributes })
}

fn attribute_context(v: &Value, at: &str) -> Result<AttributeContext> {
    let o = object(v, at)?;
    Ok(AttributeContext {
        source: opt(o, "source", at, peer)?,
        destination: opt(o, "destination", at, peer)?,
        request: opt(o, "request", at, request)?,
        context_extensions: opt(o, "contextExtensions", at, string_map)?.unwrap_or_default(),
        metadata_context: opt(o, "metadataContext", at, metadata)?,
        route_metadata_context: opt(o, "routeMetadataContext", at, metadata)?,
        tls_session: opt(o, "tlsSession", at, |v, at| {
            Ok(TlsSession {
                sni: string(object(v, at)?, "sni", at)?,
            })
        })?,
    })
}

fn peer(v: &Value, at: &str) -> Result<Peer> {
    let o = object(v, at)?;
    Ok(Peer {
        address: opt(o, "address", at, peer_address)?,
        service: string(o, "service", at)?,
        labels: opt(o, "labels", at, string_map)?.unwrap_or_default(),
        principal: string(o, "principal", at)?,
        certificate: string(o, "certificate", at)?,
    })
}

fn peer_address(v: &Value, at: &str) -> Result<Address> {
    let o = object(v, at)?;
    let socket = opt(o, "socketAddress", at, |v, at| {
        let s = object(v, at)?;
        let port = match field(s, "portValue") {
            Some(p) => Some(socket_address::PortSpecifier::PortValue(
                p.as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| format!("{at}.portValue must be a port number"))?,
            )),
            None => None,
        };
        Ok(SocketAddress {
            address: string(s, "address", at)?,
            port_specifier: port,
            ..Default::default()
        })
    })?;
    Ok(Address {
        address: socket.map(address::Address::SocketAddress),
    })
}

fn request(v: &Value, at: &str) -> Result<Request> {
    let o = object(v, at)?;
    Ok(Request {
        time: opt(o, "time", at, |v, at| {
            let t = object(v, at)?;
            Ok(pbuf::Timestamp {
                seconds: field(t, "seconds").and_then(Value::as_i64).unwrap_or(0),
                nanos: field(t, "nanos")
                    .and_then(Value::as_i64)
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(0),
            })
        })?,
        http: opt(o, "http", at, http)?,
    })
}

fn http(v: &Value, at: &str) -> Result<HttpRequest> {
    let o = object(v, at)?;
    let raw_body = match field(o, "rawBody") {
        None => Vec::new(),
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.as_str().unwrap_or_default())
            .map_err(|_| format!("{at}.rawBody must be base64"))?,
    };
    let size = match field(o, "size") {
        None => 0,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{at}.size must be a number"))?,
        Some(n) => n
            .as_i64()
            .ok_or_else(|| format!("{at}.size must be a number"))?,
    };
    Ok(HttpRequest {
        id: string(o, "id", at)?,
        method: string(o, "method", at)?,
        headers: opt(o, "headers", at, string_map)?.unwrap_or_default(),
        path: string(o, "path", at)?,
        host: string(o, "host", at)?,
        scheme: string(o, "scheme", at)?,
        query: string(o, "query", at)?,
        fragment: string(o, "fragment", at)?,
        size,
        protocol: string(o, "protocol", at)?,
        body: string(o, "body", at)?,
        raw_body,
        ..Default::default()
    })
}

fn metadata(v: &Value, at: &str) -> Result<Metadata> {
    let o = object(v, at)?;
    let filter_metadata = match field(o, "filterMetadata") {
        None => HashMap::new(),
        Some(f) => object(f, at)?
            .iter()
            .map(|(ns, s)| Ok((ns.clone(), structure(object(s, at)?))))
            .collect::<Result<_>>()?,
    };
    Ok(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

fn structure(o: &Map<String, Value>) -> pbuf::Struct {
    pbuf::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), struct_value(v)))
            .collect(),
    }
}

fn struct_value(v: &Value) -> pbuf::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(pbuf::ListValue {
            values: items.iter().map(struct_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(structure(o)),
    };
    pbuf::Value { kind: Some(kind) }
}

fn string_map(v: &Value, at: &str) -> Result<HashMap<String, String>> {
    object(v, at)?
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("{at}.{k} must be a string")),
        })
        .collect()
}

/// Looks a field up by its JSON name or its proto (snake_case) name.
fn field<'a>(o: &'a Map<String, Value>, json_name: &str) -> Option<&'a Value> {
    o.get(json_name).or_else(|| o.get(&snake_case(json_name)))
}

fn get<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object().and_then(|o| field(o, name))
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{at} must be an object"))
}

fn string(o: &Map<String, Value>, name: &str, at: &str) -> Result<String> {
    match field(o, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at}.{name} must be a string")),
    }
}

fn opt<T>(
    o: &Map<String, Value>,
    name: &str,
    at: &str,
    parse: impl FnOnce(&Value, &str) -> Result<T>,
) -> Result<Option<T>> {
    field(o, name)
        .map(|v| parse(v, &format!("{at}.{name}")))
        .transpose()
}

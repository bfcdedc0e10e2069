//! The JWT operations behind OPA's `io.jwt.*` builtins, with OPA's semantics:
//! `decode` does not verify; `verify_*` answer whether the signature verifies with the
//! given key material; `decode_verify` also checks `alg`, `iss`, `aud`, `exp` and
//! `nbf` against constraints. Errors (a malformed token, unusable key material) are
//! errors, which the policy engine turns into an undefined result, as OPA does.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value as Json};

use crate::jws::json_part;

/// A compact JWS split and decoded.
struct Jws<'a> {
    header: Map<String, Json>,
    payload: Vec<u8>,
    signed: &'a str,
    signature: &'a str,
}

fn split(jwt: &str) -> Result<Jws<'_>, String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("encoded JWT must have 3 sections".into());
    };
    let header = json_part(h, "header")?;
    if header.contains_key("enc") {
        return Err("JWT is a JWE object, which is not supported".into());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .map_err(|_| "JWT payload had invalid encoding".to_owned())?;
    let signed = jwt.get(..h.len() + 1 + p.len()).ok_or("malformed JWT")?;
    Ok(Jws {
        header,
        payload,
        signed,
        signature: s,
    })
}

fn object(bytes: &[u8]) -> Result<Map<String, Json>, String> {
    match serde_json::from_slice(bytes) {
        Ok(Json::Object(map)) => Ok(map),
        _ => Err("decoded JSON type was not an object".into()),
    }
}

fn is_nested(header: &Map<String, Json>) -> bool {
    header
        .get("cty")
        .and_then(Json::as_str)
        .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
}

/// `io.jwt.decode`: `[header, payload, signature as hex]`, following nested JWTs.
pub fn decode(jwt: &str) -> Result<(Json, Json, String), String> {
    let jws = split(jwt)?;
    if is_nested(&jws.header) {
        let inner = String::from_utf8(jws.payload).map_err(|_| "nested JWT is not text")?;
        return decode(inner.trim_matches(|c| c == '"' || c == '\''));
    }
    let payload = object(&jws.payload)?;
    let signature = URL_SAFE_NO_PAD
        .decode(jws.signature.trim_end_matches('='))
        .map_err(|_| "JWT signature had invalid encoding".to_owned())?;
    Ok((
        Json::Object(jws.header),
        Json::Object(payload),
        hex(&signature),
    ))
}

/// Lowercase hex, as OPA prints signatures and digests.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Keys from a PEM certificate, a PEM public key, a JWK or a JWKS, for `family`.
fn keys(material: &str, family: AlgorithmFamily) -> Result<Vec<DecodingKey>, String> {
    let trimmed = material.trim();
    if trimmed.starts_with("-----BEGIN") {
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(trimmed.as_bytes()),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(trimmed.as_bytes()),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(trimmed.as_bytes()),
            AlgorithmFamily::Hmac => {
                return Err("HMAC algorithms take a secret, not a certificate".into());
            }
        };
        return key
            .map(|k| vec![k])
            .map_err(|e| format!("failed to parse a PEM key: {e}"));
    }
    let doc: Json =
        serde_json::from_str(trimmed).map_err(|_| "failed to parse a JWK key (set)".to_owned())?;
    let list = match doc.get("keys").and_then(Json::as_array) {
        Some(keys) => keys.clone(),
        None => vec![doc],
    };
    list.iter()
        .map(|k| {
            let jwk: Jwk =
                serde_json::from_value(k.clone()).map_err(|e| format!("bad JWK: {e}"))?;
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad JWK: {e}"))
        })
        .filter(|k| k.as_ref().map_or(true, |k| k.family() == family))
        .collect()
}

fn verifies(jws: &Jws<'_>, keys: &[DecodingKey], alg: Algorithm) -> bool {
    keys.iter().any(|key| {
        matches!(
            jsonwebtoken::crypto::verify(jws.signature, jws.signed.as_bytes(), key, alg),
            Ok(true)
        )
    })
}

/// `io.jwt.verify_<alg>(jwt, certificate_or_secret)`.
pub fn verify(jwt: &str, material: &str, alg: Algorithm) -> Result<bool, String> {
    let jws = split(jwt)?;
    let keys = match alg.family() {
        AlgorithmFamily::Hmac => {
            vec![DecodingKey::from_secret(material.as_bytes()).map_err(|e| e.to_string())?]
        }
        family => keys(material, family)?,
    };
    Ok(verifies(&jws, &keys, alg))
}

/// `io.jwt.decode_verify(jwt, constraints)`: `(valid, header, payload)`; when not
/// valid, header and payload are empty objects. `now_ns` is used unless the
/// constraints carry `time` (nanoseconds).
pub fn decode_verify(
    jwt: &str,
    constraints: &Map<String, Json>,
    now_ns: f64,
) -> Result<(bool, Json, Json), String> {
    let unverified = || (false, Json::Object(Map::new()), Json::Object(Map::new()));
    let mut cert = None;
    let mut secret = None;
    let mut alg_c = None;
    let mut iss_c = None;
    let mut aud_c = None;
    let mut time = now_ns;
    for (name, value) in constraints {
        let text = || {
            value
                .as_str()
                .ok_or_else(|| format!("{name} constraint: must be a string"))
        };
        match name.as_str() {
            "cert" => cert = Some(text()?),
            "secret" => secret = Some(text()?),
            "alg" => alg_c = Some(text()?),
            "iss" => iss_c = Some(text()?),
            "aud" => aud_c = Some(text()?),
            "time" => {
                time = value
                    .as_f64()
                    .filter(|t| *t >= 0.0)
                    .ok_or("token time constraint: must be a non-negative number")?;
            }
            other => return Err(format!("unknown token validation constraint: {other}")),
        }
    }
    match (cert, secret) {
        (Some(_), Some(_)) => return Err("duplicate key constraints".into()),
        (None, None) => return Err("no key constraint".into()),
        _ => {}
    }

    let mut token = jwt.to_owned();
    let (header, payload) = loop {
        let jws = split(&token)?;
        let Some(alg_name) = jws.header.get("alg").and_then(Json::as_str) else {
            return Ok(unverified());
        };
        if alg_c.is_some_and(|a| a != alg_name) {
            return Ok(unverified());
        }
        let alg = Algorithm::from_str(alg_name)
            .map_err(|_| format!("unknown JWS algorithm: {alg_name}"))?;
        let keys = match (cert, secret) {
            (Some(cert), _) => keys(cert, alg.family())?,
            (_, Some(secret)) if alg.family() == AlgorithmFamily::Hmac => {
                vec![DecodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?]
            }
            _ => return Err("incorrect public key type: a secret verifies only HS* tokens".into()),
        };
        if !verifies(&jws, &keys, alg) {
            return Ok(unverified());
        }
        if is_nested(&jws.header) {
            token = String::from_utf8(jws.payload).map_err(|_| "nested JWT is not text")?;
            continue;
        }
        break (jws.header, object(&jws.payload)?);
    };

    if let (Some(expected), Some(iss)) = (iss_c, payload.get("iss")) {
        if iss.as_str() != Some(expected) {
            return Ok(unverified());
        }
    }
    match (payload.get("aud"), aud_c) {
        (Some(Json::String(aud)), Some(expected)) if aud == expected => {}
        (Some(Json::Array(auds)), Some(expected))
            if auds.iter().any(|a| a.as_str() == Some(expected)) => {}
        (None, None) => {}
        _ => return Ok(unverified()),
    }
    let seconds = time / 1e9;
    if let Some(exp) = payload.get("exp").and_then(Json::as_f64) {
        if seconds >= exp {
            return Ok(unverified());
        }
    }
    if let Some(nbf) = payload.get("nbf").and_then(Json::as_f64) {
        if seconds < nbf {
            return Ok(unverified());
        }
    }
    Ok((true, Json::Object(header), Json::Object(payload)))
}

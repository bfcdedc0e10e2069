//! Real keys and certificates for tests, generated per run.

use jsonwebtoken::Algorithm;
use leash::token::mint::SigningKey;

/// A fresh signing key for `alg` (RS256/PS256: RSA 2048, ES256: P-256, EdDSA: Ed25519).
pub fn signing_key(alg: Algorithm) -> SigningKey {
    let rcgen_alg = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => &rcgen::PKCS_RSA_SHA256,
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        other => panic!("no generated key for {other:?}"),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("generate key");
    SigningKey::from_pem(alg, pair.serialize_pem().as_bytes()).expect("signing key")
}

/// A JWKS document holding the public halves of `keys` (key, kid).
pub fn jwks(keys: &[(&SigningKey, &str)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(k, kid)| k.public_jwk(Some(kid)).unwrap())
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// A self-signed client certificate with `spiffe` as its URI SAN; returns (cert PEM, key PEM).
pub fn client_certificate(spiffe: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// PEM as Envoy forwards it in `attributes.source.certificate`: URL-encoded.
pub fn url_encode(pem: &str) -> String {
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The claims of a `json!({...})` literal.
pub fn claims(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("claims must be a JSON object, not {other}"),
    }
}

/// A token signed by `key` (as `kid`) with `claims`, after `edit` changes them: each
/// test states only what differs from a valid token.
pub fn sign_edited(
    key: &SigningKey,
    kid: &str,
    mut claims: serde_json::Map<String, serde_json::Value>,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> String {
    edit(&mut claims);
    key.sign(&claims, Some(kid), None).unwrap()
}

/// `Authorization: Bearer` with `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

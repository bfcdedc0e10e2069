//! Verification keys: a JWKS parsed once into decoding keys, each with the algorithms
//! its type allows. Symmetric keys never come from a JWKS: an HMAC secret must be
//! configured on its own, so a public key can never be used as an HMAC secret.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The verifier refuses smaller RSA keys; loading one would only fail every token.
const MIN_RSA_BITS: usize = 2048;

/// The size of an RSA modulus given as base64url (RFC 7518, section 6.3.1.1).
fn modulus_bits(n: &str) -> Result<usize, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|_| "an RSA modulus that is not base64url".to_owned())?;
    let mut significant = bytes.iter().skip_while(|b| **b == 0);
    Ok(significant.next().map_or(0, |first| {
        (8 - first.leading_zeros() as usize) + 8 * significant.count()
    }))
}

/// One public key of an issuer.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// What this key may verify: its type's algorithms, narrowed by the JWK's `alg`.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer at one point in time.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. Keys leash cannot use (encryption keys, symmetric keys,
    /// unknown types) are skipped and named in `skipped`; a set without one usable key
    /// is an error.
    pub fn from_jwks(text: &str) -> Result<(Self, Vec<String>), String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or("a JWKS document needs a `keys` array")?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in list.iter().enumerate() {
            let label = raw
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("key #{i}"), |kid| format!("key {kid:?}"));
            match Self::key(raw) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{label}: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS has no usable verification key ({})",
                if skipped.is_empty() {
                    "it is empty".to_owned()
                } else {
                    skipped.join("; ")
                }
            ));
        }
        Ok((Self { keys }, skipped))
    }

    fn key(raw: &serde_json::Value) -> Result<Key, String> {
        let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err("an encryption key (use: enc)".into());
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let bits = modulus_bits(&rsa.n)?;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "an RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed, so every token it signed would be refused"
                    ));
                }
                vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ]
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err("an unsupported curve".into()),
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric key: configure HMAC secrets with hmac_secret_file".into());
            }
            _ => return Err("an unsupported key type".into()),
        };
        let algorithms = match jwk.common.key_algorithm {
            None => by_type,
            Some(alg) => {
                let alg = Algorithm::try_from(alg).map_err(|e| e.to_string())?;
                if !by_type.contains(&alg) {
                    return Err(format!("its alg {alg:?} does not fit its key type"));
                }
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        Ok(Key {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
        })
    }

    /// Keys that may verify a token with `kid` (when it names one) signed with `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            k.algorithms.contains(&alg) && (kid.is_none() || k.kid.as_deref() == kid)
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn rsa_jwk(modulus_bytes: usize) -> String {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xC5; modulus_bytes]);
        format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{n}","e":"AQAB"}}]}}"#)
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_refused_with_their_size() {
        let err = KeySet::from_jwks(&rsa_jwk(128)).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
        assert!(err.contains("at least 2048"), "{err}");
        let (set, skipped) = KeySet::from_jwks(&rsa_jwk(256)).unwrap();
        assert_eq!((set.len(), skipped.len()), (1, 0));
    }

    #[test]
    fn a_modulus_counts_its_significant_bits() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        assert_eq!(modulus_bits(&b64(&[0, 0x01, 0xff])).unwrap(), 9);
        assert_eq!(modulus_bits(&b64(&[0x80; 256])).unwrap(), 2048);
        assert_eq!(modulus_bits(&b64(&[])).unwrap(), 0);
    }
}

//! Signing, for `leash token mint` (trying leash out) and for tests: tokens, DPoP
//! proofs, and the JWK of a signing key. leash itself never signs on the Check path.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MintError(String);

impl From<jsonwebtoken::errors::Error> for MintError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        Self(err.to_string())
    }
}

/// A private key (PEM, PKCS#8) or, for HS*, a secret, ready to sign with `alg`.
pub struct SigningKey {
    pub alg: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, MintError> {
        let key = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem)?,
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem)?,
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem)?,
            AlgorithmFamily::Hmac => EncodingKey::from_secret(pem)?,
        };
        Ok(Self { alg, key })
    }

    /// The key's DER bytes as jsonwebtoken read them from the PEM.
    pub(crate) fn der(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// The public half as a JWK (with `kid` and `alg`), for a JWKS or a DPoP header.
    pub fn public_jwk(&self, kid: Option<&str>) -> Result<Json, MintError> {
        if self.alg.family() == AlgorithmFamily::Hmac {
            return Err(MintError("an HMAC secret has no public key".into()));
        }
        let mut jwk = self.jwk()?;
        jwk.common.key_id = kid.map(str::to_owned);
        serde_json::to_value(jwk).map_err(|e| MintError(e.to_string()))
    }

    fn jwk(&self) -> Result<Jwk, MintError> {
        if self.alg != Algorithm::EdDSA {
            return Ok(Jwk::from_encoding_key(&self.key, self.alg)?);
        }
        // jsonwebtoken reads only PKCS#8 v1 Ed25519 keys here; common tools write v2.
        use aws_lc_rs::signature::KeyPair as _;
        let pair =
            aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(self.key.as_bytes())
                .map_err(|_| MintError("not an Ed25519 private key".into()))?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x}))
            .map_err(|e| MintError(e.to_string()))
    }

    /// RFC 7638 thumbprint of the public key: the `cnf.jkt` of DPoP-bound tokens.
    pub fn thumbprint(&self) -> Result<String, MintError> {
        Ok(self
            .jwk()?
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)?)
    }

    /// Signs `claims` with header `kid` and `typ` (default `JWT`).
    pub fn sign(
        &self,
        claims: &Map<String, Json>,
        kid: Option<&str>,
        typ: Option<&str>,
    ) -> Result<String, MintError> {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        header.typ = Some(typ.unwrap_or("JWT").to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }

    /// A DPoP proof for `method uri` carrying `access_token`'s hash.
    pub fn dpop_proof(
        &self,
        method: &str,
        uri: &str,
        access_token: &str,
        iat: i64,
        jti: &str,
    ) -> Result<String, MintError> {
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        let jwk: Jwk =
            serde_json::from_value(self.public_jwk(None)?).map_err(|e| MintError(e.to_string()))?;
        header.jwk = Some(jwk);
        let claims = json!({
            "jti": jti,
            "htm": method,
            "htu": uri,
            "iat": iat,
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes())),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// `cnf.x5t#S256` for a PEM certificate: base64url(SHA-256(DER)).
pub fn certificate_thumbprint(pem: &str) -> Result<String, MintError> {
    super::bind::pem_thumbprint(pem).ok_or_else(|| MintError("not a PEM certificate".into()))
}

/// An `act` claim from a chain of actors, current actor first.
pub fn act_chain(actors: &[String]) -> Option<Json> {
    actors.iter().rev().fold(None, |inner, actor| {
        let mut act = Map::new();
        act.insert("sub".into(), Json::String(actor.clone()));
        if let Some(inner) = inner {
            act.insert("act".into(), inner);
        }
        Some(Json::Object(act))
    })
}

//! DPoP (RFC 9449): a proof, signed by a key the client holds, sent with each request.
//! It must be fresh, match the request's method and URI and the access token, come
//! from the key the token is bound to (`cnf.jkt`), and never be used twice.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use quick_cache::sync::{Cache, GuardResult};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::error::TokenError;
use super::secs;
use super::verify::decode_json;

#[derive(Debug, Clone)]
pub struct DpopSettings {
    /// How old a proof's `iat` may be.
    pub max_age: Duration,
    /// Clock skew allowed for a proof issued slightly in the future.
    pub leeway: Duration,
    /// Asymmetric algorithms a proof may be signed with.
    pub algorithms: Vec<Algorithm>,
    /// Proofs remembered to catch replays; older ones have expired anyway.
    pub replay_entries: usize,
}

/// What the proof must match.
pub struct ProofContext<'a> {
    pub method: &'a str,
    /// `scheme://authority/path` of the request, without query or fragment.
    pub uri: &'a str,
    pub access_token: &'a str,
    pub now: i64,
}

#[derive(Debug)]
pub struct DpopVerifier {
    settings: DpopSettings,
    /// SHA-256 of (key thumbprint, jti) -> unix time the entry stops mattering.
    seen: Cache<[u8; 32], i64>,
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::DpopInvalid(why.into())
}

impl DpopVerifier {
    pub fn new(settings: DpopSettings) -> Self {
        let seen = Cache::new(settings.replay_entries.max(1));
        Self { settings, seen }
    }

    /// Verifies `proof`; returns the JWK thumbprint of the key that signed it.
    pub fn verify(&self, proof: &str, ctx: &ProofContext<'_>) -> Result<String, TokenError> {
        let mut parts = proof.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let header = decode_json(h, "proof header").map_err(|e| invalid(e.to_string()))?;
        let claims = decode_json(p, "proof claims").map_err(|e| invalid(e.to_string()))?;
        if header.get("typ").and_then(Json::as_str) != Some("dpop+jwt") {
            return Err(invalid("typ must be dpop+jwt"));
        }
        let alg_name = header.get("alg").and_then(Json::as_str).unwrap_or("none");
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| self.settings.algorithms.contains(a))
            .ok_or_else(|| invalid(format!("algorithm {alg_name:?} is not allowed for proofs")))?;
        let jwk_json = header
            .get("jwk")
            .ok_or_else(|| invalid("the header has no jwk"))?;
        if jwk_json.get("d").is_some() {
            return Err(invalid("the jwk holds a private key"));
        }
        let jwk: Jwk = serde_json::from_value(jwk_json.clone())
            .map_err(|_| invalid("the jwk is not a public key"))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| invalid("the jwk is not a usable public key"))?;
        if key.family() != alg.family() {
            return Err(invalid("the jwk does not fit the algorithm"));
        }
        let signed = proof
            .get(..h.len() + 1 + p.len())
            .ok_or_else(|| invalid("not a compact JWS"))?;
        if !matches!(
            jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &key, alg),
            Ok(true)
        ) {
            return Err(invalid("the signature does not verify"));
        }

        let text = |name: &str| claims.get(name).and_then(Json::as_str);
        let jti = text("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| invalid("jti is missing"))?;
        if text("htm") != Some(ctx.method) {
            return Err(invalid(format!(
                "htm does not match the method {}",
                ctx.method
            )));
        }
        let htu = text("htu").ok_or_else(|| invalid("htu is missing"))?;
        if normalize_uri(htu) != normalize_uri(ctx.uri) {
            return Err(invalid(format!(
                "htu {htu:?} does not match the request {:?}",
                ctx.uri
            )));
        }
        let iat = claims
            .get("iat")
            .and_then(Json::as_i64)
            .ok_or_else(|| invalid("iat is missing"))?;
        let max_age = secs(self.settings.max_age);
        let leeway = secs(self.settings.leeway);
        if iat > ctx.now.saturating_add(leeway)
            || iat < ctx.now.saturating_sub(max_age).saturating_sub(leeway)
        {
            return Err(invalid(format!(
                "iat {iat} is not within {max_age}s of now"
            )));
        }
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(ctx.access_token.as_bytes()));
        if text("ath") != Some(ath.as_str()) {
            return Err(invalid("ath does not match the access token"));
        }
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| invalid("cannot compute the jwk thumbprint"))?;

        let mut id = Sha256::new();
        id.update(thumbprint.as_bytes());
        id.update([0]);
        id.update(jti.as_bytes());
        let id: [u8; 32] = id.finalize().into();
        let until = iat.saturating_add(max_age).saturating_add(leeway);
        match self.seen.get_value_or_guard(&id, Some(Duration::ZERO)) {
            GuardResult::Value(expires) if expires >= ctx.now => {
                return Err(TokenError::DpopReplay);
            }
            GuardResult::Value(_) => self.seen.insert(id, until),
            GuardResult::Guard(guard) => {
                let _ = guard.insert(until);
            }
            // Another Check is recording this very proof right now: a replay.
            GuardResult::Timeout => return Err(TokenError::DpopReplay),
        }
        Ok(thumbprint)
    }
}

/// Scheme and host compare case-insensitively; query and fragment are not part of `htu`.
fn normalize_uri(uri: &str) -> String {
    let uri = uri.split(['?', '#']).next().unwrap_or(uri);
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase(),
                path
            )
        }
        None => uri.to_owned(),
    }
}

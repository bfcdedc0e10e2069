//! DPoP (RFC 9449): a proof, signed by a key the client holds, sent with each request.
//! It must be fresh, match the request's method and URI and the access token, come
//! from the key the token is bound to (`cnf.jkt`), and never be used twice.
//!
//! Only a proof from the bound key is remembered, and a full replay cache refuses new
//! proofs instead of forgetting old ones: proofs signed by any other key cannot push a
//! victim's proof out of the cache to replay it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::error::TokenError;
use super::secs;
use super::verify::decode_json;
use crate::quote::Quoted;
use crate::request::{PathAllowances, Target};

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
    /// The request's canonical target; `htu` is compared in the same form.
    pub target: &'a Target<'a>,
    pub allow: PathAllowances,
    pub access_token: &'a str,
    /// The thumbprint the token is bound to (`cnf.jkt`).
    pub jkt: &'a str,
    pub now: i64,
}

#[derive(Debug)]
pub struct DpopVerifier {
    settings: DpopSettings,
    seen: ReplayCache,
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::DpopInvalid(why.into())
}

impl DpopVerifier {
    pub fn new(settings: DpopSettings) -> Self {
        let seen = ReplayCache::new(settings.replay_entries);
        Self { settings, seen }
    }

    /// Verifies `proof` for the request and the token in `ctx`.
    pub fn verify(&self, proof: &str, ctx: &ProofContext<'_>) -> Result<(), TokenError> {
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
                Quoted(ctx.method)
            )));
        }
        let htu = text("htu").ok_or_else(|| invalid("htu is missing"))?;
        let matches = Target::of_url(htu, ctx.allow).is_ok_and(|t| {
            t.scheme == ctx.target.scheme
                && t.host == ctx.target.host
                && t.port == ctx.target.port
                && t.path == ctx.target.path
        });
        if !matches {
            return Err(invalid(format!(
                "htu {} does not match the request",
                Quoted(htu)
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
        // The key first: only the token holder's proofs may take a place in the cache.
        if thumbprint != ctx.jkt {
            return Err(invalid(
                "the proof key is not the key the token is bound to (cnf.jkt)",
            ));
        }

        let mut id = Sha256::new();
        id.update(thumbprint.as_bytes());
        id.update([0]);
        id.update(jti.as_bytes());
        let until = iat.saturating_add(max_age).saturating_add(leeway);
        self.seen.record(id.finalize().into(), until, ctx.now)
    }
}

/// Shards of the replay cache; a proof's id picks its shard.
const SHARDS: usize = 16;

/// Proof ids (SHA-256 of key thumbprint and `jti`) until the unix time after which
/// the proof is too old to be accepted anyway.
#[derive(Debug)]
struct ReplayCache {
    shards: [Mutex<HashMap<[u8; 32], i64>>; SHARDS],
    per_shard: usize,
}

impl ReplayCache {
    fn new(entries: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Remembers `id` until `until`; a replay, or a cache full of live proofs, fails.
    fn record(&self, id: [u8; 32], until: i64, now: i64) -> Result<(), TokenError> {
        let shard = self
            .shards
            .get(usize::from(id[0]) % SHARDS)
            .ok_or(TokenError::DpopReplayCacheFull)?;
        let mut seen = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get(&id).is_some_and(|expires| *expires >= now) {
            return Err(TokenError::DpopReplay);
        }
        if seen.len() >= self.per_shard {
            seen.retain(|_, expires| *expires >= now);
            if seen.len() >= self.per_shard {
                return Err(TokenError::DpopReplayCacheFull);
            }
        }
        seen.insert(id, until);
        Ok(())
    }
}

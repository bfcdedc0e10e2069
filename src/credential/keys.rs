//! The keys minted credentials are signed with: each parsed once into a ready key pair
//! (jsonwebtoken parses its key again on every signature), named by its RFC 7638
//! thumbprint, and published in a JWKS while a token it signed can still be valid.
//!
//! A key directory holds PEM private keys (PKCS#8; PKCS#1 for RSA). The key whose file
//! name sorts last signs, so every sidecar sharing the directory (a Kubernetes Secret)
//! picks the same one: name them by date. A key that stops signing stays published
//! until the last token it signed has expired, and at least a credential lifetime plus
//! `credentials.rotation_grace` after it stopped, for what other sidecars, which see
//! the new key a little later, signed with it meanwhile; then it leaves the JWKS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::Value as Json;

use crate::token::mint::SigningKey;

/// The algorithms leash signs credentials with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgorithm {
    #[default]
    EdDSA,
    Es256,
    Rs256,
}

impl SigningAlgorithm {
    pub const ALL: [Self; 3] = [Self::EdDSA, Self::Es256, Self::Rs256];

    /// The JWS `alg` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    const fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

/// Why a key cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// One private key, ready to sign.
pub struct Signer {
    kid: Arc<str>,
    alg: SigningAlgorithm,
    pair: Pair,
    /// `base64url(header) + "."`, built once.
    header: String,
    /// The public half, with `kid`, `alg` and `use`.
    jwk: Json,
    /// The latest `exp` this key signed, so that it stays published until then.
    last_exp: AtomicI64,
    /// The file it came from, or "generated".
    source: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A key from PEM text: PKCS#8 (EdDSA, ES256 on P-256, RS256), or PKCS#1 for RSA.
    pub fn from_pem(alg: SigningAlgorithm, pem: &[u8], source: &str) -> Result<Self, KeyError> {
        let fail = |what: &str| KeyError(format!("{source}: {what}"));
        let key = SigningKey::from_pem(alg.jwt(), pem).map_err(|e| {
            fail(&format!(
                "not a private key for {} in PEM ({e})",
                alg.name()
            ))
        })?;
        let der = key.der();
        let pair = match alg {
            SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(Pair::Ed)
                .map_err(|_| fail("not an Ed25519 private key (PKCS#8)"))?,
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map(Pair::Ec)
                    .map_err(|_| fail("not a P-256 private key (PKCS#8)"))?
            }
            SigningAlgorithm::Rs256 => RsaKeyPair::from_der(der)
                .or_else(|_| RsaKeyPair::from_pkcs8(der))
                .map(Pair::Rsa)
                .map_err(|_| fail("not an RSA private key of 2048 bits or more"))?,
        };
        if let Pair::Rsa(rsa) = &pair
            && rsa.public_modulus_len() < 256
        {
            return Err(fail("an RSA key needs 2048 bits or more"));
        }
        let kid = key
            .thumbprint()
            .map_err(|e| fail(&format!("no thumbprint: {e}")))?;
        let mut jwk = key
            .public_jwk(Some(&kid))
            .map_err(|e| fail(&format!("no public key: {e}")))?;
        if let Json::Object(map) = &mut jwk {
            map.insert("use".into(), Json::from("sig"));
            map.insert("alg".into(), Json::from(alg.name()));
        }
        let header = serde_json::json!({"alg": alg.name(), "kid": kid, "typ": "at+jwt"});
        let mut encoded = URL_SAFE_NO_PAD.encode(header.to_string());
        encoded.push('.');
        Ok(Self {
            kid: Arc::from(kid),
            alg,
            pair,
            header: encoded,
            jwk,
            last_exp: AtomicI64::new(i64::MIN),
            source: source.to_owned(),
        })
    }

    /// A fresh key, for trying leash out: it dies with the process, so tools must
    /// fetch the JWKS again after every restart.
    pub fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let failed = || KeyError(format!("cannot generate a key for {}", alg.name()));
        let rng = SystemRandom::new();
        let der: Vec<u8> = match alg {
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| failed())?
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::Rs256 => {
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .and_then(|pair| pair.as_der())
                    .map_err(|_| failed())?
                    .as_ref()
                    .to_vec()
            }
        };
        Self::from_pem(alg, pem("PRIVATE KEY", &der).as_bytes(), "generated")
    }

    pub fn kid(&self) -> &Arc<str> {
        &self.kid
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Json {
        &self.jwk
    }

    /// A compact JWS of `payload` (JSON), remembering `exp` for the key's retirement.
    pub fn sign(&self, payload: &[u8], exp: i64) -> Result<String, KeyError> {
        let mut out = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 360);
        out.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let signature = match &self.pair {
            Pair::Ed(pair) => pair.sign(out.as_bytes()).as_ref().to_vec(),
            Pair::Ec(pair) => pair
                .sign(&SystemRandom::new(), out.as_bytes())
                .map_err(|_| KeyError("ES256 signing failed".into()))?
                .as_ref()
                .to_vec(),
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    out.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| KeyError("RS256 signing failed".into()))?;
                sig
            }
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut out);
        self.last_exp.fetch_max(exp, Ordering::Relaxed);
        Ok(out)
    }
}

/// `der` as PEM text under `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A key that no longer signs, published while its tokens may still be valid.
#[derive(Debug, Clone)]
struct Retired {
    signer: Arc<Signer>,
    /// When it stopped signing, plus the lifetime a credential is given and the grace
    /// other sidecars have to see the new key.
    until_at_least: i64,
}

impl Retired {
    fn published_until(&self) -> i64 {
        self.until_at_least
            .max(self.signer.last_exp.load(Ordering::Relaxed))
    }
}

/// The signing key and the keys still published beside it. Replaced whole on a
/// rotation; a Check reads the one serving when it signs.
#[derive(Debug, Clone)]
pub struct KeyRing {
    signer: Arc<Signer>,
    retired: Vec<Retired>,
}

impl KeyRing {
    pub fn new(signer: Signer) -> Self {
        Self {
            signer: Arc::new(signer),
            retired: Vec::new(),
        }
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// A ring where `next` signs and the current signer is retired at `now`, published
    /// for `linger` seconds at least. Keys whose tokens have all expired are dropped.
    pub fn rotate(&self, next: Arc<Signer>, now: i64, linger: i64) -> Self {
        let mut retired: Vec<Retired> = self
            .retired
            .iter()
            .filter(|r| r.published_until() > now && r.signer.kid != next.kid)
            .cloned()
            .collect();
        if self.signer.kid != next.kid {
            retired.push(Retired {
                signer: self.signer.clone(),
                until_at_least: now.saturating_add(linger),
            });
        }
        Self {
            signer: next,
            retired,
        }
    }

    /// A ring at start: the last key signs, the ones before it are retired now (a
    /// token one of them signed before a restart, here or in another sidecar, stays
    /// verifiable for `linger` seconds).
    pub fn of_dir(mut keys: Vec<Signer>, now: i64, linger: i64) -> Option<Self> {
        let signer = keys.pop()?;
        let mut ring = Self::new(signer);
        ring.retired = keys
            .into_iter()
            .filter(|k| k.kid != ring.signer.kid)
            .map(|k| Retired {
                signer: Arc::new(k),
                until_at_least: now.saturating_add(linger),
            })
            .collect();
        Some(ring)
    }

    /// The keys a verifier needs at `now`: the signer's and every retired key that a
    /// token still valid may name.
    pub fn jwks(&self, now: i64) -> Json {
        let keys: Vec<Json> = std::iter::once(self.signer.jwk.clone())
            .chain(
                self.retired
                    .iter()
                    .filter(|r| r.published_until() >= now)
                    .map(|r| r.signer.jwk.clone()),
            )
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The private keys in `dir`, in file-name order: every regular file (symlinks
/// followed) not starting with `.`, which skips Kubernetes' `..data` folders.
pub fn load_dir(dir: &Path, alg: SigningAlgorithm) -> Result<Vec<Signer>, KeyError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            KeyError(format!(
                "cannot read the key directory {}: {e}",
                dir.display()
            ))
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
                && path.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(KeyError(format!(
            "the key directory {} holds no key: put a PEM private key there (e.g. `openssl genpkey -algorithm ed25519 -out {}/$(date +%F).pem`)",
            dir.display(),
            dir.display()
        )));
    }
    files
        .iter()
        .map(|path| {
            let pem = std::fs::read(path)
                .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
            Signer::from_pem(alg, &pem, &path.display().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_algorithm_signs_what_jsonwebtoken_verifies_with_the_published_key() {
        for alg in SigningAlgorithm::ALL {
            let signer = Signer::generate(alg).unwrap();
            let token = signer
                .sign(br#"{"sub":"s","exp":4000000000}"#, 4_000_000_000)
                .unwrap();
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(signer.jwk().clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = jsonwebtoken::Validation::new(alg.jwt());
            validation.validate_aud = false;
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
            assert_eq!(data.claims["sub"], "s");
            assert_eq!(data.header.kid.as_deref(), Some(signer.kid().as_ref()));
        }
    }

    #[test]
    fn a_retired_key_is_published_until_its_last_token_expires() {
        let old = Signer::generate(SigningAlgorithm::EdDSA).unwrap();
        old.sign(b"{}", 1_000 + 300).unwrap();
        let ring = KeyRing::new(old);
        let old_kid = ring.signer().kid().clone();
        let next = Arc::new(Signer::generate(SigningAlgorithm::EdDSA).unwrap());
        let ring = ring.rotate(next, 1_000, 60);
        let kids = |now| {
            ring.jwks(now)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(kids(1_300).contains(&old_kid.to_string()));
        assert!(!kids(1_301).contains(&old_kid.to_string()));
        assert_eq!(kids(1_301).len(), 1);
    }
}

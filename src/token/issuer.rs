//! A trusted issuer: its settings, its current keys, and (for a JWKS file or URL)
//! the task that keeps those keys fresh. The last good key set is kept whenever a
//! refresh fails, so an identity provider outage does not stop verification.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Digest as _;
use tokio::sync::{Notify, watch};

use super::keys::KeySet;

/// A JWKS larger than this is not a key set; reading it would only cost memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where an issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No public keys: the issuer signs with an HMAC secret only.
    None,
    /// A JWKS document written in the configuration.
    Inline(String),
    /// A JWKS file, read again on every refresh.
    File(PathBuf),
    /// A JWKS URL (HTTPS), fetched on a schedule and when a token names an unknown key.
    Url {
        url: String,
        /// Extra CA certificates (PEM) to trust for this URL, e.g. an internal CA.
        ca_file: Option<PathBuf>,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An OAuth access token, sent as `Authorization: Bearer` or `DPoP`.
    Access,
    /// An OAuth Transaction Token (`typ: txntoken+jwt`), sent in the `Txn-Token` header.
    Transaction,
}

/// How an issuer's tokens name the human on whose behalf an agent acts. Whatever the
/// rule, a token whose grant type claim names a machine grant (client credentials)
/// has no human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HumanRule {
    /// The subject, when `act` names actors and the subject is not one of them: a
    /// human delegated through token exchange (RFC 8693). The default.
    Delegation,
    /// As `Delegation`, and also the subject when `azp` or `client_id` names another
    /// party (an agent that got the token through a user's login).
    Client,
    /// The value of this claim (a non-empty string), e.g. `email`.
    Claim(String),
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` claim this issuer's tokens carry.
    pub issuer: String,
    pub human: HumanRule,
    /// The claim naming the grant a token came from (Auth0's `gty`), if any.
    pub grant_type_claim: Option<String>,
    /// Grant types (values of `grant_type_claim`) whose tokens never have a human.
    pub machine_grant_types: Vec<String>,
    pub kind: TokenKind,
    /// At least one must appear in the token's `aud`.
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer (`none` can never be listed).
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// The HMAC secret for `HS*` algorithms; only these algorithms use it.
    pub hmac_secret: Option<Vec<u8>>,
    /// Tokens living longer than this (`exp - iat`) are refused as standing authority.
    pub max_lifetime: Duration,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The claim naming the task the token was issued for.
    pub task_claim: String,
    /// The claim naming the agent workload (e.g. a SPIFFE ID), compared with the
    /// peer's certificate identity.
    pub workload_claim: Option<String>,
    /// Refuse tokens not bound to the calling workload (certificate, DPoP key or workload claim).
    pub require_workload_binding: bool,
    /// How often a JWKS file or URL is read again.
    pub refresh: Duration,
    /// The least time between two fetches caused by unknown key ids.
    pub min_refetch: Duration,
}

#[derive(Debug)]
pub struct Issuer {
    pub config: IssuerConfig,
    keys: ArcSwap<KeySet>,
    hmac: Option<DecodingKey>,
    refresh: Option<Refresh>,
}

#[derive(Debug)]
struct Refresh {
    wake: Notify,
    /// Bumped after every fetch attempt, good or bad.
    attempts: watch::Sender<u64>,
    last_on_demand: Mutex<Option<Instant>>,
    /// SHA-256 of the last document served.
    last_document: Mutex<Option<[u8; 32]>>,
}

impl Issuer {
    /// Builds the issuer; an inline JWKS is parsed here, a file or URL by [`refresh_loop`](Self::refresh_loop).
    pub fn new(config: IssuerConfig) -> Result<Self, String> {
        let keys = match &config.keys {
            KeySource::Inline(jwks) => KeySet::from_jwks(jwks)?.0,
            _ => KeySet::default(),
        };
        let hmac = config
            .hmac_secret
            .as_deref()
            .map(DecodingKey::from_secret)
            .transpose()
            .map_err(|e| format!("unusable HMAC secret: {e}"))?;
        let refresh =
            matches!(config.keys, KeySource::File(_) | KeySource::Url { .. }).then(|| Refresh {
                wake: Notify::new(),
                attempts: watch::Sender::new(0),
                last_on_demand: Mutex::new(None),
                last_document: Mutex::new(None),
            });
        Ok(Self {
            config,
            keys: ArcSwap::from_pointee(keys),
            hmac,
            refresh,
        })
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    pub fn hmac(&self) -> Option<&DecodingKey> {
        self.hmac.as_ref()
    }

    /// Whether keys come from a source that can be read again (a file or a URL).
    pub fn refetch_possible(&self) -> bool {
        self.refresh.is_some()
    }

    /// Asks for a fetch because a token named a key the set lacks, for a request that
    /// arrived at `now` (the caller's clock). Returns a future that resolves when that
    /// fetch is done, or `None` when the last on-demand fetch was too recent (tokens
    /// with made-up key ids must not hammer the IdP).
    pub fn refetch(
        self: &Arc<Self>,
        now: Instant,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let refresh = self.refresh.as_ref()?;
        {
            let mut last = refresh
                .last_on_demand
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.saturating_duration_since(at) < self.config.min_refetch) {
                return None;
            }
            *last = Some(now);
        }
        let mut attempts = refresh.attempts.subscribe();
        let seen = *attempts.borrow_and_update();
        refresh.wake.notify_one();
        Some(async move {
            let _ = attempts.wait_for(|n| *n > seen).await;
        })
    }

    /// Reads the key source now, then again every `refresh` or when woken by
    /// [`refetch`](Self::refetch). Runs until the process ends.
    pub async fn refresh_loop(self: Arc<Self>, client: reqwest::Client) {
        let Some(refresh) = &self.refresh else { return };
        loop {
            if let Err(err) = self.load(&client).await {
                let kept = self.keys.load().len();
                tracing::warn!(
                    issuer = %self.config.issuer,
                    "cannot refresh keys: {err}; keeping the {kept} keys already loaded"
                );
            }
            refresh.attempts.send_modify(|n| *n += 1);
            tokio::select! {
                () = tokio::time::sleep(self.config.refresh) => {}
                () = refresh.wake.notified() => {}
            }
        }
    }

    /// Reads the key source once and, if it yields usable keys, serves them.
    pub async fn load(&self, client: &reqwest::Client) -> Result<usize, String> {
        let (text, set, skipped) = self.fetch(client).await?;
        let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        if let Some(refresh) = &self.refresh {
            let mut last = refresh
                .last_document
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The same document again: keep the set, and with it the verified-token
            // cache, which is tied to the set it was verified with.
            if *last == Some(digest) {
                return Ok(set.len());
            }
            *last = Some(digest);
        }
        let before = self.keys.load().kids();
        let after = set.kids();
        if before != after {
            tracing::info!(issuer = %self.config.issuer, keys = ?after, "issuer keys loaded");
        }
        for why in skipped {
            tracing::warn!(issuer = %self.config.issuer, "JWKS key skipped: {why}");
        }
        let count = set.len();
        self.keys.store(Arc::new(set));
        Ok(count)
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
    ) -> Result<(String, KeySet, Vec<String>), String> {
        let text = match &self.config.keys {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            KeySource::Url { url, timeout, .. } => {
                let response = client
                    .get(url)
                    .timeout(*timeout)
                    .send()
                    .await
                    .map_err(|e| format!("GET {}: {}", loggable(url), e.without_url()))?;
                if !response.status().is_success() {
                    return Err(format!("GET {}: HTTP {}", loggable(url), response.status()));
                }
                read_bounded(response)
                    .await
                    .map_err(|e| format!("GET {}: {e}", loggable(url)))?
            }
            KeySource::None | KeySource::Inline(_) => return Err("nothing to fetch".into()),
        };
        let (set, skipped) = KeySet::from_jwks(&text)?;
        Ok((text, set, skipped))
    }

    /// An HTTP client trusting the system roots plus the issuer's `ca_file`.
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        // A redirect to another origin would let whoever controls the first answer
        // pick the keys: only same-origin redirects are followed.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if same_origin {
                attempt.follow()
            } else {
                attempt.error("a redirect to another origin")
            }
        });
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(redirects);
        if let KeySource::Url {
            ca_file: Some(path),
            ..
        } = &self.config.keys
        {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))
    }
}

/// A URL as logs may show it: no userinfo, query or fragment, which may hold secrets.
pub fn loggable(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

/// The response body as text, refused once it grows past [`MAX_JWKS_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the response exceeds {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the response is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Issuer;

    /// A JWKS with one RSA key whose modulus ends in `last`.
    fn jwks(last: u8) -> String {
        use base64::Engine as _;
        let mut n = vec![0xC5; 256];
        n[255] = last;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n);
        format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{n}","e":"AQAB"}}]}}"#)
    }

    /// The verified-token cache is tied to the key set it verified with: a refresh that
    /// brings the same document must keep the set, or every refresh empties the cache.
    #[tokio::test]
    async fn a_refresh_that_brings_the_same_document_keeps_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks(1)).unwrap();
        let yaml = format!(
            "tokens:\n  issuers:\n    - {{ issuer: https://idp, audiences: [tools], algorithms: [RS256], jwks_file: {} }}\n",
            file.display()
        );
        let config = crate::config::Config::from_yaml("t.yaml", &yaml, &[]).unwrap();
        let issuer = Issuer::new(config.tokens.settings.issuers[0].clone()).unwrap();
        let client = issuer.http_client().unwrap();
        issuer.load(&client).await.unwrap();
        let first = Arc::clone(&issuer.keys());
        issuer.load(&client).await.unwrap();
        assert!(Arc::ptr_eq(&first, &issuer.keys()), "the same set serves");
        std::fs::write(&file, jwks(2)).unwrap();
        issuer.load(&client).await.unwrap();
        assert!(
            !Arc::ptr_eq(&first, &issuer.keys()),
            "a new document is a new set"
        );
    }

    /// Tokens naming made-up keys ask for a fetch each; at most one per `min_refetch`
    /// goes out, measured on the requests' own arrival times (no sleeping here).
    #[test]
    fn on_demand_fetches_are_spaced_by_min_refetch_on_the_callers_clock() {
        let yaml = "tokens:\n  issuers:\n    - { issuer: https://idp, audiences: [tools], algorithms: [RS256], jwks_file: /nonexistent/jwks.json, min_refetch: 10s }\n";
        let config = crate::config::Config::from_yaml("t.yaml", yaml, &[]).unwrap();
        let issuer = Arc::new(Issuer::new(config.tokens.settings.issuers[0].clone()).unwrap());
        let start = std::time::Instant::now();
        let at = |secs: u64| start + std::time::Duration::from_secs(secs);
        assert!(issuer.refetch(at(0)).is_some(), "the first asks");
        assert!(issuer.refetch(at(9)).is_none(), "within min_refetch");
        assert!(issuer.refetch(at(10)).is_some(), "once it has passed");
        assert!(issuer.refetch(at(15)).is_none());
        // A caller whose arrival predates the last fetch is not let through either.
        assert!(issuer.refetch(at(3)).is_none());
    }

    #[test]
    fn urls_are_logged_without_userinfo_query_or_fragment() {
        assert_eq!(
            super::loggable("https://user:s3cret@idp.example:8443/jwks.json?key=s3cret#x"),
            "https://idp.example:8443/jwks.json"
        );
        assert!(!super::loggable("not a url s3cret").contains("s3cret"));
    }
}

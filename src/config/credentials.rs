//! `credentials`: the tokens leash mints for each allowed call that should not carry
//! the agent's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::tokens::{Invalid, bad, duration, header};
use crate::credential::{CredentialSettings, MAX_TTL, MintRule, ResourcePattern, SigningAlgorithm};
use crate::token::TokenHeaders;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCredentials {
    pub issuer: String,
    pub algorithm: String,
    pub ttl: String,
    pub keys_dir: String,
    pub watch_interval: String,
    pub rotation_grace: String,
    pub remove_headers: Vec<String>,
    pub upstream_certificate: String,
    pub mint: Vec<RawMintRule>,
}

impl Default for RawCredentials {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            algorithm: "EdDSA".into(),
            ttl: "60s".into(),
            keys_dir: String::new(),
            watch_interval: "10s".into(),
            rotation_grace: "5m".into(),
            remove_headers: Vec::new(),
            upstream_certificate: String::new(),
            mint: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMintRule {
    pub resources: Vec<String>,
    pub audience: String,
    pub ttl: String,
}

impl RawCredentials {
    /// `admin` names the default issuer: the admin port serves its discovery document.
    pub fn validate(
        &self,
        tokens: &TokenHeaders,
        admin: Option<std::net::SocketAddr>,
    ) -> Result<CredentialSettings, Invalid> {
        let algorithm = SigningAlgorithm::parse(&self.algorithm).ok_or_else(|| {
            bad(
                "credentials.algorithm",
                &self.algorithm,
                "use EdDSA, ES256 or RS256",
            )
        })?;
        let ttl = lifetime("credentials.ttl", &self.ttl)?;
        let issuer = match (self.issuer.trim(), admin) {
            ("", Some(addr)) if addr.port() != 0 => format!("http://{addr}"),
            ("", _) => "leash".to_owned(),
            (issuer, _) => issuer.to_owned(),
        };
        let mut remove = vec![tokens.dpop.clone(), tokens.txn_token.clone()];
        for (i, name) in self.remove_headers.iter().enumerate() {
            let key = format!("credentials.remove_headers[{i}]");
            let name = header(&key, name)?;
            if name == tokens.authorization || crate::effects::is_leash_header(&name) {
                return Err(bad(
                    key,
                    name,
                    "leash sets this header on the upstream request; removing it would strip what leash sends",
                ));
            }
            if !remove.contains(&name) {
                remove.push(name);
            }
        }
        let certificate_thumbprint = match self.upstream_certificate.trim() {
            "" => None,
            path => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    bad(
                        "credentials.upstream_certificate",
                        path,
                        format!(
                            "cannot read it ({e}): name the PEM certificate Envoy presents to tools"
                        ),
                    )
                })?;
                Some(
                    crate::token::mint::certificate_thumbprint(&pem).map_err(|_| {
                        bad(
                            "credentials.upstream_certificate",
                            path,
                            "not a PEM certificate",
                        )
                    })?,
                )
            }
        };
        let rules = self
            .mint
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let key = |field: &str| format!("credentials.mint[{i}].{field}");
                if rule.resources.is_empty() {
                    return Err(bad(
                        key("resources"),
                        "[]",
                        "name the resources whose calls get a credential: *, tool:*, tool:<name>, rule:<name>, host:<name>",
                    ));
                }
                let resources = rule
                    .resources
                    .iter()
                    .map(|r| ResourcePattern::parse(r).map_err(|hint| bad(key("resources"), r, hint)))
                    .collect::<Result<Vec<_>, _>>()?;
                let ttl = match rule.ttl.as_str() {
                    "" => None,
                    text => {
                        let t = lifetime(&key("ttl"), text)?;
                        if t > ttl {
                            return Err(bad(
                                key("ttl"),
                                text,
                                format!("at most credentials.ttl ({})", humantime::format_duration(ttl)),
                            ));
                        }
                        Some(t)
                    }
                };
                Ok(MintRule {
                    resources,
                    audience: (!rule.audience.trim().is_empty())
                        .then(|| rule.audience.trim().to_owned()),
                    ttl,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let watch_interval = duration("credentials.watch_interval", &self.watch_interval)?;
        if watch_interval.is_zero() {
            return Err(bad(
                "credentials.watch_interval",
                &self.watch_interval,
                "must be more than 0s",
            ));
        }
        let rotation_grace = duration("credentials.rotation_grace", &self.rotation_grace)?;
        Ok(CredentialSettings {
            rotation_grace,
            issuer,
            algorithm,
            ttl,
            rules,
            header: Arc::from(tokens.authorization.as_str()),
            remove: Arc::from(remove),
            certificate_thumbprint,
            keys_dir: (!self.keys_dir.trim().is_empty())
                .then(|| PathBuf::from(self.keys_dir.trim())),
            watch_interval,
        })
    }
}

/// A credential's lifetime: whole seconds, at least 1 s, at most [`MAX_TTL`].
fn lifetime(key: &str, text: &str) -> Result<Duration, Invalid> {
    let t = duration(key, text)?;
    if t < Duration::from_secs(1) || t > MAX_TTL || t.subsec_nanos() != 0 {
        return Err(bad(
            key,
            text,
            "whole seconds from 1s to 5m: a credential lives for one call",
        ));
    }
    Ok(t)
}

//! The policy author's commands: `leash check`, `leash test`, `leash policy validate`.
//! Each runs the same code a live Check runs; `main` only prints.

use std::str::FromStr as _;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::clock::unix_now;
use crate::config::{AuditLevel, Config};
use crate::credential::CredentialSettings;
use crate::decision::{Decision, Header};
use crate::edge;
use crate::pipeline::Verdict;
use crate::policy::{PolicyInfo, PolicyLoadError, ReloadOutcome, Value};
use crate::token::Authenticator;
use crate::token::mint::{MintError, SigningKey, act_chain, certificate_thumbprint};
use crate::view::RequestView;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("policy does not load")]
    Policy(#[from] PolicyLoadError),
    #[error("{0}")]
    Token(String),
}

impl From<MintError> for CliError {
    fn from(err: MintError) -> Self {
        Self::Token(err.to_string())
    }
}

/// What `leash check` reports.
#[derive(Debug)]
pub struct CheckReport {
    pub input: Value,
    /// The decision rule's raw value (`undefined` when it has none).
    pub result: Value,
    pub verdict: Verdict,
}

/// What `leash check --context` takes to be live when the request arrives, said of the
/// request's own names, as an operator, a detector or the agent's earlier calls would
/// have made it. The task and the agent's session on it are recorded, as after their
/// first Check.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssumedContext {
    /// The task's status: active (the default), completed or revoked.
    pub task: Option<String>,
    /// The agent's session on the task is paused, for this reason.
    pub paused: Option<String>,
    /// Which of the request's names are revoked: token, agent, human, workload, subject.
    pub revoked: Vec<String>,
    /// A live risk signal about the request's agent, human, workload or task, by score.
    pub risk: std::collections::BTreeMap<String, u32>,
    /// How long ago the task was first seen (a duration such as 10m; default: now), for
    /// the policy and for `new_tool` rules.
    pub task_age: Option<String>,
    /// The session's calls within the behaviour window, before this one.
    pub counters: AssumedCounters,
    /// The file it was read from, for errors.
    #[serde(skip)]
    pub file: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssumedCounters {
    pub read: u64,
    pub write: u64,
    pub destructive: u64,
    pub denials: u64,
    pub body_bytes: u64,
    /// Distinct tools called.
    pub tools: u64,
}

/// The most calls `--context` replays into the behaviour counters.
const MAX_ASSUMED_CALLS: u64 = 100_000;

impl AssumedContext {
    /// Reads `text` (YAML or JSON) from `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, CliError> {
        if text.trim().is_empty() {
            return Ok(Self {
                file: file.to_owned(),
                ..Self::default()
            });
        }
        let mut assumed: Self = yaml_serde::from_str(text).map_err(|e| CliError::Input {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        assumed.file = file.to_owned();
        Ok(assumed)
    }

    /// When the task was first seen, `task_age` before `now`.
    fn task_since(&self, now: i64) -> Result<i64, String> {
        let Some(age) = &self.task_age else {
            return Ok(now);
        };
        let age = humantime::parse_duration(age)
            .map_err(|e| format!("task_age: {age:?} is not a duration such as 10m ({e})"))?;
        Ok(now.saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)))
    }

    /// The live context this describes for `identity` at `now`, built with the control
    /// API's own operations, so what they refuse is refused here too.
    fn snapshot(
        &self,
        identity: &crate::token::Identity,
        workload: Option<&str>,
        now: i64,
    ) -> Result<crate::state::Snapshot, String> {
        use crate::state::Change;
        use crate::state::ops::{self, By, Report, Subject, Trust};
        let claims = &identity.token.claims;
        let issuer = identity.token.issuer.config.issuer.clone();
        let issuers = [issuer.clone()];
        let trust = Trust {
            issuers: &issuers,
            longest: 0,
            leeway: 0,
        };
        let by = By {
            caller: "leash check --context",
            now,
        };
        let task = identity.binding.task.clone();
        let agent = claims.agent.clone();
        let since = self.task_since(now)?;
        let mut snapshot = crate::state::Snapshot::default();
        fn apply(snapshot: &mut crate::state::Snapshot, changes: Vec<Change>) {
            for change in &changes {
                snapshot.apply(change);
            }
        }
        // Recorded as a Check's sighting records them.
        if let Some(task) = &task {
            let seen = crate::state::Sighting {
                task: task.clone(),
                human: claims.human.clone(),
                agent: agent.clone(),
                at: since,
            };
            let changes = crate::state::sighted(&snapshot, &[seen]);
            apply(&mut snapshot, changes);
        }
        let need = |name: Option<&str>, what: &str| {
            name.map(str::to_owned)
                .ok_or_else(|| format!("the request names no {what} to assume this of"))
        };
        // The request's own name for a kind of subject.
        let name_of = |kind: &str| match kind {
            "agent" => need(agent.as_deref(), "agent"),
            "human" => need(claims.human.as_deref(), "human"),
            "workload" => need(workload, "workload"),
            "task" => need(task.as_deref(), "task"),
            _ => need(claims.subject.as_deref(), "sub"),
        };
        let changes = match self.task.as_deref() {
            None | Some("active") => Vec::new(),
            Some(status @ ("completed" | "revoked")) => ops::complete_task(
                &snapshot,
                &need(task.as_deref(), "task")?,
                "assumed",
                status == "revoked",
                by,
            )
            .map_err(|e| e.to_string())?,
            Some(other) => {
                return Err(format!(
                    "task: {other:?} is not active, completed or revoked"
                ));
            }
        };
        apply(&mut snapshot, changes);
        if let Some(why) = &self.paused {
            let changes = ops::pause_session(
                &snapshot,
                &need(agent.as_deref(), "agent")?,
                &need(task.as_deref(), "task")?,
                why,
                0,
                by,
            )
            .map_err(|e| e.to_string())?;
            apply(&mut snapshot, changes);
        }
        for kind in &self.revoked {
            let changes = match kind.as_str() {
                "token" => ops::revoke_token(
                    &snapshot,
                    &issuer,
                    &need(claims.jti.as_deref(), "jti")?,
                    claims.exp.unwrap_or(now),
                    "assumed",
                    trust,
                    by,
                ),
                kind @ ("agent" | "human" | "workload" | "subject") => {
                    let id = name_of(kind)?;
                    ops::revoke_subject(
                        &snapshot,
                        &Subject {
                            kind,
                            id: &id,
                            issuer: if kind == "subject" { &issuer } else { "" },
                            // Revoked after the token was issued would not hold: at it.
                            after: claims.iat.unwrap_or(now).max(1),
                        },
                        "assumed",
                        trust,
                        by,
                    )
                }
                other => {
                    return Err(format!(
                        "revoked: {other:?} is not token, agent, human, workload or subject"
                    ));
                }
            }
            .map_err(|e| e.to_string())?;
            apply(&mut snapshot, changes);
        }
        for (kind, score) in &self.risk {
            let id = match kind.as_str() {
                "agent" | "human" | "workload" | "task" => name_of(kind)?,
                other => {
                    return Err(format!(
                        "risk: {other:?} is not agent, human, workload or task"
                    ));
                }
            };
            let changes = ops::report_risk(
                &Report {
                    subject_kind: kind,
                    subject_id: &id,
                    kind: "assumed",
                    score: *score,
                    source: "leash check --context",
                    ttl_seconds: 3600,
                },
                by,
            )
            .map_err(|e| e.to_string())?;
            apply(&mut snapshot, changes);
        }
        Ok(snapshot)
    }

    /// Behaviour counters holding the calls this describes, replayed as Checks of the
    /// agent on its task just before `now`: a rule they trip holds the session as it
    /// would live.
    fn behaviour(
        &self,
        config: &Config,
        identity: &crate::token::Identity,
        now: i64,
    ) -> Result<crate::state::behaviour::Behaviour, String> {
        use crate::state::behaviour::{Behaviour, Observation};
        let behaviour = Behaviour::new(config.behaviour.clone(), crate::state::MAX_RECORDED);
        let c = &self.counters;
        let since = self.task_since(now)?;
        if c.tools > crate::state::behaviour::MAX_TOOLS as u64 {
            return Err(format!(
                "counters.tools: a session remembers at most {} tools",
                crate::state::behaviour::MAX_TOOLS
            ));
        }
        let calls = [c.read, c.write, c.destructive, c.denials, c.tools]
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n));
        if calls > MAX_ASSUMED_CALLS {
            return Err(format!(
                "counters: {calls} calls in all; at most {MAX_ASSUMED_CALLS} are replayed"
            ));
        }
        let (Some(agent), Some(task)) = (
            identity.token.claims.agent.as_deref(),
            identity.binding.task.as_deref(),
        ) else {
            return if calls > 0 || c.body_bytes > 0 {
                Err("counters: the request names no agent and task, so it has no session".into())
            } else {
                Ok(behaviour)
            };
        };
        let call = |class: Option<usize>, denied: bool, tool: Option<&str>, body_bytes: u64| {
            behaviour.observe(&Observation {
                agent,
                task,
                class,
                tool,
                denied,
                body_bytes,
                at: now,
                task_since: Some(since),
            });
        };
        for (class, n) in [c.read, c.write, c.destructive].into_iter().enumerate() {
            (0..n).for_each(|_| call(Some(class), false, None, 0));
        }
        (0..c.denials).for_each(|_| call(None, true, None, 0));
        for i in 0..c.tools {
            call(None, false, Some(&format!("tool-{i}")), 0);
        }
        if c.body_bytes > 0 {
            call(None, false, None, c.body_bytes);
        }
        Ok(behaviour)
    }
}

/// Decides one request read from `file` (an input document, or a CheckRequest as
/// JSON) with the configured policy and every key source `serve` would load; with
/// `assumed`, as if that live context held.
pub async fn check(
    config: &Config,
    file: &str,
    text: &str,
    assumed: Option<&AssumedContext>,
) -> Result<CheckReport, CliError> {
    let bad = |message: String| CliError::Input {
        file: file.to_owned(),
        message,
    };
    let doc: Json = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let store = crate::app::policy_store(config);
    if let ReloadOutcome::Rejected(err) = store.reload() {
        return Err(err.into());
    }
    let pipeline = crate::app::pipeline(config, store.clone()).map_err(|e| bad(e.to_string()))?;
    pipeline
        .authenticator()
        .load_key_sources()
        .await
        .map_err(CliError::Token)?;

    // An input document carries what leash derives (`parsed_path`, `version`); a
    // CheckRequest carries only `attributes`.
    let is_document = ["parsed_path", "parsed_query", "version"]
        .iter()
        .any(|k| doc.get(k).is_some());
    let (input, verdict) = if is_document {
        if assumed.is_some() {
            return Err(bad(
                "--context needs a CheckRequest: an input document holds its own input.leash.context".into(),
            ));
        }
        let input = Value::from(doc);
        (input.clone(), pipeline.decide(input))
    } else {
        let request = edge::json::check_request(&doc).map_err(bad)?;
        let view = RequestView::try_from(request).map_err(|e| bad(e.to_string()))?;
        let explain = |pipeline: crate::pipeline::Pipeline| {
            let metrics = Arc::new(crate::metrics::Metrics::new());
            let (audit, _) =
                crate::audit::AuditSink::new(AuditLevel::Off, metrics.decision_log_dropped());
            crate::app::decider(config, Arc::new(pipeline), metrics, audit).explain(&view)
        };
        let (mut verdict, mut input) = explain(pipeline);
        if let Some(assumed) = assumed {
            // The context is about the names the verified token carries: read them
            // first, then decide again with that context live.
            let Some(identity) = verdict.facts.identity.clone() else {
                return Err(bad(format!(
                    "--context is about the request's task and agent, and it carries no verified token (the decision without context: {})",
                    verdict.decision.reason().map_or("allow", |r| r.code())
                )));
            };
            let now = unix_now();
            let workload = crate::pipeline::workload_of(&identity.token, &view);
            let context = |e: String| CliError::Input {
                file: assumed.file.clone(),
                message: e,
            };
            let snapshot = assumed
                .snapshot(&identity, workload, now)
                .map_err(context)?;
            let behaviour = assumed.behaviour(config, &identity, now).map_err(context)?;
            let live = crate::app::pipeline(config, store.clone())
                .map_err(|e| bad(e.to_string()))?
                .reading(Arc::new(crate::state::State::new(snapshot)))
                .with_behaviour(Arc::new(behaviour));
            live.authenticator()
                .load_key_sources()
                .await
                .map_err(CliError::Token)?;
            (verdict, input) = explain(live);
        }
        (input.unwrap_or(Value::Undefined), verdict)
    };
    // The policy's raw result, for authors; none when a hard denial came before policy.
    let result = match (&input, store.current().as_ref()) {
        (Value::Undefined, _) | (_, None) => Value::Undefined,
        (input, Some(set)) => set.evaluate(input.clone()).unwrap_or(Value::Undefined),
    };
    Ok(CheckReport {
        input,
        result,
        verdict,
    })
}

impl CheckReport {
    pub fn to_json(&self, with_input: bool) -> Json {
        let mut out = verdict_json(&self.verdict);
        if let Json::Object(map) = &mut out {
            map.insert("policy_result".into(), value_json(&self.result));
            if with_input {
                map.insert("input".into(), value_json(&self.input));
            }
        }
        out
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Undefined => Json::String("<undefined>".into()),
        v => serde_json::to_value(v).unwrap_or(Json::Null),
    }
}

fn headers_json(headers: &[Header]) -> Json {
    Json::Array(
        headers
            .iter()
            .map(|h| json!({ "name": h.name, "value": h.value }))
            .collect(),
    )
}

/// The decision as Envoy will apply it.
pub fn verdict_json(verdict: &Verdict) -> Json {
    let metadata = Json::Object(verdict.decision.metadata().clone());
    match &verdict.decision {
        Decision::Allow(permit) => {
            let m = permit.mutations();
            json!({
                "decision": "allow",
                "decision_id": verdict.decision_id,
                "revision": verdict.revision.as_deref(),
                // A minted credential is live: it is shown by its id, never its value.
                "upstream_headers": Json::Array(
                    permit
                        .upstream_headers()
                        .map(|(name, value)| match permit.credential() {
                            Some(c) if value == c.value => json!({
                                "name": name,
                                "value": format!("Bearer (credential minted for this call, jti {})", c.jti),
                            }),
                            _ => json!({ "name": name, "value": value }),
                        })
                        .collect()
                ),
                "response_headers_to_add": headers_json(&m.response_headers_to_add),
                "request_headers_to_remove": m.request_headers_to_remove,
                "query_parameters_to_set": m.query_parameters_to_set,
                "query_parameters_to_remove": m.query_parameters_to_remove,
                "dynamic_metadata": metadata,
            })
        }
        Decision::Deny(denial) => {
            let r = denial.response();
            json!({
                "decision": "deny",
                "decision_id": verdict.decision_id,
                "revision": verdict.revision.as_deref(),
                "reason": denial.reason().code(),
                "detail": denial.detail(),
                "http_status": r.status.code(),
                "headers": headers_json(&r.headers),
                "body": r.body,
                "dynamic_metadata": metadata,
            })
        }
    }
}

/// Compiles and warms the configured policy without serving it.
pub fn validate(config: &Config) -> Result<PolicyInfo, PolicyLoadError> {
    match crate::app::policy_store(config).reload() {
        ReloadOutcome::Applied(info) | ReloadOutcome::Unchanged(info) => Ok((*info).clone()),
        ReloadOutcome::Rejected(err) => Err(err),
    }
}

/// Reads a signing key: a private key (PEM) or, for HS*, a secret file.
pub fn signing_key(path: &std::path::Path, alg: &str) -> Result<SigningKey, CliError> {
    let alg = jsonwebtoken::Algorithm::from_str(alg).map_err(|_| {
        CliError::Token(format!(
            "--alg {alg:?} is not a JWS algorithm: use RS256, PS256, ES256, EdDSA or HS256"
        ))
    })?;
    let material = std::fs::read(path)
        .map_err(|e| CliError::Token(format!("cannot read {}: {e}", path.display())))?;
    SigningKey::from_pem(alg, material.trim_ascii()).map_err(|e| {
        CliError::Token(format!(
            "{}: not a {alg:?} private key: {e}",
            path.display()
        ))
    })
}

/// What `leash token mint` signs.
#[derive(Debug)]
pub struct MintRequest {
    pub key: SigningKey,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub iss: String,
    pub aud: Vec<String>,
    pub sub: String,
    /// A duration, e.g. `5m`.
    pub ttl: String,
    pub task: Option<String>,
    /// Actors, current first.
    pub act: Vec<String>,
    pub scope: Option<String>,
    /// A PEM certificate the token is bound to (`cnf.x5t#S256`).
    pub cnf_cert: Option<std::path::PathBuf>,
    /// A DPoP key the token is bound to (`cnf.jkt`).
    pub cnf_dpop_key: Option<SigningKey>,
    /// `name=value` claims; a value that is not JSON is a string.
    pub claims: Vec<String>,
}

pub fn mint(req: &MintRequest) -> Result<String, CliError> {
    let ttl = humantime::parse_duration(&req.ttl).map_err(|_| {
        CliError::Token(format!("--ttl {:?} is not a duration such as 5m", req.ttl))
    })?;
    let now = unix_now();
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), Json::from(req.iss.clone()));
    claims.insert(
        "aud".into(),
        match req.aud.as_slice() {
            [one] => Json::from(one.clone()),
            many => Json::from(many.to_vec()),
        },
    );
    claims.insert("sub".into(), Json::from(req.sub.clone()));
    claims.insert("iat".into(), Json::from(now));
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    claims.insert("exp".into(), Json::from(now.saturating_add(ttl)));
    claims.insert("jti".into(), Json::from(uuid::Uuid::new_v4().to_string()));
    if let Some(task) = &req.task {
        claims.insert("task_id".into(), Json::from(task.clone()));
    }
    if let Some(act) = act_chain(&req.act) {
        claims.insert("act".into(), act);
    }
    if let Some(scope) = &req.scope {
        claims.insert("scope".into(), Json::from(scope.clone()));
    }
    let mut cnf = serde_json::Map::new();
    if let Some(cert) = &req.cnf_cert {
        let pem = std::fs::read_to_string(cert)
            .map_err(|e| CliError::Token(format!("cannot read {}: {e}", cert.display())))?;
        cnf.insert("x5t#S256".into(), Json::from(certificate_thumbprint(&pem)?));
    }
    if let Some(dpop) = &req.cnf_dpop_key {
        cnf.insert("jkt".into(), Json::from(dpop.thumbprint()?));
    }
    if !cnf.is_empty() {
        claims.insert("cnf".into(), Json::Object(cnf));
    }
    for kv in &req.claims {
        let (name, value) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Token(format!("--claim {kv:?}: use name=value")))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Json::from(value));
        claims.insert(name.to_owned(), value);
    }
    Ok(req
        .key
        .sign(&claims, req.kid.as_deref(), req.typ.as_deref())?)
}

/// What `leash token inspect` found.
#[derive(Debug)]
pub struct InspectReport {
    pub json: Json,
    pub accepted: bool,
}

/// The JWKS of `credentials.keys_dir`: every key in it, for publishing where tools
/// cannot reach a sidecar. A key stays in it as long as its file does: remove an old
/// key's file once the credentials it signed have expired (`credentials.ttl` after the
/// newer key took over).
pub fn credential_jwks(settings: &CredentialSettings) -> Result<Json, CliError> {
    let dir = settings.keys_dir.as_deref().ok_or_else(|| {
        CliError::Token(
            "credentials.keys_dir is not set: a running leash publishes its generated key at its admin port's /.well-known/jwks.json".into(),
        )
    })?;
    let keys = crate::credential::keys::load_dir(dir, settings.algorithm)
        .map_err(|e| CliError::Token(e.to_string()))?;
    let jwks: Vec<Json> = keys.iter().map(|k| k.jwk().clone()).collect();
    Ok(json!({ "keys": jwks }))
}

/// What a credential leash minted allows, and whether it still verifies with the
/// keys in `credentials.keys_dir`. `None` for a token from another issuer.
fn inspect_minted(
    settings: &CredentialSettings,
    header: &Json,
    claims: &Json,
    raw: &str,
    now: i64,
) -> Option<InspectReport> {
    if claims.get("iss").and_then(Json::as_str) != Some(settings.issuer.as_str()) {
        return None;
    }
    let text = |name: &str| claims.get(name).and_then(Json::as_str);
    let time = |name: &str| claims.get(name).and_then(Json::as_i64);
    let mut actors = Vec::new();
    let mut act = claims.get("act");
    while let Some(Json::Object(a)) = act {
        actors.extend(a.get("sub").and_then(Json::as_str).map(str::to_owned));
        act = a.get("act");
    }
    let expires_in = time("exp").map(|e| e - now);
    let kid = header.get("kid").and_then(Json::as_str);
    let key = settings.keys_dir.as_deref().and_then(|dir| {
        crate::credential::keys::load_dir(dir, settings.algorithm)
            .ok()?
            .into_iter()
            .find(|k| Some(k.kid().as_ref()) == kid)
    });
    let signature = match &key {
        Some(key) => match verify_with(key.jwk(), raw) {
            Ok(()) => "verified with credentials.keys_dir".to_owned(),
            Err(e) => format!("does not verify with the key it names: {e}"),
        },
        None => "not checked: its key is not in credentials.keys_dir (a generated key: fetch the sidecar's /.well-known/jwks.json)".to_owned(),
    };
    let valid = expires_in.is_some_and(|s| s > 0) && !signature.starts_with("does not");
    Some(InspectReport {
        json: json!({
            "header": header,
            "claims": claims,
            "minted_by": "leash",
            "verdict": if valid { "valid" } else if signature.starts_with("does not") { "invalid" } else { "expired" },
            "signature": signature,
            "explained": {
                "on_behalf_of": text("sub"),
                "actors": actors,
                "for_audience": claims.get("aud"),
                "may": text("scope").map(|s| s.split(' ').collect::<Vec<_>>()),
                "task": text("task_id"),
                "credential_id": text("jti"),
                "lifetime_seconds": time("exp").zip(time("iat")).map(|(e, i)| e - i),
                "expires_in_seconds": expires_in,
            },
        }),
        accepted: valid,
    })
}

fn verify_with(jwk: &Json, raw: &str) -> Result<(), String> {
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(raw).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Json>(raw, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decodes `raw` and runs the configured issuers' checks on it: everything but the
/// binding, which needs a request. Fetches JWKS files and URLs once. A credential
/// leash minted is explained instead.
pub async fn inspect(config: &Config, raw: &str) -> Result<InspectReport, CliError> {
    let (header, claims, _) =
        crate::policy::opa::decode(raw).map_err(|e| CliError::Token(format!("not a JWT: {e}")))?;
    if let Some(report) = inspect_minted(&config.credentials, &header, &claims, raw, unix_now()) {
        return Ok(report);
    }
    let auth = Authenticator::new(config.tokens.settings.clone()).map_err(CliError::Token)?;
    auth.load_key_sources().await.map_err(CliError::Token)?;
    let now = unix_now();
    let time = |name: &str| claims.get(name).and_then(Json::as_i64);
    let mut report = json!({
        "header": header,
        "claims": claims,
        "lifetime_seconds": time("exp").zip(time("iat")).map(|(e, i)| e - i),
        "expires_in_seconds": time("exp").map(|e| e - now),
    });
    let mut extra = serde_json::Map::new();
    let accepted = match auth.verify_token(raw, now) {
        Ok(token) => {
            let c = &token.claims;
            let mut needs = Vec::new();
            if c.x5t_s256.is_some() {
                needs.push("the client certificate in cnf.x5t#S256".to_owned());
            }
            if c.jkt.is_some() {
                needs.push("Authorization: DPoP and a proof signed by the cnf.jkt key".to_owned());
            }
            if let Some(w) = &c.workload {
                needs.push(format!("a peer whose certificate identity is {w}"));
            }
            if let Some(task) = &c.task {
                needs.push(format!("{}: {task}", config.tokens.settings.headers.task));
            }
            extra.insert("verdict".into(), json!("accepted"));
            extra.insert(
                "delegation".into(),
                json!({"human": c.human, "agent": c.agent, "chain": c.chain}),
            );
            extra.insert("scopes".into(), json!(c.scopes));
            extra.insert("request_must_carry".into(), json!(needs));
            true
        }
        Err(err) => {
            extra.insert("verdict".into(), json!("refused"));
            extra.insert("reason".into(), json!(err.reason().code()));
            extra.insert("detail".into(), json!(err.to_string()));
            false
        }
    };
    if let Json::Object(map) = &mut report {
        map.extend(extra);
    }
    Ok(InspectReport {
        json: report,
        accepted,
    })
}

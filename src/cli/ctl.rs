//! `leash ctl`: the control API from the shell, with the admin token `serve` wrote (or
//! any token file), readable output or `--json`.

use std::process::ExitCode;

use anyhow::Context as _;
use leash::edge::control::proto::control_client::ControlClient;
use leash::edge::control::proto::{
    ApprovalInfo, ApproveRequest, ChangeResponse, ClearRiskSignalRequest, CompleteTaskRequest,
    DenyRequest, GetTaskRequest, ListApprovalsRequest, ListApprovalsResponse, ListSessionsRequest,
    ListSessionsResponse, ListTasksRequest, ListTasksResponse, PauseSessionRequest, PolicyStatus,
    ReloadPolicyRequest, ReloadPolicyResponse, ReportRiskSignalRequest, ResumeSessionRequest,
    RevokeSubjectRequest, RevokeTokenRequest, SessionInfo, StatusRequest, StatusResponse, TaskInfo,
    WatchEventsRequest,
};
use serde_json::{Value as Json, json};

use super::args::{CtlArgs, CtlCommand};

/// Every entry of a List verb: page after page, until the server says there is no
/// next one.
macro_rules! all_pages {
    ($client:ident, $verb:ident, $request:expr, $field:ident, $refused:ident) => {{
        let mut request = $request;
        let mut all = Vec::new();
        loop {
            let page = $client
                .$verb(request.clone())
                .await
                .map_err($refused)?
                .into_inner();
            all.extend(page.$field);
            if page.next_page_token.is_empty() {
                break all;
            }
            request.page_token = page.next_page_token;
        }
    }};
}

pub(super) async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    // A client certificate names the caller by itself; a token is read only when one
    // is named, or when there is no certificate.
    let token_file = match (&args.token_file, &args.cert_file) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(leash::access::default_admin_token_file().context(
            "no token file: pass --token-file (neither XDG_RUNTIME_DIR nor HOME is set)",
        )?),
    };
    let bearer: Option<tonic::metadata::MetadataValue<_>> = match token_file {
        Some(token_file) => {
            let token = std::fs::read_to_string(&token_file).with_context(|| {
                format!(
                    "cannot read the control token from {}",
                    token_file.display()
                )
            })?;
            Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .with_context(|| format!("{} does not hold a token", token_file.display()))?,
            )
        }
        None => None,
    };
    let channel = connect(&args)
        .await
        .with_context(|| format!("cannot reach the control API at {}", args.addr))?;
    let mut client = ControlClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(bearer) = &bearer {
            req.metadata_mut().insert("authorization", bearer.clone());
        }
        Ok(req)
    });
    let refused = |status: tonic::Status| {
        anyhow::anyhow!(
            "the control API at {} answered {:?}: {}",
            args.addr,
            status.code(),
            status.message()
        )
    };
    let reply = match args.command {
        CtlCommand::Status => {
            let status = client
                .status(StatusRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print_status(&status);
            }
            return Ok(ExitCode::SUCCESS);
        }
        CtlCommand::Reload => {
            let reply = client
                .reload_policy(ReloadPolicyRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&reload_json(&reply))?);
            } else {
                print_reload(&reply);
            }
            return Ok(if reply.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        CtlCommand::Task { task } => {
            let t = client
                .get_task(GetTaskRequest { task })
                .await
                .map_err(refused)?
                .into_inner();
            return show(args.json, &t, || print_task(&t));
        }
        CtlCommand::Tasks { status } => {
            let tasks = all_pages!(
                client,
                list_tasks,
                ListTasksRequest {
                    status,
                    ..Default::default()
                },
                tasks,
                refused
            );
            let list = ListTasksResponse {
                tasks,
                next_page_token: String::new(),
            };
            return show(args.json, &list, || list.tasks.iter().for_each(print_task));
        }
        CtlCommand::Sessions { agent, task } => {
            let sessions = all_pages!(
                client,
                list_sessions,
                ListSessionsRequest {
                    agent,
                    task,
                    ..Default::default()
                },
                sessions,
                refused
            );
            let list = ListSessionsResponse {
                sessions,
                next_page_token: String::new(),
            };
            return show(args.json, &list, || {
                list.sessions.iter().for_each(print_session);
            });
        }
        CtlCommand::Watch {
            mut after,
            decisions,
        } => {
            // The control port closes connections after listen.max_connection_age:
            // pick up where the stream ended.
            loop {
                let mut events = client
                    .watch_events(WatchEventsRequest {
                        after_seq: after,
                        decisions,
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                while let Ok(Some(event)) = events.message().await {
                    after = after.max(event.seq);
                    if args.json {
                        println!("{}", serde_json::to_string(&event)?);
                    } else if event.missed > 0 {
                        println!("(missed {} events: this watcher fell behind)", event.missed);
                    } else if event.missed_decisions > 0 {
                        println!(
                            "(missed {} decisions: this watcher fell behind)",
                            event.missed_decisions
                        );
                    } else if let Some(d) = &event.decision {
                        println!(
                            "decision {} {} {} {:?} agent {:?} task {:?}{}",
                            d.decision_id,
                            if d.allowed { "allow" } else { "deny" },
                            d.action,
                            d.tool,
                            d.agent,
                            d.task,
                            if d.reason.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", d.reason)
                            }
                        );
                    } else {
                        println!(
                            "#{} {} {} {:?} by {:?} {}",
                            event.seq,
                            event.op,
                            event.table,
                            event.key,
                            event.by,
                            event.record_json.escape_debug()
                        );
                    }
                }
            }
        }
        CtlCommand::Approvals { status } => {
            let approvals = all_pages!(
                client,
                list_approvals,
                ListApprovalsRequest {
                    status,
                    ..Default::default()
                },
                approvals,
                refused
            );
            let list = ListApprovalsResponse {
                approvals,
                next_page_token: String::new(),
            };
            return show(args.json, &list, || {
                list.approvals.iter().for_each(print_approval);
            });
        }
        CtlCommand::Approve {
            id,
            uses,
            ttl,
            reason,
        } => {
            let until = std::time::SystemTime::now()
                .checked_add(ttl)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            client
                .approve(ApproveRequest {
                    id,
                    uses,
                    approved_until: until,
                    reason,
                })
                .await
        }
        CtlCommand::Deny { id, reason } => client.deny(DenyRequest { id, reason }).await,
        // The verbs that change the live context, each answered with a ChangeResponse.
        CtlCommand::CompleteTask {
            task,
            reason,
            revoke,
        } => {
            client
                .complete_task(CompleteTaskRequest {
                    task,
                    reason,
                    revoke,
                })
                .await
        }
        CtlCommand::RevokeToken {
            issuer,
            jti,
            expires_at,
            reason,
        } => {
            client
                .revoke_token(RevokeTokenRequest {
                    issuer,
                    jti,
                    expires_at,
                    reason,
                })
                .await
        }
        CtlCommand::RevokeSubject {
            kind,
            id,
            issuer,
            after,
            reason,
        } => {
            client
                .revoke_subject(RevokeSubjectRequest {
                    kind,
                    id,
                    issuer,
                    revoked_after: after,
                    reason,
                })
                .await
        }
        CtlCommand::Pause {
            agent,
            task,
            reason,
            ttl,
        } => {
            client
                .pause_session(PauseSessionRequest {
                    agent,
                    task,
                    reason,
                    ttl_seconds: ttl.map_or(0, |d| d.as_secs().max(1)),
                })
                .await
        }
        CtlCommand::Resume { agent, task } => {
            client
                .resume_session(ResumeSessionRequest { agent, task })
                .await
        }
        CtlCommand::ReportRisk {
            subject_kind,
            subject_id,
            kind,
            score,
            source,
            ttl,
        } => {
            client
                .report_risk_signal(ReportRiskSignalRequest {
                    subject_kind,
                    subject_id,
                    kind,
                    score,
                    source,
                    ttl_seconds: ttl.as_secs().max(1),
                })
                .await
        }
        CtlCommand::ClearRisk {
            subject_kind,
            subject_id,
            kind,
            source,
        } => {
            client
                .clear_risk_signal(ClearRiskSignalRequest {
                    subject_kind,
                    subject_id,
                    kind,
                    source,
                })
                .await
        }
    };
    let reply: ChangeResponse = reply.map_err(refused)?.into_inner();
    show(args.json, &reply, || {
        println!(
            "done: durable and in force from the next Check (seq {})",
            reply.seq
        );
    })
}

/// Prints `value` as JSON, or as `text` prints it.
fn show(
    json: bool,
    value: &impl serde::Serialize,
    text: impl FnOnce(),
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        text();
    }
    Ok(ExitCode::SUCCESS)
}

// Ids come from agents' tokens: quoted and escaped, so none can drive the terminal.

fn print_task(t: &TaskInfo) {
    print!(
        "{:?}  {}  human {:?}  agents {:?}  since {}",
        t.id,
        t.status,
        t.human,
        t.agents,
        when(t.first_seen)
    );
    if t.ended > 0 {
        print!(
            "  ended {} by {:?}: {:?}",
            when(t.ended),
            t.ended_by,
            t.end_reason
        );
    }
    println!();
}

fn print_approval(a: &ApprovalInfo) {
    print!(
        "{}  {}  agent {:?} on task {:?}: {:?}",
        a.id, a.status, a.agent, a.task, a.action
    );
    if !a.arguments_sha256.is_empty() {
        print!(" (arguments sha256 {})", a.arguments_sha256);
    }
    print!("  until {}  {:?}", when(a.expires_at), a.reason);
    if !a.decided_by.is_empty() {
        print!("  decided by {:?}: {:?}", a.decided_by, a.decided_reason);
    }
    println!();
}

fn print_session(s: &SessionInfo) {
    let task = if s.task.is_empty() {
        "(every task)".to_owned()
    } else {
        format!("{:?}", s.task)
    };
    print!("{:?}  on {task}  since {}", s.agent, when(s.first_seen));
    if s.paused {
        let until = if s.paused_until > 0 {
            when(s.paused_until)
        } else {
            "resumed".to_owned()
        };
        print!(
            "  PAUSED by {:?} until {}: {:?}",
            s.paused_by, until, s.pause_reason
        );
    }
    println!();
}

/// A moment the API gives in Unix seconds, as people read it (UTC). `--json` keeps
/// the seconds.
fn when(unix: i64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let readable = u64::try_from(unix).is_ok_and(|secs| {
        std::time::UNIX_EPOCH
            .checked_add(std::time::Duration::from_secs(secs))
            .is_some_and(|t| write!(out, "{}", humantime::format_rfc3339_seconds(t)).is_ok())
    });
    // Past year 9999, or before 1970: the seconds themselves.
    if readable { out } else { unix.to_string() }
}

fn policy_json(policy: Option<&PolicyStatus>) -> Json {
    policy.map_or(Json::Null, |p| {
        json!({
            "revision": p.revision,
            "source": p.source,
            "files": p.files,
            "decision_rule": p.decision_rule,
            "engine": p.engine,
            "engine_note": p.engine_note,
            "loaded_at_unix_seconds": p.loaded_at_unix_seconds,
        })
    })
}

fn status_json(status: &StatusResponse) -> Json {
    let decisions = status.decisions.clone().unwrap_or_default();
    json!({
        "version": status.version,
        "uptime_seconds": status.uptime_seconds,
        "policy": policy_json(status.policy.as_ref()),
        "decisions": {
            "allowed": decisions.allowed,
            "denied": decisions.denied,
            "denied_by_reason": decisions.denied_by_reason,
        },
    })
}

fn reload_json(reply: &ReloadPolicyResponse) -> Json {
    json!({
        "applied": reply.applied,
        "policy": policy_json(reply.policy.as_ref()),
        "problems": reply.problems.iter().map(|p| json!({
            "file": p.file, "line": p.line, "column": p.column, "message": p.message,
        })).collect::<Vec<_>>(),
    })
}

fn print_policy(policy: Option<&PolicyStatus>) {
    match policy {
        None => println!("policy:   none serving yet"),
        Some(p) => {
            println!("policy:   revision {} from {}", p.revision, p.source);
            println!("engine:   {}", p.engine);
            if !p.engine_note.is_empty() {
                println!("          {}", p.engine_note);
            }
        }
    }
}

fn print_status(status: &StatusResponse) {
    println!("leash {} up {}s", status.version, status.uptime_seconds);
    print_policy(status.policy.as_ref());
    let decisions = status.decisions.clone().unwrap_or_default();
    println!(
        "decided:  {} allowed, {} denied",
        decisions.allowed, decisions.denied
    );
    let mut reasons: Vec<_> = decisions.denied_by_reason.iter().collect();
    reasons.sort();
    for (code, n) in reasons {
        println!("          {n} {code}");
    }
}

fn print_reload(reply: &ReloadPolicyResponse) {
    if reply.applied {
        println!("applied");
    } else if reply.problems.is_empty() {
        println!("unchanged");
    } else {
        println!("rejected; the serving set stays:");
        for p in &reply.problems {
            println!("  {}:{}:{}: {}", p.file, p.line, p.column, p.message);
        }
    }
    print_policy(reply.policy.as_ref());
}

/// A channel to the control API: over its Unix socket, over TLS when a CA is given,
/// else over plain TCP.
async fn connect(args: &CtlArgs) -> anyhow::Result<tonic::transport::Channel> {
    // The URI is not used by the connectors: each connection goes where they say.
    let endpoint = tonic::transport::Endpoint::from_static("http://localhost");
    if let Some(path) = args.addr.strip_prefix("unix:") {
        anyhow::ensure!(
            args.ca_file.is_none() && args.cert_file.is_none(),
            "the control API's Unix socket has no TLS: drop --ca-file and --cert-file, or \
             call its TCP port with them"
        );
        let path = std::path::PathBuf::from(path);
        let unix = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(endpoint.connect_with_connector(unix).await?);
    }
    let Some(ca_file) = &args.ca_file else {
        return Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
                .connect()
                .await?,
        );
    };
    let (name, tls) = tls_client(args, ca_file)?;
    let addr = args.addr.clone();
    let over_tls = tower::service_fn(move |_: http::Uri| {
        let (addr, name, tls) = (addr.clone(), name.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector(over_tls).await?)
}

/// The server name to expect and a TLS client trusting `ca_file`, presenting the
/// client certificate given.
fn tls_client(
    args: &CtlArgs,
    ca_file: &std::path::Path,
) -> anyhow::Result<(
    rustls::pki_types::ServerName<'static>,
    tokio_rustls::TlsConnector,
)> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let pem_certs = |path: &std::path::Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("cannot read PEM certificates from {}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(ca_file)? {
        roots
            .add(ca)
            .with_context(|| format!("{}: not a CA certificate", ca_file.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                pem_certs(cert)?,
                PrivateKeyDer::from_pem_file(key).with_context(|| {
                    format!("cannot read a PEM private key from {}", key.display())
                })?,
            )
            .context("the client certificate and its key do not go together")?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = match &args.server_name {
        Some(name) => name.clone(),
        None => args
            .addr
            .rsplit_once(':')
            .map_or(args.addr.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let name = ServerName::try_from(host.clone())
        .with_context(|| format!("{host:?} is not a server name: pass --server-name"))?;
    Ok((
        name,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    ))
}

//! `leash ctl`: the control API from the shell, with the admin token `serve` wrote (or
//! any token file), readable output or `--json`.

use std::process::ExitCode;

use anyhow::Context as _;
use leash::edge::control::proto::control_client::ControlClient;
use leash::edge::control::proto::{
    PolicyStatus, ReloadPolicyRequest, ReloadPolicyResponse, StatusRequest, StatusResponse,
};
use serde_json::{Value as Json, json};

use super::args::{CtlArgs, CtlCommand};

pub(super) async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let token_file = match args.token_file {
        Some(path) => path,
        None => leash::access::default_admin_token_file().context(
            "no token file: pass --token-file (neither XDG_RUNTIME_DIR nor HOME is set)",
        )?,
    };
    let token = std::fs::read_to_string(&token_file).with_context(|| {
        format!(
            "cannot read the control token from {}",
            token_file.display()
        )
    })?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim())
        .parse()
        .with_context(|| format!("{} does not hold a token", token_file.display()))?;
    let endpoint = format!("http://{}", args.addr);
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the control API at {}", args.addr))?;
    let mut client = ControlClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
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
    match args.command {
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
            Ok(ExitCode::SUCCESS)
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
            Ok(if reply.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
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

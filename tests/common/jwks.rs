//! An identity provider's JWKS endpoint over HTTPS, whose keys a test can rotate and
//! which it can take down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

use super::pki::{Ca, server_config};

pub struct JwksServer {
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<Mutex<usize>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// When set, `/jwks.json` answers 302 to this location; other paths serve the keys.
    redirect: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(ca: &Ca, document: String) -> Self {
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&ca.server())));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(Mutex::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let redirect: Arc<Mutex<Option<String>>> = Arc::default();
        let (doc, count, is_down, moved) = (
            document.clone(),
            fetches.clone(),
            down.clone(),
            redirect.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tls, doc, count, is_down, moved) = (
                    tls.clone(),
                    doc.clone(),
                    count.clone(),
                    is_down.clone(),
                    moved.clone(),
                );
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        *count.lock().unwrap() += 1;
                        let body = doc.lock().unwrap().clone();
                        let location = moved
                            .lock()
                            .unwrap()
                            .clone()
                            .filter(|_| req.uri().path() == "/jwks.json");
                        // Connections kept alive from before the outage fail too.
                        let status = if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                            503
                        } else {
                            200
                        };
                        let response = match location {
                            Some(location) => hyper::Response::builder()
                                .status(302)
                                .header("location", location)
                                .body(http_body_util::Full::default()),
                            None => hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(body))),
                        };
                        async move { Ok::<_, std::convert::Infallible>(response.unwrap()) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            document,
            fetches,
            down,
            redirect,
            task,
        }
    }

    /// From now on `/jwks.json` answers with a redirect to `location`.
    pub fn redirect_to(&self, location: &str) {
        *self.redirect.lock().unwrap() = Some(location.to_owned());
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks.json", self.addr.port())
    }

    pub fn publish(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }

    /// Takes the endpoint down: connections are refused from now on.
    pub fn stop(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

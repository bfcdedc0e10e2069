//! Serving connections within [`PortLimits`]: every connection holds a slot, lives at
//! most `max_connection_age` before it is asked to go (HTTP/2 GOAWAY, HTTP/1
//! `Connection: close`), and is dropped if it has not gone a grace period later.
//!
//! leash drives hyper itself rather than through tonic's server, whose connection-age
//! handling either closes abruptly or, with no grace period, panics.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt as _};
use tonic::service::Routes;

use super::bounds::{Budget, Gate, Slotted};
use super::tls::TlsConn;
use crate::access::ClientIdentity;
use crate::config::PortLimits;
use crate::metrics::Metrics;

/// Serves gRPC `routes` over HTTP/2 on `incoming` until `stop`, then lets open
/// connections finish their streams.
pub async fn grpc<IO>(
    incoming: impl Stream<Item = io::Result<IO>>,
    routes: Routes,
    limits: PortLimits,
    port: GrpcPort,
    stop: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Peer + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let timeout = port.timeout;
    let service = Bounded {
        routes: routes.prepare(),
        budget: Budget::new(limits.max_buffered_bytes.get()),
        port: Arc::new(port),
        peer: None,
    };
    let connections = Connections::new(limits.max_connection_age, timeout);
    connections
        .serve(incoming, stop, |io| {
            let service = Bounded {
                peer: io.client_identity(),
                ..service.clone()
            };
            http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        })
        .await;
}

/// What a connection knows of its peer beyond its bytes: on a TLS port, the identity
/// its verified client certificate names.
pub trait Peer {
    fn client_identity(&self) -> Option<Arc<ClientIdentity>>;
}

impl<IO> Peer for Slotted<IO> {
    fn client_identity(&self) -> Option<Arc<ClientIdentity>> {
        None
    }
}

impl<IO> Peer for TlsConn<IO> {
    fn client_identity(&self) -> Option<Arc<ClientIdentity>> {
        self.peer()
    }
}

/// Serves `router` over HTTP/1.1 on `incoming` until `stop`. A client must send each
/// request's headers within `header_read_timeout`, which also closes idle keep-alive
/// connections, so a slow or silent client cannot hold a slot.
pub async fn http1<IO>(
    incoming: impl Stream<Item = io::Result<IO>>,
    router: axum::Router,
    limits: PortLimits,
    stop: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let service = TowerToHyperService::new(router);
    let connections = Connections::new(limits.max_connection_age, limits.request_timeout);
    connections
        .serve(incoming, stop, |io| {
            http.serve_connection(TokioIo::new(io), service.clone())
        })
        .await;
}

/// The connection lifecycle both protocols share.
struct Connections {
    age: Duration,
    grace: Duration,
}

impl Connections {
    fn new(age: Duration, grace: Duration) -> Self {
        Self { age, grace }
    }

    async fn serve<IO, C>(
        self,
        incoming: impl Stream<Item = io::Result<IO>>,
        stop: impl Future<Output = ()>,
        connect: impl Fn(IO) -> C,
    ) where
        C: GracefulConnection + Send + 'static,
    {
        let (stopping, stop_rx) = watch::channel(false);
        let mut open = tokio::task::JoinSet::new();
        let mut incoming = Box::pin(incoming);
        let mut stop = std::pin::pin!(stop);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                accepted = incoming.next() => accepted,
            };
            while open.try_join_next().is_some() {}
            match accepted {
                None => break,
                Some(Err(err)) => {
                    tracing::debug!("accept failed: {err}");
                    // A full file table clears as connections close; do not spin meanwhile.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Some(Ok(io)) => {
                    open.spawn(drive(connect(io), self.age, self.grace, stop_rx.clone()));
                }
            }
        }
        // No new connection from here on: the listener (and any TLS handshakes still
        // running behind it) goes now, not after the grace period.
        drop(incoming);
        let _ = stopping.send(true);
        while open.join_next().await.is_some() {}
    }
}

/// Runs one connection until it ends, its age is reached or the server stops; then
/// asks it to finish and gives it `grace` before dropping it.
async fn drive<C: GracefulConnection>(
    conn: C,
    age: Duration,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(age) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// One gRPC port: its name in the metrics, and what one request on it may take.
#[derive(Debug)]
pub struct GrpcPort {
    pub name: &'static str,
    pub max_message: usize,
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// The gRPC routes behind a [`Gate`] on every request body, and answered within the
/// port's timeout: a stream whose message never completes is ended with
/// DEADLINE_EXCEEDED (the caller denies) and counted. Each request carries its
/// connection's client identity, when there is one, as an extension.
#[derive(Debug, Clone)]
struct Bounded {
    routes: Routes,
    budget: Arc<Budget>,
    port: Arc<GrpcPort>,
    peer: Option<Arc<ClientIdentity>>,
}

impl tower_service::Service<http::Request<Incoming>> for Bounded {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let mut req = req.map(|body| {
            tonic::body::Body::new(Gate::new(body, self.port.max_message, self.budget.clone()))
        });
        if let Some(peer) = &self.peer {
            req.extensions_mut().insert(peer.clone());
        }
        let answer = self.routes.call(req);
        let port = self.port.clone();
        Box::pin(async move {
            match tokio::time::timeout(port.timeout, answer).await {
                Ok(answered) => answered,
                Err(_) => {
                    port.metrics.request_timed_out(port.name);
                    Ok(tonic::Status::deadline_exceeded(
                        "not answered within listen.request_timeout",
                    )
                    .into_http())
                }
            }
        })
    }
}

//! TLS on the control port: leash's certificate, and, with a client CA, a client
//! certificate from every caller, whose URI and DNS names say who calls.
//!
//! Handshakes run beside the accept loop, each within the port's first-byte deadline,
//! so a peer that stalls one holds only its own connection slot.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{
    NoServerSessionStorage, ServerConfig, ServerConnection, WebPkiClientVerifier,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use x509_parser::extensions::GeneralName;

use crate::access::ClientIdentity;
use crate::config::ControlTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("control.tls: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The control port's TLS: built once at start from `control.tls`.
#[derive(Clone)]
pub struct TlsPort {
    acceptor: TlsAcceptor,
    handshake_within: Duration,
    verifies_clients: bool,
}

impl std::fmt::Debug for TlsPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPort")
            .field("handshake_within", &self.handshake_within)
            .finish_non_exhaustive()
    }
}

impl TlsPort {
    /// Reads the certificate chain, its key and the client CA, naming the file that is
    /// missing or holds no usable PEM.
    pub fn load(tls: &ControlTls, handshake_within: Duration) -> Result<Self, TlsError> {
        let chain = certificates(&tls.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
            file_error(
                &tls.key_file,
                format!("no PEM private key read ({e}): use a PKCS#8, PKCS#1 or SEC1 key"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &tls.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca_file) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(ca_file)? {
                    roots.add(ca).map_err(|e| file_error(ca_file, e))?;
                }
                let mut crls = Vec::new();
                for crl_file in &tls.client_crl_files {
                    for crl in CertificateRevocationListDer::pem_file_iter(crl_file)
                        .map_err(|e| file_error(crl_file, e))?
                    {
                        crls.push(crl.map_err(|e| file_error(crl_file, e))?);
                    }
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .with_crls(crls)
                        .build()
                        .map_err(|e| file_error(ca_file, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| file_error(&tls.cert_file, format!("{e} (does the key match?)")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // A resumed session would skip verifying the client certificate again: every
        // connection shows one that is valid now.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_within,
            verifies_clients: tls.client_ca_file.is_some(),
        })
    }

    /// Whether every connection must present a client certificate.
    pub fn verifies_clients(&self) -> bool {
        self.verifies_clients
    }

    /// The connections of `incoming` that complete a handshake in time, with the
    /// identity their client certificate names. Failed handshakes are logged and
    /// dropped.
    pub fn accept<IO>(
        self,
        incoming: impl Stream<Item = io::Result<IO>> + Send + 'static,
    ) -> impl Stream<Item = io::Result<TlsConn<IO>>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (done, handshaken) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut incoming = std::pin::pin!(incoming);
            loop {
                let next = tokio::select! {
                    () = done.closed() => break,
                    next = incoming.next() => next,
                };
                let io = match next {
                    None => break,
                    Some(Ok(io)) => io,
                    Some(Err(err)) => {
                        if done.send(Err(err)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let (port, done) = (self.clone(), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(port.handshake_within, port.acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let peer = client_identity(stream.get_ref().1).map(Arc::new);
                            let _ = done.send(Ok(TlsConn { stream, peer })).await;
                        }
                        Ok(Err(err)) => {
                            tracing::info!("control API: TLS handshake refused: {err}");
                        }
                        Err(_) => tracing::info!("control API: TLS handshake not done in time"),
                    }
                });
            }
        });
        ReceiverStream::new(handshaken)
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The URI and DNS names of the verified client certificate; none for a certificate
/// not issued for client authentication (webpki accepts one with no extended key
/// usage at all, such as a server's), so that it names no caller. `None` when no
/// certificate was presented or it cannot be read: the caller must then show a token.
fn client_identity(conn: &ServerConnection) -> Option<ClientIdentity> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let mut identity = ClientIdentity::default();
    let for_clients = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.client_auth);
    if !for_clients {
        return Some(identity);
    }
    if let Some(names) = cert.subject_alternative_name().ok().flatten() {
        for name in &names.value.general_names {
            match name {
                GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    Some(identity)
}

/// A TLS connection and the identity its client certificate names.
#[derive(Debug)]
pub struct TlsConn<IO> {
    stream: TlsStream<IO>,
    peer: Option<Arc<ClientIdentity>>,
}

impl<IO> TlsConn<IO> {
    pub fn peer(&self) -> Option<Arc<ClientIdentity>> {
        self.peer.clone()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

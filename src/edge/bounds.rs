//! What a peer can hold on leash's ports. In a pod the agent shares the network
//! namespace with leash, so every port is reachable by the adversary: connections are
//! capped, and a gRPC message costs memory only as its bytes arrive, never as its
//! 5-byte prefix declares.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt as _};

use crate::metrics::Metrics;

/// The gRPC length-prefixed message header: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// Bytes received on the open streams of a port, partly received messages and whole
/// ones alike, held until the stream's request is dropped. A peer that sends many
/// messages, slowly or at once, is refused once this is spent instead of growing leash.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    fn take(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max {
            self.held.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A request body that hands tonic only whole gRPC messages. tonic reserves a
/// message's declared length as soon as it reads the prefix; behind the gate it reads
/// the prefix only once the whole message is here, so what a stream holds is what it
/// sent. Every byte received stays charged to the port's [`Budget`] until the body is
/// dropped with its request: a message handed on is still in memory while it is
/// decided (tonic keeps a copy and the decoded request beside it).
#[derive(Debug)]
pub struct Gate<B> {
    inner: B,
    pending: BytesMut,
    max_message: usize,
    budget: Arc<Budget>,
    /// Bytes this stream took from the budget.
    charged: usize,
}

impl<B> Gate<B> {
    pub fn new(inner: B, max_message: usize, budget: Arc<Budget>) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
            max_message,
            budget,
            charged: 0,
        }
    }

    /// The length of the first message in `bytes` with its prefix, once it is known.
    fn framed_len(&self, bytes: &[u8]) -> Result<Option<usize>, tonic::Status> {
        let Some(&[_flag, a, b, c, d]) = bytes.get(..PREFIX) else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([a, b, c, d]) as usize;
        if declared > self.max_message {
            return Err(tonic::Status::out_of_range(format!(
                "the message declares {declared} bytes; the limit is {} (listen.max_receive_bytes)",
                self.max_message
            )));
        }
        Ok(Some(PREFIX + declared))
    }

    fn release(&mut self, n: usize) -> Bytes {
        self.pending.split_to(n).freeze()
    }

    fn charge(&mut self, n: usize) -> Result<(), tonic::Status> {
        if !self.budget.take(n) {
            return Err(tonic::Status::resource_exhausted(
                "leash holds too many received bytes on this port (listen.max_buffered_bytes)",
            ));
        }
        self.charged += n;
        Ok(())
    }
}

impl<B> Body for Gate<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if let Some(len) = self.framed_len(&self.pending)? {
                if self.pending.len() >= len {
                    return Poll::Ready(Some(Ok(Frame::data(self.release(len)))));
                }
            }
            let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None if self.pending.is_empty() => return Poll::Ready(None),
                // A message cut short: tonic reports the truncation.
                None => {
                    let rest = self.pending.len();
                    return Poll::Ready(Some(Ok(Frame::data(self.release(rest)))));
                }
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            self.charge(data.len())?;
            // The usual case, a whole message in one chunk, passes without a copy.
            if self.pending.is_empty() && self.framed_len(&data)? == Some(data.len()) {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let n = chunk.len();
                self.pending.extend_from_slice(chunk);
                data.advance(n);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<B> Drop for Gate<B> {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

/// A connection that holds one of its port's connection slots until it closes, and
/// fails if its peer sends nothing before a deadline.
#[derive(Debug)]
pub struct Slotted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    /// Cleared by the first byte received.
    silent_until: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The connection slots of one port. Past `max` open connections a new one is closed
/// at once and counted, so a peer cannot grow leash by opening more.
#[derive(Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    first_byte_within: Duration,
    port: &'static str,
    metrics: Arc<Metrics>,
}

impl Slots {
    /// `port` names the port in `leash_connections_refused_total`; a connection whose
    /// peer sends nothing for `first_byte_within` is closed.
    pub fn new(
        max: usize,
        first_byte_within: Duration,
        port: &'static str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            free: Arc::new(Semaphore::new(max)),
            first_byte_within,
            port,
            metrics,
        }
    }

    pub fn tcp(self, listener: TcpListener) -> impl Stream<Item = io::Result<Slotted<TcpStream>>> {
        let accepted = TcpListenerStream::new(listener).map(|conn| {
            // Checks are small request/response exchanges; Nagle would only delay them.
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        self.admit(accepted)
    }

    pub fn unix(
        self,
        listener: UnixListener,
    ) -> impl Stream<Item = io::Result<Slotted<UnixStream>>> {
        self.admit(UnixListenerStream::new(listener))
    }

    fn admit<IO>(
        self,
        accepted: impl Stream<Item = io::Result<IO>>,
    ) -> impl Stream<Item = io::Result<Slotted<IO>>> {
        accepted.filter_map(move |conn| {
            let io = match conn {
                Ok(io) => io,
                Err(err) => return Some(Err(err)),
            };
            match self.free.clone().try_acquire_owned() {
                Ok(slot) => Some(Ok(Slotted {
                    io,
                    _slot: slot,
                    silent_until: Some(Box::pin(tokio::time::sleep(self.first_byte_within))),
                })),
                Err(_) => {
                    self.metrics.connection_refused(self.port);
                    None
                }
            }
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Slotted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Some(deadline) = &mut self.silent_until {
            if read.is_ready() {
                if buf.filled().len() > filled {
                    self.silent_until = None;
                }
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer sent nothing (listen.header_read_timeout)",
                )));
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Slotted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    /// A body that yields `chunks` one by one.
    fn chunked(chunks: Vec<Vec<u8>>) -> impl Body<Data = Bytes, Error = io::Error> + Unpin {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, io::Error>(Frame::data(Bytes::from(c))));
        http_body_util::StreamBody::new(tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn a_message_split_over_chunks_is_handed_on_whole_and_charged_until_dropped() {
        let whole = message(100);
        let budget = Budget::new(1 << 20);
        let chunks = whole.chunks(7).map(<[u8]>::to_vec).collect();
        let mut gate = Gate::new(chunked(chunks), 1 << 20, budget.clone());
        let first = gate.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.as_ref(), whole.as_slice());
        assert!(gate.frame().await.is_none());
        // Handed on is not gone: the message stays charged while its request lives.
        assert_eq!(budget.held.load(Ordering::Relaxed), whole.len());
        drop(gate);
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_its_bytes_come() {
        let budget = Budget::new(1 << 20);
        let prefix = message(5000)[..PREFIX].to_vec();
        let mut gate = Gate::new(chunked(vec![prefix]), 4096, budget);
        let err = gate.frame().await.unwrap().unwrap_err();
        let status = tonic::Status::from_error(err);
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    }

    /// A body that yields `chunk` and then waits forever, like a peer that stopped sending.
    fn stalled(chunk: Vec<u8>) -> impl Body<Data = Bytes, Error = io::Error> + Unpin {
        let first = tokio_stream::iter([Ok::<_, io::Error>(Frame::data(Bytes::from(chunk)))]);
        http_body_util::StreamBody::new(first.chain(tokio_stream::pending()))
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_the_next_stream_and_a_dropped_one_gives_back() {
        let budget = Budget::new(64);
        let whole = message(100);
        let mut first = Gate::new(stalled(whole[..60].to_vec()), 1 << 20, budget.clone());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), first.frame());
        assert!(waited.await.is_err(), "an incomplete message is held back");
        assert_eq!(budget.held.load(Ordering::Relaxed), 60);
        let mut second = Gate::new(stalled(whole[..30].to_vec()), 1 << 20, budget.clone());
        let err = second.frame().await.unwrap().unwrap_err();
        let status = tonic::Status::from_error(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
        drop(first);
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }
}

//! The `envoy.service.auth.v3.Authorization` gRPC service.
//!
//! Written against tonic's server building blocks rather than the generated
//! `AuthorizationServer` for two reasons: a CheckRequest that fails to decode (a header
//! that is not UTF-8, say) still gets a denial with a reason code instead of a bare
//! gRPC error, and the Check itself runs without an `async_trait` allocation.

use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use prost::Message as _;
use prost::bytes::Buf as _;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body as HttpBody, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstEncoder;

use super::egress::{self, EgressOptions};
use crate::decider::Decider;
use crate::decider::Wait;
use crate::decision::DenyReason;
use crate::pipeline::Verdict;
use crate::view::RequestView;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The ext_authz front end of the [`Decider`]: CheckRequest in, CheckResponse out.
#[derive(Debug)]
pub struct Authz {
    pub decider: Arc<Decider>,
    pub egress: EgressOptions,
}

/// A Check decided at once, or waiting for an issuer's keys or a durable write.
enum Started {
    Done(CheckResponse),
    Waits(Waiting),
}

/// A Check that waits, with what it needs to finish.
struct Waiting {
    view: RequestView,
    wait: Wait,
    arrived: Instant,
}

impl Authz {
    /// Decides one request without waiting for anything. Never fails.
    pub fn check(&self, incoming: Incoming) -> CheckResponse {
        match self.start(incoming) {
            Started::Done(response) => response,
            // A decided Check is not decided again: its behaviour is counted once.
            Started::Waits(waiting) => self.respond(&self.decider.finish_now(
                &waiting.view,
                waiting.wait,
                waiting.arrived,
            )),
        }
    }

    fn start(&self, incoming: Incoming) -> Started {
        let arrived = Instant::now();
        let view = match incoming {
            Incoming::Request(req) => match RequestView::try_from(req) {
                Ok(view) => view,
                Err(invalid) => {
                    let verdict =
                        self.decider
                            .refuse(invalid.reason(), invalid.to_string(), Some(arrived));
                    return Started::Done(self.respond(&verdict));
                }
            },
            Incoming::Undecodable { reason, error } => {
                let verdict = self.decider.refuse(
                    reason,
                    format!("cannot decode the CheckRequest: {error}"),
                    Some(arrived),
                );
                return Started::Done(self.respond(&verdict));
            }
        };
        match self.decider.try_decide(&view, arrived) {
            Ok(verdict) => Started::Done(self.respond(&verdict)),
            Err(wait) => Started::Waits(Waiting {
                view,
                wait,
                arrived,
            }),
        }
    }

    fn respond(&self, verdict: &Verdict) -> CheckResponse {
        egress::response(verdict, &self.egress)
    }

    /// Counts and logs a Check tonic refused before it reached [`check`](Self::check).
    fn rejected_by_transport(&self, code: tonic::Code) {
        let reason = if code == tonic::Code::OutOfRange {
            DenyReason::RequestTooLarge
        } else {
            DenyReason::RequestMalformed
        };
        self.decider.refuse(
            reason,
            format!("gRPC layer refused the CheckRequest ({code:?})"),
            None,
        );
    }
}

/// A CheckRequest as it came off the wire: decoded, or the reason it could not be.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once into the handler; boxing would cost an allocation per Check"
)]
pub enum Incoming {
    Request(CheckRequest),
    Undecodable {
        /// `request.invalid_utf8` when only text was invalid, else `request.malformed`.
        reason: DenyReason,
        error: prost::DecodeError,
    },
}

impl Incoming {
    /// One gRPC message's bytes, decoded.
    pub fn decode(bytes: &[u8]) -> Self {
        match CheckRequest::decode(bytes) {
            Ok(req) => Self::Request(req),
            Err(error) => Self::Undecodable {
                reason: if super::mirror::only_text_is_invalid(bytes) {
                    DenyReason::RequestInvalidUtf8
                } else {
                    DenyReason::RequestMalformed
                },
                error,
            },
        }
    }
}

/// The tower service Envoy talks to.
#[derive(Debug, Clone)]
pub struct AuthorizationService {
    authz: Arc<Authz>,
    max_receive_bytes: usize,
}

impl AuthorizationService {
    pub fn new(authz: Arc<Authz>, max_receive_bytes: usize) -> Self {
        Self {
            authz,
            max_receive_bytes,
        }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for AuthorizationService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(ready(Ok(tonic::Status::unimplemented(
                "leash serves only envoy.service.auth.v3.Authorization/Check",
            )
            .into_http())));
        }
        let authz = self.authz.clone();
        let limit = self.max_receive_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(CheckCodec).apply_max_message_size_config(Some(limit), None);
            let response = grpc.unary(CheckCall(authz.clone()), req).await;
            // A status in the headers means tonic answered without calling `check`
            // (a message over the size limit, a broken frame): Envoy denies on it, and
            // leash records it like any other denial.
            if let Some(code) = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|code| *code != 0)
            {
                authz.rejected_by_transport(tonic::Code::from(code));
            }
            Ok(response)
        })
    }
}

struct CheckCall(Arc<Authz>);

impl UnaryService<Incoming> for CheckCall {
    type Response = CheckResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<CheckResponse>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Incoming>) -> Self::Future {
        match self.0.start(request.into_inner()) {
            Started::Done(response) => Box::pin(ready(Ok(tonic::Response::new(response)))),
            Started::Waits(waiting) => {
                let authz = self.0.clone();
                Box::pin(async move {
                    let Waiting {
                        view,
                        wait,
                        arrived,
                    } = waiting;
                    let verdict = authz.decider.finish(&view, wait, arrived).await;
                    Ok(tonic::Response::new(authz.respond(&verdict)))
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = Incoming;
    type Encoder = ProstEncoder<CheckResponse>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

#[derive(Debug, Clone, Copy)]
struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = Incoming;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Incoming>, tonic::Status> {
        // The whole message, taken without a copy: a failed decode may look at it twice,
        // and nothing of it may be read as the start of another message.
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(Incoming::decode(&bytes)))
    }
}

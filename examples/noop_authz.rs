//! The benchmark's ceiling: an ext_authz server that allows everything, written the
//! default tonic way (generated server, async trait). `bench/e2e` runs it beside leash.
//!
//! `cargo run --release --example noop_authz -- 127.0.0.1:9291 [--leash-answer]
//! [--worker-threads N]`
//!
//! With `--leash-answer` it allows with what leash answers the benchmark's governed
//! request (the three `x-leash-*` headers, `decision_id` and `leash_action` metadata),
//! so that Envoy's cost of applying that answer shows apart from leash's own. With
//! `--worker-threads 1` it runs on one thread, as leash does by default.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::OkHttpResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

struct AllowAll {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }
}

fn leash_answer() -> CheckResponse {
    let header = |key: &str, value: &str| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![
                header("x-leash-agent", "planner"),
                header("x-leash-human", "alice"),
                header("x-leash-task", "t-1"),
            ],
            ..Default::default()
        })),
        dynamic_metadata: Some(Struct {
            fields: [
                (
                    "decision_id".to_owned(),
                    string("8ec14464-51ec-4d07-b01a-963f21c2f404"),
                ),
                ("leash_action".to_owned(), string("read")),
            ]
            .into(),
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9291".into())
        .parse()?;
    let mut answer = CheckResponse {
        status: Some(rpc::Status::default()),
        ..Default::default()
    };
    // tokio's default, as `#[tokio::main]` would: one worker per CPU.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--leash-answer" => answer = leash_answer(),
            "--worker-threads" => {
                runtime.worker_threads(
                    args.next()
                        .ok_or("--worker-threads needs a number")?
                        .parse()?,
                );
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    runtime.enable_all().build()?.block_on(async {
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(AllowAll { answer }))
            .serve(addr)
            .await
    })?;
    Ok(())
}

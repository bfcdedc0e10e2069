//! The benchmark's ceiling: an ext_authz server that allows everything, written the
//! default tonic way (generated server, async trait). `bench/e2e` runs it beside leash.
//!
//! `cargo run --release --example noop_authz -- 127.0.0.1:9291`

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9291".into())
        .parse()?;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve(addr)
        .await?;
    Ok(())
}

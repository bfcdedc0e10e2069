//! Envoy and operators on the wire: the only home of tonic, envoy-types and prost.
//!
//! `ingress` turns a CheckRequest into a [`RequestView`](crate::view::RequestView),
//! `egress` turns a [`Verdict`](crate::pipeline::Verdict) into a CheckResponse, and
//! `authz` is the service between them.

pub mod admin;
pub mod authz;
pub mod bounds;
pub mod control;
pub mod egress;
pub mod ingress;
pub mod json;
mod mirror;
mod protojson;
pub mod serve;
pub mod tls;

//! The integration and end-to-end tests, in one binary so that the shared helpers
//! (`tests/common`) and leash itself are compiled and linked once. The fuzz targets
//! (`tests/fuzz.rs`) stay apart: `.ci/run` runs them for a fixed time.

#[path = "../common/mod.rs"]
mod common;

mod builtins;
mod cli;
mod compat;
mod credentials;
mod demo;
mod deploy;
mod engines;
mod envoy;
mod grpc;
mod hostile;
mod identity;
mod live;
mod tokens;

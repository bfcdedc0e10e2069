//! leash: an Envoy ext_authz sidecar that decides, on every tool call an AI agent
//! makes, whether it may happen, with embedded Rego.
//!
//! One Check flows through the modules in this order:
//!
//! ```text
//! edge::authz   CheckRequest off the wire
//! edge::ingress   -> view::RequestView
//! pipeline          -> request (canonical target) -> policy::input (parsed body)
//!                   -> mcp (strict reading)
//!                   -> token (verify, bind)
//!                   -> action (classify) -> context
//!                   -> policy::input (the OPA-compatible document + input.leash)
//!                   -> policy (evaluation) -> policy::outcome
//!                   -> decision::Decision (+ the headers leash vouches for)
//! edge::egress    -> CheckResponse
//! ```
//!
//! with `metrics` and `audit` beside it, recording and never changing the decision.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    reason = "a panic on the Check path would drop a decision; errors deny instead"
)]

pub mod access;
pub mod action;
pub mod app;
pub mod audit;
pub mod body;
pub mod clock;
pub mod commands;
pub mod config;
pub mod context;
pub mod credential;
pub mod decider;
pub mod decision;
pub mod document;
pub mod edge;
pub mod effects;
pub mod glob;
mod jws;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod quote;
pub mod reason;
pub mod reload;
pub mod request;
pub mod state;
pub mod token;
pub mod view;

//! Rego: loading and compiling policy sets, building the input document, evaluating,
//! and reading the result. The only module that drives regorus's engine.

mod builtins;
mod engine;
pub mod input;
pub mod library;
pub mod opa;
pub mod outcome;
mod problem;
mod set;
mod source;
mod store;
pub mod testing;

pub use engine::{EngineKind, EvalError, EvalLimits};
pub use problem::{PolicyLoadError, Problem};
/// The document type of inputs and results, shared with the edge that builds
/// `input.attributes` straight from protobuf.
pub use regorus::Value;
pub use regorus::value::Object;
pub use set::{
    DecisionRule, EngineChoice, LoadOptions, PolicyInfo, PolicySet, Prepare, Prepared, RegoVersion,
    Warmup,
};
pub use source::{PolicySource, embedded_files};
pub use store::{PolicyStore, ReloadOutcome};

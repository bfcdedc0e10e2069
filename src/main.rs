//! The `leash` command: parse arguments, set up logging, run a command.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    reason = "a panic on the Check path would drop a decision; errors deny instead"
)]

use std::process::ExitCode;

mod cli;

/// A Check allocates many small, short-lived values (the input document); mimalloc's
/// thread-local free lists serve them for a fraction of glibc malloc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}

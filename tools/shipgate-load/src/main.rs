//! `shipgate-load`: the load and correctness test for the self-hosted server. It drives a
//! server on loopback (one it starts in-process with `--spawn`, or `--target URL`) with
//! signed, mixed webhooks and reports throughput, latency and correctness from the store; see
//! [`load`].
//!
//! Exit codes: 0 every check passed, 1 a check failed or the load could not run, 2 usage errors.

mod load;

use std::process::ExitCode;

use clap::Parser;

/// Drive a server on loopback with signed, mixed webhooks; report throughput, latency
/// and correctness from the store (`--spawn` starts one in-process).
#[derive(Debug, Parser)]
#[command(name = "shipgate-load", version)]
struct Cli {
    #[command(flatten)]
    args: load::LoadArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(load::run(&cli.args))
}

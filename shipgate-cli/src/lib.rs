//! The server wiring behind the `shipgate` binary, as a library: what `shipgate serve` starts
//! ([`server`]), the data directory and its durability ([`data`]), the in-process schedule
//! ([`scheduler`]) and notifier ([`notifier_task`]), log set-up ([`logging`]) and the one error
//! type ([`error`]), and where the operator commands find the state ([`state`]: a data
//! directory, or with the `aws` feature a deployed stack, [`aws`]).
//!
//! The operator commands live in the binary (`src/main.rs`); the load tool
//! (`tools/shipgate-load`) starts the same server in-process through [`server::start`].

#[cfg(feature = "aws")]
pub mod aws;
pub mod dashboard;
pub mod data;
pub mod error;
pub mod logging;
pub mod notifier_task;
pub mod policy_reload;
pub mod queue_timer;
pub mod scheduler;
pub mod server;
pub mod signals;
pub mod state;

use crate::error::CliError;

/// The multi-threaded Tokio runtime every command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

//! The test kit: what the workspace's tests share, kept out of the production crates.
//!
//! - [`contract`]: the conformance suite every `ItemStore` adapter must pass, the
//!   [`store_contract_tests!`] macro that runs it, and a deliberately broken adapter;
//! - [`shipgate_binary`]: the `shipgate` binary, built on first use, for end-to-end tests;
//! - [`ManualClock`] and [`RecordingPublisher`]: doubles for the clock and publisher ports.
//!
//! A dev-dependency only: nothing here is compiled into a function or the binary.

mod binary;
pub mod contract;
mod doubles;
mod fixtures;

pub use binary::shipgate_binary;
pub use doubles::{ManualClock, RecordingPublisher};
pub use fixtures::workspace_root;

/// The library under test, re-exported for the macros.
pub use shipgate;

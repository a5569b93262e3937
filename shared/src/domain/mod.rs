//! The domain: deployment lifecycle, approvals, incidents, audit and policy.
//!
//! Nothing in here performs I/O or reads a clock; callers pass `now` in. That keeps every
//! decision shipgate makes reproducible in a unit test.

pub mod deployment;
pub mod dora;
pub mod events;
pub mod incident;
pub mod job;
pub mod policy;

//! Lifeboat: disaster-recovery orchestration for immutable infrastructure.
//! See ARCHITECTURE.md for the map of the code.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod provider;
pub mod server;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;

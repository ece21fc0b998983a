//! Pure logic: manifests, snapshots, the dependency graph. No IO here.

pub mod alert;
pub mod dag;
pub mod drift;
pub mod drill;
pub mod duration;
pub mod manifest;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod snapshot;
pub mod source;

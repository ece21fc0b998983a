//! Pure logic: manifests, snapshots, the dependency graph. No IO here.

pub mod alert;
pub mod dag;
pub mod drift;
pub mod duration;
pub mod manifest;
pub mod plan;
pub mod run;
pub mod snapshot;
pub mod source;

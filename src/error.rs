//! The service-level error. `api::status` maps it to gRPC codes in one
//! exhaustive match, and the CLI maps those codes to exit codes.

use crate::domain::manifest::Problem;
use crate::domain::snapshot::IntegrityError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{source_name} is not a valid manifest:\n{}", render_problems(source_name, problems))]
    InvalidManifest { source_name: String, problems: Vec<Problem> },
    #[error("{0}")]
    NotFound(String),
    /// Someone else changed the thing concurrently (a ref, a lease).
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{what} (object {key} in {store}) {source}; refusing to use it")]
    Integrity { what: String, key: String, store: String, source: Box<IntegrityError> },
    #[error("object store error: {0}")]
    Store(#[from] StoreError),
    /// A limit of this server is reached (e.g. concurrent watchers).
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stored record that failed its integrity check, in a listing: marked
/// and named, while the listing goes on with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The object's key in the store, for the operator who goes to look.
    pub key: String,
    /// What it is and what is wrong: `run record is malformed (…)`.
    pub problem: String,
}

impl Error {
    /// The record that failed its integrity check, when that is the error.
    pub fn corruption(&self) -> Option<Corruption> {
        match self {
            Error::Integrity { what, key, source, .. } => {
                Some(Corruption { key: key.clone(), problem: format!("{what} {source}") })
            }
            _ => None,
        }
    }
}

/// One problem per line, prefixed with the source name: `shop.toml:3:1: …`.
pub fn render_problems(source_name: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.pos {
            Some(_) => format!("  {source_name}:{p}"),
            None => format!("  {source_name}: {p}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A user-supplied value for an error message: cut to 64 characters with
/// its size noted, so a hostile 4 MB name is never echoed back whole (in
/// a status message, a log line or an audit record), and control
/// characters escaped, so a newline in it cannot forge a log line.
pub fn shown(value: &str) -> String {
    const MAX: usize = 64;
    let escape = |s: &str| -> String {
        s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    };
    if value.chars().count() <= MAX {
        return escape(value);
    }
    let cut: String = value.chars().take(MAX).collect();
    format!("{}… ({} bytes)", escape(&cut), value.len())
}

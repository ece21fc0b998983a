//! The one mapping from service errors to gRPC status codes.

use tonic::{Code, Status};

use crate::error::Error;
use crate::store::StoreError;

pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::InvalidArgument(_) | Error::InvalidManifest { .. } => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::Conflict(_) => Code::Aborted,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Integrity { .. } => Code::DataLoss,
        Error::Store(StoreError::NotFound { .. }) => Code::NotFound,
        Error::Store(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) => Code::Aborted,
        Error::Store(StoreError::InvalidKey { .. }) => Code::InvalidArgument,
        Error::Store(StoreError::Backend { retryable: true, .. }) => Code::Unavailable,
        Error::Store(StoreError::Backend { retryable: false, .. }) => Code::Internal,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Internal(_) => Code::Internal,
    };
    if matches!(code, Code::Internal | Code::Unavailable | Code::DataLoss) {
        tracing::error!(error = %e, "request failed");
    }
    Status::new(code, e.to_string())
}

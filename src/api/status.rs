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

/// Codes tonic picks for requests it cannot decode, corrected: a malformed
/// message (wrong wire type, bad UTF-8, truncated) is the caller's fault,
/// INVALID_ARGUMENT rather than INTERNAL; an oversized one is
/// RESOURCE_EXHAUSTED rather than OUT_OF_RANGE. Applied to every response
/// whose status travels in its headers (how such refusals are sent).
pub fn fix_transport_codes<B>(mut resp: tonic::codegen::http::Response<B>) -> tonic::codegen::http::Response<B> {
    let headers = resp.headers_mut();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let fixed = match code.map(Code::from_i32) {
        Some(Code::Internal) if message.starts_with("failed%20to%20decode") => Some(Code::InvalidArgument),
        Some(Code::OutOfRange) if message.contains("message%20length%20too%20large") => Some(Code::ResourceExhausted),
        _ => None,
    };
    if let Some(c) = fixed
        && let Ok(v) = (c as i32).to_string().parse()
    {
        headers.insert("grpc-status", v);
    }
    resp
}

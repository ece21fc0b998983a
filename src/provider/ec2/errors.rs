//! AWS errors in the provider's terms: each classified as retryable
//! (throttling, capacity, the network) or permanent (a missing AMI, no
//! permission, a bad parameter), and reported with its AWS code.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::provider::ProviderError;

/// Codes after which another attempt may succeed.
const RETRYABLE: [&str; 12] = [
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientAddressCapacity",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
];

pub fn is_retryable_code(code: &str) -> bool {
    RETRYABLE.contains(&code) || code.starts_with("Throttl") || code.ends_with(".Unavailable")
}

/// `what` names the call and the service it was for ("RunInstances for api").
pub fn aws_error<E, R>(what: &str, e: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            let cause = root_cause(e);
            if cause.contains("credentials") || cause.contains("IMDS") {
                ProviderError::Backend {
                    message: format!(
                        "{what}: no AWS credentials ({cause}); give the server the standard AWS environment (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role)"
                    ),
                    retryable: false,
                }
            } else {
                ProviderError::Backend {
                    message: format!("{what}: cannot reach the AWS API: {cause}"),
                    retryable: true,
                }
            }
        }
        _ => {
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().map(str::to_string).unwrap_or_else(|| root_cause(e));
            ProviderError::Backend {
                message: format!("{what}: AWS {code}: {message}"),
                retryable: is_retryable_code(code),
            }
        }
    }
}

/// The AWS error code of a failed call, if the service sent one.
pub fn code_of<E, R>(e: &SdkError<E, R>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    e.code().map(str::to_string)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_capacity_are_retryable_bad_input_is_not() {
        for c in ["Throttling", "RequestLimitExceeded", "InsufficientInstanceCapacity", "ThrottledException"] {
            assert!(is_retryable_code(c), "{c}");
        }
        for c in ["InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "UnauthorizedOperation", "InvalidParameterValue"] {
            assert!(!is_retryable_code(c), "{c}");
        }
    }
}

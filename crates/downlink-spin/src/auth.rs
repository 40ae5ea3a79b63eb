//! Authentication of incoming requests against the `api_tokens` Spin variable.

use downlink_core::auth::{authenticate_request, Principal, API_TOKENS_VARIABLE};
use downlink_core::ApiError;

/// Authenticates an `Authorization` header value. An unset or empty variable means "no tokens
/// configured" (every request refused with instructions).
pub fn authenticate(authorization: Option<&str>) -> Result<Principal, ApiError> {
    let config = crate::variable(API_TOKENS_VARIABLE);
    authenticate_request(config.as_deref(), authorization)
}

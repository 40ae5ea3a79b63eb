//! The one error envelope every endpoint answers with:
//! `{"success":false,"error":"CODE","message":"…"}` plus a fitting HTTP status.
//!
//! [`ErrorCode`] fixes each code's wire string and status in one table, so components cannot
//! disagree; [`ApiError`] carries a message and any headers the status needs
//! (`WWW-Authenticate`, `Allow`, `Content-Range`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Content type of every error body.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Realm announced in `WWW-Authenticate` challenges.
pub const AUTH_REALM: &str = "downlink";

/// Machine-readable error codes. Serialised as their SCREAMING_SNAKE wire string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A path broke the path rules (400).
    InvalidPath,
    /// A malformed request: bad JSON, bad parameter (400).
    InvalidRequest,
    /// Missing or wrong bearer token (401).
    Unauthorized,
    /// Authenticated, but the token lacks a scope or the resource belongs to someone else (403).
    Forbidden,
    /// No such file, directory, download or prepare id (404).
    NotFound,
    /// The route exists but not for this method (405, with `Allow`).
    MethodNotAllowed,
    /// The request conflicts with current state: file vs directory, exists already (409).
    Conflict,
    /// The resource existed but has expired, e.g. a prepare id (410).
    Gone,
    /// A precondition (`If-Match`) failed (412).
    PreconditionFailed,
    /// A request body exceeded its limit (413).
    PayloadTooLarge,
    /// A file (upload or download) exceeded the configured size cap (413).
    FileTooLarge,
    /// A response would carry more than the host lets one carry (a hosted target's body cap)
    /// and cannot be redirected: fetch it in `Range` parts (413).
    ResponseTooLarge,
    /// The `Range` cannot be satisfied (416, with `Content-Range: bytes */size`).
    RangeNotSatisfiable,
    /// The concurrent-download limit is reached (429).
    TooManyDownloads,
    /// The principal's bandwidth quota is used up (429).
    QuotaExceeded,
    /// Internal bug or unexpected state (500).
    InternalError,
    /// The key-value or object store failed (500).
    StorageError,
    /// An internal hop (service chaining) failed (502).
    BadGateway,
    /// Server configuration has no API tokens, so every request is refused (503).
    ///
    /// 503 rather than 401: no client credential can succeed, the fix is on the server, and a
    /// 401 challenge would send clients and browsers into pointless credential retries.
    NoTokensConfigured,
    /// The download URL is malformed or not http(s) (400).
    InvalidUrl,
    /// The download target is blocked by domain or address policy (403).
    DomainBlocked,
    /// Remote downloads are switched off by the operator (403).
    DownloadForbidden,
    /// The remote answered 404 or 410 (502: our upstream failed, not our resource).
    RemoteFileNotFound,
    /// Connect, TLS, reset or other remote failures (502).
    NetworkError,
    /// The whole transfer exceeded its deadline (504).
    DownloadTimeout,
    /// Content did not match the SHA-256 the client asked to verify; nothing was kept (422).
    ChecksumMismatch,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::InvalidPath,
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::Gone,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::FileTooLarge,
        ErrorCode::ResponseTooLarge,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::TooManyDownloads,
        ErrorCode::QuotaExceeded,
        ErrorCode::InternalError,
        ErrorCode::StorageError,
        ErrorCode::BadGateway,
        ErrorCode::NoTokensConfigured,
        ErrorCode::InvalidUrl,
        ErrorCode::DomainBlocked,
        ErrorCode::DownloadForbidden,
        ErrorCode::RemoteFileNotFound,
        ErrorCode::NetworkError,
        ErrorCode::DownloadTimeout,
        ErrorCode::ChecksumMismatch,
    ];

    /// The wire string, e.g. `"INVALID_PATH"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPath => "INVALID_PATH",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Gone => "GONE",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::FileTooLarge => "FILE_TOO_LARGE",
            ErrorCode::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ErrorCode::RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
            ErrorCode::TooManyDownloads => "TOO_MANY_DOWNLOADS",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::BadGateway => "BAD_GATEWAY",
            ErrorCode::NoTokensConfigured => "NO_TOKENS_CONFIGURED",
            ErrorCode::InvalidUrl => "INVALID_URL",
            ErrorCode::DomainBlocked => "DOMAIN_BLOCKED",
            ErrorCode::DownloadForbidden => "DOWNLOAD_FORBIDDEN",
            ErrorCode::RemoteFileNotFound => "REMOTE_FILE_NOT_FOUND",
            ErrorCode::NetworkError => "NETWORK_ERROR",
            ErrorCode::DownloadTimeout => "DOWNLOAD_TIMEOUT",
            ErrorCode::ChecksumMismatch => "CHECKSUM_MISMATCH",
        }
    }

    /// Parses a wire string back into a code (e.g. from a stored download record).
    pub fn from_wire(wire: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == wire)
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidPath | ErrorCode::InvalidRequest | ErrorCode::InvalidUrl => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::DomainBlocked | ErrorCode::DownloadForbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge | ErrorCode::FileTooLarge | ErrorCode::ResponseTooLarge => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::TooManyDownloads | ErrorCode::QuotaExceeded => 429,
            ErrorCode::InternalError | ErrorCode::StorageError => 500,
            ErrorCode::BadGateway | ErrorCode::RemoteFileNotFound | ErrorCode::NetworkError => 502,
            ErrorCode::NoTokensConfigured => 503,
            ErrorCode::DownloadTimeout => 504,
            ErrorCode::ChecksumMismatch => 422,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error ready to be sent: code, human message and the extra headers its status needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The machine-readable code; decides the status.
    pub code: ErrorCode,
    /// A human-readable explanation. Must never contain secrets (tokens, hashes).
    pub message: String,
    extra_headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    success: bool,
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a message and no extra headers.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), extra_headers: Vec::new() }
    }

    /// `400 INVALID_REQUEST`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// `404 NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// `409 CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Conflict, message)
    }

    /// `500 INTERNAL_ERROR`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InternalError, message)
    }

    /// `500 STORAGE_ERROR`.
    pub fn storage(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::StorageError, message)
    }

    /// `401 UNAUTHORIZED` with a Bearer challenge. When a token was presented but is wrong, the
    /// challenge carries `error="invalid_token"` (RFC 6750 §3.1) so clients know to replace it.
    pub fn unauthorized(message: impl Into<String>, token_presented: bool) -> Self {
        let challenge = if token_presented {
            format!("Bearer realm=\"{AUTH_REALM}\", error=\"invalid_token\"")
        } else {
            format!("Bearer realm=\"{AUTH_REALM}\"")
        };
        ApiError::new(ErrorCode::Unauthorized, message).with_header("www-authenticate", challenge)
    }

    /// `405 METHOD_NOT_ALLOWED` with the `Allow` header listing `allowed` (e.g. `"GET, HEAD"`).
    pub fn method_not_allowed(allowed: &str) -> Self {
        ApiError::new(ErrorCode::MethodNotAllowed, format!("method not allowed here; allowed: {allowed}"))
            .with_header("allow", allowed)
    }

    /// `416 RANGE_NOT_SATISFIABLE` with `Content-Range: bytes */size` (RFC 9110 §15.5.17).
    pub fn range_not_satisfiable(size: u64) -> Self {
        ApiError::new(ErrorCode::RangeNotSatisfiable, format!("the requested range is outside the {size}-byte content"))
            .with_header("content-range", format!("bytes */{size}"))
    }

    /// The same error with `suffix` appended to its message (say, how many attempts it took).
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        self
    }

    /// Adds a response header (lower-case name).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Headers to send besides `content-type: application/json` (lower-case names).
    pub fn extra_headers(&self) -> &[(&'static str, String)] {
        &self.extra_headers
    }

    /// The body: exactly `{"success":false,"error":"CODE","message":"…"}`.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let envelope = Envelope { success: false, error: self.code.as_str(), message: &self.message };
        // Serialising a struct of strings cannot fail; fall back rather than panic anyway.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            format!("{{\"success\":false,\"error\":\"{}\",\"message\":\"\"}}", self.code.as_str()).into_bytes()
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde_and_round_trip() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
            assert!((400..=599).contains(&code.status()), "{code}");
        }
        assert_eq!(ErrorCode::from_wire("invalid_path"), None);
    }

    #[test]
    fn spec_statuses() {
        assert_eq!(ErrorCode::InvalidPath.status(), 400);
        assert_eq!(ErrorCode::DownloadForbidden.status(), 403);
        assert_eq!(ErrorCode::FileTooLarge.status(), 413);
        assert_eq!(ErrorCode::TooManyDownloads.status(), 429);
        assert_eq!(ErrorCode::QuotaExceeded.status(), 429);
        assert_eq!(ErrorCode::DownloadTimeout.status(), 504);
        assert_eq!(ErrorCode::Gone.status(), 410);
        assert_eq!(ErrorCode::FileTooLarge.as_str(), "FILE_TOO_LARGE");
        assert_eq!(ErrorCode::RemoteFileNotFound.as_str(), "REMOTE_FILE_NOT_FOUND");
    }

    #[test]
    fn envelope_is_exact() {
        let err = ApiError::new(ErrorCode::NotFound, "no such file: \"a\"\n");
        assert_eq!(
            String::from_utf8(err.to_json_bytes()).unwrap(),
            r#"{"success":false,"error":"NOT_FOUND","message":"no such file: \"a\"\n"}"#
        );
        assert!(err.extra_headers().is_empty());
    }

    #[test]
    fn unauthorized_challenges() {
        let missing = ApiError::unauthorized("missing token", false);
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.extra_headers(), &[("www-authenticate", "Bearer realm=\"downlink\"".to_owned())]);
        let wrong = ApiError::unauthorized("invalid token", true);
        assert_eq!(wrong.extra_headers()[0].1, "Bearer realm=\"downlink\", error=\"invalid_token\"");
    }

    #[test]
    fn range_and_method_headers() {
        let range = ApiError::range_not_satisfiable(1000);
        assert_eq!(range.status(), 416);
        assert_eq!(range.extra_headers(), &[("content-range", "bytes */1000".to_owned())]);
        let method = ApiError::method_not_allowed("GET, HEAD");
        assert_eq!(method.status(), 405);
        assert_eq!(method.extra_headers(), &[("allow", "GET, HEAD".to_owned())]);
    }
}

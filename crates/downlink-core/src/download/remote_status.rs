//! What the remote's answer (or the failure to get one) means for the download.
//!
//! Statuses: 2xx is success; 404 and 410 are `REMOTE_FILE_NOT_FOUND`; every other status left
//! after redirects are followed is `NETWORK_ERROR` naming it. Outbound failures arrive as
//! [`OutboundFailure`]s (mapped from `wasi:http` `error-code`s by `downlink-spin`): timeouts
//! are `DOWNLOAD_TIMEOUT`, refusals by the host's network policy `DOMAIN_BLOCKED`, everything
//! else `NETWORK_ERROR` with a message saying which failure it was.

use crate::error::{ApiError, ErrorCode};

/// Checks the final (non-redirect) response status.
pub fn classify_response_status(status: u16) -> Result<(), ApiError> {
    match status {
        200..=299 => Ok(()),
        404 | 410 => Err(ApiError::new(
            ErrorCode::RemoteFileNotFound,
            format!("the remote server answered {status} {}", reason_phrase(status)),
        )),
        _ => Err(ApiError::new(
            ErrorCode::NetworkError,
            format!("the remote server answered {status} {}", reason_phrase(status)).trim_end().to_owned(),
        )),
    }
}

/// A short reason phrase for common statuses, for messages only.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        300 => "Multiple Choices",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Why an outbound request failed, one variant per kind of `wasi:http/types` `error-code`.
/// `downlink-spin` maps every code to one of these exhaustively (payloads are dropped: they
/// may hold details not meant for users), so this crate needs no WASI dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundFailure {
    /// `DNS-timeout`.
    DnsTimeout,
    /// `connection-timeout`.
    ConnectTimeout,
    /// `connection-read-timeout`, `HTTP-response-timeout`.
    ReadTimeout,
    /// `connection-write-timeout`.
    WriteTimeout,
    /// `DNS-error`, `destination-not-found`.
    DnsFailed,
    /// `destination-unavailable`, `destination-IP-unroutable`.
    Unreachable,
    /// `destination-IP-prohibited`, `HTTP-request-denied`: the host's network policy.
    PolicyDenied,
    /// `connection-refused`.
    Refused,
    /// `connection-terminated`.
    Terminated,
    /// `connection-limit-reached`.
    ConnectionLimit,
    /// `TLS-certificate-error`.
    TlsCertificate,
    /// `TLS-protocol-error`.
    TlsProtocol,
    /// `TLS-alert-received`.
    TlsAlert,
    /// `HTTP-response-incomplete`.
    ResponseIncomplete,
    /// `HTTP-response-header-section-size`, `HTTP-response-header-size`.
    HeadersTooLarge,
    /// `HTTP-response-body-size`.
    BodyTooLarge,
    /// `HTTP-response-trailer-section-size`, `HTTP-response-trailer-size`.
    TrailersTooLarge,
    /// `HTTP-response-transfer-coding`, `HTTP-response-content-coding`.
    UnsupportedEncoding,
    /// `HTTP-protocol-error`, `HTTP-upgrade-failed`.
    Protocol,
    /// `loop-detected`.
    LoopDetected,
    /// `HTTP-request-URI-invalid`, `HTTP-request-URI-too-long`.
    UriRejected,
    /// Any other code (request-side limits, configuration, internal), by its WIT name.
    Other(&'static str),
}

impl From<OutboundFailure> for ApiError {
    /// Timeouts are `DOWNLOAD_TIMEOUT`, refusals by the host's network policy
    /// `DOMAIN_BLOCKED`, a refused URL `INVALID_URL`, everything else `NETWORK_ERROR`.
    fn from(failure: OutboundFailure) -> ApiError {
        use OutboundFailure as F;
        let (code, message) = match failure {
            F::DnsTimeout => (ErrorCode::DownloadTimeout, "DNS lookup timed out"),
            F::ConnectTimeout => (ErrorCode::DownloadTimeout, "connecting to the remote server timed out"),
            F::ReadTimeout => (ErrorCode::DownloadTimeout, "the remote server stopped sending data (read timed out)"),
            F::WriteTimeout => (ErrorCode::DownloadTimeout, "sending the request timed out"),
            F::DnsFailed => (ErrorCode::NetworkError, "DNS lookup failed"),
            F::Unreachable => (ErrorCode::NetworkError, "the remote host is unreachable"),
            F::PolicyDenied => (ErrorCode::DomainBlocked, "blocked by the host's network policy"),
            F::Refused => (ErrorCode::NetworkError, "connection refused"),
            F::Terminated => (ErrorCode::NetworkError, "the connection was closed or reset by the remote server"),
            F::ConnectionLimit => (ErrorCode::NetworkError, "too many outbound connections"),
            F::TlsCertificate => (ErrorCode::NetworkError, "TLS error: the server's certificate was not accepted"),
            F::TlsProtocol => (ErrorCode::NetworkError, "TLS error: the handshake failed"),
            F::TlsAlert => (ErrorCode::NetworkError, "TLS error: the server sent an alert"),
            F::ResponseIncomplete => {
                (ErrorCode::NetworkError, "the response ended early (the connection was reset mid-body)")
            }
            F::HeadersTooLarge => (ErrorCode::NetworkError, "the response headers are too large"),
            F::BodyTooLarge => (ErrorCode::NetworkError, "the response body exceeds the host's limit"),
            F::TrailersTooLarge => (ErrorCode::NetworkError, "the response trailers are too large"),
            F::UnsupportedEncoding => (ErrorCode::NetworkError, "the response uses an unsupported encoding"),
            F::Protocol => (ErrorCode::NetworkError, "HTTP protocol error"),
            F::LoopDetected => (ErrorCode::NetworkError, "request loop detected"),
            F::UriRejected => (ErrorCode::InvalidUrl, "the host refused the URL as invalid or too long"),
            F::Other(name) => {
                return ApiError::new(ErrorCode::NetworkError, format!("outbound HTTP request failed ({name})"))
            }
        };
        ApiError::new(code, message)
    }
}

/// Parses a `Content-Length` value: decimal digits only (no sign, spaces or lists), else
/// `None` (treated as an unknown size).
pub fn parse_content_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `413 FILE_TOO_LARGE` as soon as the size cap is known to be exceeded: up front from
/// `Content-Length`, or once more than `max_bytes` bytes have arrived.
pub fn check_size_cap(max_bytes: Option<u64>, content_length: Option<u64>, received: u64) -> Result<(), ApiError> {
    let Some(max) = max_bytes else { return Ok(()) };
    let size = content_length.unwrap_or(0).max(received);
    if size > max {
        return Err(ApiError::new(ErrorCode::FileTooLarge, format!("the file is larger than the {max}-byte limit")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for ok in [200, 201, 203, 204, 206, 299] {
            assert!(classify_response_status(ok).is_ok(), "{ok}");
        }
        for (status, code) in [
            (404, ErrorCode::RemoteFileNotFound),
            (410, ErrorCode::RemoteFileNotFound),
            (400, ErrorCode::NetworkError),
            (401, ErrorCode::NetworkError),
            (403, ErrorCode::NetworkError),
            (416, ErrorCode::NetworkError),
            (429, ErrorCode::NetworkError),
            (500, ErrorCode::NetworkError),
            (502, ErrorCode::NetworkError),
            (503, ErrorCode::NetworkError),
            (599, ErrorCode::NetworkError),
            (100, ErrorCode::NetworkError),
            (300, ErrorCode::NetworkError),
            (302, ErrorCode::NetworkError),
            (304, ErrorCode::NetworkError),
            (0, ErrorCode::NetworkError),
        ] {
            let err = classify_response_status(status).unwrap_err();
            assert_eq!(err.code, code, "{status}");
            assert!(err.message.contains(&status.to_string()), "{status}: {}", err.message);
        }
        assert_eq!(classify_response_status(404).unwrap_err().message, "the remote server answered 404 Not Found");
        assert_eq!(classify_response_status(418).unwrap_err().message, "the remote server answered 418");
        assert_eq!(classify_response_status(503).unwrap_err().status(), 502);
    }

    #[test]
    fn outbound_failures_map_to_download_errors() {
        use OutboundFailure as F;
        let cases = [
            (F::Refused, ErrorCode::NetworkError, "connection refused"),
            (F::ConnectTimeout, ErrorCode::DownloadTimeout, "timed out"),
            (F::ReadTimeout, ErrorCode::DownloadTimeout, "timed out"),
            (F::WriteTimeout, ErrorCode::DownloadTimeout, "timed out"),
            (F::DnsTimeout, ErrorCode::DownloadTimeout, "DNS"),
            (F::TlsCertificate, ErrorCode::NetworkError, "TLS error"),
            (F::TlsProtocol, ErrorCode::NetworkError, "TLS error"),
            (F::TlsAlert, ErrorCode::NetworkError, "TLS error"),
            (F::DnsFailed, ErrorCode::NetworkError, "DNS lookup failed"),
            (F::Unreachable, ErrorCode::NetworkError, "unreachable"),
            (F::PolicyDenied, ErrorCode::DomainBlocked, "network policy"),
            (F::Terminated, ErrorCode::NetworkError, "reset"),
            (F::ResponseIncomplete, ErrorCode::NetworkError, "mid-body"),
            (F::Protocol, ErrorCode::NetworkError, "protocol"),
            (F::BodyTooLarge, ErrorCode::NetworkError, "limit"),
            (F::UriRejected, ErrorCode::InvalidUrl, "URL"),
            (F::LoopDetected, ErrorCode::NetworkError, "loop"),
            (F::Other("internal-error"), ErrorCode::NetworkError, "(internal-error)"),
        ];
        for (failure, code, fragment) in cases {
            let err = ApiError::from(failure);
            assert_eq!(err.code, code, "{failure:?}");
            assert!(err.message.contains(fragment), "{failure:?}: {}", err.message);
        }
    }

    #[test]
    fn content_length() {
        assert_eq!(parse_content_length("0"), Some(0));
        assert_eq!(parse_content_length("104857600"), Some(104_857_600));
        for bad in ["", "-1", "+1", " 1", "1 ", "1,1", "0x10", "18446744073709551616", "1e3"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn size_cap() {
        assert!(check_size_cap(None, Some(u64::MAX), u64::MAX).is_ok());
        assert!(check_size_cap(Some(100), Some(100), 100).is_ok());
        assert!(check_size_cap(Some(100), None, 100).is_ok());
        let early = check_size_cap(Some(100), Some(101), 0).unwrap_err();
        assert_eq!((early.code, early.status()), (ErrorCode::FileTooLarge, 413));
        assert_eq!(check_size_cap(Some(100), None, 101).unwrap_err().code, ErrorCode::FileTooLarge);
        assert_eq!(check_size_cap(Some(100), Some(50), 101).unwrap_err().code, ErrorCode::FileTooLarge);
    }
}

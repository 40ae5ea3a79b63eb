//! What the remote's answer (or the failure to get one) means for the download.
//!
//! Statuses: 2xx is success; 404 and 410 are `REMOTE_FILE_NOT_FOUND`; every other status left
//! after redirects are followed is `NETWORK_ERROR` naming it. Outbound failures arrive as
//! `wasi:http` `error-code` variants, which [`classify_outbound_error`] maps by name so this
//! crate needs no WASI dependency: timeouts are `DOWNLOAD_TIMEOUT`, refusals by the host's
//! network policy `DOMAIN_BLOCKED`, everything else `NETWORK_ERROR` with a message saying
//! which failure it was.

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

/// Maps a `wasi:http/types` `error-code` to the download's error, by variant name.
///
/// Accepts the Rust binding's name or its `Debug` output (`ConnectionRefused`,
/// `DnsError(DnsErrorPayload { … })`) and the WIT name (`connection-refused`, `DNS-error`);
/// case, `-` and `_` are ignored and any payload after the name is dropped (it may hold
/// details not meant for users). Unknown names are `NETWORK_ERROR` naming the variant.
pub fn classify_outbound_error(name: &str) -> ApiError {
    // wit-bindgen's `Debug` names variants with their type: `ErrorCode::ConnectionRefused`.
    let name = name.trim();
    let name = match name.split_once("::") {
        Some((ty, rest)) if ty.chars().all(|c| c.is_ascii_alphanumeric()) => rest,
        _ => name,
    };
    let variant: String = name
        .trim()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let (code, message) = match variant.as_str() {
        "dnstimeout" => (ErrorCode::DownloadTimeout, "DNS lookup timed out"),
        "connectiontimeout" => (ErrorCode::DownloadTimeout, "connecting to the remote server timed out"),
        "connectionreadtimeout" | "httpresponsetimeout" => {
            (ErrorCode::DownloadTimeout, "the remote server stopped sending data (read timed out)")
        }
        "connectionwritetimeout" => (ErrorCode::DownloadTimeout, "sending the request timed out"),
        "dnserror" | "destinationnotfound" => (ErrorCode::NetworkError, "DNS lookup failed"),
        "destinationunavailable" | "destinationipunroutable" => {
            (ErrorCode::NetworkError, "the remote host is unreachable")
        }
        "destinationipprohibited" | "httprequestdenied" => {
            (ErrorCode::DomainBlocked, "blocked by the host's network policy")
        }
        "connectionrefused" => (ErrorCode::NetworkError, "connection refused"),
        "connectionterminated" => (ErrorCode::NetworkError, "the connection was closed or reset by the remote server"),
        "connectionlimitreached" => (ErrorCode::NetworkError, "too many outbound connections"),
        "tlscertificateerror" => (ErrorCode::NetworkError, "TLS error: the server's certificate was not accepted"),
        "tlsprotocolerror" => (ErrorCode::NetworkError, "TLS error: the handshake failed"),
        "tlsalertreceived" => (ErrorCode::NetworkError, "TLS error: the server sent an alert"),
        "httpresponseincomplete" => {
            (ErrorCode::NetworkError, "the response ended early (the connection was reset mid-body)")
        }
        "httpresponseheadersectionsize" | "httpresponseheadersize" => {
            (ErrorCode::NetworkError, "the response headers are too large")
        }
        "httpresponsebodysize" => (ErrorCode::NetworkError, "the response body exceeds the host's limit"),
        "httpresponsetrailersectionsize" | "httpresponsetrailersize" => {
            (ErrorCode::NetworkError, "the response trailers are too large")
        }
        "httpresponsetransfercoding" | "httpresponsecontentcoding" => {
            (ErrorCode::NetworkError, "the response uses an unsupported encoding")
        }
        "httpprotocolerror" | "httpupgradefailed" => (ErrorCode::NetworkError, "HTTP protocol error"),
        "loopdetected" => (ErrorCode::NetworkError, "request loop detected"),
        "httprequesturiinvalid" | "httprequesturitoolong" => {
            (ErrorCode::InvalidUrl, "the host refused the URL as invalid or too long")
        }
        _ => {
            let shown: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(48)
                .collect();
            return ApiError::new(ErrorCode::NetworkError, format!("outbound HTTP request failed ({shown})"));
        }
    };
    ApiError::new(code, message)
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

/// At the end of the body: a `Content-Length` that was not met means the transfer broke off
/// (or the server lied), which is a `NETWORK_ERROR`, never a truncated "completed" file.
pub fn check_body_complete(content_length: Option<u64>, received: u64) -> Result<(), ApiError> {
    match content_length {
        Some(expected) if received < expected => Err(ApiError::new(
            ErrorCode::NetworkError,
            format!("the connection closed after {received} of {expected} bytes"),
        )),
        Some(expected) if received > expected => Err(ApiError::new(
            ErrorCode::NetworkError,
            format!("the server sent {received} bytes but announced {expected}"),
        )),
        _ => Ok(()),
    }
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
    fn outbound_errors_by_name() {
        let cases = [
            ("ConnectionRefused", ErrorCode::NetworkError, "connection refused"),
            ("connection-refused", ErrorCode::NetworkError, "connection refused"),
            ("ConnectionTimeout", ErrorCode::DownloadTimeout, "timed out"),
            ("ConnectionReadTimeout", ErrorCode::DownloadTimeout, "timed out"),
            ("connection-write-timeout", ErrorCode::DownloadTimeout, "timed out"),
            ("HttpResponseTimeout", ErrorCode::DownloadTimeout, "timed out"),
            ("DnsTimeout", ErrorCode::DownloadTimeout, "DNS"),
            ("TlsCertificateError", ErrorCode::NetworkError, "TLS error"),
            ("TLS-protocol-error", ErrorCode::NetworkError, "TLS error"),
            (
                "TlsAlertReceived(TlsAlertReceivedPayload { alert_id: Some(40), alert_message: None })",
                ErrorCode::NetworkError,
                "TLS error",
            ),
            (
                "DnsError(DnsErrorPayload { rcode: Some(\"NXDOMAIN\"), info_code: None })",
                ErrorCode::NetworkError,
                "DNS lookup failed",
            ),
            ("DNS-error", ErrorCode::NetworkError, "DNS lookup failed"),
            ("DestinationNotFound", ErrorCode::NetworkError, "DNS lookup failed"),
            ("DestinationUnavailable", ErrorCode::NetworkError, "unreachable"),
            ("DestinationIpUnroutable", ErrorCode::NetworkError, "unreachable"),
            ("HttpRequestDenied", ErrorCode::DomainBlocked, "network policy"),
            ("DestinationIpProhibited", ErrorCode::DomainBlocked, "network policy"),
            ("destination-IP-prohibited", ErrorCode::DomainBlocked, "network policy"),
            ("ConnectionTerminated", ErrorCode::NetworkError, "reset"),
            ("HttpResponseIncomplete", ErrorCode::NetworkError, "mid-body"),
            ("HttpProtocolError", ErrorCode::NetworkError, "protocol"),
            ("HttpResponseBodySize(Some(10))", ErrorCode::NetworkError, "limit"),
            ("HttpRequestUriInvalid", ErrorCode::InvalidUrl, "URL"),
            ("LoopDetected", ErrorCode::NetworkError, "loop"),
            ("  ConnectionRefused  ", ErrorCode::NetworkError, "connection refused"),
        ];
        for (name, code, fragment) in cases {
            let err = classify_outbound_error(name);
            assert_eq!(err.code, code, "{name}");
            assert!(err.message.contains(fragment), "{name}: {}", err.message);
        }
    }

    #[test]
    fn unknown_outbound_errors_do_not_leak_payloads() {
        let err = classify_outbound_error("InternalError(Some(\"secret token abc\"))");
        assert_eq!(err.code, ErrorCode::NetworkError);
        assert_eq!(err.message, "outbound HTTP request failed (InternalError)");
        assert!(!classify_outbound_error("ConfigurationError").message.is_empty());
        assert_eq!(classify_outbound_error("").code, ErrorCode::NetworkError);
        assert!(classify_outbound_error(&"x".repeat(1000)).message.len() < 100);
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

    #[test]
    fn body_completeness() {
        assert!(check_body_complete(None, 0).is_ok());
        assert!(check_body_complete(None, 12345).is_ok());
        assert!(check_body_complete(Some(10), 10).is_ok());
        let short = check_body_complete(Some(10), 4).unwrap_err();
        assert_eq!(short.code, ErrorCode::NetworkError);
        assert!(short.message.contains("4 of 10"));
        assert_eq!(check_body_complete(Some(10), 11).unwrap_err().code, ErrorCode::NetworkError);
    }

    #[test]
    fn wit_bindgen_debug_names_are_understood() {
        assert_eq!(classify_outbound_error("ErrorCode::ConnectionRefused").code, ErrorCode::NetworkError);
        assert_eq!(classify_outbound_error("ErrorCode::ConnectionReadTimeout").code, ErrorCode::DownloadTimeout);
        assert_eq!(classify_outbound_error("ErrorCode::HttpRequestDenied").code, ErrorCode::DomainBlocked);
        let dns =
            classify_outbound_error(r#"ErrorCode::DnsError(DnsErrorPayload { rcode: Some("x"), info_code: None })"#);
        assert_eq!(dns.message, "DNS lookup failed");
    }
}

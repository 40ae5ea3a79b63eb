//! Retrying a download after a transient fault, and resuming it where it broke off.
//!
//! An attempt at the remote file ends in a [`RemoteFault`] when it does not deliver the
//! whole body. [`RetryPolicy::after_fault`] decides: transient faults (refused or reset
//! connections, `5xx`, `408`, `429`, a body cut short) are retried after a jittered,
//! doubling wait — at least the server's `Retry-After` — bounded by the attempts setting
//! and by the download's deadline; permanent ones (`404`/`410`, other `4xx`, TLS or policy
//! refusals) end the download at once. The final error says what happened and after how
//! many attempts.
//!
//! A retry after some bytes were stored asks for the rest ([`resume_headers`]:
//! `Range: bytes=N-` with `If-Range` naming the version already stored), so a changed file
//! comes back whole (`200`) and is written from the start: a spliced file is never
//! published. Without a strong `ETag` or a `Last-Modified` date there is nothing to make a
//! range safe with, so the download starts over. [`classify_answer`] reads the answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::download::remote_status::{classify_response_status, OutboundFailure};
use crate::error::{ApiError, ErrorCode};
use crate::http::parse_http_date;

/// Attempts per download when `download_max_attempts` is not set (the first and 4 retries).
pub const DEFAULT_MAX_ATTEMPTS: u64 = 5;
/// Waits between attempts: about 1 s, 2 s, 4 s … up to 30 s, jittered.
pub const RETRY_BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(30) };

/// Why one attempt at the remote file ended without the whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteFault {
    /// The final answer was not a success.
    Status {
        /// Its status.
        status: u16,
        /// Its `Retry-After`, in seconds from now.
        retry_after_secs: Option<u64>,
    },
    /// The outbound request failed (`wasi:http` error code, classified).
    Outbound(OutboundFailure),
    /// The body broke off (a reset, a protocol error).
    BodyBroken,
    /// The body ended before its announced size.
    BodyShort {
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The body went past its announced size.
    BodyLong {
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The answer to a range request cannot continue the file (`416`, or a range that does
    /// not start where asked): the next attempt starts over.
    UnusableRange {
        /// The answer's status.
        status: u16,
    },
}

impl RemoteFault {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        use OutboundFailure as F;
        match self {
            RemoteFault::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            RemoteFault::Outbound(failure) => matches!(
                failure,
                F::DnsTimeout
                    | F::ConnectTimeout
                    | F::ReadTimeout
                    | F::WriteTimeout
                    | F::Unreachable
                    | F::Refused
                    | F::Terminated
                    | F::ConnectionLimit
                    | F::ResponseIncomplete
                    | F::Protocol
            ),
            RemoteFault::BodyBroken | RemoteFault::BodyShort { .. } | RemoteFault::UnusableRange { .. } => true,
            // A server that sends more than it announced is broken, not unlucky.
            RemoteFault::BodyLong { .. } => false,
        }
    }

    /// The error this fault ends a download with.
    pub fn error(&self) -> ApiError {
        match self {
            RemoteFault::Status { status, .. } => {
                classify_response_status(*status).err().unwrap_or_else(|| ApiError::internal("a success is no fault"))
            }
            RemoteFault::Outbound(failure) => (*failure).into(),
            RemoteFault::BodyBroken => ApiError::new(ErrorCode::NetworkError, "the connection broke off mid-body"),
            RemoteFault::BodyShort { expected, received } => ApiError::new(
                ErrorCode::NetworkError,
                format!("the connection closed after {received} of {expected} bytes"),
            ),
            RemoteFault::BodyLong { expected, received } => ApiError::new(
                ErrorCode::NetworkError,
                format!("the server sent {received} bytes but announced {expected}"),
            ),
            RemoteFault::UnusableRange { status } => ApiError::new(
                ErrorCode::NetworkError,
                format!("the server answered a request for the rest of the file with an unusable {status}"),
            ),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteFault::Status { retry_after_secs: Some(secs), .. } => Some(Duration::from_secs(*secs)),
            _ => None,
        }
    }
}

/// What to do after an attempt failed.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterFault {
    /// Wait this long, then try again.
    Retry(Duration),
    /// End the download with this error.
    GiveUp(ApiError),
}

/// How often and how patiently a download is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts in all (≥ 1; 1 = never retry).
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The default schedule with `max_attempts` attempts.
    pub fn with_attempts(max_attempts: u32) -> RetryPolicy {
        RetryPolicy { max_attempts: max_attempts.max(1), backoff: RETRY_BACKOFF }
    }

    /// Decides after attempt number `attempt` (1 for the first) failed with `fault`; `jitter`
    /// in `[0, 1)`; `remaining` is the time left before the download's deadline (`None`:
    /// no deadline). The wait is at least the fault's `Retry-After`.
    pub fn after_fault(
        &self,
        attempt: u32,
        fault: &RemoteFault,
        jitter: f64,
        remaining: Option<Duration>,
    ) -> AfterFault {
        let error = fault.error();
        let attempts = if attempt == 1 { String::new() } else { format!(" after {attempt} attempts") };
        if !fault.is_transient() {
            return AfterFault::GiveUp(error.with_suffix(&attempts));
        }
        if attempt >= self.max_attempts {
            return AfterFault::GiveUp(
                error.with_suffix(&format!(" (gave up after {attempt} attempts; setting download_max_attempts)")),
            );
        }
        let wait = self.backoff.delay(attempt, jitter).max(fault.retry_after().unwrap_or_default());
        if remaining.is_some_and(|left| wait >= left) {
            return AfterFault::GiveUp(error.with_suffix(&format!(
                " (attempt {attempt}; the next retry, due in {} s, would pass the download's deadline)",
                wait.as_secs_f64().ceil()
            )));
        }
        AfterFault::Retry(wait)
    }
}

/// At the end of a body: an announced size that was not met means the transfer broke off
/// (or the server lied); a truncated file is never "completed".
pub fn check_body_end(expected: Option<u64>, received: u64) -> Result<(), RemoteFault> {
    match expected {
        Some(expected) if received < expected => Err(RemoteFault::BodyShort { expected, received }),
        Some(expected) if received > expected => Err(RemoteFault::BodyLong { expected, received }),
        _ => Ok(()),
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay seconds, or an HTTP date (`now` is the
/// current unix time). A date in the past means now; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: u64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    parse_http_date(value).map(|at| at.saturating_sub(now))
}

/// What identifies one version of the remote file (RFC 9110 §8.8), so its rest can be asked
/// for safely.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// A strong `ETag` (weak ones cannot be used with `If-Range`).
    pub etag: Option<String>,
    /// A `Last-Modified` date that parses.
    pub last_modified: Option<String>,
}

impl Validator {
    /// From a response's `ETag` and `Last-Modified`.
    pub fn from_headers(etag: Option<&str>, last_modified: Option<&str>) -> Validator {
        let etag = etag.map(str::trim).filter(|tag| tag.starts_with('"') && tag.len() >= 2 && tag.ends_with('"'));
        let last_modified = last_modified.map(str::trim).filter(|date| parse_http_date(date).is_some());
        Validator { etag: etag.map(str::to_owned), last_modified: last_modified.map(str::to_owned) }
    }

    /// The `If-Range` value: the strong ETag, else the date; `None` when there is neither.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }
}

/// Headers asking for the file from byte `offset` on, only if it is still the version
/// `validator` names; `None` when nothing makes that safe (start over instead).
pub fn resume_headers(offset: u64, validator: &Validator) -> Option<[(&'static str, String); 2]> {
    let if_range = validator.if_range()?;
    Some([("range", format!("bytes={offset}-")), ("if-range", if_range.to_owned())])
}

/// What a successful answer delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The whole file (a `2xx` other than `206`). Answering a resume request, it means the
    /// file changed or the server ignores ranges: whatever was stored must be discarded.
    Whole,
    /// The rest of the file from the offset asked for; `total`: its whole size, when given.
    Rest {
        /// The whole file's size from `Content-Range`.
        total: Option<u64>,
    },
}

/// Reads a final (non-redirect) answer. `resuming_from`: the offset a range was asked from.
pub fn classify_answer(
    status: u16,
    content_range: Option<&str>,
    retry_after: Option<&str>,
    resuming_from: Option<u64>,
    now: u64,
) -> Result<Answer, RemoteFault> {
    match (status, resuming_from) {
        (206, Some(offset)) => match content_range.and_then(parse_content_range) {
            Some((first, total)) if first == offset => Ok(Answer::Rest { total }),
            _ => Err(RemoteFault::UnusableRange { status }),
        },
        // A range nobody asked for, or no range at all for the one asked.
        (206, None) | (416, Some(_)) => Err(RemoteFault::UnusableRange { status }),
        (200..=299, _) => Ok(Answer::Whole),
        _ => Err(RemoteFault::Status { status, retry_after_secs: retry_after.and_then(|v| parse_retry_after(v, now)) }),
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) → `(FIRST, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    let (first, last) = (number(first)?, number(last)?);
    let total = if total == "*" { None } else { Some(number(total)?) };
    (first <= last && total.is_none_or(|total| last < total)).then_some((first, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, backoff: Backoff { first: Duration::from_secs(1), max: Duration::from_secs(8) } }
    }

    fn status(status: u16) -> RemoteFault {
        RemoteFault::Status { status, retry_after_secs: None }
    }

    #[test]
    fn transient_faults_are_retried_and_permanent_ones_end_at_once() {
        for fault in [
            status(500),
            status(502),
            status(503),
            status(504),
            status(429),
            status(408),
            RemoteFault::Outbound(OutboundFailure::Refused),
            RemoteFault::Outbound(OutboundFailure::Terminated),
            RemoteFault::Outbound(OutboundFailure::ResponseIncomplete),
            RemoteFault::BodyBroken,
            RemoteFault::BodyShort { expected: 10, received: 5 },
            RemoteFault::UnusableRange { status: 416 },
        ] {
            assert!(matches!(policy().after_fault(1, &fault, 0.0, None), AfterFault::Retry(_)), "{fault:?}");
        }
        for (fault, code) in [
            (status(404), ErrorCode::RemoteFileNotFound),
            (status(410), ErrorCode::RemoteFileNotFound),
            (status(403), ErrorCode::NetworkError),
            (status(400), ErrorCode::NetworkError),
            (status(501), ErrorCode::NetworkError),
            (RemoteFault::Outbound(OutboundFailure::TlsCertificate), ErrorCode::NetworkError),
            (RemoteFault::Outbound(OutboundFailure::PolicyDenied), ErrorCode::DomainBlocked),
            (RemoteFault::Outbound(OutboundFailure::DnsFailed), ErrorCode::NetworkError),
            (RemoteFault::BodyLong { expected: 5, received: 10 }, ErrorCode::NetworkError),
        ] {
            match policy().after_fault(1, &fault, 0.0, None) {
                AfterFault::GiveUp(error) => {
                    assert_eq!(error.code, code, "{fault:?}");
                    assert!(!error.message.contains("attempt"), "{}", error.message);
                }
                other => panic!("{fault:?} retried: {other:?}"),
            }
        }
    }

    #[test]
    fn waits_double_and_honour_retry_after_within_attempts_and_deadline() {
        let AfterFault::Retry(first) = policy().after_fault(1, &status(503), 0.0, None) else { panic!() };
        let AfterFault::Retry(second) = policy().after_fault(2, &status(503), 0.0, None) else { panic!() };
        assert_eq!((first, second), (Duration::from_millis(500), Duration::from_secs(1)));
        let busy = RemoteFault::Status { status: 503, retry_after_secs: Some(5) };
        assert_eq!(policy().after_fault(1, &busy, 0.0, None), AfterFault::Retry(Duration::from_secs(5)));

        let AfterFault::GiveUp(error) = policy().after_fault(3, &status(503), 0.0, None) else { panic!() };
        assert_eq!(error.code, ErrorCode::NetworkError);
        assert!(error.message.contains("503") && error.message.contains("after 3 attempts"), "{}", error.message);

        let AfterFault::GiveUp(error) = policy().after_fault(1, &busy, 0.0, Some(Duration::from_secs(4))) else {
            panic!()
        };
        assert!(error.message.contains("would pass the download's deadline"), "{}", error.message);
        let AfterFault::GiveUp(error) = policy().after_fault(2, &status(404), 0.0, None) else { panic!() };
        assert!(error.message.ends_with("after 2 attempts"), "{}", error.message);
    }

    #[test]
    fn a_body_must_end_at_its_announced_size() {
        assert_eq!(check_body_end(None, 12345), Ok(()));
        assert_eq!(check_body_end(Some(10), 10), Ok(()));
        let short = check_body_end(Some(10), 4).unwrap_err();
        assert!(short.is_transient() && short.error().message.contains("4 of 10"));
        let long = check_body_end(Some(10), 11).unwrap_err();
        assert!(!long.is_transient());
        assert_eq!(long.error().code, ErrorCode::NetworkError);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120", NOW), Some(120));
        assert_eq!(parse_retry_after(" 0 ", NOW), Some(0));
        let in_a_minute = crate::http::format_http_date(NOW + 60);
        assert_eq!(parse_retry_after(&in_a_minute, NOW), Some(60));
        assert_eq!(parse_retry_after(&crate::http::format_http_date(NOW - 60), NOW), Some(0));
        for junk in ["", "-1", "soon", "1.5"] {
            assert_eq!(parse_retry_after(junk, NOW), None, "{junk:?}");
        }
    }

    #[test]
    fn resuming_needs_a_strong_validator_and_names_it() {
        let date = crate::http::format_http_date(NOW);
        let strong = Validator::from_headers(Some("\"v1\""), Some(&date));
        assert_eq!(
            resume_headers(1000, &strong),
            Some([("range", "bytes=1000-".to_owned()), ("if-range", "\"v1\"".to_owned())])
        );
        let dated = Validator::from_headers(Some("W/\"v1\""), Some(&date));
        assert_eq!(dated.etag, None, "weak ETags cannot be used with If-Range");
        assert_eq!(resume_headers(5, &dated).unwrap()[1].1, date);
        assert_eq!(resume_headers(5, &Validator::from_headers(None, Some("yesterday"))), None);
        assert_eq!(resume_headers(5, &Validator::default()), None);
    }

    #[test]
    fn answers_to_resume_requests() {
        let answer = |status, range: Option<&str>, from| classify_answer(status, range, None, from, NOW);
        assert_eq!(answer(200, None, None), Ok(Answer::Whole));
        assert_eq!(answer(200, None, Some(100)), Ok(Answer::Whole), "changed file or no range support");
        assert_eq!(answer(206, Some("bytes 100-199/200"), Some(100)), Ok(Answer::Rest { total: Some(200) }));
        assert_eq!(answer(206, Some("bytes 100-199/*"), Some(100)), Ok(Answer::Rest { total: None }));
        for (status, range, from) in [
            (206, Some("bytes 0-199/200"), Some(100)),
            (206, Some("bytes 100-99/200"), Some(100)),
            (206, Some("bytes 100-200/200"), Some(100)),
            (206, Some("items 100-199/200"), Some(100)),
            (206, None, Some(100)),
            (206, Some("bytes 0-9/10"), None),
            (416, None, Some(100)),
        ] {
            assert_eq!(answer(status, range, from), Err(RemoteFault::UnusableRange { status }), "{range:?}");
        }
        assert_eq!(
            classify_answer(503, None, Some("7"), None, NOW),
            Err(RemoteFault::Status { status: 503, retry_after_secs: Some(7) })
        );
        assert_eq!(answer(416, None, None), Err(status(416)));
    }
}

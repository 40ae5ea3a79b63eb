//! Outbound HTTP GET with deadlines that hold even against a server that trickles one byte a
//! second: every wait is a `wasi:io/poll` on the response (or body) together with a timer, so
//! the caller regains control at least every `tick` to check its deadline and cancel flag.

use downlink_core::download::remote_status::OutboundFailure;
use spin_sdk::http::{Fields, Method, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, FutureIncomingResponse, IncomingBody, IncomingResponse, RequestOptions,
};
use std::time::Duration;

use crate::http::BodyWriter;
use wasi::clocks::monotonic_clock;
use wasi::io::poll;
use wasi::io::streams::{InputStream, StreamError};

/// Nanoseconds on the monotonic clock.
pub type Instant = u64;

/// The monotonic clock now.
pub fn now() -> Instant {
    monotonic_clock::now()
}

/// `now() + duration`.
pub fn after(duration: Duration) -> Instant {
    now().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
}

/// What a `wasi:http` error code means for a download: every variant, named (their payloads
/// may hold details not meant for users, so they are dropped).
pub fn outbound_failure(code: &ErrorCode) -> OutboundFailure {
    use OutboundFailure as F;
    match code {
        ErrorCode::DnsTimeout => F::DnsTimeout,
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => F::DnsFailed,
        ErrorCode::DestinationUnavailable | ErrorCode::DestinationIpUnroutable => F::Unreachable,
        ErrorCode::DestinationIpProhibited | ErrorCode::HttpRequestDenied => F::PolicyDenied,
        ErrorCode::ConnectionRefused => F::Refused,
        ErrorCode::ConnectionTerminated => F::Terminated,
        ErrorCode::ConnectionTimeout => F::ConnectTimeout,
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => F::ReadTimeout,
        ErrorCode::ConnectionWriteTimeout => F::WriteTimeout,
        ErrorCode::ConnectionLimitReached => F::ConnectionLimit,
        ErrorCode::TlsProtocolError => F::TlsProtocol,
        ErrorCode::TlsCertificateError => F::TlsCertificate,
        ErrorCode::TlsAlertReceived(_) => F::TlsAlert,
        ErrorCode::HttpRequestLengthRequired => F::Other("HTTP-request-length-required"),
        ErrorCode::HttpRequestBodySize(_) => F::Other("HTTP-request-body-size"),
        ErrorCode::HttpRequestMethodInvalid => F::Other("HTTP-request-method-invalid"),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestUriTooLong => F::UriRejected,
        ErrorCode::HttpRequestHeaderSectionSize(_) | ErrorCode::HttpRequestHeaderSize(_) => {
            F::Other("HTTP-request-header-size")
        }
        ErrorCode::HttpRequestTrailerSectionSize(_) | ErrorCode::HttpRequestTrailerSize(_) => {
            F::Other("HTTP-request-trailer-size")
        }
        ErrorCode::HttpResponseIncomplete => F::ResponseIncomplete,
        ErrorCode::HttpResponseHeaderSectionSize(_) | ErrorCode::HttpResponseHeaderSize(_) => F::HeadersTooLarge,
        ErrorCode::HttpResponseBodySize(_) => F::BodyTooLarge,
        ErrorCode::HttpResponseTrailerSectionSize(_) | ErrorCode::HttpResponseTrailerSize(_) => F::TrailersTooLarge,
        ErrorCode::HttpResponseTransferCoding(_) | ErrorCode::HttpResponseContentCoding(_) => F::UnsupportedEncoding,
        ErrorCode::HttpUpgradeFailed | ErrorCode::HttpProtocolError => F::Protocol,
        ErrorCode::LoopDetected => F::LoopDetected,
        ErrorCode::ConfigurationError => F::Other("configuration-error"),
        ErrorCode::InternalError(_) => F::Other("internal-error"),
    }
}

/// Why a fetch step did not produce what was asked.
#[derive(Debug)]
pub enum FetchError {
    /// The host refused or failed the request ([`outbound_failure`] says what it means).
    Http(ErrorCode),
    /// The deadline passed.
    Deadline,
    /// The caller's cancel check said stop.
    Cancelled,
    /// The response body broke off (reset, protocol error).
    BodyBroken(String),
    /// The request could not even be built (bad URL parts).
    Invalid(String),
}

/// The parts of a checked URL a request needs.
pub struct Target<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Path and query.
    pub path_and_query: &'a str,
}

/// Starts a GET. `connect` and `first_byte` bound the first two phases (the host enforces them).
pub fn start_get(
    target: &Target<'_>,
    headers: &[(&str, &str)],
    connect: Duration,
    first_byte: Duration,
) -> Result<FutureIncomingResponse, FetchError> {
    start_request(Method::Get, target, headers, &[], connect, first_byte)
}

/// Starts a request and sends all of `body` (empty: none); then the response can be awaited.
pub fn start_request(
    method: Method,
    target: &Target<'_>,
    headers: &[(&str, &str)],
    body: &[u8],
    connect: Duration,
    first_byte: Duration,
) -> Result<FutureIncomingResponse, FetchError> {
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value.as_bytes()).map_err(|e| FetchError::Invalid(format!("header {name}: {e:?}")))?;
    }
    if !body.is_empty() {
        let length = body.len().to_string();
        fields.append("content-length", length.as_bytes()).map_err(|e| FetchError::Invalid(format!("{e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let scheme = match target.scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(FetchError::Invalid(format!("unsupported scheme {other}"))),
    };
    let ok = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(target.authority)).is_ok()
        && request.set_path_with_query(Some(target.path_and_query)).is_ok();
    if !ok {
        return Err(FetchError::Invalid("the URL cannot be expressed as an HTTP request".into()));
    }
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    // Hosts may not support every timeout; unsupported ones are enforced by our own polling.
    let _ = options.set_connect_timeout(Some(nanos(connect)));
    let _ = options.set_first_byte_timeout(Some(nanos(first_byte)));
    let outgoing = request.body().map_err(|()| FetchError::Invalid("request body already taken".into()))?;
    let pending = outgoing_handler::handle(request, Some(options)).map_err(FetchError::Http)?;
    // The host sends the body as it is written; finishing it lets the response arrive.
    let mut writer = BodyWriter::new(outgoing);
    // A server may answer (say, with an error) before it has read the whole body and close
    // the connection: the body then fails to send, and the answer, awaited as usual, says why.
    let _ = writer.write_all(body).and_then(|()| writer.finish());
    Ok(pending)
}

/// Waits for the response head until `deadline`, calling `keep_going` at least every `tick`.
pub fn await_response(
    pending: &FutureIncomingResponse,
    deadline: Instant,
    tick: Duration,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<IncomingResponse, FetchError> {
    loop {
        if let Some(result) = pending.get() {
            return match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(code)) => Err(FetchError::Http(code)),
                Err(()) => Err(FetchError::Invalid("response already taken".into())),
            };
        }
        wait_until_ready(&pending.subscribe(), deadline, tick)?;
        if !keep_going() {
            return Err(FetchError::Cancelled);
        }
    }
}

/// Waits until `pollable` is ready, `tick` passes, or `deadline` is reached (error).
fn wait_until_ready(pollable: &poll::Pollable, deadline: Instant, tick: Duration) -> Result<(), FetchError> {
    let now = now();
    if now >= deadline {
        return Err(FetchError::Deadline);
    }
    let wake = deadline.min(after(tick));
    let timer = monotonic_clock::subscribe_instant(wake);
    poll::poll(&[pollable, &timer]);
    if self::now() >= deadline && !pollable.ready() {
        return Err(FetchError::Deadline);
    }
    Ok(())
}

/// A response body being read with deadlines.
pub struct ResponseBody {
    // The stream is a child of the body and must drop first.
    stream: InputStream,
    _body: IncomingBody,
}

/// One step of reading a body.
pub enum BodyStep {
    /// Bytes arrived.
    Data(Vec<u8>),
    /// Nothing yet; the caller may check its cancel flag and call again.
    Idle,
    /// The body ended.
    End,
}

impl ResponseBody {
    /// Takes the body of `response`.
    pub fn of(response: &IncomingResponse) -> Result<Self, FetchError> {
        let body = response.consume().map_err(|()| FetchError::Invalid("body already taken".into()))?;
        let stream = body.stream().map_err(|()| FetchError::Invalid("body stream already taken".into()))?;
        Ok(ResponseBody { stream, _body: body })
    }

    /// Reads up to `max` bytes, waiting at most until `tick` passes or `deadline` is reached.
    pub fn step(&mut self, max: u64, deadline: Instant, tick: Duration) -> Result<BodyStep, FetchError> {
        match self.stream.read(max) {
            Ok(bytes) if !bytes.is_empty() => return Ok(BodyStep::Data(bytes)),
            Ok(_) => {}
            Err(StreamError::Closed) => return Ok(BodyStep::End),
            Err(StreamError::LastOperationFailed(e)) => return Err(FetchError::BodyBroken(e.to_debug_string())),
        }
        wait_until_ready(&self.stream.subscribe(), deadline, tick)?;
        Ok(BodyStep::Idle)
    }
}

/// The first value of a response header as text.
pub fn response_header(response: &IncomingResponse, name: &str) -> Option<String> {
    response.headers().get(name).into_iter().next().and_then(|v| String::from_utf8(v).ok())
}

//! Incoming requests and outgoing responses over `wasi:http@0.2`, with streamed bodies.
//!
//! Bodies are moved in bounded pieces: reads return at most the requested length, writes wait
//! for the host's write permit, and [`pipe`] splices one stream into another inside the host
//! so forwarded bytes never pass through guest memory.

use downlink_core::error::JSON_CONTENT_TYPE;
use downlink_core::http::ConditionalHeaders;
use downlink_core::ApiError;
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};
use spin_sdk::wit::wasi::http0_2_0::types::{IncomingBody, OutgoingBody};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Most bytes moved by one splice or read call.
pub const IO_CHUNK: u64 = 1 << 20;

/// Headers that describe one connection, not the message; never forwarded (RFC 9110 §7.6.1),
/// plus `host`, which the host sets for each hop.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

/// Whether a header must not be copied onto another hop: hop-by-hop headers and `spin-*`
/// (the host sets those per hop; a forwarded copy could be mistaken for the host's).
pub fn is_hop_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&name.as_str()) || name.starts_with("spin-")
}

/// The method, target and headers of a request, read before its body is consumed.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// Path and query as sent, still percent-encoded.
    pub path_with_query: String,
    /// Header fields in order; names lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// Reads the head of `req`.
    pub fn of(req: &IncomingRequest) -> Self {
        RequestHead {
            method: req.method(),
            path_with_query: req.path_with_query().unwrap_or_else(|| "/".into()),
            headers: req.headers().entries().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
        }
    }

    /// The first value of a header as text (`None` if absent or not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of a header as sent.
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_slice())
    }

    /// A header that decides what a request does (such as `If-Match`): its text, `None` if
    /// absent, and `400` if it is not UTF-8, so an unreadable condition is never taken for none.
    pub fn required_text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.header_bytes(name).map(|value| header_text(name, value)).transpose()
    }

    /// The headers that shape a `GET`/`HEAD` answer (`Range`, `If-Range`, `If-None-Match`).
    pub fn conditional(&self) -> ConditionalHeaders<'_> {
        ConditionalHeaders {
            range: self.header("range"),
            if_range: self.header("if-range"),
            if_none_match: self.header("if-none-match"),
        }
    }

    /// The path, still percent-encoded.
    pub fn path(&self) -> &str {
        self.path_with_query.split_once('?').map_or(self.path_with_query.as_str(), |(p, _)| p)
    }

    /// The raw query (without `?`), or `""`.
    pub fn query(&self) -> &str {
        self.path_with_query.split_once('?').map_or("", |(_, q)| q)
    }

    /// The method name, upper-case.
    pub fn method_name(&self) -> String {
        method_name(&self.method)
    }
}

/// A header's value as text, or `400` naming the header when it is not UTF-8.
pub fn header_text<'v>(name: &str, value: &'v [u8]) -> Result<&'v str, ApiError> {
    std::str::from_utf8(value).map_err(|_| ApiError::invalid_request(format!("the `{name}` header is not valid text")))
}

/// A method's name, upper-case.
pub fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

/// Why reading a request body stopped early.
#[derive(Debug)]
pub struct BodyAborted;

impl From<BodyAborted> for ApiError {
    fn from(_: BodyAborted) -> Self {
        ApiError::invalid_request("the request body ended early (client disconnected?)")
    }
}

/// A request body being read.
pub struct BodyReader {
    // Field order matters: the stream is a child of the body and must drop first.
    stream: InputStream,
    _body: IncomingBody,
}

impl BodyReader {
    /// Takes the body of `req`.
    pub fn new(req: IncomingRequest) -> Result<Self, ApiError> {
        let body = req.consume().map_err(|()| ApiError::internal("request body already taken"))?;
        let stream = body.stream().map_err(|()| ApiError::internal("request body stream already taken"))?;
        Ok(BodyReader { stream, _body: body })
    }

    /// Up to `max` bytes (at least one), or `None` at the end of the body. A body that breaks
    /// off (the client disconnected, or sent less than its `Content-Length`) is an error.
    pub fn read(&mut self, max: u64) -> Result<Option<Vec<u8>>, BodyAborted> {
        loop {
            match self.stream.blocking_read(max) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(_)) => return Err(BodyAborted),
            }
        }
    }

    /// The underlying stream, e.g. to [`pipe`] it elsewhere.
    pub fn stream(&self) -> &InputStream {
        &self.stream
    }
}

/// Why a response body could not be written completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client went away")]
pub struct ClientGone;

/// A response body being written.
pub struct BodyWriter {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodyWriter {
    /// Wraps an outgoing body.
    pub fn new(body: OutgoingBody) -> Self {
        let stream = body.write().ok();
        BodyWriter { stream, body: Some(body) }
    }

    /// Writes all of `data`, waiting for the host to accept it.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), ClientGone> {
        let stream = self.stream.as_ref().ok_or(ClientGone)?;
        let mut rest = data;
        while !rest.is_empty() {
            let permit = stream.check_write().map_err(|_| ClientGone)?;
            if permit == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = rest.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
            stream.write(&rest[..n]).map_err(|_| ClientGone)?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// The underlying stream, e.g. to [`pipe`] into it.
    pub fn stream(&self) -> Option<&OutputStream> {
        self.stream.as_ref()
    }

    /// Flushes and ends the body. Errors only mean the peer did not get it all.
    pub fn finish(mut self) -> Result<(), ClientGone> {
        let flushed = self.stream.take().map(|s| s.blocking_flush().is_ok()).unwrap_or(false);
        let finished = match self.body.take() {
            Some(body) => OutgoingBody::finish(body, None).is_ok(),
            None => false,
        };
        if flushed && finished {
            Ok(())
        } else {
            Err(ClientGone)
        }
    }
}

/// Body bytes a [`DeferredResponse`] holds back before it commits to its status.
const DEFER_BYTES: usize = 64 * 1024;

/// A response whose status and headers go out with its first [`DEFER_BYTES`] of body (or at
/// its end, if shorter), so a failure before that — a bucket that cannot be reached, a missing
/// chunk — can still be answered with a JSON error instead of a cut-off body.
pub struct DeferredResponse {
    state: Deferred,
}

enum Deferred {
    Waiting { out: ResponseOutparam, status: u16, headers: Vec<(&'static str, String)>, held: Vec<u8> },
    Started(BodyWriter),
    Gone,
}

impl DeferredResponse {
    /// A response with `status` and `headers`, not sent yet.
    pub fn new(out: ResponseOutparam, status: u16, headers: Vec<(&'static str, String)>) -> Self {
        DeferredResponse { state: Deferred::Waiting { out, status, headers, held: Vec::new() } }
    }

    /// The response slot if nothing was sent yet (to answer with an error instead).
    pub fn into_unsent(mut self) -> Option<ResponseOutparam> {
        match std::mem::replace(&mut self.state, Deferred::Gone) {
            Deferred::Waiting { out, .. } => Some(out),
            _ => None,
        }
    }

    fn start(&mut self) -> Result<&mut BodyWriter, ClientGone> {
        self.state = match std::mem::replace(&mut self.state, Deferred::Gone) {
            Deferred::Waiting { out, status, headers, held } => {
                let mut body = start_response(out, status, &headers);
                body.write_all(&held)?;
                Deferred::Started(body)
            }
            other => other,
        };
        match &mut self.state {
            Deferred::Started(body) => Ok(body),
            _ => Err(ClientGone),
        }
    }

    /// Sends what is held back and ends the body.
    pub fn finish(mut self) -> Result<(), ClientGone> {
        self.start()?;
        match std::mem::replace(&mut self.state, Deferred::Gone) {
            Deferred::Started(body) => body.finish(),
            _ => Err(ClientGone),
        }
    }
}

impl downlink_core::delivery::ContentSink for DeferredResponse {
    type Error = ClientGone;

    fn send(&mut self, bytes: &[u8]) -> Result<(), ClientGone> {
        if let Deferred::Waiting { held, .. } = &mut self.state {
            if held.len() + bytes.len() <= DEFER_BYTES {
                held.extend_from_slice(bytes);
                return Ok(());
            }
        }
        self.start()?.write_all(bytes)
    }
}

/// A response body is where streamed content goes.
impl downlink_core::delivery::ContentSink for BodyWriter {
    type Error = ClientGone;

    fn send(&mut self, bytes: &[u8]) -> Result<(), ClientGone> {
        self.write_all(bytes)
    }
}

/// Copies `from` into `to` until `from` ends, inside the host (splice). Returns the bytes
/// copied, or an error if either side failed first.
pub fn pipe(from: &InputStream, to: &OutputStream) -> Result<u64, StreamError> {
    let mut total = 0u64;
    loop {
        match to.blocking_splice(from, IO_CHUNK) {
            Ok(n) => total += n,
            Err(StreamError::Closed) => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// Builds a header list for a response.
pub fn fields(headers: &[(&str, String)]) -> Fields {
    let fields = Fields::new();
    for (name, value) in headers {
        // Only invalid names/values can fail, and ours are built from validated data.
        let _ = fields.append(name, value.as_bytes());
    }
    fields
}

/// Sends the status and headers now and returns the body to stream into.
pub fn start_response(out: ResponseOutparam, status: u16, headers: &[(&str, String)]) -> BodyWriter {
    let response = OutgoingResponse::new(fields(headers));
    let _ = response.set_status_code(status);
    let body = response.body().expect("a new response has a body");
    out.set(response);
    BodyWriter::new(body)
}

/// Sends a complete response with a small in-memory body.
pub fn send_bytes(out: ResponseOutparam, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut all: Vec<(&str, String)> = headers.to_vec();
    all.push(("content-length", body.len().to_string()));
    let mut writer = start_response(out, status, &all);
    let _ = writer.write_all(body);
    let _ = writer.finish();
}

/// Sends a JSON answer — the one way every component does: `json` is already serialised (a
/// record's `to_json_bytes`, or [`downlink_core::json::to_bytes`]), `extra` adds headers such
/// as `location`.
pub fn send_json(out: ResponseOutparam, status: u16, json: &[u8], extra: &[(&str, String)]) {
    let mut headers: Vec<(&str, String)> = vec![("content-type", JSON_CONTENT_TYPE.to_string())];
    headers.extend(extra.iter().cloned());
    send_bytes(out, status, &headers, json);
}

/// Sends the error envelope with the error's status and extra headers.
pub fn send_error(out: ResponseOutparam, error: &ApiError) {
    let extra: Vec<(&str, String)> = error.extra_headers().iter().map(|(k, v)| (*k, v.clone())).collect();
    send_json(out, error.status(), &error.to_json_bytes(), &extra);
}

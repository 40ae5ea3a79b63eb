//! The HTTP listener: Spin's reserved routes, stripping of client-sent `spin-*` headers,
//! routing, and one log line per request.

use crate::app::{empty_response, plain_response, App, RequestContext};
use anyhow::Result;
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr()?;
    tokio::pin!(shutdown);
    loop {
        let (stream, client_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("devhost: accept failed: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        stream.set_nodelay(true).ok();
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(dispatch(app, req, client_addr, local).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(wasmtime_wasi_http::io::TokioIo::new(stream), service)
                .await
            {
                if !e.is_incomplete_message() {
                    eprintln!("devhost: connection from {client_addr}: {e}");
                }
            }
        });
    }
}

async fn dispatch(
    app: Arc<App>,
    mut req: http::Request<Incoming>,
    client_addr: SocketAddr,
    local: SocketAddr,
) -> http::Response<HyperOutgoingBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());

    // Unlike Spin (which appends its own values), drop client-sent spin-* headers entirely so a
    // component can trust every spin-* header it sees.
    let forged: Vec<_> = req.headers().keys().filter(|k| k.as_str().starts_with("spin-")).cloned().collect();
    for name in forged {
        req.headers_mut().remove(name);
    }

    // Spin 4.0.2 answers a request carrying any header value that is not UTF-8 with an empty
    // `500` before a component runs ("Error processing request: invalid utf-8 sequence"); the dev
    // host does the same, so nothing passes here that fails under Spin.
    if req.headers().values().any(|value| std::str::from_utf8(value.as_bytes()).is_err()) {
        eprintln!("devhost: refusing {method} {path}: a header value is not UTF-8 (as Spin does)");
        return log_when_done(empty_response(500), method, path, "devhost".into(), started);
    }

    let request_path = req.uri().path().to_string();
    if request_path == "/.well-known/spin/health" {
        return log_when_done(plain_response(200, "OK\n"), method, path, "devhost".into(), started);
    }
    if request_path.starts_with("/.well-known/spin/") {
        return log_when_done(plain_response(404, "Not Found\n"), method, path, "devhost".into(), started);
    }
    let Some(route) = app.router().route(&request_path) else {
        return log_when_done(plain_response(404, "Not Found\n"), method, path, "devhost".into(), started);
    };
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| local.to_string());
    let ctx = RequestContext { route, client_addr, origin: format!("http://{host}") };
    let Some(limit) = app.platform().body_limit() else {
        return app.handle(req, ctx).await;
    };
    // The hosted targets' body caps: a declared length over the cap is refused before the
    // component runs; a streamed body breaks off at the cap, and so does the response.
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        eprintln!("devhost: {method} {path}: request body over the {limit}-byte cap of {}", app.platform().title());
        return log_when_done(plain_response(413, "Payload Too Large\n"), method, path, "devhost".into(), started);
    }
    let req = req.map(|body| CappedBody { inner: body, sent: 0, limit, request: true });
    let response = app.handle(req, ctx).await;
    response.map(|body| CappedBody { inner: body, sent: 0, limit, request: false }.boxed_unsync())
}

/// A body that fails once more than `limit` bytes went through it (a hosted target's cap).
struct CappedBody<B> {
    inner: B,
    sent: u64,
    limit: u64,
    /// Which direction, for the error the guest or client sees.
    request: bool,
}

impl<B> http_body::Body for CappedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = polled.data_ref() {
            self.sent += data.len() as u64;
            if self.sent > self.limit {
                let which = if self.request { "request" } else { "response" };
                eprintln!("devhost: {which} body broke off at this platform's {}-byte cap", self.limit);
                return Poll::Ready(Some(Err(if self.request {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.sent))
                } else {
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(self.sent))
                })));
            }
        }
        Poll::Ready(Some(Ok(polled)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a response body so one line (method, path, status, bytes, ms, component) is logged
/// when the body has been fully sent or dropped.
pub fn log_when_done(
    response: http::Response<HyperOutgoingBody>,
    method: http::Method,
    path: String,
    component: String,
    started: Instant,
) -> http::Response<HyperOutgoingBody> {
    let status = response.status().as_u16();
    let expected = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let line = RequestLine { method, path, status, component, started };
    response.map(|body| CountingBody { inner: body, bytes: 0, expected, line: Some(line) }.boxed_unsync())
}

struct RequestLine {
    method: http::Method,
    path: String,
    status: u16,
    component: String,
    started: Instant,
}

struct CountingBody {
    inner: HyperOutgoingBody,
    bytes: u64,
    /// `Content-Length`, if any: hyper stops polling once it has that many bytes.
    expected: Option<u64>,
    line: Option<RequestLine>,
}

impl CountingBody {
    fn finish(&mut self, outcome: &str) {
        if let Some(l) = self.line.take() {
            eprintln!(
                "{} {} {} {}B {}ms {}{}",
                l.method,
                l.path,
                l.status,
                self.bytes,
                l.started.elapsed().as_millis(),
                l.component,
                outcome
            );
        }
    }
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = format!(" (body error: {e})");
                self.finish(&outcome);
            }
            Poll::Ready(None) => self.finish(""),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        // A HEAD answer's body is never read: hyper drops it unsent, which is no client leaving.
        let head = self.line.as_ref().is_some_and(|l| l.method == http::Method::HEAD);
        let complete = head || self.inner.is_end_stream() || self.expected.is_some_and(|n| n == self.bytes);
        let outcome = if complete { "" } else { " (client went away)" };
        self.finish(outcome);
    }
}

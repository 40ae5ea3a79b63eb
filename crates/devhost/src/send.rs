//! Outgoing HTTP from guests: the allow-list check, in-process service chaining, and a client
//! connection that checks `block_networks` against the address it actually connects to.
//!
//! wasmtime-wasi-http's `default_send_request` connects by host name, so the resolved address
//! cannot be vetted before the connection is made; hence the connect step here (DNS resolve,
//! filter, then TCP/TLS/HTTP-1 handshake), which otherwise follows the same steps.

use crate::app::{App, ComponentRuntime};
use crate::outbound::OutboundTarget;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Spin's default for connect, first-byte and between-bytes timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The `wasi:http` hooks of one component instance.
pub struct OutboundHooks {
    pub(crate) app: Arc<App>,
    pub(crate) component: Arc<ComponentRuntime>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let app = self.app.clone();
        let component = self.component.clone();
        Box::new(async move {
            let target = OutboundTarget::from_uri(request.uri()).map_err(|_| Error::HttpRequestUriInvalid)?;
            if !component.allowed_outbound_hosts.allows(&target) {
                eprintln!(
                    "[{}] outbound request to {}://{}:{} denied: not in allowed_outbound_hosts",
                    component.id, target.scheme, target.host, target.port
                );
                return Err(Error::HttpRequestDenied);
            }
            if let Some(id) = target.chained_component() {
                let response = app.handle_chained(id, request).await?;
                return Ok((response, Box::new(async { Ok(()) }) as IoFuture));
            }
            send_over_network(&app, &component.id, &target, request, options).await
        })
    }
}

async fn send_over_network(
    app: &App,
    component_id: &str,
    target: &OutboundTarget,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes_timeout = options.and_then(|o| o.between_bytes_timeout).unwrap_or(DEFAULT_TIMEOUT);

    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(connect_timeout, tokio::net::lookup_host((target.host.as_str(), target.port)))
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|_| Error::DnsError { rcode: Some("address not available".into()), info_code: None })?
            .collect();
    let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !app.blocked_networks().blocks(a.ip())).collect();
    if allowed.is_empty() {
        eprintln!(
            "[{component_id}] outbound request to {}:{} denied: every resolved address is in block_networks",
            target.host, target.port
        );
        return Err(if addrs.is_empty() { Error::DestinationNotFound } else { Error::DestinationIpProhibited });
    }

    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(&allowed[..]))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    tcp.set_nodelay(true).ok();

    let io: Box<dyn Stream> = if target.scheme == "https" {
        let server_name = match target.host.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let tls = tokio::time::timeout(connect_timeout, tls_connector().connect(server_name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };

    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries only the path: scheme and authority are for proxies.
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    // Drive the connection in its own task so the response body keeps flowing after we return.
    let driver = tokio::spawn(conn);
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| read_ahead(BetweenBytesTimeout::new(body, between_bytes_timeout)));
    let io = async move {
        match driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    };
    Ok((response, Box::new(io) as IoFuture))
}

/// Buffers waiting for the guest per response body.
const READ_AHEAD_BUFFERS: usize = 4;
/// Largest buffer handed to the guest at once.
const READ_AHEAD_BUFFER_BYTES: usize = 1 << 20;

/// Keeps reading the response in a task of its own while the guest is busy (e.g. storing the
/// previous chunk), so network and storage overlap instead of taking turns. While the guest
/// is behind, consecutive frames are merged into buffers of exactly up to 1 MiB, so it fetches
/// the body in a few large reads rather than many small ones. Each buffer is a fresh,
/// unshared allocation that the guest's read of up to 1 MiB takes whole: wasmtime then hands
/// it over as the `Vec` it lowers from, without another copy. Bounded: at most
/// [`READ_AHEAD_BUFFERS`] full buffers plus one being filled; when the guest drops the body,
/// the task stops and the connection closes.
fn read_ahead(mut body: BetweenBytesTimeout) -> WasiBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Error>>(READ_AHEAD_BUFFERS);
    tokio::spawn(async move {
        let new_buffer = || bytes::BytesMut::with_capacity(READ_AHEAD_BUFFER_BYTES);
        let mut pending = new_buffer();
        // The part of the last frame that did not fit into `pending`.
        let mut carry = Bytes::new();
        let mut finished = false;
        loop {
            if !carry.is_empty() && pending.len() < READ_AHEAD_BUFFER_BYTES {
                let take = carry.len().min(READ_AHEAD_BUFFER_BYTES - pending.len());
                pending.extend_from_slice(&carry.split_to(take));
            }
            if finished && pending.is_empty() {
                return;
            }
            let room = carry.is_empty() && pending.len() < READ_AHEAD_BUFFER_BYTES && !finished;
            tokio::select! {
                // The guest dropped the body (e.g. a cancelled download): stop reading.
                () = tx.closed() => return,
                permit = tx.reserve(), if !pending.is_empty() => {
                    let Ok(permit) = permit else { return };
                    permit.send(Ok(http_body::Frame::data(std::mem::replace(&mut pending, new_buffer()).freeze())));
                }
                frame = body.frame(), if room => match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => carry = data,
                        Err(trailers) => {
                            // Trailers end the body: flush the data first, then pass them on.
                            if !pending.is_empty() && tx.send(Ok(http_body::Frame::data(pending.freeze()))).await.is_err() {
                                return;
                            }
                            let _ = tx.send(Ok(trailers)).await;
                            return;
                        }
                    },
                    Some(Err(e)) => {
                        if !pending.is_empty() && tx.send(Ok(http_body::Frame::data(pending.freeze()))).await.is_err() {
                            return;
                        }
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    None => finished = true,
                },
            }
        }
    });
    ReadAheadBody { rx }.boxed_unsync()
}

/// The guest's side of [`read_ahead`].
struct ReadAheadBody {
    rx: tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Error>>,
}

impl http_body::Body for ReadAheadBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        self.rx.poll_recv(cx)
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// A response body that fails when no data arrives for `timeout` (Spin's between-bytes timeout).
struct BetweenBytesTimeout {
    inner: hyper::body::Incoming,
    timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl BetweenBytesTimeout {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
        BetweenBytesTimeout { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl http_body::Body for BetweenBytesTimeout {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

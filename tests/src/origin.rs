//! Test data and the configurable local origin the download tests fetch from.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `len` deterministic pseudo-random bytes (xorshift64*), different for every `seed`.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Size of one block of a generated body (see [`generated_block`]).
pub const GENERATED_BLOCK: usize = 64 * 1024;

/// Block `index` of the deterministic body generated for `seed`: every block is
/// [`GENERATED_BLOCK`] bytes of [`pseudo_random_bytes`], different per seed and index. A body of
/// `len` bytes is the blocks in order, truncated to `len`.
pub fn generated_block(seed: u64, index: u64) -> Vec<u8> {
    pseudo_random_bytes(seed.wrapping_mul(0x0001_0000_0001).wrapping_add(index).wrapping_add(1), GENERATED_BLOCK)
}

/// Feed the generated body (`seed`, `len`) to `sink` block by block (for hashing without
/// holding it all).
pub fn for_each_generated_block(seed: u64, len: u64, mut sink: impl FnMut(&[u8])) {
    let mut sent = 0u64;
    let mut index = 0u64;
    while sent < len {
        let block = generated_block(seed, index);
        let take = (len - sent).min(block.len() as u64) as usize;
        sink(&block[..take]);
        sent += take as u64;
        index += 1;
    }
}

/// The whole generated body (`seed`, `len`) in memory (small bodies).
pub fn generated_bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    for_each_generated_block(seed, len, |b| out.extend_from_slice(b));
    out
}

/// A gate a [`Route::Gated`] / [`Route::Silent`] handler waits on until [`Gate::release`].
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Let every waiting (and future) handler go on.
    pub fn release(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    pub fn is_released(&self) -> bool {
        *self.0 .0.lock().unwrap()
    }

    /// Wait until released (true), or until `stop` is set or `limit` passes (false).
    fn wait(&self, stop: &AtomicBool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.0;
        let mut released = lock.lock().unwrap();
        while !*released {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                return false;
            }
            released = cv.wait_timeout(released, Duration::from_millis(50)).unwrap().0;
        }
        true
    }
}

/// What a [`TestOrigin`] answers on one path. Every response carries `Connection: close`.
#[derive(Clone)]
pub enum Route {
    /// `status` with `body` and a `Content-Length`.
    Fixed { status: u16, body: Arc<Vec<u8>> },
    /// `200` with `Transfer-Encoding: chunked` (no `Content-Length`), in pieces of `piece`
    /// bytes.
    Chunked { body: Arc<Vec<u8>>, piece: usize },
    /// `200` with the generated body (`seed`, `len`, see [`generated_block`]), produced on the
    /// fly; with a `Content-Length` unless `chunked`; at most `bytes_per_sec` when set.
    Generated { seed: u64, len: u64, bytes_per_sec: Option<u64>, chunked: bool },
    /// `200` with `Content-Length: len`, then one byte (`b'x'`) every `interval`.
    Trickle { len: u64, interval: Duration },
    /// `200` with `Content-Length: len`, `sent` bytes of the generated body (seed 0), then the
    /// connection is closed: with a TCP RST (`SO_LINGER` 0) when `rst`, else a plain FIN.
    Cut { len: u64, sent: u64, rst: bool },
    /// `status` with `Location: location` (verbatim, may be relative) and a short body.
    Redirect { status: u16, location: String },
    /// `200` with `Content-Length: body.len()`: sends the head and `first` bytes, waits for
    /// `gate` (at most 120 s), then the rest.
    Gated { body: Arc<Vec<u8>>, first: usize, gate: Gate },
    /// Reads the request and answers nothing until `gate` is released (at most 120 s), then
    /// closes the connection without a response.
    Silent { gate: Gate },
    /// The generated body (`seed`, `len`) with `Content-Length`, an `ETag` when `etag` is set,
    /// and byte ranges: `Range: bytes=N-` gets `206` with the rest, unless `If-Range` names
    /// another version (then the whole body, `200`). Each response sends at most
    /// `reset_after` body bytes, then resets the connection; at most `bytes_per_sec`.
    Ranged { seed: u64, len: u64, etag: Option<String>, reset_after: Option<u64>, bytes_per_sec: Option<u64> },
    /// `status` with the extra `headers` and a short body.
    WithHeaders { status: u16, headers: Vec<(String, String)> },
    /// The first requests get `first`'s routes in order, every later one `then`.
    Sequence { first: Arc<Mutex<std::collections::VecDeque<Route>>>, then: Box<Route> },
}

impl Route {
    /// `200` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route::Fixed { status: 200, body: Arc::new(body.into()) }
    }

    /// `status` with a short text body.
    pub fn status(status: u16) -> Route {
        Route::Fixed { status, body: Arc::new(format!("origin status {status}\n").into_bytes()) }
    }

    /// `200`, chunked, pieces of 16 KiB.
    pub fn chunked(body: impl Into<Vec<u8>>) -> Route {
        Route::Chunked { body: Arc::new(body.into()), piece: 16 * 1024 }
    }

    pub fn redirect(status: u16, location: impl Into<String>) -> Route {
        Route::Redirect { status, location: location.into() }
    }

    /// Generated body with Content-Length, unthrottled.
    pub fn generated(seed: u64, len: u64) -> Route {
        Route::Generated { seed, len, bytes_per_sec: None, chunked: false }
    }

    /// Generated body with Content-Length (or chunked), at `bytes_per_sec`.
    pub fn throttled(seed: u64, len: u64, bytes_per_sec: u64, chunked: bool) -> Route {
        Route::Generated { seed, len, bytes_per_sec: Some(bytes_per_sec), chunked }
    }

    /// The generated body with ranges, an `ETag` and no faults.
    pub fn ranged(seed: u64, len: u64, etag: &str) -> Route {
        Route::Ranged { seed, len, etag: Some(etag.to_owned()), reset_after: None, bytes_per_sec: None }
    }

    /// This [`Route::Ranged`] resetting each response after `bytes` body bytes.
    pub fn resetting_after(mut self, bytes: u64) -> Route {
        if let Route::Ranged { reset_after, .. } = &mut self {
            *reset_after = Some(bytes);
        }
        self
    }

    /// This [`Route::Ranged`] at most `rate` bytes a second.
    pub fn at_rate(mut self, rate: u64) -> Route {
        if let Route::Ranged { bytes_per_sec, .. } = &mut self {
            *bytes_per_sec = Some(rate);
        }
        self
    }

    /// `status` with `headers` (e.g. `503` with `Retry-After`).
    pub fn with_headers(status: u16, headers: &[(&str, &str)]) -> Route {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Route::WithHeaders { status, headers }
    }

    /// `first` for the first requests, in order, then `then` for every later one.
    pub fn sequence(first: Vec<Route>, then: Route) -> Route {
        Route::Sequence { first: Arc::new(Mutex::new(first.into())), then: Box::new(then) }
    }

    pub fn gated(body: impl Into<Vec<u8>>, first: usize, gate: &Gate) -> Route {
        Route::Gated { body: Arc::new(body.into()), first, gate: gate.clone() }
    }
}

/// One request a [`TestOrigin`] received.
#[derive(Clone, Debug)]
pub struct OriginRequest {
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// Path without the query.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

pub(crate) struct OriginShared {
    routes: Mutex<HashMap<String, Route>>,
    requests: Mutex<Vec<OriginRequest>>,
    stop: AtomicBool,
    /// Connections currently being served.
    open: AtomicUsize,
    /// Bytes of response bodies written, all connections.
    body_bytes: std::sync::atomic::AtomicU64,
}

/// A configurable HTTP/1.1 origin on 127.0.0.1:0: a thread per connection, routes by exact path
/// (unknown paths → `404`), one response per connection (`Connection: close`). Records every
/// request. On drop it stops accepting, wakes every waiting handler and joins all threads (each
/// write has a 10 s timeout, so shutdown is bounded).
pub struct TestOrigin {
    addr: SocketAddr,
    shared: Arc<OriginShared>,
    accept_thread: Option<thread::JoinHandle<()>>,
    conn_threads: Arc<Mutex<Vec<thread::JoinHandle<()>>>>,
}

impl TestOrigin {
    /// An origin serving `routes` (more can be added with [`TestOrigin::route`]).
    pub fn start(routes: Vec<(&str, Route)>) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test origin");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(OriginShared {
            routes: Mutex::new(routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect()),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            body_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let conn_threads: Arc<Mutex<Vec<thread::JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let accept_thread = {
            let shared = shared.clone();
            let conn_threads = conn_threads.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let handle = thread::spawn(move || {
                        serve_origin_connection(conn, &shared);
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                    });
                    let mut threads = conn_threads.lock().unwrap();
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            })
        };
        TestOrigin { addr, shared, accept_thread: Some(accept_thread), conn_threads }
    }

    /// Add or replace the route of `path`.
    pub fn route(&self, path: &str, route: Route) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), route);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<OriginRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests for `path` (query ignored) arrived.
    pub fn hits(&self, path: &str) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.path == path).count()
    }

    /// Requests of any path.
    pub fn total_hits(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Connections being served right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Response body bytes written so far, all connections.
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = self.conn_threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

pub(crate) fn serve_origin_connection(mut conn: TcpStream, shared: &OriginShared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_nodelay(true);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                if head.len() > 64 * 1024 {
                    return;
                }
            }
        }
    }
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    shared.requests.lock().unwrap().push(OriginRequest {
        method: method.clone(),
        target,
        path: path.clone(),
        headers: headers.clone(),
        at: Instant::now(),
    });
    let route = shared.routes.lock().unwrap().get(&path).cloned().unwrap_or_else(|| Route::status(404));
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let reset = respond_origin(&mut conn, route, head_only, &headers, shared).unwrap_or(false);
    if reset {
        // SO_LINGER 0 is set: closing now sends an RST (no FIN first).
        drop(conn);
        return;
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
    // Drain briefly so the close is a FIN, not an RST for unread request bytes.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.read(&mut buf);
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

pub(crate) fn write_head(conn: &mut TcpStream, status: u16, extra: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\nconnection: close\r\n", reason(status));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
}

/// Write `data`, counting it; stops early (error) when the origin stops.
pub(crate) fn write_counted(conn: &mut TcpStream, data: &[u8], shared: &OriginShared) -> std::io::Result<()> {
    if shared.stop.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("origin stopping"));
    }
    conn.write_all(data)?;
    shared.body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// Answers one request; `Ok(true)`: the caller must reset the connection (drop it with
/// `SO_LINGER` 0, already set).
pub(crate) fn respond_origin(
    conn: &mut TcpStream,
    route: Route,
    head_only: bool,
    request_headers: &[(String, String)],
    shared: &OriginShared,
) -> std::io::Result<bool> {
    let octets = ("content-type", "application/octet-stream".to_string());
    match route {
        Route::Fixed { status, body } => {
            write_head(conn, status, &[octets, ("content-length", body.len().to_string())])?;
            if !head_only {
                write_counted(conn, &body, shared)?;
            }
        }
        Route::Chunked { body, piece } => {
            write_head(conn, 200, &[octets, ("transfer-encoding", "chunked".into())])?;
            if !head_only {
                for part in body.chunks(piece.max(1)) {
                    conn.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                    write_counted(conn, part, shared)?;
                    conn.write_all(b"\r\n")?;
                }
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Route::Generated { seed, len, bytes_per_sec, chunked } => {
            let framing = if chunked {
                ("transfer-encoding", "chunked".to_string())
            } else {
                ("content-length", len.to_string())
            };
            write_head(conn, 200, &[octets, framing])?;
            if head_only {
                return Ok(false);
            }
            let started = Instant::now();
            let piece = match bytes_per_sec {
                Some(rate) => (rate / 20).clamp(1, GENERATED_BLOCK as u64) as usize,
                None => GENERATED_BLOCK,
            };
            let mut sent = 0u64;
            let mut index = 0u64;
            while sent < len {
                let block = generated_block(seed, index);
                index += 1;
                let take = (len - sent).min(block.len() as u64) as usize;
                for part in block[..take].chunks(piece) {
                    if let Some(rate) = bytes_per_sec {
                        // Do not get ahead of `rate`.
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        let elapsed = started.elapsed();
                        if due > elapsed {
                            thread::sleep(due - elapsed);
                        }
                    }
                    if chunked {
                        conn.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                    }
                    write_counted(conn, part, shared)?;
                    if chunked {
                        conn.write_all(b"\r\n")?;
                    }
                    sent += part.len() as u64;
                }
            }
            if chunked {
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Route::Trickle { len, interval } => {
            write_head(conn, 200, &[octets, ("content-length", len.to_string())])?;
            if head_only {
                return Ok(false);
            }
            for _ in 0..len {
                write_counted(conn, b"x", shared)?;
                conn.flush()?;
                let until = Instant::now() + interval;
                while Instant::now() < until {
                    if shared.stop.load(Ordering::SeqCst) {
                        return Ok(false);
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Route::Cut { len, sent, rst } => {
            write_head(conn, 200, &[octets, ("content-length", len.to_string())])?;
            let body = generated_bytes(0, sent.min(len));
            write_counted(conn, &body, shared)?;
            conn.flush()?;
            // Let the bytes leave before the connection dies.
            thread::sleep(Duration::from_millis(200));
            if rst {
                let _ = socket2::SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
                // The caller drops the stream without a shutdown: that sends the RST.
                return Ok(true);
            }
        }
        Route::Redirect { status, location } => {
            let body = format!("redirect to {location}\n");
            write_head(
                conn,
                status,
                &[
                    ("location", location),
                    ("content-type", "text/plain".into()),
                    ("content-length", body.len().to_string()),
                ],
            )?;
            if !head_only {
                conn.write_all(body.as_bytes())?;
            }
        }
        Route::Gated { body, first, gate } => {
            write_head(conn, 200, &[octets, ("content-length", body.len().to_string())])?;
            if head_only {
                return Ok(false);
            }
            let first = first.min(body.len());
            write_counted(conn, &body[..first], shared)?;
            conn.flush()?;
            if !gate.wait(&shared.stop, Duration::from_secs(120)) {
                return Ok(false);
            }
            write_counted(conn, &body[first..], shared)?;
        }
        Route::Silent { gate } => {
            gate.wait(&shared.stop, Duration::from_secs(120));
        }
        Route::Ranged { seed, len, etag, reset_after, bytes_per_sec } => {
            let header = |name: &str| request_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let same_version = header("if-range").is_none_or(|tag| etag.as_deref() == Some(tag));
            let from = header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|from| same_version && *from < len);
            let mut head = vec![octets, ("accept-ranges", "bytes".to_string())];
            if let Some(tag) = &etag {
                head.push(("etag", tag.clone()));
            }
            let start = from.unwrap_or(0);
            head.push(("content-length", (len - start).to_string()));
            match from {
                Some(from) => {
                    head.push(("content-range", format!("bytes {from}-{}/{len}", len - 1)));
                    write_head(conn, 206, &head)?;
                }
                None => write_head(conn, 200, &head)?,
            }
            if head_only {
                return Ok(false);
            }
            let end = reset_after.map_or(len, |most| len.min(start + most));
            let began = Instant::now();
            let mut at = start;
            let mut block = (u64::MAX, Vec::new());
            while at < end {
                let index = at / GENERATED_BLOCK as u64;
                if block.0 != index {
                    block = (index, generated_block(seed, index));
                }
                let block = &block.1;
                let offset = (at % GENERATED_BLOCK as u64) as usize;
                let take = ((end - at) as usize).min(GENERATED_BLOCK - offset).min(16 * 1024);
                if let Some(rate) = bytes_per_sec {
                    let due = Duration::from_secs_f64((at - start) as f64 / rate as f64);
                    if let Some(ahead) = due.checked_sub(began.elapsed()) {
                        thread::sleep(ahead);
                    }
                }
                write_counted(conn, &block[offset..offset + take], shared)?;
                at += take as u64;
            }
            if end < len {
                conn.flush()?;
                thread::sleep(Duration::from_millis(100));
                let _ = socket2::SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
                return Ok(true);
            }
        }
        Route::WithHeaders { status, headers } => {
            let body = format!("origin status {status}\n");
            let mut head: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            head.push(("content-length", body.len().to_string()));
            write_head(conn, status, &head)?;
            if !head_only {
                write_counted(conn, body.as_bytes(), shared)?;
            }
        }
        Route::Sequence { first, then } => {
            let next = first.lock().unwrap().pop_front().unwrap_or(*then);
            return respond_origin(conn, next, head_only, request_headers, shared);
        }
    }
    Ok(false)
}

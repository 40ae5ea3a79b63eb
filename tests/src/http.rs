//! HTTP over loopback: a client with timeouts on every call, raw requests, streamed bodies.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::*;

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response (status {}) is not JSON: {e}: {:?}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// A fresh client with the harness's settings (no proxy, no redirects, 30 s timeout).
pub fn client() -> ureq::Agent {
    client_with_timeout(HTTP_TIMEOUT)
}

/// One HTTP exchange with `agent` (see [`client_with_timeout`]); bodies up to 64 MiB are read.
pub fn http_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = lowercase_headers(response.headers());
    let body = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().map_err(|e| e.to_string())?;
    Ok(Resp { status, headers, body, elapsed: start.elapsed() })
}

/// Write `request` to `addr` and read the response until the server closes the connection (send
/// `Connection: close`). Handles `Content-Length` and chunked bodies.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Result<Resp, String> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let mut head_end = None;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        if let Some(h) = head_end {
            let body = &raw[h..];
            if let Some(n) = content_length {
                if body.len() >= n {
                    break;
                }
            } else if chunked && body.windows(5).any(|w| w == b"0\r\n\r\n") {
                break;
            }
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if head_end.is_none() {
            if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                head_end = Some(pos + 4);
                let head = String::from_utf8_lossy(&raw[..pos]).to_ascii_lowercase();
                for line in head.lines().skip(1) {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.trim() == "content-length" {
                            content_length = v.trim().parse().ok();
                        }
                        if k.trim() == "transfer-encoding" && v.contains("chunked") {
                            chunked = true;
                        }
                    }
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    let h = head_end.ok_or_else(|| format!("no complete response head in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..h]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[h..].to_vec();
    if chunked {
        body = dechunk(&body);
    } else if let Some(n) = content_length {
        body.truncate(n);
    }
    Ok(Resp { status, headers, body, elapsed: start.elapsed() })
}

pub(crate) fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..pos]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Headers of an echo JSON (`{"headers": [[name, value], ...]}`): every value of `name`.
pub fn echoed_header_values(echo: &Json, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("echo JSON has no headers array: {echo}"))
        .iter()
        .filter_map(|pair| {
            let k = pair[0].as_str()?;
            (k.eq_ignore_ascii_case(name)).then(|| pair[1].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// The single value of `name` in an echo JSON; panics if absent or repeated.
pub fn echoed_header(echo: &Json, name: &str) -> String {
    let values = echoed_header_values(echo, name);
    assert_eq!(
        values.len(),
        1,
        "expected exactly one `{name}` header in the component's request, got {values:?}; \
         echo: {echo}"
    );
    values.into_iter().next().unwrap()
}

/// Poll `f` every 50 ms until it returns Some or `limit` passes.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encode a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A client with the harness's settings but its own overall timeout (for large bodies).
pub fn client_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None)
        .build()
        .into()
}

/// Percent-encode a `/`-separated path segment by segment (the `/` separators stay).
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Resp {
    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// One exchange whose response body is streamed to `sink` instead of being held (for bodies of
/// any size). Returns the response with an empty `body`, and the number of body bytes.
pub fn http_request_streaming(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    mut sink: impl FnMut(&[u8]),
) -> Result<(Resp, u64), String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Vec::<u8>::new()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = lowercase_headers(response.headers());
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("reading the body after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sink(&buf[..n]);
    }
    Ok((Resp { status, headers, body: Vec::new(), elapsed: start.elapsed() }, total))
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A response's headers as (lower-case name, value) pairs, in order.
pub(crate) fn lowercase_headers(headers: &ureq::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

//! Throwaway `redis-server`s and a minimal RESP2 client to look inside them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;

/// A throwaway `redis-server` on 127.0.0.1 (no persistence); killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Start one if `redis-server` is on PATH. Without it: panics when `CI` is set (CI must have
    /// Redis), else prints a skip notice and returns None.
    pub fn start_or_skip(test: &str) -> Option<RedisServer> {
        let Some(bin) = find_on_path("redis-server") else {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: redis-server is not on PATH, and CI is set: install Redis");
            }
            eprintln!("SKIPPED {test}: redis-server not on PATH (this test fails when CI is set)");
            return None;
        };
        let dir = tempdir("redis");
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let ready = poll_until(Duration::from_secs(10), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                redis_ping(port).then_some(true)
            });
            if ready == Some(true) {
                return Some(RedisServer { child, port, _dir: dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{test}: redis-server did not come up");
    }

    /// One for an app start under `DOWNLINK_TEST_KV=redis`: there Redis was asked for, so a
    /// missing `redis-server` is an error, never a skip (`cargo xtask test` skips the Redis runs
    /// when it is absent, except under CI).
    pub fn start_for_app(what: &str) -> RedisServer {
        if find_on_path("redis-server").is_none() {
            panic!("{what}: DOWNLINK_TEST_KV=redis, but redis-server is not on PATH (apt-get install redis-server)");
        }
        RedisServer::start_or_skip(what).expect("redis-server is on PATH")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command; panics on transport errors and error replies.
    pub fn command(&self, args: &[&str]) -> RespValue {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        RedisConn::open(self.port).call(&args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn redis_ping(port: u16) -> bool {
    let reply = RedisConn::connect(port, Duration::from_secs(2)).and_then(|mut conn| conn.request(&[b"PING"]));
    matches!(reply, Ok(RespValue::Simple(pong)) if pong == "PONG")
}

/// One reply of the Redis protocol (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n` data, `None` for nil.
    Bulk(Option<Vec<u8>>),
    /// `*n` items, `None` for nil.
    Array(Option<Vec<RespValue>>),
}

/// A minimal Redis client (binary-safe requests, whole replies of any size) for inspecting the
/// app's store.
pub(crate) struct RedisConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisConn {
    /// Connects within `timeout`; every read and write is bounded too.
    fn connect(port: u16, timeout: Duration) -> Result<RedisConn, String> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect to redis on {addr}: {e}"))?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(RedisConn { reader, writer: stream })
    }

    /// Connects or panics.
    pub(crate) fn open(port: u16) -> RedisConn {
        RedisConn::connect(port, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One command (binary-safe) and its whole reply, error replies included.
    fn request(&mut self, args: &[&[u8]]) -> Result<RespValue, String> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&req).map_err(|e| format!("redis write: {e}"))?;
        read_resp(&mut self.reader)
    }

    /// One command; panics on transport errors and on error replies.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> RespValue {
        let command = String::from_utf8_lossy(args[0]).into_owned();
        match self.request(args) {
            Ok(RespValue::Error(e)) => panic!("redis {command}: {e}"),
            Ok(v) => v,
            Err(e) => panic!("redis {command}: {e}"),
        }
    }
}

pub(crate) fn read_resp(r: &mut impl BufRead) -> Result<RespValue, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!("truncated reply {:?}", String::from_utf8_lossy(&line)));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || text.parse::<i64>().map_err(|e| format!("bad length {text:?}: {e}"));
    Ok(match line[0] {
        b'+' => RespValue::Simple(text),
        b'-' => RespValue::Error(text),
        b':' => RespValue::Int(number()?),
        b'$' => {
            let n = number()?;
            if n < 0 {
                RespValue::Bulk(None)
            } else {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data).map_err(|e| e.to_string())?;
                data.truncate(n as usize);
                RespValue::Bulk(Some(data))
            }
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                RespValue::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                RespValue::Array(Some(items))
            }
        }
        other => return Err(format!("unknown reply type {:?}", other as char)),
    })
}

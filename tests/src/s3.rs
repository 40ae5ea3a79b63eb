//! A throwaway S3-compatible server (`s3s-fs`, which checks SigV4 signatures) for the app's
//! object-storage backend, and the variables that point the app at it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::*;

/// The bucket every test server holds.
pub const TEST_BUCKET: &str = "downlink";
/// The key prefix the app is given (so tests also prove the prefix is honoured).
pub const TEST_PREFIX: &str = "files/";
const ACCESS_KEY: &str = "downlink-test";
const SECRET_KEY: &str = "downlink-test-secret";

/// `s3s-fs`: `$S3S_FS_BIN`, else on PATH, else `~/.cargo/bin/s3s-fs` (where `cargo install`
/// puts it).
pub fn s3s_fs_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("S3S_FS_BIN") {
        return Some(PathBuf::from(bin));
    }
    find_on_path("s3s-fs").or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(Path::new(&home).join(".cargo/bin/s3s-fs")).filter(|p| p.is_file())
    })
}

/// An `s3s-fs` on 127.0.0.1 serving a temp directory; killed (and the directory removed) on drop.
pub struct S3Server {
    /// The running server; `None` while [`stop`](S3Server::stop)ped.
    child: Mutex<Option<Child>>,
    bin: PathBuf,
    port: u16,
    dir: TempDir,
}

impl S3Server {
    /// Starts one with the [`TEST_BUCKET`]; panics when `s3s-fs` is not installed (S3 was
    /// asked for: `cargo install s3s-fs --version 0.14.1 --locked --features binary`).
    pub fn start(what: &str) -> S3Server {
        let bin = s3s_fs_bin().unwrap_or_else(|| {
            panic!(
                "{what}: DOWNLINK_TEST_STORAGE=s3, but s3s-fs is not installed \
                 (cargo install s3s-fs --version 0.14.1 --locked --features binary)"
            )
        });
        let dir = tempdir("s3");
        // s3s-fs keeps a bucket as a directory.
        std::fs::create_dir(dir.path().join(TEST_BUCKET)).expect("create the bucket directory");
        for _attempt in 0..3 {
            let port = free_port();
            if let Some(child) = spawn_ready(&bin, port, dir.path(), what) {
                return S3Server { child: Mutex::new(Some(child)), bin, port, dir };
            }
        }
        panic!("{what}: s3s-fs did not come up");
    }

    /// Kills the server (a fault: the bucket goes away mid-transfer); its data stays.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data after [`stop`](S3Server::stop).
    pub fn restart(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "restart of a running s3s-fs");
        let started = spawn_ready(&self.bin, self.port, self.dir.path(), "restart");
        *child = Some(started.unwrap_or_else(|| panic!("s3s-fs did not come back on port {}", self.port)));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The app variables that store file bytes here.
    pub fn app_variables(&self) -> Vec<(&'static str, String)> {
        vec![
            ("storage_backend", "s3".into()),
            ("s3_endpoint", self.endpoint()),
            ("s3_region", "us-east-1".into()),
            ("s3_bucket", TEST_BUCKET.into()),
            ("s3_access_key_id", ACCESS_KEY.into()),
            ("s3_secret_access_key", SECRET_KEY.into()),
            ("s3_path_style", "true".into()),
            ("s3_prefix", TEST_PREFIX.into()),
        ]
    }

    /// The bytes of the object at `key` (as s3s-fs keeps it: a file under the bucket).
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(TEST_BUCKET).join(key)).ok()
    }

    /// Multipart uploads neither completed nor aborted (s3s-fs keeps their parts as
    /// `.upload_id-<id>.part-<n>` files at its root).
    pub fn pending_uploads(&self) -> usize {
        let mut ids = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".upload_id-") {
                ids.insert(rest.split(".part-").next().unwrap_or_default().to_owned());
            }
        }
        ids.len()
    }

    /// Every object key in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = self.dir.path().join(TEST_BUCKET);
        let mut keys = Vec::new();
        walk(&root, &root, &mut keys);
        // s3s-fs keeps multipart parts in hidden files beside the objects.
        keys.retain(|key| !key.split('/').any(|segment| segment.starts_with('.')));
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s3s-fs` serving `dir` on `port`, once it accepts connections; `None` if it exits first
/// (the port was taken) or does not come up in 10 s.
fn spawn_ready(bin: &Path, port: u16, dir: &Path, what: &str) -> Option<Child> {
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot spawn {}: {e}", bin.display()));
    let ready = poll_until(Duration::from_secs(10), || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(true)
    });
    if ready == Some(true) {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A TCP proxy in front of an S3 server that answers the next requests with `503 SlowDown`
/// (as S3 does under load) and forwards the rest, each request on its own connection.
pub struct SlowDownProxy {
    port: u16,
    fail_next: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SlowDownProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream` (an S3 server's port).
    pub fn start(upstream: u16) -> SlowDownProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().unwrap().port();
        let proxy = SlowDownProxy { port, fail_next: Arc::default(), failed: Arc::default(), stop: Arc::default() };
        let (fail_next, failed, stop) = (proxy.fail_next.clone(), proxy.failed.clone(), proxy.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (fail_next, failed) = (fail_next.clone(), failed.clone());
                        std::thread::spawn(move || proxy_one(client, upstream, &fail_next, &failed));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        proxy
    }

    /// `http://127.0.0.1:PORT`: the `s3_endpoint` that goes through the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers the next `count` requests with `503 SlowDown`.
    pub fn fail_next(&self, count: usize) {
        self.fail_next.store(count, Ordering::SeqCst);
    }

    /// How many requests were answered with `503` so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Drop for SlowDownProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One client connection: read the request head, then refuse it or forward it (with
/// `Connection: close`, so every request is seen here).
fn proxy_one(mut client: TcpStream, upstream: u16, fail_next: &AtomicUsize, failed: &AtomicUsize) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match std::io::Read::read(&mut client, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let refuse = fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if refuse {
        // Take the whole body first, as a server would, so the client reads the answer.
        let declared = head
            .lines()
            .find_map(|line| line.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while received.len() < head_end + declared {
            match std::io::Read::read(&mut client, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        failed.fetch_add(1, Ordering::SeqCst);
        let _ = std::io::Write::write_all(&mut client, answer.as_bytes());
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let mut forwarded: String = head
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    if std::io::Write::write_all(&mut server, forwarded.as_bytes()).is_err()
        || std::io::Write::write_all(&mut server, &received[head_end..]).is_err()
    {
        return;
    }
    let (Ok(mut client_reader), Ok(mut server_writer)) = (client.try_clone(), server.try_clone()) else { return };
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut server_writer);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = upload.join();
}

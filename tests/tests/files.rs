//! End-to-end tests of the file API (`PUT`/`GET`/`HEAD`/`DELETE` on `/...`) through the real
//! application manifest (`spin.toml` at the workspace root), served by the dev host or real Spin.
//!
//! Prerequisites:
//!   cargo xtask build-wasm && cargo build --release -p devhost
//!   DEVHOST_BIN=target/release/devhost cargo test -p downlink-e2e --test files
//!
//! The host and store come from the environment (see `downlink_e2e::test_env`):
//! `DOWNLINK_TEST_HOST=devhost|spin` (Spin: `SPIN_BIN`, else `spin` on PATH) and
//! `DOWNLINK_TEST_KV=sqlite|redis`; `cargo xtask test` runs every combination it can.
//!
//! Every test starts its own host on 127.0.0.1 with a fresh state dir and its own token
//! configuration; every HTTP call has a timeout and every poll loop a deadline.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use downlink_e2e::*;
use serde_json::json;

const MIB: usize = 1024 * 1024;
/// Per-exchange timeout of the test client (large bodies need more than the harness default).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const SUITE: &str = "files";

/// `file.read` + `file.write`.
const ALICE: &str = "alice";
/// `file.read` only.
const READER: &str = "reader";
/// `file.write` only.
const WRITER: &str = "writer";
/// `admin` (implies every scope).
const ROOT: &str = "root";
/// `download.create` + `download.read` (no file scopes).
const FETCHER: &str = "fetcher";

/// The `api_tokens` entries (the variable holds hashes only, never the tokens themselves).
const TOKENS: &[(&str, &[&str])] = &[
    (ALICE, &["file.read", "file.write"]),
    (READER, &["file.read"]),
    (WRITER, &["file.write"]),
    (ROOT, &["admin"]),
    (FETCHER, &["download.create", "download.read"]),
];

fn crc32_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
}

fn token_for(name: &str) -> String {
    downlink_e2e::token_for(SUITE, name)
}

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

/// [`TestApp`] as this suite's principals, with the file API helpers.
struct App(TestApp);

impl std::ops::Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl App {
    /// The real app with the standard token set.
    fn start() -> App {
        App(TestApp::start(SUITE, TOKENS, &[], CLIENT_TIMEOUT))
    }

    /// The real app; `None` starts it without the `api_tokens` variable.
    fn start_with_tokens(tokens: Option<&str>) -> App {
        let mut builder = DevHost::selected(app_manifest());
        if let Some(tokens) = tokens {
            builder = builder.variable("api_tokens", tokens);
        }
        App(TestApp::from_builder(SUITE, builder, CLIENT_TIMEOUT))
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(ALICE), &[], b"")
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call("GET", path, Some(ALICE), headers, b"")
    }

    fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, Some(ALICE), &[], b"")
    }

    fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.call("PUT", path, Some(ALICE), &[], body)
    }

    fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, Some(ALICE), &[], b"")
    }

    /// A raw HTTP/1.1 request (for targets clients would normalise, e.g. `..`).
    fn raw(&self, method: &str, target: &str, principal: Option<&str>, body: &[u8]) -> Resp {
        let request = raw_http(method, target, principal, &[], body);
        raw_request(self.host.addr(), &request).unwrap_or_else(|e| {
            panic!("raw {method} {target} failed: {e}\n--- dev host stderr ---\n{}", self.host.stderr())
        })
    }

    /// The listing JSON of directory `path` (URL form), asserting 200.
    fn list(&self, path: &str) -> Json {
        let resp = self.get(path);
        expect_status(&resp, 200, &format!("GET {path} (listing)"));
        let listing = resp.json();
        assert!(listing["entries"].is_array(), "GET {path}: no `entries` array in {listing}");
        listing
    }

    /// Entry names of directory `path`, in the order listed.
    fn names(&self, path: &str) -> Vec<String> {
        self.list(path)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap_or_else(|| panic!("entry without a name: {e}")).to_string())
            .collect()
    }
}

/// A whole HTTP/1.1 request with `Connection: close` (and `Content-Length` when there is a body
/// or the method usually has one).
fn raw_http(method: &str, target: &str, principal: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(name) = principal {
        head.push_str(&format!("Authorization: Bearer {}\r\n", token_for(name)));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// PUT `url` and check the success body; returns it.
fn upload(app: &App, url: &str, expected_path: &str, data: &[u8], status: u16) -> Json {
    let resp = app.put(url, data);
    expect_status(&resp, status, &format!("PUT {url} ({} bytes)", data.len()));
    let body = resp.json();
    assert_eq!(body["success"], json!(true), "PUT {url}: {body}");
    assert_eq!(body["path"], json!(expected_path), "PUT {url}: normalised path in {body}");
    assert_eq!(body["size"], json!(data.len()), "PUT {url}: size in {body}");
    assert_eq!(body["crc32"], json!(crc32_hex(data)), "PUT {url}: crc32 in {body}");
    assert!(body["content_type"].as_str().is_some_and(|c| !c.is_empty()), "PUT {url}: content_type in {body}");
    let etag = body["etag"].as_str().unwrap_or_else(|| panic!("PUT {url}: no etag in {body}"));
    assert!(
        etag.len() >= 3 && etag.starts_with('"') && etag.ends_with('"'),
        "PUT {url}: etag {etag:?} is not a quoted string"
    );
    body
}

/// GET `url`, expect exactly `data` and the headers a file download carries; returns the
/// response.
fn expect_download(app: &App, url: &str, data: &[u8], put: &Json) -> Resp {
    let resp = app.get(url);
    expect_status(&resp, 200, &format!("GET {url}"));
    assert_eq!(resp.body.len(), data.len(), "GET {url}: body length");
    assert_eq!(sha256_hex(&resp.body), sha256_hex(data), "GET {url}: body sha256 differs from the upload");
    expect_file_headers(&resp, url, data.len(), put);
    resp
}

fn expect_file_headers(resp: &Resp, what: &str, size: usize, put: &Json) {
    assert_eq!(
        resp.header("content-length"),
        Some(size.to_string().as_str()),
        "{what}: Content-Length; headers {:?}",
        resp.headers
    );
    assert_eq!(
        resp.header("etag"),
        put["etag"].as_str(),
        "{what}: ETag differs from the PUT's; headers {:?}",
        resp.headers
    );
    let last_modified =
        resp.header("last-modified").unwrap_or_else(|| panic!("{what}: no Last-Modified; headers {:?}", resp.headers));
    assert!(last_modified.ends_with(" GMT"), "{what}: Last-Modified {last_modified:?} is not an HTTP date");
    assert_eq!(
        resp.header("content-type"),
        put["content_type"].as_str(),
        "{what}: Content-Type differs from the PUT's content_type"
    );
    assert_eq!(resp.header("accept-ranges"), Some("bytes"), "{what}: Accept-Ranges; headers {:?}", resp.headers);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The listing's `path`, without surrounding slashes.
fn listing_path(listing: &Json) -> String {
    listing["path"]
        .as_str()
        .unwrap_or_else(|| panic!("listing without a path: {listing}"))
        .trim_matches('/')
        .to_string()
}

fn assert_sorted(names: &[String], what: &str) {
    let mut sorted = names.to_vec();
    sorted.sort();
    assert_eq!(names, sorted.as_slice(), "{what}: entries are not sorted by name");
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_boundary_sizes() {
    let app = App::start();
    let sizes = [0, 1, MIB - 1, MIB, MIB + 1];
    for (i, &size) in sizes.iter().enumerate() {
        let data = pseudo_random_bytes(i as u64 + 1, size);
        let url = format!("/sizes/{size}.bin");
        let put = upload(&app, &url, &format!("sizes/{size}.bin"), &data, 201);
        expect_download(&app, &url, &data, &put);

        let head = app.head(&url);
        expect_status(&head, 200, &format!("HEAD {url}"));
        assert!(head.body.is_empty(), "HEAD {url} returned a body of {} bytes", head.body.len());
        expect_file_headers(&head, &format!("HEAD {url}"), size, &put);
    }

    let listing = app.list("/sizes/");
    let entries = listing["entries"].as_array().unwrap();
    let got: Vec<(String, u64)> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["size"].as_u64().unwrap_or(u64::MAX)))
        .collect();
    let mut expected: Vec<(String, u64)> = sizes.iter().map(|s| (format!("{s}.bin"), *s as u64)).collect();
    expected.sort();
    assert_eq!(got, expected, "listing of /sizes/: {listing}");
}

#[test]
fn round_trip_50_mib() {
    if skip_on_hosted_platform("a 50 MiB PUT is over the hosted 10 MiB request body cap") {
        return;
    }
    let app = App::start();
    let data = pseudo_random_bytes(50, 50 * MIB);
    let started = Instant::now();
    let put = upload(&app, "/big/fifty.bin", "big/fifty.bin", &data, 201);
    let up = started.elapsed();
    let started = Instant::now();
    expect_download(&app, "/big/fifty.bin", &data, &put);
    let down = started.elapsed();
    eprintln!("50 MiB: upload {up:?}, download {down:?}");
    let listing = app.list("/big/");
    assert_eq!(listing["entries"][0]["name"], json!("fifty.bin"), "{listing}");
    assert_eq!(listing["entries"][0]["size"], json!(50 * MIB), "{listing}");
}

#[test]
fn upload_with_chunked_transfer_encoding() {
    let app = App::start();
    let data = pseudo_random_bytes(7, 300 * 1024 + 17);
    let mut head = format!(
        "PUT /chunked/data.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        token_for(ALICE)
    )
    .into_bytes();
    for piece in data.chunks(100 * 1024) {
        head.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        head.extend_from_slice(piece);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"0\r\n\r\n");
    let resp =
        raw_request(app.host.addr(), &head).unwrap_or_else(|e| panic!("chunked PUT: {e}\n{}", app.host.stderr()));
    expect_status(&resp, 201, "chunked PUT /chunked/data.bin");
    let put = resp.json();
    assert_eq!(put["size"], json!(data.len()), "{put}");
    assert_eq!(put["crc32"], json!(crc32_hex(&data)), "{put}");
    expect_download(&app, "/chunked/data.bin", &data, &put);
}

#[test]
fn names_with_spaces_utf8_and_reserved_characters_round_trip() {
    let app = App::start();
    // (decoded name under names/, contents)
    let names = [
        "with space.txt",
        "café.txt",
        "hash#1.txt",
        "100%.txt",
        "a+b.txt",
        "%2e%2e",            // a literal name: sent as %252e%252e, decoded once
        "日本/データ 1.txt", // UTF-8 directory and file
    ];
    let mut puts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = format!("contents of {name} #{i}").into_bytes();
        let url = format!("/names/{}", encode_path(name));
        let put = upload(&app, &url, &format!("names/{name}"), &data, 201);
        expect_download(&app, &url, &data, &put);
        puts.push((url, data, put));
    }
    // Spot-check the encodings the test relies on.
    assert_eq!(puts[2].0, "/names/hash%231.txt");
    assert_eq!(puts[3].0, "/names/100%25.txt");
    assert_eq!(puts[4].0, "/names/a%2Bb.txt");
    assert_eq!(puts[5].0, "/names/%252e%252e");

    // `+` in a path is a literal plus, never a space.
    let plus = app.get("/names/a+b.txt");
    expect_status(&plus, 200, "GET /names/a+b.txt (raw plus)");
    assert_eq!(plus.body, puts[4].1);
    expect_error(&app.get("/names/a%20b.txt"), 404, "NOT_FOUND", "GET /names/a%20b.txt");
    // Lower-case escapes decode the same way.
    let lower = app.get("/names/caf%c3%a9.txt");
    expect_status(&lower, 200, "GET /names/caf%c3%a9.txt");
    assert_eq!(lower.body, puts[1].1);
    // Decoded once only: the literal `%2e%2e` file is not `..`, and `%2525` is not `%`.
    expect_error(&app.get("/names/100%2525.txt"), 404, "NOT_FOUND", "GET /names/100%2525.txt");

    let listing = app.list("/names/");
    assert_eq!(listing_path(&listing), "names", "{listing}");
    let listed = app.names("/names/");
    assert_sorted(&listed, "/names/");
    let expected: BTreeSet<String> =
        ["with space.txt", "café.txt", "hash#1.txt", "100%.txt", "a+b.txt", "%2e%2e", "日本"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected, "listing {listing}");
    let dir = listing["entries"].as_array().unwrap().iter().find(|e| e["name"] == json!("日本")).unwrap();
    assert_eq!(dir["type"], json!("dir"), "{dir}");
    assert_eq!(app.names(&format!("/names/{}/", encode_path("日本"))), vec!["データ 1.txt".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Invalid paths
// ---------------------------------------------------------------------------------------------

/// Every rejected request leaves exactly `sandbox/keep.txt` behind.
fn assert_untouched(app: &App, what: &str) {
    assert_eq!(app.names("/"), vec!["sandbox".to_string()], "{what}: the root listing changed");
    assert_eq!(app.names("/sandbox/"), vec!["keep.txt".to_string()], "{what}: /sandbox/ changed");
    let keep = app.get("/sandbox/keep.txt");
    expect_status(&keep, 200, &format!("{what}: GET /sandbox/keep.txt"));
    assert_eq!(keep.body, b"keep", "{what}: /sandbox/keep.txt changed");
    for target in ["/evil.txt", "/sandbox/evil.txt", "/sandbox/a", "/sandbox/a/b.txt", "/sandbox/b.txt", "/evil"] {
        expect_error(&app.get(target), 404, "NOT_FOUND", &format!("{what}: would-be target GET {target}"));
    }
}

#[test]
fn traversal_and_invalid_paths_are_rejected_and_nothing_is_written() {
    let app = App::start();
    upload(&app, "/sandbox/keep.txt", "sandbox/keep.txt", b"keep", 201);
    assert_untouched(&app, "setup");

    let long_segment = "x".repeat(256);
    let long_utf8_segment = "é".repeat(128); // 256 bytes
    let long_path = format!("/sandbox/{}", vec!["y".repeat(200); 6].join("/"));
    // Sent through the HTTP client (already percent-encoded).
    let encoded: Vec<String> = vec![
        "/sandbox/%2e%2e/evil.txt".into(),
        "/sandbox/%2E%2E/evil.txt".into(),
        "/sandbox/.%2e/evil.txt".into(),
        "/sandbox/%2e./evil.txt".into(),
        "/%2e%2e/evil.txt".into(),
        "/sandbox/%2e%2e".into(),
        "/sandbox/%2e%2e/%2e%2e/evil.txt".into(),
        "/sandbox/%2e/evil.txt".into(),
        "/sandbox/..%2fevil.txt".into(),
        "/sandbox/..%2Fevil.txt".into(),
        "/sandbox/a%2fb.txt".into(),
        "/sandbox/a%2Fb.txt".into(),
        "/sandbox/%2e%2e%2fevil.txt".into(),
        "/sandbox/..%5cevil.txt".into(),
        "/sandbox/a%5cb.txt".into(),
        "/sandbox/a%5Cb.txt".into(),
        "/sandbox/evil%00.txt".into(),
        "/sandbox/evil%00".into(),
        "/sandbox/evil%01.txt".into(),
        "/sandbox/evil%0a.txt".into(),
        "/sandbox/evil%0d%0a.txt".into(),
        "/sandbox/evil%09.txt".into(),
        "/sandbox/evil%1f.txt".into(),
        "/sandbox/evil%7f.txt".into(),
        "/sandbox/evil%c2%85.txt".into(), // U+0085, a C1 control character
        "/sandbox/evil%ff.txt".into(),    // not UTF-8
        "/sandbox/evil%c3.txt".into(),    // truncated UTF-8
        format!("/sandbox/{long_segment}"),
        format!("/sandbox/{}", encode(&long_utf8_segment)),
        long_path.clone(),
    ];
    for url in &encoded {
        let what = format!("PUT {}", short(url));
        expect_error(&app.put(url, b"evil"), 400, "INVALID_PATH", &what);
        assert_untouched(&app, &what);
    }

    // Sent raw, because HTTP clients normalise dot segments and empty segments.
    let raw_targets = [
        "/sandbox/../evil.txt",
        "/../evil.txt",
        "/sandbox/../../evil.txt",
        "/sandbox/a/../../evil.txt",
        "/sandbox/..",
        "/sandbox/./evil.txt",
        "/sandbox//evil.txt",
        "//evil.txt",
        "/sandbox/100%.txt",
        "/sandbox/%zz.txt",
    ];
    for target in raw_targets {
        let what = format!("raw PUT {target}");
        expect_error(&app.raw("PUT", target, Some(ALICE), b"evil"), 400, "INVALID_PATH", &what);
        assert_untouched(&app, &what);
    }

    // Reads and deletes go through the same rules.
    for target in ["/sandbox/../sandbox/keep.txt", "/sandbox/./keep.txt", "/sandbox/..", "/sandbox/../"] {
        let what = format!("raw GET {target}");
        expect_error(&app.raw("GET", target, Some(ALICE), b""), 400, "INVALID_PATH", &what);
    }
    expect_error(
        &app.get("/sandbox/%2e%2e/sandbox/keep.txt"),
        400,
        "INVALID_PATH",
        "GET /sandbox/%2e%2e/sandbox/keep.txt",
    );
    for target in ["/sandbox/..", "/sandbox/../", "/sandbox/../sandbox", "/sandbox/./keep.txt"] {
        let what = format!("raw DELETE {target}");
        expect_error(&app.raw("DELETE", target, Some(ALICE), b""), 400, "INVALID_PATH", &what);
        assert_untouched(&app, &what);
    }
    for url in ["/sandbox/%2e%2e", "/sandbox/%2e%2e/sandbox", "/sandbox/keep.txt%2f", "/sandbox%2fkeep.txt"] {
        let what = format!("DELETE {url}");
        expect_error(&app.delete(url), 400, "INVALID_PATH", &what);
        assert_untouched(&app, &what);
    }
}

#[test]
fn path_length_limits() {
    let app = App::start();
    if bytes_in_bucket() {
        // s3s-fs names a metadata file after the base64 of each key, so keys over ~180 bytes
        // fail there (a limit of the test server; S3 takes 1024-byte keys). The limits are the
        // same: a 1025-byte path is refused before the bucket is asked.
        eprintln!("long keys skipped with DOWNLINK_TEST_STORAGE=s3 (s3s-fs file-name limit)");
        let over = format!("len/{}/{}/{}/{}", "a".repeat(255), "b".repeat(255), "c".repeat(255), "e".repeat(253));
        expect_error(&app.put(&format!("/{over}"), b"1025"), 400, "INVALID_PATH", "PUT a 1025-byte path");
        return;
    }
    // A 255-byte segment is fine, 256 is not (bytes, not characters).
    let ok_segment = "s".repeat(255);
    upload(&app, &format!("/len/{ok_segment}"), &format!("len/{ok_segment}"), b"255", 201);
    let utf8_ok = format!("{}a", "é".repeat(127)); // 255 bytes
    upload(&app, &format!("/len/{}", encode(&utf8_ok)), &format!("len/{utf8_ok}"), b"utf8", 201);

    // A normalised path of exactly 1024 bytes is fine, 1025 is not.
    let prefix = format!("len/{}/{}/{}/", "a".repeat(255), "b".repeat(255), "c".repeat(255));
    assert_eq!(prefix.len(), 772);
    let max = format!("{prefix}{}", "d".repeat(1024 - 772));
    assert_eq!(max.len(), 1024);
    let put = upload(&app, &format!("/{max}"), &max, b"1024", 201);
    expect_download(&app, &format!("/{max}"), b"1024", &put);

    let over = format!("{prefix}{}", "e".repeat(1025 - 772));
    expect_error(&app.put(&format!("/{over}"), b"1025"), 400, "INVALID_PATH", "PUT a 1025-byte path");
    let mut listed = app.names(&format!("/{prefix}"));
    listed.sort();
    assert_eq!(listed, vec!["d".repeat(252)], "a rejected PUT left something in {prefix}");
}

// ---------------------------------------------------------------------------------------------
// Ranges, HEAD, conditional requests
// ---------------------------------------------------------------------------------------------

#[test]
fn range_requests() {
    let app = App::start();
    let data = pseudo_random_bytes(1000, 1000);
    let put = upload(&app, "/r/data.bin", "r/data.bin", &data, 201);
    let etag = put["etag"].as_str().unwrap().to_string();

    let partial = |range: &str, start: usize, end: usize| {
        let resp = app.get_with("/r/data.bin", &[("Range", range)]);
        let what = format!("GET /r/data.bin with Range: {range}");
        expect_status(&resp, 206, &what);
        assert_eq!(
            resp.header("content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str()),
            "{what}: Content-Range"
        );
        assert_eq!(
            resp.header("content-length"),
            Some((end - start + 1).to_string().as_str()),
            "{what}: Content-Length"
        );
        assert_eq!(resp.body.len(), end - start + 1, "{what}: body length");
        assert!(resp.body == data[start..=end], "{what}: wrong bytes");
    };
    partial("bytes=0-99", 0, 99);
    partial("bytes=0-0", 0, 0);
    partial("bytes=500-599", 500, 599);
    partial("bytes=999-999", 999, 999);
    partial("bytes=-100", 900, 999);
    partial("bytes=-1", 999, 999);
    partial("bytes=900-", 900, 999);
    partial("bytes=0-", 0, 999);
    partial("bytes=990-5000", 990, 999); // the end is clamped to the size

    for range in ["bytes=1000-", "bytes=1000-1000", "bytes=5000-6000"] {
        let resp = app.get_with("/r/data.bin", &[("Range", range)]);
        let what = format!("GET /r/data.bin with Range: {range}");
        expect_status(&resp, 416, &what);
        assert_eq!(resp.header("content-range"), Some("bytes */1000"), "{what}: Content-Range");
    }

    // Several ranges: a full 200 is acceptable (so is a multipart 206).
    let multi = app.get_with("/r/data.bin", &[("Range", "bytes=0-9,20-29")]);
    match multi.status {
        200 => assert!(multi.body == data, "multi-range 200 must carry the whole file"),
        206 => assert!(
            multi.header("content-type").unwrap_or("").starts_with("multipart/byteranges"),
            "multi-range 206 must be multipart/byteranges, got {:?}",
            multi.headers
        ),
        other => panic!("multi-range: expected 200 or 206, got {other}: {:?}", multi.text()),
    }
    // A suffix longer than the file is the whole file.
    let whole = app.get_with("/r/data.bin", &[("Range", "bytes=-5000")]);
    assert!(matches!(whole.status, 200 | 206), "Range bytes=-5000: got {}", whole.status);
    assert!(whole.body == data, "Range bytes=-5000 must return the whole file");
    if whole.status == 206 {
        assert_eq!(whole.header("content-range"), Some("bytes 0-999/1000"));
    }
    // A malformed Range header is ignored (RFC 9110 §14.2) or refused, never misread.
    let bad = app.get_with("/r/data.bin", &[("Range", "bytes=abc")]);
    assert!(matches!(bad.status, 200 | 416), "Range bytes=abc: got {}", bad.status);
    if bad.status == 200 {
        assert!(bad.body == data);
    }

    // If-Range: current validator → the range; stale one → the whole file.
    let resp = app.get_with("/r/data.bin", &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    expect_status(&resp, 206, "If-Range with the current ETag");
    assert!(resp.body == data[10..20]);
    let resp = app.get_with("/r/data.bin", &[("Range", "bytes=10-19"), ("If-Range", "\"stale-etag\"")]);
    expect_status(&resp, 200, "If-Range with a stale ETag");
    assert!(resp.body == data, "If-Range with a stale ETag must return the whole file");
    expect_file_headers(&resp, "If-Range stale", 1000, &put);

    // Ranges that start, end or cross 1 MiB chunk boundaries of a multi-chunk file.
    let big = pseudo_random_bytes(2000, 2 * MIB + 5);
    let put_big = upload(&app, "/r/big.bin", "r/big.bin", &big, 201);
    let size = big.len();
    for (start, end) in [
        (MIB - 10, MIB + 10),
        (MIB - 1, MIB - 1),
        (MIB, MIB),
        (MIB - 1, MIB),
        (0, MIB - 1),
        (MIB, 2 * MIB - 1),
        (2 * MIB - 3, 2 * MIB + 2),
        (1, size - 2),
        (size - 1, size - 1),
    ] {
        let range = format!("bytes={start}-{end}");
        let resp = app.get_with("/r/big.bin", &[("Range", range.as_str())]);
        let what = format!("GET /r/big.bin with Range: {range}");
        expect_status(&resp, 206, &what);
        assert_eq!(resp.header("content-range"), Some(format!("bytes {start}-{end}/{size}").as_str()), "{what}");
        assert_eq!(resp.body.len(), end - start + 1, "{what}: body length");
        assert!(resp.body == big[start..=end], "{what}: wrong bytes");
        assert_eq!(resp.header("etag"), put_big["etag"].as_str(), "{what}: ETag");
    }
    let resp = app.get_with("/r/big.bin", &[("Range", "bytes=-3")]);
    expect_status(&resp, 206, "suffix range on /r/big.bin");
    assert!(resp.body == big[size - 3..]);

    // A range on an empty file cannot be satisfied.
    upload(&app, "/r/empty.bin", "r/empty.bin", b"", 201);
    let resp = app.get_with("/r/empty.bin", &[("Range", "bytes=0-")]);
    expect_status(&resp, 416, "Range bytes=0- on an empty file");
    assert_eq!(resp.header("content-range"), Some("bytes */0"));
}

#[test]
fn verify_reads_checks_whole_files_against_the_crc_recorded_at_write_time() {
    // Bytes changed behind the app's back, same length: only the CRC can tell.
    if bytes_in_bucket() {
        // An object changed behind its record is refused by the ETag the record keeps, CRC or
        // not (core test `bytes_replaced_behind_the_record_are_never_served_as_its`).
        eprintln!("skipped with DOWNLINK_TEST_STORAGE=s3: chunks are a KV-backend layout");
        return;
    }
    let data = pseudo_random_bytes(41, 3 * MIB + 17);
    for verify in [false, true] {
        let builder = app_builder(SUITE, TOKENS).variable("verify_reads", if verify { "true" } else { "false" });
        let app = App(TestApp::from_builder(SUITE, builder, CLIENT_TIMEOUT));
        upload(&app, "/rot/f.bin", "rot/f.bin", &data, 201);
        let chunk = app.host.kv().keys().into_iter().find(|key| key.starts_with("chunk:") && key.ends_with(":1"));
        let chunk = chunk.expect("the 3 MiB file has a second chunk");
        let mut bytes = app.host.kv().get(&chunk).expect("the chunk is stored");
        bytes[10] ^= 0xff;
        app.host.kv().set(&chunk, &bytes);

        let auth = format!("Bearer {}", token_for(ALICE));
        let mut received = Vec::new();
        let result =
            http_request_streaming(&app.agent, "GET", &app.host.url("/rot/f.bin"), &[("Authorization", &auth)], |b| {
                received.extend_from_slice(b)
            });
        if verify {
            match result {
                Err(e) => eprintln!("cut off as expected after {} bytes: {e}", received.len()),
                Ok((resp, total)) => {
                    assert_eq!(resp.status, 200);
                    assert!(total < data.len() as u64, "verify_reads=true served all {total} bytes of a changed file");
                }
            }
            assert!(received.len() < data.len(), "the whole changed file arrived");
            // The log line may land after the client saw the cut (Spin writes it from the
            // instance, which runs on after the connection ends).
            let logged = poll_until(Duration::from_secs(10), || {
                Some(app.host.component_stderr("files")).filter(|s| s.contains("CRC-32"))
            });
            assert!(
                logged.is_some(),
                "the files component logs why it stopped: {}",
                app.host.component_stderr("files")
            );
        } else {
            let (resp, total) = result.expect("served as stored");
            assert_eq!((resp.status, total), (200, data.len() as u64));
            assert_ne!(received, data, "the changed byte is served: reads trust the recorded CRC by default");
        }
        // A range cannot be checked against the whole file's CRC either way.
        let range = app.get_with("/rot/f.bin", &[("Range", "bytes=0-99")]);
        expect_status(&range, 206, "a range of the changed file");
        assert_eq!(range.body, data[..100]);
    }
}

#[test]
fn head_and_conditional_requests() {
    let app = App::start();
    let data = b"{\"hello\": \"world\"}\n".to_vec();
    let put = upload(&app, "/c/doc.json", "c/doc.json", &data, 201);
    let etag = put["etag"].as_str().unwrap().to_string();
    assert!(put["content_type"].as_str().unwrap().starts_with("application/json"), "{put}");

    let head = app.head("/c/doc.json");
    expect_status(&head, 200, "HEAD /c/doc.json");
    assert!(head.body.is_empty(), "HEAD returned a body");
    expect_file_headers(&head, "HEAD /c/doc.json", data.len(), &put);
    let get = expect_download(&app, "/c/doc.json", &data, &put);
    assert_eq!(head.header("last-modified"), get.header("last-modified"), "HEAD and GET disagree on Last-Modified");

    let missing = app.head("/c/missing.json");
    expect_status(&missing, 404, "HEAD /c/missing.json");
    assert!(missing.body.is_empty(), "HEAD 404 returned a body");

    let resp = app.get_with("/c/doc.json", &[("If-None-Match", &etag)]);
    expect_status(&resp, 304, "If-None-Match with the current ETag");
    assert!(resp.body.is_empty(), "304 with a body of {} bytes", resp.body.len());
    assert_eq!(resp.header("etag"), Some(etag.as_str()), "304 must repeat the ETag (RFC 9110 §15.4.5)");
    let resp = app.get_with("/c/doc.json", &[("If-None-Match", &format!("\"other\", {etag}"))]);
    expect_status(&resp, 304, "If-None-Match with a list containing the ETag");
    let resp = app.get_with("/c/doc.json", &[("If-None-Match", "\"other\"")]);
    expect_status(&resp, 200, "If-None-Match with another ETag");
    assert_eq!(resp.body, data);
    let resp = app.call("HEAD", "/c/doc.json", Some(ALICE), &[("If-None-Match", &etag)], b"");
    expect_status(&resp, 304, "HEAD with If-None-Match");

    // After an overwrite the old ETag no longer matches.
    let put2 = upload(&app, "/c/doc.json", "c/doc.json", b"{}", 200);
    assert_ne!(put2["etag"], put["etag"], "overwrite kept the ETag");
    let resp = app.get_with("/c/doc.json", &[("If-None-Match", &etag)]);
    expect_status(&resp, 200, "If-None-Match with the pre-overwrite ETag");
    assert_eq!(resp.body, b"{}");
}

#[test]
fn if_match_makes_overwrites_and_deletes_conditional() {
    let app = App::start();
    let first = upload(&app, "/cond/f.txt", "cond/f.txt", b"version one", 201);
    let etag = first["etag"].as_str().unwrap().to_string();

    let stale = app.call("PUT", "/cond/f.txt", Some(ALICE), &[("If-Match", "\"stale\"")], b"lost update");
    expect_error(&stale, 412, "PRECONDITION_FAILED", "PUT with a stale If-Match");
    assert_eq!(app.get("/cond/f.txt").body, b"version one", "a refused PUT keeps nothing");
    let missing = app.call("PUT", "/cond/new.txt", Some(ALICE), &[("If-Match", &etag)], b"x");
    expect_error(&missing, 412, "PRECONDITION_FAILED", "PUT with If-Match where no file is");

    let current = app.call("PUT", "/cond/f.txt", Some(ALICE), &[("If-Match", &etag)], b"version two");
    expect_status(&current, 200, "PUT with the current ETag");
    let second = current.json()["etag"].as_str().unwrap().to_string();
    assert_eq!(app.get("/cond/f.txt").body, b"version two");

    let stale = app.call("DELETE", "/cond/f.txt", Some(ALICE), &[("If-Match", &etag)], b"");
    expect_error(&stale, 412, "PRECONDITION_FAILED", "DELETE with the pre-overwrite ETag");
    assert_eq!(app.get("/cond/f.txt").body, b"version two", "a refused DELETE removes nothing");
    let resp = app.call("DELETE", "/cond/f.txt", Some(ALICE), &[("If-Match", &second)], b"");
    expect_status(&resp, 200, "DELETE with the current ETag");
    expect_status(&app.get("/cond/f.txt"), 404, "GET after the conditional DELETE");
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

#[test]
fn directory_listing_and_content_types() {
    let app = App::start();
    let started = unix_now();
    let files: [(&str, &[u8], &str); 5] = [
        ("docs/readme.txt", b"read me", "text/plain"),
        ("docs/data.json", b"[1,2,3]", "application/json"),
        ("docs/blob.unknownext", b"\x00\x01\x02", "application/octet-stream"),
        ("docs/Zeta.txt", b"upper-case Z sorts first", "text/plain"),
        ("docs/sub/inner.txt", b"inner", "text/plain"),
    ];
    for (path, data, content_type) in files {
        let put = upload(&app, &format!("/{path}"), path, data, 201);
        assert!(
            put["content_type"].as_str().unwrap().starts_with(content_type),
            "PUT {path}: content_type {}",
            put["content_type"]
        );
        let got = expect_download(&app, &format!("/{path}"), data, &put);
        assert!(got.header("content-type").unwrap().starts_with(content_type));
    }

    let with_slash = app.list("/docs/");
    let without_slash = app.list("/docs");
    assert_eq!(with_slash["entries"], without_slash["entries"], "GET /docs/ and GET /docs differ");
    assert_eq!(listing_path(&with_slash), "docs", "{with_slash}");
    let entries = with_slash["entries"].as_array().unwrap();
    let names: Vec<String> = entries.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_sorted(&names, "/docs/");
    assert_eq!(
        names.iter().cloned().collect::<BTreeSet<_>>(),
        ["readme.txt", "data.json", "blob.unknownext", "Zeta.txt", "sub"].iter().map(|s| s.to_string()).collect(),
        "{with_slash}"
    );
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        if name == "sub" {
            assert_eq!(entry["type"], json!("dir"), "{entry}");
            continue;
        }
        let (_, data, content_type) = files.iter().find(|(p, _, _)| p.ends_with(&format!("/{name}"))).unwrap();
        assert_eq!(entry["type"], json!("file"), "{entry}");
        assert_eq!(entry["size"], json!(data.len()), "{entry}");
        let modified = entry["modified"].as_u64().unwrap_or_else(|| panic!("modified is not unix seconds: {entry}"));
        assert!(
            modified + 60 >= started && modified <= unix_now() + 60,
            "modified {modified} is not about now ({started}): {entry}"
        );
        assert!(entry["content_type"].as_str().unwrap_or("").starts_with(content_type), "{entry}");
    }
    assert_eq!(app.names("/docs/sub/"), vec!["inner.txt".to_string()]);

    let root = app.list("/");
    assert_eq!(listing_path(&root), "", "{root}");
    assert_eq!(root["entries"].as_array().unwrap().len(), 1, "{root}");
    assert_eq!(root["entries"][0]["name"], json!("docs"), "{root}");
    assert_eq!(root["entries"][0]["type"], json!("dir"), "{root}");

    expect_error(&app.get("/nope/"), 404, "NOT_FOUND", "GET /nope/");
    expect_error(&app.get("/docs/missing.txt"), 404, "NOT_FOUND", "GET /docs/missing.txt");
    // A file is not a directory.
    let as_dir = app.get("/docs/readme.txt/");
    assert!(
        matches!(as_dir.status, 404 | 409 | 400),
        "GET /docs/readme.txt/: got {} {:?}",
        as_dir.status,
        as_dir.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_or_invalid_credentials_are_401() {
    let app = App::start();
    upload(&app, "/secret.txt", "secret.txt", b"secret", 201);
    let wrong = format!("Bearer {}", token_for("nobody"));
    let basic = "Basic YWxpY2U6cGFzc3dvcmQ=".to_string();
    let bearer_basic = format!("Basic {}", token_for(ALICE));
    let cases: [(&str, Option<&str>); 5] = [
        ("no Authorization header", None),
        ("an unknown token", Some(&wrong)),
        ("the Basic scheme", Some(&basic)),
        ("a valid token under the Basic scheme", Some(&bearer_basic)),
        ("an empty Bearer", Some("Bearer ")),
    ];
    for (case, authorization) in cases {
        let headers: Vec<(&str, &str)> = authorization.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        for (method, path, body) in [
            ("GET", "/secret.txt", &b""[..]),
            ("GET", "/", b""),
            ("HEAD", "/secret.txt", b""),
            ("PUT", "/unauth.txt", b"nope"),
            ("DELETE", "/secret.txt", b""),
        ] {
            let what = format!("{method} {path} with {case}");
            let resp = app.call(method, path, None, &headers, body);
            if method == "HEAD" {
                expect_status(&resp, 401, &what);
            } else {
                expect_error(&resp, 401, "UNAUTHORIZED", &what);
            }
            expect_bearer_challenge(&resp, &what);
            assert!(!resp.text().contains(&token_for(ALICE)), "{what}: the response echoes a token");
        }
    }
    expect_error(&app.get("/unauth.txt"), 404, "NOT_FOUND", "an unauthenticated PUT wrote a file");
    assert_eq!(app.get("/secret.txt").body, b"secret", "an unauthenticated DELETE removed the file");
}

#[test]
fn missing_scope_is_403() {
    let app = App::start();
    upload(&app, "/shared/a.txt", "shared/a.txt", b"a", 201);

    // Read-only token: can read and list, cannot write or delete.
    expect_status(&app.call("GET", "/shared/a.txt", Some(READER), &[], b""), 200, "reader GET");
    expect_status(&app.call("GET", "/shared/", Some(READER), &[], b""), 200, "reader listing");
    expect_error(&app.call("PUT", "/shared/b.txt", Some(READER), &[], b"b"), 403, "FORBIDDEN", "reader PUT new");
    expect_error(&app.call("PUT", "/shared/a.txt", Some(READER), &[], b"x"), 403, "FORBIDDEN", "reader PUT overwrite");
    expect_error(&app.call("DELETE", "/shared/a.txt", Some(READER), &[], b""), 403, "FORBIDDEN", "reader DELETE");
    expect_error(&app.call("DELETE", "/shared", Some(READER), &[], b""), 403, "FORBIDDEN", "reader DELETE dir");
    assert_eq!(app.names("/shared/"), vec!["a.txt".to_string()], "a forbidden request changed /shared/");
    assert_eq!(app.get("/shared/a.txt").body, b"a");

    // Write-only token: can upload and delete, cannot read or list.
    expect_error(&app.call("GET", "/shared/a.txt", Some(WRITER), &[], b""), 403, "FORBIDDEN", "writer GET");
    expect_error(&app.call("GET", "/shared/", Some(WRITER), &[], b""), 403, "FORBIDDEN", "writer listing");
    expect_error(&app.call("GET", "/", Some(WRITER), &[], b""), 403, "FORBIDDEN", "writer root listing");
    expect_status(&app.call("HEAD", "/shared/a.txt", Some(WRITER), &[], b""), 403, "writer HEAD");
    expect_status(&app.call("PUT", "/shared/w.txt", Some(WRITER), &[], b"w"), 201, "writer PUT");
    expect_status(&app.call("DELETE", "/shared/w.txt", Some(WRITER), &[], b""), 200, "writer DELETE");

    // Download scopes grant nothing on files.
    expect_error(&app.call("GET", "/shared/a.txt", Some(FETCHER), &[], b""), 403, "FORBIDDEN", "fetcher GET");
    expect_error(&app.call("PUT", "/shared/f.txt", Some(FETCHER), &[], b"f"), 403, "FORBIDDEN", "fetcher PUT");

    // admin implies everything.
    expect_status(&app.call("PUT", "/shared/admin.txt", Some(ROOT), &[], b"adm"), 201, "admin PUT");
    let got = app.call("GET", "/shared/admin.txt", Some(ROOT), &[], b"");
    expect_status(&got, 200, "admin GET");
    assert_eq!(got.body, b"adm");
    expect_status(&app.call("DELETE", "/shared/admin.txt", Some(ROOT), &[], b""), 200, "admin DELETE");
    assert_eq!(app.names("/shared/"), vec!["a.txt".to_string()]);
}

#[test]
fn no_tokens_configured_is_503() {
    for (label, config) in [("without api_tokens", None), ("with api_tokens=[]", Some("[]"))] {
        let app = App::start_with_tokens(config);
        let bearer = format!("Bearer {}", token_for(ALICE));
        for (method, path, auth) in [
            ("GET", "/", None),
            ("GET", "/a.txt", Some(bearer.as_str())),
            ("PUT", "/a.txt", Some(bearer.as_str())),
            ("DELETE", "/a.txt", None),
            ("HEAD", "/a.txt", Some(bearer.as_str())),
        ] {
            let what = format!("{label}: {method} {path}");
            let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
            let resp = app.call(method, path, None, &headers, b"x");
            if method == "HEAD" {
                expect_status(&resp, 503, &what);
                continue;
            }
            let body = expect_error(&resp, 503, "NO_TOKENS_CONFIGURED", &what);
            assert!(
                body["message"].as_str().unwrap().contains("api_tokens"),
                "{what}: message should name api_tokens: {body}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency and failures
// ---------------------------------------------------------------------------------------------

#[test]
fn twenty_concurrent_uploads_into_one_directory() {
    let app = App::start();
    const N: usize = 20;
    let barrier = Barrier::new(N);
    let results: Vec<(String, Vec<u8>, Resp)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let app = &app;
                let barrier = &barrier;
                scope.spawn(move || {
                    let name = format!("file-{i:02}.bin");
                    let data = pseudo_random_bytes(100 + i as u64, 64 * 1024 + i);
                    let agent = client_with_timeout(CLIENT_TIMEOUT);
                    let auth = format!("Bearer {}", token_for(ALICE));
                    barrier.wait();
                    let resp = http_request(
                        &agent,
                        "PUT",
                        &app.host.url(&format!("/conc/{name}")),
                        &[("Authorization", &auth)],
                        &data,
                    )
                    .unwrap_or_else(|e| panic!("PUT /conc/{name}: {e}"));
                    (name, data, resp)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("upload thread panicked")).collect()
    });
    for (name, data, resp) in &results {
        expect_status(resp, 201, &format!("concurrent PUT /conc/{name}"));
        assert_eq!(resp.json()["size"], json!(data.len()));
    }
    let listed = app.names("/conc/");
    let expected: Vec<String> = (0..N).map(|i| format!("file-{i:02}.bin")).collect();
    assert_eq!(listed, expected, "the listing after {N} concurrent uploads lost or duplicated entries");
    for (name, data, _) in &results {
        let got = app.get(&format!("/conc/{name}"));
        expect_status(&got, 200, &format!("GET /conc/{name}"));
        assert!(got.body == *data, "GET /conc/{name}: wrong contents");
    }
    assert_eq!(app.names("/"), vec!["conc".to_string()]);
}

#[test]
fn a_directory_of_many_index_pages_lists_in_pages_and_deletes_whole() {
    let app = App::start();
    // Past one index page (1,000 entries), uploaded by 8 clients at once so pages split while
    // others insert.
    const N: usize = 1_200;
    const CLIENTS: usize = 8;
    let name = |i: usize| format!("f-{:04}.txt", (i * 7919) % N);
    thread::scope(|scope| {
        for client in 0..CLIENTS {
            let app = &app;
            scope.spawn(move || {
                let agent = client_with_timeout(CLIENT_TIMEOUT);
                let auth = format!("Bearer {}", token_for(ALICE));
                for i in (client..N).step_by(CLIENTS) {
                    let url = app.host.url(&format!("/many/{}", name(i)));
                    let resp = http_request(&agent, "PUT", &url, &[("Authorization", &auth)], b"x")
                        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
                    expect_status(&resp, 201, &format!("PUT {url}"));
                }
            });
        }
    });
    let expected: Vec<String> = (0..N).map(|i| format!("f-{i:04}.txt")).collect();
    let listed = app.names("/many/");
    if on_hosted_platform() && listed != expected {
        // Without KV atomics an index entry may be lost when two writers of one page interleave
        // within the settle time (the README's platform table); garbage collection re-links
        // every published file missing from its listing. Exact everywhere else.
        let lost = expected.len() - listed.len().min(expected.len());
        eprintln!("hosted profile: {lost} of {N} listing entries lost under 8 concurrent clients; GC re-links them");
        let gc = app.call("POST", "/api/v1/admin/gc?grace=0", Some(ROOT), &[], b"");
        expect_status(&gc, 200, "GC re-linking lost entries");
        assert!(gc.json()["files_relinked"].as_u64() >= Some(lost as u64), "GC report: {}", gc.json());
    }
    assert_eq!(app.names("/many/"), expected, "the whole listing");

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => "limit=500".to_string(),
            Some(after) => format!("limit=500&cursor={}", encode(after)),
        };
        let page = app.list(&format!("/many/?{query}"));
        pages += 1;
        paged.extend(page["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance: {page}");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, expected, "pages of 500 together");

    for bad in ["limit=0", "limit=lots", "limit=10001", "cursor=a/b"] {
        let resp = app.get(&format!("/many/?{bad}"));
        expect_error(&resp, 400, "INVALID_REQUEST", &format!("GET /many/?{bad}"));
    }
    let head = app.head("/many/");
    expect_status(&head, 200, "HEAD /many/");
    assert!(head.body.is_empty(), "HEAD /many/ has a body");

    let deleted = app.delete("/many/");
    expect_status(&deleted, 200, "DELETE /many/");
    assert_eq!(deleted.json()["deleted_files"], json!(N));
    expect_status(&app.get("/many/"), 404, "GET /many/ after deleting it");
    assert!(app.names("/").is_empty());
}

/// Send a PUT that declares `declared` bytes, send `sent` of them, then hang up.
fn abandoned_upload(app: &App, path: &str, declared: usize, sent: usize) {
    let mut stream = TcpStream::connect_timeout(&app.host.addr(), HTTP_TIMEOUT).expect("connect");
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: {declared}\r\n\r\n",
        token_for(ALICE)
    );
    stream.write_all(head.as_bytes()).expect("send head");
    let data = pseudo_random_bytes(999, sent);
    for piece in data.chunks(16 * 1024) {
        stream.write_all(piece).expect("send body");
        thread::sleep(Duration::from_millis(5));
    }
    stream.flush().unwrap();
    thread::sleep(Duration::from_millis(300));
    let _ = stream.shutdown(Shutdown::Both);
    drop(stream);
}

/// Wait until the dev host has logged the end of the request `METHOD path` (its request log
/// line), or `limit` passes. Spin logs no requests: there it waits one second instead (what
/// follows polls for a few seconds more anyway) and returns true.
fn wait_for_request_log(app: &App, method: &str, path: &str, count: usize, limit: Duration) -> bool {
    if app.host.kind() == HostKind::Spin {
        thread::sleep(Duration::from_secs(1));
        return true;
    }
    let needle = format!("{method} {path} ");
    poll_until(limit, || (app.host.stderr().matches(&needle).count() >= count).then_some(())).is_some()
}

#[test]
fn interrupted_upload_leaves_nothing_behind() {
    let app = App::start();
    upload(&app, "/keep/existing.bin", "keep/existing.bin", b"version one", 201);

    // A new file: nothing may appear.
    abandoned_upload(&app, "/partial.bin", MIB, 100 * 1024);
    // And an overwrite: the old contents must survive.
    abandoned_upload(&app, "/keep/existing.bin", MIB, 100 * 1024);
    let logged = wait_for_request_log(&app, "PUT", "/partial.bin", 1, Duration::from_secs(10))
        & wait_for_request_log(&app, "PUT", "/keep/existing.bin", 2, Duration::from_secs(10));
    if !logged {
        eprintln!("note: the dev host did not log the abandoned requests within 10 s:\n{}", app.host.stderr());
    }
    // Check repeatedly for a few seconds: a late commit would show up here.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        expect_error(&app.get("/partial.bin"), 404, "NOT_FOUND", "GET /partial.bin after an abandoned upload");
        let root = app.names("/");
        assert!(!root.contains(&"partial.bin".to_string()), "the abandoned upload is listed: {root:?}");
        let existing = app.get("/keep/existing.bin");
        expect_status(&existing, 200, "GET /keep/existing.bin after an abandoned overwrite");
        assert_eq!(existing.body, b"version one", "an abandoned overwrite replaced the file");
        assert_eq!(app.names("/keep/"), vec!["existing.bin".to_string()]);
        thread::sleep(Duration::from_millis(250));
    }
    // The name is still free: a complete upload creates it (201, not 200).
    let data = pseudo_random_bytes(5, MIB);
    let put = upload(&app, "/partial.bin", "partial.bin", &data, 201);
    expect_download(&app, "/partial.bin", &data, &put);
}

#[test]
fn overwrite_replaces_content() {
    let app = App::start();
    let first = upload(&app, "/o/a.txt", "o/a.txt", b"first", 201);
    let second = upload(&app, "/o/a.txt", "o/a.txt", b"second version", 200);
    assert_ne!(first["etag"], second["etag"]);
    expect_download(&app, "/o/a.txt", b"second version", &second);

    // Large → small: no stale chunks survive.
    let big = pseudo_random_bytes(3, 2 * MIB + 5);
    let put = upload(&app, "/o/a.txt", "o/a.txt", &big, 200);
    expect_download(&app, "/o/a.txt", &big, &put);
    let put = upload(&app, "/o/a.txt", "o/a.txt", b"tiny", 200);
    expect_download(&app, "/o/a.txt", b"tiny", &put);
    let resp = app.get_with("/o/a.txt", &[("Range", "bytes=0-")]);
    expect_status(&resp, 206, "Range on the overwritten file");
    assert_eq!(resp.header("content-range"), Some("bytes 0-3/4"));

    let listing = app.list("/o/");
    assert_eq!(listing["entries"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["entries"][0]["size"], json!(4), "{listing}");
}

#[test]
fn delete_file_and_directory_recursively() {
    let app = App::start();
    upload(&app, "/d/x.txt", "d/x.txt", b"x", 201);
    upload(&app, "/d/sub/y.txt", "d/sub/y.txt", b"y", 201);
    upload(&app, "/d/sub/deeper/z.txt", "d/sub/deeper/z.txt", &pseudo_random_bytes(9, MIB + 3), 201);
    upload(&app, "/other/keep.txt", "other/keep.txt", b"keep", 201);

    // A file.
    let resp = app.delete("/d/x.txt");
    expect_status(&resp, 200, "DELETE /d/x.txt");
    assert_eq!(resp.json()["success"], json!(true), "{}", resp.text());
    expect_error(&app.get("/d/x.txt"), 404, "NOT_FOUND", "GET /d/x.txt after DELETE");
    assert_eq!(app.names("/d/"), vec!["sub".to_string()]);
    expect_error(&app.delete("/d/x.txt"), 404, "NOT_FOUND", "DELETE /d/x.txt twice");
    expect_error(&app.delete("/never/was.txt"), 404, "NOT_FOUND", "DELETE /never/was.txt");

    // A directory, recursively.
    let resp = app.delete("/d");
    expect_status(&resp, 200, "DELETE /d");
    assert_eq!(resp.json()["success"], json!(true), "{}", resp.text());
    for gone in ["/d/sub/y.txt", "/d/sub/deeper/z.txt", "/d/sub/", "/d/", "/d"] {
        expect_error(&app.get(gone), 404, "NOT_FOUND", &format!("GET {gone} after DELETE /d"));
    }
    assert_eq!(app.names("/"), vec!["other".to_string()]);
    assert_eq!(app.get("/other/keep.txt").body, b"keep");

    // With a trailing slash too.
    upload(&app, "/e/f/g.txt", "e/f/g.txt", b"g", 201);
    expect_status(&app.delete("/e/"), 200, "DELETE /e/");
    expect_error(&app.get("/e/f/g.txt"), 404, "NOT_FOUND", "GET /e/f/g.txt after DELETE /e/");

    // The names are free again.
    upload(&app, "/d/sub/y.txt", "d/sub/y.txt", b"new y", 201);
    assert_eq!(app.names("/d/sub/"), vec!["y.txt".to_string()]);
    assert_eq!(app.get("/d/sub/y.txt").body, b"new y");
}

#[test]
fn file_versus_directory_conflicts_are_409() {
    let app = App::start();
    upload(&app, "/dir1/f.txt", "dir1/f.txt", b"f", 201);
    expect_error(&app.put("/dir1", b"not a dir"), 409, "CONFLICT", "PUT onto a directory");
    assert_eq!(app.names("/dir1/"), vec!["f.txt".to_string()]);

    upload(&app, "/a.txt", "a.txt", b"a file", 201);
    expect_error(&app.put("/a.txt/b", b"below a file"), 409, "CONFLICT", "PUT below a file");
    expect_error(&app.put("/a.txt/b/c.txt", b"deeper"), 409, "CONFLICT", "PUT two levels below a file");
    assert_eq!(app.get("/a.txt").body, b"a file");
    let mut root = app.names("/");
    root.sort();
    assert_eq!(root, vec!["a.txt".to_string(), "dir1".to_string()]);
    let entries = app.list("/")["entries"].clone();
    let a = entries.as_array().unwrap().iter().find(|e| e["name"] == json!("a.txt")).unwrap().clone();
    assert_eq!(a["type"], json!("file"), "{entries}");
}

// ---------------------------------------------------------------------------------------------
// Methods and the gateway
// ---------------------------------------------------------------------------------------------

#[test]
fn other_methods_are_405_with_allow() {
    let app = App::start();
    upload(&app, "/x", "x", b"x", 201);
    // The root is only read; a directory path (`/d/`) is read or deleted; a file path takes all.
    let cases = [
        ("POST", "/x", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/x", "GET, HEAD, PUT, DELETE"),
        ("POST", "/newdir/", "GET, HEAD, DELETE"),
        ("PUT", "/newdir/", "GET, HEAD, DELETE"),
        ("PATCH", "/", "GET, HEAD"),
        ("PUT", "/", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
    ];
    for (method, path, allowed) in cases {
        let what = format!("{method} {path}");
        let resp = app.call(method, path, Some(ROOT), &[], b"body");
        expect_error(&resp, 405, "METHOD_NOT_ALLOWED", &what);
        assert_eq!(resp.header("allow"), Some(allowed), "{what}");
    }
    // `/x/` names a directory: the file `x` is neither listed nor deleted through it.
    expect_error(&app.call("DELETE", "/x/", Some(ROOT), &[], b""), 404, "NOT_FOUND", "DELETE /x/ of a file");
    assert_eq!(app.get("/x").body, b"x");
    assert_eq!(app.names("/"), vec!["x".to_string()], "a 405 request wrote something");
}

#[test]
fn gateway_sends_download_queries_to_the_download_components() {
    let app = App::start();
    // The operator switch is off by default.
    let start = format!("/dir?download={}", encode("http://example.com/file.bin"));
    expect_error(&app.call("GET", &start, Some(ROOT), &[], b""), 403, "DOWNLOAD_FORBIDDEN", "start with switch off");
    let active = app.call("GET", "/dir?downloads=", Some(ROOT), &[], b"");
    assert_eq!(active.status, 200, "?downloads=: {}", active.text());
    assert_eq!(active.json()["downloads"], json!([]));
    let history = app.call("GET", "/?download_history=", Some(ROOT), &[], b"");
    assert_eq!(history.status, 200, "?download_history=: {}", history.text());
    assert_eq!(history.json()["history"], json!([]));
    expect_error(&app.call("GET", "/dir?download=x&downloads=", Some(ROOT), &[], b""), 400, "INVALID_REQUEST", "two");
    assert_eq!(app.list("/")["entries"], json!([]), "a gateway query wrote something");
}

#[test]
fn gateway_download_queries_require_credentials_too() {
    let app = App::start();
    let wrong = format!("Bearer {}", token_for("nobody"));
    for path in ["/dir?download=http%3A%2F%2Fexample.com%2Ff", "/dir?downloads=", "/?download_history="] {
        let what = format!("GET {path} without a token");
        let resp = app.call("GET", path, None, &[], b"");
        expect_error(&resp, 401, "UNAUTHORIZED", &what);
        expect_bearer_challenge(&resp, &what);
        let what = format!("GET {path} with an unknown token");
        let resp = app.call("GET", path, None, &[("Authorization", &wrong)], b"");
        expect_error(&resp, 401, "UNAUTHORIZED", &what);
    }
    let unconfigured = App::start_with_tokens(None);
    let bearer = format!("Bearer {}", token_for(ROOT));
    for path in ["/dir?download=http%3A%2F%2Fexample.com%2Ff", "/dir?downloads=", "/?download_history="] {
        let what = format!("GET {path} with no tokens configured");
        let body = expect_error(
            &unconfigured.call("GET", path, None, &[("Authorization", &bearer)], b""),
            503,
            "NO_TOKENS_CONFIGURED",
            &what,
        );
        assert!(body["message"].as_str().unwrap().contains("api_tokens"), "{what}: {body}");
    }
}

#[test]
fn put_onto_the_root_is_refused() {
    let app = App::start();
    let resp = app.put("/", b"root?");
    assert!(
        (400..500).contains(&resp.status),
        "PUT / must be refused with a 4xx, got {} {:?}",
        resp.status,
        short(&resp.text())
    );
    let body = resp.json();
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(app.list("/")["entries"], json!([]), "PUT / wrote something");
}

#[test]
fn concurrent_overwrites_of_one_path_leave_one_whole_version() {
    let app = App::start();
    const N: usize = 10;
    let barrier = Barrier::new(N);
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| pseudo_random_bytes(300 + i as u64, MIB + 1000 * i)).collect();
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = payloads
            .iter()
            .map(|data| {
                let app = &app;
                let barrier = &barrier;
                scope.spawn(move || {
                    let agent = client_with_timeout(CLIENT_TIMEOUT);
                    let auth = format!("Bearer {}", token_for(ALICE));
                    barrier.wait();
                    http_request(&agent, "PUT", &app.host.url("/same/file.bin"), &[("Authorization", &auth)], data)
                        .unwrap_or_else(|e| panic!("PUT /same/file.bin: {e}"))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("upload thread panicked")).collect()
    });
    assert!(statuses.iter().all(|s| matches!(s, 200 | 201)), "concurrent overwrites: statuses {statuses:?}");
    let got = app.get("/same/file.bin");
    expect_status(&got, 200, "GET /same/file.bin");
    assert!(payloads.contains(&got.body), "the file is not one whole upload ({} bytes)", got.body.len());
    assert_eq!(got.header("content-length"), Some(got.body.len().to_string().as_str()));
    let listing = app.list("/same/");
    assert_eq!(listing["entries"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["entries"][0]["size"], json!(got.body.len()), "{listing}");
    let (stored, rows) = kv_usage(&app);
    assert!(
        stored <= got.body.len() as u64 + 64 * 1024,
        "after {N} concurrent overwrites the store holds {stored} bytes for a {}-byte file: {rows:?}",
        got.body.len()
    );
    // `201 when new, 200 when it replaced a file`: only one of them found no file.
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "exactly one upload created the file: {statuses:?}");
}

#[test]
fn reads_during_overwrites_never_return_a_silent_mix() {
    if skip_on_hosted_platform("its uploads are over the hosted 10 MiB request body cap") {
        return;
    }
    // The storage design accepts that a download streaming a file that is overwritten is cut
    // (its old chunks disappear); that must show as an error or a short body, never as a
    // complete response whose bytes mix versions.
    let app = App::start();
    let v1 = pseudo_random_bytes(41, 12 * MIB);
    let v2 = pseudo_random_bytes(42, 12 * MIB + 123);
    upload(&app, "/swap/file.bin", "swap/file.bin", &v1, 201);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (statuses, outcomes) = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let agent = client_with_timeout(CLIENT_TIMEOUT);
            let auth = format!("Bearer {}", token_for(ALICE));
            let mut statuses = Vec::new();
            for data in [&v2, &v1, &v2, &v1, &v2, &v1, &v2] {
                thread::sleep(Duration::from_millis(100));
                let resp =
                    http_request(&agent, "PUT", &app.host.url("/swap/file.bin"), &[("Authorization", &auth)], data)
                        .unwrap_or_else(|e| panic!("overwrite: {e}"));
                statuses.push(resp.status);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            statuses
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (app, done, v1, v2) = (&app, &done, &v1, &v2);
                scope.spawn(move || {
                    let agent = client_with_timeout(CLIENT_TIMEOUT);
                    let auth = format!("Bearer {}", token_for(ALICE));
                    // (whole v1, whole v2, cut or error)
                    let mut outcome = (0usize, 0usize, Vec::<String>::new());
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while !done.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                        match http_request(
                            &agent,
                            "GET",
                            &app.host.url("/swap/file.bin"),
                            &[("Authorization", &auth)],
                            b"",
                        ) {
                            Err(e) => outcome.2.push(format!("transport: {e}")),
                            Ok(resp) if resp.status != 200 => {
                                outcome.2.push(format!("{} {}", resp.status, short(&resp.text())))
                            }
                            Ok(resp) => {
                                let declared: usize =
                                    resp.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                                if resp.body.len() != declared {
                                    outcome.2.push(format!("short body {} of {declared}", resp.body.len()));
                                } else if resp.body == *v1 {
                                    outcome.0 += 1;
                                } else if resp.body == *v2 {
                                    outcome.1 += 1;
                                } else {
                                    panic!(
                                        "a complete 200 ({} bytes, Content-Length {declared}) is neither version",
                                        resp.body.len()
                                    );
                                }
                            }
                        }
                    }
                    outcome
                })
            })
            .collect();
        let statuses = writer.join().expect("writer panicked");
        let outcomes: Vec<_> = readers.into_iter().map(|r| r.join().expect("reader panicked")).collect();
        (statuses, outcomes)
    });
    assert_eq!(statuses, vec![200; 7], "overwrites");
    let whole: usize = outcomes.iter().map(|o| o.0 + o.1).sum();
    let cut: Vec<&String> = outcomes.iter().flat_map(|o| o.2.iter()).collect();
    eprintln!("reads during overwrites: {whole} complete, {} cut: {cut:?}", cut.len());
    assert!(whole > 0, "no read completed during the overwrites: {cut:?}");
    let last = app.get("/swap/file.bin");
    assert!(last.body == v2, "the last overwrite did not win");
}

/// Sum of the value sizes in the default key-value store, and its keys (for messages).
fn kv_usage(app: &App) -> (u64, Vec<(String, usize)>) {
    let rows = app.host.kv().value_sizes();
    (rows.iter().map(|(_, n)| *n as u64).sum(), rows)
}

#[test]
fn a_wrong_bucket_secret_is_a_clear_error_naming_the_variables() {
    if !bytes_in_bucket() {
        eprintln!("skipped: runs with DOWNLINK_TEST_STORAGE=s3");
        return;
    }
    let app = App(TestApp::start(SUITE, TOKENS, &[("s3_secret_access_key", "not-the-secret")], CLIENT_TIMEOUT));
    let resp = app.put("/wrong/secret.txt", b"x");
    expect_error(&resp, 500, "STORAGE_ERROR", "PUT with a wrong S3 secret");
    let message = resp.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(message.contains("s3_access_key_id") && message.contains("s3_secret_access_key"), "{message}");
    assert!(!message.contains("not-the-secret"), "the secret leaked: {message}");
    expect_error(&app.get("/wrong/secret.txt"), 404, "NOT_FOUND", "nothing was recorded");
}

/// The bucket going away mid-upload and mid-read (S3 only): a clear JSON error where the
/// response has not started, a cut-off body where it has, nothing half-written visible, and the
/// abandoned multipart upload aborted by GC once the bucket is back.
#[test]
fn the_bucket_stopping_mid_upload_or_mid_read_is_clear_and_leaves_nothing() {
    if skip_on_hosted_platform("its 12 MiB upload is over the hosted 10 MiB request body cap") {
        return;
    }
    if !bytes_in_bucket() {
        eprintln!("skipped: runs with DOWNLINK_TEST_STORAGE=s3");
        return;
    }
    let state = HostState::new("s3-faults");
    let app = App(TestApp::from_builder(SUITE, app_builder(SUITE, TOKENS).state(&state), CLIENT_TIMEOUT));
    let bucket = state.s3().expect("the state's bucket");

    // Mid-upload: 24 MiB declared; once the first 8 MiB part is in a multipart upload, the
    // bucket stops; the next part cannot be stored.
    let mut stream = TcpStream::connect_timeout(&app.host.addr(), HTTP_TIMEOUT).expect("connect");
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let declared = 24 * MIB;
    let head = format!(
        "PUT /faults/up.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n",
        token_for(ALICE)
    );
    stream.write_all(head.as_bytes()).expect("send head");
    let data = pseudo_random_bytes(71, declared);
    stream.write_all(&data[..12 * MIB]).expect("send the first 12 MiB");
    let started = poll_until(Duration::from_secs(30), || (bucket.pending_uploads() == 1).then_some(()));
    assert!(started.is_some(), "no multipart upload was started after 12 MiB");
    bucket.stop();
    // The app may answer (and stop reading) before the rest is sent.
    let _ = stream.write_all(&data[12 * MIB..]);
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 500"), "PUT with the bucket gone: {}", &answer[..answer.len().min(600)]);
    assert!(answer.contains("\"STORAGE_ERROR\""), "PUT with the bucket gone: {answer}");
    bucket.restart();
    expect_error(&app.get("/faults/up.bin"), 404, "NOT_FOUND", "the failed upload is not visible");
    assert_eq!(bucket.pending_uploads(), 1, "the upload could not be aborted while the bucket was down");
    let gc = app.call("POST", "/api/v1/admin/gc?grace=0", Some(ROOT), &[], b"");
    expect_status(&gc, 200, "GC after the bucket is back");
    assert!(gc.json()["uploads_aborted"].as_u64() >= Some(1), "GC report: {}", gc.json());
    assert_eq!(bucket.pending_uploads(), 0, "GC left the abandoned multipart upload");
    assert!(bucket.keys().iter().all(|key| !key.ends_with("up.bin")), "objects: {:?}", bucket.keys());

    // Mid-read: more than every socket buffer on the way can hold, read slowly.
    let stored = pseudo_random_bytes(72, 64 * MIB);
    upload(&app, "/faults/stored.bin", "faults/stored.bin", &stored, 201);
    let mut stream = TcpStream::connect_timeout(&app.host.addr(), HTTP_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = raw_http("GET", "/faults/stored.bin", Some(ALICE), &[], b"");
    stream.write_all(&request).expect("send GET");
    let mut first = vec![0u8; MIB];
    std::io::Read::read_exact(&mut stream, &mut first).expect("the first MiB of the response");
    assert!(first.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&first[..64]));
    bucket.stop();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    assert!(first.len() + rest.len() < 64 * MIB, "the whole body arrived although the bucket stopped mid-read");

    // With the bucket down, a read that has not started is a JSON error, not a cut body.
    let down = app.get("/faults/stored.bin");
    let body = expect_error(&down, 500, "STORAGE_ERROR", "GET with the bucket down");
    assert!(body["message"].as_str().is_some_and(|m| !m.contains(SECRET_MARKER)), "{body}");
    bucket.restart();
    let back = app.get("/faults/stored.bin");
    expect_status(&back, 200, "GET once the bucket is back");
    assert!(back.body == stored, "the file read back differs");
}

/// `503 SlowDown` from the bucket is retried (S3 only): a few in a row cost a pause, more than
/// the attempts allow are a clear error naming it, and nothing is left visible.
#[test]
fn slow_down_answers_from_the_bucket_are_retried() {
    if !bytes_in_bucket() {
        eprintln!("skipped: runs with DOWNLINK_TEST_STORAGE=s3");
        return;
    }
    let state = HostState::new("s3-slowdown");
    let proxy = SlowDownProxy::start(state.s3().expect("the state's bucket").port());
    let builder = app_builder(SUITE, TOKENS).state(&state).variable("s3_endpoint", &proxy.endpoint());
    let app = App(TestApp::from_builder(SUITE, builder, CLIENT_TIMEOUT));

    proxy.fail_next(2);
    upload(&app, "/slow/a.txt", "slow/a.txt", b"stored on the third attempt", 201);
    assert_eq!(proxy.failed(), 2, "both 503s were seen");
    proxy.fail_next(1);
    let got = app.get("/slow/a.txt");
    expect_status(&got, 200, "GET after one 503");
    assert_eq!(got.body, b"stored on the third attempt");
    assert_eq!(proxy.failed(), 3);

    proxy.fail_next(100);
    let refused = app.put("/slow/b.txt", b"never stored");
    let body = expect_error(&refused, 500, "STORAGE_ERROR", "PUT while the bucket keeps answering 503");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("SlowDown")), "{body}");
    let attempts = proxy.failed() - 3;
    assert!((2..=5).contains(&attempts), "{attempts} attempts before giving up");
    proxy.fail_next(0);
    expect_error(&app.get("/slow/b.txt"), 404, "NOT_FOUND", "the refused upload is not visible");
}

/// Part of the test bucket's secret (`tests/src/s3.rs`), which must never reach a response.
const SECRET_MARKER: &str = "test-secret";

#[test]
fn overwrites_deletes_and_aborted_uploads_leave_no_stored_garbage() {
    if skip_on_hosted_platform("its uploads are over the hosted 10 MiB request body cap") {
        return;
    }
    let app = App::start();
    // Overwrite big with small, and small with big.
    upload(&app, "/g/shrink.bin", "g/shrink.bin", &pseudo_random_bytes(1, 3 * MIB + 1), 201);
    upload(&app, "/g/shrink.bin", "g/shrink.bin", b"small", 200);
    upload(&app, "/g/grow.bin", "g/grow.bin", b"small", 201);
    upload(&app, "/g/grow.bin", "g/grow.bin", &pseudo_random_bytes(2, 2 * MIB), 200);
    // Delete a file and a directory tree.
    upload(&app, "/g/gone.bin", "g/gone.bin", &pseudo_random_bytes(3, 2 * MIB + 7), 201);
    expect_status(&app.delete("/g/gone.bin"), 200, "DELETE /g/gone.bin");
    upload(&app, "/tree/a/b.bin", "tree/a/b.bin", &pseudo_random_bytes(4, 2 * MIB), 201);
    upload(&app, "/tree/c.bin", "tree/c.bin", &pseudo_random_bytes(5, MIB + 1), 201);
    expect_status(&app.delete("/tree"), 200, "DELETE /tree");
    // Abandon an upload after 2.5 MiB of 4 MiB (two whole chunks stored).
    abandoned_upload(&app, "/g/abandoned.bin", 4 * MIB, 5 * MIB / 2);
    if !wait_for_request_log(&app, "PUT", "/g/abandoned.bin", 1, Duration::from_secs(10)) {
        eprintln!("note: the dev host did not log the abandoned request within 10 s");
    }
    thread::sleep(Duration::from_millis(500));

    if let Some(s3) = app.host.s3() {
        // In a bucket: an upload that broke off after a whole part aborts its multipart upload.
        abandoned_upload(&app, "/g/abandoned-parts.bin", 20 * MIB, 10 * MIB);
        let aborted = poll_until(Duration::from_secs(10), || (s3.pending_uploads() == 0).then_some(()));
        assert!(aborted.is_some(), "{} multipart uploads left pending", s3.pending_uploads());
        assert_eq!(s3.keys(), [format!("{TEST_PREFIX}g/grow.bin"), format!("{TEST_PREFIX}g/shrink.bin")]);
        assert_eq!(s3.object(&format!("{TEST_PREFIX}g/shrink.bin")).unwrap(), b"small", "a plain object");
    }
    let live = 5 + 2 * MIB as u64;
    let (stored, rows) = kv_usage(&app);
    assert!(
        stored <= live + 64 * 1024,
        "the store holds {stored} bytes for {live} bytes of live files; keys (bytes): {rows:?}"
    );
    assert_eq!(app.names("/g/"), vec!["grow.bin".to_string(), "shrink.bin".to_string()]);
}

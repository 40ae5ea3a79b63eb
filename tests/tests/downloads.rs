//! End-to-end tests of remote URL downloads (`GET /{dir}?download=URL`, the active lists, one
//! record, cancel, history) through the real application manifest (`spin.toml` at the workspace
//! root) on the dev host or real Spin, against a [`TestOrigin`] the test starts on 127.0.0.1.
//!
//! Prerequisites:
//!   cargo xtask build-wasm && cargo build --release -p devhost
//!   DEVHOST_BIN=target/release/devhost cargo test -p downlink-e2e --test downloads -- --test-threads=2
//!
//! The host and store come from the environment (see `downlink_e2e::test_env`):
//! `DOWNLINK_TEST_HOST=devhost|spin` (Spin: `SPIN_BIN`, else `spin` on PATH) and
//! `DOWNLINK_TEST_KV=sqlite|redis`; `cargo xtask test` runs every combination it can.
//!
//! Every test starts its own host (127.0.0.1, fresh state dir unless it needs a persistent
//! one) with `allow_download=true` and `download_allow_private=true` (the origin is loopback)
//! unless it tests those switches. Every HTTP call has a timeout and every poll loop a deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use downlink_e2e::*;
use serde_json::json;
use sha2::{Digest, Sha256};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Per-exchange timeout of the test client (large bodies need more than the harness default).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a small download from the loopback origin may take to end.
const SMALL: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const SUITE: &str = "downloads";

/// `download.create` + `download.read` + `file.read`: the user of most tests.
const USER: &str = "user";
/// `admin`.
const ROOT: &str = "root";
/// `download.create` only.
const CREATOR: &str = "creator";
/// `download.read` + `file.read` (no `download.create`).
const WATCHER: &str = "watcher";
/// `file.read` + `file.write` (no download scope).
const FILER: &str = "filer";

/// The `api_tokens` entries.
const TOKENS: &[(&str, &[&str])] = &[
    (USER, &["download.create", "download.read", "file.read"]),
    (ROOT, &["admin"]),
    (CREATOR, &["download.create"]),
    (WATCHER, &["download.read", "file.read"]),
    (FILER, &["file.read", "file.write"]),
];

const STATUSES_TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

fn generated_sha256(seed: u64, len: u64) -> String {
    let mut hasher = Sha256::new();
    for_each_generated_block(seed, len, |b| hasher.update(b));
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn token_for(name: &str) -> String {
    downlink_e2e::token_for(SUITE, name)
}

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

/// Leave a variable out entirely (its manifest default applies).
const UNSET: &str = "\u{0}unset";

/// Failure messages show this many bytes of a body, and this many last lines of the dev host's
/// stderr.
const SHOWN_BYTES: usize = 800;
const SHOWN_STDERR_LINES: usize = 60;

/// [`TestApp`] as this suite's principals.
struct App(TestApp);

/// Where an app start keeps its data.
enum Stores<'a> {
    /// Fresh stores of its own.
    Own,
    /// A state to restart on.
    State(&'a HostState),
    /// The Redis store and bucket of a [`HostState::shared`], beside other hosts.
    Shared(&'a HostState),
}

impl std::ops::Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl App {
    /// The real app with downloads on and private targets allowed, plus `overrides`
    /// (`(name, value)`; value [`UNSET`] removes a default).
    fn start(overrides: &[(&str, &str)]) -> App {
        App::launch(overrides, Stores::Own, None)
    }

    /// Like [`App::start`] on `state` (its state dir and, with Redis, its store: persistent
    /// across restarts).
    fn start_in(state: &HostState, overrides: &[(&str, &str)]) -> App {
        App::launch(overrides, Stores::State(state), None)
    }

    /// One of several hosts sharing `stores` (a [`HostState::shared`]).
    fn start_sharing(stores: &HostState) -> App {
        App::launch(&[], Stores::Shared(stores), None)
    }

    /// Like [`App::start`] with `--runtime-config-file runtime_config` (with Redis the harness
    /// adds its store to a copy).
    fn start_with_runtime_config(runtime_config: &Path, overrides: &[(&str, &str)]) -> App {
        App::launch(overrides, Stores::Own, Some(runtime_config))
    }

    fn launch(overrides: &[(&str, &str)], stores: Stores, runtime_config: Option<&Path>) -> App {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("api_tokens".into(), tokens_config(SUITE, TOKENS));
        vars.insert("allow_download".into(), "true".into());
        vars.insert("download_allow_private".into(), "true".into());
        for (k, v) in overrides {
            if *v == UNSET {
                vars.remove(*k);
            } else {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        let mut builder = DevHost::selected(app_manifest());
        match stores {
            Stores::Own => {}
            Stores::State(state) => builder = builder.state(state),
            Stores::Shared(state) => builder = builder.shared_stores(state),
        }
        if let Some(rtc) = runtime_config {
            builder = builder.runtime_config(rtc);
        }
        for (k, v) in &vars {
            builder = builder.variable(k, v);
        }
        App(TestApp::from_builder(SUITE, builder, CLIENT_TIMEOUT).with_stderr_tail(SHOWN_STDERR_LINES))
    }

    /// One exchange as `principal` (None: no `Authorization` header).
    fn call(&self, method: &str, path: &str, principal: Option<&str>) -> Resp {
        self.0.call(method, path, principal, &[], b"")
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(USER))
    }

    /// Upload as admin (the download user has no `file.write`).
    fn upload(&self, path: &str, data: &[u8]) {
        self.upload_as(ROOT, path, data)
    }
}

fn short(text: &str) -> String {
    short_to(text, SHOWN_BYTES)
}

fn expect_status(resp: &Resp, status: u16, what: &str) {
    expect_status_to(resp, status, what, SHOWN_BYTES)
}

fn json_of(resp: &Resp, what: &str) -> Json {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", short(&resp.text())))
}

/// The error envelope `{"success":false,"error":CODE,…}` with `status` (unlike the shared
/// [`downlink_e2e::expect_error`], the content type and message are not checked).
fn expect_error(resp: &Resp, status: u16, code: &str, what: &str) -> Json {
    expect_status(resp, status, what);
    let body = json_of(resp, what);
    assert_eq!(body["success"], json!(false), "{what}: {body}");
    assert_eq!(body["error"], json!(code), "{what}: {body}");
    body
}

fn expect_unauthorized(resp: &Resp, what: &str) {
    expect_error(resp, 401, "UNAUTHORIZED", what);
    expect_bearer_challenge(resp, what);
}

// ---------------------------------------------------------------------------------------------
// Download helpers
// ---------------------------------------------------------------------------------------------

/// `/{dir}?download=<url>&k=v…` (values percent-encoded).
fn start_target(dir: &str, url: &str, extra: &[(&str, &str)]) -> String {
    let mut target = format!("/{}?download={}", encode_path(dir), encode(url));
    for (k, v) in extra {
        target.push_str(&format!("&{k}={}", encode(v)));
    }
    target
}

fn start(app: &App, dir: &str, url: &str, extra: &[(&str, &str)]) -> Resp {
    app.get(&start_target(dir, url, extra))
}

/// Checks a `202` start answer; returns the download id.
fn expect_started(resp: &Resp, dir: &str, filename: &str, what: &str) -> String {
    expect_status(resp, 202, what);
    let body = json_of(resp, what);
    let id = body["download_id"].as_str().unwrap_or_else(|| panic!("{what}: no download_id in {body}")).to_string();
    assert!(!id.is_empty(), "{what}: empty download_id");
    assert_eq!(body["success"], json!(true), "{what}: {body}");
    assert_eq!(body["message"], json!("Download started"), "{what}: {body}");
    assert_eq!(body["error"], Json::Null, "{what}: {body}");
    assert_eq!(body["filename"], json!(filename), "{what}: {body}");
    assert_eq!(body["path"], json!(format!("{dir}/{filename}")), "{what}: {body}");
    assert_eq!(
        resp.header("location"),
        Some(format!("/api/v1/downloads/{id}").as_str()),
        "{what}: Location header; headers {:?}",
        resp.headers
    );
    id
}

/// Starts and expects 202; returns (id, path).
fn start_ok(app: &App, dir: &str, url: &str, extra: &[(&str, &str)]) -> (String, String) {
    let what = format!("start {url} into {dir} {extra:?}");
    let resp = start(app, dir, url, extra);
    expect_status(&resp, 202, &what);
    let body = json_of(&resp, &what);
    let filename = body["filename"].as_str().unwrap_or_else(|| panic!("{what}: no filename in {body}")).to_string();
    let id = expect_started(&resp, dir, &filename, &what);
    (id, format!("{dir}/{filename}"))
}

/// Checks a refused start: `status`, the reference's failure body with `code`; returns the
/// body.
fn expect_rejected(resp: &Resp, status: u16, code: &str, what: &str) -> Json {
    expect_status(resp, status, what);
    let body = json_of(resp, what);
    assert_eq!(body["success"], json!(false), "{what}: {body}");
    assert_eq!(body["message"], json!("Download failed"), "{what}: {body}");
    assert_eq!(body["error"], json!(code), "{what}: {body}");
    assert!(
        body["download_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: download_id should be a non-empty string: {body}"
    );
    assert!(body["filename"].is_string(), "{what}: filename should be a string: {body}");
    assert!(body["path"].is_string(), "{what}: path should be a string: {body}");
    body
}

/// `GET /api/v1/downloads/{id}` → 200 JSON.
fn detail(app: &App, id: &str) -> Json {
    let what = format!("GET /api/v1/downloads/{id}");
    let resp = app.get(&format!("/api/v1/downloads/{id}"));
    expect_status(&resp, 200, &what);
    let record = json_of(&resp, &what);
    assert_eq!(record["id"], json!(id), "{what}: {record}");
    record
}

fn status_of(record: &Json) -> &str {
    record["status"].as_str().unwrap_or_else(|| panic!("record without a status: {record}"))
}

/// Polls the record until it has ended (or panics after `limit`).
fn wait_terminal(app: &App, id: &str, limit: Duration) -> Json {
    let mut last = Json::Null;
    poll_until(limit, || {
        let record = detail(app, id);
        let done = STATUSES_TERMINAL.contains(&status_of(&record));
        last = record.clone();
        done.then_some(record)
    })
    .unwrap_or_else(|| {
        panic!(
            "download {id} did not end within {limit:?}; last record {last}\n--- dev host stderr ---\n{}",
            app.stderr_tail()
        )
    })
}

fn wait_completed(app: &App, id: &str, size: u64, limit: Duration) -> Json {
    let record = wait_terminal(app, id, limit);
    assert_eq!(status_of(&record), "completed", "download {id}: {record}\n{}", app.stderr_tail());
    assert_eq!(record["total_bytes"], json!(size), "download {id}: total_bytes in {record}");
    assert_eq!(record["error"], Json::Null, "download {id}: {record}");
    let (start, end) = (record["start_time"].as_u64(), record["end_time"].as_u64());
    assert!(start.is_some() && end.is_some() && end >= start, "download {id}: start/end times in {record}");
    record
}

fn wait_failed(app: &App, id: &str, code: &str, limit: Duration) -> Json {
    let record = wait_terminal(app, id, limit);
    assert_eq!(status_of(&record), "failed", "download {id}: expected failed/{code}, got {record}");
    assert_eq!(record["error"], json!(code), "download {id}: {record}");
    assert!(record["end_time"].as_u64().is_some(), "download {id}: no end_time in {record}");
    record
}

/// `next_cursor` of a history page: a string, or null at the end.
fn next_cursor(page: &Json, what: &str) -> Option<String> {
    match &page["next_cursor"] {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => panic!("{what}: next_cursor should be a string or null, got {other}; page {page}"),
    }
}

/// One history page for `query` (appended to `/?download_history=`).
fn history_page(app: &App, query: &str) -> Json {
    let target = format!("/?download_history={query}");
    let resp = app.get(&target);
    expect_status(&resp, 200, &format!("GET {target}"));
    let page = json_of(&resp, &target);
    assert!(page["history"].is_array(), "GET {target}: no history array in {page}");
    assert!(page.get("next_cursor").is_some(), "GET {target}: no next_cursor field in {page}");
    page
}

/// The whole history (following cursors, 500 a page), newest first; `filter` is extra query
/// text like `&directory=x`.
fn history_all(app: &App, filter: &str) -> Vec<Json> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut query = format!("&limit=500{filter}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = history_page(app, &query);
        out.extend(page["history"].as_array().unwrap().iter().cloned());
        cursor = next_cursor(&page, "history");
        if cursor.is_none() {
            return out;
        }
    }
    panic!("history did not end after 100 pages");
}

/// The history entry of `id`, asserting it appears exactly once and has every reference field.
fn history_entry(app: &App, id: &str) -> Json {
    let all = history_all(app, "");
    let found: Vec<&Json> = all.iter().filter(|e| e["id"] == json!(id)).collect();
    assert_eq!(found.len(), 1, "download {id} should be in history exactly once; history {}", Json::Array(all.clone()));
    let entry = found[0].clone();
    for key in
        ["id", "filename", "file_path", "directory", "url", "status", "total_bytes", "start_time", "end_time", "error"]
    {
        assert!(entry.get(key).is_some(), "history entry lacks `{key}`: {entry}");
    }
    entry
}

/// Items of an active list (`/{dir}?downloads=` or `/api/v1/downloads`), checking fields.
fn active(app: &App, target: &str) -> Vec<Json> {
    let resp = app.get(target);
    expect_status(&resp, 200, &format!("GET {target}"));
    let body = json_of(&resp, target);
    let list =
        body["downloads"].as_array().unwrap_or_else(|| panic!("GET {target}: no downloads array in {body}")).clone();
    for item in &list {
        for key in [
            "id",
            "filename",
            "file_path",
            "directory",
            "url",
            "status",
            "current_size",
            "expected_size",
            "progress_percentage",
            "start_time",
        ] {
            assert!(item.get(key).is_some(), "GET {target}: item lacks `{key}`: {item}");
        }
        let status = status_of(item);
        assert!(
            status == "starting" || status == "downloading",
            "GET {target}: an ended download in the active list: {item}"
        );
    }
    list
}

fn dir_active(app: &App, dir: &str) -> Vec<Json> {
    active(app, &format!("/{}?downloads=", encode_path(dir)))
}

fn global_active(app: &App) -> Vec<Json> {
    active(app, "/api/v1/downloads")
}

fn ids(items: &[Json]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap_or_default().to_string()).collect()
}

/// GET the stored file at `path` through the file API, following a `302` to the bucket (a file
/// over a hosted target's response cap); returns (status, sha256, length).
fn file_digest(app: &App, path: &str) -> (u16, String, u64) {
    let auth = format!("Bearer {}", token_for(USER));
    let digest = |url: &str, headers: &[(&str, &str)]| {
        let mut hasher = Sha256::new();
        let (resp, n) = http_request_streaming(&app.agent, "GET", url, headers, |b| hasher.update(b))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (resp, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>(), n)
    };
    let (resp, sha, n) = digest(&app.host.url(&format!("/{}", encode_path(path))), &[("Authorization", &auth)]);
    if resp.status != 302 {
        return (resp.status, sha, n);
    }
    let location = resp.header("location").unwrap_or_else(|| panic!("GET {path}: a 302 without Location"));
    assert!(location.contains("X-Amz-Signature="), "GET {path}: redirected to {location}, not a presigned URL");
    // The bearer token never goes to the bucket.
    let (resp, sha, n) = digest(location, &[]);
    (resp.status, sha, n)
}

fn expect_file(app: &App, path: &str, data: &[u8]) {
    let (status, sha, len) = file_digest(app, path);
    assert_eq!(status, 200, "GET /{path}: the downloaded file is not readable");
    assert_eq!(len, data.len() as u64, "GET /{path}: length");
    assert_eq!(sha, sha256_hex(data), "GET /{path}: content differs from the origin's");
}

fn expect_no_file(app: &App, path: &str, what: &str) {
    let resp = app.get(&format!("/{}", encode_path(path)));
    assert_eq!(
        resp.status,
        404,
        "{what}: GET /{path} should be 404 (no file left), got {} {:?}",
        resp.status,
        short(&resp.text())
    );
}

fn wait_downloading(app: &App, id: &str, limit: Duration) -> Json {
    let mut last = Json::Null;
    poll_until(limit, || {
        let record = detail(app, id);
        last = record.clone();
        (status_of(&record) == "downloading" && record["current_size"].as_u64().unwrap_or(0) > 0).then_some(record)
    })
    .unwrap_or_else(|| {
        panic!("download {id} was not downloading with bytes within {limit:?}; last {last}\n{}", app.stderr_tail())
    })
}

/// Polls until the record is `downloading` (the origin answered), whatever its byte count.
fn wait_status_downloading(app: &App, id: &str, limit: Duration) -> Json {
    let mut last = Json::Null;
    poll_until(limit, || {
        let record = detail(app, id);
        last = record.clone();
        (status_of(&record) == "downloading").then_some(record)
    })
    .unwrap_or_else(|| panic!("download {id} was not downloading within {limit:?}; last {last}\n{}", app.stderr_tail()))
}

// ---------------------------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------------------------

#[test]
fn download_with_content_length_is_stored_byte_exact() {
    let data = pseudo_random_bytes(1, 300 * KIB + 17);
    let origin = TestOrigin::start(vec![("/files/data.bin", Route::ok(data.clone()))]);
    let app = App::start(&[]);
    let url = origin.url("/files/data.bin");

    let resp = start(&app, "inbox", &url, &[]);
    let id = expect_started(&resp, "inbox", "data.bin", "start data.bin");
    let record = wait_completed(&app, &id, data.len() as u64, SMALL);
    assert_eq!(record["filename"], json!("data.bin"), "{record}");
    assert_eq!(record["file_path"], json!("inbox/data.bin"), "{record}");
    assert_eq!(record["directory"], json!("inbox"), "{record}");
    assert_eq!(record["url"], json!(url), "{record}");
    expect_file(&app, "inbox/data.bin", &data);

    let entry = history_entry(&app, &id);
    assert_eq!(entry["status"], json!("completed"), "{entry}");
    assert_eq!(entry["total_bytes"], json!(data.len()), "{entry}");
    assert_eq!(entry["error"], Json::Null, "{entry}");
    assert_eq!(entry["file_path"], json!("inbox/data.bin"), "{entry}");
    assert_eq!(entry["directory"], json!("inbox"), "{entry}");
    assert_eq!(entry["url"], json!(url), "{entry}");
    assert!(entry["end_time"].as_u64() >= entry["start_time"].as_u64(), "{entry}");

    assert_eq!(origin.hits("/files/data.bin"), 1, "the origin should see exactly one request");
    let req = &origin.requests()[0];
    assert_eq!(req.method, "GET", "{req:?}");
    assert!(dir_active(&app, "inbox").is_empty(), "a completed download is still active");
    assert!(global_active(&app).is_empty(), "a completed download is still active");
}

#[test]
fn download_with_chunked_body_is_stored_byte_exact() {
    let data = pseudo_random_bytes(2, 2 * MIB + 12_345);
    let origin = TestOrigin::start(vec![("/chunked/stream.bin", Route::chunked(data.clone()))]);
    let app = App::start(&[]);
    let resp = start(&app, "in/nested", &origin.url("/chunked/stream.bin"), &[]);
    let id = expect_started(&resp, "in/nested", "stream.bin", "start chunked");
    wait_completed(&app, &id, data.len() as u64, SMALL);
    expect_file(&app, "in/nested/stream.bin", &data);
    assert_eq!(history_entry(&app, &id)["total_bytes"], json!(data.len()));
}

#[test]
fn explicit_filename_is_used() {
    let data = b"id,name\n1,a\n".to_vec();
    let origin = TestOrigin::start(vec![("/export", Route::ok(data.clone()))]);
    let app = App::start(&[]);
    let resp =
        start(&app, "Downloads", &origin.url("/export"), &[("filename", "renamed-data.csv"), ("timeout", "600")]);
    let id = expect_started(&resp, "Downloads", "renamed-data.csv", "start with filename");
    wait_completed(&app, &id, data.len() as u64, SMALL);
    expect_file(&app, "Downloads/renamed-data.csv", &data);
}

#[test]
fn start_answers_before_the_transfer_ends() {
    let gate = Gate::new();
    let body = pseudo_random_bytes(3, 200 * KIB);
    let origin = TestOrigin::start(vec![("/slow.bin", Route::gated(body.clone(), 10 * KIB, &gate))]);
    let app = App::start(&[]);
    let began = Instant::now();
    let resp = start(&app, "bg", &origin.url("/slow.bin"), &[]);
    let id = expect_started(&resp, "bg", "slow.bin", "start gated");
    assert!(began.elapsed() < Duration::from_secs(10), "the start answer took {:?}", began.elapsed());
    assert!(!gate.is_released());
    // Still running in the background.
    let record = detail(&app, &id);
    assert!(["starting", "downloading"].contains(&status_of(&record)), "{record}");
    expect_no_file(&app, "bg/slow.bin", "a file is visible before the download completed");
    gate.release();
    wait_completed(&app, &id, body.len() as u64, SMALL);
    expect_file(&app, "bg/slow.bin", &body);
}

#[test]
fn hundred_mib_download_is_byte_exact() {
    let len = 100 * MIB as u64;
    let origin = TestOrigin::start(vec![("/big/hundred.bin", Route::generated(100, len))]);
    let app = App::start(&[]);
    let began = Instant::now();
    let resp = start(&app, "big", &origin.url("/big/hundred.bin"), &[]);
    let id = expect_started(&resp, "big", "hundred.bin", "start 100 MiB");
    wait_completed(&app, &id, len, Duration::from_secs(300));
    let took = began.elapsed();
    let (status, sha, n) = file_digest(&app, "big/hundred.bin");
    assert_eq!(status, 200);
    assert_eq!(n, len, "stored length");
    assert_eq!(sha, generated_sha256(100, len), "the stored 100 MiB differs from the origin's body");
    eprintln!("100 MiB download took {took:?} ({:.1} MB/s)", len as f64 / took.as_secs_f64() / 1e6);
}

// ---------------------------------------------------------------------------------------------
// Progress and the active lists
// ---------------------------------------------------------------------------------------------

#[test]
fn progress_is_visible_mid_transfer_with_content_length() {
    let len = 8 * MIB as u64;
    let origin = TestOrigin::start(vec![("/p/progress.bin", Route::throttled(7, len, MIB as u64, false))]);
    let app = App::start(&[]);
    let url = origin.url("/p/progress.bin");
    let resp = start(&app, "prog", &url, &[]);
    let id = expect_started(&resp, "prog", "progress.bin", "start throttled");

    let mut last = Vec::new();
    let item = poll_until(Duration::from_secs(20), || {
        let list = dir_active(&app, "prog");
        last = list.clone();
        list.into_iter().find(|i| {
            i["id"] == json!(id)
                && i["current_size"].as_u64().is_some_and(|c| c > 0 && c < len)
                && i["status"] == json!("downloading")
        })
    })
    .unwrap_or_else(|| panic!("no mid-transfer progress seen in /prog?downloads=; last {}", Json::Array(last.clone())));
    assert_eq!(item["filename"], json!("progress.bin"), "{item}");
    assert_eq!(item["file_path"], json!("prog/progress.bin"), "{item}");
    assert_eq!(item["directory"], json!("prog"), "{item}");
    assert_eq!(item["url"], json!(url), "{item}");
    assert_eq!(item["expected_size"], json!(len), "{item}");
    let pct =
        item["progress_percentage"].as_f64().unwrap_or_else(|| panic!("progress_percentage is not a number: {item}"));
    assert!(pct > 0.0 && pct < 100.0, "progress_percentage {pct} out of (0, 100): {item}");
    let expected_pct = item["current_size"].as_f64().unwrap() * 100.0 / len as f64;
    assert!((pct - expected_pct).abs() < 1.0, "progress_percentage {pct} vs current/expected {expected_pct}: {item}");
    assert!(item["start_time"].as_u64().is_some(), "{item}");

    // The global list has it; another directory's list does not.
    assert!(ids(&global_active(&app)).contains(&id), "not in /api/v1/downloads");
    assert!(!ids(&dir_active(&app, "elsewhere")).contains(&id), "listed under another directory");
    let record = detail(&app, &id);
    assert_eq!(record["status"], json!("downloading"), "{record}");

    // It moves on.
    let first = item["current_size"].as_u64().unwrap();
    poll_until(Duration::from_secs(20), || {
        let r = detail(&app, &id);
        (r["current_size"].as_u64().unwrap_or(0) > first || status_of(&r) == "completed").then_some(())
    })
    .expect("current_size never grew");

    wait_completed(&app, &id, len, Duration::from_secs(60));
    assert!(dir_active(&app, "prog").is_empty(), "still listed after completion");
    assert!(!ids(&global_active(&app)).contains(&id), "still listed globally after completion");
    let (status, sha, _) = file_digest(&app, "prog/progress.bin");
    assert_eq!(status, 200);
    assert_eq!(sha, generated_sha256(7, len));
}

/// Bytes that arrived before the origin stalled are published (progress is throttled "every
/// 512 KiB or 250 ms", and heartbeats keep coming while the origin is silent), so a stalled
/// download does not show `current_size: 0` forever.
#[test]
fn progress_received_before_a_stall_is_published() {
    let gate = Gate::new();
    let first = 16 * KIB;
    let origin = TestOrigin::start(vec![("/stall.bin", Route::gated(vec![6u8; 256 * KIB], first, &gate))]);
    let app = App::start(&[]);
    let (id, _) = start_ok(&app, "stall", &origin.url("/stall.bin"), &[]);
    let mut last = Json::Null;
    // Default heartbeat is 5 s: allow one heartbeat plus slack.
    let seen = poll_until(Duration::from_secs(8), || {
        let r = detail(&app, &id);
        last = r.clone();
        (r["current_size"].as_u64() == Some(first as u64)).then_some(r)
    });
    gate.release();
    let record = seen.unwrap_or_else(|| {
        panic!("{first} bytes arrived before the origin stalled, but 8 s later the record still shows {last}")
    });
    assert_eq!(record["status"], json!("downloading"), "{record}");
    wait_completed(&app, &id, 256 * KIB as u64, SMALL);
}

#[test]
fn progress_of_a_chunked_transfer_has_no_percentage() {
    let len = 6 * MIB as u64;
    let origin = TestOrigin::start(vec![("/c/unknown.bin", Route::throttled(8, len, MIB as u64, true))]);
    let app = App::start(&[]);
    let resp = start(&app, "chunk", &origin.url("/c/unknown.bin"), &[]);
    let id = expect_started(&resp, "chunk", "unknown.bin", "start chunked throttled");
    let mut last = Vec::new();
    let item = poll_until(Duration::from_secs(20), || {
        let list = dir_active(&app, "chunk");
        last = list.clone();
        list.into_iter().find(|i| i["id"] == json!(id) && i["current_size"].as_u64().is_some_and(|c| c > 0 && c < len))
    })
    .unwrap_or_else(|| panic!("no mid-transfer progress seen; last {}", Json::Array(last.clone())));
    assert_eq!(item["status"], json!("downloading"), "{item}");
    assert_eq!(item["expected_size"], Json::Null, "{item}");
    assert_eq!(item["progress_percentage"], Json::Null, "{item}");
    wait_completed(&app, &id, len, Duration::from_secs(60));
    let (_, sha, _) = file_digest(&app, "chunk/unknown.bin");
    assert_eq!(sha, generated_sha256(8, len));
}

#[test]
fn global_list_spans_directories_and_unknown_id_is_404() {
    let gate = Gate::new();
    let origin = TestOrigin::start(vec![
        ("/one.bin", Route::gated(vec![1u8; 64 * KIB], KIB, &gate)),
        ("/two.bin", Route::gated(vec![2u8; 64 * KIB], KIB, &gate)),
    ]);
    let app = App::start(&[]);
    let (a, _) = start_ok(&app, "alpha", &origin.url("/one.bin"), &[]);
    let (b, _) = start_ok(&app, "beta/deep", &origin.url("/two.bin"), &[]);
    wait_status_downloading(&app, &a, SMALL);
    wait_status_downloading(&app, &b, SMALL);
    let global: BTreeSet<String> = ids(&global_active(&app)).into_iter().collect();
    assert_eq!(global, [a.clone(), b.clone()].into_iter().collect(), "global active list");
    assert_eq!(ids(&dir_active(&app, "alpha")), vec![a.clone()], "alpha's list");
    assert_eq!(ids(&dir_active(&app, "beta/deep")), vec![b.clone()], "beta/deep's list");
    for item in global_active(&app) {
        let dir = if item["id"] == json!(a) { "alpha" } else { "beta/deep" };
        assert_eq!(item["directory"], json!(dir), "{item}");
    }
    expect_status(&app.get("/api/v1/downloads/no-such-download"), 404, "GET unknown id");
    expect_status(&app.get("/api/v1/downloads/00000000-0000-4000-8000-000000000000"), 404, "GET unknown uuid");
    gate.release();
    wait_completed(&app, &a, 64 * KIB as u64, SMALL);
    wait_completed(&app, &b, 64 * KIB as u64, SMALL);
    // Any status: an ended record is still served.
    assert_eq!(detail(&app, &a)["status"], json!("completed"));
}

// ---------------------------------------------------------------------------------------------
// The operator switch and validation
// ---------------------------------------------------------------------------------------------

#[test]
fn switch_off_is_download_forbidden() {
    let origin = TestOrigin::start(vec![("/x.bin", Route::ok(b"x".to_vec()))]);
    for (case, value) in [("allow_download unset (default)", UNSET), ("allow_download=false", "false")] {
        let app = App::start(&[("allow_download", value)]);
        let resp = start(&app, "dir", &origin.url("/x.bin"), &[]);
        expect_status(&resp, 403, case);
        let body = json_of(&resp, case);
        assert_eq!(body["success"], json!(false), "{case}: {body}");
        assert_eq!(body["error"], json!("DOWNLOAD_FORBIDDEN"), "{case}: {body}");
        expect_no_file(&app, "dir/x.bin", case);
    }
    assert_eq!(origin.total_hits(), 0, "a forbidden download reached the origin");
}

#[test]
fn invalid_urls_are_rejected_and_recorded() {
    let origin = TestOrigin::start(vec![("/x.bin", Route::ok(b"x".to_vec()))]);
    let port = origin.port();
    let app = App::start(&[]);
    let cases = [
        format!("ftp://127.0.0.1:{port}/x.bin"),
        "file:///etc/passwd".to_string(),
        "javascript:alert(1)".to_string(),
        "http://".to_string(),
        "http:///x.bin".to_string(),
        "https://".to_string(),
        format!("http://user:secret@127.0.0.1:{port}/x.bin"),
        format!("http://user@127.0.0.1:{port}/x.bin"),
        "not a url".to_string(),
        "127.0.0.1/x.bin".to_string(),
        "http://exa mple.com/x".to_string(),
        String::new(),
    ];
    let mut rejected = Vec::new();
    for url in &cases {
        let what = format!("start with download={url:?}");
        let resp = start(&app, "bad", url, &[]);
        let body = expect_rejected(&resp, 400, "INVALID_URL", &what);
        assert!(!resp.text().contains("secret"), "{what}: the answer echoes the URL's password: {body}");
        rejected.push(body["download_id"].as_str().unwrap().to_string());
    }
    assert_eq!(origin.total_hits(), 0, "an invalid URL reached the origin");
    let history = history_all(&app, "");
    for id in &rejected {
        let entry = history
            .iter()
            .find(|e| e["id"] == json!(id))
            .unwrap_or_else(|| panic!("rejected download {id} is not in history: {}", Json::Array(history.clone())));
        assert_eq!(entry["status"], json!("failed"), "{entry}");
        assert_eq!(entry["error"], json!("INVALID_URL"), "{entry}");
        assert_eq!(entry["total_bytes"], Json::Null, "{entry}");
        assert!(!entry.to_string().contains("secret"), "history keeps a URL password: {entry}");
    }
    assert!(global_active(&app).is_empty(), "a rejected download is active");
}

#[test]
fn blocked_domains_private_targets_and_internal_hosts() {
    let origin = TestOrigin::start(vec![("/x.bin", Route::ok(b"x".to_vec()))]);
    let port = origin.port();

    // Block list, whole labels.
    let app = App::start(&[("download_block_domains", "blocked.test, other.example")]);
    let mut refused = Vec::new();
    for url in [
        "http://blocked.test/x.bin",
        "http://a.blocked.test/x.bin",
        "https://deep.a.blocked.test:8443/x.bin",
        "http://BLOCKED.TEST/x.bin",
        "http://blocked.test./x.bin",
        "http://other.example/x.bin",
        // Never reachable, even with private targets allowed.
        "http://files.spin.internal/x.bin",
        "http://download.spin.internal/x.bin",
        "http://anything.spin.internal/x.bin",
        "http://self/x.bin",
        "http://self:3000/x.bin",
    ] {
        let what = format!("start {url} (block list)");
        let body = expect_rejected(&start(&app, "blk", url, &[]), 403, "DOMAIN_BLOCKED", &what);
        refused.push(body["download_id"].as_str().unwrap().to_string());
    }
    // Label match, not suffix match: `notblocked.test` is not under `blocked.test`.
    let resp = start(&app, "blk", "http://notblocked.test/x.bin", &[]);
    let id = expect_started(&resp, "blk", "x.bin", "notblocked.test passes the block list");
    let record = wait_terminal(&app, &id, Duration::from_secs(60));
    assert_eq!(status_of(&record), "failed", "{record}");
    assert_ne!(record["error"], json!("DOMAIN_BLOCKED"), "notblocked.test was blocked: {record}");
    // The loopback origin is fine here (private allowed, not listed).
    let (ok, _) = start_ok(&app, "blk", &origin.url("/x.bin"), &[("filename", "ok.bin")]);
    wait_completed(&app, &ok, 1, SMALL);
    let history = history_all(&app, "");
    for id in &refused {
        let entry = history.iter().find(|e| e["id"] == json!(id)).unwrap_or_else(|| panic!("{id} not in history"));
        assert_eq!(entry["status"], json!("failed"), "{entry}");
        assert_eq!(entry["error"], json!("DOMAIN_BLOCKED"), "{entry}");
    }
    drop(app);

    // Allow list: only listed domains (and their subdomains).
    let app = App::start(&[("download_allow_domains", "allowed.test")]);
    for url in [
        origin.url("/x.bin"),
        "http://notallowed.test/x.bin".to_string(),
        "http://allowed.test.evil.test/x.bin".to_string(),
        "http://example.com/x.bin".to_string(),
    ] {
        expect_rejected(&start(&app, "allow", &url, &[]), 403, "DOMAIN_BLOCKED", &format!("start {url} (allow list)"));
    }
    for url in ["http://allowed.test/x.bin", "http://sub.allowed.test/x.bin"] {
        let (id, _) = start_ok(&app, "allow", url, &[]);
        let record = wait_terminal(&app, &id, Duration::from_secs(60));
        assert_ne!(record["error"], json!("DOMAIN_BLOCKED"), "{url} is on the allow list: {record}");
    }
    drop(app);

    // Private targets refused by default.
    let app = App::start(&[("download_allow_private", UNSET)]);
    for url in [
        origin.url("/x.bin"),
        format!("http://localhost:{port}/x.bin"),
        format!("http://LOCALHOST:{port}/x.bin"),
        format!("http://app.localhost:{port}/x.bin"),
        format!("http://[::1]:{port}/x.bin"),
        format!("http://0.0.0.0:{port}/x.bin"),
        format!("http://127.1.2.3:{port}/x.bin"),
        "http://10.1.2.3/x.bin".to_string(),
        "http://192.168.1.1/x.bin".to_string(),
        "http://172.16.0.1/x.bin".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/x.bin"),
        "http://files.spin.internal/x.bin".to_string(),
        "http://self/x.bin".to_string(),
    ] {
        expect_rejected(
            &start(&app, "priv", &url, &[]),
            403,
            "DOMAIN_BLOCKED",
            &format!("start {url} (private refused)"),
        );
    }
    drop(app);
    assert_eq!(origin.hits("/x.bin"), 1, "only the one allowed download may reach the origin");
}

#[test]
fn invalid_parameters_are_rejected_and_recorded() {
    let origin = TestOrigin::start(vec![("/x.bin", Route::ok(b"x".to_vec()))]);
    let app = App::start(&[]);
    let url = origin.url("/x.bin");
    let long_hex = "a".repeat(65);
    let not_hex = "g".repeat(64);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("timeout", "abc")], "INVALID_REQUEST"),
        (vec![("timeout", "0")], "INVALID_REQUEST"),
        (vec![("timeout", "999999999")], "INVALID_REQUEST"),
        (vec![("timeout", "-5")], "INVALID_REQUEST"),
        (vec![("timeout", "1.5")], "INVALID_REQUEST"),
        (vec![("sha256", "xyz")], "INVALID_REQUEST"),
        (vec![("sha256", "abcd")], "INVALID_REQUEST"),
        (vec![("sha256", &long_hex)], "INVALID_REQUEST"),
        (vec![("sha256", &not_hex)], "INVALID_REQUEST"),
        (vec![("filename", "a/b.bin")], "INVALID_PATH"),
        (vec![("filename", "..")], "INVALID_PATH"),
        (vec![("filename", "../escape.bin")], "INVALID_PATH"),
    ];
    let mut rejected = Vec::new();
    for (extra, code) in &cases {
        let what = format!("start with {extra:?}");
        let body = expect_rejected(&start(&app, "params", &url, extra), 400, code, &what);
        rejected.push((body["download_id"].as_str().unwrap().to_string(), *code));
    }
    assert_eq!(origin.total_hits(), 0, "a rejected download reached the origin");
    let history = history_all(&app, "");
    for (id, code) in &rejected {
        let entry = history
            .iter()
            .find(|e| e["id"] == json!(id))
            .unwrap_or_else(|| panic!("rejected {id} ({code}) not in history: {}", Json::Array(history.clone())));
        assert_eq!(entry["status"], json!("failed"), "{entry}");
        assert_eq!(entry["error"], json!(code), "{entry}");
    }
    expect_no_file(&app, "escape.bin", "filename=../escape.bin");
    let listing = app.get("/params/");
    assert!(
        listing.status == 404 || !listing.text().contains("\"name\""),
        "rejected downloads wrote files: {}",
        listing.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Transfer failures
// ---------------------------------------------------------------------------------------------

#[test]
fn remote_errors_map_to_their_codes_and_leave_no_file() {
    let origin = TestOrigin::start(vec![
        ("/missing.bin", Route::status(404)),
        ("/gone.bin", Route::status(410)),
        ("/broken.bin", Route::status(500)),
        ("/denied.bin", Route::status(403)),
        ("/reset.bin", Route::Cut { len: 4 * MIB as u64, sent: 2 * MIB as u64, rst: true }),
        ("/short.bin", Route::Cut { len: 4 * MIB as u64, sent: 2 * MIB as u64, rst: false }),
    ]);
    let refused_port = free_port();
    // Transient faults (500, a reset, a short body, a refused connection) are retried; two
    // attempts keep this test quick.
    let app = App::start(&[("download_max_attempts", "2")]);
    let cases = [
        (origin.url("/missing.bin"), "missing.bin", "REMOTE_FILE_NOT_FOUND"),
        (origin.url("/gone.bin"), "gone.bin", "REMOTE_FILE_NOT_FOUND"),
        (origin.url("/broken.bin"), "broken.bin", "NETWORK_ERROR"),
        (origin.url("/denied.bin"), "denied.bin", "NETWORK_ERROR"),
        (origin.url("/reset.bin"), "reset.bin", "NETWORK_ERROR"),
        (origin.url("/short.bin"), "short.bin", "NETWORK_ERROR"),
        (format!("http://127.0.0.1:{refused_port}/refused.bin"), "refused.bin", "NETWORK_ERROR"),
    ];
    let started: Vec<(String, &str, &str)> = cases
        .iter()
        .map(|(url, name, code)| {
            let resp = start(&app, "err", url, &[]);
            (expect_started(&resp, "err", name, &format!("start {url}")), *name, *code)
        })
        .collect();
    for (id, name, code) in &started {
        let record = wait_failed(&app, id, code, Duration::from_secs(60));
        assert_eq!(record["total_bytes"], Json::Null, "{name}: {record}");
        assert!(record.get("message").is_none() || record["message"].is_string() || record["message"].is_null());
        let entry = history_entry(&app, id);
        assert_eq!(entry["status"], json!("failed"), "{name}: {entry}");
        assert_eq!(entry["error"], json!(code), "{name}: {entry}");
        expect_no_file(&app, &format!("err/{name}"), &format!("failed download {name}"));
        let transient = !matches!(*name, "missing.bin" | "gone.bin" | "denied.bin");
        let message = entry["message"].as_str().unwrap_or_default();
        if *name != "refused.bin" {
            assert_eq!(origin.hits(&format!("/{name}")), 1 + usize::from(transient), "{name}: attempts");
        }
        assert_eq!(message.contains("after 2 attempts"), transient, "{name}: {entry}");
    }
    assert!(global_active(&app).is_empty(), "failed downloads still active");
    let listing = app.get("/err/");
    assert!(
        listing.status == 404 || !listing.text().contains(".bin"),
        "failed downloads left files: {}",
        listing.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Retries and resuming
// ---------------------------------------------------------------------------------------------

/// The `Range` and `If-Range` headers of each request the origin got for `path`.
fn range_requests(origin: &TestOrigin, path: &str) -> Vec<(Option<String>, Option<String>)> {
    let header = |r: &OriginRequest, name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    origin.requests().iter().filter(|r| r.path == path).map(|r| (header(r, "range"), header(r, "if-range"))).collect()
}

#[test]
fn a_flaky_origin_is_retried_and_resumed_with_ranges() {
    // Busy first (503 with Retry-After: 1), then every answer resets the connection after
    // 3 MiB: the download goes on from where it broke off each time.
    let len = 10 * MIB as u64;
    let flaky = Route::ranged(14, len, "\"v1\"").resetting_after(3 * MIB as u64);
    let origin = TestOrigin::start(vec![(
        "/flaky.bin",
        Route::sequence(vec![Route::with_headers(503, &[("retry-after", "1")])], flaky),
    )]);
    let app = App::start(&[("download_max_attempts", "2")]);
    let (id, path) = start_ok(&app, "flaky", &origin.url("/flaky.bin"), &[]);
    let record = wait_completed(&app, &id, len, Duration::from_secs(120));
    assert_eq!(record["total_bytes"], json!(len), "{record}");
    let (status, sha, size) = file_digest(&app, &path);
    assert_eq!((status, size, sha), (200, len, generated_sha256(14, len)), "byte-exact after four resets");

    let requests = origin.requests();
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_secs(1), "Retry-After: 1 was not honoured: retried after {gap:?}");
    let ranges = range_requests(&origin, "/flaky.bin");
    let expected: Vec<(Option<String>, Option<String>)> = [None, None]
        .into_iter()
        .chain((1..=3).map(|n| Some(format!("bytes={}-", n * 3 * MIB))))
        .map(|range| (range.clone(), range.map(|_| "\"v1\"".to_owned())))
        .collect();
    assert_eq!(ranges, expected, "the requests for the rest of the file");
    assert_eq!(history_entry(&app, &id)["status"], json!("completed"));
}

#[test]
fn only_get_starts_a_download() {
    let app = App::start(&[]);
    let origin = TestOrigin::start(vec![("/f.bin", Route::ok(b"only by GET".to_vec()))]);
    let target = start_target("verbs", &origin.url("/f.bin"), &[]);
    for method in ["HEAD", "PUT", "POST", "DELETE", "PATCH"] {
        let resp = app.call(method, &target, Some(USER));
        assert_eq!(resp.status, 405, "{method} {target}: {}", resp.text());
        assert_eq!(resp.header("allow"), Some("GET"), "{method} {target}");
    }
    assert_eq!(origin.total_hits(), 0, "a refused method fetched the URL");
    assert!(global_active(&app).is_empty() && history_all(&app, "").is_empty(), "a refused method left a record");
    let (id, _) = start_ok(&app, "verbs", &origin.url("/f.bin"), &[]);
    wait_completed(&app, &id, 11, SMALL);
}

#[test]
fn not_found_is_not_retried() {
    let origin = TestOrigin::start(vec![("/missing.bin", Route::status(404))]);
    let app = App::start(&[]);
    let (id, _) = start_ok(&app, "nf", &origin.url("/missing.bin"), &[]);
    let record = wait_failed(&app, &id, "REMOTE_FILE_NOT_FOUND", Duration::from_secs(30));
    assert_eq!(origin.hits("/missing.bin"), 1, "a 404 was retried: {record}");
}

#[test]
fn a_file_that_changes_between_attempts_starts_over_and_is_never_spliced() {
    // Version "a" breaks off after 2 MiB; by the retry the file is version "b": If-Range makes
    // the origin send all of "b", which is what gets stored.
    let len = 6 * MIB as u64;
    let version_a = Route::ranged(1, len, "\"a\"").resetting_after(2 * MIB as u64);
    let changing = || Route::sequence(vec![version_a.clone()], Route::ranged(2, len, "\"b\""));
    let origin = TestOrigin::start(vec![("/changing.bin", changing()), ("/strict.bin", changing())]);
    let app = App::start(&[]);
    let (id, path) = start_ok(&app, "changing", &origin.url("/changing.bin"), &[]);
    wait_completed(&app, &id, len, Duration::from_secs(60));
    let (status, sha, size) = file_digest(&app, &path);
    assert_eq!((status, size, sha), (200, len, generated_sha256(2, len)), "not version b, byte-exact");
    let ranges = range_requests(&origin, "/changing.bin");
    assert_eq!(ranges[1], (Some(format!("bytes={}-", 2 * MIB)), Some("\"a\"".to_owned())), "{ranges:?}");
    assert_eq!(ranges.len(), 2, "{ranges:?}");

    // With starting over switched off, the download fails and keeps nothing.
    let strict = App::start(&[("download_restart_without_ranges", "false")]);
    let (id, path) = start_ok(&strict, "changing", &origin.url("/strict.bin"), &[]);
    let record = wait_failed(&strict, &id, "NETWORK_ERROR", Duration::from_secs(60));
    let message = history_entry(&strict, &id)["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("byte 2097152") && message.contains("download_restart_without_ranges"),
        "{message}: {record}"
    );
    expect_no_file(&strict, &path, "a changed file with restarts off");
}

#[test]
fn an_origin_without_ranges_or_validators_starts_over() {
    // No ETag or Last-Modified: a range cannot be made safe, so the retry asks for all of it.
    let len = 4 * MIB as u64;
    let origin = TestOrigin::start(vec![(
        "/plain.bin",
        Route::sequence(vec![Route::Cut { len, sent: MIB as u64, rst: true }], Route::generated(0, len)),
    )]);
    let app = App::start(&[]);
    let (id, path) = start_ok(&app, "plain", &origin.url("/plain.bin"), &[]);
    wait_completed(&app, &id, len, Duration::from_secs(60));
    let (status, sha, size) = file_digest(&app, &path);
    assert_eq!((status, size, sha), (200, len, generated_sha256(0, len)));
    assert_eq!(range_requests(&origin, "/plain.bin"), vec![(None, None), (None, None)]);
}

#[test]
fn timeout_bounds_the_whole_transfer() {
    let silent = Gate::new();
    let stalled = Gate::new();
    let origin = TestOrigin::start(vec![
        ("/trickle.bin", Route::Trickle { len: 100, interval: Duration::from_secs(1) }),
        ("/silent.bin", Route::Silent { gate: silent.clone() }),
        ("/stalled.bin", Route::gated(vec![7u8; 100 * KIB], 10 * KIB, &stalled)),
    ]);
    let app = App::start(&[]);
    let mut started = Vec::new();
    for name in ["trickle.bin", "silent.bin", "stalled.bin"] {
        let began = Instant::now();
        let resp = start(&app, "slow", &origin.url(&format!("/{name}")), &[("timeout", "2")]);
        let id = expect_started(&resp, "slow", name, &format!("start {name} timeout=2"));
        started.push((id, name, began));
    }
    for (id, name, began) in &started {
        let record = wait_terminal(&app, id, Duration::from_secs(30));
        let took = began.elapsed();
        assert_eq!(status_of(&record), "failed", "{name}: {record}");
        assert_eq!(record["error"], json!("DOWNLOAD_TIMEOUT"), "{name}: {record}");
        assert!(
            took <= Duration::from_secs(5) + Duration::from_millis(500),
            "{name}: timeout=2 ended only after {took:?}"
        );
        expect_no_file(&app, &format!("slow/{name}"), name);
        assert_eq!(history_entry(&app, id)["error"], json!("DOWNLOAD_TIMEOUT"));
    }
    silent.release();
    stalled.release();
}

#[test]
fn a_transfer_past_the_invocation_budget_fails_naming_it_and_leaves_nothing() {
    // The hosted targets stop a handler at 30 s; `download_invocation_secs` (25 there) ends the
    // transfer first, with a message that says why, instead of an instance killed mid-write.
    let origin =
        TestOrigin::start(vec![("/trickle.bin", Route::Trickle { len: 100, interval: Duration::from_secs(1) })]);
    let app = App::start(&[("download_invocation_secs", "2")]);
    let began = Instant::now();
    let resp = start(&app, "budget", &origin.url("/trickle.bin"), &[("timeout", "60")]);
    let id = expect_started(&resp, "budget", "trickle.bin", "start past the budget");
    let record = wait_terminal(&app, &id, Duration::from_secs(30));
    assert_eq!(status_of(&record), "failed", "{record}");
    assert_eq!(record["error"], json!("DOWNLOAD_TIMEOUT"), "{record}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(message.contains("2 s invocation budget"), "the message names the budget: {record}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "ended at the budget, not the 60 s timeout: {:?}",
        began.elapsed()
    );
    expect_no_file(&app, "budget/trickle.bin", "past the budget");
}

#[test]
fn redirects_are_followed() {
    let origin = TestOrigin::start(vec![]);
    let final_body = pseudo_random_bytes(11, 100 * KIB);
    let other_body = pseudo_random_bytes(12, 50 * KIB);
    origin.route("/final/a.bin", Route::ok(final_body.clone()));
    origin.route("/dir/b.bin", Route::ok(other_body.clone()));
    origin.route("/go/permanent.bin", Route::redirect(301, "/final/a.bin"));
    origin.route("/go/found.bin", Route::redirect(302, origin.url("/final/a.bin")));
    origin.route("/dir/temporary.bin", Route::redirect(307, "b.bin"));
    origin.route("/go/chain.bin", Route::redirect(302, "/go/permanent.bin"));
    let app = App::start(&[]);
    for (path, body) in [
        ("/go/permanent.bin", &final_body),
        ("/go/found.bin", &final_body),
        ("/dir/temporary.bin", &other_body),
        ("/go/chain.bin", &final_body),
    ] {
        let (id, file) = start_ok(&app, "redir", &origin.url(path), &[]);
        let record = wait_completed(&app, &id, body.len() as u64, SMALL);
        assert_eq!(record["file_path"], json!(file), "{record}");
        expect_file(&app, &file, body);
    }
    assert_eq!(origin.hits("/dir/b.bin"), 1, "relative Location `b.bin` should resolve to /dir/b.bin");
}

#[test]
fn redirect_limit_is_ten() {
    let origin = TestOrigin::start(vec![]);
    // /ten/0 → … → /ten/10 (10 redirects), /eleven/0 → … → /eleven/11 (11 redirects).
    for (prefix, n) in [("ten", 10), ("eleven", 11)] {
        for i in 0..n {
            origin.route(&format!("/{prefix}/{i}"), Route::redirect(302, format!("/{prefix}/{}", i + 1)));
        }
        origin.route(&format!("/{prefix}/{n}"), Route::ok(b"arrived".to_vec()));
    }
    origin.route("/loop", Route::redirect(301, "/loop"));
    let app = App::start(&[]);
    let (ten, path) = start_ok(&app, "hops", &origin.url("/ten/0"), &[("filename", "ten.txt")]);
    let (eleven, eleven_path) = start_ok(&app, "hops", &origin.url("/eleven/0"), &[("filename", "eleven.txt")]);
    let (looping, loop_path) = start_ok(&app, "hops", &origin.url("/loop"), &[("filename", "loop.txt")]);
    wait_completed(&app, &ten, 7, SMALL);
    expect_file(&app, &path, b"arrived");
    wait_failed(&app, &eleven, "NETWORK_ERROR", SMALL);
    wait_failed(&app, &looping, "NETWORK_ERROR", SMALL);
    expect_no_file(&app, &eleven_path, "11 redirects");
    expect_no_file(&app, &loop_path, "redirect loop");
    assert_eq!(origin.hits("/eleven/11"), 0, "the 11th redirect was followed");
    assert!(origin.hits("/loop") <= 11, "a redirect loop was followed {} times", origin.hits("/loop"));
}

#[test]
fn redirect_to_a_blocked_target_is_domain_blocked() {
    let origin = TestOrigin::start(vec![]);
    origin.route("/to-blocked.bin", Route::redirect(302, "http://blocked.test/x.bin"));
    origin.route("/to-sub-blocked.bin", Route::redirect(301, "http://cdn.blocked.test/x.bin"));
    origin.route("/to-internal.bin", Route::redirect(307, "http://files.spin.internal/secret"));
    origin.route("/to-self.bin", Route::redirect(302, "http://self/secret"));
    origin.route("/to-ftp.bin", Route::redirect(302, "ftp://127.0.0.1/x"));
    let app = App::start(&[("download_block_domains", "blocked.test")]);
    for (path, code) in [
        ("/to-blocked.bin", "DOMAIN_BLOCKED"),
        ("/to-sub-blocked.bin", "DOMAIN_BLOCKED"),
        ("/to-internal.bin", "DOMAIN_BLOCKED"),
        ("/to-self.bin", "DOMAIN_BLOCKED"),
    ] {
        let (id, file) = start_ok(&app, "rblk", &origin.url(path), &[]);
        wait_failed(&app, &id, code, SMALL);
        expect_no_file(&app, &file, path);
        assert_eq!(history_entry(&app, &id)["error"], json!(code));
    }
    // A redirect to a non-HTTP scheme fails too (any code but success).
    let (id, _) = start_ok(&app, "rblk", &origin.url("/to-ftp.bin"), &[]);
    let record = wait_terminal(&app, &id, SMALL);
    assert_eq!(status_of(&record), "failed", "{record}");
}

#[test]
fn size_cap_is_file_too_large() {
    let origin = TestOrigin::start(vec![
        ("/big-cl.bin", Route::ok(vec![1u8; 5000])),
        ("/big-chunked.bin", Route::chunked(vec![2u8; 5000])),
        ("/exact.bin", Route::ok(vec![3u8; 1000])),
        ("/small.bin", Route::chunked(vec![4u8; 999])),
    ]);
    let app = App::start(&[("max_download_bytes", "1000")]);
    for name in ["big-cl.bin", "big-chunked.bin"] {
        let (id, file) = start_ok(&app, "cap", &origin.url(&format!("/{name}")), &[]);
        wait_failed(&app, &id, "FILE_TOO_LARGE", SMALL);
        expect_no_file(&app, &file, name);
    }
    let (exact, f1) = start_ok(&app, "cap", &origin.url("/exact.bin"), &[]);
    wait_completed(&app, &exact, 1000, SMALL);
    expect_file(&app, &f1, &[3u8; 1000]);
    let (small, f2) = start_ok(&app, "cap", &origin.url("/small.bin"), &[]);
    wait_completed(&app, &small, 999, SMALL);
    expect_file(&app, &f2, &[4u8; 999]);
}

#[test]
fn sha256_is_verified() {
    let data = pseudo_random_bytes(21, 123_456);
    let origin = TestOrigin::start(vec![("/sum.bin", Route::ok(data.clone()))]);
    let app = App::start(&[]);
    let (bad, bad_file) =
        start_ok(&app, "sum", &origin.url("/sum.bin"), &[("sha256", &"0".repeat(64)), ("filename", "bad.bin")]);
    wait_failed(&app, &bad, "CHECKSUM_MISMATCH", SMALL);
    expect_no_file(&app, &bad_file, "checksum mismatch");
    assert_eq!(history_entry(&app, &bad)["error"], json!("CHECKSUM_MISMATCH"));
    let (good, good_file) =
        start_ok(&app, "sum", &origin.url("/sum.bin"), &[("sha256", &sha256_hex(&data)), ("filename", "good.bin")]);
    wait_completed(&app, &good, data.len() as u64, SMALL);
    expect_file(&app, &good_file, &data);
}

// ---------------------------------------------------------------------------------------------
// Cancel and the concurrency limit
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_stops_the_download_and_leaves_no_file() {
    let len = 64 * MIB as u64;
    let origin = TestOrigin::start(vec![("/cancel.bin", Route::throttled(31, len, 512 * KIB as u64, false))]);
    let app = App::start(&[]);
    let (id, file) = start_ok(&app, "cx", &origin.url("/cancel.bin"), &[]);
    wait_downloading(&app, &id, SMALL);

    let resp = app.call("DELETE", &format!("/api/v1/downloads/{id}"), Some(USER));
    assert!(resp.status == 200 || resp.status == 202, "DELETE: {} {}", resp.status, resp.text());
    let cancelled_at = Instant::now();
    let record = poll_until(Duration::from_secs(2), || {
        let r = detail(&app, &id);
        (status_of(&r) == "cancelled").then_some(r)
    })
    .unwrap_or_else(|| panic!("not cancelled within 2 s: {}", detail(&app, &id)));
    assert!(record["end_time"].as_u64().is_some(), "{record}");
    assert!(!ids(&dir_active(&app, "cx")).contains(&id), "cancelled but still active");
    assert!(!ids(&global_active(&app)).contains(&id), "cancelled but still active globally");

    // The transfer stops: the origin's connection is closed soon after.
    poll_until(Duration::from_secs(5), || (origin.open_connections() == 0).then_some(()))
        .unwrap_or_else(|| panic!("the origin connection is still open {:?} after the cancel", cancelled_at.elapsed()));
    let sent = origin.body_bytes_sent();
    assert!(sent < len, "the whole body was sent despite the cancel");

    let entry = history_entry(&app, &id);
    assert_eq!(entry["status"], json!("cancelled"), "{entry}");
    expect_no_file(&app, &file, "cancelled download");
    thread::sleep(Duration::from_secs(2));
    expect_no_file(&app, &file, "cancelled download, 2 s later");
    assert_eq!(detail(&app, &id)["status"], json!("cancelled"), "the status changed after the cancel");
}

#[test]
fn cancel_of_a_gated_download() {
    let gate = Gate::new();
    let origin = TestOrigin::start(vec![("/held.bin", Route::gated(vec![9u8; 256 * KIB], 16 * KIB, &gate))]);
    let app = App::start(&[]);
    let (id, file) = start_ok(&app, "held", &origin.url("/held.bin"), &[]);
    wait_status_downloading(&app, &id, SMALL);
    let resp = app.call("DELETE", &format!("/api/v1/downloads/{id}"), Some(USER));
    assert!(resp.status == 200 || resp.status == 202, "DELETE: {} {}", resp.status, resp.text());
    poll_until(Duration::from_secs(2), || (status_of(&detail(&app, &id)) == "cancelled").then_some(()))
        .unwrap_or_else(|| panic!("not cancelled within 2 s: {}", detail(&app, &id)));
    // Even if the origin now delivers everything, nothing is stored.
    gate.release();
    thread::sleep(Duration::from_secs(2));
    assert_eq!(detail(&app, &id)["status"], json!("cancelled"));
    expect_no_file(&app, &file, "cancelled gated download after the origin finished");
    assert_eq!(history_entry(&app, &id)["status"], json!("cancelled"));
}

#[test]
fn concurrency_limit_is_429_and_frees_up() {
    let gate = Gate::new();
    let origin = TestOrigin::start(vec![
        ("/a.bin", Route::gated(vec![1u8; 32 * KIB], KIB, &gate)),
        ("/b.bin", Route::gated(vec![2u8; 32 * KIB], KIB, &gate)),
        ("/c.bin", Route::ok(vec![3u8; 32 * KIB])),
    ]);
    let app = App::start(&[("max_concurrent_downloads", "2")]);
    let (a, _) = start_ok(&app, "lim", &origin.url("/a.bin"), &[]);
    let (b, _) = start_ok(&app, "lim", &origin.url("/b.bin"), &[]);
    let body =
        expect_rejected(&start(&app, "lim", &origin.url("/c.bin"), &[]), 429, "TOO_MANY_DOWNLOADS", "third start");
    let refused = body["download_id"].as_str().unwrap().to_string();
    assert_eq!(origin.hits("/c.bin"), 0, "the refused download reached the origin");
    let entry = history_entry(&app, &refused);
    assert_eq!(entry["status"], json!("failed"), "{entry}");
    assert_eq!(entry["error"], json!("TOO_MANY_DOWNLOADS"), "{entry}");

    gate.release();
    wait_completed(&app, &a, 32 * KIB as u64, SMALL);
    wait_completed(&app, &b, 32 * KIB as u64, SMALL);
    let (c, file) = start_ok(&app, "lim", &origin.url("/c.bin"), &[]);
    wait_completed(&app, &c, 32 * KIB as u64, SMALL);
    expect_file(&app, &file, &[3u8; 32 * KIB]);
}

#[test]
fn thirty_concurrent_downloads_complete_once_each() {
    let n = 30usize;
    let origin = TestOrigin::start(vec![]);
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| pseudo_random_bytes(1000 + i as u64, 20 * KIB + i * 7)).collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.route(&format!("/many/{i}.bin"), Route::ok(body.clone()));
    }
    let app = Arc::new(App::start(&[("max_concurrent_downloads", "30")]));
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let app = app.clone();
            let barrier = barrier.clone();
            let url = origin.url(&format!("/many/{i}.bin"));
            thread::spawn(move || {
                barrier.wait();
                let resp = start(&app, "many", &url, &[]);
                (i, resp)
            })
        })
        .collect();
    let mut started: HashMap<String, (usize, String)> = HashMap::new();
    for h in handles {
        let (i, resp) = h.join().expect("starter thread");
        let id = expect_started(&resp, "many", &format!("{i}.bin"), &format!("concurrent start {i}"));
        assert!(started.insert(id.clone(), (i, format!("many/{i}.bin"))).is_none(), "duplicate id {id}");
    }
    for (id, (i, file)) in &started {
        wait_completed(&app, id, bodies[*i].len() as u64, Duration::from_secs(120));
        expect_file(&app, file, &bodies[*i]);
    }
    let history = history_all(&app, "");
    let history_ids: Vec<String> = ids(&history);
    let unique: BTreeSet<&String> = history_ids.iter().collect();
    assert_eq!(unique.len(), history_ids.len(), "duplicated history entries: {history_ids:?}");
    assert_eq!(history_ids.len(), n, "history should have exactly {n} entries: {history_ids:?}");
    let expected: BTreeSet<&String> = started.keys().collect();
    assert_eq!(unique, expected, "history ids differ from the started ids");
    for entry in &history {
        assert_eq!(entry["status"], json!("completed"), "{entry}");
    }
    assert!(global_active(&app).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn name_collisions_pick_a_free_name() {
    let first = b"first,csv\n".to_vec();
    let second = b"second,csv\n".to_vec();
    let report = b"downloaded report".to_vec();
    let origin = TestOrigin::start(vec![
        ("/a/data.csv", Route::ok(first.clone())),
        ("/b/data.csv", Route::ok(second.clone())),
        ("/r/report.txt", Route::ok(report.clone())),
    ]);
    let app = App::start(&[]);
    let resp = start(&app, "col", &origin.url("/a/data.csv"), &[]);
    let id1 = expect_started(&resp, "col", "data.csv", "first data.csv");
    wait_completed(&app, &id1, first.len() as u64, SMALL);
    let resp = start(&app, "col", &origin.url("/b/data.csv"), &[]);
    let id2 = expect_started(&resp, "col", "data (1).csv", "second data.csv");
    let record = wait_completed(&app, &id2, second.len() as u64, SMALL);
    assert_eq!(record["file_path"], json!("col/data (1).csv"), "{record}");
    expect_file(&app, "col/data.csv", &first);
    expect_file(&app, "col/data (1).csv", &second);

    // An uploaded file is never overwritten either.
    app.upload("/col/report.txt", b"original upload");
    let resp = start(&app, "col", &origin.url("/r/report.txt"), &[]);
    let id3 = expect_started(&resp, "col", "report (1).txt", "report.txt over an upload");
    wait_completed(&app, &id3, report.len() as u64, SMALL);
    expect_file(&app, "col/report.txt", b"original upload");
    expect_file(&app, "col/report (1).txt", &report);

    // An explicit filename collides the same way.
    let resp = start(&app, "col", &origin.url("/a/data.csv"), &[("filename", "data.csv")]);
    let id4 = expect_started(&resp, "col", "data (2).csv", "explicit data.csv");
    wait_completed(&app, &id4, first.len() as u64, SMALL);
    expect_file(&app, "col/data (2).csv", &first);
}

#[test]
fn concurrent_downloads_never_share_a_target() {
    let gate = Gate::new();
    let n = 5;
    let origin = TestOrigin::start(vec![]);
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| pseudo_random_bytes(500 + i as u64, 40 * KIB + i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.route(&format!("/s{i}/same.bin"), Route::gated(body.clone(), KIB, &gate));
    }
    let app = Arc::new(App::start(&[("max_concurrent_downloads", "10")]));
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let app = app.clone();
            let barrier = barrier.clone();
            let url = origin.url(&format!("/s{i}/same.bin"));
            thread::spawn(move || {
                barrier.wait();
                (i, start(&app, "par", &url, &[]))
            })
        })
        .collect();
    let mut targets: Vec<(usize, String, String)> = Vec::new();
    for h in handles {
        let (i, resp) = h.join().unwrap();
        let what = format!("concurrent same.bin #{i}");
        expect_status(&resp, 202, &what);
        let body = json_of(&resp, &what);
        let filename = body["filename"].as_str().unwrap().to_string();
        let id = expect_started(&resp, "par", &filename, &what);
        targets.push((i, id, format!("par/{filename}")));
    }
    let paths: BTreeSet<&String> = targets.iter().map(|t| &t.2).collect();
    assert_eq!(paths.len(), n, "two concurrent downloads share a target: {targets:?}");
    let allowed: BTreeSet<String> =
        std::iter::once("par/same.bin".to_string()).chain((1..n).map(|k| format!("par/same ({k}).bin"))).collect();
    for (_, _, p) in &targets {
        assert!(allowed.contains(p), "unexpected target name {p}");
    }
    gate.release();
    for (i, id, path) in &targets {
        wait_completed(&app, id, bodies[*i].len() as u64, SMALL);
        expect_file(&app, path, &bodies[*i]);
    }
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

#[test]
fn history_is_newest_first_paginated_and_filterable() {
    let origin = TestOrigin::start(vec![]);
    let app = App::start(&[]);
    // Sequential, so the end order is known: (id, directory).
    let mut ended: Vec<(String, &str)> = Vec::new();
    for i in 0..9 {
        let dir = if i % 3 == 0 { "h2" } else { "h1" };
        if i == 4 {
            let body = expect_rejected(&start(&app, dir, "ftp://nowhere/x", &[]), 400, "INVALID_URL", "bad url");
            ended.push((body["download_id"].as_str().unwrap().to_string(), dir));
            continue;
        }
        let path = format!("/h/{i}.txt");
        let data = format!("entry {i}").into_bytes();
        origin.route(&path, Route::ok(data.clone()));
        let (id, _) = start_ok(&app, dir, &origin.url(&path), &[]);
        wait_completed(&app, &id, data.len() as u64, SMALL);
        ended.push((id, dir));
    }
    let newest_first: Vec<String> = ended.iter().rev().map(|(id, _)| id.clone()).collect();

    let all = history_all(&app, "");
    assert_eq!(ids(&all), newest_first, "history order (newest first)");

    // Pages of 4: 4 + 4 + 1, no gaps, no duplicates.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = "&limit=4".to_string();
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = history_page(&app, &query);
        let items = page["history"].as_array().unwrap();
        assert!(items.len() <= 4, "limit=4 returned {} items", items.len());
        paged.extend(ids(items));
        pages += 1;
        cursor = next_cursor(&page, "paged history");
        if cursor.is_none() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(paged, newest_first, "paged history");
    assert!(pages >= 3, "9 entries in pages of 4 took {pages} pages");

    let h1: Vec<String> = ended.iter().rev().filter(|(_, d)| *d == "h1").map(|(id, _)| id.clone()).collect();
    let filtered = history_all(&app, "&directory=h1");
    assert_eq!(ids(&filtered), h1, "directory=h1");
    for entry in &filtered {
        assert_eq!(entry["directory"], json!("h1"), "{entry}");
    }
    // Filter plus pagination.
    let page = history_page(&app, "&directory=h2&limit=1");
    assert_eq!(ids(page["history"].as_array().unwrap()), vec![ended[6].0.clone()], "first h2 page");
    let c = next_cursor(&page, "h2 page").expect("more h2 entries");
    let page = history_page(&app, &format!("&directory=h2&limit=1&cursor={}", encode(&c)));
    assert_eq!(ids(page["history"].as_array().unwrap()), vec![ended[3].0.clone()], "second h2 page");
}

#[test]
fn history_retention_keeps_the_newest() {
    let app = App::start(&[("download_history_limit", "5")]);
    let mut rejected = Vec::new();
    for i in 0..8 {
        let body =
            expect_rejected(&start(&app, "ret", &format!("ftp://nowhere/{i}"), &[]), 400, "INVALID_URL", "bad url");
        rejected.push(body["download_id"].as_str().unwrap().to_string());
    }
    let kept = ids(&history_all(&app, ""));
    let expected: Vec<String> = rejected.iter().rev().take(5).cloned().collect();
    assert_eq!(kept, expected, "history_limit=5 should keep the 5 newest");
}

// ---------------------------------------------------------------------------------------------
// Host restart
// ---------------------------------------------------------------------------------------------

/// Polls until download `id` has at least `bytes` bytes.
fn wait_received(app: &App, id: &str, bytes: u64, limit: Duration) -> Json {
    let mut last = Json::Null;
    poll_until(limit, || {
        let record = detail(app, id);
        last = record.clone();
        (record["current_size"].as_u64().unwrap_or(0) >= bytes).then_some(record)
    })
    .unwrap_or_else(|| panic!("download {id} did not reach {bytes} bytes within {limit:?}; last {last}"))
}

#[test]
fn a_killed_host_resumes_its_downloads_after_a_restart() {
    let state = HostState::new("dl-stale-state");
    let len = 16 * MIB as u64;
    let rate = 2 * MIB as u64;
    let resumable = Route::ranged(41, len, "\"k1\"").at_rate(rate);
    let origin = TestOrigin::start(vec![
        ("/done.bin", Route::ok(b"finished before the crash".to_vec())),
        ("/slow.bin", resumable),
        ("/plain.bin", Route::throttled(42, len, rate, false)),
    ]);
    let vars = [("download_heartbeat_secs", "1")];
    let app = App::start_in(&state, &vars);
    let (done, done_file) = start_ok(&app, "crash", &origin.url("/done.bin"), &[]);
    wait_completed(&app, &done, 25, SMALL);
    let sha = generated_sha256(41, len);
    let (id, file) = start_ok(&app, "crash", &origin.url("/slow.bin"), &[("sha256", &sha)]);
    let (plain, plain_file) = start_ok(&app, "crash", &origin.url("/plain.bin"), &[]);
    // Past a checkpoint at a part boundary whichever backend holds the bytes (parts of 8 MiB,
    // checkpoints every 2 s).
    wait_received(&app, &id, 12 * MIB as u64, SMALL);
    drop(app); // SIGKILL mid-transfer

    // Reading the records after the restart finds the workers dead and resumes them.
    let app = App::start_in(&state, &vars);
    let restarted = Instant::now();
    let record = wait_completed(&app, &id, len, Duration::from_secs(90));
    eprintln!("resumed download completed {:?} after the restart", restarted.elapsed());
    assert_eq!(record["total_bytes"], json!(len), "{record}");
    let (status, digest, size) = file_digest(&app, &file);
    assert_eq!((status, size, digest), (200, len, sha), "byte-exact, its SHA-256 checked across invocations");
    let resumed_from: Vec<u64> = range_requests(&origin, "/slow.bin")
        .into_iter()
        .filter_map(|(range, if_range)| {
            assert_eq!(if_range.is_some(), range.is_some(), "a range always names its version");
            range?.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
        })
        .collect();
    assert_eq!(resumed_from.len(), 1, "one request for the rest: {resumed_from:?}");
    assert!(resumed_from[0] > 0 && resumed_from[0] < len, "{resumed_from:?}");
    // Without a validator the other starts over, and completes all the same.
    wait_completed(&app, &plain, len, Duration::from_secs(90));
    expect_file(&app, &plain_file, &generated_bytes(42, len));
    assert_eq!(range_requests(&origin, "/plain.bin"), vec![(None, None), (None, None)]);

    // One record, one history entry each.
    let entries: Vec<Json> = history_all(&app, "").into_iter().filter(|e| e["id"] == json!(id)).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["status"], json!("completed"));
    assert!(!ids(&global_active(&app)).contains(&id), "still in the global active list");
    // Records and files from before the crash survive it.
    assert_eq!(history_entry(&app, &done)["status"], json!("completed"));
    expect_file(&app, &done_file, b"finished before the crash");
}

#[test]
fn a_killed_download_that_cannot_go_on_fails_and_keeps_nothing() {
    // Restarts switched off and no validator: after the crash there is no safe way on.
    let state = HostState::new("dl-stale-strict");
    let len = 16 * MIB as u64;
    let origin = TestOrigin::start(vec![("/slow.bin", Route::throttled(43, len, 2 * MIB as u64, false))]);
    let vars = [("download_heartbeat_secs", "1"), ("download_restart_without_ranges", "false")];
    let app = App::start_in(&state, &vars);
    let (id, file) = start_ok(&app, "crash", &origin.url("/slow.bin"), &[]);
    wait_received(&app, &id, 7 * MIB as u64, SMALL);
    drop(app);
    let app = App::start_in(&state, &vars);
    let record = wait_failed(&app, &id, "NETWORK_ERROR", Duration::from_secs(60));
    let message = history_entry(&app, &id)["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("download_restart_without_ranges"), "{message}: {record}");
    expect_no_file(&app, &file, "a download that could not go on");
    assert!(!ids(&global_active(&app)).contains(&id));
}

#[test]
fn slices_carry_a_trickled_download_across_many_invocations() {
    // One-second slices on a 100 MB download trickled over about 20 s: each invocation hands
    // off to the next, which asks for the rest; the SHA-256 covers the whole file.
    let len = 100_000_000u64;
    let origin = TestOrigin::start(vec![("/long.bin", Route::ranged(44, len, "\"t1\"").at_rate(5_000_000))]);
    let app = App::start(&[("download_slice_secs", "1")]);
    let sha = generated_sha256(44, len);
    let (id, file) = start_ok(&app, "sliced", &origin.url("/long.bin"), &[("sha256", &sha)]);
    let record = wait_completed(&app, &id, len, Duration::from_secs(180));
    assert_eq!(record["total_bytes"], json!(len));
    let (status, digest, size) = file_digest(&app, &file);
    if status != 200 {
        let resp = app.get(&format!("/{file}"));
        panic!("GET {file}: {} {}\n{}", resp.status, resp.text(), app.stderr_tail());
    }
    assert_eq!((status, size, digest), (200, len, sha));
    let ranges = range_requests(&origin, "/long.bin");
    assert!(ranges.len() >= 10, "only {} requests: {ranges:?}", ranges.len());
    assert!(ranges.iter().skip(1).all(|(range, if_range)| range.is_some() && if_range.as_deref() == Some("\"t1\"")));
    let entries: Vec<Json> = history_all(&app, "").into_iter().filter(|e| e["id"] == json!(id)).collect();
    assert_eq!(entries.len(), 1, "one history entry for all the slices: {entries:?}");
}

#[test]
fn a_file_that_changes_between_slices_starts_over_and_is_never_spliced() {
    // The first slice stores part of version "a"; when the next asks for the rest, the file
    // is version "b": If-Range gets all of "b", which the next slices carry on.
    let len = 8 * MIB as u64;
    let rate = 2 * MIB as u64;
    let changing = Route::sequence(
        vec![Route::ranged(3, len, "\"a\"").at_rate(rate)],
        Route::ranged(4, len, "\"b\"").at_rate(rate),
    );
    let origin = TestOrigin::start(vec![("/changing.bin", changing)]);
    let app = App::start(&[("download_slice_secs", "1")]);
    let (id, file) = start_ok(&app, "sliced", &origin.url("/changing.bin"), &[]);
    wait_completed(&app, &id, len, Duration::from_secs(90));
    let (status, digest, size) = file_digest(&app, &file);
    assert_eq!((status, size, digest), (200, len, generated_sha256(4, len)), "not version b, byte-exact");
    let ranges = range_requests(&origin, "/changing.bin");
    assert_eq!(ranges[1].1.as_deref(), Some("\"a\""), "the second slice asked for the rest of a: {ranges:?}");
    assert!(ranges.len() >= 3, "b was carried across slices too: {ranges:?}");
}

#[test]
fn a_download_that_cannot_be_resumed_is_not_sliced() {
    // No ETag, no Last-Modified: the next slice would have to start over, so this one goes on
    // past its budget (the host's invocation limit still bounds it).
    let len = 4 * MIB as u64;
    let origin = TestOrigin::start(vec![("/plain.bin", Route::throttled(46, len, MIB as u64, false))]);
    let app = App::start(&[("download_slice_secs", "1")]);
    let (id, file) = start_ok(&app, "unsliced", &origin.url("/plain.bin"), &[]);
    wait_completed(&app, &id, len, Duration::from_secs(60));
    expect_file(&app, &file, &generated_bytes(46, len));
    assert_eq!(origin.hits("/plain.bin"), 1, "it was sliced and started over");
}

#[test]
fn a_sixty_second_download_completes_under_the_wasm_functions_profile() {
    if !on_hosted_platform() {
        eprintln!("skipped: runs under DOWNLINK_TEST_PLATFORM=wasm-functions (its 30 s handler limit)");
        return;
    }
    // 30 MB at 500 kB/s: 60 s, twice the host's handler limit; its manifest's 20 s slices
    // carry it across three invocations.
    let len = 30_000_000u64;
    let origin = TestOrigin::start(vec![("/minute.bin", Route::ranged(45, len, "\"m1\"").at_rate(500_000))]);
    let app = App::start(&[]);
    let began = Instant::now();
    let (id, file) = start_ok(&app, "minute", &origin.url("/minute.bin"), &[("timeout", "600")]);
    wait_completed(&app, &id, len, Duration::from_secs(240));
    assert!(began.elapsed() > Duration::from_secs(30), "it was meant to outlast one invocation");
    let (status, digest, size) = file_digest(&app, &file);
    assert_eq!((status, size, digest), (200, len, generated_sha256(45, len)));
    assert!(range_requests(&origin, "/minute.bin").len() >= 3);
}

// ---------------------------------------------------------------------------------------------
// Scale-out: several hosts, one Redis store, one bucket
// ---------------------------------------------------------------------------------------------

/// Two hosts (two processes, each with its own state dir) sharing one Redis key-value store
/// through runtime config and one S3 bucket: what one does, the other sees — files uploaded,
/// listed, fetched and zipped across them, and a URL download started on one followed to its end
/// and into history on the other. Runs in the Redis combinations of `cargo xtask test`.
#[test]
fn two_hosts_sharing_redis_and_a_bucket_see_the_same_files_and_downloads() {
    if test_env().kv != KvKind::Redis {
        eprintln!("SKIPPED two_hosts_sharing_redis_and_a_bucket: runs with DOWNLINK_TEST_KV=redis");
        return;
    }
    let stores = HostState::shared("scale-out");
    let first = App::start_sharing(&stores);
    let second = App::start_sharing(&stores);

    let big = generated_bytes(3, 9 * MIB as u64);
    first.upload("/shared/big.bin", &big);
    first.upload("/shared/note.txt", b"written through the first host");
    let listing = json_of(&second.get("/shared/"), "listing on the second host");
    let names: Vec<&str> = listing["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["big.bin", "note.txt"], "{listing}");
    expect_file(&second, "shared/big.bin", &big);
    let bucket = stores.s3().expect("a shared bucket");
    assert_eq!(
        bucket.object(&format!("{TEST_PREFIX}shared/note.txt")).as_deref(),
        Some(&b"written through the first host"[..])
    );

    // A ZIP prepared on the first host, streamed by the second.
    let auth = format!("Bearer {}", token_for(ROOT));
    let body = json!({"Filelist": ["/shared/big.bin", "/shared/note.txt"]}).to_string();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let prepared = first.0.host.request("POST", "/api/download/prepare", &headers, body.as_bytes());
    expect_status(&prepared, 200, "prepare on the first host");
    let id = json_of(&prepared, "prepare")["rslt"].as_str().expect("a prepare id").to_string();
    let zip = second.0.host.request("POST", &format!("/api/download/multi?id={id}"), &headers[..1], b"");
    expect_status(&zip, 200, "ZIP on the second host");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.body)).expect("a valid ZIP");
    assert_eq!(archive.len(), 2);
    let mut entry = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("big.bin").expect("big.bin in the ZIP"), &mut entry).unwrap();
    assert!(entry == big, "big.bin differs in the ZIP");

    // A URL download started on the first host: progress, the end and history on the second.
    let len = 6 * MIB as u64;
    let origin = TestOrigin::start(vec![("/s/fetched.bin", Route::throttled(11, len, 2 * MIB as u64, false))]);
    let (id, file) = start_ok(&first, "fetched", &origin.url("/s/fetched.bin"), &[]);
    let seen = poll_until(SMALL, || ids(&global_active(&second)).contains(&id).then_some(()));
    assert!(seen.is_some(), "the second host never listed download {id} as active");
    wait_completed(&second, &id, len, Duration::from_secs(60));
    assert_eq!(history_entry(&second, &id)["status"], json!("completed"));
    let (status, sha, _) = file_digest(&second, &file);
    assert_eq!((status, sha), (200, generated_sha256(11, len)), "the downloaded file through the second host");
    assert_eq!(history_entry(&first, &id)["status"], json!("completed"), "and on the first host too");
}

// ---------------------------------------------------------------------------------------------
// The host's network policy
// ---------------------------------------------------------------------------------------------

/// The DNS-rebinding defence the README asks production for: `[outbound_networking]
/// block_networks = ["private"]` in the host's runtime config. A name the URL policy lets
/// through (private targets are allowed in this suite) but that resolves to loopback, and a
/// loopback literal, are refused by the host when it connects; the app reports
/// `DOMAIN_BLOCKED`. Storage is unaffected (with Redis, the harness adds its store to this
/// runtime config: the file record below lands there).
#[test]
fn host_block_networks_refusal_is_domain_blocked() {
    if bytes_in_bucket() {
        // `block_networks = ["private"]` also blocks the test's S3 server on 127.0.0.1: a real
        // deployment with a private bucket endpoint cannot use it either (README).
        eprintln!("skipped with DOWNLINK_TEST_STORAGE=s3: the test's bucket is on loopback");
        return;
    }
    let origin = TestOrigin::start(vec![("/rebound.bin", Route::ok(b"must not arrive".to_vec()))]);
    let dir = tempdir("dl-block-networks");
    let rtc = dir.path().join("runtime-config.toml");
    std::fs::write(&rtc, "[outbound_networking]\nblock_networks = [\"private\"]\n").unwrap();
    let app = App::start_with_runtime_config(&rtc, &[]);
    for url in [format!("http://localhost:{}/rebound.bin", origin.port()), origin.url("/rebound.bin")] {
        let (id, file) = start_ok(&app, "rebind", &url, &[]);
        let record = wait_failed(&app, &id, "DOMAIN_BLOCKED", SMALL);
        expect_no_file(&app, &file, &url);
        assert_eq!(history_entry(&app, &id)["error"], json!("DOMAIN_BLOCKED"), "{record}");
    }
    assert_eq!(origin.total_hits(), 0, "the host connected to a blocked network");
    app.upload("/rebind/kept.txt", b"stored");
    expect_file(&app, "rebind/kept.txt", b"stored");
    let keys = app.host.kv().keys();
    assert!(keys.contains(&"file:rebind/kept.txt".to_string()), "the store the harness configured: {keys:?}");
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

#[test]
fn credentials_and_scopes() {
    let gate = Gate::new();
    let origin = TestOrigin::start(vec![("/held.bin", Route::gated(vec![5u8; 64 * KIB], KIB, &gate))]);
    let app = App::start(&[]);
    let start_path = start_target("auth", &origin.url("/held.bin"), &[]);
    let (id, file) = start_ok(&app, "auth", &origin.url("/held.bin"), &[]);
    let one = format!("/api/v1/downloads/{id}");

    // No token: 401 everywhere.
    for (method, path) in [
        ("GET", start_path.as_str()),
        ("GET", "/auth?downloads="),
        ("GET", "/api/v1/downloads"),
        ("GET", "/?download_history="),
        ("GET", one.as_str()),
        ("DELETE", one.as_str()),
    ] {
        expect_unauthorized(&app.call(method, path, None), &format!("{method} {path} without a token"));
    }

    // Without download.create: no start, no cancel.
    for principal in [WATCHER, FILER] {
        let what = format!("start as {principal}");
        expect_error(&app.call("GET", &start_path, Some(principal)), 403, "FORBIDDEN", &what);
    }
    expect_error(&app.call("DELETE", &one, Some(WATCHER)), 403, "FORBIDDEN", "cancel as watcher");
    expect_error(&app.call("DELETE", &one, Some(FILER)), 403, "FORBIDDEN", "cancel as filer");
    let record = detail(&app, &id);
    assert!(["starting", "downloading"].contains(&status_of(&record)), "a forbidden cancel changed it: {record}");

    // Without download.read: no lists, no history.
    for path in ["/auth?downloads=", "/api/v1/downloads", "/?download_history="] {
        expect_error(&app.call("GET", path, Some(CREATOR)), 403, "FORBIDDEN", &format!("GET {path} as creator"));
        expect_error(&app.call("GET", path, Some(FILER)), 403, "FORBIDDEN", &format!("GET {path} as filer"));
    }

    // Only the one start by `user` reached the origin.
    gate.release();
    wait_completed(&app, &id, 64 * KIB as u64, SMALL);
    assert_eq!(origin.hits("/held.bin"), 1, "a refused start reached the origin");
    expect_file(&app, &file, &[5u8; 64 * KIB]);
    // admin sees everything.
    expect_status(&app.call("GET", "/?download_history=", Some(ROOT)), 200, "history as admin");
    expect_status(&app.call("GET", "/api/v1/downloads", Some(ROOT)), 200, "active as admin");
    assert_eq!(ids(&history_all(&app, "")), vec![id.clone()], "history after refused starts");
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

/// The test origin does what the tests above rely on (no dev host involved).
#[test]
fn test_origin_routes_behave() {
    let gate = Gate::new();
    let silent = Gate::new();
    let origin = TestOrigin::start(vec![
        ("/fixed", Route::ok(b"hello".to_vec())),
        ("/chunked", Route::chunked(pseudo_random_bytes(1, 100 * KIB))),
        ("/gen", Route::generated(9, 3 * MIB as u64 + 5)),
        ("/gen-chunked", Route::throttled(9, 300 * KIB as u64, 1000 * KIB as u64, true)),
        ("/gone", Route::status(410)),
        ("/moved", Route::redirect(301, "/fixed")),
        ("/cut", Route::Cut { len: 1000, sent: 500, rst: false }),
        ("/rst", Route::Cut { len: 1000, sent: 500, rst: true }),
        ("/gated", Route::gated(b"0123456789".to_vec(), 4, &gate)),
        ("/silent", Route::Silent { gate: silent.clone() }),
        ("/trickle", Route::Trickle { len: 3, interval: Duration::from_millis(300) }),
    ]);
    let agent = client_with_timeout(Duration::from_secs(20));
    let get = |path: &str| http_request(&agent, "GET", &origin.url(path), &[], b"").unwrap();

    let r = get("/fixed");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.header("content-length"), Some("5"));
    let r = get("/chunked");
    assert_eq!(r.body, pseudo_random_bytes(1, 100 * KIB));
    assert_eq!(r.header("content-length"), None);
    let mut h = Sha256::new();
    let (r, n) = http_request_streaming(&agent, "GET", &origin.url("/gen"), &[], |b| h.update(b)).unwrap();
    assert_eq!((r.status, n), (200, 3 * MIB as u64 + 5));
    assert_eq!(
        h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        generated_sha256(9, 3 * MIB as u64 + 5)
    );
    let began = Instant::now();
    let r = get("/gen-chunked");
    assert_eq!(r.body, generated_bytes(9, 300 * KIB as u64));
    assert!(began.elapsed() >= Duration::from_millis(250), "throttle ignored: {:?}", began.elapsed());
    assert_eq!(get("/gone").status, 410);
    assert_eq!(get("/nothing").status, 404);
    let r = get("/moved");
    assert_eq!((r.status, r.header("location")), (301, Some("/fixed")));
    assert!(http_request(&agent, "GET", &origin.url("/cut"), &[], b"").is_err(), "a cut body should be an error");
    assert!(http_request(&agent, "GET", &origin.url("/rst"), &[], b"").is_err(), "a reset body should be an error");
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(origin.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /rst HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let mut got = 0;
        let err = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("/rst ended with a FIN after {got} bytes, expected a reset"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "/rst: {err}");
    }
    let opener = {
        let url = origin.url("/gated");
        thread::spawn(move || {
            http_request(&client_with_timeout(Duration::from_secs(20)), "GET", &url, &[], b"").unwrap()
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(!opener.is_finished(), "the gated route did not wait");
    gate.release();
    assert_eq!(opener.join().unwrap().body, b"0123456789");
    let began = Instant::now();
    assert_eq!(get("/trickle").body, b"xxx");
    assert!(began.elapsed() >= Duration::from_millis(550), "trickle too fast: {:?}", began.elapsed());
    let silent_call = {
        let url = origin.url("/silent");
        thread::spawn(move || http_request(&client_with_timeout(Duration::from_secs(20)), "GET", &url, &[], b""))
    };
    thread::sleep(Duration::from_millis(300));
    assert!(!silent_call.is_finished());
    silent.release();
    assert!(silent_call.join().unwrap().is_err(), "the silent route answered");
    assert_eq!(origin.hits("/fixed"), 1);
    assert!(origin.total_hits() >= 11);
    let refused = free_port();
    assert!(http_request(&agent, "GET", &format!("http://127.0.0.1:{refused}/"), &[], b"").is_err());
    // Shutdown is bounded even with a handler mid-trickle.
    let slow = {
        let url = origin.url("/trickle");
        thread::spawn(move || http_request(&client_with_timeout(Duration::from_secs(20)), "GET", &url, &[], b""))
    };
    thread::sleep(Duration::from_millis(100));
    let began = Instant::now();
    drop(origin);
    assert!(began.elapsed() < Duration::from_secs(5), "origin shutdown took {:?}", began.elapsed());
    let _ = slow.join();
}

//! What real Spin 4.0.2 does to the app that a kinder host would hide (issue: "Real Spin breaks
//! where the dev host does not"). Runs on every host and store of the matrix (`TestEnv`):
//! the dev host and real Spin, each on SQLite and on Redis.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use downlink_core::prepare::bandwidth_key;
use downlink_e2e::*;

const SUITE: &str = "compat";
const ALICE: &str = "alice";
const BOB: &str = "bob";
const TOKENS: &[(&str, &[&str])] =
    &[(ALICE, &["file.read", "file.write", "download.create", "download.read"]), (BOB, &["file.read", "file.write"])];
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn app_on(state: &HostState, variables: &[(&str, &str)]) -> TestApp {
    let mut builder = app_builder(SUITE, TOKENS).state(state);
    for (name, value) in variables {
        builder = builder.variable(name, value);
    }
    TestApp::from_builder(SUITE, builder, CLIENT_TIMEOUT)
}

fn usage(app: &TestApp, principal: &str) -> u64 {
    let resp = app.call("GET", "/api/download/usage", Some(principal), &[], b"");
    expect_status(&resp, 200, "usage");
    resp.json()["bytes_sent"].as_u64().unwrap_or_else(|| panic!("no bytes_sent in {}", resp.text()))
}

/// Scenario 1 of the issue: a store whose counters were written as decimal text (by dev hosts
/// before they matched Spin) crashed Spin's SQLite `increment`, and every later request got
/// `500`. Such a store — and one with counters in Spin's own 8-byte encoding — now serves, and
/// the counter is left in Spin's encoding.
#[test]
fn counters_in_either_encoding_are_read_and_left_in_the_stores_own() {
    let state = HostState::new("compat-counters");
    let body = b"hello, counters".to_vec();
    {
        let app = app_on(&state, &[]);
        app.upload_as(ALICE, "/docs/a.txt", &body);
    }
    let kv_file = state.path().join("sqlite_key_value.db");
    let store = match test_env().kv {
        KvKind::Sqlite => KvStore::Sqlite(kv_file),
        KvKind::Redis => {
            // Redis keeps counters as decimal text on both hosts: the legacy value is native.
            let app = app_on(&state, &[]);
            app.host.kv().clone()
        }
    };
    store.set(&bandwidth_key(ALICE), b"3000");
    let spin_encoded = match test_env().kv {
        KvKind::Sqlite => 7i64.to_le_bytes().to_vec(),
        KvKind::Redis => b"7".to_vec(),
    };
    store.set(&bandwidth_key(BOB), &spin_encoded);

    let app = app_on(&state, &[]);
    assert_eq!(usage(&app, ALICE), 3000, "a decimal-text counter is read");
    assert_eq!(usage(&app, BOB), 7, "a counter in the store's own encoding is read");
    let resp = app.call("GET", "/docs/a.txt", Some(ALICE), &[], b"");
    expect_status(&resp, 200, "GET after the restart");
    assert_eq!(resp.body, body);
    // The bytes are counted once the body has been sent, so just after the client has it.
    let counted = 3000 + body.len() as u64;
    let seen = poll_until(Duration::from_secs(10), || Some(usage(&app, ALICE)).filter(|used| *used == counted));
    assert_eq!(seen, Some(counted), "the GET was counted (usage now {})", usage(&app, ALICE));
    let listing = app.call("GET", "/docs/", Some(ALICE), &[], b"");
    expect_status(&listing, 200, "listing after the increment");
    let stored = app.host.kv().get(&bandwidth_key(ALICE)).expect("counter stored");
    let expected = match test_env().kv {
        KvKind::Sqlite => (3000 + body.len() as i64).to_le_bytes().to_vec(),
        KvKind::Redis => (3000 + body.len()).to_string().into_bytes(),
    };
    assert_eq!(stored, expected, "the counter is in the store's encoding (Spin's SQLite: 8 little-endian bytes)");
}

/// Scenario 3 of the issue: parallel uploads into a new directory, where Spin's SQLite swap
/// of an absent key is an unconditional upsert and Redis's always reports failure. Every file
/// stored must be listed.
#[test]
fn parallel_uploads_into_new_directories_are_all_listed() {
    const ROUNDS: usize = 25;
    const PARALLEL: usize = 40;
    let state = HostState::new("compat-parallel");
    let app = Arc::new(app_on(&state, &[]));
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(PARALLEL));
        let threads: Vec<_> = (0..PARALLEL)
            .map(|n| {
                let (app, barrier) = (app.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let resp = app.call(
                        "PUT",
                        &format!("/r{round}/f{n}.bin"),
                        Some(BOB),
                        &[],
                        format!("{round}/{n}").as_bytes(),
                    );
                    (resp.status, resp.text())
                })
            })
            .collect();
        for (n, thread) in threads.into_iter().enumerate() {
            let (status, text) = thread.join().expect("upload thread");
            assert_eq!(status, 201, "round {round} upload {n}: {text}");
        }
        let listing = app.call("GET", &format!("/r{round}/"), Some(BOB), &[], b"");
        expect_status(&listing, 200, "listing");
        let names: Vec<String> = listing.json()["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("no entries in {}", listing.text()))
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(names.len(), PARALLEL, "round {round}: every stored file is listed, got {names:?}");
    }
}

/// Spin 4.0.2 keeps every compare-and-swap's Redis connections (two per swap) until the
/// request ends. A download that swapped its record per progress report held ~4 more each
/// second; progress is now a plain write, so the count stays flat however long it runs.
#[test]
fn a_running_download_holds_a_bounded_number_of_redis_connections() {
    if test_env().kv != KvKind::Redis {
        eprintln!("skipped: Redis connection use only matters with DOWNLINK_TEST_KV=redis");
        return;
    }
    let origin = TestOrigin::start(vec![(
        "/slow.bin",
        Route::Generated { seed: 9, len: 6 * 1024 * 1024, bytes_per_sec: Some(1024 * 1024), chunked: false },
    )]);
    let state = HostState::new("compat-redis-conns");
    let app = app_on(&state, &[("allow_download", "true"), ("download_allow_private", "true")]);
    let kv = app.host.kv().clone();
    let clients = || kv.redis_connected_clients().expect("the Redis store is selected");
    let before = clients();
    let url = encode(&origin.url("/slow.bin"));
    let resp = app.call("GET", &format!("/Downloads?download={url}"), Some(ALICE), &[], b"");
    expect_status(&resp, 202, "start");
    let id = resp.json()["download_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let mut most = before;
    loop {
        thread::sleep(Duration::from_millis(500));
        most = most.max(clients());
        let record = app.call("GET", &format!("/api/v1/downloads/{id}"), Some(ALICE), &[], b"");
        let status = record.json()["status"].as_str().unwrap_or_default().to_owned();
        if status == "completed" || status == "failed" {
            assert_eq!(status, "completed", "{}", record.text());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "download did not finish: {}", record.text());
    }
    assert!(
        most <= before + 8,
        "a {:.0} s download raised Redis's connected clients from {before} to {most}",
        started.elapsed().as_secs_f64()
    );
}

/// Spin refuses a request with a header value that is not UTF-8 (obs-text, e.g. a latin-1
/// byte) with an empty `500` before any component runs; the dev host does the same, so such a
/// request can never look handled (an `If-Match` silently dropped) on one host and not the other.
#[test]
fn a_header_value_that_is_not_utf8_is_refused_by_the_host_before_the_app() {
    let state = HostState::new("compat-obs-text");
    let app = app_on(&state, &[]);
    let stored = app.call("PUT", "/obs/kept.txt", Some(ALICE), &[], b"kept");
    expect_status(&stored, 201, "the file the conditional write targets");
    let auth = bearer_for(SUITE, ALICE);
    let mut request = format!(
        "PUT /obs/kept.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Length: 7\r\nConnection: close\r\nIf-Match: "
    )
    .into_bytes();
    request.extend_from_slice(b"\x84\r\n\r\nchanged");
    let refused = raw_request(app.host.addr(), &request).expect("the host answers");
    assert_eq!((refused.status, refused.body.len()), (500, 0), "{}", refused.text());
    let kept = app.call("GET", "/obs/kept.txt", Some(ALICE), &[], b"");
    assert_eq!((kept.status, kept.body.as_slice()), (200, &b"kept"[..]), "the refused write changed the file");
}

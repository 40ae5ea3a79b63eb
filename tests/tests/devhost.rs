//! End-to-end tests of the `devhost` binary against the fixture components in tests/fixtures.
//!
//! Prerequisites (the CI script does both):
//!   cargo build -p devhost
//!   cargo build --target wasm32-wasip2 --release -p fixture-app -p fixture-echo -p fixture-unsupported
//!
//! Every test starts its own dev host on 127.0.0.1:0 with a fresh state dir; every HTTP call has
//! a timeout and every poll loop a deadline.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use downlink_e2e::*;

const API_KEY: &str = "test-api-key";

fn app_builder() -> DevHostBuilder {
    DevHost::builder(fixture_manifest("spin.toml")).variable("api_key", API_KEY)
}

fn app() -> DevHost {
    app_builder().start().unwrap_or_else(|f| panic!("{f}"))
}

fn expect_status(resp: &Resp, status: u16, what: &str) {
    assert_eq!(
        resp.status,
        status,
        "{what}: expected status {status}, got {} with body {:?}",
        resp.status,
        resp.text()
    );
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn toml_str(path: &Path) -> String {
    // TOML basic string with the path (tempdir paths have no quotes or backslashes on Unix).
    format!("\"{}\"", path.display())
}

// ---------------------------------------------------------------------------------------------
// Key-value
// ---------------------------------------------------------------------------------------------

#[test]
fn kv_set_get_delete_and_list_keys() {
    let host = app();
    expect_status(&host.get("/kv/alpha"), 404, "GET missing key");

    expect_status(&host.put("/kv/alpha", b"one"), 200, "PUT alpha");
    expect_status(&host.put("/kv/beta", b"two"), 200, "PUT beta");
    let got = host.get("/kv/alpha");
    expect_status(&got, 200, "GET alpha");
    assert_eq!(got.body, b"one");

    // Overwrite, binary value.
    let binary: Vec<u8> = (0u8..=255).collect();
    expect_status(&host.put("/kv/alpha", &binary), 200, "PUT alpha binary");
    assert_eq!(host.get("/kv/alpha").body, binary);

    let keys = host.get("/kv-keys");
    expect_status(&keys, 200, "GET keys");
    let mut keys: Vec<String> = serde_json::from_slice(&keys.body).expect("keys JSON");
    keys.sort();
    assert_eq!(keys, vec!["alpha".to_string(), "beta".to_string()]);

    expect_status(&host.delete("/kv/alpha"), 200, "DELETE alpha");
    expect_status(&host.get("/kv/alpha"), 404, "GET deleted key");
    let keys: Vec<String> = serde_json::from_slice(&host.get("/kv-keys").body).unwrap();
    assert_eq!(keys, vec!["beta".to_string()]);
    // Deleting a missing key is not an error.
    expect_status(&host.delete("/kv/alpha"), 200, "DELETE missing key");
}

#[test]
fn kv_values_are_written_to_the_sqlite_file() {
    let host = app();
    expect_status(&host.put("/kv/in-sqlite", b"stored value"), 200, "PUT");
    let db = host.state_dir().unwrap().join("sqlite_key_value.db");
    assert!(db.is_file(), "{} does not exist", db.display());
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open sqlite db read-only");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let value: Vec<u8> = conn
        .query_row("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2", ["default", "in-sqlite"], |row| {
            row.get(0)
        })
        .expect("row (store='default', key='in-sqlite') in spin_key_value");
    assert_eq!(value, b"stored value");
}

#[test]
fn kv_batch_set_many_stores_every_pair_or_none_when_one_is_invalid() {
    let host = app();
    let reply = host.post("/batch", b"b1=one\nb2=two\nb3=three");
    expect_status(&reply, 200, "set-many");
    assert_eq!(reply.text(), "stored 3");
    for (key, value) in [("b1", "one"), ("b2", "two"), ("b3", "three")] {
        assert_eq!(host.get(&format!("/kv/{key}")).text(), value);
    }
    // A key over the hosted limit fails the whole call before anything is written.
    let long_key = "k".repeat(256);
    let reply = host.post("/batch", format!("b4=four\n{long_key}=x").as_bytes());
    expect_status(&reply, 500, "set-many with an invalid key");
    expect_status(&host.get("/kv/b4"), 404, "b4 after the failed batch");
}

#[test]
fn kv_key_value_flag_seeds_the_default_store() {
    let host = app_builder().arg("--key-value").arg("seeded=from-cli").start().unwrap_or_else(|f| panic!("{f}"));
    let got = host.get("/kv/seeded");
    expect_status(&got, 200, "GET seeded key");
    assert_eq!(got.text(), "from-cli");
}

#[test]
fn kv_label_not_granted_to_component_is_denied() {
    let host = app();
    let r = host.get("/kv/x?store=not-granted");
    expect_status(&r, 403, "open a label not in key_value_stores");
    assert!(r.text().contains("AccessDenied"), "body: {}", r.text());
    // fixture-nonet has no key_value_stores at all.
    let r = host.get("/nonet/kv/x");
    expect_status(&r, 403, "component without key_value_stores opens default");
    assert!(r.text().contains("AccessDenied"), "body: {}", r.text());
}

#[test]
fn kv_second_label_without_runtime_config_fails_startup() {
    let failure = DevHost::builder(fixture_manifest("kv-labels.toml"))
        .start()
        .err()
        .expect("a key_value_stores label missing from the runtime config must fail startup");
    assert!(failure.status.is_some_and(|s| !s.success()), "expected a non-zero exit: {failure}");
    assert!(failure.stderr.contains("other"), "stderr should name the undefined label `other`: {failure}");
}

#[test]
fn kv_second_label_uses_runtime_config_store() {
    let tmp = tempdir("rtc");
    let other_db = tmp.path().join("other.db");
    let rtc = tmp.path().join("runtime-config.toml");
    write_file(&rtc, &format!("[key_value_store.other]\ntype = \"spin\"\npath = {}\n", toml_str(&other_db)));
    let host = DevHost::builder(fixture_manifest("kv-labels.toml"))
        .runtime_config(&rtc)
        .start()
        .unwrap_or_else(|f| panic!("{f}"));

    expect_status(&host.put("/kv/shared-key?store=other", b"in-other"), 200, "PUT other");
    expect_status(&host.put("/kv/shared-key", b"in-default"), 200, "PUT default");
    assert_eq!(host.get("/kv/shared-key?store=other").text(), "in-other");
    assert_eq!(host.get("/kv/shared-key").text(), "in-default");
    let keys: Vec<String> = serde_json::from_slice(&host.get("/kv-keys?store=other").body).unwrap();
    assert_eq!(keys, vec!["shared-key".to_string()]);

    assert!(other_db.is_file(), "runtime config path {} not created", other_db.display());
    let conn = rusqlite::Connection::open_with_flags(&other_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let value: Vec<u8> = conn
        .query_row("SELECT value FROM spin_key_value WHERE key = 'shared-key'", [], |row| row.get(0))
        .expect("the `other` label's value is in its own SQLite file");
    assert_eq!(value, b"in-other");
}

fn concurrent_posts(host: &DevHost, path: &str, n: usize) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n));
    let url = host.url(path);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let url = url.clone();
            thread::spawn(move || {
                let agent = client();
                barrier.wait();
                let mut resp = agent.post(&url).send(&b""[..]).map_err(|e| format!("POST {url}: {e}"))?;
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
                Ok::<_, String>(Resp { status, headers: vec![], body: body.into_bytes(), elapsed: Duration::ZERO })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("request thread panicked")
                .unwrap_or_else(|e| panic!("{e}\n--- stderr ---\n{}", host.stderr()))
        })
        .collect()
}

/// Every response is 200 and the returned counters are exactly 1..=n (no lost update).
fn assert_counter_sequence(responses: &[Resp], n: u64, what: &str) {
    let mut values = BTreeSet::new();
    for r in responses {
        assert_eq!(r.status, 200, "{what}: a request failed: {} {:?}", r.status, r.text());
        let v: u64 = r.text().trim().parse().unwrap_or_else(|_| panic!("{what}: not a number: {:?}", r.text()));
        values.insert(v);
    }
    let expected: BTreeSet<u64> = (1..=n).collect();
    assert_eq!(values, expected, "{what}: each increment must see a distinct value");
}

#[test]
fn cas_50_concurrent_increments_on_sqlite() {
    // Spin's SQLite swap is exact on a key that exists (`UPDATE ... WHERE value = old`);
    // on an absent key it is an upsert (see `sqlite_swap_matches_spin`), so start from "0".
    let host = app();
    expect_status(&host.put("/kv/counter", b"0"), 200, "PUT counter");
    let responses = concurrent_posts(&host, "/cas/counter", 50);
    assert_counter_sequence(&responses, 50, "CAS on SQLite");
    let final_value = host.get("/kv/counter");
    expect_status(&final_value, 200, "GET counter");
    assert_eq!(final_value.text(), "50");
}

#[test]
fn cas_retry_with_handle_returned_by_cas_failed() {
    // `cas-failed` hands back a ticket whose `current` is the latest value, as Spin's does.
    let host = app();
    expect_status(&host.put("/kv/counter2", b"0"), 200, "PUT counter2");
    let responses = concurrent_posts(&host, "/cas/counter2?mode=handle", 20);
    assert_counter_sequence(&responses, 20, "CAS retrying with the returned handle");
    assert_eq!(host.get("/kv/counter2").text(), "20");
}

/// `POST /cas-probe/{key}` as JSON: what `current` saw, what `swap` reported, the value after.
fn cas_probe(host: &DevHost, key: &str, new: &str, interfere: Option<&str>) -> (Json, String, Json) {
    let query = interfere.map(|v| format!("?interfere={v}")).unwrap_or_default();
    let resp = host.post(&format!("/cas-probe/{key}{query}"), new.as_bytes());
    expect_status(&resp, 200, "cas-probe");
    let body: Json = serde_json::from_slice(&resp.body).expect("cas-probe JSON");
    (body["saw"].clone(), body["swap"].as_str().unwrap_or_default().to_owned(), body["after"].clone())
}

#[test]
fn sqlite_swap_matches_spin() {
    // Spin 4.0.2, crates/key-value-spin/src/store.rs: swap is `UPDATE ... WHERE value = old`
    // when `current` found the key, an unconditional upsert when it found none.
    let host = app();
    let (saw, swap, after) = cas_probe(&host, "fresh", "mine", Some("theirs"));
    assert_eq!((saw, swap.as_str(), after), (Json::Null, "ok", Json::from("mine")), "absent: upsert over theirs");
    expect_status(&host.put("/kv/held", b"a"), 200, "PUT held");
    let (_, swap, after) = cas_probe(&host, "held", "mine", Some("b"));
    assert_eq!((swap.as_str(), after), ("cas-failed", Json::from("b")), "existing: exact");
    let (saw, swap, after) = cas_probe(&host, "held", "c", None);
    assert_eq!((saw, swap.as_str(), after), (Json::from("b"), "ok", Json::from("c")));
}

#[test]
fn sqlite_counters_use_spins_encoding_and_text_breaks_the_store() {
    let host = app();
    assert_eq!(host.post("/incr/n?delta=3000", b"").text(), "3000");
    assert_eq!(host.get("/kv/n").body, 3000i64.to_le_bytes(), "8 little-endian bytes, as Spin writes");
    // Spin panics on a counter that is not 8 bytes, holding the store's lock: that request
    // fails, and so does every later key-value call until the host restarts.
    expect_status(&host.put("/kv/text", b"3000"), 200, "PUT text");
    assert_eq!(host.post("/incr/text?delta=1", b"").status, 500, "increment of decimal text");
    assert_eq!(host.get("/kv/n").status, 500, "the store stays broken");
}

#[test]
fn redis_swap_matches_spin() {
    // Spin 4.0.2, crates/key-value-redis/src/store.rs: WATCH/GET, then MULTI/SET/EXEC and
    // `UNWATCH key`, which Redis rejects, so every swap reports `cas-failed`.
    let Some(redis) = RedisServer::start_or_skip("redis_swap_matches_spin") else {
        return;
    };
    let host = redis_app(&redis, "rtc-redis-swap");
    let (saw, swap, after) = cas_probe(&host, "fresh", "mine", None);
    assert_eq!((saw, swap.as_str(), after), (Json::Null, "cas-failed", Json::from("mine")), "written, reported failed");
    let (_, swap, after) = cas_probe(&host, "fresh", "again", Some("theirs"));
    assert_eq!((swap.as_str(), after), ("cas-failed", Json::from("theirs")), "changed since WATCH: not written");
}

fn redis_app(redis: &RedisServer, name: &str) -> DevHost {
    let tmp = tempdir(name);
    let rtc = tmp.path().join("runtime-config.toml");
    write_file(&rtc, &format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url()));
    let host = app_builder().runtime_config(&rtc).start().unwrap_or_else(|f| panic!("{f}"));
    drop(tmp);
    host
}

#[test]
fn increment_and_batch_on_redis() {
    let Some(redis) = RedisServer::start_or_skip("increment_and_batch_on_redis") else {
        return;
    };
    let host = redis_app(&redis, "rtc-redis");

    let responses = concurrent_posts(&host, "/incr/hits?delta=1", 20);
    assert_counter_sequence(&responses, 20, "increment on Redis");
    assert_eq!(host.get("/kv/hits").text(), "20", "INCRBY keeps decimal text");

    expect_status(&host.post("/batch", b"r1=one\nr2=two"), 200, "set-many on Redis");
    assert_eq!(host.get("/kv/r2").text(), "two");
    assert_eq!(redis.command(&["EXISTS", "r1"]), RespValue::Int(1), "set-many writes to Redis");

    // The values really are in Redis, not in SQLite.
    expect_status(&host.put("/kv/plain", b"redis-value"), 200, "PUT");
    let reply = redis.command(&["EXISTS", "plain"]);
    assert_eq!(reply, RespValue::Int(1), "key `plain` should exist in Redis");
    assert!(
        !host.state_dir().unwrap().join("sqlite_key_value.db").exists()
            || sqlite_lacks_key(&host.state_dir().unwrap().join("sqlite_key_value.db"), "plain"),
        "with a redis default store, the value must not go to SQLite"
    );
}

fn sqlite_lacks_key(db: &Path, key: &str) -> bool {
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return true;
    };
    conn.query_row("SELECT COUNT(*) FROM spin_key_value WHERE key = ?1", [key], |row| row.get::<_, i64>(0))
        .map(|n| n == 0)
        .unwrap_or(true)
}

#[test]
fn atomic_increment() {
    let host = app();
    let r = host.post("/incr/n?delta=5", b"");
    expect_status(&r, 200, "increment by 5");
    assert_eq!(r.text(), "5");
    assert_eq!(host.post("/incr/n?delta=-2", b"").text(), "3");
    assert_eq!(host.post("/incr/other?delta=1", b"").text(), "1");
    assert_eq!(host.post("/incr/n?delta=10", b"").text(), "13");

    let responses = concurrent_posts(&host, "/incr/parallel?delta=1", 30);
    assert_counter_sequence(&responses, 30, "concurrent increments on SQLite");
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

fn var(host: &DevHost, name: &str) -> String {
    let r = host.get(&format!("/var/{name}"));
    expect_status(&r, 200, &format!("variable {name}"));
    r.text()
}

#[test]
fn variables_defaults_templates_and_required() {
    let host = app();
    assert_eq!(var(&host, "greeting"), "hello");
    assert_eq!(var(&host, "color"), "blue");
    assert_eq!(var(&host, "api_key"), API_KEY);
    assert_eq!(var(&host, "message"), "hello, world!");
    assert_eq!(var(&host, "literal"), "plain-literal");
}

#[test]
fn variables_env_override() {
    let host = DevHost::builder(fixture_manifest("spin.toml"))
        .env("SPIN_VARIABLE_COLOR", "red")
        .env("SPIN_VARIABLE_API_KEY", "key-from-env")
        .start()
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(var(&host, "color"), "red");
    assert_eq!(var(&host, "api_key"), "key-from-env");
    assert_eq!(var(&host, "greeting"), "hello");
}

#[test]
fn variables_cli_override_and_template() {
    let host = app_builder().variable("greeting", "hi").start().unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(var(&host, "greeting"), "hi");
    assert_eq!(var(&host, "message"), "hi, world!");
}

#[test]
fn variables_from_dotenv_in_working_directory() {
    let cwd = tempdir("dotenv");
    write_file(&cwd.path().join(".env"), "SPIN_VARIABLE_COLOR=green\nSPIN_VARIABLE_API_KEY=key-from-dotenv\n");
    let host =
        DevHost::builder(fixture_manifest("spin.toml")).cwd(cwd.path()).start().unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(var(&host, "color"), "green");
    assert_eq!(var(&host, "api_key"), "key-from-dotenv");
}

#[test]
fn variables_not_mapped_to_component_are_undefined() {
    let host = app();
    let r = host.get("/var/not_declared");
    expect_status(&r, 404, "unmapped variable");
    assert!(r.text().contains("Undefined"), "body: {}", r.text());
    // fixture-nonet maps no variables, although `greeting` exists at app level.
    let r = host.get("/nonet/var/greeting");
    expect_status(&r, 404, "variable not mapped for this component");
    assert!(r.text().contains("Undefined"), "body: {}", r.text());
}

#[test]
fn missing_required_variable_fails_startup() {
    let failure = DevHost::builder(fixture_manifest("spin.toml"))
        .start()
        .err()
        .expect("startup without the required `api_key` must fail");
    assert!(failure.status.is_some_and(|s| !s.success()), "expected a non-zero exit before serving: {failure}");
    assert!(failure.stderr.contains("api_key"), "stderr must name the missing variable `api_key`: {failure}");
    assert!(!failure.stdout.contains("Serving"), "must not serve: {failure}");
}

#[test]
fn unsupported_import_fails_startup() {
    let failure = DevHost::builder(fixture_manifest("unsupported.toml"))
        .start()
        .err()
        .expect("a component importing fermyon:spin/llm must fail startup");
    assert!(failure.status.is_some_and(|s| !s.success()), "expected a non-zero exit: {failure}");
    assert!(
        failure.stderr.contains("fermyon:spin/llm"),
        "stderr must name the unsupported interface fermyon:spin/llm: {failure}"
    );
}

// ---------------------------------------------------------------------------------------------
// Outbound HTTP and service chaining
// ---------------------------------------------------------------------------------------------

#[test]
fn outbound_get_to_allowed_origin() {
    let origin = TestOrigin::start(vec![
        ("/data", Route::ok("origin-body")),
        ("/gone", Route::Fixed { status: 410, body: Arc::new(b"gone".to_vec()) }),
    ]);
    let host = app();
    let r = host.get(&format!("/fetch?url={}", encode(&origin.url("/data?q=1"))));
    expect_status(&r, 200, "fetch allowed origin");
    assert_eq!(r.header("x-upstream-status"), Some("200"));
    assert_eq!(r.text(), "origin-body");
    assert_eq!(origin.total_hits(), 1);
    let seen = &origin.requests()[0];
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/data?q=1"), "origin saw {seen:?}");

    let r = host.get(&format!("/fetch?url={}", encode(&origin.url("/gone"))));
    expect_status(&r, 200, "fetch 410 from origin");
    assert_eq!(r.header("x-upstream-status"), Some("410"));
    assert_eq!(r.text(), "gone");
}

#[test]
fn outbound_to_host_not_in_allowed_outbound_hosts_is_denied() {
    let origin = TestOrigin::start(vec![("/data", Route::ok("origin-body"))]);
    let host = app();
    // `localhost` is not `127.0.0.1` as far as allowed_outbound_hosts is concerned.
    let r = host.get(&format!("/fetch?url={}", encode(&format!("http://localhost:{}/data", origin.port()))));
    expect_status(&r, 502, "fetch localhost (not allowed)");
    assert!(r.text().contains("HttpRequestDenied"), "body: {}", r.text());
    // Wrong scheme for an allowed host.
    let r = host.get(&format!("/fetch?url={}", encode(&format!("https://127.0.0.1:{}/data", origin.port()))));
    expect_status(&r, 502, "fetch https://127.0.0.1 (scheme not allowed)");
    assert!(r.text().contains("HttpRequestDenied"), "body: {}", r.text());
    assert_eq!(origin.total_hits(), 0, "a denied request must not reach the origin");
}

#[test]
fn outbound_denied_for_component_without_permission() {
    let origin = TestOrigin::start(vec![("/data", Route::ok("origin-body"))]);
    let host = app();
    let r = host.get(&format!("/nonet/fetch?url={}", encode(&origin.url("/data"))));
    expect_status(&r, 502, "fetch from component without allowed_outbound_hosts");
    assert!(r.text().contains("HttpRequestDenied"), "body: {}", r.text());
    let r = host.get("/nonet/chain");
    expect_status(&r, 502, "chain from component without permission");
    assert!(r.text().contains("HttpRequestDenied"), "body: {}", r.text());
    assert_eq!(origin.total_hits(), 0);
}

#[test]
fn block_networks_private_blocks_loopback() {
    let origin = TestOrigin::start(vec![("/data", Route::ok("origin-body"))]);
    let tmp = tempdir("rtc-block");
    let rtc = tmp.path().join("runtime-config.toml");
    write_file(&rtc, "[outbound_networking]\nblock_networks = [\"private\"]\n");
    let host = app_builder().runtime_config(&rtc).start().unwrap_or_else(|f| panic!("{f}"));
    let r = host.get(&format!("/fetch?url={}", encode(&origin.url("/data"))));
    expect_status(&r, 502, "fetch 127.0.0.1 with block_networks = [\"private\"]");
    assert_eq!(origin.total_hits(), 0, "a blocked request must not reach the origin");
    // Service chaining is in-process and is not affected by block_networks.
    expect_status(&host.get("/chain"), 200, "chain with block_networks");
}

#[test]
fn chaining_reaches_private_component() {
    let host = app();
    let r = host.get("/chain");
    expect_status(&r, 200, "GET /chain");
    assert_eq!(r.header("x-upstream-status"), Some("200"));
    let echo = r.json();
    assert_eq!(echo["who"], "fixture-private", "echo: {echo}");
    assert_eq!(echo["method"], "GET");
    let uri = echo["uri"].as_str().unwrap();
    assert!(uri.ends_with("/hello?x=1"), "private component saw uri {uri:?}");
    assert_eq!(echoed_header(&echo, "spin-path-info"), "/hello");
    assert_eq!(echoed_header(&echo, "spin-client-addr"), "0.0.0.0:0");
}

#[test]
fn private_component_is_not_reachable_from_outside() {
    let host = app();
    let port = host.addr().port();
    for path in ["/hello?x=1", "/"] {
        let r = host
            .raw(&format!("GET {path} HTTP/1.1\r\nHost: fixture-private.spin.internal\r\nConnection: close\r\n\r\n"));
        expect_status(&r, 404, &format!("GET {path} with forged Host"));
        assert!(!r.text().contains("fixture-private"), "body: {}", r.text());
        let r = host.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: fixture-private.spin.internal:{port}\r\nConnection: close\r\n\r\n"
        ));
        expect_status(&r, 404, &format!("GET {path} with forged Host:port"));
    }
    // Absolute-form request target naming the chaining host.
    let r = host.raw(
        "GET http://fixture-private.spin.internal/hello HTTP/1.1\r\nHost: fixture-private.spin.internal\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !r.text().contains("fixture-private"),
        "absolute-form request reached the private component: {} {}",
        r.status,
        r.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Routing and request headers
// ---------------------------------------------------------------------------------------------

fn echo_who(host: &DevHost, path: &str) -> (String, Json) {
    let r = host.get(path);
    expect_status(&r, 200, &format!("GET {path}"));
    let echo = r.json();
    (echo["who"].as_str().unwrap_or_default().to_string(), echo)
}

#[test]
fn routing_exact_route_beats_wildcard() {
    let host = app();
    assert_eq!(echo_who(&host, "/echo/exact").0, "echo-exact");
    assert_eq!(echo_who(&host, "/echo/exact?q=1").0, "echo-exact");
    assert_eq!(echo_who(&host, "/echo/exactly").0, "echo-wild");
    assert_eq!(echo_who(&host, "/echo/exact/more").0, "echo-wild");
    assert_eq!(echo_who(&host, "/echo/other").0, "echo-wild");
}

#[test]
fn routing_longest_wildcard_prefix_wins() {
    let host = app();
    let (who, echo) = echo_who(&host, "/echo/deep/x/y");
    assert_eq!(who, "echo-deep");
    assert_eq!(echoed_header(&echo, "spin-path-info"), "/x/y");
    assert_eq!(echoed_header(&echo, "spin-matched-route"), "/echo/deep/...");
    let (who, echo) = echo_who(&host, "/echo/deep");
    assert_eq!(who, "echo-deep");
    assert_eq!(echoed_header(&echo, "spin-path-info"), "");
    // A prefix match is per segment, not per character.
    assert_eq!(echo_who(&host, "/echo/deeper").0, "echo-wild");
}

#[test]
fn routing_param_segment_sets_path_match_header() {
    let host = app();
    let (who, echo) = echo_who(&host, "/users/42/profile");
    assert_eq!(who, "echo-param");
    assert_eq!(echoed_header(&echo, "spin-path-match-id"), "42");
    assert_eq!(echoed_header(&echo, "spin-matched-route"), "/users/:id/profile");
    assert_eq!(echoed_header(&echo, "spin-path-info"), "");
    expect_status(&host.get("/users/42/other"), 404, "param route, wrong tail");
    expect_status(&host.get("/users/42/profile/extra"), 404, "exact param route, extra segment");
}

#[test]
fn routing_duplicate_route_later_trigger_wins() {
    let host = app();
    assert_eq!(echo_who(&host, "/dup").0, "echo-dup-second");
}

#[test]
fn unknown_route_is_404() {
    let host = app();
    expect_status(&host.get("/no-such-route"), 404, "unknown route");
    expect_status(&host.get("/"), 404, "root without a route");
    expect_status(&host.get("/ech"), 404, "prefix of a route");
}

#[test]
fn health_endpoint() {
    let host = app();
    expect_status(&host.get("/.well-known/spin/health"), 200, "health");
}

#[test]
fn spin_headers_set_by_host() {
    let host = app();
    let (who, echo) = echo_who(&host, "/echo/hello/there?a=1&b=two");
    assert_eq!(who, "echo-wild");
    let port = host.addr().port();
    assert_eq!(echoed_header(&echo, "spin-full-url"), format!("http://127.0.0.1:{port}/echo/hello/there?a=1&b=two"));
    assert_eq!(echoed_header(&echo, "spin-path-info"), "/hello/there");
    assert_eq!(echoed_header(&echo, "spin-matched-route"), "/echo/...");
    assert_eq!(echoed_header(&echo, "spin-component-route"), "/echo");
    assert_eq!(echoed_header(&echo, "spin-raw-component-route"), "/echo/...");
    assert_eq!(echoed_header(&echo, "spin-base-path"), "/");
    let client_addr = echoed_header(&echo, "spin-client-addr");
    assert!(
        client_addr.starts_with("127.0.0.1:") && client_addr[10..].parse::<u16>().is_ok(),
        "spin-client-addr = {client_addr:?}"
    );
    let uri = echo["uri"].as_str().unwrap();
    assert!(uri.ends_with("/echo/hello/there?a=1&b=two"), "uri {uri:?}");

    // path-info edge cases for a wildcard route.
    assert_eq!(echoed_header(&echo_who(&host, "/echo").1, "spin-path-info"), "");
    assert_eq!(echoed_header(&echo_who(&host, "/echo/").1, "spin-path-info"), "/");

    // An exact route: empty path info, component route = the route.
    let r = host.get("/echo-headers");
    expect_status(&r, 200, "GET /echo-headers");
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "spin-path-info"), "");
    assert_eq!(echoed_header(&echo, "spin-matched-route"), "/echo-headers");
    assert_eq!(echoed_header(&echo, "spin-component-route"), "/echo-headers");
    assert_eq!(echoed_header(&echo, "spin-raw-component-route"), "/echo-headers");
}

#[test]
fn client_sent_spin_headers_are_replaced() {
    let host = app();
    let r = host.request(
        "GET",
        "/echo-headers",
        &[
            ("spin-path-info", "/evil"),
            ("spin-client-addr", "6.6.6.6:666"),
            ("spin-full-url", "http://evil.example/"),
            ("spin-path-match-id", "evil"),
            ("x-ordinary", "kept"),
        ],
        b"",
    );
    expect_status(&r, 200, "GET /echo-headers with forged spin-* headers");
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "spin-path-info"), "");
    let client_addr = echoed_header(&echo, "spin-client-addr");
    assert!(client_addr.starts_with("127.0.0.1:"), "spin-client-addr = {client_addr:?}");
    let full_url = echoed_header(&echo, "spin-full-url");
    assert!(full_url.ends_with("/echo-headers"), "spin-full-url = {full_url:?}");
    assert!(
        echoed_header_values(&echo, "spin-path-match-id").is_empty(),
        "client-sent spin-path-match-id must be stripped: {echo}"
    );
    assert_eq!(echoed_header(&echo, "x-ordinary"), "kept");
}

// ---------------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------------

#[test]
fn handler_keeps_running_after_response() {
    let host = app();
    let start = Instant::now();
    let r = host.get("/later/bg-key");
    let elapsed = start.elapsed();
    expect_status(&r, 202, "GET /later");
    assert_eq!(r.text(), "accepted");
    assert!(
        elapsed < Duration::from_millis(800),
        "the 202 must arrive before the handler's 1 s of after-work (took {elapsed:?})"
    );
    // The work has not happened yet...
    expect_status(&host.get("/kv/bg-key"), 404, "KV before the after-work");
    // ...but does within a few seconds.
    let done = poll_until(Duration::from_secs(5), || {
        let r = host.get("/kv/bg-key");
        (r.status == 200).then(|| r.text())
    });
    assert_eq!(
        done.as_deref(),
        Some("done"),
        "the handler's work after the response did not land within 5 s\n--- stderr ---\n{}",
        host.stderr()
    );
}

#[test]
fn trap_returns_500_and_host_keeps_serving() {
    let mut host = app();
    let r = host.get("/trap");
    expect_status(&r, 500, "GET /trap");
    assert!(host.is_running(), "dev host died after a guest trap");
    expect_status(&host.get("/kv-keys"), 200, "request after a trap");
    expect_status(&host.get("/trap"), 500, "second trap");
    expect_status(&host.get("/.well-known/spin/health"), 200, "health after traps");
}

#[test]
fn component_output_goes_to_state_dir_logs() {
    let host = app();
    expect_status(&host.get("/log?msg=marker-7d1f"), 200, "GET /log");
    let logs = host.state_dir().unwrap().join("logs");
    let stdout_file = logs.join("fixture-app_stdout.txt");
    let stderr_file = logs.join("fixture-app_stderr.txt");
    let found = poll_until(Duration::from_secs(5), || {
        let out = std::fs::read_to_string(&stdout_file).ok()?;
        let err = std::fs::read_to_string(&stderr_file).ok()?;
        (out.contains("stdout: marker-7d1f") && err.contains("stderr: marker-7d1f")).then_some(())
    });
    assert!(
        found.is_some(),
        "component output not found in {} / {} (logs dir: {:?})",
        stdout_file.display(),
        stderr_file.display(),
        std::fs::read_dir(&logs).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

#[test]
fn each_request_is_logged_to_stderr() {
    let host = app();
    expect_status(&host.get("/kv-keys"), 200, "GET /kv-keys");
    expect_status(&host.get("/no-such-route-b9"), 404, "GET unknown");
    let logged = poll_until(Duration::from_secs(5), || {
        let err = host.stderr();
        (err.contains("/kv-keys") && err.contains("/no-such-route-b9")).then_some(())
    });
    assert!(logged.is_some(), "expected a stderr line per request naming its path; stderr:\n{}", host.stderr());
}

// ---------------------------------------------------------------------------------------------
// Manifest handling: --build, default state dir
// ---------------------------------------------------------------------------------------------

fn temp_app_manifest(dir: &Path, build_command: Option<&str>) -> std::path::PathBuf {
    let echo = fixture_wasm("fixture_echo");
    let mut manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"temp-app\"\n\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"echo\"\n\n\
         [component.echo]\nsource = {}\n",
        toml_str(&echo)
    );
    if let Some(cmd) = build_command {
        manifest.push_str(&format!("[component.echo.build]\ncommand = \"{cmd}\"\n"));
    }
    let path = dir.join("spin.toml");
    write_file(&path, &manifest);
    path
}

#[test]
fn build_flag_runs_component_build_commands() {
    let dir = tempdir("build");
    let manifest = temp_app_manifest(dir.path(), Some("echo built > built-marker.txt"));
    let host = DevHost::builder(&manifest).arg("--build").start().unwrap_or_else(|f| panic!("{f}"));
    let marker = dir.path().join("built-marker.txt");
    assert!(marker.is_file(), "--build did not run the build command in the manifest's directory");
    expect_status(&host.get("/anything"), 200, "serve after build");
}

#[test]
fn failing_build_command_fails_startup() {
    let dir = tempdir("build-fail");
    let manifest = temp_app_manifest(dir.path(), Some("exit 3"));
    let failure = DevHost::builder(&manifest)
        .arg("--build")
        .start()
        .err()
        .expect("a failing build command must stop `devhost up --build`");
    assert!(failure.status.is_some_and(|s| !s.success()), "{failure}");
}

#[test]
fn default_state_dir_is_dot_spin_beside_manifest() {
    let dir = tempdir("default-state");
    let manifest = temp_app_manifest(dir.path(), None);
    // Add a KV-using component so the default store gets created.
    let app_wasm = fixture_wasm("fixture_app");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text = text.replace("route = \"/...\"", "route = \"/echo/...\"");
    text.push_str(&format!(
        "\n[[trigger.http]]\nroute = \"/kv/...\"\ncomponent = \"kv\"\n\n\
         [component.kv]\nsource = {}\nkey_value_stores = [\"default\"]\n",
        toml_str(&app_wasm)
    ));
    write_file(&manifest, &text);
    let host = DevHost::builder(&manifest).without_state_dir().start().unwrap_or_else(|f| panic!("{f}"));
    expect_status(&host.put("/kv/k", b"v"), 200, "PUT");
    assert!(
        dir.path().join(".spin").join("sqlite_key_value.db").is_file(),
        "default store should be at <manifest dir>/.spin/sqlite_key_value.db"
    );
}

// ---------------------------------------------------------------------------------------------
// Bodies and manifest validation
// ---------------------------------------------------------------------------------------------

#[test]
fn large_bodies_round_trip() {
    // 1 MiB KV value (the hosted per-value limit) in and out.
    let host = app();
    let value: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    expect_status(&host.put("/kv/big", &value), 200, "PUT 1 MiB");
    let got = host.get("/kv/big");
    expect_status(&got, 200, "GET 1 MiB");
    assert!(got.body == value, "1 MiB value came back different ({} bytes)", got.body.len());

    // 3 MB through outbound HTTP.
    let big: Vec<u8> = (0..3 * 1000 * 1000).map(|i| (i % 253) as u8).collect();
    let origin = TestOrigin::start(vec![("/big", Route::ok(big.clone()))]);
    let r = host.get(&format!("/fetch?url={}", encode(&origin.url("/big"))));
    expect_status(&r, 200, "fetch 3 MB");
    assert_eq!(r.header("x-upstream-status"), Some("200"));
    assert!(r.body == big, "3 MB body came back different ({} bytes)", r.body.len());
}

#[test]
fn invalid_manifests_fail_startup() {
    let echo = fixture_wasm("fixture_echo");
    let component = format!("[component.echo]\nsource = {}\n", toml_str(&echo));
    let trigger = "[[trigger.http]]\nroute = \"/...\"\ncomponent = \"echo\"\n";
    let head = "spin_manifest_version = 2\n[application]\nname = \"bad\"\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "route = { private = false }",
            format!("{head}[[trigger.http]]\nroute = {{ private = false }}\ncomponent = \"echo\"\n{component}"),
        ),
        (
            "variable with neither default nor required",
            format!("{head}[variables]\nloose = {{ secret = false }}\n{trigger}{component}"),
        ),
        (
            "variable name not lower_snake_case",
            format!("{head}[variables]\nBadName = {{ default = \"x\" }}\n{trigger}{component}"),
        ),
        (
            "trigger naming an undefined component",
            format!("{head}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"missing\"\n{component}"),
        ),
        (
            "component variable referencing an undefined app variable",
            format!("{head}{trigger}{component}[component.echo.variables]\nwho = \"{{{{ nope }}}}\"\n"),
        ),
    ];
    for (what, manifest) in cases {
        let dir = tempdir("bad-manifest");
        let path = dir.path().join("spin.toml");
        write_file(&path, &manifest);
        match DevHost::builder(&path).start() {
            Ok(host) => {
                panic!("{what}: the dev host started serving at {} but should refuse:\n{manifest}", host.base_url())
            }
            Err(failure) => {
                assert!(failure.status.is_some_and(|s| !s.success()), "{what}: expected a non-zero exit: {failure}")
            }
        }
    }
}

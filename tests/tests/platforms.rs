//! The dev host's platform profiles (`devhost up --platform spin|wasm-functions|fermyon-cloud`):
//! each limit a hosted target documents is enforced, so that the app fails here the way it
//! would fail there. The fixture (`tests/fixtures/hosted`) imports only `wasi:keyvalue/store`.
//!
//! Prerequisites: `cargo build -p devhost` and
//! `cargo build --target wasm32-wasip2 --release -p fixture-app -p fixture-hosted`.

use std::time::{Duration, Instant};

use downlink_e2e::*;

const TEN_MIB: usize = 10 << 20;

fn hosted(platform: &str) -> DevHostBuilder {
    DevHost::builder(fixture_manifest("hosted.toml")).arg("--platform").arg(platform)
}

fn start(builder: DevHostBuilder) -> DevHost {
    builder.start().unwrap_or_else(|f| panic!("{f}"))
}

fn expect_status(resp: &Resp, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: got {} with body {:?}", resp.status, resp.text());
}

#[test]
fn a_component_importing_what_the_target_lacks_is_refused_at_startup_naming_it() {
    // fixture-app uses wasi:keyvalue atomics and batch.
    for (platform, import) in [("wasm-functions", "wasi:keyvalue/atomics"), ("fermyon-cloud", "wasi:keyvalue/")] {
        let failure = DevHost::builder(fixture_manifest("spin.toml"))
            .variable("api_key", "k")
            .arg("--platform")
            .arg(platform)
            .start()
            .err()
            .unwrap_or_else(|| panic!("fixture-app must not load under {platform}"));
        assert!(failure.stderr.contains(import), "{platform}: stderr must name {import}: {failure}");
        assert!(failure.stderr.contains("would not load there"), "{failure}");
    }
    // The same manifest loads under the self-hosted profile, and the store-only fixture
    // everywhere.
    drop(start(DevHost::builder(fixture_manifest("spin.toml")).variable("api_key", "k").arg("--platform").arg("spin")));
    for platform in ["spin", "wasm-functions", "fermyon-cloud"] {
        let host = start(hosted(platform));
        expect_status(&host.get("/sleep?ms=1"), 200, platform);
    }
}

#[test]
fn runtime_config_and_service_chaining_are_refused_where_the_target_has_none() {
    let dir = tempdir("platform-rtc");
    let rtc = dir.path().join("runtime-config.toml");
    std::fs::write(&rtc, "[key_value_store.default]\ntype = \"spin\"\n").unwrap();
    for platform in ["wasm-functions", "fermyon-cloud"] {
        let failure = hosted(platform).runtime_config(&rtc).start().err().expect("no runtime config there");
        assert!(failure.stderr.contains("runtime config"), "{platform}: {failure}");
    }
    drop(start(hosted("spin").runtime_config(&rtc)));

    let manifest = dir.path().join("chained.toml");
    let source = fixture_wasm("fixture_hosted");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"chained\"\n[[trigger.http]]\nroute = \"/...\"\n\
             component = \"front\"\n[component.front]\nsource = \"{}\"\nallowed_outbound_hosts = \
             [\"http://back.spin.internal\"]\n[[trigger.http]]\nroute = {{ private = true }}\ncomponent = \"back\"\n\
             [component.back]\nsource = \"{}\"\n",
            source.display(),
            source.display()
        ),
    )
    .unwrap();
    let failure =
        DevHost::builder(&manifest).arg("--platform").arg("fermyon-cloud").start().err().expect("no chaining");
    assert!(
        failure.stderr.contains("back.spin.internal") && failure.stderr.contains("no service chaining"),
        "{failure}"
    );
    drop(start(DevHost::builder(&manifest).arg("--platform").arg("wasm-functions")));
}

#[test]
fn the_handler_limit_stops_the_instance_before_and_after_its_response() {
    let host = start(hosted("wasm-functions").arg("--handler-limit-secs").arg("1"));
    // Within the limit, before and after the response.
    expect_status(&host.get("/sleep?ms=100"), 200, "a short handler");
    expect_status(&host.get("/later/quick?ms=100"), 202, "later, short");
    // Past it: no answer but the host's error, and work after the response never happens.
    let started = Instant::now();
    let slow = host.get("/sleep?ms=5000");
    assert_eq!(slow.status, 500, "a handler past the limit: {:?}", slow.text());
    assert!(started.elapsed() < Duration::from_secs(4), "stopped at the limit, took {:?}", started.elapsed());
    let busy = host.get("/busy?ms=5000");
    assert_eq!(busy.status, 500, "a loop without host calls is stopped too: {:?}", busy.text());
    expect_status(&host.get("/later/slow?ms=3000"), 202, "later, past the limit");
    std::thread::sleep(Duration::from_millis(3500));
    expect_status(&host.get("/kv/quick"), 200, "work after the response within the limit happened");
    expect_status(&host.get("/kv/slow"), 404, "work after the response past the limit was stopped");
    assert!(host.stderr().contains("limit"), "the stop is logged: {}", host.stderr());

    // Self-hosted Spin has no limit.
    let spin = start(hosted("spin"));
    expect_status(&spin.get("/sleep?ms=1500"), 200, "no limit under spin");
}

#[test]
fn request_and_response_bodies_are_capped_at_ten_mib() {
    let host = start(hosted("wasm-functions"));
    let exactly = vec![b'x'; TEN_MIB];
    let resp = host.put("/upload", &exactly);
    expect_status(&resp, 200, "a 10 MiB upload");
    assert_eq!(resp.text(), TEN_MIB.to_string());
    // A declared length over the cap is refused before any byte of the body is read.
    let declared = |host: &DevHost, len: usize| {
        let head = format!("PUT /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n");
        raw_request(host.addr(), head.as_bytes()).unwrap_or_else(|e| panic!("PUT of {len} bytes: {e}"))
    };
    expect_status(&declared(&host, TEN_MIB + 1), 413, "a declared length over the cap");

    // Chunked, so no length is declared: the body breaks off at the cap.
    let mut chunked =
        String::from("PUT /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
    let piece = "x".repeat(1 << 20);
    for _ in 0..11 {
        chunked.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
    }
    chunked.push_str("0\r\n\r\n");
    // An error means the host closed the connection mid-upload: refused too.
    if let Ok(resp) = raw_request(host.addr(), chunked.as_bytes()) {
        assert_ne!(resp.status, 200, "an 11 MiB chunked upload must not succeed: {:?}", resp.text());
    }

    let resp = host.get(&format!("/bytes?n={TEN_MIB}"));
    expect_status(&resp, 200, "a 10 MiB response");
    assert_eq!(resp.body.len(), TEN_MIB);
    let over = http_request(&client(), "GET", &host.url(&format!("/bytes?n={}", TEN_MIB + 1)), &[], b"");
    // An error means the body was cut mid-way and the client saw it.
    if let Ok(resp) = over {
        assert!(resp.body.len() <= TEN_MIB, "a response over the cap is cut: got {} bytes", resp.body.len());
    }
    // The host logs the cut after the client saw the body end.
    let logged = poll_until(Duration::from_secs(5), || host.stderr().contains("cap").then_some(()));
    assert!(logged.is_some(), "the cut is logged: {}", host.stderr());

    // Fermyon Cloud's cap is 10 MB, decimal.
    let cloud = start(hosted("fermyon-cloud"));
    expect_status(&declared(&cloud, 10_000_001), 413, "over 10 MB on Cloud");
    // Self-hosted: none.
    let spin = start(hosted("spin"));
    expect_status(&spin.put("/upload", &vec![b'x'; TEN_MIB + 1]), 200, "no cap under spin");
}

#[test]
fn key_value_keys_values_and_the_key_budget_are_limited_on_cloud() {
    let host = start(hosted("fermyon-cloud"));
    expect_status(&host.put(&format!("/kv/{}", "k".repeat(255)), b"v"), 200, "a 255-byte key");
    let long = host.put(&format!("/kv/{}", "k".repeat(256)), b"v");
    expect_status(&long, 500, "a 256-byte key");
    assert!(long.text().contains("255-byte limit"), "{}", long.text());
    expect_status(&host.put("/kv/big", &vec![b'v'; 1_000_000]), 200, "a 1 MB value");
    let big = host.put("/kv/bigger", &vec![b'v'; 1_000_001]);
    expect_status(&big, 500, "a value over 1 MB");
    assert!(big.text().contains("1000000-byte limit"), "{}", big.text());

    // 1,024 keys: two are used above.
    for i in 0..1022 {
        expect_status(&host.put(&format!("/kv/n{i}"), b"1"), 200, "a key within the budget");
    }
    let over = host.put("/kv/one-too-many", b"1");
    expect_status(&over, 500, "the 1,025th key");
    assert!(over.text().contains("allows 1024"), "{}", over.text());
    expect_status(&host.put("/kv/n7", b"2"), 200, "overwriting an existing key at the budget");

    // Wasm Functions: values capped the same way.
    let functions = start(hosted("wasm-functions"));
    expect_status(&functions.put("/kv/bigger", &vec![b'v'; 1_000_001]), 500, "over 1 MB on Wasm Functions");
}

#[test]
fn memory_is_capped_at_128_mib_on_the_hosted_targets() {
    let host = start(hosted("wasm-functions"));
    expect_status(&host.get("/alloc?mib=64"), 200, "64 MiB");
    expect_status(&host.get("/alloc?mib=160"), 500, "160 MiB");
    let spin = start(hosted("spin"));
    expect_status(&spin.get("/alloc?mib=160"), 200, "160 MiB under spin");
}

#[test]
fn the_app_runs_on_the_cloud_profile_without_service_chaining() {
    // spin.fermyon-cloud.toml: the hosted build, the gateway with the handlers linked in.
    const SUITE: &str = "platforms";
    let manifest = workspace_root().join("spin.fermyon-cloud.toml");
    let all: &[&str] = &["file.read", "file.write", "download.create", "download.read"];
    let host = start(
        DevHost::builder(&manifest)
            .arg("--platform")
            .arg("fermyon-cloud")
            .variable("api_tokens", &tokens_config(SUITE, &[("ops", all)]))
            .variable("allow_download", "true")
            .variable("download_allow_private", "true"),
    );
    // The other manifests would not load there, and the dev host says why.
    for (other, profile, named) in [
        ("spin.toml", "wasm-functions", "wasi:keyvalue/atomics"),
        ("spin.wasm-functions.toml", "fermyon-cloud", ".spin.internal"),
    ] {
        let failure = DevHost::builder(workspace_root().join(other))
            .arg("--platform")
            .arg(profile)
            .start()
            .err()
            .unwrap_or_else(|| panic!("{other} must not load under {profile}"));
        assert!(failure.stderr.contains(named), "{other} under {profile}: {failure}");
    }
    let auth = bearer_for(SUITE, "ops");
    let call = |method: &str, path: &str, body: &[u8]| host.request(method, path, &[("Authorization", &auth)], body);

    // Files, through `/...`.
    expect_status(&call("PUT", "/docs/a.txt", b"hello cloud"), 201, "upload");
    let listing = call("GET", "/docs/", b"");
    expect_status(&listing, 200, "listing");
    assert!(listing.text().contains("a.txt"), "{}", listing.text());
    let file = call("GET", "/docs/a.txt", b"");
    expect_status(&file, 200, "download");
    assert_eq!(file.body, b"hello cloud");

    // A URL download, its progress and its history, all dispatched by query.
    let body = pseudo_random_bytes(5, 300 * 1024);
    let origin = TestOrigin::start(vec![("/f.bin", Route::ok(body.clone()))]);
    let started = call("GET", &format!("/dl?download={}", encode(&origin.url("/f.bin"))), b"");
    expect_status(&started, 202, "start a download");
    let id = started.json()["download_id"].as_str().expect("a download id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = call("GET", &format!("/api/v1/downloads/{id}"), b"").json();
        if record["status"] == "completed" {
            break;
        }
        assert!(record["status"] != "failed" && Instant::now() < deadline, "download: {record}");
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_status(&call("GET", "/dl?downloads=", b""), 200, "?downloads=");
    let history = call("GET", "/?download_history=", b"");
    expect_status(&history, 200, "?download_history=");
    assert!(history.text().contains(&id), "{}", history.text());
    assert_eq!(call("GET", "/dl/f.bin", b"").body, body);

    // A ZIP of both.
    let prepared = call("POST", "/api/download/prepare", br#"{"Filelist": ["/docs/a.txt", "/dl/f.bin"]}"#);
    expect_status(&prepared, 200, "prepare");
    let id = prepared.json()["rslt"].as_str().expect("a prepare id").to_owned();
    let zip = call("POST", &format!("/api/download/multi?id={id}"), b"");
    expect_status(&zip, 200, "multi");
    assert!(zip.body.starts_with(b"PK\x03\x04"), "a ZIP");
}

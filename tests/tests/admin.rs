//! End-to-end tests of the operator endpoints (`/api/v1/admin/...`) on the real app.
//!
//! The host and store come from the environment (see `downlink_e2e::test_env`):
//! `DOWNLINK_TEST_HOST=devhost|spin` (Spin: `SPIN_BIN`, else `spin` on PATH) and
//! `DOWNLINK_TEST_KV=sqlite|redis`; `cargo xtask test` runs every combination it can.

use std::time::Duration;

use downlink_e2e::*;

const SUITE: &str = "admin";

fn start() -> DevHost {
    app_builder(SUITE, &[("root", &["admin"]), ("alice", &["file.read", "file.write"])])
        .variable("prepare_ttl_secs", "1")
        .start()
        .unwrap_or_else(|f| panic!("{f}"))
}

fn bearer(name: &str) -> String {
    bearer_for(SUITE, name)
}

#[test]
fn gc_removes_orphan_chunks_and_expired_plans_and_keeps_files() {
    let host = start();
    let alice = bearer("alice");
    let root = bearer("root");
    let put = host.request("PUT", "/docs/a.txt", &[("Authorization", &alice)], b"kept content");
    assert_eq!(put.status, 201, "{}", put.text());
    let prepared = host.request(
        "POST",
        "/api/download/prepare",
        &[("Authorization", &alice), ("Content-Type", "application/json")],
        br#"{"Filelist": ["/docs/a.txt"]}"#,
    );
    assert_eq!(prepared.status, 200, "{}", prepared.text());
    let id = prepared.json()["rslt"].as_str().unwrap().to_string();

    // What a crash mid-upload leaves behind: a chunk of a blob nothing refers to.
    host.kv().set("chunk:orphan-blob:0", &[0]);
    std::thread::sleep(Duration::from_millis(1100)); // the plan expires

    let forbidden = host.request("POST", "/api/v1/admin/gc?grace=0", &[("Authorization", &alice)], b"");
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    let wrong_method = host.request("GET", "/api/v1/admin/gc", &[("Authorization", &root)], b"");
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text());

    let gc = host.request("POST", "/api/v1/admin/gc?grace=0", &[("Authorization", &root)], b"");
    assert_eq!(gc.status, 200, "{}", gc.text());
    let report = gc.json();
    assert_eq!(report["orphan_chunks_deleted"], 1, "{report}");
    assert_eq!(report["expired_plans_deleted"], 1, "{report}");
    let keys = host.kv().keys();
    assert!(!keys.iter().any(|k| k.starts_with("chunk:orphan-blob") || k.starts_with("prep:")), "{keys:?}");

    let file = host.request("GET", "/docs/a.txt", &[("Authorization", &alice)], b"");
    assert_eq!((file.status, file.body.as_slice()), (200, &b"kept content"[..]));
    let gone = host.request("POST", &format!("/api/download/multi?id={id}"), &[("Authorization", &alice)], b"");
    assert_eq!(gone.status, 404, "{}", gone.text());
}

//! Harness for the end-to-end tests: the dev host's own, and the app's, which run on the dev host
//! or on real Spin, on SQLite or on Redis.
//!
//! - [`DevHost`] runs a host process — `devhost up --from <manifest> --listen 127.0.0.1:0
//!   --state-dir <fresh tempdir> ...`, or under [`HostKind::Spin`] `$SPIN_BIN up` with the same
//!   arguments on a free port — waits for its `Serving http://127.0.0.1:PORT` line (Spin: and its
//!   health endpoint), and kills and reaps it (and anything it started) on drop.
//!   [`DevHost::builder`] is always the dev host on SQLite; [`DevHost::selected`] (used by
//!   [`app_builder`] and [`TestApp`]) follows `DOWNLINK_TEST_HOST` / `DOWNLINK_TEST_KV`
//!   ([`test_env`]); with Redis every start gets its own `redis-server` and runtime config.
//! - [`Client`]-style helpers ([`DevHost::get`], [`DevHost::request`], [`raw_request`]) talk HTTP
//!   over loopback with a timeout on every call; [`DevHost::kv`] reads and seeds the app's store.
//! - [`TestOrigin`] is a configurable local HTTP origin for outbound tests ([`Route`]s: fixed,
//!   chunked, generated, throttled, cut, gated, redirects); [`RedisServer`] runs a throwaway
//!   `redis-server` when one is installed.
//!
//! Modules, all re-exported at the root: [`paths`] (workspace, binaries, fixtures, temp dirs),
//! [`env`] (which host, store and bytes backend), [`host`] (the host process), [`kv`] (the app's store seen
//! directly), [`http`] (client helpers), [`redis`], [`s3`] (a throwaway S3 server), [`origin`] (test data and the origin),
//! [`app`] (the real app and a suite's principals), [`expect`] (response checks), [`web`] (the OpenAPI and browser tests' tools).
//!
//! Nothing here talks to anything but 127.0.0.1.

pub use serde_json::Value as Json;
pub use tempfile::TempDir;

pub mod app;
pub mod env;
pub mod expect;
pub mod host;
pub mod http;
pub mod kv;
pub mod origin;
pub mod paths;
pub mod redis;
pub mod s3;
pub mod web;

pub use app::*;
pub use env::*;
pub use expect::*;
pub use host::*;
pub use http::*;
pub use kv::*;
pub use origin::*;
pub use paths::*;
pub use redis::*;
pub use s3::*;
pub use web::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_lines_of_both_hosts_parse() {
        assert_eq!(parse_serving_line("Serving http://127.0.0.1:3000\n").as_deref(), Some("http://127.0.0.1:3000"));
        // Spin 4.0.2: "\nServing http://127.0.0.1:PORT", possibly coloured on a terminal.
        assert_eq!(
            parse_serving_line("\u{1b}[1;32mServing\u{1b}[0m http://127.0.0.1:45353\n").as_deref(),
            Some("http://127.0.0.1:45353")
        );
        assert_eq!(parse_serving_line("Serving spin.toml\n"), None);
        assert_eq!(parse_serving_line("Available Routes:\n"), None);
    }

    #[test]
    fn runtime_configs_with_a_default_store_are_kept() {
        assert!(defines_default_store("[key_value_store.default]\ntype = \"spin\"\n"));
        assert!(defines_default_store("  [ key_value_store.\"default\" ] # mine\n"));
        assert!(!defines_default_store("[key_value_store.other]\ntype = \"spin\"\n"));
        assert!(!defines_default_store("[outbound_networking]\nblock_networks = [\"private\"]\n"));
    }

    #[test]
    fn spin_port_clashes_are_recognised() {
        let failure = |stderr: &str| StartupFailure {
            status: None,
            stdout: String::new(),
            stderr: stderr.into(),
            reason: "exited before serving".into(),
            host: HostKind::Spin,
        };
        // Spin 4.0.2's message.
        assert!(failure(
            "Error: 127.0.0.1:60429 is already in use. To have Spin search for a free port, use the \
             --find-free-port option.\n"
        )
        .is_port_clash());
        assert!(!failure("Error: missing required variable api_tokens\n").is_port_clash());
    }

    #[test]
    fn resp_replies_parse() {
        let mut input: &[u8] = b"*3\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n";
        match read_resp(&mut input).unwrap() {
            RespValue::Array(Some(items)) => {
                assert!(matches!(&items[0], RespValue::Bulk(Some(v)) if v == b"abc"));
                assert!(matches!(&items[1], RespValue::Bulk(None)));
                assert!(matches!(&items[2], RespValue::Int(42)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_resp(&mut input).unwrap(), RespValue::Simple(s) if s == "OK"));
    }
}

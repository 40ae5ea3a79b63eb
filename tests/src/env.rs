//! Which host (dev host or Spin) and which store (SQLite or Redis) the suites run on.

use std::path::PathBuf;

use crate::*;

/// The program that serves the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// `devhost up` (this repository's wasmtime runner).
    DevHost,
    /// `spin up` (the real Spin CLI: `$SPIN_BIN`, else `spin` on PATH).
    Spin,
}

impl std::fmt::Display for HostKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKind::DevHost => "dev host",
            HostKind::Spin => "Spin",
        })
    }
}

/// The backend of the app's `default` key-value store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvKind {
    /// The host's built-in SQLite store, `<state-dir>/sqlite_key_value.db`.
    Sqlite,
    /// A throwaway `redis-server` per app start, through a runtime config
    /// (`[key_value_store.default] type = "redis"`).
    Redis,
}

/// Where the app keeps file bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// Chunks in the key-value store (the app's default).
    Kv,
    /// An S3 bucket: a throwaway `s3s-fs` per app start ([`S3Server`]).
    S3,
}

/// What the app's end-to-end suites run on, read once from the environment:
/// `DOWNLINK_TEST_HOST` = `devhost` (default) | `spin`, `DOWNLINK_TEST_KV` = `sqlite` (default) |
/// `redis`, `DOWNLINK_TEST_STORAGE` = `kv` (default) | `s3`, `DOWNLINK_TEST_PLATFORM` = `spin`
/// (default) | `wasm-functions` | `fermyon-cloud` (the dev host's `--platform` profile, with that
/// target's manifest and build, see [`app_manifest`]). Only [`DevHost::selected`] (and so [`app_builder`] / [`TestApp`]) follows it;
/// [`DevHost::builder`] is always the dev host on SQLite (the dev host's own tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestEnv {
    pub host: HostKind,
    pub kv: KvKind,
    pub storage: StorageKind,
    /// The deployment target emulated (dev host only): `spin`, `wasm-functions`, `fermyon-cloud`.
    pub platform: &'static str,
}

/// The selection (see [`TestEnv`]); panics on a value it does not know.
pub fn test_env() -> TestEnv {
    static ENV: std::sync::OnceLock<TestEnv> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| {
        let read =
            |name: &str| std::env::var(name).ok().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
        let host = match read("DOWNLINK_TEST_HOST").as_deref() {
            None | Some("devhost") | Some("dev-host") => HostKind::DevHost,
            Some("spin") => HostKind::Spin,
            Some(other) => panic!("DOWNLINK_TEST_HOST={other:?}: expected `devhost` or `spin`"),
        };
        let kv = match read("DOWNLINK_TEST_KV").as_deref() {
            None | Some("sqlite") => KvKind::Sqlite,
            Some("redis") => KvKind::Redis,
            Some(other) => panic!("DOWNLINK_TEST_KV={other:?}: expected `sqlite` or `redis`"),
        };
        let storage = match read("DOWNLINK_TEST_STORAGE").as_deref() {
            None | Some("kv") => StorageKind::Kv,
            Some("s3") => StorageKind::S3,
            Some(other) => panic!("DOWNLINK_TEST_STORAGE={other:?}: expected `kv` or `s3`"),
        };
        let platform = match read("DOWNLINK_TEST_PLATFORM").as_deref() {
            None | Some("spin") => "spin",
            Some("wasm-functions") => "wasm-functions",
            Some("fermyon-cloud") => "fermyon-cloud",
            Some(other) => panic!("DOWNLINK_TEST_PLATFORM={other:?}: expected spin, wasm-functions or fermyon-cloud"),
        };
        assert!(
            platform == "spin" || host == HostKind::DevHost,
            "DOWNLINK_TEST_PLATFORM={platform} is a dev host profile: it needs DOWNLINK_TEST_HOST=devhost"
        );
        TestEnv { host, kv, storage, platform }
    })
}

/// Do the app's file bytes live in a bucket ([`TestEnv::storage`])?
pub fn bytes_in_bucket() -> bool {
    test_env().storage == StorageKind::S3
}

/// Do the app's suites run under a hosted target's profile ([`TestEnv::platform`])?
pub fn on_hosted_platform() -> bool {
    test_env().platform != "spin"
}

/// For a test of a behaviour a hosted target's profile cannot have (a runtime config, a body
/// over 10 MiB, a transfer past 30 s): there prints `skipped under <platform>: <reason>` and
/// returns true (the test then returns); else false.
pub fn skip_on_hosted_platform(reason: &str) -> bool {
    if on_hosted_platform() {
        eprintln!("skipped under {}: {reason}", test_env().platform);
        true
    } else {
        false
    }
}

/// Do the app's suites run under real Spin ([`TestEnv::host`])?
pub fn under_spin() -> bool {
    test_env().host == HostKind::Spin
}

/// For a test that cannot apply under real Spin: under Spin prints
/// `skipped under real Spin: <reason>` and returns true (the test then returns); else false.
pub fn skip_under_spin(reason: &str) -> bool {
    if under_spin() {
        eprintln!("skipped under real Spin: {reason}");
        true
    } else {
        false
    }
}

/// The Spin CLI: `$SPIN_BIN` (when set and not empty), else `spin` on PATH; None when neither.
pub fn spin_bin() -> Option<PathBuf> {
    match std::env::var_os("SPIN_BIN").filter(|v| !v.is_empty()) {
        Some(p) => Some(resolve_from_root(PathBuf::from(p))),
        None => find_on_path("spin"),
    }
}

pub(crate) fn spin_bin_required() -> PathBuf {
    let bin = spin_bin().unwrap_or_else(|| {
        panic!("DOWNLINK_TEST_HOST=spin, but no Spin CLI: set SPIN_BIN to its path or put `spin` on PATH")
    });
    assert!(bin.is_file(), "SPIN_BIN={} is not a file", bin.display());
    bin
}

//! Where things are: the workspace, the built dev host and fixtures, temp dirs, timeouts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::*;

/// Timeout for one HTTP exchange with the dev host or the origin.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `devhost up` / `spin up` may take to print its `Serving` line (it compiles every
/// component first; a debug build of the dev host is slow at that). Override with
/// `DEVHOST_STARTUP_TIMEOUT_SECS`.
pub fn startup_timeout() -> Duration {
    std::env::var("DEVHOST_STARTUP_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(180))
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// A relative path from the environment: as given when it exists from the test's working
/// directory (`tests/`), else from the workspace root (where `cargo test` is usually typed).
pub(crate) fn resolve_from_root(path: PathBuf) -> PathBuf {
    if path.is_absolute() || path.exists() {
        path
    } else {
        workspace_root().join(path)
    }
}

/// The dev host binary: `$DEVHOST_BIN`, else `<target>/debug/devhost`. Panics with a hint when
/// it does not exist.
pub fn devhost_bin() -> PathBuf {
    let bin = match std::env::var_os("DEVHOST_BIN") {
        Some(p) => resolve_from_root(PathBuf::from(p)),
        None => target_dir().join("debug").join("devhost"),
    };
    assert!(
        bin.is_file(),
        "dev host binary not found at {} — build it first (`cargo build -p devhost`) or set \
         DEVHOST_BIN to its path",
        bin.display()
    );
    bin
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The command that builds every fixture component.
pub const FIXTURE_BUILD_COMMAND: &str = "cargo build --target wasm32-wasip2 --release \
     -p fixture-app -p fixture-echo -p fixture-unsupported";

/// Path of a built fixture component (`fixture_app`, `fixture_echo`, `fixture_unsupported`);
/// panics with the build command when it is missing.
pub fn fixture_wasm(stem: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2").join("release").join(format!("{stem}.wasm"));
    assert!(
        path.is_file(),
        "fixture component {} is missing — build the fixtures first: `{}`",
        path.display(),
        FIXTURE_BUILD_COMMAND
    );
    path
}

/// A manifest under `tests/fixtures/`, after checking that the fixture wasm files exist.
pub fn fixture_manifest(name: &str) -> PathBuf {
    fixture_wasm("fixture_app");
    fixture_wasm("fixture_echo");
    if name.contains("unsupported") {
        fixture_wasm("fixture_unsupported");
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        // The manifests point at ../../target; make sure that is where the wasm is.
        let expected = workspace_root().join("target/wasm32-wasip2/release/fixture_app.wasm");
        assert!(
            expected.is_file(),
            "the fixture manifests reference {}, but CARGO_TARGET_DIR points elsewhere; build \
             the fixtures with CARGO_TARGET_DIR={}/target",
            expected.display(),
            workspace_root().display()
        );
    }
    fixtures_dir().join(name)
}

/// A fresh temporary directory (removed on drop).
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir().expect("create tempdir")
}

/// A free TCP port on 127.0.0.1 (bound and released; racy but fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The application manifest at the workspace root: `spin.toml`, or under a hosted platform
/// profile ([`test_env`]) that target's generated manifest (`spin.<platform>.toml`).
pub fn app_manifest() -> PathBuf {
    match crate::test_env().platform {
        "spin" => workspace_root().join("spin.toml"),
        platform => workspace_root().join(format!("spin.{platform}.toml")),
    }
}

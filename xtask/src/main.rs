//! Project tasks, so that running and testing each take one command on a fresh machine:
//!
//! - `cargo xtask up [devhost up args...]` builds the dev host and every component, then serves
//!   `spin.toml` on <http://127.0.0.1:3000> with the embedded SQLite store. Unless tokens are
//!   configured (`SPIN_VARIABLE_API_TOKENS` or `--variable api_tokens=...`), it uses a local
//!   admin token kept in `.spin/dev-token.json` and prints it, so curl works at once.
//! - `cargo xtask test` builds the dev host and every wasm component (app and test fixtures),
//!   then runs all tests: unit, dev host, end-to-end (dev host, SQLite store); then the app's
//!   end-to-end suites again on the dev host with Redis and, when a Spin CLI is found
//!   (`SPIN_BIN`, else `spin` on PATH), on real Spin with SQLite and with Redis.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target every component is built for.
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("up") => up(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("build-wasm") => build_wasm(&root),
        Some("lint") => lint(&root),
        _ => {
            eprintln!("usage: cargo xtask <up|test|build-wasm|lint> [args...]");
            eprintln!("  up          build everything and serve spin.toml on the dev host");
            eprintln!("  test        build everything and run every test (extra args go to cargo test)");
            eprintln!("  build-wasm  build every wasm component (app and test fixtures)");
            eprintln!("  lint        rustfmt check, then clippy with warnings as errors, native and wasm crates");
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo run` gave this process xtask's package variables; nested builds must not see
    // them, or build scripts that watch them rebuild whenever a build comes from elsewhere.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if per_package {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Workspace packages that are wasm components: everything under `components/` and
/// `tests/fixtures/`.
fn wasm_packages(root: &Path) -> Result<Vec<String>> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let dirs = [root.join("components"), root.join("tests").join("fixtures")];
    let mut names = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        if dirs.iter().any(|d| manifest.starts_with(d)) {
            names.push(package["name"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(names)
}

/// `cargo fmt --check`, then clippy (`-D warnings`) on the native crates (all targets) and on
/// the wasm crates (`downlink-spin`, components, fixtures) for `wasm32-wasip2`.
fn lint(root: &Path) -> Result<()> {
    ensure_wasm_target(root)?;
    let mut fmt = cargo();
    fmt.current_dir(root).args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let mut native = cargo();
    native.current_dir(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    run(native)?;
    let mut wasm = cargo();
    wasm.current_dir(root).args(["clippy", "--target", WASM_TARGET, "-p", "downlink-spin"]);
    for package in wasm_packages(root)? {
        wasm.args(["-p", &package]);
    }
    wasm.args(["--", "-D", "warnings"]);
    run(wasm)
}

fn build_wasm(root: &Path) -> Result<()> {
    let packages = wasm_packages(root)?;
    if packages.is_empty() {
        return Ok(());
    }
    ensure_wasm_target(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root).args(["build", "--release", "--target", WASM_TARGET]);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    run(cmd)
}

/// The wasm target must be installed before anything builds: rustup does not always add the
/// `targets` of `rust-toolchain.toml` (it did not on a fresh machine, and the build then failed
/// after minutes with "can't find crate for `core`"). Adds it, or stops at once with the fix.
fn ensure_wasm_target(root: &Path) -> Result<()> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).current_dir(root).args(["--print", "sysroot"]).output();
    let installed = match &sysroot {
        Ok(out) if out.status.success() => {
            let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib").is_dir()
        }
        _ => false,
    };
    if installed {
        return Ok(());
    }
    eprintln!("xtask: the {WASM_TARGET} target is not installed; running `rustup target add {WASM_TARGET}`");
    let added = Command::new("rustup").current_dir(root).args(["target", "add", WASM_TARGET]).status();
    match added {
        Ok(status) if status.success() => Ok(()),
        _ => bail!("the {WASM_TARGET} target is missing: run `rustup target add {WASM_TARGET}` and try again"),
    }
}

fn build_devhost(root: &Path) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.current_dir(root).args(["build", "--release", "-p", "devhost"]);
    run(cmd)?;
    Ok(root.join("target").join("release").join("devhost"))
}

fn up(root: &Path, extra: &[String]) -> Result<()> {
    ensure_wasm_target(root)?;
    let devhost = build_devhost(root)?;
    build_wasm(root)?;
    let mut cmd = Command::new(devhost);
    cmd.current_dir(root).args(["up", "--from", "spin.toml"]).args(extra);
    let configured = std::env::var_os("SPIN_VARIABLE_API_TOKENS").is_some()
        || extra.iter().any(|a| a.starts_with("api_tokens=") || a.starts_with("--variable=api_tokens="));
    if !configured {
        let (token, entry) = dev_token(&root.join(".spin").join("dev-token.json"))?;
        eprintln!("xtask: local admin token (from .spin/dev-token.json):");
        let listen = extra
            .iter()
            .enumerate()
            .find_map(|(i, arg)| match arg.strip_prefix("--listen") {
                Some("") => extra.get(i + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            })
            .unwrap_or("127.0.0.1:3000");
        eprintln!("  curl -H 'Authorization: Bearer {token}' http://{listen}/");
        cmd.arg("--variable").arg(format!("api_tokens=[{entry}]"));
    }
    run(cmd)
}

/// The local development token: minted once, kept beside the dev host's state (gitignored).
fn dev_token(path: &Path) -> Result<(String, String)> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let saved: serde_json::Value = serde_json::from_str(&text).context("corrupt .spin/dev-token.json")?;
        if let (Some(token), Some(entry)) = (saved["token"].as_str(), saved.get("entry")) {
            return Ok((token.to_string(), entry.to_string()));
        }
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let minted = downlink_core::auth::generate_token_line("dev", &[downlink_core::auth::Scope::Admin], random)?;
    let entry: serde_json::Value = serde_json::from_str(&minted.config_entry)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::json!({ "token": minted.token, "entry": entry }).to_string())?;
    Ok((minted.token, entry.to_string()))
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    // Checked first: a wrong SPIN_BIN or a missing target should not wait for a long build.
    let spin = spin_bin()?;
    ensure_wasm_target(root)?;
    let devhost = build_devhost(root)?;
    build_wasm(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .env("DEVHOST_BIN", &devhost)
        .env("DOWNLINK_TEST_HOST", "devhost")
        .env("DOWNLINK_TEST_KV", "sqlite")
        .env("DOWNLINK_TEST_STORAGE", "kv")
        .arg("test")
        .args(extra);
    // The other combinations run even when this one fails: CI then reports all of them.
    let full = run(cmd);
    if let Err(e) = &full {
        eprintln!("xtask: FAILED: the full test run (dev host + sqlite): {e:#}");
    }
    e2e_matrix(root, &devhost, spin.as_deref(), extra, full.is_ok())
}

/// The package of the end-to-end tests, and the app's suites in it that run on every host and
/// store (`compat` pins what real Spin's stores do to the app).
const E2E_PACKAGE: &str = "downlink-e2e";
const E2E_SUITES: &[&str] = &["files", "downloads", "multi", "admin", "compat"];
/// The suites that move file bytes, run again with the bytes in an S3 bucket (`s3s-fs`).
const E2E_BYTES_SUITES: &[&str] = &["files", "downloads", "multi"];

/// After the full run (dev host, SQLite), the app's end-to-end suites again on the other
/// host/store combinations: dev host + Redis, then (with a Spin CLI, `spin`) Spin + SQLite and
/// Spin + Redis; and the suites that move file bytes with the bytes in an S3 bucket (`s3s-fs`)
/// on the dev host + SQLite and on Spin + Redis. Every combination runs; any failure (`full_ok`: the full run's) fails the
/// command. Without `redis-server` (or `s3s-fs`) those runs are skipped, except under CI (`CI`
/// set), where that is a failure. Arguments after `--` in `extra` (test filters, `--nocapture`, ...) apply
/// to these runs too.
fn e2e_matrix(root: &Path, devhost: &Path, spin: Option<&Path>, extra: &[String], full_ok: bool) -> Result<()> {
    let test_args: &[String] = match extra.iter().position(|a| a == "--") {
        Some(i) => &extra[i + 1..],
        None => &[],
    };
    let mut failed = Vec::new();
    if !full_ok {
        failed.push("the full run (devhost + sqlite)".to_string());
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    let redis = find_on_path("redis-server").is_some();
    if !redis {
        if ci {
            eprintln!("xtask: FAILED: redis-server is not on PATH, and CI is set: install Redis");
            failed.push("Redis (redis-server not on PATH, CI set)".to_string());
        } else {
            eprintln!("xtask: Redis runs: skipped (redis-server not on PATH; under CI this fails)");
        }
    }
    let s3 = s3s_fs_available();
    if !s3 {
        if ci {
            eprintln!("xtask: FAILED: s3s-fs is not installed, and CI is set: install it (see .ci/run)");
            failed.push("S3 (s3s-fs not installed, CI set)".to_string());
        } else {
            eprintln!(
                "xtask: S3 runs: skipped (no s3s-fs; cargo install s3s-fs --version 0.14.1 --locked --features binary)"
            );
        }
    }
    // (host, key-value store, where file bytes live)
    let mut combos: Vec<(&str, &str, &str)> = Vec::new();
    if redis {
        combos.push(("devhost", "redis", "kv"));
    }
    if s3 {
        combos.push(("devhost", "sqlite", "s3"));
    }
    match spin {
        Some(bin) => {
            eprintln!("xtask: real Spin: {}", bin.display());
            combos.push(("spin", "sqlite", "kv"));
            if redis {
                combos.push(("spin", "redis", "kv"));
            }
            if s3 {
                // Redis records, bytes in a bucket: the shape of a scaled-out deployment.
                combos.push(("spin", if redis { "redis" } else { "sqlite" }, "s3"));
            }
        }
        None => eprintln!("xtask: real Spin: skipped (set SPIN_BIN or put spin on PATH)"),
    }
    let label = |host: &str, kv: &str, bytes: &str| match bytes {
        "kv" => format!("{host} + {kv}"),
        _ => format!("{host} + {kv} + {bytes}"),
    };

    for (host, kv, bytes) in &combos {
        let mut cmd = cargo();
        cmd.current_dir(root)
            .env("DEVHOST_BIN", devhost)
            .env("DOWNLINK_TEST_HOST", host)
            .env("DOWNLINK_TEST_KV", kv)
            .env("DOWNLINK_TEST_STORAGE", bytes)
            // Every suite runs even when one fails: the report then covers all of them.
            .args(["test", "--no-fail-fast", "-p", E2E_PACKAGE]);
        if let Some(bin) = spin {
            cmd.env("SPIN_BIN", bin);
        }
        let suites = if *bytes == "kv" { E2E_SUITES } else { E2E_BYTES_SUITES };
        for suite in suites {
            cmd.args(["--test", suite]);
        }
        if !test_args.is_empty() {
            cmd.arg("--").args(test_args);
        }
        let name = label(host, kv, bytes);
        eprintln!("xtask: == end-to-end suites on {name}");
        if let Err(e) = run(cmd) {
            eprintln!("xtask: FAILED: end-to-end suites on {name}: {e:#}");
            failed.push(name);
        }
    }
    let mut summary = vec![format!("devhost + sqlite (full run): {}", if full_ok { "ok" } else { "FAILED" })];
    for (host, kv, bytes) in &combos {
        let name = label(host, kv, bytes);
        let verdict = if failed.contains(&name) { "FAILED" } else { "ok" };
        summary.push(format!("{name}: {verdict}"));
    }
    if spin.is_none() {
        summary.push("real Spin: skipped (set SPIN_BIN or put spin on PATH)".into());
    }
    if !redis {
        summary.push("Redis: skipped (redis-server not on PATH)".into());
    }
    if !s3 {
        summary.push("S3: skipped (s3s-fs not installed)".into());
    }
    eprintln!("xtask: end-to-end results:\n  {}", summary.join("\n  "));
    if !failed.is_empty() {
        bail!("end-to-end suites failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// `s3s-fs` where the harness looks for it (`$S3S_FS_BIN`, PATH, `~/.cargo/bin`).
fn s3s_fs_available() -> bool {
    if let Some(bin) = std::env::var_os("S3S_FS_BIN") {
        return Path::new(&bin).is_file();
    }
    find_on_path("s3s-fs").is_some()
        || std::env::var_os("HOME").is_some_and(|home| Path::new(&home).join(".cargo/bin/s3s-fs").is_file())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The Spin CLI: `$SPIN_BIN` (an error when set but not a file), else `spin` on PATH.
fn spin_bin() -> Result<Option<PathBuf>> {
    match std::env::var_os("SPIN_BIN").filter(|v| !v.is_empty()) {
        Some(p) => {
            let path = PathBuf::from(p);
            if !path.is_file() {
                bail!("SPIN_BIN={} is not a file", path.display());
            }
            Ok(Some(std::fs::canonicalize(&path).unwrap_or(path)))
        }
        None => Ok(find_on_path("spin")),
    }
}

//! Project tasks, so that running and testing each take one command on a fresh machine:
//!
//! - `cargo xtask up [devhost up args...]` builds the dev host and every component, then serves
//!   `spin.toml` on <http://127.0.0.1:3000> with the embedded SQLite store. Unless tokens are
//!   configured (`SPIN_VARIABLE_API_TOKENS` or `--variable api_tokens=...`), it uses a local
//!   admin token kept in `.spin/dev-token.json` and prints it, so curl works at once.
//! - `cargo xtask test` builds the dev host and every wasm component (app and test fixtures),
//!   then runs all tests: unit, dev host, end-to-end.

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
        _ => {
            eprintln!("usage: cargo xtask <up|test|build-wasm> [args...]");
            eprintln!("  up          build everything and serve spin.toml on the dev host");
            eprintln!("  test        build everything and run every test (extra args go to cargo test)");
            eprintln!("  build-wasm  build every wasm component (app and test fixtures)");
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

fn build_wasm(root: &Path) -> Result<()> {
    let packages = wasm_packages(root)?;
    if packages.is_empty() {
        return Ok(());
    }
    let mut cmd = cargo();
    cmd.current_dir(root).args(["build", "--release", "--target", WASM_TARGET]);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    run(cmd)
}

fn build_devhost(root: &Path) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.current_dir(root).args(["build", "--release", "-p", "devhost"]);
    run(cmd)?;
    Ok(root.join("target").join("release").join("devhost"))
}

fn up(root: &Path, extra: &[String]) -> Result<()> {
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
    let devhost = build_devhost(root)?;
    build_wasm(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root).env("DEVHOST_BIN", &devhost).arg("test").args(extra);
    run(cmd)
}

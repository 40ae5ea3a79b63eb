//! Project tasks, so that running and testing each take one command on a fresh machine:
//!
//! - `cargo xtask up [devhost up args...]` builds the dev host and every component, then serves
//!   `spin.toml` on <http://127.0.0.1:3000> with the embedded SQLite store. Unless tokens are
//!   configured (`SPIN_VARIABLE_API_TOKENS` or `--variable api_tokens=...`), it uses a local
//!   admin token kept in `.spin/dev-token.json` and prints it, so curl works at once.
//! - `cargo xtask test` builds the dev host and every wasm component (app and test fixtures),
//!   then runs all tests: unit, dev host, end-to-end (dev host, SQLite store); then the app's
//!   end-to-end suites again on the dev host with Redis, with an S3 bucket, and with the bucket
//!   under the Fermyon Wasm Functions profile (the hosted build), and, when a Spin CLI is found
//!   (`SPIN_BIN`, else `spin` on PATH), on real Spin with SQLite, with Redis, and with Redis
//!   and a bucket.
//! - `cargo xtask manifests` regenerates the hosted targets' manifests from `spin.toml`.

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
        Some("manifests") => write_hosted_manifests(&root, args.get(1).map(String::as_str) == Some("--check")),
        _ => {
            eprintln!("usage: cargo xtask <up|test|build-wasm|lint> [args...]");
            eprintln!("  up          build everything and serve spin.toml on the dev host");
            eprintln!("  test        build everything and run every test (extra args go to cargo test)");
            eprintln!(
                "  build-wasm  build every wasm component (app and test fixtures), self-hosted and hosted builds"
            );
            eprintln!("  manifests   regenerate the hosted targets' manifests from spin.toml (--check: only compare)");
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
    wasm_packages_under(root, &[root.join("components"), root.join("tests").join("fixtures")])
}

/// Workspace packages whose manifest lies under one of `dirs`.
fn wasm_packages_under(root: &Path, dirs: &[PathBuf]) -> Result<Vec<String>> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut names = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        if dirs.iter().any(|d| manifest.starts_with(d)) {
            names.push(package["name"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(names)
}

/// The Fermyon Wasm Functions manifest, generated from `spin.toml`. Both hosted targets lack
/// `wasi:keyvalue/atomics`, so their components are the `hosted` build (feature
/// `downlink-spin/hosted`, in `target/hosted`).
const WASM_FUNCTIONS_MANIFEST: &str = "spin.wasm-functions.toml";
/// The Fermyon Cloud manifest: Wasm Functions' without service chaining.
const CLOUD_MANIFEST: &str = "spin.fermyon-cloud.toml";
/// Where the hosted build goes, so that it never overwrites the self-hosted one.
const HOSTED_TARGET_DIR: &str = "target/hosted";
/// The cargo arguments that make a build the hosted one.
const HOSTED_BUILD_ARGS: [&str; 4] = ["--features", "downlink-spin/hosted", "--target-dir", HOSTED_TARGET_DIR];
/// Fermyon Cloud's gateway: the hosted build with the chained handlers linked in. Its own
/// target dir: built beside them, the handlers would be linked with their exports.
const CLOUD_GATEWAY_BUILD_ARGS: [&str; 6] =
    ["--features", "downlink-spin/hosted,gateway/in-process", "--target-dir", "target/cloud", "-p", "gateway"];

/// Variables whose default differs on the hosted targets: (`spin.toml`'s line, the hosted one).
const HOSTED_DEFAULTS: &[(&str, &str)] = &[
    (
        r#"max_response_bytes = { default = "0" }"#,
        r#"max_response_bytes = { default = "10000000" }  # under both hosts' 10 MB body cap"#,
    ),
    (r#"download_invocation_secs = { default = "0" } "#, r#"download_invocation_secs = { default = "25" }"#),
    (r#"download_slice_secs = { default = "0" }  "#, r#"download_slice_secs = { default = "20" } "#),
];

/// `spin.toml` made into the manifest of a hosted target: same routes, grants and variables
/// (but [`HOSTED_DEFAULTS`]); components from the hosted build.
fn hosted_manifest(spin_toml: &str, target: &str, file: &str) -> Result<String> {
    let body: String =
        spin_toml.lines().skip_while(|line| line.starts_with('#')).map(|line| format!("{line}\n")).collect();
    let self_hosted_build = format!("cargo build --target {WASM_TARGET} --release -p");
    let hosted_build = format!("cargo build --target {WASM_TARGET} --release {} -p", HOSTED_BUILD_ARGS.join(" "));
    let mut body = body;
    for (self_hosted, hosted) in HOSTED_DEFAULTS {
        if !body.contains(self_hosted) {
            bail!("spin.toml no longer has `{self_hosted}`: update HOSTED_DEFAULTS in xtask");
        }
        body = body.replace(self_hosted, hosted);
    }
    Ok(format!(
        "# Downlink for {target}. GENERATED from spin.toml by `cargo xtask manifests`; do not edit.\n\
         # Differs from spin.toml only in its components: the hosted build, which imports\n\
         # wasi:keyvalue/store alone (no atomics, no batch). See the README, \"Deploying\".\n\
         # spin build -f {file} && spin aka deploy -f {file} --variable ...\n{}",
        body.replace(&format!("target/{WASM_TARGET}/"), &format!("{HOSTED_TARGET_DIR}/{WASM_TARGET}/"))
            .replace(&self_hosted_build, &hosted_build)
    ))
}

/// The Wasm Functions manifest (`hosted`, as [`hosted_manifest`] made it) without service
/// chaining, for Fermyon Cloud: the gateway is the `in-process` build, holding the grants of
/// the components it calls in-process; those reachable only through it are left out.
fn cloud_manifest(hosted: &str) -> Result<String> {
    use toml::{Table, Value};
    let mut manifest: Table = toml::from_str(hosted).context("parse the hosted manifest")?;
    let triggers = manifest
        .get_mut("trigger")
        .and_then(|t| t.get_mut("http"))
        .and_then(Value::as_array_mut)
        .context("no [[trigger.http]]")?;
    // Private routes exist only to be chained to.
    triggers.retain(|trigger| !trigger.get("route").is_some_and(Value::is_table));
    let public: std::collections::BTreeSet<String> =
        triggers.iter().filter_map(|t| t.get("component")?.as_str().map(str::to_owned)).collect();
    let components = manifest.get_mut("component").and_then(Value::as_table_mut).context("no [component]")?;
    let mut gateway = components.remove("gateway").and_then(|g| g.as_table().cloned()).context("no gateway")?;
    let mut hosts: Vec<Value> = Vec::new();
    let mut variables = gateway.get("variables").and_then(Value::as_table).cloned().unwrap_or_default();
    for chained in ["files", "download", "downloads", "history"] {
        let component = components.get(chained).and_then(Value::as_table).context(chained.to_owned())?.clone();
        for host in component.get("allowed_outbound_hosts").and_then(Value::as_array).into_iter().flatten() {
            // Cloud has no service chaining (the handlers are linked in instead).
            let chained = host.as_str().is_some_and(|host| host.contains(".spin.internal"));
            if !chained && !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        variables.extend(component.get("variables").and_then(Value::as_table).cloned().unwrap_or_default());
        if !public.contains(chained) {
            components.remove(chained);
        }
    }
    gateway.insert("allowed_outbound_hosts".into(), Value::Array(hosts));
    gateway.insert("key_value_stores".into(), Value::Array(vec![Value::String("default".into())]));
    gateway.insert("variables".into(), Value::Table(variables));
    gateway.insert("source".into(), Value::String(format!("target/cloud/{WASM_TARGET}/release/gateway.wasm")));
    let build = format!("cargo build --target {WASM_TARGET} --release {}", CLOUD_GATEWAY_BUILD_ARGS.join(" "));
    gateway.insert("build".into(), Value::Table(Table::from_iter([("command".to_owned(), Value::String(build))])));
    components.insert("gateway".into(), Value::Table(gateway));
    for (_, component) in components.iter_mut() {
        let Some(component) = component.as_table_mut() else { continue };
        if let Some(hosts) = component.get_mut("allowed_outbound_hosts").and_then(Value::as_array_mut) {
            hosts.retain(|host| !host.as_str().is_some_and(|host| host.contains(".spin.internal")));
        }
    }
    // Without chaining no invocation can start the next slice: a download is one invocation
    // long there, ended by `download_invocation_secs`.
    let slice = manifest
        .get_mut("variables")
        .and_then(Value::as_table_mut)
        .and_then(|variables| variables.get_mut("download_slice_secs"))
        .and_then(Value::as_table_mut)
        .context("no download_slice_secs variable")?;
    slice.insert("default".into(), Value::String("0".into()));
    Ok(format!(
        "# Downlink for Fermyon Cloud (`spin cloud deploy`). GENERATED from spin.toml by `cargo xtask manifests`;\n\
         # do not edit. The hosted build, and no service chaining (Cloud has none): the gateway links\n\
         # the files, download, downloads and history handlers in and holds their grants.\n\
         # spin build -f {CLOUD_MANIFEST} && spin cloud deploy -f {CLOUD_MANIFEST} --variable ...\n{}",
        toml::to_string(&manifest)?
    ))
}

/// Writes (or with `check`, compares) every hosted manifest.
fn write_hosted_manifests(root: &Path, check: bool) -> Result<()> {
    let spin_toml = std::fs::read_to_string(root.join("spin.toml")).context("read spin.toml")?;
    let wasm_functions =
        hosted_manifest(&spin_toml, "Fermyon Wasm Functions (`spin aka deploy`)", WASM_FUNCTIONS_MANIFEST)?;
    let cloud = cloud_manifest(&wasm_functions)?;
    for (file, wanted) in [(WASM_FUNCTIONS_MANIFEST, wasm_functions), (CLOUD_MANIFEST, cloud)] {
        let path = root.join(file);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(wanted.as_str()) {
                bail!("{file} is not what spin.toml makes: run `cargo xtask manifests` and commit it");
            }
        } else {
            std::fs::write(&path, wanted).with_context(|| format!("write {file}"))?;
            eprintln!("xtask: wrote {file}");
        }
    }
    Ok(())
}

/// `cargo fmt --check`, then clippy (`-D warnings`) on the native crates (all targets) and on
/// the wasm crates (`downlink-spin`, components, fixtures) for `wasm32-wasip2`.
fn lint(root: &Path) -> Result<()> {
    write_hosted_manifests(root, true)?;
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
    run(wasm)?;
    // The hosted build's code paths (src/kv.rs without atomics).
    let mut hosted = cargo();
    hosted.current_dir(root).args(["clippy", "--target", WASM_TARGET, "-p", "downlink-spin"]).args(HOSTED_BUILD_ARGS);
    for package in app_packages(root)? {
        hosted.args(["-p", &package]);
    }
    hosted.args(["--", "-D", "warnings"]);
    run(hosted)?;
    // Fermyon Cloud's gateway, with the handlers linked in.
    let mut cloud_gateway = cargo();
    cloud_gateway.current_dir(root).args(["clippy", "--target", WASM_TARGET]).args(CLOUD_GATEWAY_BUILD_ARGS);
    cloud_gateway.args(["--", "-D", "warnings"]);
    run(cloud_gateway)
}

/// Builds every wasm component for self-hosted Spin (`target/wasm32-wasip2`), then the app's
/// components again for the hosted targets (`target/hosted/wasm32-wasip2`).
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
    run(cmd)?;
    let mut hosted = cargo();
    hosted.current_dir(root).args(["build", "--release", "--target", WASM_TARGET]).args(HOSTED_BUILD_ARGS);
    for p in app_packages(root)? {
        hosted.args(["-p", &p]);
    }
    run(hosted)?;
    let mut cloud_gateway = cargo();
    cloud_gateway
        .current_dir(root)
        .args(["build", "--release", "--target", WASM_TARGET])
        .args(CLOUD_GATEWAY_BUILD_ARGS);
    run(cloud_gateway)
}

/// The app's components (`components/`), without the test fixtures.
fn app_packages(root: &Path) -> Result<Vec<String>> {
    let components = root.join("components");
    wasm_packages_under(root, &[components])
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
    let web_tools = web_tools(root);
    let mut cmd = cargo();
    if let Some(venv) = &web_tools {
        cmd.env("DOWNLINK_WEB_TOOLS", venv);
    }
    cmd.current_dir(root)
        .env("DEVHOST_BIN", &devhost)
        .env("DOWNLINK_TEST_HOST", "devhost")
        .env("DOWNLINK_TEST_KV", "sqlite")
        .env("DOWNLINK_TEST_STORAGE", "kv")
        .env("DOWNLINK_TEST_PLATFORM", "spin")
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
/// The app's suites under a hosted target's profile (`compat` pins self-hosted Spin's stores,
/// which need a runtime config: there is none there).
const E2E_HOSTED_SUITES: &[&str] = &["files", "downloads", "multi", "admin"];

/// After the full run (dev host, SQLite), the app's end-to-end suites again on the other
/// host/store combinations: dev host + Redis, then (with a Spin CLI, `spin`) Spin + SQLite and
/// Spin + Redis; and the suites that move file bytes with the bytes in an S3 bucket (`s3s-fs`)
/// on the dev host under the Wasm Functions profile and on Spin + Redis. Every combination runs; any failure (`full_ok`: the full run's) fails the
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
    // (host, key-value store, where file bytes live, platform profile)
    let mut combos: Vec<(&str, &str, &str, &str)> = Vec::new();
    if redis {
        combos.push(("devhost", "redis", "kv", "spin"));
    }
    if s3 {
        // The bucket on the dev host runs under the hosted profile below; with the exact store it
        // runs under real Spin (Redis + S3), so a dev host + SQLite + S3 run would repeat both
        // (and CI's time is bounded).
        // The hosted build and manifest under Fermyon Wasm Functions' limits, bytes in a bucket
        // (the only place for them there).
        combos.push(("devhost", "sqlite", "s3", "wasm-functions"));
    }
    match spin {
        Some(bin) => {
            eprintln!("xtask: real Spin: {}", bin.display());
            combos.push(("spin", "sqlite", "kv", "spin"));
            if redis {
                combos.push(("spin", "redis", "kv", "spin"));
            }
            if s3 {
                // Redis records, bytes in a bucket: the shape of a scaled-out deployment.
                combos.push(("spin", if redis { "redis" } else { "sqlite" }, "s3", "spin"));
            }
        }
        None => eprintln!("xtask: real Spin: skipped (set SPIN_BIN or put spin on PATH)"),
    }
    let label = |host: &str, kv: &str, bytes: &str, platform: &str| {
        let mut name = format!("{host} + {kv}");
        if bytes != "kv" {
            name += &format!(" + {bytes}");
        }
        if platform != "spin" {
            name += &format!(" ({platform} profile)");
        }
        name
    };

    for (host, kv, bytes, platform) in &combos {
        let mut cmd = cargo();
        cmd.current_dir(root)
            .env("DEVHOST_BIN", devhost)
            .env("DOWNLINK_TEST_HOST", host)
            .env("DOWNLINK_TEST_KV", kv)
            .env("DOWNLINK_TEST_STORAGE", bytes)
            .env("DOWNLINK_TEST_PLATFORM", platform)
            // Every suite runs even when one fails: the report then covers all of them.
            .args(["test", "--no-fail-fast", "-p", E2E_PACKAGE]);
        if let Some(bin) = spin {
            cmd.env("SPIN_BIN", bin);
        }
        let suites = match (*bytes, *platform) {
            ("kv", _) => E2E_SUITES,
            (_, "spin") => E2E_BYTES_SUITES,
            _ => E2E_HOSTED_SUITES,
        };
        for suite in suites {
            cmd.args(["--test", suite]);
        }
        if !test_args.is_empty() {
            cmd.arg("--").args(test_args);
        }
        let name = label(host, kv, bytes, platform);
        eprintln!("xtask: == end-to-end suites on {name}");
        if let Err(e) = run(cmd) {
            eprintln!("xtask: FAILED: end-to-end suites on {name}: {e:#}");
            failed.push(name);
        }
    }
    let mut summary = vec![format!("devhost + sqlite (full run): {}", if full_ok { "ok" } else { "FAILED" })];
    for (host, kv, bytes, platform) in &combos {
        let name = label(host, kv, bytes, platform);
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

/// The Python tools of the OpenAPI and browser tests (`tests/web/requirements.txt`: schemathesis,
/// openapi-spec-validator, selenium) in a venv under `target/web-tools`, made or brought up to
/// date from PyPI. `None` (with the reason) when that fails; the tests then skip, or fail under CI.
fn web_tools(root: &Path) -> Option<PathBuf> {
    let venv = root.join("target").join("web-tools");
    let requirements = root.join("tests").join("web").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).ok()?;
    let stamp = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Some(venv);
    }
    let python = std::env::var_os("PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"));
    let mut create = Command::new(&python);
    create.current_dir(root).args(["-m", "venv", "--clear"]).arg(&venv);
    let mut install = Command::new(venv.join("bin").join("pip"));
    install.current_dir(root).args(["install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements);
    match run(create).and_then(|()| run(install)) {
        Ok(()) => {
            let _ = std::fs::write(&stamp, wanted);
            Some(venv)
        }
        Err(e) => {
            eprintln!("xtask: the OpenAPI and browser tests' Python tools could not be installed ({e:#}): they skip, and fail under CI");
            None
        }
    }
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

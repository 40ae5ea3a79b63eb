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
//! - [`Origin`] is a tiny local HTTP origin for outbound tests; [`RedisServer`] runs a throwaway
//!   `redis-server` when one is installed.
//!
//! Nothing here talks to anything but 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::Value as Json;

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

fn target_dir() -> PathBuf {
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
fn resolve_from_root(path: PathBuf) -> PathBuf {
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

// ---------------------------------------------------------------------------------------------
// Which host and store the app's end-to-end suites run on
// ---------------------------------------------------------------------------------------------

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

/// What the app's end-to-end suites run on, read once from the environment:
/// `DOWNLINK_TEST_HOST` = `devhost` (default) | `spin`, `DOWNLINK_TEST_KV` = `sqlite` (default) |
/// `redis`. Only [`DevHost::selected`] (and so [`app_builder`] / [`TestApp`]) follows it;
/// [`DevHost::builder`] is always the dev host on SQLite (the dev host's own tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestEnv {
    pub host: HostKind,
    pub kv: KvKind,
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
        TestEnv { host, kv }
    })
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

fn spin_bin_required() -> PathBuf {
    let bin = spin_bin().unwrap_or_else(|| {
        panic!("DOWNLINK_TEST_HOST=spin, but no Spin CLI: set SPIN_BIN to its path or put `spin` on PATH")
    });
    assert!(bin.is_file(), "SPIN_BIN={} is not a file", bin.display());
    bin
}

// ---------------------------------------------------------------------------------------------
// Host process (dev host or Spin)
// ---------------------------------------------------------------------------------------------

/// How to start a host (`devhost up` or `spin up`: same manifest, variables, state dir,
/// environment and runtime config).
pub struct DevHostBuilder {
    host: HostKind,
    kv: KvKind,
    manifest: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    state_dir: StateDir,
    runtime_config: Option<PathBuf>,
    /// The Redis server of a [`HostState`] (its URL and port), instead of a fresh one.
    redis: Option<(String, u16)>,
}

enum StateDir {
    /// A fresh tempdir passed as `--state-dir`.
    Fresh,
    /// No `--state-dir` argument at all (the host's default, `.spin/` beside the manifest).
    Omitted,
    /// This directory (owned by the test, e.g. a [`HostState`]).
    Given(PathBuf),
}

/// Why a host did not come up.
#[derive(Debug)]
pub struct StartupFailure {
    /// Exit status, if the process exited (None: it was still running at the deadline).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub reason: String,
    /// Which host it was.
    pub host: HostKind,
}

impl std::fmt::Display for StartupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} did not start: {} (status {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.host, self.reason, self.status, self.stdout, self.stderr
        )
    }
}

/// A state directory that outlives one host (to restart on the same state) and, with
/// `DOWNLINK_TEST_KV=redis`, the Redis server that holds its store. Pass it with
/// [`DevHostBuilder::state`]; removed (Redis stopped) on drop.
pub struct HostState {
    dir: TempDir,
    redis: Option<RedisServer>,
}

impl HostState {
    /// A fresh one for the selected store ([`test_env`]).
    pub fn new(prefix: &str) -> HostState {
        let redis = (test_env().kv == KvKind::Redis).then(|| RedisServer::start_for_app(prefix));
        HostState { dir: tempdir(prefix), redis }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl DevHostBuilder {
    /// Add one argument after the standard ones.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// `--variable name=value`.
    pub fn variable(self, name: &str, value: &str) -> Self {
        self.arg("--variable").arg(format!("{name}={value}"))
    }

    /// `--runtime-config-file path`. With `DOWNLINK_TEST_KV=redis` and no
    /// `[key_value_store.default]` in it, the host gets a copy with the Redis store added.
    pub fn runtime_config(mut self, path: &Path) -> Self {
        self.runtime_config = Some(path.to_path_buf());
        self
    }

    /// An environment variable for the host process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Run the host in this working directory.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Do not pass `--state-dir` (test the default location).
    pub fn without_state_dir(mut self) -> Self {
        self.state_dir = StateDir::Omitted;
        self
    }

    /// `--state-dir <state>` and, with Redis, `state`'s server: for a restart on the same
    /// state. `state` must outlive the host.
    pub fn state(mut self, state: &HostState) -> Self {
        self.state_dir = StateDir::Given(state.path().to_path_buf());
        self.redis = state.redis.as_ref().map(|r| (r.url(), r.port()));
        self
    }

    /// Spawn `devhost up ...` / `spin up ...` and wait until it serves.
    pub fn start(self) -> Result<DevHost, StartupFailure> {
        let bin = match self.host {
            HostKind::DevHost => devhost_bin(),
            HostKind::Spin => spin_bin_required(),
        };
        let state_tmp = match self.state_dir {
            StateDir::Fresh => Some(tempdir(match self.host {
                HostKind::DevHost => "devhost-state",
                HostKind::Spin => "spin-state",
            })),
            _ => None,
        };
        let state_path: Option<PathBuf> = match &self.state_dir {
            StateDir::Fresh => state_tmp.as_ref().map(|t| t.path().to_path_buf()),
            StateDir::Given(p) => Some(p.clone()),
            StateDir::Omitted => None,
        };

        // The default store: the one the test's runtime config defines (the test inspects it
        // itself), else Redis when selected (added to a copy of the test's runtime config), else
        // the host's SQLite file. A runtime config that cannot be read goes to the host as is.
        let test_rtc = self.runtime_config.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        let rtc_has_default = test_rtc.as_deref().is_some_and(defines_default_store);
        let mut redis_owned = None;
        let mut rtc_written = None;
        let mut rtc_path = self.runtime_config.clone();
        let store = if rtc_has_default || (self.runtime_config.is_some() && test_rtc.is_none()) {
            None
        } else if self.kv == KvKind::Redis {
            let (url, port) = match &self.redis {
                Some(shared) => shared.clone(),
                None => {
                    let server = RedisServer::start_for_app("app start");
                    let shared = (server.url(), server.port());
                    redis_owned = Some(server);
                    shared
                }
            };
            let mut text = test_rtc.clone().unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("\n[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"));
            // Beside the test's own file (the hosts resolve relative paths in it from its
            // directory), else in a tempdir.
            let written = match &self.runtime_config {
                Some(original) => {
                    let dir = original.parent().unwrap_or(Path::new("."));
                    let file = tempfile::Builder::new()
                        .prefix(".redis-runtime-config-")
                        .suffix(".toml")
                        .tempfile_in(dir)
                        .expect("create runtime config");
                    RuntimeConfigFile::File(file.into_temp_path())
                }
                None => {
                    let dir = tempdir("runtime-config");
                    let path = dir.path().join("runtime-config.toml");
                    RuntimeConfigFile::Dir { _dir: dir, path }
                }
            };
            std::fs::write(written.path(), text).expect("write runtime config");
            rtc_path = Some(written.path().to_path_buf());
            rtc_written = Some(written);
            Some(KvStore::Redis(port))
        } else {
            let dir = match &state_path {
                Some(p) => p.clone(),
                None => self.manifest.parent().unwrap_or(Path::new(".")).join(".spin"),
            };
            Some(KvStore::Sqlite(dir.join("sqlite_key_value.db")))
        };

        // The dev host binds 127.0.0.1:0 and prints the port; Spin gets a free port picked here
        // (retried when something else took it meanwhile).
        let attempts = match self.host {
            HostKind::DevHost => 1,
            HostKind::Spin => 5,
        };
        let mut attempt = 0;
        let launched = loop {
            attempt += 1;
            let listen = match self.host {
                HostKind::DevHost => "127.0.0.1:0".to_string(),
                HostKind::Spin => format!("127.0.0.1:{}", free_port()),
            };
            match self.launch(&bin, &listen, state_path.as_deref(), rtc_path.as_deref()) {
                Ok(launched) => break launched,
                Err(failure) if attempt < attempts && failure.is_port_clash() => {
                    eprintln!("{}: {listen} was taken, retrying on another port", self.host);
                }
                Err(failure) => return Err(failure),
            }
        };
        Ok(DevHost {
            kind: self.host,
            child: launched.child,
            base: launched.base,
            addr: launched.addr,
            _state_tmp: state_tmp,
            state_path,
            store,
            manifest: self.manifest,
            stdout: launched.stdout,
            stderr: launched.stderr,
            threads: launched.threads,
            agent: agent(),
            _redis: redis_owned,
            _runtime_config: rtc_written,
        })
    }

    /// One try: spawn the host on `listen`, wait for its `Serving http://...` line (Spin: then
    /// for its health endpoint).
    fn launch(
        &self,
        bin: &Path,
        listen: &str,
        state: Option<&Path>,
        runtime_config: Option<&Path>,
    ) -> Result<Launched, StartupFailure> {
        let mut cmd = Command::new(bin);
        cmd.arg("up").arg("--from").arg(&self.manifest).arg("--listen").arg(listen);
        if let Some(state) = state {
            cmd.arg("--state-dir").arg(state);
        }
        if let Some(rtc) = runtime_config {
            cmd.arg("--runtime-config-file").arg(rtc);
        }
        cmd.args(&self.args);
        // Hermetic: no SPIN_VARIABLE_* (nor Spin's own settings) from the outer environment.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            let spin_setting = matches!(
                &*name,
                "SPIN_ALWAYS_BUILD" | "SPIN_LOG_DIR" | "RUNTIME_CONFIG_FILE" | "SPIN_HTTP_LISTEN_ADDR"
            );
            if name.starts_with("SPIN_VARIABLE_") || spin_setting {
                cmd.env_remove(key);
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());

        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));

        let stdout_buf = Arc::new(Mutex::new(String::new()));
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = mpsc::channel::<String>();

        let out_thread = {
            let stdout = child.stdout.take().expect("piped stdout");
            let buf = stdout_buf.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let mut sent = false;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            buf.lock().unwrap().push_str(&line);
                            if !sent {
                                if let Some(url) = parse_serving_line(&line) {
                                    sent = true;
                                    let _ = url_tx.send(url);
                                }
                            }
                        }
                    }
                }
            })
        };
        let err_thread = {
            let stderr = child.stderr.take().expect("piped stderr");
            let buf = stderr_buf.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n])),
                    }
                }
            })
        };

        let host = self.host;
        let deadline = Instant::now() + startup_timeout();
        let failure = |child: &mut Child,
                       status: Option<ExitStatus>,
                       reason: String,
                       threads: Vec<thread::JoinHandle<()>>,
                       stdout_buf: &Arc<Mutex<String>>,
                       stderr_buf: &Arc<Mutex<String>>| {
            // Still running (at the deadline, or half up): kill it; the status is ours, not its.
            // Spin's trigger process may outlive its `spin up`: kill the whole tree.
            kill_tree(child);
            for t in threads {
                let _ = t.join();
            }
            StartupFailure {
                status,
                stdout: stdout_buf.lock().unwrap().clone(),
                stderr: stderr_buf.lock().unwrap().clone(),
                reason,
                host,
            }
        };

        loop {
            match url_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(base) => {
                    let addr: SocketAddr = base
                        .trim_start_matches("http://")
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address in Serving line {base:?}: {e}"));
                    let threads = vec![out_thread, err_thread];
                    if host == HostKind::Spin {
                        // Spin prints the line once it listens; make sure it answers too.
                        let health = format!("{base}/.well-known/spin/health");
                        let probe = client_with_timeout(Duration::from_secs(5));
                        let healthy =
                            poll_until(deadline.saturating_duration_since(Instant::now()), || {
                                match http_call(&probe, "GET", &health, &[], b"") {
                                    Ok(r) if r.status == 200 => Some(true),
                                    _ if matches!(child.try_wait(), Ok(Some(_))) => Some(false),
                                    _ => None,
                                }
                            });
                        if healthy != Some(true) {
                            let status = child.try_wait().ok().flatten();
                            return Err(failure(
                                &mut child,
                                status,
                                format!("printed Serving {base} but {health} did not answer 200"),
                                threads,
                                &stdout_buf,
                                &stderr_buf,
                            ));
                        }
                    }
                    return Ok(Launched { child, base, addr, stdout: stdout_buf, stderr: stderr_buf, threads });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without a Serving line: wait for the exit.
                    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
                    return Err(failure(
                        &mut child,
                        status,
                        "stdout closed before a `Serving http://...` line".into(),
                        vec![out_thread, err_thread],
                        &stdout_buf,
                        &stderr_buf,
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader a moment in case the line raced the exit.
                if let Ok(base) = url_rx.recv_timeout(Duration::from_millis(200)) {
                    return Err(failure(
                        &mut child,
                        Some(status),
                        format!("printed Serving {base} but exited"),
                        vec![out_thread, err_thread],
                        &stdout_buf,
                        &stderr_buf,
                    ));
                }
                return Err(failure(
                    &mut child,
                    Some(status),
                    "exited before serving".into(),
                    vec![out_thread, err_thread],
                    &stdout_buf,
                    &stderr_buf,
                ));
            }
            if Instant::now() > deadline {
                return Err(failure(
                    &mut child,
                    None,
                    format!("no Serving line within {:?}", startup_timeout()),
                    vec![out_thread, err_thread],
                    &stdout_buf,
                    &stderr_buf,
                ));
            }
        }
    }
}

impl StartupFailure {
    /// Did it fail because its listen address was taken?
    fn is_port_clash(&self) -> bool {
        let text = format!("{}\n{}", self.stdout, self.stderr);
        text.contains("already in use") || text.contains("os error 98")
    }
}

/// A spawned host that serves.
struct Launched {
    child: Child,
    base: String,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Does this runtime config define the `default` key-value store?
fn defines_default_store(text: &str) -> bool {
    text.lines().any(|line| {
        let compact: String = line.split('#').next().unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
        compact == "[key_value_store.default]" || compact == "[key_value_store.\"default\"]"
    })
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            kill_tree(child);
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of every descendant of `pid` (from `/proc`; empty where there is none).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
                parents.push((child, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// SIGKILL `child` and every process under it (`spin up` runs its trigger as a child process,
/// which a kill of `spin up` alone would leave serving), then reap `child`.
fn kill_tree(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        for pid in descendants(child.id()) {
            // SAFETY: kill(2) with a pid we just found under our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `Serving http://127.0.0.1:PORT` → `http://127.0.0.1:PORT` (terminal colour codes ignored).
fn parse_serving_line(line: &str) -> Option<String> {
    let plain = strip_ansi(line);
    let idx = plain.find("Serving")?;
    let rest = plain[idx + "Serving".len()..].trim_start();
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_string())
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running host (dev host or Spin); killed (with everything it started) and reaped on drop.
pub struct DevHost {
    kind: HostKind,
    child: Child,
    base: String,
    addr: SocketAddr,
    /// A fresh state dir, removed on drop (after the host is gone).
    _state_tmp: Option<TempDir>,
    state_path: Option<PathBuf>,
    store: Option<KvStore>,
    manifest: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<thread::JoinHandle<()>>,
    agent: ureq::Agent,
    /// The Redis server of this start (declared after `child`: dropped after the host is gone).
    _redis: Option<RedisServer>,
    _runtime_config: Option<RuntimeConfigFile>,
}

/// A runtime config the harness wrote (removed on drop).
enum RuntimeConfigFile {
    /// Beside the test's own runtime config.
    File(tempfile::TempPath),
    /// In a tempdir of its own.
    Dir { _dir: TempDir, path: PathBuf },
}

impl RuntimeConfigFile {
    fn path(&self) -> &Path {
        match self {
            RuntimeConfigFile::File(path) => path,
            RuntimeConfigFile::Dir { path, .. } => path,
        }
    }
}

impl DevHost {
    /// Builder for `devhost up --from <manifest>` on the dev host's SQLite store, whatever the
    /// environment selects (the dev host's own tests).
    pub fn builder(manifest: impl AsRef<Path>) -> DevHostBuilder {
        DevHostBuilder {
            host: HostKind::DevHost,
            kv: KvKind::Sqlite,
            manifest: manifest.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            state_dir: StateDir::Fresh,
            runtime_config: None,
            redis: None,
        }
    }

    /// Builder for the host and store the environment selects ([`test_env`]): `devhost up` or
    /// `spin up`, SQLite or Redis.
    pub fn selected(manifest: impl AsRef<Path>) -> DevHostBuilder {
        let env = test_env();
        DevHostBuilder { host: env.host, kv: env.kv, ..DevHost::builder(manifest) }
    }

    /// Start with the given extra arguments; panics (with the dev host's output) on failure.
    pub fn start(manifest: impl AsRef<Path>, args: &[&str]) -> DevHost {
        let mut b = DevHost::builder(manifest);
        for a in args {
            b = b.arg(*a);
        }
        b.start().unwrap_or_else(|f| panic!("{f}"))
    }

    /// Which host this is.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `--state-dir` passed to the host (None with `without_state_dir`).
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_path.as_deref()
    }

    pub fn manifest(&self) -> &Path {
        &self.manifest
    }

    /// The app's `default` key-value store, to inspect or seed it directly (SQLite file or
    /// Redis server). Panics when the test's own runtime config defines that store.
    pub fn kv(&self) -> &KvStore {
        self.store.as_ref().expect("the test's runtime config defines the default store; inspect it directly")
    }

    /// What component `component` wrote to stderr so far (`<state-dir>/logs/<component>_stderr.txt`,
    /// where both hosts write it; empty when there is none).
    pub fn component_stderr(&self, component: &str) -> String {
        self.state_path
            .as_ref()
            .and_then(|s| std::fs::read_to_string(s.join("logs").join(format!("{component}_stderr.txt"))).ok())
            .unwrap_or_default()
    }

    /// Everything the host printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the host printed on stderr so far (both hosts echo component output there).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.request("PUT", path, &[], body)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, &[], body)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], b"")
    }

    /// One HTTP exchange (timeout [`HTTP_TIMEOUT`]); panics on transport errors with the host's
    /// stderr attached.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        match http_call(&self.agent, method, &self.url(path), headers, body) {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} failed: {e}\n--- {} stderr ---\n{}", self.kind, self.stderr()),
        }
    }

    /// Like [`DevHost::request`] but returns transport errors.
    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Resp, String> {
        http_call(&self.agent, method, &self.url(path), headers, body)
    }

    /// Send raw bytes (a whole HTTP/1.1 request) and read the response until the server closes.
    pub fn raw(&self, request: &str) -> Resp {
        raw_request(self.addr, request.as_bytes())
            .unwrap_or_else(|e| panic!("raw request failed: {e}\n--- stderr ---\n{}", self.stderr()))
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app's key-value store, seen directly
// ---------------------------------------------------------------------------------------------

/// The app's `default` store behind the host: the SQLite file (Spin's schema
/// `spin_key_value(store, key, value)`, which both hosts use) or the Redis server (plain keys,
/// as both hosts store them).
#[derive(Clone, Debug)]
pub enum KvStore {
    Sqlite(PathBuf),
    Redis(u16),
}

impl KvStore {
    fn sqlite(path: &Path) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.value_sizes().into_iter().map(|(k, _)| k).collect()
    }

    /// Every key with the size of its value, sorted by key.
    pub fn value_sizes(&self) -> Vec<(String, usize)> {
        match self {
            KvStore::Sqlite(path) => {
                let conn = KvStore::sqlite(path);
                let mut stmt = conn
                    .prepare("SELECT key, length(value) FROM spin_key_value WHERE store = 'default' ORDER BY key")
                    .unwrap();
                stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as usize)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            KvStore::Redis(port) => {
                let mut conn = RedisConn::open(*port);
                let keys = match conn.call(&[b"KEYS", b"*"]) {
                    RespValue::Array(Some(items)) => items
                        .into_iter()
                        .map(|v| match v {
                            RespValue::Bulk(Some(k)) => String::from_utf8_lossy(&k).into_owned(),
                            other => panic!("redis KEYS: unexpected item {other:?}"),
                        })
                        .collect::<Vec<_>>(),
                    other => panic!("redis KEYS: unexpected reply {other:?}"),
                };
                let mut out: Vec<(String, usize)> = keys
                    .into_iter()
                    .map(|k| match conn.call(&[b"STRLEN", k.as_bytes()]) {
                        RespValue::Int(n) => (k, n as usize),
                        other => panic!("redis STRLEN {k}: unexpected reply {other:?}"),
                    })
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            KvStore::Sqlite(path) => KvStore::sqlite(path)
                .query_row("SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1", [key], |row| {
                    row.get(0)
                })
                .ok(),
            KvStore::Redis(port) => match RedisConn::open(*port).call(&[b"GET", key.as_bytes()]) {
                RespValue::Bulk(value) => value,
                other => panic!("redis GET {key}: unexpected reply {other:?}"),
            },
        }
    }

    /// Redis's `connected_clients` (`INFO clients`); `None` for the SQLite store.
    pub fn redis_connected_clients(&self) -> Option<u64> {
        let KvStore::Redis(port) = self else { return None };
        let info = match RedisConn::open(*port).call(&[b"INFO", b"clients"]) {
            RespValue::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("redis INFO clients: unexpected reply {other:?}"),
        };
        let line = info.lines().find_map(|l| l.strip_prefix("connected_clients:"));
        Some(line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no connected_clients in {info:?}")))
    }

    /// Set `key` to `value` behind the app's back.
    pub fn set(&self, key: &str, value: &[u8]) {
        match self {
            KvStore::Sqlite(path) => {
                KvStore::sqlite(path)
                    .execute(
                        "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2) \
                         ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![key, value],
                    )
                    .unwrap_or_else(|e| panic!("sqlite set {key}: {e}"));
            }
            KvStore::Redis(port) => match RedisConn::open(*port).call(&[b"SET", key.as_bytes(), value]) {
                RespValue::Simple(ok) if ok == "OK" => {}
                other => panic!("redis SET {key}: unexpected reply {other:?}"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client helpers
// ---------------------------------------------------------------------------------------------

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response (status {}) is not JSON: {e}: {:?}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .max_redirects(0)
        .proxy(None)
        .build()
        .into()
}

/// A fresh client with the harness's settings (no proxy, no redirects, 30 s timeout).
pub fn client() -> ureq::Agent {
    agent()
}

fn http_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = lowercase_headers(response.headers());
    let body = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().map_err(|e| e.to_string())?;
    Ok(Resp { status, headers, body, elapsed: start.elapsed() })
}

/// Write `request` to `addr` and read the response until the server closes the connection (send
/// `Connection: close`). Handles `Content-Length` and chunked bodies.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Result<Resp, String> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let mut head_end = None;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        if let Some(h) = head_end {
            let body = &raw[h..];
            if let Some(n) = content_length {
                if body.len() >= n {
                    break;
                }
            } else if chunked && body.windows(5).any(|w| w == b"0\r\n\r\n") {
                break;
            }
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if head_end.is_none() {
            if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                head_end = Some(pos + 4);
                let head = String::from_utf8_lossy(&raw[..pos]).to_ascii_lowercase();
                for line in head.lines().skip(1) {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.trim() == "content-length" {
                            content_length = v.trim().parse().ok();
                        }
                        if k.trim() == "transfer-encoding" && v.contains("chunked") {
                            chunked = true;
                        }
                    }
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    let h = head_end.ok_or_else(|| format!("no complete response head in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..h]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[h..].to_vec();
    if chunked {
        body = dechunk(&body);
    } else if let Some(n) = content_length {
        body.truncate(n);
    }
    Ok(Resp { status, headers, body, elapsed: start.elapsed() })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..pos]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Headers of an echo JSON (`{"headers": [[name, value], ...]}`): every value of `name`.
pub fn echoed_header_values(echo: &Json, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("echo JSON has no headers array: {echo}"))
        .iter()
        .filter_map(|pair| {
            let k = pair[0].as_str()?;
            (k.eq_ignore_ascii_case(name)).then(|| pair[1].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// The single value of `name` in an echo JSON; panics if absent or repeated.
pub fn echoed_header(echo: &Json, name: &str) -> String {
    let values = echoed_header_values(echo, name);
    assert_eq!(
        values.len(),
        1,
        "expected exactly one `{name}` header in the component's request, got {values:?}; \
         echo: {echo}"
    );
    values.into_iter().next().unwrap()
}

/// Poll `f` every 50 ms until it returns Some or `limit` passes.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encode a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------------------------

pub use tempfile::TempDir;

/// A fresh temporary directory (removed on drop).
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir().expect("create tempdir")
}

// ---------------------------------------------------------------------------------------------
// Local origin server
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP/1.1 origin on 127.0.0.1:0 serving fixed bodies per path (404 otherwise). Counts
/// and records requests; stops on drop.
pub struct Origin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Origin {
    /// Serve `routes` (path → (status, body)).
    pub fn start(routes: &[(&str, u16, &[u8])]) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let routes: HashMap<String, (u16, Vec<u8>)> =
            routes.iter().map(|(p, s, b)| (p.to_string(), (*s, b.to_vec()))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let hits = hits.clone();
            let requests = requests.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let routes = &routes;
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let complete = loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break false,
                            Ok(n) => {
                                head.extend_from_slice(&buf[..n]);
                                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                    break true;
                                }
                                if head.len() > 64 * 1024 {
                                    break false;
                                }
                            }
                        }
                    };
                    if !complete {
                        continue;
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target =
                        head.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").to_string();
                    let path = target.split('?').next().unwrap_or("/").to_string();
                    hits.fetch_add(1, Ordering::SeqCst);
                    requests.lock().unwrap().push(head);
                    let (status, body) = routes.get(&path).cloned().unwrap_or((404, b"origin: not found".to_vec()));
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes());
                    let _ = conn.write_all(&body);
                    let _ = conn.flush();
                    let _ = conn.shutdown(Shutdown::Both);
                }
            })
        };
        Origin { addr, stop, hits, requests, thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Raw request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound and released; racy but fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A throwaway `redis-server` on 127.0.0.1 (no persistence); killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Start one if `redis-server` is on PATH. Without it: panics when `CI` is set (CI must have
    /// Redis), else prints a skip notice and returns None.
    pub fn start_or_skip(test: &str) -> Option<RedisServer> {
        let Some(bin) = find_on_path("redis-server") else {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: redis-server is not on PATH, and CI is set: install Redis");
            }
            eprintln!("SKIPPED {test}: redis-server not on PATH (this test fails when CI is set)");
            return None;
        };
        let dir = tempdir("redis");
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let ready = poll_until(Duration::from_secs(10), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                redis_ping(port).then_some(true)
            });
            if ready == Some(true) {
                return Some(RedisServer { child, port, _dir: dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{test}: redis-server did not come up");
    }

    /// One for an app start under `DOWNLINK_TEST_KV=redis`: there Redis was asked for, so a
    /// missing `redis-server` is an error, never a skip (`cargo xtask test` skips the Redis runs
    /// when it is absent, except under CI).
    pub fn start_for_app(what: &str) -> RedisServer {
        if find_on_path("redis-server").is_none() {
            panic!("{what}: DOWNLINK_TEST_KV=redis, but redis-server is not on PATH (apt-get install redis-server)");
        }
        RedisServer::start_or_skip(what).expect("redis-server is on PATH")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Run one command (inline protocol) and return the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args).expect("redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_ping(port: u16) -> bool {
    redis_command(port, &["PING"]).map(|r| r.starts_with("+PONG")).unwrap_or(false)
}

/// One reply of the Redis protocol (RESP2).
#[derive(Debug)]
enum RespValue {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<RespValue>>),
}

/// A minimal Redis client (binary-safe requests, whole replies of any size) for inspecting the
/// app's store.
struct RedisConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisConn {
    fn open(port: u16) -> RedisConn {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis on {addr}: {e}"));
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
        RedisConn { reader: BufReader::new(stream.try_clone().expect("clone redis stream")), writer: stream }
    }

    /// One command; panics on transport errors and on error replies.
    fn call(&mut self, args: &[&[u8]]) -> RespValue {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&req).unwrap_or_else(|e| panic!("redis write: {e}"));
        match read_resp(&mut self.reader) {
            Ok(RespValue::Error(e)) => panic!("redis {}: {e}", String::from_utf8_lossy(args[0])),
            Ok(v) => v,
            Err(e) => panic!("redis {}: {e}", String::from_utf8_lossy(args[0])),
        }
    }
}

fn read_resp(r: &mut impl BufRead) -> Result<RespValue, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!("truncated reply {:?}", String::from_utf8_lossy(&line)));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || text.parse::<i64>().map_err(|e| format!("bad length {text:?}: {e}"));
    Ok(match line[0] {
        b'+' => RespValue::Simple(text),
        b'-' => RespValue::Error(text),
        b':' => RespValue::Int(number()?),
        b'$' => {
            let n = number()?;
            if n < 0 {
                RespValue::Bulk(None)
            } else {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data).map_err(|e| e.to_string())?;
                data.truncate(n as usize);
                RespValue::Bulk(Some(data))
            }
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                RespValue::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                RespValue::Array(Some(items))
            }
        }
        other => return Err(format!("unknown reply type {:?}", other as char)),
    })
}

fn redis_command(port: u16, args: &[&str]) -> Result<String, String> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Helpers for the app's own end-to-end tests (the real spin.toml)
// ---------------------------------------------------------------------------------------------

/// The application manifest at the workspace root (`spin.toml`).
pub fn app_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

/// A client with the harness's settings but its own overall timeout (for large bodies).
pub fn client_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None)
        .build()
        .into()
}

/// One HTTP exchange with `agent` (see [`client_with_timeout`]); bodies up to 64 MiB are read.
pub fn http_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    http_call(agent, method, url, headers, body)
}

/// `len` deterministic pseudo-random bytes (xorshift64*), different for every `seed`.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Percent-encode a `/`-separated path segment by segment (the `/` separators stay).
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Resp {
    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_str()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// A configurable origin for the remote-download tests
// ---------------------------------------------------------------------------------------------

/// Size of one block of a generated body (see [`generated_block`]).
pub const GENERATED_BLOCK: usize = 64 * 1024;

/// Block `index` of the deterministic body generated for `seed`: every block is
/// [`GENERATED_BLOCK`] bytes of [`pseudo_random_bytes`], different per seed and index. A body of
/// `len` bytes is the blocks in order, truncated to `len`.
pub fn generated_block(seed: u64, index: u64) -> Vec<u8> {
    pseudo_random_bytes(seed.wrapping_mul(0x0001_0000_0001).wrapping_add(index).wrapping_add(1), GENERATED_BLOCK)
}

/// Feed the generated body (`seed`, `len`) to `sink` block by block (for hashing without
/// holding it all).
pub fn for_each_generated_block(seed: u64, len: u64, mut sink: impl FnMut(&[u8])) {
    let mut sent = 0u64;
    let mut index = 0u64;
    while sent < len {
        let block = generated_block(seed, index);
        let take = (len - sent).min(block.len() as u64) as usize;
        sink(&block[..take]);
        sent += take as u64;
        index += 1;
    }
}

/// The whole generated body (`seed`, `len`) in memory (small bodies).
pub fn generated_bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    for_each_generated_block(seed, len, |b| out.extend_from_slice(b));
    out
}

/// A gate a [`Route::Gated`] / [`Route::Silent`] handler waits on until [`Gate::release`].
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Let every waiting (and future) handler go on.
    pub fn release(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    pub fn is_released(&self) -> bool {
        *self.0 .0.lock().unwrap()
    }

    /// Wait until released (true), or until `stop` is set or `limit` passes (false).
    fn wait(&self, stop: &AtomicBool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.0;
        let mut released = lock.lock().unwrap();
        while !*released {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                return false;
            }
            released = cv.wait_timeout(released, Duration::from_millis(50)).unwrap().0;
        }
        true
    }
}

/// What a [`TestOrigin`] answers on one path. Every response carries `Connection: close`.
#[derive(Clone)]
pub enum Route {
    /// `status` with `body` and a `Content-Length`.
    Fixed { status: u16, body: Arc<Vec<u8>> },
    /// `200` with `Transfer-Encoding: chunked` (no `Content-Length`), in pieces of `piece`
    /// bytes.
    Chunked { body: Arc<Vec<u8>>, piece: usize },
    /// `200` with the generated body (`seed`, `len`, see [`generated_block`]), produced on the
    /// fly; with a `Content-Length` unless `chunked`; at most `bytes_per_sec` when set.
    Generated { seed: u64, len: u64, bytes_per_sec: Option<u64>, chunked: bool },
    /// `200` with `Content-Length: len`, then one byte (`b'x'`) every `interval`.
    Trickle { len: u64, interval: Duration },
    /// `200` with `Content-Length: len`, `sent` bytes of the generated body (seed 0), then the
    /// connection is closed: with a TCP RST (`SO_LINGER` 0) when `rst`, else a plain FIN.
    Cut { len: u64, sent: u64, rst: bool },
    /// `status` with `Location: location` (verbatim, may be relative) and a short body.
    Redirect { status: u16, location: String },
    /// `200` with `Content-Length: body.len()`: sends the head and `first` bytes, waits for
    /// `gate` (at most 120 s), then the rest.
    Gated { body: Arc<Vec<u8>>, first: usize, gate: Gate },
    /// Reads the request and answers nothing until `gate` is released (at most 120 s), then
    /// closes the connection without a response.
    Silent { gate: Gate },
}

impl Route {
    /// `200` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route::Fixed { status: 200, body: Arc::new(body.into()) }
    }

    /// `status` with a short text body.
    pub fn status(status: u16) -> Route {
        Route::Fixed { status, body: Arc::new(format!("origin status {status}\n").into_bytes()) }
    }

    /// `200`, chunked, pieces of 16 KiB.
    pub fn chunked(body: impl Into<Vec<u8>>) -> Route {
        Route::Chunked { body: Arc::new(body.into()), piece: 16 * 1024 }
    }

    pub fn redirect(status: u16, location: impl Into<String>) -> Route {
        Route::Redirect { status, location: location.into() }
    }

    /// Generated body with Content-Length, unthrottled.
    pub fn generated(seed: u64, len: u64) -> Route {
        Route::Generated { seed, len, bytes_per_sec: None, chunked: false }
    }

    /// Generated body with Content-Length (or chunked), at `bytes_per_sec`.
    pub fn throttled(seed: u64, len: u64, bytes_per_sec: u64, chunked: bool) -> Route {
        Route::Generated { seed, len, bytes_per_sec: Some(bytes_per_sec), chunked }
    }

    pub fn gated(body: impl Into<Vec<u8>>, first: usize, gate: &Gate) -> Route {
        Route::Gated { body: Arc::new(body.into()), first, gate: gate.clone() }
    }
}

/// One request a [`TestOrigin`] received.
#[derive(Clone, Debug)]
pub struct OriginRequest {
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// Path without the query.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

struct OriginShared {
    routes: Mutex<HashMap<String, Route>>,
    requests: Mutex<Vec<OriginRequest>>,
    stop: AtomicBool,
    /// Connections currently being served.
    open: AtomicUsize,
    /// Bytes of response bodies written, all connections.
    body_bytes: std::sync::atomic::AtomicU64,
}

/// A configurable HTTP/1.1 origin on 127.0.0.1:0: a thread per connection, routes by exact path
/// (unknown paths → `404`), one response per connection (`Connection: close`). Records every
/// request. On drop it stops accepting, wakes every waiting handler and joins all threads (each
/// write has a 10 s timeout, so shutdown is bounded).
pub struct TestOrigin {
    addr: SocketAddr,
    shared: Arc<OriginShared>,
    accept_thread: Option<thread::JoinHandle<()>>,
    conn_threads: Arc<Mutex<Vec<thread::JoinHandle<()>>>>,
}

impl TestOrigin {
    /// An origin serving `routes` (more can be added with [`TestOrigin::route`]).
    pub fn start(routes: Vec<(&str, Route)>) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test origin");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(OriginShared {
            routes: Mutex::new(routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect()),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            body_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let conn_threads: Arc<Mutex<Vec<thread::JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let accept_thread = {
            let shared = shared.clone();
            let conn_threads = conn_threads.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let handle = thread::spawn(move || {
                        serve_origin_connection(conn, &shared);
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                    });
                    let mut threads = conn_threads.lock().unwrap();
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            })
        };
        TestOrigin { addr, shared, accept_thread: Some(accept_thread), conn_threads }
    }

    /// Add or replace the route of `path`.
    pub fn route(&self, path: &str, route: Route) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), route);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<OriginRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests for `path` (query ignored) arrived.
    pub fn hits(&self, path: &str) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.path == path).count()
    }

    /// Requests of any path.
    pub fn total_hits(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Connections being served right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Response body bytes written so far, all connections.
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = self.conn_threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn serve_origin_connection(mut conn: TcpStream, shared: &OriginShared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_nodelay(true);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                if head.len() > 64 * 1024 {
                    return;
                }
            }
        }
    }
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    shared.requests.lock().unwrap().push(OriginRequest {
        method: method.clone(),
        target,
        path: path.clone(),
        headers,
        at: Instant::now(),
    });
    let route = shared.routes.lock().unwrap().get(&path).cloned().unwrap_or_else(|| Route::status(404));
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let reset = matches!(route, Route::Cut { rst: true, .. });
    let _ = respond_origin(&mut conn, route, head_only, shared);
    if reset {
        // SO_LINGER 0 is set: closing now sends an RST (no FIN first).
        drop(conn);
        return;
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
    // Drain briefly so the close is a FIN, not an RST for unread request bytes.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.read(&mut buf);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn write_head(conn: &mut TcpStream, status: u16, extra: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\nconnection: close\r\n", reason(status));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
}

/// Write `data`, counting it; stops early (error) when the origin stops.
fn write_counted(conn: &mut TcpStream, data: &[u8], shared: &OriginShared) -> std::io::Result<()> {
    if shared.stop.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("origin stopping"));
    }
    conn.write_all(data)?;
    shared.body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(())
}

fn respond_origin(conn: &mut TcpStream, route: Route, head_only: bool, shared: &OriginShared) -> std::io::Result<()> {
    let octets = ("content-type", "application/octet-stream".to_string());
    match route {
        Route::Fixed { status, body } => {
            write_head(conn, status, &[octets, ("content-length", body.len().to_string())])?;
            if !head_only {
                write_counted(conn, &body, shared)?;
            }
        }
        Route::Chunked { body, piece } => {
            write_head(conn, 200, &[octets, ("transfer-encoding", "chunked".into())])?;
            if !head_only {
                for part in body.chunks(piece.max(1)) {
                    conn.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                    write_counted(conn, part, shared)?;
                    conn.write_all(b"\r\n")?;
                }
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Route::Generated { seed, len, bytes_per_sec, chunked } => {
            let framing = if chunked {
                ("transfer-encoding", "chunked".to_string())
            } else {
                ("content-length", len.to_string())
            };
            write_head(conn, 200, &[octets, framing])?;
            if head_only {
                return Ok(());
            }
            let started = Instant::now();
            let piece = match bytes_per_sec {
                Some(rate) => (rate / 20).clamp(1, GENERATED_BLOCK as u64) as usize,
                None => GENERATED_BLOCK,
            };
            let mut sent = 0u64;
            let mut index = 0u64;
            while sent < len {
                let block = generated_block(seed, index);
                index += 1;
                let take = (len - sent).min(block.len() as u64) as usize;
                for part in block[..take].chunks(piece) {
                    if let Some(rate) = bytes_per_sec {
                        // Do not get ahead of `rate`.
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        let elapsed = started.elapsed();
                        if due > elapsed {
                            thread::sleep(due - elapsed);
                        }
                    }
                    if chunked {
                        conn.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                    }
                    write_counted(conn, part, shared)?;
                    if chunked {
                        conn.write_all(b"\r\n")?;
                    }
                    sent += part.len() as u64;
                }
            }
            if chunked {
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Route::Trickle { len, interval } => {
            write_head(conn, 200, &[octets, ("content-length", len.to_string())])?;
            if head_only {
                return Ok(());
            }
            for _ in 0..len {
                write_counted(conn, b"x", shared)?;
                conn.flush()?;
                let until = Instant::now() + interval;
                while Instant::now() < until {
                    if shared.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Route::Cut { len, sent, rst } => {
            write_head(conn, 200, &[octets, ("content-length", len.to_string())])?;
            let body = generated_bytes(0, sent.min(len));
            write_counted(conn, &body, shared)?;
            conn.flush()?;
            // Let the bytes leave before the connection dies.
            thread::sleep(Duration::from_millis(200));
            if rst {
                let _ = socket2::SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
                // The caller drops the stream without a shutdown: that sends the RST.
                return Err(std::io::Error::other("reset"));
            }
        }
        Route::Redirect { status, location } => {
            let body = format!("redirect to {location}\n");
            write_head(
                conn,
                status,
                &[
                    ("location", location),
                    ("content-type", "text/plain".into()),
                    ("content-length", body.len().to_string()),
                ],
            )?;
            if !head_only {
                conn.write_all(body.as_bytes())?;
            }
        }
        Route::Gated { body, first, gate } => {
            write_head(conn, 200, &[octets, ("content-length", body.len().to_string())])?;
            if head_only {
                return Ok(());
            }
            let first = first.min(body.len());
            write_counted(conn, &body[..first], shared)?;
            conn.flush()?;
            if !gate.wait(&shared.stop, Duration::from_secs(120)) {
                return Ok(());
            }
            write_counted(conn, &body[first..], shared)?;
        }
        Route::Silent { gate } => {
            gate.wait(&shared.stop, Duration::from_secs(120));
        }
    }
    Ok(())
}

/// One exchange whose response body is streamed to `sink` instead of being held (for bodies of
/// any size). Returns the response with an empty `body`, and the number of body bytes.
pub fn http_request_streaming(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    mut sink: impl FnMut(&[u8]),
) -> Result<(Resp, u64), String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Vec::<u8>::new()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = lowercase_headers(response.headers());
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("reading the body after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sink(&buf[..n]);
    }
    Ok((Resp { status, headers, body: Vec::new(), elapsed: start.elapsed() }, total))
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The deterministic token of principal `name` in test suite `suite`: `dl_` + 64 hex digits.
pub fn token_for(suite: &str, name: &str) -> String {
    format!("dl_{}", sha256_hex(format!("downlink-e2e/{suite}/{name}").as_bytes()))
}

/// The `api_tokens` variable for `(name, scopes)` entries of `suite`: hashes only, never the
/// tokens themselves.
pub fn tokens_config(suite: &str, entries: &[(&str, &[&str])]) -> String {
    let list: Vec<Json> = entries
        .iter()
        .map(|(name, scopes)| {
            serde_json::json!({
                "name": name,
                "sha256": downlink_core::auth::hash_token(&token_for(suite, name)),
                "scopes": scopes,
            })
        })
        .collect();
    Json::Array(list).to_string()
}

/// The `Authorization` value of principal `name` in suite `suite`: `Bearer <token>`.
pub fn bearer_for(suite: &str, name: &str) -> String {
    format!("Bearer {}", token_for(suite, name))
}

/// The real app (`spin.toml`) on the selected host and store ([`DevHost::selected`]) with
/// `api_tokens` = [`tokens_config`]`(suite, entries)`.
pub fn app_builder(suite: &str, entries: &[(&str, &[&str])]) -> DevHostBuilder {
    DevHost::selected(app_manifest()).variable("api_tokens", &tokens_config(suite, entries))
}

// ---------------------------------------------------------------------------------------------
// The real app under test, as seen by one suite's principals
// ---------------------------------------------------------------------------------------------

/// A running host (dev host or Spin, see [`test_env`]) of the real app plus a client with the suite's own timeout; principals
/// are the suite's token names (see [`token_for`]). Suites wrap it with their own helpers.
pub struct TestApp {
    pub host: DevHost,
    pub agent: ureq::Agent,
    suite: &'static str,
    /// Failure messages show only this many last lines of the host's stderr (None: all).
    stderr_lines: Option<usize>,
}

impl TestApp {
    /// The real app with suite `suite`'s token `entries` and then `variables` (`name`, `value`).
    pub fn start(
        suite: &'static str,
        entries: &[(&str, &[&str])],
        variables: &[(&str, &str)],
        client_timeout: Duration,
    ) -> TestApp {
        let mut builder = app_builder(suite, entries);
        for (name, value) in variables {
            builder = builder.variable(name, value);
        }
        TestApp::from_builder(suite, builder, client_timeout)
    }

    /// Starts `builder` (panicking with the host's output when it does not come up).
    pub fn from_builder(suite: &'static str, builder: DevHostBuilder, client_timeout: Duration) -> TestApp {
        let host = builder.start().unwrap_or_else(|f| panic!("{f}"));
        TestApp { host, agent: client_with_timeout(client_timeout), suite, stderr_lines: None }
    }

    /// Show only the last `lines` lines of the host's stderr in failure messages.
    pub fn with_stderr_tail(mut self, lines: usize) -> TestApp {
        self.stderr_lines = Some(lines);
        self
    }

    /// The host's stderr as failure messages show it (see [`TestApp::with_stderr_tail`]).
    pub fn stderr_tail(&self) -> String {
        let all = self.host.stderr();
        match self.stderr_lines {
            None => all,
            Some(n) => {
                let lines: Vec<&str> = all.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
        }
    }

    /// The token of principal `name`.
    pub fn token(&self, name: &str) -> String {
        token_for(self.suite, name)
    }

    /// One exchange as `principal` (None: no `Authorization` header); bodies up to 64 MiB.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        principal: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let auth;
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(name) = principal {
            auth = bearer_for(self.suite, name);
            all.push(("Authorization", auth.as_str()));
        }
        all.extend_from_slice(headers);
        http_request(&self.agent, method, &self.host.url(path), &all, body).unwrap_or_else(|e| {
            panic!("{method} {path} failed: {e}\n--- {} stderr ---\n{}", self.host.kind(), self.stderr_tail())
        })
    }

    /// `PUT url` as `principal`, expecting 201 or 200.
    pub fn upload_as(&self, principal: &str, url: &str, data: &[u8]) {
        let resp = self.call("PUT", url, Some(principal), &[], data);
        assert!(resp.status == 201 || resp.status == 200, "PUT {url}: {} {}", resp.status, resp.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Response checks
// ---------------------------------------------------------------------------------------------

/// How much of a body failure messages show by default (see [`short_to`]).
pub const SHORT_LIMIT: usize = 600;

/// `text`, cut to at most `limit` bytes (at a char boundary) plus its full length when longer.
pub fn short_to(text: &str, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    } else {
        text.to_string()
    }
}

/// [`short_to`] with [`SHORT_LIMIT`].
pub fn short(text: &str) -> String {
    short_to(text, SHORT_LIMIT)
}

/// Asserts `resp.status == status`; the message shows the headers and up to `limit` bytes of the
/// body.
pub fn expect_status_to(resp: &Resp, status: u16, what: &str, limit: usize) {
    assert_eq!(
        resp.status,
        status,
        "{what}: expected status {status}, got {} with headers {:?} and body {:?}",
        resp.status,
        resp.headers,
        short_to(&resp.text(), limit)
    );
}

/// [`expect_status_to`] with [`SHORT_LIMIT`].
pub fn expect_status(resp: &Resp, status: u16, what: &str) {
    expect_status_to(resp, status, what, SHORT_LIMIT)
}

/// Status plus the error envelope `{"success":false,"error":CODE,"message":"…"}` (JSON
/// content type, non-empty message); returns the body.
pub fn expect_error(resp: &Resp, status: u16, code: &str, what: &str) -> Json {
    expect_status(resp, status, what);
    let content_type = resp.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: error response content-type is {content_type:?}, expected application/json; body {:?}",
        short(&resp.text())
    );
    let body: Json = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {:?}", short(&resp.text())));
    assert_eq!(body["success"], serde_json::json!(false), "{what}: envelope {body}");
    assert_eq!(body["error"], serde_json::json!(code), "{what}: envelope {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: envelope has no message: {body}");
    body
}

/// The `WWW-Authenticate: Bearer ...` challenge of a 401.
pub fn expect_bearer_challenge(resp: &Resp, what: &str) {
    let challenge = resp
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate; headers {:?}", resp.headers));
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "{what}: WWW-Authenticate is {challenge:?}, expected a Bearer challenge"
    );
}

/// A response's headers as (lower-case name, value) pairs, in order.
fn lowercase_headers(headers: &ureq::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

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

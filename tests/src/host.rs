//! The host process: the dev host or real Spin, started on a free port, killed and reaped on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::*;

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
    storage: StorageKind,
    /// The app variables of a [`HostState`]'s S3 server, instead of a fresh one.
    s3: Option<Vec<(&'static str, String)>>,
}

pub(crate) enum StateDir {
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
    s3: Option<S3Server>,
}

impl HostState {
    /// A fresh one for the selected store ([`test_env`]).
    pub fn new(prefix: &str) -> HostState {
        let redis = (test_env().kv == KvKind::Redis).then(|| RedisServer::start_for_app(prefix));
        let s3 = (test_env().storage == StorageKind::S3).then(|| S3Server::start(prefix));
        HostState { dir: tempdir(prefix), redis, s3 }
    }

    /// A Redis store and an S3 bucket for several hosts at once, whatever the environment
    /// selects (see [`DevHostBuilder::shared_stores`]).
    pub fn shared(prefix: &str) -> HostState {
        let redis = Some(RedisServer::start_for_app(prefix));
        let s3 = Some(S3Server::start(prefix));
        HostState { dir: tempdir(prefix), redis, s3 }
    }

    /// The S3 server holding the app's file bytes, under `DOWNLINK_TEST_STORAGE=s3`.
    pub fn s3(&self) -> Option<&S3Server> {
        self.s3.as_ref()
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
        self.s3 = state.s3.as_ref().map(S3Server::app_variables);
        self
    }

    /// The key-value store (Redis) and bucket of a [`HostState::shared`], with a state dir of
    /// this host's own: one of several hosts serving the same app data.
    pub fn shared_stores(mut self, state: &HostState) -> Self {
        self.kv = KvKind::Redis;
        self.redis = state.redis.as_ref().map(|r| (r.url(), r.port()));
        self.storage = StorageKind::S3;
        self.s3 = state.s3.as_ref().map(S3Server::app_variables);
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

        // File bytes in a bucket when selected: the state's S3 server, else a fresh one. Its
        // variables go first, so a test's own `--variable`s still win.
        let mut s3_owned = None;
        let s3_variables = match (self.storage, &self.s3) {
            (StorageKind::Kv, _) => Vec::new(),
            (StorageKind::S3, Some(shared)) => shared.clone(),
            (StorageKind::S3, None) => {
                let server = S3Server::start("app start");
                let variables = server.app_variables();
                s3_owned = Some(server);
                variables
            }
        };
        let mut args: Vec<String> = Vec::new();
        for (name, value) in &s3_variables {
            args.push("--variable".into());
            args.push(format!("{name}={value}"));
        }
        args.extend(self.args.iter().cloned());

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
            match self.launch(&bin, &listen, &args, state_path.as_deref(), rtc_path.as_deref()) {
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
            agent: client(),
            _redis: redis_owned,
            s3: s3_owned,
            _runtime_config: rtc_written,
        })
    }

    /// One try: spawn the host on `listen`, wait for its `Serving http://...` line (Spin: then
    /// for its health endpoint).
    fn launch(
        &self,
        bin: &Path,
        listen: &str,
        args: &[String],
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
        cmd.args(args);
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
                        let healthy = poll_until(deadline.saturating_duration_since(Instant::now()), || {
                            match http_request(&probe, "GET", &health, &[], b"") {
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
    pub(crate) fn is_port_clash(&self) -> bool {
        let text = format!("{}\n{}", self.stdout, self.stderr);
        text.contains("already in use") || text.contains("os error 98")
    }
}

/// A spawned host that serves.
pub(crate) struct Launched {
    child: Child,
    base: String,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Does this runtime config define the `default` key-value store?
pub(crate) fn defines_default_store(text: &str) -> bool {
    text.lines().any(|line| {
        let compact: String = line.split('#').next().unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
        compact == "[key_value_store.default]" || compact == "[key_value_store.\"default\"]"
    })
}

pub(crate) fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
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
pub(crate) fn kill_tree(child: &mut Child) {
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
pub(crate) fn parse_serving_line(line: &str) -> Option<String> {
    let plain = strip_ansi(line);
    let idx = plain.find("Serving")?;
    let rest = plain[idx + "Serving".len()..].trim_start();
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_string())
}

pub(crate) fn strip_ansi(text: &str) -> String {
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
    /// The S3 server this start got of its own (a [`HostState`]'s is the state's).
    s3: Option<S3Server>,
    _runtime_config: Option<RuntimeConfigFile>,
}

/// A runtime config the harness wrote (removed on drop).
pub(crate) enum RuntimeConfigFile {
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
            storage: StorageKind::Kv,
            s3: None,
        }
    }

    /// Builder for the host and store the environment selects ([`test_env`]): `devhost up` or
    /// `spin up`, SQLite or Redis.
    pub fn selected(manifest: impl AsRef<Path>) -> DevHostBuilder {
        let env = test_env();
        let builder = DevHostBuilder { host: env.host, kv: env.kv, storage: env.storage, ..DevHost::builder(manifest) };
        match env.platform {
            "spin" => builder,
            platform => builder.arg("--platform").arg(platform),
        }
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

    /// The S3 server this host started with, under `DOWNLINK_TEST_STORAGE=s3` (a
    /// [`HostState`]'s server is [`HostState::s3`]).
    pub fn s3(&self) -> Option<&S3Server> {
        self.s3.as_ref()
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
        match http_request(&self.agent, method, &self.url(path), headers, body) {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} failed: {e}\n--- {} stderr ---\n{}", self.kind, self.stderr()),
        }
    }

    /// Like [`DevHost::request`] but returns transport errors.
    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Resp, String> {
        http_request(&self.agent, method, &self.url(path), headers, body)
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

//! `devhost`: runs a Spin application (manifest v2) locally the way `spin up` does, for the
//! features this project uses. Production runs on Spin itself; see the README.

mod app;
mod kv;
mod logs;
mod manifest;
mod outbound;
mod platform;
mod routes;
mod runtime_config;
mod send;
mod server;
mod state;
mod variables;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "devhost", version, about = "Run a Spin application locally (a dev stand-in for `spin up`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application, like `spin up`.
    Up(UpArgs),
    /// Mint a bearer token for Downlink: prints the token (give it to the user) and the entry to
    /// add to the `api_tokens` variable (only its SHA-256 is stored).
    NewToken {
        /// Token name (who it is for); owns prepare ids and bandwidth counters.
        name: String,
        /// Scopes: file.read, file.write, download.create, download.read, admin.
        #[arg(required = true)]
        scopes: Vec<String>,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Run each component's build command first (like `spin up --build`).
    #[arg(long)]
    build: bool,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// State directory (default: `.spin` beside the manifest).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Spin runtime configuration file.
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// Set an application variable (NAME=VALUE); repeatable.
    #[arg(long = "variable", value_parser = variables::parse_pair)]
    variables: Vec<(String, String)>,
    /// Seed the default key-value store (KEY=VALUE); repeatable.
    #[arg(long = "key-value", value_parser = variables::parse_pair)]
    key_values: Vec<(String, String)>,
    /// The deployment target to emulate: `spin` (self-hosted Spin, SpinKube), `wasm-functions`
    /// (Fermyon Wasm Functions) or `fermyon-cloud`: its missing interfaces, handler limit,
    /// body caps, key-value limits and memory cap are enforced (see the README's table).
    #[arg(long, default_value = "spin", value_parser = platform::Platform::parse)]
    platform: platform::Platform,
    /// Override the platform's handler limit, in seconds (tests use a short one).
    #[arg(long)]
    handler_limit_secs: Option<f64>,
    /// Where compiled components are cached (default: `<state dir>/../.spin/devhost-cache`
    /// beside the manifest); `none` disables caching.
    #[arg(long)]
    cache_dir: Option<String>,
}

/// Bodies and key-value values move through the host as buffers of up to 1 MiB, allocated and
/// freed on different threads. glibc's defaults serve such sizes with fresh `mmap`s or trim
/// them from the arenas right after `free`, so every buffer page-faults again (~10 % of the
/// host's CPU in a bulk download). Serving them from the heap and trimming only past 16 MiB
/// of free memory keeps them warm.
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn main() -> Result<()> {
    keep_large_buffers_mapped();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::NewToken { name, scopes } => new_token(&name, &scopes),
        }
    });
    // Guests still running after shutdown are abandoned, as when Spin exits.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Err(e) = &result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn up(args: UpArgs) -> Result<()> {
    let manifest_path = args.from.clone();
    let manifest = manifest::Manifest::load(&manifest_path)?;
    if args.build {
        build(&manifest)?;
    }
    let runtime_config = match &args.runtime_config_file {
        Some(_) if !args.platform.runtime_config() => {
            bail!("{} takes no runtime config file (--runtime-config-file)", args.platform.title())
        }
        Some(path) => runtime_config::RuntimeConfig::load(path)?,
        None => runtime_config::RuntimeConfig::default(),
    };
    let cwd = std::env::current_dir()?;
    let variables = variables::Variables::resolve(&manifest, &args.variables, &|k| std::env::var(k).ok(), &cwd)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| manifest.base_dir.join(".spin"));
    let cache_dir = match args.cache_dir.as_deref() {
        Some("none") => None,
        Some(dir) => Some(std::path::absolute(dir)?),
        None => Some(manifest.base_dir.join(".spin").join("devhost-cache")),
    };
    let app_name = manifest.name.clone();
    let app = app::App::load(app::AppOptions {
        manifest,
        runtime_config,
        variables,
        state_dir: state_dir.clone(),
        cache_dir,
        seed_default_store: args.key_values.clone(),
        platform: args.platform,
        handler_limit: match args.handler_limit_secs {
            Some(secs) if secs.is_finite() && secs > 0.0 => Some(std::time::Duration::from_secs_f64(secs)),
            Some(secs) => bail!("--handler-limit-secs {secs}: expected a positive number of seconds"),
            None => None,
        },
    })
    .await?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Serving http://{addr}");
    println!("Application {app_name:?}, state in {}", state_dir.display());
    if args.platform != platform::Platform::Spin {
        println!("Emulating {} (--platform {})", args.platform.title(), args.platform.name());
    }
    println!("Available Routes:");
    for route in app.router().routes() {
        println!("  {}: http://{addr}{}", route.component, route.raw.trim_end_matches("/..."));
    }
    use std::io::Write;
    std::io::stdout().flush().ok();

    server::serve(app, listener, shutdown_signal()).await?;
    println!("Shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn new_token(name: &str, scopes: &[String]) -> Result<()> {
    let scopes = scopes
        .iter()
        .map(|s| s.parse::<downlink_core::auth::Scope>().map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    let minted = downlink_core::auth::generate_token_line(name, &scopes, random)?;
    println!("token:  {}", minted.token);
    println!("entry:  {}", minted.config_entry);
    println!();
    println!("Add the entry to the `api_tokens` JSON array, e.g.");
    println!("  SPIN_VARIABLE_API_TOKENS='[{}]'", minted.config_entry);
    println!("and send the token as `Authorization: Bearer {}`.", minted.token);
    Ok(())
}

/// Runs every component's build commands, like `spin build`.
fn build(manifest: &manifest::Manifest) -> Result<()> {
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else { continue };
        for command in &build.commands {
            println!("Building component {id} with `{command}`");
            run_shell(command, &build.workdir).with_context(|| format!("build of component {id:?} failed"))?;
        }
    }
    Ok(())
}

fn run_shell(command: &str, dir: &Path) -> Result<()> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run `{command}` in {}", dir.display()))?;
    if !status.success() {
        bail!("`{command}` exited with {status}");
    }
    Ok(())
}

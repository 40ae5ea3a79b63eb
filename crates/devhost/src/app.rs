//! The loaded application: compiled components, their grants, the key-value stores, and the
//! request path into a fresh component instance (as Spin runs a `wasi:http` component).

use crate::kv::{self, KvStore, SqliteDb};
use crate::logs::ComponentLog;
use crate::manifest::Manifest;
use crate::outbound::{AllowedHosts, BlockedNetworks};
use crate::platform::Platform;
use crate::routes::{RouteMatch, Router};
use crate::runtime_config::{KvBackendConfig, RuntimeConfig};
use crate::send::OutboundHooks;
use crate::state::{add_spin_interfaces, InstanceState};
use crate::variables::Variables;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

/// How often a running guest yields to the host so that a handler limit can stop it even in
/// a loop that makes no host calls.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Everything `up` needs to load an application.
pub struct AppOptions {
    /// Parsed manifest.
    pub manifest: Manifest,
    /// Parsed runtime config (empty when none was given).
    pub runtime_config: RuntimeConfig,
    /// Resolved application variables.
    pub variables: Variables,
    /// Spin's state directory (SQLite store, logs).
    pub state_dir: PathBuf,
    /// Where compiled components are cached between runs.
    pub cache_dir: Option<PathBuf>,
    /// `--key-value k=v` pairs seeded into the default store.
    pub seed_default_store: Vec<(String, String)>,
    /// The deployment target emulated (`--platform`).
    pub platform: Platform,
    /// The handler limit, when it is not the platform's (`--handler-limit-secs`, for tests).
    pub handler_limit: Option<Duration>,
}

/// A component ready to instantiate, with its grants.
pub struct ComponentRuntime {
    /// Component id from the manifest.
    pub id: String,
    pre: ProxyPre<InstanceState>,
    /// Expanded `[component.x.variables]`.
    pub variables: HashMap<String, String>,
    /// The key-value stores this component was granted, by label, opened at startup (as
    /// Spin's key-value factor does: grants are checked once, each instance gets these).
    pub key_value_stores: HashMap<String, KvStore>,
    /// Parsed `allowed_outbound_hosts`.
    pub allowed_outbound_hosts: AllowedHosts,
    log: ComponentLog,
}

/// The loaded application.
pub struct App {
    router: Router,
    components: HashMap<String, Arc<ComponentRuntime>>,
    blocked_networks: BlockedNetworks,
    platform: Platform,
    /// How long one instance may run, work after its response included.
    handler_limit: Option<Duration>,
}

/// Extra request context the host passes along (for `spin-*` headers and logs).
pub struct RequestContext {
    /// The route that matched.
    pub route: RouteMatch,
    /// The client's socket address (`0.0.0.0:0` for chained requests).
    pub client_addr: SocketAddr,
    /// Scheme + authority the client used, e.g. `http://127.0.0.1:3000`.
    pub origin: String,
}

fn engine(cache_dir: Option<&PathBuf>, memory_limit: usize, interruptible: bool) -> Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(interruptible);
    if let Some(dir) = cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(wasmtime::Cache::new(cache)?));
    }
    // Spin pre-allocates instance slots; a pooling allocator makes per-request instantiation
    // cheap. Fall back to on-demand allocation where the address space cannot be reserved.
    let mut pooling = wasmtime::PoolingAllocationConfig::default();
    pooling
        .total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(1000)
        .total_tables(4000)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(32)
        .max_memory_size(memory_limit);
    let mut pooled = config.clone();
    pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            eprintln!("devhost: pooling allocator unavailable ({e:#}); using on-demand allocation");
            Ok(Engine::new(&config)?)
        }
    }
}

impl App {
    /// Compiles every component, checks its imports and exports, opens stores.
    pub async fn load(options: AppOptions) -> Result<Arc<App>> {
        let AppOptions {
            manifest,
            runtime_config,
            variables,
            state_dir,
            cache_dir,
            seed_default_store,
            platform,
            handler_limit,
        } = options;
        let handler_limit = handler_limit.or(platform.handler_limit());
        let engine = engine(cache_dir.as_ref(), platform.memory_limit(), handler_limit.is_some())?;
        if handler_limit.is_some() {
            let ticker = engine.weak();
            std::thread::spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            });
        }
        let mut linker: Linker<InstanceState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        add_spin_interfaces(&mut linker)?;

        // Key-value stores: `default` is always available; other labels must be configured.
        let mut backends: BTreeMap<String, KvBackendConfig> = runtime_config.key_value_stores.clone();
        backends.entry("default".into()).or_insert(KvBackendConfig::Sqlite(None));
        for (id, c) in &manifest.components {
            for label in &c.key_value_stores {
                if !backends.contains_key(label) {
                    bail!("component {id:?}: unknown key_value_stores label {label:?} (define [key_value_store.{label}] in the runtime config)");
                }
            }
        }
        let used: std::collections::HashSet<&String> =
            manifest.components.values().flat_map(|c| c.key_value_stores.iter()).collect();
        let mut sqlite_dbs: HashMap<PathBuf, Arc<SqliteDb>> = HashMap::new();
        let mut kv_stores = HashMap::new();
        for (label, backend) in &backends {
            let seeded = label == "default" && !seed_default_store.is_empty();
            if !used.contains(label) && !seeded {
                continue;
            }
            let store = match backend {
                KvBackendConfig::Sqlite(path) => {
                    let path = path.clone().unwrap_or_else(|| state_dir.join("sqlite_key_value.db"));
                    let db = match sqlite_dbs.get(&path) {
                        Some(db) => db.clone(),
                        None => {
                            let db = SqliteDb::open(&path)?;
                            sqlite_dbs.insert(path.clone(), db.clone());
                            db
                        }
                    };
                    KvStore::Sqlite { db, label: label.clone() }
                }
                KvBackendConfig::Redis(url) => {
                    kv::connect_redis(url).await.with_context(|| format!("key_value_store.{label}"))?
                }
            };
            kv_stores.insert(label.clone(), store);
        }
        if let Some(default) = kv_stores.get("default") {
            for (k, v) in &seed_default_store {
                default.set(k.clone(), v.as_bytes().to_vec()).await?;
            }
        }

        let logs_dir = state_dir.join("logs");
        std::fs::create_dir_all(&logs_dir).with_context(|| format!("cannot create {}", logs_dir.display()))?;

        // One component at a time: wasmtime already compiles a component's functions in
        // parallel; compiling all of them at once took a cold start's peak RSS to 144 MiB
        // (59-66 MiB one at a time) to start 0.1 s sooner (2.73 s against 2.86 s, two cores).
        let mut components = HashMap::new();
        for (id, decl) in &manifest.components {
            let engine = engine.clone();
            let (id, source) = (id.clone(), decl.source.clone());
            let (id, component) = tokio::task::spawn_blocking(move || -> Result<(String, Component)> {
                let bytes = std::fs::read(&source).with_context(|| {
                    format!(
                        "component {id:?}: cannot read {} (build it first, e.g. `devhost up --build`)",
                        source.display()
                    )
                })?;
                let component = Component::new(&engine, &bytes)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("component {id:?}: {} is not a valid component", source.display()))?;
                Ok((id, component))
            })
            .await??;
            let decl = &manifest.components[&id];
            for (import, _) in component.component_type().imports(component.engine()) {
                platform.check_import(&id, import)?;
            }
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow!("component {id:?} imports an interface this host does not provide: {e:#}"))?;
            let pre = ProxyPre::new(instance_pre)
                .map_err(|e| anyhow!("component {id:?} does not export wasi:http/incoming-handler@0.2.x: {e:#}"))?;
            let allowed = decl
                .allowed_outbound_hosts
                .iter()
                .map(|h| variables.expand(h))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("component {id:?} allowed_outbound_hosts"))?;
            for host in &allowed {
                platform.check_outbound_grant(&id, host)?;
            }
            let runtime = ComponentRuntime {
                id: id.clone(),
                pre,
                variables: variables.component_values(&decl.variables).with_context(|| format!("component {id:?}"))?,
                key_value_stores: decl
                    .key_value_stores
                    .iter()
                    .filter_map(|label| Some((label.clone(), kv_stores.get(label)?.clone())))
                    .collect(),
                allowed_outbound_hosts: AllowedHosts::parse(&allowed).with_context(|| format!("component {id:?}"))?,
                log: ComponentLog::open(&logs_dir, &id)?,
            };
            components.insert(id, Arc::new(runtime));
        }

        let router = Router::new(
            manifest.triggers.iter().filter_map(|t| t.route.as_deref().map(|r| (r, t.component.as_str()))),
        )?;
        Ok(Arc::new(App {
            router,
            components,
            blocked_networks: BlockedNetworks::parse(&runtime_config.block_networks)?,
            platform,
            handler_limit,
        }))
    }

    /// The deployment target emulated.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The public routes, for the startup banner.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Networks outbound requests may not connect to.
    pub fn blocked_networks(&self) -> &BlockedNetworks {
        &self.blocked_networks
    }

    /// Runs a service-chaining request (`http://<id>.spin.internal/...`) on a fresh instance.
    pub async fn handle_chained(
        self: &Arc<Self>,
        component_id: &str,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<http::Response<HyperOutgoingBody>, wasmtime_wasi_http::Error> {
        if !self.components.contains_key(component_id) || !self.platform.service_chaining() {
            return Err(wasmtime_wasi_http::Error::DestinationNotFound);
        }
        let path = request.uri().path().to_string();
        let ctx = RequestContext {
            route: RouteMatch {
                component: component_id.to_string(),
                raw_route: "/...".into(),
                component_route: String::new(),
                path_info: path,
                params: Vec::new(),
            },
            client_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            origin: format!("http://{component_id}.spin.internal"),
        };
        Ok(self.handle(request, ctx).await)
    }

    /// Serves one request on a fresh instance of the routed component and returns the response
    /// as soon as the guest sets it; the guest keeps running until its handler returns.
    pub async fn handle<B>(
        self: &Arc<Self>,
        request: http::Request<B>,
        ctx: RequestContext,
    ) -> http::Response<HyperOutgoingBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        let component = self.components[&ctx.route.component].clone();
        let response = match self.clone().run_instance(component.clone(), request, ctx).await {
            Ok(response) => response,
            Err(e) => {
                eprintln!("[{}] error: {e:#}", component.id);
                component.log.write_stderr(&format!("devhost: {e:#}\n"));
                plain_response(500, "Internal Server Error\n")
            }
        };
        crate::server::log_when_done(response, method, path, component.id.clone(), started)
    }

    async fn run_instance<B>(
        self: Arc<Self>,
        component: Arc<ComponentRuntime>,
        request: http::Request<B>,
        ctx: RequestContext,
    ) -> Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let request = with_spin_headers(request, &ctx)?;
        let wasi = WasiCtxBuilder::new().stdout(component.log.stdout()).stderr(component.log.stderr()).build();
        let state = InstanceState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks { app: self.clone(), component: component.clone() },
            component: component.clone(),
            limits: StoreLimitsBuilder::new().memory_size(self.platform.memory_limit()).build(),
            spent_cas: Vec::new(),
        };
        let mut store = Store::new(component.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        if self.handler_limit.is_some() {
            store.set_epoch_deadline(1);
            store.epoch_deadline_async_yield_and_update(1);
        }
        let scheme = if ctx.origin.starts_with("https:") { Scheme::Https } else { Scheme::Http };
        let req = store.data_mut().http().new_incoming_request(scheme, request)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = component.pre.clone();
        let id = component.id.clone();
        let handler_limit = self.handler_limit;
        let task = tokio::spawn(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            match handler_limit {
                None => run.await,
                // As the hosted targets do: the instance is stopped at the limit, whether or not
                // its response went out (dropping the call drops the instance).
                Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                    Err(wasmtime::Error::msg(format!(
                        "stopped: the handler ran past this platform's {} s limit",
                        limit.as_secs_f64()
                    )))
                }),
            }
        });
        // Log a guest failure even when it happens after the response went out.
        let task = tokio::spawn(async move {
            let result = task.await;
            let err = match result {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => anyhow::Error::from(e),
                Err(join) => anyhow!("instance task failed: {join}"),
            };
            Err(err)
        });
        match receiver.await {
            Ok(Ok(response)) => {
                // The guest may still be running; report its end in the background.
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        eprintln!("[{id}] error after the response was sent: {e:#}");
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Err(anyhow!("guest set an error response: {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("guest returned without setting a response")),
                Ok(Err(e)) => Err(e.context("guest trapped before setting a response")),
                Err(e) => Err(anyhow!("instance task failed: {e}")),
            },
        }
    }
}

/// Adds the `spin-*` headers Spin sets and makes the URI absolute.
fn with_spin_headers<B>(request: http::Request<B>, ctx: &RequestContext) -> Result<http::Request<B>> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let full_url = format!("{}{}", ctx.origin, path_and_query);
    parts.uri = full_url.parse().with_context(|| format!("invalid request URL {full_url:?}"))?;
    let route = &ctx.route;
    let headers = &mut parts.headers;
    let mut set = |name: &str, value: &str| -> Result<()> {
        headers.insert(http::HeaderName::from_bytes(name.as_bytes())?, http::HeaderValue::from_str(value)?);
        Ok(())
    };
    set("spin-full-url", &full_url)?;
    set("spin-path-info", &route.path_info)?;
    set("spin-matched-route", &route.raw_route)?;
    set("spin-raw-component-route", &route.raw_route)?;
    set("spin-component-route", &route.component_route)?;
    set("spin-base-path", "/")?;
    set("spin-client-addr", &ctx.client_addr.to_string())?;
    for (name, value) in &route.params {
        set(&format!("spin-path-match-{}", name.to_ascii_lowercase()), value)?;
    }
    Ok(http::Request::from_parts(parts, body))
}

/// A response with no body produced by the host itself (as Spin's own failures are).
pub fn empty_response(status: u16) -> http::Response<HyperOutgoingBody> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync())
        .expect("static response is valid")
}

/// A small text response produced by the host itself.
pub fn plain_response(status: u16, body: &'static str) -> http::Response<HyperOutgoingBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed_unsync())
        .expect("static response is valid")
}

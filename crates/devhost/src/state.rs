//! Per-instance store data and the Spin host interfaces beyond WASI:
//! `fermyon:spin/key-value@2.0.0`, `fermyon:spin/variables@2.0.0` and
//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch).

use crate::app::ComponentRuntime;
use crate::kv::{CasTicket, HostPanic, KvStore, SwapReport};
use crate::platform::KvLimits;
use crate::send::OutboundHooks;
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

wasmtime::component::bindgen!({
    path: "wit",
    world: "spin-host",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": KvHandle,
        "wasi:keyvalue/store.bucket": KvHandle,
        "wasi:keyvalue/atomics.cas": CasHandle,
    },
});

use fermyon::spin::{key_value as spin_kv, variables as spin_vars};
use wasi::keyvalue::{atomics as wasi_atomics, batch as wasi_batch, store as wasi_store};

/// An opened key-value store (Spin `store` or WASI `bucket`).
pub struct KvHandle {
    store: KvStore,
}

/// A compare-and-swap in progress (see [`CasTicket`] for each backend's semantics).
pub struct CasHandle {
    store: KvStore,
    ticket: CasTicket,
}

/// Everything one component instance's host calls can reach.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: OutboundHooks,
    pub(crate) component: Arc<ComponentRuntime>,
    pub(crate) limits: StoreLimits,
    /// Tickets consumed by `swap`. Spin 4.0.2 never removes those from its table, so each one
    /// (with its Redis connection) lives until the instance ends; so do they here.
    pub(crate) spent_cas: Vec<CasTicket>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl InstanceState {
    /// The store behind `label` if this component was granted it (every granted label was
    /// checked to exist at startup, so a refusal is always Spin's `access-denied`).
    fn open_store(&self, label: &str) -> Option<KvStore> {
        self.component.key_value_stores.get(label).cloned()
    }

    fn store_of(&self, handle: &Resource<KvHandle>) -> wasmtime::Result<KvStore> {
        Ok(self.table.get(handle)?.store.clone())
    }

    /// Writes `entries` if the platform's key-value limits allow them (key and value sizes; on
    /// a target with a key budget, the keys they would add).
    async fn write_within_limits(
        limits: KvLimits,
        store: KvStore,
        entries: Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        for (key, value) in &entries {
            limits.check_write(key, value.len())?;
        }
        if let Some(max) = limits.max_keys {
            let existing: std::collections::HashSet<String> = store.keys().await?.into_iter().collect();
            let new: std::collections::HashSet<&String> =
                entries.iter().map(|(key, _)| key).filter(|key| !existing.contains(*key)).collect();
            if !new.is_empty() && existing.len() + new.len() > max {
                anyhow::bail!("the store holds {} keys; this platform allows {max}", existing.len());
            }
        }
        match <[_; 1]>::try_from(entries) {
            Ok([(key, value)]) => store.set(key, value).await,
            Err(entries) => store.set_many(entries).await,
        }
    }

    /// The guest's answer to a key-value call: a failure is logged (one line, naming the
    /// component) and becomes the guest's `Ok(Err(..))`, except a [`HostPanic`], which traps
    /// the instance, as a panic inside Spin's host call fails the request.
    fn answer<T, E>(
        &self,
        op: &str,
        result: anyhow::Result<T>,
        to_guest: impl FnOnce(anyhow::Error) -> E,
    ) -> wasmtime::Result<Result<T, E>> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(e) => {
                eprintln!("[{}] key-value {op} failed: {e:#}", self.component.id);
                if e.downcast_ref::<HostPanic>().is_some() {
                    Err(wasmtime::Error::from_anyhow(e))
                } else {
                    Ok(Err(to_guest(e)))
                }
            }
        }
    }
}

// ---- fermyon:spin/key-value@2.0.0 -------------------------------------------------------------

fn spin_kv_error(e: anyhow::Error) -> spin_kv::Error {
    spin_kv::Error::Other(format!("{e:#}"))
}

impl spin_kv::Host for InstanceState {}

impl spin_kv::HostStore for InstanceState {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvHandle>, spin_kv::Error>> {
        Ok(match self.open_store(&label) {
            Some(store) => Ok(self.table.push(KvHandle { store })?),
            None => Err(spin_kv::Error::AccessDenied),
        })
    }

    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let result = self.store_of(&h)?.get(key).await;
        self.answer("get", result, spin_kv_error)
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let result =
            Self::write_within_limits(self.hooks.app.platform().kv_limits(), self.store_of(&h)?, vec![(key, value)])
                .await;
        self.answer("set", result, spin_kv_error)
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let result = self.store_of(&h)?.delete(key).await;
        self.answer("delete", result, spin_kv_error)
    }

    async fn exists(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let result = self.store_of(&h)?.exists(key).await;
        self.answer("exists", result, spin_kv_error)
    }

    async fn get_keys(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let result = self.store_of(&h)?.keys().await;
        self.answer("get-keys", result, spin_kv_error)
    }

    async fn drop(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

// ---- fermyon:spin/variables@2.0.0 -------------------------------------------------------------

impl spin_vars::Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, spin_vars::Error>> {
        if crate::manifest::validate_variable_name(&name).is_err() {
            return Ok(Err(spin_vars::Error::InvalidName(name)));
        }
        Ok(self.component.variables.get(&name).cloned().ok_or(spin_vars::Error::Undefined(name)))
    }
}

// ---- wasi:keyvalue@0.2.0-draft2 ---------------------------------------------------------------

fn wasi_kv_error(e: anyhow::Error) -> wasi_store::Error {
    wasi_store::Error::Other(format!("{e:#}"))
}

impl wasi_store::Host for InstanceState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<KvHandle>, wasi_store::Error>> {
        Ok(match self.open_store(&identifier) {
            Some(store) => Ok(self.table.push(KvHandle { store })?),
            None => Err(wasi_store::Error::AccessDenied),
        })
    }
}

impl wasi_store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        let result = self.store_of(&h)?.get(key).await;
        self.answer("get", result, wasi_kv_error)
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let result =
            Self::write_within_limits(self.hooks.app.platform().kv_limits(), self.store_of(&h)?, vec![(key, value)])
                .await;
        self.answer("set", result, wasi_kv_error)
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let result = self.store_of(&h)?.delete(key).await;
        self.answer("delete", result, wasi_kv_error)
    }

    async fn exists(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        let result = self.store_of(&h)?.exists(key).await;
        self.answer("exists", result, wasi_kv_error)
    }

    async fn list_keys(
        &mut self,
        h: Resource<KvHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        // Spin does not support cursors: everything comes back in one page.
        if cursor.is_some() {
            return Ok(Err(wasi_store::Error::Other("list_keys: cursor not supported".into())));
        }
        let result = self.store_of(&h)?.keys().await.map(|keys| wasi_store::KeyResponse { keys, cursor: None });
        self.answer("list-keys", result, wasi_kv_error)
    }

    async fn drop(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl wasi_atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_store::Error>> {
        let result = self.store_of(&h)?.increment(key, delta).await;
        self.answer("increment", result, wasi_kv_error)
    }

    /// Spin's `swap`: whatever the backend reports (see [`crate::kv`]); on `cas-failed` the guest
    /// gets a new ticket whose `current` was already read, as Spin's host does.
    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_atomics::CasError>> {
        let CasHandle { store, mut ticket } = self.table.delete(cas)?;
        let report = ticket.swap(value).await;
        let key = ticket.key().to_owned();
        self.spent_cas.push(ticket);
        let outcome = match report {
            Ok(SwapReport::Swapped) => Ok(None),
            Ok(SwapReport::CasFailed) => {
                async {
                    let mut fresh = store.new_cas(key).await?;
                    fresh.current().await?;
                    Ok(Some(fresh))
                }
                .await
            }
            Err(e) => Err(e),
        };
        match self.answer("swap", outcome, wasi_kv_error)? {
            Ok(None) => Ok(Ok(())),
            Ok(Some(ticket)) => {
                Ok(Err(wasi_atomics::CasError::CasFailed(self.table.push(CasHandle { store, ticket })?)))
            }
            Err(e) => Ok(Err(wasi_atomics::CasError::StoreError(e))),
        }
    }
}

impl wasi_atomics::HostCas for InstanceState {
    async fn new(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, wasi_store::Error>> {
        let store = self.store_of(&h)?;
        let result = store.new_cas(key).await;
        match self.answer("cas", result, wasi_kv_error)? {
            Ok(ticket) => Ok(Ok(self.table.push(CasHandle { store, ticket })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        let result = self.table.get_mut(&cas)?.ticket.current().await;
        self.answer("cas current", result, wasi_kv_error)
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl wasi_batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        h: Resource<KvHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_store::Error>> {
        let result = self.store_of(&h)?.get_many(keys).await;
        self.answer("get-many", result, wasi_kv_error)
    }

    async fn set_many(
        &mut self,
        h: Resource<KvHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let result =
            Self::write_within_limits(self.hooks.app.platform().kv_limits(), self.store_of(&h)?, key_values).await;
        self.answer("set-many", result, wasi_kv_error)
    }

    async fn delete_many(
        &mut self,
        h: Resource<KvHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let result = self.store_of(&h)?.delete_many(keys).await;
        self.answer("delete-many", result, wasi_kv_error)
    }
}

/// Adds the Spin host interfaces to a linker.
pub fn add_spin_interfaces(linker: &mut wasmtime::component::Linker<InstanceState>) -> anyhow::Result<()> {
    type Data = wasmtime::component::HasSelf<InstanceState>;
    fn get(s: &mut InstanceState) -> &mut InstanceState {
        s
    }
    spin_kv::add_to_linker::<_, Data>(linker, get)?;
    spin_vars::add_to_linker::<_, Data>(linker, get)?;
    wasi_store::add_to_linker::<_, Data>(linker, get)?;
    wasi_atomics::add_to_linker::<_, Data>(linker, get)?;
    wasi_batch::add_to_linker::<_, Data>(linker, get)?;
    Ok(())
}

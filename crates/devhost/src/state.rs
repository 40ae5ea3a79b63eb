//! Per-instance store data and the Spin host interfaces beyond WASI:
//! `fermyon:spin/key-value@2.0.0`, `fermyon:spin/variables@2.0.0` and
//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch).

use crate::app::{App, ComponentRuntime};
use crate::kv::KvStore;
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

/// A compare-and-swap ticket: the key and the value observed when it was created.
pub struct CasHandle {
    store: KvStore,
    key: String,
    observed: Option<Vec<u8>>,
}

/// Everything one component instance's host calls can reach.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: OutboundHooks,
    pub(crate) component: Arc<ComponentRuntime>,
    pub(crate) app: Arc<App>,
    pub(crate) limits: StoreLimits,
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

/// Why a store label cannot be opened.
enum OpenError {
    NotGranted,
    NoSuchStore,
}

impl InstanceState {
    fn open_store(&self, label: &str) -> Result<KvStore, OpenError> {
        if !self.component.key_value_stores.iter().any(|l| l == label) {
            return Err(OpenError::NotGranted);
        }
        self.app.kv_store(label).ok_or(OpenError::NoSuchStore)
    }

    fn store_of(&self, handle: &Resource<KvHandle>) -> wasmtime::Result<KvStore> {
        Ok(self.table.get(handle)?.store.clone())
    }

    fn log_kv_error(&self, op: &str, err: &anyhow::Error) {
        eprintln!("[{}] key-value {op} failed: {err:#}", self.component.id);
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
            Ok(store) => Ok(self.table.push(KvHandle { store })?),
            Err(OpenError::NotGranted) => Err(spin_kv::Error::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(spin_kv::Error::NoSuchStore),
        })
    }

    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.get(key).await.inspect_err(|e| self.log_kv_error("get", e)).map_err(spin_kv_error))
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.set(key, value).await.inspect_err(|e| self.log_kv_error("set", e)).map_err(spin_kv_error))
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.delete(key).await.map_err(spin_kv_error))
    }

    async fn exists(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.exists(key).await.map_err(spin_kv_error))
    }

    async fn get_keys(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.keys().await.map_err(spin_kv_error))
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
            Ok(store) => Ok(self.table.push(KvHandle { store })?),
            Err(OpenError::NotGranted) => Err(wasi_store::Error::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(wasi_store::Error::NoSuchStore),
        })
    }
}

impl wasi_store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.get(key).await.inspect_err(|e| self.log_kv_error("get", e)).map_err(wasi_kv_error))
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.set(key, value).await.inspect_err(|e| self.log_kv_error("set", e)).map_err(wasi_kv_error))
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.delete(key).await.map_err(wasi_kv_error))
    }

    async fn exists(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.exists(key).await.map_err(wasi_kv_error))
    }

    async fn list_keys(
        &mut self,
        h: Resource<KvHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        // Spin does not support cursors: everything comes back in one page.
        if cursor.is_some() {
            return Ok(Err(wasi_store::Error::Other("list-keys: cursors are not supported".into())));
        }
        let store = self.store_of(&h)?;
        Ok(store.keys().await.map(|keys| wasi_store::KeyResponse { keys, cursor: None }).map_err(wasi_kv_error))
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
        let store = self.store_of(&h)?;
        Ok(store.increment(key, delta).await.inspect_err(|e| self.log_kv_error("increment", e)).map_err(wasi_kv_error))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_atomics::CasError>> {
        let ticket = self.table.get(&cas)?;
        let (store, key, observed) = (ticket.store.clone(), ticket.key.clone(), ticket.observed.clone());
        match store.compare_and_swap(key, observed, value).await {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            // The ticket goes back to the guest refreshed to the latest value (as the WIT
            // contract requires), so it can inspect `current` and retry with it.
            Ok(false) => {
                let key = self.table.get(&cas)?.key.clone();
                match store.get(key).await {
                    Ok(latest) => {
                        self.table.get_mut(&cas)?.observed = latest;
                        Ok(Err(wasi_atomics::CasError::CasFailed(cas)))
                    }
                    Err(e) => {
                        self.table.delete(cas)?;
                        Ok(Err(wasi_atomics::CasError::StoreError(wasi_kv_error(e))))
                    }
                }
            }
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(wasi_atomics::CasError::StoreError(wasi_kv_error(e))))
            }
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
        let observed = match store.get(key.clone()).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(wasi_kv_error(e))),
        };
        Ok(Ok(self.table.push(CasHandle { store, key, observed })?))
    }

    async fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(Ok(self.table.get(&cas)?.observed.clone()))
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
        let store = self.store_of(&h)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match store.get(key.clone()).await {
                Ok(v) => out.push((key, v)),
                Err(e) => return Ok(Err(wasi_kv_error(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        h: Resource<KvHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let store = self.store_of(&h)?;
        Ok(store.set_many(key_values).await.inspect_err(|e| self.log_kv_error("set-many", e)).map_err(wasi_kv_error))
    }

    async fn delete_many(
        &mut self,
        h: Resource<KvHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let store = self.store_of(&h)?;
        for key in keys {
            if let Err(e) = store.delete(key).await {
                return Ok(Err(wasi_kv_error(e)));
            }
        }
        Ok(Ok(()))
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

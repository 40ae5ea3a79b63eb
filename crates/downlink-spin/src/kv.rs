//! [`Storage`] over Spin's key-value store, through `wasi:keyvalue`.
//!
//! Self-hosted Spin 3+ provides `store`, `atomics` and `batch` on every backend (SQLite, Redis,
//! Azure Cosmos, AWS DynamoDB). [`SpinBucket`] is the store as Spin provides it, with Spin
//! 4.0.2's weaker compare-and-swap (see [`downlink_core::storage::exact`]); [`KvStorage`], what
//! components use, wraps it in [`ExactKv`] so that the core gets the exact [`Storage`] contract.
//!
//! The hosted targets (Fermyon Wasm Functions, Fermyon Cloud) have no `atomics`, and Cloud has
//! no `batch`; a component that imports them does not load there. Built with the `hosted`
//! feature, this module uses `store` alone and [`KvStorage`] is an [`OptimisticKv`], whose
//! weaker guarantees the README's platform table lists.

use downlink_core::s3::BytesBackend;
#[cfg(not(feature = "hosted"))]
use downlink_core::storage::exact::ExactKv;
#[cfg(feature = "hosted")]
use downlink_core::storage::optimistic::OptimisticKv;
use downlink_core::storage::optimistic::PlainKv;
use downlink_core::storage::{StorageError, WithObjects};
use downlink_core::ApiError;

use crate::s3::S3Objects;
use spin_sdk::wit::wasi::keyvalue::store;

/// The key-value store components use: [`SpinBucket`] with the exact contract on top.
#[cfg(not(feature = "hosted"))]
pub type KvStorage = ExactKv<SpinBucket>;
/// The key-value store components use on hosted targets: [`SpinBucket`] without atomics.
#[cfg(feature = "hosted")]
pub type KvStorage = OptimisticKv<SpinBucket>;

/// What components use: records in the `default` key-value store, file bytes where the
/// `storage_backend` variable says (chunks in that store, or an S3 bucket).
pub type AppStorage = WithObjects<KvStorage, S3Objects>;

/// Opens the `default` store (granted in `spin.toml` via `key_value_stores`) and the bucket,
/// if this component's variables configure one; a bad setting is a `500` naming it.
pub fn open_default() -> Result<AppStorage, ApiError> {
    let records = open_records()?;
    let objects = match BytesBackend::load(&crate::settings())? {
        BytesBackend::KeyValue => None,
        BytesBackend::S3(client) => Some(S3Objects::new(*client)),
    };
    Ok(WithObjects { records, objects })
}

/// Opens the `default` store alone (records only; a second handle beside [`open_default`]'s).
pub fn open_records() -> Result<KvStorage, ApiError> {
    let bucket = SpinBucket::open("default")?;
    #[cfg(not(feature = "hosted"))]
    return Ok(ExactKv::new(bucket, crate::pause));
    #[cfg(feature = "hosted")]
    return Ok(OptimisticKv::new(bucket, crate::pause, crate::random_u64));
}

/// A key-value store label opened for this request, with Spin's own semantics.
pub struct SpinBucket {
    bucket: store::Bucket,
}

impl SpinBucket {
    /// Opens the store `label` (granted in `spin.toml` via `key_value_stores`).
    pub fn open(label: &str) -> Result<Self, StorageError> {
        store::open(label).map(|bucket| SpinBucket { bucket }).map_err(|e| kv_error("open", e))
    }
}

fn kv_error(op: &str, e: store::Error) -> StorageError {
    StorageError::new(match e {
        store::Error::NoSuchStore => format!("key-value {op}: no such store"),
        store::Error::AccessDenied => format!("key-value {op}: access denied"),
        store::Error::Other(msg) => format!("key-value {op}: {msg}"),
    })
}

impl PlainKv for SpinBucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.bucket.get(key).map_err(|e| kv_error("get", e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.bucket.set(key, value).map_err(|e| kv_error("set", e))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.bucket.delete(key).map_err(|e| kv_error("delete", e))
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor.as_deref()).map_err(|e| kv_error("list-keys", e))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

/// The whole store, atomics and batch included (self-hosted Spin only).
#[cfg(not(feature = "hosted"))]
mod self_hosted {
    use super::{kv_error, SpinBucket};
    use downlink_core::storage::optimistic::PlainKv;
    use downlink_core::storage::{CasOutcome, Storage, StorageError};
    use spin_sdk::wit::wasi::keyvalue::{atomics, batch};

    impl Storage for SpinBucket {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            PlainKv::get(self, key)
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            PlainKv::set(self, key, value)
        }

        fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
            batch::set_many(&self.bucket, entries).map_err(|e| kv_error("set-many", e))
        }

        fn delete(&self, key: &str) -> Result<(), StorageError> {
            PlainKv::delete(self, key)
        }

        /// Spin's swap, reported as Spin reports it: a conflict may have written (Redis), and an
        /// absent key is overwritten whatever appeared meanwhile (SQLite). `ExactKv` fixes both.
        fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
            let cas = atomics::Cas::new(&self.bucket, key).map_err(|e| kv_error("cas", e))?;
            let current = cas.current().map_err(|e| kv_error("cas", e))?;
            if current.as_deref() != expected {
                return Ok(CasOutcome::Conflict { current });
            }
            match atomics::swap(cas, new) {
                Ok(()) => Ok(CasOutcome::Swapped),
                Err(atomics::CasError::CasFailed(cas)) => {
                    Ok(CasOutcome::Conflict { current: cas.current().map_err(|e| kv_error("cas", e))? })
                }
                Err(atomics::CasError::StoreError(e)) => Err(kv_error("swap", e)),
            }
        }

        fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
            atomics::increment(&self.bucket, key, delta).map_err(|e| kv_error("increment", e))
        }

        fn list_keys(&self) -> Result<Vec<String>, StorageError> {
            PlainKv::list_keys(self)
        }
    }
}

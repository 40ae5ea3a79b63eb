//! The storage abstraction and the file operations built on it.
//!
//! [`Storage`] is the narrow key-value interface a backend implements: get, set (and a batched
//! set), delete, compare-and-swap, increment, and a full key listing used only by garbage collection.
//! Everything else — chunked writes, atomic publication, directory indexes, deletes, listings,
//! GC — is written once, generically, in this module, so endpoints never depend on the backend.
//!
//! # Implementing a backend
//!
//! - **Spin KV (`wasi:keyvalue`)**: `compare_and_swap(key, expected, new)` is `Cas::new(bucket,
//!   key)`, compare `cas.current()` with `expected` (report [`CasOutcome::Conflict`] with the
//!   current value if different), then `atomics::swap(cas, new)`; a `CasFailed` from `swap` is
//!   also a conflict. `increment` is `atomics::increment`. `list_keys` is `bucket.list_keys`
//!   (paged) — only GC calls it. Spin's own swap is weaker than this contract; components wrap
//!   the store in [`exact::ExactKv`]. Where the host has no `atomics` at all (Fermyon Wasm
//!   Functions, Fermyon Cloud) they wrap it in [`optimistic::OptimisticKv`], which keeps the
//!   contract only as far as reads and writes can (see there).
//! - **S3-compatible object store**: `get` is GET, `set` PUT, `delete` DELETE;
//!   `compare_and_swap` is GET (remember its ETag), compare bytes, then a conditional PUT with
//!   `If-Match: <etag>` (or `If-None-Match: *` when `expected` is `None`); `412` is a conflict.
//!   `increment` is a CAS loop on a decimal value; `list_keys` is ListObjectsV2.
//!
//! Values must stay within [`MAX_VALUE_BYTES`](crate::blob::MAX_VALUE_BYTES) and keys within
//! [`MAX_KEY_BYTES`](crate::blob::MAX_KEY_BYTES); the key layout in [`crate::blob`]
//! guarantees both.
//!
//! Methods are synchronous because Spin's key-value calls are synchronous from the guest.

pub mod exact;
mod files;
#[cfg(any(test, feature = "memory-storage"))]
mod memory;
pub mod objects;
pub mod optimistic;

pub use files::{
    collect_garbage, delete_dir_recursive, delete_file, dir_entries, list_dir, read_meta, reclaim_abandoned_write,
    stat, walk_files, write_file, Committed, DeleteSummary, DirEntries, Entry, FileWriter, GcReport, WriteCheckpoint,
    WriteMode, WriteOptions, CHUNKS_PER_BATCH, DEFAULT_GC_GRACE_SECS, TOUCH_INTERVAL_SECS,
};
/// The in-memory store of the core's own tests (feature `memory-storage` for other crates'
/// tests); no component ships it.
#[cfg(any(test, feature = "memory-storage"))]
pub use memory::{Fault, MemoryStorage, Semantics};

use crate::error::ApiError;
pub use objects::ObjectStore;

/// A backend failure (connection, quota, corruption). Maps to `500 STORAGE_ERROR`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("storage error: {message}")]
pub struct StorageError {
    /// What failed, for logs; must not contain file contents or secrets.
    pub message: String,
}

impl StorageError {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError { message: message.into() }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        ApiError::storage(err.message)
    }
}

/// Result of [`Storage::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was replaced.
    Swapped,
    /// The stored value was not `expected`; here is what it is now, to retry against.
    Conflict {
        /// The current value (`None`: the key is absent).
        current: Option<Vec<u8>>,
    },
}

/// A key-value store. See the module docs for how backends map onto it.
pub trait Storage {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Stores `value` under `key` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Stores every `(key, value)` pair, as one round trip where the backend has one
    /// (`wasi:keyvalue/batch`). Not atomic: on an error, any subset may have been stored.
    /// Owned pairs because that is what the batch call takes, without copying the values.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        entries.iter().try_for_each(|(key, value)| self.set(key, value))
    }

    /// Removes `key`; removing an absent key succeeds.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Stores `value` under `key`, a key numbered by [`increment`](Storage::increment) that no
    /// one else should hold, and says whether it is ours: `false` when another writer holds it
    /// (only on a store whose counters can hand a number out twice, [`optimistic`]); the
    /// caller then takes the next number.
    fn set_numbered(&self, key: &str, value: &[u8]) -> Result<bool, StorageError> {
        self.set(key, value)?;
        Ok(true)
    }

    /// Removes a key that is created with `compare_and_swap(key, None, ..)` (a file record, a
    /// directory index). A backend whose create-if-absent is not atomic by itself keeps a
    /// tombstone instead, which reads as absent (see [`exact`]).
    fn retire(&self, key: &str) -> Result<(), StorageError> {
        self.delete(key)
    }

    /// Atomically replaces the value of `key` with `new` if it currently equals `expected`
    /// (`None`: the key must be absent). Exactly one of several concurrent creators of a key
    /// wins; raw Spin stores need [`exact::ExactKv`] for that.
    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError>;

    /// Atomically adds `delta` to the counter at `key` (absent counts as 0) and returns the
    /// new value. Counters are read with `increment(key, 0)`: their byte encoding is the
    /// backend's business.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError>;

    /// Every key in the store. Expensive on real backends; only garbage collection uses it.
    fn list_keys(&self) -> Result<Vec<String>, StorageError>;

    /// The bucket new files' bytes go to, when one is configured ([`WithObjects`]); else
    /// file bytes are chunks in this store.
    fn objects(&self) -> Option<&dyn ObjectStore> {
        None
    }
}

impl<S: Storage + ?Sized> Storage for &S {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        (**self).set(key, value)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        (**self).set_many(entries)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        (**self).delete(key)
    }

    fn set_numbered(&self, key: &str, value: &[u8]) -> Result<bool, StorageError> {
        (**self).set_numbered(key, value)
    }

    fn retire(&self, key: &str) -> Result<(), StorageError> {
        (**self).retire(key)
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
        (**self).compare_and_swap(key, expected, new)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        (**self).increment(key, delta)
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        (**self).list_keys()
    }

    fn objects(&self) -> Option<&dyn ObjectStore> {
        (**self).objects()
    }
}

/// Records in the key-value store `records`, file bytes in the bucket `objects` (or, with
/// `None`, as chunks in `records`): the one place the two sides of the storage boundary meet.
pub struct WithObjects<S, O> {
    /// The key-value store.
    pub records: S,
    /// The bucket, if file bytes go to one.
    pub objects: Option<O>,
}

impl<S: Storage, O: ObjectStore> Storage for WithObjects<S, O> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.records.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.records.set(key, value)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        self.records.set_many(entries)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.records.delete(key)
    }

    fn set_numbered(&self, key: &str, value: &[u8]) -> Result<bool, StorageError> {
        self.records.set_numbered(key, value)
    }

    fn retire(&self, key: &str) -> Result<(), StorageError> {
        self.records.retire(key)
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
        self.records.compare_and_swap(key, expected, new)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        self.records.increment(key, delta)
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        self.records.list_keys()
    }

    fn objects(&self) -> Option<&dyn ObjectStore> {
        self.objects.as_ref().map(|objects| objects as &dyn ObjectStore)
    }
}

/// How many times [`cas_update`] retries before giving up; contention beyond this on one key
/// means something is badly wrong, and failing beats spinning forever.
pub const MAX_CAS_ATTEMPTS: usize = 64;

/// What a [`cas_update`] step decided for the current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasStep<T> {
    /// Store these bytes (if the value is still what the step saw), then return `T`.
    Write(Vec<u8>, T),
    /// Nothing to store; return `T`.
    Done(T),
}

/// Read-modify-write with compare-and-swap, retried on conflict.
///
/// `decide` sees the current value (`None`: absent) and returns a [`CasStep`]; it may run
/// several times, so it must be free of side effects. Errors from `decide` stop the loop.
pub fn cas_update<S, T, F>(storage: &S, key: &str, decide: F) -> Result<T, ApiError>
where
    S: Storage + ?Sized,
    F: FnMut(Option<&[u8]>) -> Result<CasStep<T>, ApiError>,
{
    cas_update_from(storage, key, storage.get(key)?, decide)
}

/// [`cas_update`] starting from a value of `key` the caller has just read.
pub fn cas_update_from<S, T, F>(storage: &S, key: &str, read: Option<Vec<u8>>, mut decide: F) -> Result<T, ApiError>
where
    S: Storage + ?Sized,
    F: FnMut(Option<&[u8]>) -> Result<CasStep<T>, ApiError>,
{
    let mut current = read;
    for _ in 0..MAX_CAS_ATTEMPTS {
        match decide(current.as_deref())? {
            CasStep::Done(result) => return Ok(result),
            CasStep::Write(bytes, result) => match storage.compare_and_swap(key, current.as_deref(), &bytes)? {
                CasOutcome::Swapped => return Ok(result),
                CasOutcome::Conflict { current: now } => current = now,
            },
        }
    }
    Err(ApiError::storage(format!("gave up after {MAX_CAS_ATTEMPTS} conflicting updates of one key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_update_retries_until_it_wins() {
        let storage = MemoryStorage::new();
        storage.set("k", b"1").unwrap();
        storage.before_next_cas("k", |store: &MemoryStorage| {
            store.set("k", b"5").unwrap();
        });
        let old = cas_update(&storage, "k", |current| {
            let value: u32 = std::str::from_utf8(current.unwrap_or(b"0")).unwrap().parse().unwrap();
            Ok(CasStep::Write((value + 1).to_string().into_bytes(), value))
        })
        .unwrap();
        assert_eq!(old, 5);
        assert_eq!(storage.get("k").unwrap().unwrap(), b"6");
    }

    #[test]
    fn cas_update_can_skip_writes_and_stop() {
        let storage = MemoryStorage::new();
        let writes = storage.write_count();
        let result = cas_update(&storage, "k", |_| Ok(CasStep::Done(7))).unwrap();
        assert_eq!(result, 7);
        assert_eq!(storage.write_count(), writes);
        let err =
            cas_update(&storage, "k", |_| -> Result<CasStep<()>, _> { Err(ApiError::conflict("no")) }).unwrap_err();
        assert_eq!(err.status(), 409);
    }

    #[test]
    fn cas_update_gives_up_under_endless_contention() {
        struct Hostile;
        impl Storage for Hostile {
            fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StorageError> {
                Ok(None)
            }
            fn set(&self, _: &str, _: &[u8]) -> Result<(), StorageError> {
                Ok(())
            }
            fn delete(&self, _: &str) -> Result<(), StorageError> {
                Ok(())
            }
            fn compare_and_swap(&self, _: &str, _: Option<&[u8]>, _: &[u8]) -> Result<CasOutcome, StorageError> {
                Ok(CasOutcome::Conflict { current: Some(b"other".to_vec()) })
            }
            fn increment(&self, _: &str, _: i64) -> Result<i64, StorageError> {
                Ok(0)
            }
            fn list_keys(&self) -> Result<Vec<String>, StorageError> {
                Ok(Vec::new())
            }
        }
        let mut calls = 0;
        let err = cas_update(&Hostile, "k", |_| {
            calls += 1;
            Ok(CasStep::Write(b"x".to_vec(), ()))
        })
        .unwrap_err();
        assert_eq!(calls, MAX_CAS_ATTEMPTS);
        assert_eq!(err.code, crate::error::ErrorCode::StorageError);
    }
}

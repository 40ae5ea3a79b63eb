//! An in-memory [`Storage`] for tests, with fault injection and a hook that lets a test run
//! another writer at the exact moment a compare-and-swap is about to happen.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use super::exact::CounterEncoding;
use super::{CasOutcome, Storage, StorageError};
use crate::blob::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// A simulated failure, counted over write operations (set, delete, compare-and-swap,
/// increment) from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Write number `n` fails; later writes succeed (a transient error).
    FailWrite(u64),
    /// Write number `n` and every later write fail (the process died there).
    CrashAtWrite(u64),
}

type CasHook = Box<dyn FnOnce(&MemoryStorage) + Send>;

/// How a [`MemoryStorage`] behaves where Spin 4.0.2's stores differ (see
/// [`exact`](super::exact)): exactly as the [`Storage`] contract says, or as one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Semantics {
    /// Exact compare-and-swap; counters kept apart from values.
    #[default]
    Exact,
    /// Spin's SQLite store: a swap that found the key absent is an unconditional upsert;
    /// counters are 8 little-endian bytes, and anything else makes `increment` fail.
    SpinSqlite,
    /// Spin's Redis store: a swap writes only if the key is unchanged since it was read, and
    /// always reports a conflict; counters are decimal text.
    SpinRedis,
}

#[derive(Default)]
struct State {
    data: BTreeMap<String, Vec<u8>>,
    counters: BTreeMap<String, i64>,
    writes: u64,
    fault: Option<Fault>,
    cas_hook: Option<(String, CasHook)>,
    semantics: Semantics,
}

/// A [`Storage`] kept in a map. Enforces the real key and value size limits, so layout bugs
/// show up in tests.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStorage")
            .field("keys", &state.data.keys().collect::<Vec<_>>())
            .field("writes", &state.writes)
            .field("fault", &state.fault)
            .finish()
    }
}

impl MemoryStorage {
    /// An empty store without faults.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    /// An empty store that behaves like one of Spin's (see [`Semantics`]).
    pub fn with_semantics(semantics: Semantics) -> Self {
        let store = MemoryStorage::default();
        store.lock().semantics = semantics;
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a failed test) must not hide the state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Installs (or with `None` clears) a fault.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    /// Write operations attempted so far (including failed ones).
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// All stored keys, sorted (counters included).
    pub fn keys(&self) -> Vec<String> {
        let state = self.lock();
        let mut keys: Vec<String> = state.data.keys().chain(state.counters.keys()).cloned().collect();
        keys.sort();
        keys
    }

    /// Runs `hook` once, just before the next compare-and-swap on `key` compares, without
    /// holding any lock, so the hook can perform whole competing operations.
    pub fn before_next_cas(&self, key: &str, hook: impl FnOnce(&MemoryStorage) + Send + 'static) {
        self.lock().cas_hook = Some((key.to_owned(), Box::new(hook)));
    }

    fn begin_write(state: &mut State, key: &str) -> Result<(), StorageError> {
        let number = state.writes;
        state.writes += 1;
        let failed = match state.fault {
            Some(Fault::FailWrite(n)) => n == number,
            Some(Fault::CrashAtWrite(n)) => number >= n,
            None => false,
        };
        if failed {
            return Err(StorageError::new(format!("injected fault at write {number}")));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StorageError::new(format!("key of {} bytes exceeds {MAX_KEY_BYTES}", key.len())));
        }
        Ok(())
    }

    fn check_value(value: &[u8]) -> Result<(), StorageError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StorageError::new(format!("value of {} bytes exceeds {MAX_VALUE_BYTES}", value.len())));
        }
        Ok(())
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let mut state = self.lock();
        Self::begin_write(&mut state, key)?;
        Self::check_value(value)?;
        state.data.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut state = self.lock();
        Self::begin_write(&mut state, key)?;
        state.data.remove(key);
        state.counters.remove(key);
        Ok(())
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
        // What Spin's `current` read before the swap, for the Spin semantics.
        let seen = self.lock().data.get(key).cloned();
        let hook = {
            let mut state = self.lock();
            match state.cas_hook.take() {
                Some((hook_key, hook)) if hook_key == key => Some(hook),
                other => {
                    state.cas_hook = other;
                    None
                }
            }
        };
        if let Some(hook) = hook {
            hook(self);
        }
        let mut state = self.lock();
        Self::begin_write(&mut state, key)?;
        Self::check_value(new)?;
        let current = state.data.get(key).cloned();
        // Spin's stores compare (in the guest, against `current`) before the hook's writer ran.
        if state.semantics != Semantics::Exact && seen.as_deref() != expected {
            return Ok(CasOutcome::Conflict { current: seen });
        }
        let writes = match state.semantics {
            Semantics::Exact => current.as_deref() == expected,
            Semantics::SpinSqlite => expected.is_none() || current.as_deref() == expected,
            Semantics::SpinRedis => current == seen,
        };
        if writes {
            state.data.insert(key.to_owned(), new.to_vec());
        }
        Ok(match state.semantics {
            Semantics::SpinRedis => CasOutcome::Conflict { current: state.data.get(key).cloned() },
            _ if writes => CasOutcome::Swapped,
            _ => CasOutcome::Conflict { current },
        })
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let mut state = self.lock();
        Self::begin_write(&mut state, key)?;
        let encoding = match state.semantics {
            Semantics::Exact => {
                let counter = state.counters.entry(key.to_owned()).or_insert(0);
                *counter = counter.checked_add(delta).ok_or_else(|| StorageError::new("counter overflow"))?;
                return Ok(*counter);
            }
            Semantics::SpinSqlite => CounterEncoding::LittleEndian,
            Semantics::SpinRedis => CounterEncoding::Decimal,
        };
        let current = match state.data.get(key) {
            None => 0,
            Some(bytes) => match CounterEncoding::decode(bytes) {
                Some((found, value)) if found == encoding => value,
                // Spin's SQLite store panics here (and stays broken); Redis refuses.
                _ => return Err(StorageError::new(format!("counter `{key}` is not in the store's encoding"))),
            },
        };
        let next = current.checked_add(delta).ok_or_else(|| StorageError::new("counter overflow"))?;
        state.data.insert(key.to_owned(), encoding.encode(next));
        Ok(next)
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_operations() {
        let store = MemoryStorage::new();
        assert_eq!(store.get("a").unwrap(), None);
        store.set("a", b"1").unwrap();
        assert_eq!(store.get("a").unwrap().unwrap(), b"1");
        assert_eq!(
            store.compare_and_swap("a", Some(b"0"), b"2").unwrap(),
            CasOutcome::Conflict { current: Some(b"1".to_vec()) }
        );
        assert_eq!(store.compare_and_swap("a", Some(b"1"), b"2").unwrap(), CasOutcome::Swapped);
        assert_eq!(store.compare_and_swap("b", None, b"x").unwrap(), CasOutcome::Swapped);
        assert_eq!(
            store.compare_and_swap("b", None, b"y").unwrap(),
            CasOutcome::Conflict { current: Some(b"x".to_vec()) }
        );
        store.delete("a").unwrap();
        store.delete("missing").unwrap();
        assert_eq!(store.increment("n", 5).unwrap(), 5);
        assert_eq!(store.increment("n", -2).unwrap(), 3);
        assert_eq!(store.increment("n", 0).unwrap(), 3);
        assert!(store.increment("n", i64::MAX).is_err());
        assert_eq!(store.list_keys().unwrap(), ["b", "n"]);
    }

    #[test]
    fn enforces_limits() {
        let store = MemoryStorage::new();
        assert!(store.set(&"k".repeat(MAX_KEY_BYTES + 1), b"").is_err());
        assert!(store.set("k", &vec![0; MAX_VALUE_BYTES + 1]).is_err());
        assert!(store.set("k", &vec![0; MAX_VALUE_BYTES]).is_ok());
    }

    #[test]
    fn faults() {
        let store = MemoryStorage::new();
        store.set_fault(Some(Fault::FailWrite(1)));
        store.set("a", b"").unwrap();
        assert!(store.set("b", b"").is_err());
        store.set("c", b"").unwrap();
        store.set_fault(Some(Fault::CrashAtWrite(4)));
        store.set("d", b"").unwrap();
        assert!(store.set("e", b"").is_err());
        assert!(store.delete("a").is_err());
        assert!(store.increment("n", 1).is_err());
        assert_eq!(store.keys(), ["a", "c", "d"]);
        assert_eq!(store.write_count(), 7);
    }
}

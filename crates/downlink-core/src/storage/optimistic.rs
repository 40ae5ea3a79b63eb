//! [`OptimisticKv`]: the [`Storage`] contract, as nearly as it can be kept, on a store that has
//! only get, set, delete and list — `wasi:keyvalue/store` alone, which is all Fermyon Wasm
//! Functions and Fermyon Cloud provide (no `atomics`, and on Cloud no `batch`).
//!
//! Without an atomic primitive no layer can elect one winner among concurrent writers, so the
//! contract is weaker here, and the README's platform table says where:
//!
//! - **compare-and-swap** reads the key, compares, writes, and then *confirms*: it waits a
//!   settle time and reads the key again. A writer that finds someone else's value there reports
//!   a conflict, and [`cas_update`](super::cas_update) merges again on top of that value (every
//!   read-modify-write in the core is idempotent, so merging twice changes nothing). The writer
//!   it cannot see is one that read before our write and wrote after our confirming read, i.e.
//!   one whose read-to-write gap is longer than our settle time: its value replaces ours (last
//!   writer wins). The settle time is twice what our own read and write took (at least
//!   [`MIN_SETTLE`], at most [`MAX_SETTLE`]), since a competing writer's gap is that same pair of
//!   calls. Measured on the dev host's Wasm Functions profile: without the confirming read, 20
//!   concurrent uploads into one directory lost one listing entry in a run and 1,000 uploads by
//!   4 clients lost 10; with it, none in three runs (the README's platform table). What is lost
//!   is an index entry or a counter step, never file bytes: garbage collection re-links a file
//!   missing from its directory.
//! - **increment** is the same write-and-confirm on a decimal counter: concurrent increments are
//!   added on top of each other when the confirmation sees them, so counters (bandwidth used,
//!   history sequence numbers, running downloads) are exact unless two writers interleave
//!   within the settle time.
//! - **Contention**: a writer whose confirmation found another writer's value backs off before
//!   it tries again, for a random time that doubles with each conflict in a row (from
//!   [`MIN_SETTLE`] up to [`MAX_BACKOFF`]). Without it, 30 downloads ending at once overwrote
//!   each other's history counter step until every one gave up.
//! - On a globally replicated store with read-your-writes only within a request (Wasm
//!   Functions), the confirming read sees our own write even when another region wrote too, so
//!   there the outcome is last-writer-wins across regions.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::{CasOutcome, Storage, StorageError};
use crate::backoff::{clock_jitter, Backoff};

/// The shortest wait before a confirming read.
pub const MIN_SETTLE: Duration = Duration::from_millis(5);
/// The longest wait before a confirming read (a slow store should not make every write slow).
pub const MAX_SETTLE: Duration = Duration::from_millis(250);
/// The longest back-off after a conflict.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The operations every key-value host provides (`wasi:keyvalue/store`).
pub trait PlainKv {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores `value` under `key`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Removes `key`; removing an absent key succeeds.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Every key in the store.
    fn list_keys(&self) -> Result<Vec<String>, StorageError>;
}

/// [`Storage`] over a [`PlainKv`] store: compare-and-swap and counters by read, write and a
/// confirming read after a settle time (see the module docs for what that guarantees).
pub struct OptimisticKv<P> {
    raw: P,
    pause: fn(Duration),
    /// Conflicts in a row seen by this handle (one request's), for the back-off.
    conflicts: Cell<u32>,
}

impl<P: PlainKv> OptimisticKv<P> {
    /// Wraps `raw`; `pause` sleeps (the settle time before a confirming read).
    pub fn new(raw: P, pause: fn(Duration)) -> Self {
        OptimisticKv { raw, pause, conflicts: Cell::new(0) }
    }

    /// After a conflict: waits a random time that doubles with each conflict in a row, so that
    /// contending writers spread out instead of overwriting each other in lockstep.
    fn back_off(&self) {
        let in_a_row = self.conflicts.get().min(16);
        self.conflicts.set(in_a_row + 1);
        let backoff = Backoff { first: MIN_SETTLE, max: MAX_BACKOFF };
        (self.pause)(backoff.delay(in_a_row + 1, clock_jitter()));
    }

    /// Writes `value`, waits twice as long as the read that preceded it (`since`) and the write
    /// took, and reads the key again: what is there now.
    fn write_and_confirm(&self, key: &str, value: &[u8], since: Instant) -> Result<Option<Vec<u8>>, StorageError> {
        self.raw.set(key, value)?;
        (self.pause)((since.elapsed() * 2).clamp(MIN_SETTLE, MAX_SETTLE));
        self.raw.get(key)
    }

    /// The store underneath.
    pub fn raw(&self) -> &P {
        &self.raw
    }
}

/// A counter's value as this layer stores it: decimal text (absent counts as 0).
fn decode_counter(key: &str, bytes: Option<&[u8]>) -> Result<i64, StorageError> {
    let Some(bytes) = bytes else { return Ok(0) };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StorageError::new(format!("counter {key:?} holds {} bytes that are not a number", bytes.len())))
}

impl<P: PlainKv> Storage for OptimisticKv<P> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.raw.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.raw.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.raw.delete(key)
    }

    /// A number handed out twice shows as someone else's value before or after our write.
    fn set_numbered(&self, key: &str, value: &[u8]) -> Result<bool, StorageError> {
        let started = Instant::now();
        if self.raw.get(key)?.is_some_and(|held| held != value) {
            return Ok(false);
        }
        Ok(self.write_and_confirm(key, value, started)?.as_deref() == Some(value))
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
        let started = Instant::now();
        let current = self.raw.get(key)?;
        if current.as_deref() != expected {
            return Ok(CasOutcome::Conflict { current });
        }
        match self.write_and_confirm(key, new, started)? {
            Some(now) if now == new => {
                self.conflicts.set(0);
                Ok(CasOutcome::Swapped)
            }
            now => {
                self.back_off();
                Ok(CasOutcome::Conflict { current: now })
            }
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let mut started = Instant::now();
        let mut current = decode_counter(key, self.raw.get(key)?.as_deref())?;
        if delta == 0 {
            return Ok(current);
        }
        for _ in 0..super::MAX_CAS_ATTEMPTS {
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StorageError::new(format!("counter {key:?} would overflow")))?;
            let now =
                decode_counter(key, self.write_and_confirm(key, next.to_string().as_bytes(), started)?.as_deref())?;
            if now == next {
                self.conflicts.set(0);
                return Ok(next);
            }
            // Someone else wrote in between: add our delta to what they left, after a pause.
            self.back_off();
            started = Instant::now();
            current = decode_counter(key, self.raw.get(key)?.as_deref())?;
        }
        Err(StorageError::new(format!("counter {key:?}: gave up after {} conflicting writes", super::MAX_CAS_ATTEMPTS)))
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        self.raw.list_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{cas_update, CasStep, MemoryStorage};
    use std::cell::RefCell;

    /// A plain store over [`MemoryStorage`] that can run another writer right after our next
    /// `set` of a key (between the write and its read-back), and fails the test if anything but
    /// the plain operations is used.
    #[derive(Default)]
    struct Plain {
        inner: MemoryStorage,
        after_next_set: RefCell<Option<(String, Vec<u8>)>>,
    }

    impl PlainKv for Plain {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            self.inner.set(key, value)?;
            let interloper = self.after_next_set.borrow_mut().take_if(|(k, _)| k == key);
            if let Some((key, value)) = interloper {
                self.inner.set(&key, &value)?;
            }
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
        fn list_keys(&self) -> Result<Vec<String>, StorageError> {
            self.inner.list_keys()
        }
    }

    fn store() -> OptimisticKv<Plain> {
        OptimisticKv::new(Plain::default(), |_| {})
    }

    #[test]
    fn swaps_when_the_value_is_as_expected_and_reports_it_otherwise() {
        let kv = store();
        assert_eq!(kv.compare_and_swap("k", None, b"a").unwrap(), CasOutcome::Swapped);
        assert_eq!(
            kv.compare_and_swap("k", None, b"b").unwrap(),
            CasOutcome::Conflict { current: Some(b"a".to_vec()) }
        );
        assert_eq!(kv.compare_and_swap("k", Some(b"a"), b"b").unwrap(), CasOutcome::Swapped);
        assert_eq!(kv.get("k").unwrap().unwrap(), b"b");
    }

    #[test]
    fn a_writer_seen_in_the_read_back_is_a_conflict_and_cas_update_merges_on_top() {
        let kv = store();
        kv.set("set", b"a").unwrap();
        *kv.raw().after_next_set.borrow_mut() = Some(("set".into(), b"a,other".to_vec()));
        cas_update(&kv, "set", |current| {
            let mut items: Vec<&str> = std::str::from_utf8(current.unwrap()).unwrap().split(',').collect();
            if items.contains(&"mine") {
                return Ok(CasStep::Done(()));
            }
            items.push("mine");
            Ok(CasStep::Write(items.join(",").into_bytes(), ()))
        })
        .unwrap();
        assert_eq!(kv.get("set").unwrap().unwrap(), b"a,other,mine", "neither writer's entry was lost");
    }

    #[test]
    fn a_numbered_key_someone_else_holds_is_not_ours() {
        let kv = store();
        assert!(kv.set_numbered("n:1", b"mine").unwrap());
        assert!(!kv.set_numbered("n:1", b"theirs").unwrap(), "held before the write");
        *kv.raw().after_next_set.borrow_mut() = Some(("n:2".into(), b"theirs".to_vec()));
        assert!(!kv.set_numbered("n:2", b"mine").unwrap(), "overwritten before the confirming read");
        assert_eq!(kv.get("n:1").unwrap().unwrap(), b"mine", "a refusal never overwrites");
    }

    #[test]
    fn counters_are_decimal_and_add_on_top_of_a_concurrent_increment() {
        let kv = store();
        assert_eq!(kv.increment("n", 0).unwrap(), 0);
        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        *kv.raw().after_next_set.borrow_mut() = Some(("n".into(), b"10".to_vec()));
        assert_eq!(kv.increment("n", 2).unwrap(), 12, "our +2 lands on the other writer's 10");
        assert_eq!(kv.get("n").unwrap().unwrap(), b"12");
        assert!(kv.increment("n", i64::MAX).is_err());
        kv.set("garbage", b"\x01\x02").unwrap();
        let err = kv.increment("garbage", 1).unwrap_err();
        assert!(err.message.contains("not a number"), "{}", err.message);
    }
}

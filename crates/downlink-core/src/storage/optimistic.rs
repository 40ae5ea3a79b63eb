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
//! - **increment** is the same write-and-confirm on a counter that also names the increments
//!   that made it: decimal text, then the tags of the last [`COUNTER_TAGS`] increments
//!   (`<total>;<tag>,<tag>,…`). A writer whose confirming read shows another value looks for its
//!   own tag there: present, a concurrent increment was added on top of ours and ours counts;
//!   absent, ours was overwritten and is added again on top. Without the tags the two cases look
//!   alike, and adding again after the first double-counted (seen in CI: two downloads of one
//!   principal overlapping counted one of them twice). Counters (bandwidth used, running
//!   downloads) are exact unless a writer's read-to-write gap is longer than our settle time.
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
/// How many of the latest increments a counter names. A writer finds its own tag if fewer than
/// this many increments landed on top of it before its confirming read.
pub const COUNTER_TAGS: usize = 32;

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
    /// Random 64-bit values, for the tag of each increment.
    random: fn() -> u64,
    /// Conflicts in a row seen by this handle (one request's), for the back-off.
    conflicts: Cell<u32>,
}

impl<P: PlainKv> OptimisticKv<P> {
    /// Wraps `raw`; `pause` sleeps (the settle time before a confirming read), `random` gives
    /// random 64-bit values (the tag that tells an increment its own write in a counter).
    pub fn new(raw: P, pause: fn(Duration), random: fn() -> u64) -> Self {
        OptimisticKv { raw, pause, random, conflicts: Cell::new(0) }
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

/// A counter as this layer stores it: the total in decimal, then the tags of the increments
/// that made it, newest last (`<total>;<tag>,<tag>,…`); a bare decimal (no tags) reads too, and
/// an absent key is 0 with no tags.
#[derive(Debug, Default, PartialEq, Eq)]
struct TaggedCounter {
    total: i64,
    tags: Vec<u64>,
}

impl TaggedCounter {
    fn decode(key: &str, bytes: Option<&[u8]>) -> Result<TaggedCounter, StorageError> {
        let Some(bytes) = bytes else { return Ok(TaggedCounter::default()) };
        let invalid =
            || StorageError::new(format!("counter {key:?} holds {} bytes that are not a counter", bytes.len()));
        let text = std::str::from_utf8(bytes).map_err(|_| invalid())?;
        let (total, tags) = text.split_once(';').unwrap_or((text, ""));
        Ok(TaggedCounter {
            total: total.parse().map_err(|_| invalid())?,
            tags: tags
                .split(',')
                .filter(|tag| !tag.is_empty())
                .map(|tag| u64::from_str_radix(tag, 16).map_err(|_| invalid()))
                .collect::<Result<_, _>>()?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let tags: Vec<String> = self.tags.iter().map(|tag| format!("{tag:016x}")).collect();
        format!("{};{}", self.total, tags.join(",")).into_bytes()
    }

    /// This counter with `delta` added by the increment tagged `tag`.
    fn add(&self, key: &str, delta: i64, tag: u64) -> Result<TaggedCounter, StorageError> {
        let total = self
            .total
            .checked_add(delta)
            .ok_or_else(|| StorageError::new(format!("counter {key:?} would overflow")))?;
        let kept = self.tags.len().saturating_sub(COUNTER_TAGS - 1);
        let tags = self.tags[kept..].iter().copied().chain([tag]).collect();
        Ok(TaggedCounter { total, tags })
    }

    /// Whether the increment tagged `tag` is part of this value.
    fn counts(&self, tag: u64) -> bool {
        self.tags.contains(&tag)
    }
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

    /// Returns the total right after our increment, as an atomic increment would.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let mut started = Instant::now();
        let mut current = TaggedCounter::decode(key, self.raw.get(key)?.as_deref())?;
        if delta == 0 {
            return Ok(current.total);
        }
        let tag = (self.random)();
        for _ in 0..super::MAX_CAS_ATTEMPTS {
            let next = current.add(key, delta, tag)?;
            let now = TaggedCounter::decode(key, self.write_and_confirm(key, &next.encode(), started)?.as_deref())?;
            if now.counts(tag) {
                // Ours, perhaps with other increments on top: counted once.
                self.conflicts.set(0);
                return Ok(next.total);
            }
            // Overwritten by a writer that had not seen ours: add it again on top, after a
            // pause — unless a slow writer that had seen it has written since.
            self.back_off();
            started = Instant::now();
            current = TaggedCounter::decode(key, self.raw.get(key)?.as_deref())?;
            if current.counts(tag) {
                self.conflicts.set(0);
                return Ok(next.total);
            }
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

    /// Another writer's value, made from the one our `set` just wrote.
    type Interloper = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// A plain store over [`MemoryStorage`] that can run another writer right after our next
    /// `set` of a key (between the write and its read-back), and fails the test if anything but
    /// the plain operations is used.
    #[derive(Default)]
    struct Plain {
        inner: MemoryStorage,
        after_next_set: RefCell<Option<(String, Interloper)>>,
    }

    impl PlainKv for Plain {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            self.inner.set(key, value)?;
            let interloper = self.after_next_set.borrow_mut().take_if(|(k, _)| k == key);
            if let Some((key, theirs)) = interloper {
                self.inner.set(&key, &theirs(value))?;
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

    impl Plain {
        /// Right after our next `set` of `key`, before its confirming read, another writer
        /// stores `theirs(what we wrote)`.
        fn interlope(&self, key: &str, theirs: impl Fn(&[u8]) -> Vec<u8> + 'static) {
            *self.after_next_set.borrow_mut() = Some((key.into(), Box::new(theirs)));
        }
    }

    fn store() -> OptimisticKv<Plain> {
        OptimisticKv::new(Plain::default(), |_| {}, next_tag)
    }

    /// Distinct tags, as random ones are.
    fn next_tag() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter's total, read as the core reads it.
    fn total(kv: &OptimisticKv<Plain>, key: &str) -> i64 {
        kv.increment(key, 0).unwrap()
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
        kv.raw().interlope("set", |_| b"a,other".to_vec());
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
        kv.raw().interlope("n:2", |_| b"theirs".to_vec());
        assert!(!kv.set_numbered("n:2", b"mine").unwrap(), "overwritten before the confirming read");
        assert_eq!(kv.get("n:1").unwrap().unwrap(), b"mine", "a refusal never overwrites");
    }

    #[test]
    fn counters_add_and_read_back_with_or_without_tags() {
        let kv = store();
        assert_eq!(kv.increment("n", 0).unwrap(), 0);
        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        assert_eq!(kv.increment("n", -2).unwrap(), 3);
        assert_eq!(total(&kv, "n"), 3);
        // A counter stored as a bare decimal (no tags) is read and added to.
        kv.set("plain", b"40").unwrap();
        assert_eq!(kv.increment("plain", 2).unwrap(), 42);
        assert!(kv.increment("n", i64::MAX).is_err());
        for garbage in [&b"\x01\x02"[..], b"12;zz", b"x;"] {
            kv.set("garbage", garbage).unwrap();
            let err = kv.increment("garbage", 1).unwrap_err();
            assert!(err.message.contains("not a counter"), "{}", err.message);
        }
    }

    #[test]
    fn an_increment_overwritten_by_a_writer_that_missed_it_is_added_again() {
        let kv = store();
        kv.increment("n", 5).unwrap();
        // Between our write (5 + 2) and our confirming read, a writer that read 5 before us
        // stores 5 + 10: our +2 is gone and must be added on top.
        let before = kv.get("n").unwrap();
        kv.raw().interlope("n", move |_| {
            TaggedCounter::decode("n", before.as_deref()).unwrap().add("n", 10, u64::MAX).unwrap().encode()
        });
        kv.increment("n", 2).unwrap();
        assert_eq!(total(&kv, "n"), 17, "our +2 lands on the other writer's 15");
    }

    #[test]
    fn an_increment_with_another_on_top_counts_once() {
        let kv = store();
        kv.increment("n", 5).unwrap();
        // Between our write (5 + 2) and our confirming read, a writer that saw ours adds 10:
        // the value is no longer ours but includes ours (what CI saw counted twice).
        kv.raw().interlope("n", |ours| {
            TaggedCounter::decode("n", Some(ours)).unwrap().add("n", 10, u64::MAX).unwrap().encode()
        });
        assert_eq!(kv.increment("n", 2).unwrap(), 7, "the total right after our increment");
        assert_eq!(total(&kv, "n"), 17, "5 + 2 + 10: ours is not added twice");
    }

    #[test]
    fn a_counter_names_only_its_latest_increments() {
        let kv = store();
        for _ in 0..COUNTER_TAGS + 8 {
            kv.increment("n", 1).unwrap();
        }
        let counter = TaggedCounter::decode("n", kv.get("n").unwrap().as_deref()).unwrap();
        assert_eq!(counter.total, (COUNTER_TAGS + 8) as i64);
        assert_eq!(counter.tags.len(), COUNTER_TAGS);
        assert!(counter.encode().len() < 1024, "a counter stays small: {} bytes", counter.encode().len());
    }
}

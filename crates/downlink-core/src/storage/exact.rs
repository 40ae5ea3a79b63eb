//! [`ExactKv`]: the [`Storage`] contract (exact compare-and-swap, atomic create-if-absent,
//! counters) on top of a key-value store whose own operations are weaker, as Spin 4.0.2's are.
//!
//! What Spin 4.0.2 does (read from its `crates/key-value-spin` and `crates/key-value-redis`)
//! and what this layer makes of it:
//!
//! | Spin 4.0.2 | SQLite store | Redis store | here |
//! |---|---|---|---|
//! | `swap` on a key `current` found | exact (`UPDATE … WHERE value = old`) | written only if unchanged since `WATCH`, but **always reported as failed** (`UNWATCH key` is rejected) | a failed swap whose value now reads back as ours counts as swapped |
//! | `swap` on a key `current` found absent | **unconditional upsert**, reported as success | as above | create-if-absent never uses it: a *claim* (`increment` of `claim:<sha256(key)>`, atomic on both) elects the one creator; a deleted key of this kind is kept as an empty *tombstone* ([`Storage::retire`]) so it is never absent again |
//! | `increment` | 8-byte little-endian `i64`; any other stored value **panics the host** and breaks the store until restart | `INCRBY` (decimal text) | the store's encoding is probed once; on a store of 8-byte counters, a counter in the other encoding (decimal text left by an older dev host) is rewritten before it is incremented, an unreadable one is an error, never a panic |
//!
//! Read-back is exact for deciding *swapped* (values written through compare-and-swap are
//! unique to their writer: they carry blob ids, download ids, timestamps), but on Redis a
//! value overwritten by the next writer within the read-back's few milliseconds is seen as a
//! conflict: [`cas_update`](super::cas_update) then re-decides on the newer value, so every
//! read-modify-write in the core is written to be idempotent (inserting an entry that is
//! already there changes nothing).

use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{CasOutcome, Storage, StorageError};

/// Prefix of the claim counters that elect the creator of a key.
pub const CLAIM_PREFIX: &str = "claim:";

/// The counter whose stored bytes reveal how the store encodes counters.
pub const COUNTER_PROBE_KEY: &str = "counter-encoding-probe";

/// How long a second creator waits for the elected one to store its value before it assumes
/// the creator died between its claim and its write, and stores a tombstone itself.
pub const CREATE_WAIT: Duration = Duration::from_secs(2);

/// The first pause while waiting for a creator; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The bytes of a retired key (see [`Storage::retire`]). No stored value is empty: records
/// are JSON and chunks are never empty.
const TOMBSTONE: &[u8] = b"";

/// Attempts at rewriting a counter left in the other encoding.
const MAX_REWRITES: usize = 3;

/// How a store encodes counters, as seen through `get` of a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterEncoding {
    /// 8 little-endian bytes of an `i64` (Spin's SQLite store).
    LittleEndian,
    /// Decimal text (Redis `INCRBY`; the dev host's SQLite store before it matched Spin).
    Decimal,
}

impl CounterEncoding {
    /// Recognises `bytes` as a counter of either encoding. 8 bytes that are all digits are
    /// decimal text: as little-endian they would be a counter above 3.4 × 10¹⁸.
    pub fn decode(bytes: &[u8]) -> Option<(CounterEncoding, i64)> {
        let text = std::str::from_utf8(bytes)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
        if let Some(value) = text.and_then(|t| t.parse().ok()) {
            return Some((CounterEncoding::Decimal, value));
        }
        let exact: [u8; 8] = bytes.try_into().ok()?;
        Some((CounterEncoding::LittleEndian, i64::from_le_bytes(exact)))
    }

    /// `value` in this encoding.
    pub fn encode(self, value: i64) -> Vec<u8> {
        match self {
            CounterEncoding::LittleEndian => value.to_le_bytes().to_vec(),
            CounterEncoding::Decimal => value.to_string().into_bytes(),
        }
    }
}

/// The claim counter of `key` (fixed length, so any key fits the key limit).
pub fn claim_key(key: &str) -> String {
    format!("{CLAIM_PREFIX}{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// The [`Storage`] contract over a raw store `S` whose `compare_and_swap` is Spin's: it may
/// report a conflict after writing, and it may overwrite a key created meanwhile when it
/// expected none. See the module docs.
pub struct ExactKv<S> {
    raw: S,
    pause: fn(Duration),
    counters: OnceLock<CounterEncoding>,
}

impl<S: Storage> ExactKv<S> {
    /// Wraps `raw`; `pause` sleeps (the only waiting is for a concurrent creator).
    pub fn new(raw: S, pause: fn(Duration)) -> Self {
        ExactKv { raw, pause, counters: OnceLock::new() }
    }

    /// The raw store underneath.
    pub fn raw(&self) -> &S {
        &self.raw
    }

    /// The store's counter encoding, probed once: a counter incremented by zero and read back.
    fn counter_encoding(&self) -> Result<CounterEncoding, StorageError> {
        if let Some(encoding) = self.counters.get() {
            return Ok(*encoding);
        }
        self.raw.increment(COUNTER_PROBE_KEY, 0)?;
        let bytes = self.raw.get(COUNTER_PROBE_KEY)?.unwrap_or_default();
        let (encoding, _) = CounterEncoding::decode(&bytes)
            .ok_or_else(|| StorageError::new(format!("the store keeps counters as {bytes:?}, an unknown encoding")))?;
        Ok(*self.counters.get_or_init(|| encoding))
    }

    /// Swap against a value that exists (a tombstone included); exact on both Spin stores once
    /// a failed report is checked against what is stored now.
    fn swap_existing(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<CasOutcome, StorageError> {
        match self.raw.compare_and_swap(key, Some(expected), new)? {
            CasOutcome::Swapped => Ok(CasOutcome::Swapped),
            CasOutcome::Conflict { current } if current.as_deref() == Some(new) => Ok(CasOutcome::Swapped),
            CasOutcome::Conflict { current } => Ok(CasOutcome::Conflict { current: visible(current) }),
        }
    }

    /// Create-if-absent: the claim elects one creator per key, ever; everyone else sees the
    /// key as it is now (or, after a retire, as a tombstone to swap against).
    fn create(&self, key: &str, new: &[u8]) -> Result<CasOutcome, StorageError> {
        if self.raw.increment(&claim_key(key), 1)? == 1 {
            self.raw.set(key, new)?;
            return Ok(CasOutcome::Swapped);
        }
        let mut waited = Duration::ZERO;
        let mut pause = FIRST_PAUSE;
        loop {
            match self.raw.get(key)? {
                Some(bytes) if bytes == TOMBSTONE => return self.swap_existing(key, TOMBSTONE, new),
                Some(bytes) => return Ok(CasOutcome::Conflict { current: Some(bytes) }),
                None if waited >= CREATE_WAIT => {
                    // The elected creator died between its claim and its write.
                    self.raw.set(key, TOMBSTONE)?;
                    return self.swap_existing(key, TOMBSTONE, new);
                }
                None => {
                    (self.pause)(pause);
                    waited += pause;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }
}

/// A tombstone reads as absent.
fn visible(value: Option<Vec<u8>>) -> Option<Vec<u8>> {
    value.filter(|bytes| bytes != TOMBSTONE)
}

impl<S: Storage> Storage for ExactKv<S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.raw.get(key).map(visible)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.raw.set(key, value)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        self.raw.set_many(entries)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.raw.delete(key)
    }

    fn retire(&self, key: &str) -> Result<(), StorageError> {
        // Only keys that exist get a tombstone: retiring an absent key changes nothing.
        match self.raw.get(key)? {
            None => Ok(()),
            Some(_) => self.raw.set(key, TOMBSTONE),
        }
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
        match expected {
            Some(expected) => self.swap_existing(key, expected, new),
            None => match self.raw.get(key)? {
                None => self.create(key, new),
                Some(bytes) if bytes == TOMBSTONE => self.swap_existing(key, TOMBSTONE, new),
                Some(bytes) => Ok(CasOutcome::Conflict { current: Some(bytes) }),
            },
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let encoding = self.counter_encoding()?;
        // Only a store of 8-byte counters (Spin's SQLite) panics on a value it cannot read; a
        // decimal one (Redis `INCRBY`) refuses it with an error, so it needs no read first.
        if encoding == CounterEncoding::Decimal {
            return self.raw.increment(key, delta);
        }
        // A counter left in the other encoding (an older dev host wrote decimal text into
        // Spin's SQLite file) is rewritten first: Spin would panic on it. The rewrite is a
        // swap against the value seen; whoever wins, the next read shows the right encoding.
        for _ in 0..MAX_REWRITES {
            let Some(bytes) = self.raw.get(key)? else { break };
            match CounterEncoding::decode(&bytes) {
                Some((found, _)) if found == encoding => return self.raw.increment(key, delta),
                Some((_, value)) => {
                    self.raw.compare_and_swap(key, Some(&bytes), &encoding.encode(value))?;
                }
                None => return Err(StorageError::new(format!("counter `{key}` holds an unreadable value"))),
            }
        }
        match self.raw.get(key)? {
            Some(bytes) if CounterEncoding::decode(&bytes).map(|(found, _)| found) != Some(encoding) => {
                Err(StorageError::new(format!("counter `{key}` could not be rewritten in the store's encoding")))
            }
            _ => self.raw.increment(key, delta),
        }
    }

    fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        self.raw.list_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobId;
    use crate::delivery::{ReadCheck, StoredContent};
    use crate::path::StoragePath;
    use crate::storage::{
        cas_update, list_dir, read_meta, write_file, CasStep, MemoryStorage, Semantics, WriteOptions,
    };
    use std::sync::Arc;

    fn no_pause(_: Duration) {}

    fn exact(semantics: Semantics) -> ExactKv<MemoryStorage> {
        ExactKv::new(MemoryStorage::with_semantics(semantics), no_pause)
    }

    /// Adds `item` to a JSON list at `key`, as the core's index updates do.
    fn add_item<S: Storage>(storage: &S, key: &str, item: &str) -> Result<(), crate::error::ApiError> {
        cas_update(storage, key, |current| {
            let mut items: Vec<String> = current.map(|b| serde_json::from_slice(b).unwrap()).unwrap_or_default();
            if items.iter().any(|i| i == item) {
                return Ok(CasStep::Done(()));
            }
            items.push(item.to_owned());
            Ok(CasStep::Write(serde_json::to_vec(&items).unwrap(), ()))
        })
    }

    #[test]
    fn raw_spin_sqlite_create_is_an_upsert_that_loses_a_concurrent_creator() {
        // The behaviour ExactKv exists for, as the memory store emulates it.
        let raw = MemoryStorage::with_semantics(Semantics::SpinSqlite);
        raw.before_next_cas("k", |store: &MemoryStorage| store.set("k", b"theirs").unwrap());
        assert_eq!(raw.compare_and_swap("k", None, b"mine").unwrap(), CasOutcome::Swapped);
        assert_eq!(raw.get("k").unwrap().unwrap(), b"mine", "theirs was silently overwritten");
    }

    #[test]
    fn raw_spin_redis_swap_writes_but_reports_a_conflict() {
        let raw = MemoryStorage::with_semantics(Semantics::SpinRedis);
        raw.set("k", b"old").unwrap();
        assert_eq!(
            raw.compare_and_swap("k", Some(b"old"), b"new").unwrap(),
            CasOutcome::Conflict { current: Some(b"new".to_vec()) }
        );
        // Without ExactKv a read-modify-write that is not idempotent is applied twice.
        let bump = |current: Option<&[u8]>| {
            let n: u32 = current.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
            Ok(CasStep::Write((n + 1).to_string().into_bytes(), ()))
        };
        cas_update(&raw, "n", bump).unwrap_or(());
        assert_ne!(raw.get("n").unwrap().unwrap(), b"1", "the landed write was taken for a conflict");
        let store = ExactKv::new(MemoryStorage::with_semantics(Semantics::SpinRedis), no_pause);
        cas_update(&store, "n", bump).unwrap();
        assert_eq!(store.get("n").unwrap().unwrap(), b"1");
    }

    #[test]
    fn exact_swaps_on_redis_semantics_succeed_once() {
        let store = exact(Semantics::SpinRedis);
        add_item(&store, "list", "a").unwrap();
        add_item(&store, "list", "b").unwrap();
        assert_eq!(store.get("list").unwrap().unwrap(), br#"["a","b"]"#);
        store.raw().before_next_cas("list", |raw: &MemoryStorage| raw.set("list", br#"["x"]"#).unwrap());
        add_item(&store, "list", "c").unwrap();
        assert_eq!(store.get("list").unwrap().unwrap(), br#"["x","c"]"#, "a real conflict is retried");
    }

    #[test]
    fn concurrent_creators_of_one_key_all_land_on_sqlite_and_redis_semantics() {
        for semantics in [Semantics::SpinSqlite, Semantics::SpinRedis, Semantics::Exact] {
            for round in 0..20 {
                let store = Arc::new(ExactKv::new(MemoryStorage::with_semantics(semantics), std::thread::sleep));
                let key = format!("dir:{round}");
                let threads: Vec<_> = (0..8)
                    .map(|n| {
                        let (store, key) = (store.clone(), key.clone());
                        std::thread::spawn(move || add_item(&*store, &key, &format!("f{n}")).unwrap())
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().unwrap());
                let items: Vec<String> = serde_json::from_slice(&store.get(&key).unwrap().unwrap()).unwrap();
                assert_eq!(items.len(), 8, "{semantics:?} round {round}: {items:?}");
            }
        }
    }

    #[test]
    fn a_creator_that_died_after_its_claim_does_not_block_the_key() {
        let store = exact(Semantics::SpinSqlite);
        store.raw().increment(&claim_key("k"), 1).unwrap();
        assert_eq!(store.compare_and_swap("k", None, b"v").unwrap(), CasOutcome::Swapped);
        assert_eq!(store.get("k").unwrap().unwrap(), b"v");
        assert_eq!(
            store.compare_and_swap("k", None, b"w").unwrap(),
            CasOutcome::Conflict { current: Some(b"v".to_vec()) }
        );
    }

    #[test]
    fn a_retired_key_reads_absent_and_is_created_again_by_swap() {
        let store = exact(Semantics::SpinSqlite);
        assert_eq!(store.compare_and_swap("k", None, b"v").unwrap(), CasOutcome::Swapped);
        store.retire("k").unwrap();
        assert_eq!(store.get("k").unwrap(), None);
        assert_eq!(store.raw().get("k").unwrap().unwrap(), TOMBSTONE, "kept as a tombstone");
        store.raw().before_next_cas("k", |raw: &MemoryStorage| raw.set("k", b"theirs").unwrap());
        assert_eq!(
            store.compare_and_swap("k", None, b"mine").unwrap(),
            CasOutcome::Conflict { current: Some(b"theirs".to_vec()) },
            "re-creation is a swap against the tombstone, so a concurrent creator is seen"
        );
        store.retire("never-there").unwrap();
        assert_eq!(store.raw().get("never-there").unwrap(), None);
    }

    #[test]
    fn counters_follow_the_store_encoding_and_legacy_text_is_rewritten() {
        let sqlite = exact(Semantics::SpinSqlite);
        sqlite.raw().set("usage:alice", b"3000").unwrap();
        assert!(sqlite.raw().increment("usage:alice", 1).is_err(), "Spin's SQLite store cannot increment text");
        assert_eq!(sqlite.increment("usage:alice", 1).unwrap(), 3001);
        assert_eq!(sqlite.raw().get("usage:alice").unwrap().unwrap(), 3001i64.to_le_bytes());
        assert_eq!(sqlite.increment("fresh", 5).unwrap(), 5);

        let redis = exact(Semantics::SpinRedis);
        redis.raw().set("usage:alice", b"3000").unwrap();
        assert_eq!(redis.increment("usage:alice", 2).unwrap(), 3002);
        assert_eq!(redis.raw().get("usage:alice").unwrap().unwrap(), b"3002");

        sqlite.raw().set("garbage", b"\x01\x02\x03").unwrap();
        let err = sqlite.increment("garbage", 1).unwrap_err();
        assert!(err.message.contains("unreadable"), "{err:?}");
    }

    #[test]
    fn counter_encoding_is_recognised() {
        assert_eq!(CounterEncoding::decode(b"-42"), Some((CounterEncoding::Decimal, -42)));
        assert_eq!(CounterEncoding::decode(b"12345678"), Some((CounterEncoding::Decimal, 12_345_678)));
        assert_eq!(CounterEncoding::decode(&7i64.to_le_bytes()), Some((CounterEncoding::LittleEndian, 7)));
        assert_eq!(CounterEncoding::decode(b""), None);
        assert_eq!(CounterEncoding::decode(b"12a"), None);
    }

    #[test]
    fn parallel_uploads_into_new_directories_are_all_listed_on_spin_semantics() {
        for semantics in [Semantics::SpinSqlite, Semantics::SpinRedis] {
            let store = Arc::new(ExactKv::new(MemoryStorage::with_semantics(semantics), std::thread::sleep));
            for round in 0..5 {
                let threads: Vec<_> = (0..8)
                    .map(|n| {
                        let store = store.clone();
                        std::thread::spawn(move || {
                            let path = StoragePath::parse(&format!("r{round}/sub/f{n}.bin")).unwrap();
                            let id = BlobId::new(format!("b{round}x{n}")).unwrap();
                            let options =
                                WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() };
                            write_file(&*store, &path, id, [format!("content {n}").as_bytes()], options, 100).unwrap();
                        })
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().unwrap());
                let dir = StoragePath::parse(&format!("r{round}/sub")).unwrap();
                assert_eq!(list_dir(&*store, &dir).unwrap().len(), 8, "{semantics:?} round {round}");
            }
        }
    }

    #[test]
    fn concurrent_replacements_of_one_file_leave_one_whole_version_on_spin_semantics() {
        for semantics in [Semantics::SpinRedis, Semantics::SpinSqlite] {
            let store = Arc::new(ExactKv::new(MemoryStorage::with_semantics(semantics), std::thread::sleep));
            let path = StoragePath::parse("same.bin").unwrap();
            for round in 0..10 {
                let threads: Vec<_> = (0..6)
                    .map(|n| {
                        let (store, path) = (store.clone(), path.clone());
                        std::thread::spawn(move || {
                            let id = BlobId::new(format!("r{round}w{n}")).unwrap();
                            let options =
                                WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() };
                            write_file(
                                &*store,
                                &path,
                                id,
                                [format!("writer {n} of round {round}").as_bytes()],
                                options,
                                100,
                            )
                            .unwrap();
                        })
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().unwrap());
                let meta = read_meta(&*store, &path).unwrap().unwrap();
                let mut content = Vec::new();
                StoredContent::from(&meta).stream(&*store, 0, meta.size, ReadCheck::Crc32, &mut content).unwrap();
                let text = String::from_utf8(content).unwrap();
                assert!(text.starts_with("writer ") && text.ends_with(&format!("of round {round}")), "{text}");
                let leftover: Vec<String> = store
                    .raw()
                    .keys()
                    .into_iter()
                    .filter(|key| key.starts_with("chunk:") && !key.starts_with(&format!("chunk:{}:", meta.blob_id)))
                    .collect();
                assert!(leftover.is_empty(), "round {round}: chunks of replaced versions left: {leftover:?}");
            }
        }
    }
}

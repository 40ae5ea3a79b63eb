//! Directory indexes that scale: each directory's children as a chain of pages (a B-link list).
//!
//! A directory's index is a chain of [`DirPage`]s sorted by name. The head lives at the
//! directory's own key ([`dir_index_key`]; a directory exists while it does) and holds the first
//! names; each page holds the names from its lower bound up to where its `next` link says the
//! next page starts. A page that outgrows [`DirPage::needs_split`] splits in two: its upper half
//! is created as a new page (CAS from absent, at a key derived from its bytes), then the page is
//! swapped to its lower half plus a link to the new one. That swap is the split; a writer that
//! lands on a page that no longer covers its name follows the link (Lehman and Yao's B-link
//! tree), so no writer waits for a split and none misses one. The head's routes list the later
//! pages by lower bound, so an insert or remove reads the head, reads its page and swaps that
//! page, whatever the directory's size. Routes are added after the split and may lag; that costs
//! a link hop, never a wrong answer.
//!
//! Pages are never merged: a directory that shrinks keeps its pages (an empty page costs one read
//! when listing) until it is deleted. The head keeps routes while they fill at most half of one
//! value; separators are the shortest distinguishing prefixes of names, so that is about ten
//! thousand pages (several million entries) of typical names. Past that, new pages are reached
//! through links instead of routes: slower, still correct.
//!
//! Known race, accepted like those in the module above: a splitter that loses its swap removes
//! the page it created unless the winner's swap links to it; were the page it read restored to the
//! exact same bytes (an insert and remove of one name) before a third writer with that same view
//! completes its swap, that link would name a removed page. Readers treat a missing page as the end of the
//! chain and GC re-links files missing from listings.

use crate::blob::{dir_index_key, dir_page_key, MAX_VALUE_BYTES};
use crate::error::ApiError;
use crate::meta::{DirPage, EntryKind, PageLink};
use crate::path::StoragePath;
use crate::storage::{cas_update, cas_update_from, CasOutcome, CasStep, Storage, MAX_CAS_ATTEMPTS};
use sha2::{Digest, Sha256};

/// Why a name cannot go into a directory index.
pub(crate) enum EntryRefused {
    /// The name is already a file or directory of the other kind.
    Taken(EntryKind),
}

impl EntryRefused {
    pub(crate) fn into_error(self, dir: &StoragePath, name: &str) -> ApiError {
        let EntryRefused::Taken(existing) = self;
        let existing = match existing {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
        };
        match dir.join(name) {
            Ok(child) => ApiError::conflict(format!("`{child}` is a {existing}")),
            Err(e) => e.into(),
        }
    }
}

/// Parses a stored page; `None` (absent) is an empty page.
pub(crate) fn parse_page(dir: &StoragePath, bytes: Option<&[u8]>) -> Result<DirPage, ApiError> {
    match bytes {
        None => Ok(DirPage::new()),
        Some(bytes) => DirPage::from_json_bytes(bytes)
            .map_err(|_| ApiError::storage(format!("the index of directory `/{dir}` is corrupt"))),
    }
}

fn read_page<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, key: &str) -> Result<Option<DirPage>, ApiError> {
    match storage.get(key)? {
        None => Ok(None),
        Some(bytes) => parse_page(dir, Some(&bytes)).map(Some),
    }
}

/// The head page of `dir`'s index, `None` when the directory has none (never created, or deleted).
pub(crate) fn read_head<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Option<DirPage>, ApiError> {
    read_page(storage, dir, &dir_index_key(dir))
}

/// The page that should hold a name, as [`locate`] found it.
struct Located {
    key: String,
    /// What the key held (`None`: absent).
    bytes: Option<Vec<u8>>,
    /// `bytes` parsed.
    page: DirPage,
}

/// The page that should hold `name`, from the head's routes and then links. A missing page is
/// where the chain ends.
fn locate<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, name: &str) -> Result<Located, ApiError> {
    let head_key = dir_index_key(dir);
    let bytes = storage.get(&head_key)?;
    let page = parse_page(dir, bytes.as_deref())?;
    let mut found = Located { key: head_key, bytes, page };
    let mut link = if found.page.covers(name) { None } else { found.page.route_for(name).cloned() };
    while let Some(next) = link {
        let key = dir_page_key(dir, &next.id);
        let bytes = storage.get(&key)?;
        let page = parse_page(dir, bytes.as_deref())?;
        link = match &bytes {
            Some(_) if !page.covers(name) => page.next().filter(|after| after.low > next.low).cloned(),
            _ => None,
        };
        found = Located { key, bytes, page };
    }
    Ok(found)
}

/// A page step's view of the current value: the page [`locate`] already parsed on the first
/// attempt (which sees exactly the bytes it read), a fresh parse on retries.
fn current_page(dir: &StoragePath, located: &mut Option<DirPage>, current: Option<&[u8]>) -> Result<DirPage, ApiError> {
    match located.take() {
        Some(page) => Ok(page),
        None => parse_page(dir, current),
    }
}

/// What one attempt at changing a page found.
enum PageStep<T> {
    /// Finished with this result.
    Done(T),
    /// The page split since it was located: locate again.
    Moved,
    /// The change makes the page too large: split it (the page with the change, and the stored
    /// bytes it was made from).
    Split(DirPage, Option<Vec<u8>>),
}

/// Adds `name` as `kind` to `dir`'s index (creating the index): `Ok(true)` if it changed, or
/// why it cannot.
pub(crate) fn try_insert_entry<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    name: &str,
    kind: EntryKind,
) -> Result<Result<bool, EntryRefused>, ApiError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Located { key, bytes, page } = locate(storage, dir, name)?;
        let mut located = Some(page);
        let step = cas_update_from(storage, &key, bytes, |current| {
            let mut page = current_page(dir, &mut located, current)?;
            if !page.covers(name) {
                return Ok(CasStep::Done(PageStep::Moved));
            }
            Ok(match page.insert(name, kind) {
                Ok(false) if current.is_some() => CasStep::Done(PageStep::Done(Ok(false))),
                Ok(_) => {
                    if page.needs_split() {
                        CasStep::Done(PageStep::Split(page, current.map(<[u8]>::to_vec)))
                    } else {
                        CasStep::Write(page.to_json_bytes(), PageStep::Done(Ok(true)))
                    }
                }
                Err(conflict) => CasStep::Done(PageStep::Done(Err(EntryRefused::Taken(conflict.existing)))),
            })
        })?;
        match step {
            PageStep::Done(result) => return Ok(result),
            PageStep::Moved => {}
            PageStep::Split(page, expected) => {
                if split_page(storage, dir, &key, page, expected.as_deref())? {
                    return Ok(Ok(true));
                }
            }
        }
    }
    Err(ApiError::storage(format!("gave up after {MAX_CAS_ATTEMPTS} conflicting updates of directory `/{dir}`")))
}

/// Adds `name` as `kind` to `dir`'s index; `true` if it changed; a refusal is `409`.
pub(crate) fn insert_entry<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    name: &str,
    kind: EntryKind,
) -> Result<bool, ApiError> {
    try_insert_entry(storage, dir, name, kind)?.map_err(|refused| refused.into_error(dir, name))
}

/// Removes `name` from `dir`'s index; `true` if it was there.
pub(crate) fn remove_entry<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, name: &str) -> Result<bool, ApiError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Located { key, bytes, page } = locate(storage, dir, name)?;
        let mut located = Some(page);
        let step = cas_update_from(storage, &key, bytes, |current| {
            let mut page = current_page(dir, &mut located, current)?;
            if current.is_none() {
                return Ok(CasStep::Done(PageStep::Done(false)));
            }
            if !page.covers(name) {
                Ok(CasStep::Done(PageStep::Moved))
            } else if page.remove(name) {
                Ok(CasStep::Write(page.to_json_bytes(), PageStep::Done(true)))
            } else {
                Ok(CasStep::Done(PageStep::Done(false)))
            }
        })?;
        if let PageStep::Done(removed) = step {
            return Ok(removed);
        }
    }
    Err(ApiError::storage(format!("gave up after {MAX_CAS_ATTEMPTS} conflicting updates of directory `/{dir}`")))
}

/// Splits the page at `key` (now `page`, made from the stored `expected`); `false` if the page
/// changed meanwhile and nothing was split.
fn split_page<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    key: &str,
    page: DirPage,
    expected: Option<&[u8]>,
) -> Result<bool, ApiError> {
    let is_head = key == dir_index_key(dir);
    let (mut lower, upper, separator) = page.split();
    let upper_bytes = upper.to_json_bytes();
    // Named by its bytes: writers that split the same page the same way agree on one page.
    let id = hex::encode(&Sha256::digest(&upper_bytes)[..16]);
    let link = PageLink { low: separator, id };
    lower.link_to(link.clone());
    if is_head {
        lower.add_route(link.clone());
    }
    let upper_key = dir_page_key(dir, &link.id);
    let created = storage.compare_and_swap(&upper_key, None, &upper_bytes)? == CasOutcome::Swapped;
    match storage.compare_and_swap(key, expected, &lower.to_json_bytes())? {
        CasOutcome::Swapped => {
            if !is_head {
                add_route(storage, dir, link)?;
            }
            Ok(true)
        }
        CasOutcome::Conflict { current } => {
            let linked = current
                .as_deref()
                .and_then(|bytes| DirPage::from_json_bytes(bytes).ok())
                .is_some_and(|now| now.next() == Some(&link));
            if created && !linked {
                storage.retire(&upper_key)?;
            }
            Ok(false)
        }
    }
}

/// The head's routes may fill this much of it; the rest is for its own entries.
const MAX_ROUTE_BYTES: usize = MAX_VALUE_BYTES / 2;

/// Records a route to a new page in the head, while it has room (else the link alone finds it).
fn add_route<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, link: PageLink) -> Result<(), ApiError> {
    cas_update(storage, &dir_index_key(dir), |current| {
        if current.is_none() {
            return Ok(CasStep::Done(()));
        }
        let mut head = parse_page(dir, current)?;
        if !head.add_route(link.clone()) {
            return Ok(CasStep::Done(()));
        }
        let bytes = head.to_json_bytes();
        Ok(if bytes.len() > MAX_ROUTE_BYTES { CasStep::Done(()) } else { CasStep::Write(bytes, ()) })
    })
}

/// The names in `dir`'s index in order, from after a cursor, one page read at a time.
pub struct IndexCursor<'a, S: Storage + ?Sized> {
    storage: &'a S,
    dir: StoragePath,
    page: std::vec::IntoIter<(String, EntryKind)>,
    next: Option<PageLink>,
}

impl<'a, S: Storage + ?Sized> IndexCursor<'a, S> {
    /// Starts after `after` (at the start for `None`); `None` when `dir` has no index.
    pub(crate) fn open(storage: &'a S, dir: &StoragePath, after: Option<&str>) -> Result<Option<Self>, ApiError> {
        let located = locate(storage, dir, after.unwrap_or_default())?;
        if located.bytes.is_none() && located.key == dir_index_key(dir) {
            return Ok(None);
        }
        let mut cursor = IndexCursor { storage, dir: dir.clone(), page: Vec::new().into_iter(), next: None };
        // The located page's lower bound is at most `after`, and its links lead on.
        cursor.load(&located.page, after, None);
        Ok(Some(cursor))
    }

    /// Takes `page`'s names after `after`; `low` is the page's lower bound (`None`: unknown).
    fn load(&mut self, page: &DirPage, after: Option<&str>, low: Option<&str>) {
        self.page = page.iter_after(after).map(|(name, kind)| (name.to_owned(), kind)).collect::<Vec<_>>().into_iter();
        // Links only lead to later names; anything else (a corrupt store) ends the chain.
        self.next = page.next().filter(|link| low.is_none_or(|low| link.low.as_str() > low)).cloned();
    }

    /// The next name and its kind, reading the next page when this one is done.
    pub fn next_entry(&mut self) -> Result<Option<(String, EntryKind)>, ApiError> {
        loop {
            if let Some(entry) = self.page.next() {
                return Ok(Some(entry));
            }
            let Some(link) = self.next.take() else { return Ok(None) };
            if let Some(page) = read_page(self.storage, &self.dir, &dir_page_key(&self.dir, &link.id))? {
                self.load(&page, None, Some(&link.low));
            }
        }
    }

    /// The keys of every page after the head, in order (for deleting the directory).
    pub(crate) fn page_keys(storage: &S, dir: &StoragePath) -> Result<Vec<String>, ApiError> {
        let mut keys = Vec::new();
        let mut next = read_head(storage, dir)?.and_then(|head| head.next().cloned());
        while let Some(link) = next {
            let key = dir_page_key(dir, &link.id);
            next = read_page(storage, dir, &key)?
                .and_then(|page| page.next().filter(|after| after.low > link.low).cloned());
            keys.push(key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::blob::{classify_key, KeyKind};
    use crate::meta::{PAGE_SPLIT_BYTES, PAGE_SPLIT_ENTRIES};
    use crate::storage::{delete_dir_recursive, list_dir, write_file, MemoryStorage, StorageError, WriteOptions};

    fn dir() -> StoragePath {
        StoragePath::parse("big").unwrap()
    }

    fn name(i: usize) -> String {
        format!("file-{i:07}.txt")
    }

    /// `0..count` in a scrambled but fixed order (7919 is prime, so this is a permutation).
    fn scrambled(count: usize) -> impl Iterator<Item = usize> {
        (0..count).map(move |i| (i * 7919) % count)
    }

    fn insert(storage: &impl Storage, i: usize) {
        assert_eq!(insert_entry(storage, &dir(), &name(i), EntryKind::File).ok(), Some(true), "insert {i}");
    }

    fn names_after(storage: &impl Storage, after: Option<&str>) -> Vec<String> {
        let mut cursor = IndexCursor::open(storage, &dir(), after).unwrap().unwrap();
        let mut names = Vec::new();
        while let Some((name, _)) = cursor.next_entry().unwrap() {
            names.push(name);
        }
        names
    }

    fn page_keys(storage: &MemoryStorage) -> Vec<String> {
        storage.keys().into_iter().filter(|key| classify_key(key) == KeyKind::DirPage).collect()
    }

    #[test]
    fn pages_split_and_list_in_order_from_any_cursor() {
        let storage = MemoryStorage::new();
        scrambled(5000).for_each(|i| insert(&storage, i));
        let all: Vec<String> = (0..5000).map(name).collect();
        assert_eq!(names_after(&storage, None), all);
        assert_eq!(names_after(&storage, Some(&name(2500))), all[2501..]);
        assert_eq!(names_after(&storage, Some("file-00031")), all[3100..]);
        assert_eq!(names_after(&storage, Some("")), all);
        assert!(names_after(&storage, Some(&name(4999))).is_empty());
        assert!(names_after(&storage, Some("zzz")).is_empty());

        let pages = page_keys(&storage);
        assert!(pages.len() >= 5000 / PAGE_SPLIT_ENTRIES, "{} pages", pages.len());
        let head = read_head(&storage, &dir()).unwrap().unwrap();
        assert_eq!(head.routes().len(), pages.len(), "every page has a route");
        assert!(head.routes().iter().all(|route| route.low.len() <= name(0).len()));
        for key in pages.iter().chain([&dir_index_key(&dir())]) {
            let page = DirPage::from_json_bytes(&storage.get(key).unwrap().unwrap()).unwrap();
            assert!(page.len() <= PAGE_SPLIT_ENTRIES, "{key}: {} entries", page.len());
            assert!(page.to_json_bytes().len() <= PAGE_SPLIT_BYTES + head.routes().len() * 64);
        }
    }

    #[test]
    fn removes_and_conflicts_reach_the_right_page() {
        let storage = MemoryStorage::new();
        scrambled(3000).for_each(|i| insert(&storage, i));
        for i in (1..3000).step_by(2) {
            assert!(remove_entry(&storage, &dir(), &name(i)).unwrap());
        }
        assert!(!remove_entry(&storage, &dir(), &name(1)).unwrap());
        assert!(!remove_entry(&storage, &dir(), "not-there").unwrap());
        let evens: Vec<String> = (0..3000).step_by(2).map(name).collect();
        assert_eq!(names_after(&storage, None), evens);
        assert!(!insert_entry(&storage, &dir(), &name(2998), EntryKind::File).unwrap());
        let taken = insert_entry(&storage, &dir(), &name(2998), EntryKind::Dir).unwrap_err();
        assert_eq!(taken.status(), 409);
        assert!(taken.message.contains("is a file"), "{}", taken.message);
    }

    #[test]
    fn a_directory_of_pages_is_deleted_whole() {
        let storage = MemoryStorage::new();
        let tiny = WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() };
        for i in scrambled(2100) {
            let path = dir().join(&name(i)).unwrap();
            let blob = crate::blob::BlobId::new(format!("b{i}")).unwrap();
            write_file(&storage, &path, blob, [b"x"], tiny.clone(), 1).unwrap();
        }
        assert!(page_keys(&storage).len() >= 2);
        let listed = list_dir(&storage, &dir()).unwrap();
        assert_eq!(listed.len(), 2100);
        assert!(listed.windows(2).all(|pair| pair[0].path() < pair[1].path()));
        let summary = delete_dir_recursive(&storage, &dir()).unwrap();
        assert_eq!((summary.files, summary.dirs), (2100, 1));
        let left: Vec<String> = storage.keys().into_iter().filter(|key| !key.starts_with("chunk:")).collect();
        assert_eq!(left, ["dir:"], "only the root index is left (chunks are GC's)");
    }

    #[test]
    fn an_insert_during_a_split_is_kept() {
        let storage = MemoryStorage::new();
        (0..PAGE_SPLIT_ENTRIES).for_each(|i| insert(&storage, i * 2));
        // The next insert splits the head; just before its swap, another writer inserts (and
        // splits the head itself), so the first split must retry from the new pages.
        storage.before_next_cas(&dir_index_key(&dir()), |store: &MemoryStorage| insert(store, 1));
        insert(&storage, 3);
        let mut expected: BTreeSet<String> = (0..PAGE_SPLIT_ENTRIES).map(|i| name(i * 2)).collect();
        expected.extend([name(1), name(3)]);
        assert_eq!(names_after(&storage, None), expected.into_iter().collect::<Vec<_>>());
        // The losing split's page was removed: every page is reachable from the head.
        let head = read_head(&storage, &dir()).unwrap().unwrap();
        assert_eq!(page_keys(&storage).len(), head.routes().len());
    }

    #[test]
    fn a_writer_on_a_page_that_split_follows_its_link() {
        let storage = MemoryStorage::new();
        scrambled(2500).for_each(|i| insert(&storage, i));
        // Routes lag behind a split until it records them: drop them all, as a crash between a
        // split and its route would, and every operation still finds its page by links.
        let head_key = dir_index_key(&dir());
        let mut head: serde_json::Value = serde_json::from_slice(&storage.get(&head_key).unwrap().unwrap()).unwrap();
        head.as_object_mut().unwrap().remove("routes").expect("the head has routes");
        storage.set(&head_key, &serde_json::to_vec(&head).unwrap()).unwrap();
        assert!(read_head(&storage, &dir()).unwrap().unwrap().routes().is_empty());
        assert!(!insert_entry(&storage, &dir(), &name(2499), EntryKind::File).unwrap());
        assert!(remove_entry(&storage, &dir(), &name(2400)).unwrap());
        insert(&storage, 2400);
        assert_eq!(names_after(&storage, Some(&name(2397))), (2398..2500).map(name).collect::<Vec<_>>());
    }

    /// A directory of a million entries, index only (run in release: `cargo test --release -p
    /// downlink-core --lib -- --ignored a_million`; bench/dirs.sh does). Prints the cost of an
    /// insert and of a listing page as it grows, then checks every entry is listed once, in order.
    #[test]
    #[ignore = "minutes of work; run by bench/dirs.sh in release"]
    fn a_million_entries() {
        let storage = MemoryStorage::new();
        let million = 1_000_000;
        let mut filled = 0;
        for size in [1_000, 100_000, million] {
            (filled..size).for_each(|i| insert(&storage, i * 2));
            filled = size;
            let started = std::time::Instant::now();
            let step = size / 1000;
            (0..1000).for_each(|i| insert(&storage, i * step * 2 + 1));
            let per_insert = started.elapsed() / 1000;
            let started = std::time::Instant::now();
            let mut cursor = IndexCursor::open(&storage, &dir(), Some(&name(size))).unwrap().unwrap();
            for _ in 0..100 {
                cursor.next_entry().unwrap().expect("100 entries after the middle");
            }
            let page = started.elapsed();
            (0..1000).for_each(|i| assert!(remove_entry(&storage, &dir(), &name(i * step * 2 + 1)).unwrap()));
            let head = read_head(&storage, &dir()).unwrap().unwrap();
            println!(
                "index of {size} entries: insert {per_insert:?}, page of 100 {page:?}, {} pages, head {} bytes",
                head.routes().len(),
                head.to_json_bytes().len()
            );
        }
        let mut cursor = IndexCursor::open(&storage, &dir(), None).unwrap().unwrap();
        let mut count = 0;
        while let Some((entry, _)) = cursor.next_entry().unwrap() {
            assert_eq!(entry, name(count * 2));
            count += 1;
        }
        assert_eq!(count, million);
    }

    /// Counts reads and the bytes they return.
    struct Counting<'a> {
        inner: &'a MemoryStorage,
        reads: Cell<u64>,
        read_bytes: Cell<u64>,
    }

    impl Storage for Counting<'_> {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            let value = self.inner.get(key)?;
            self.reads.set(self.reads.get() + 1);
            self.read_bytes.set(self.read_bytes.get() + value.as_ref().map_or(0, |v| v.len() as u64));
            Ok(value)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            self.inner.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
        fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome, StorageError> {
            self.inner.compare_and_swap(key, expected, new)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
            self.inner.increment(key, delta)
        }
        fn list_keys(&self) -> Result<Vec<String>, StorageError> {
            self.inner.list_keys()
        }
    }

    /// Reads, bytes read and writes per insert of 500 new names into a directory of `size`.
    fn insert_cost(size: usize) -> (f64, f64, f64) {
        let storage = MemoryStorage::new();
        scrambled(size).for_each(|i| insert(&storage, i * 2));
        let counting = Counting { inner: &storage, reads: Cell::new(0), read_bytes: Cell::new(0) };
        let writes = storage.write_count();
        let sample = 500;
        for i in 0..sample {
            // Odd names spread over the whole directory, between existing ones.
            insert(&counting, (i * size / sample) * 2 + 1);
        }
        let per = |n: u64| n as f64 / sample as f64;
        (per(counting.reads.get()), per(counting.read_bytes.get()), per(storage.write_count() - writes))
    }

    #[test]
    fn insert_cost_does_not_grow_with_the_directory() {
        // (`bench/dirs.sh` measures the same through HTTP from 1,000 to 100,000 entries, and
        // in memory up to 1,000,000.)
        let (small_reads, small_bytes, small_writes) = insert_cost(1_000);
        let (large_reads, large_bytes, large_writes) = insert_cost(20_000);
        assert!(small_reads <= 2.1 && large_reads <= 2.1, "reads per insert {small_reads} / {large_reads}");
        assert!(small_writes <= 1.1 && large_writes <= 1.1, "writes per insert {small_writes} / {large_writes}");
        // At most the head and one page are read; of those, only the head's routes (some 40
        // bytes per page) grow with the directory.
        let bound = 2.0 * (PAGE_SPLIT_BYTES as f64) + 40.0 * 20_000.0 / 500.0;
        assert!(small_bytes <= bound && large_bytes <= bound, "bytes read per insert {small_bytes} / {large_bytes}");
    }
}

use super::*;

use super::Storage;
use crate::blob::{BlobId, PendingMarker};
use crate::delivery::{ReadCheck, StoredContent};
use crate::error::ErrorCode;
use crate::meta::{FileMeta, Origin};
use crate::path::StoragePath;
use crate::storage::{Fault, MemoryStorage};

const NOW: u64 = 1_700_000_000;

fn p(raw: &str) -> StoragePath {
    StoragePath::parse(raw).unwrap()
}

fn id(text: &str) -> BlobId {
    BlobId::new(text).unwrap()
}

/// 4-byte chunks, each stored as soon as it is complete.
fn small_chunks() -> WriteOptions {
    WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() }
}

/// 4-byte chunks, stored three at a time.
fn batches_of_three() -> WriteOptions {
    WriteOptions { chunks_per_batch: 3, ..small_chunks() }
}

fn put(storage: &MemoryStorage, path: &str, blob: &str, content: &[u8]) -> FileMeta {
    write_file(storage, &p(path), id(blob), [content], small_chunks(), NOW).unwrap()
}

fn read_all<S: Storage + ?Sized>(storage: &S, path: &str) -> Vec<u8> {
    let meta = read_meta(storage, &p(path)).unwrap().unwrap();
    let mut content = Vec::new();
    StoredContent::from(&meta).stream(storage, 0, meta.size, ReadCheck::Crc32, &mut content).unwrap();
    content
}

fn names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match entry {
            Entry::File(meta) => meta.path.file_name().unwrap_or_default().to_owned(),
            Entry::Dir(path) => format!("{}/", path.file_name().unwrap_or_default()),
        })
        .collect()
}

fn chunk_keys(storage: &MemoryStorage) -> Vec<String> {
    storage.keys().into_iter().filter(|key| key.starts_with("chunk:")).collect()
}

#[test]
fn write_read_list_round_trip() {
    let storage = MemoryStorage::new();
    let meta = write_file(
        &storage,
        &p("docs/2024/report.txt"),
        id("b1"),
        [&b"hello"[..], b" ", b"world!"],
        small_chunks(),
        NOW,
    )
    .unwrap();
    assert_eq!(meta.size, 12);
    assert_eq!(meta.crc32, crc32fast::hash(b"hello world!"));
    assert_eq!(meta.content_type, "text/plain; charset=utf-8");
    assert_eq!(meta.created, NOW);
    assert_eq!(read_all(&storage, "docs/2024/report.txt"), b"hello world!");
    assert_eq!(names(&list_dir(&storage, &StoragePath::root()).unwrap()), ["docs/"]);
    assert_eq!(names(&list_dir(&storage, &p("docs")).unwrap()), ["2024/"]);
    assert_eq!(names(&list_dir(&storage, &p("docs/2024")).unwrap()), ["report.txt"]);
    assert!(matches!(stat(&storage, &p("docs")).unwrap(), Some(Entry::Dir(_))));
    assert!(matches!(stat(&storage, &p("docs/2024/report.txt")).unwrap(), Some(Entry::File(_))));
    assert_eq!(stat(&storage, &p("nope")).unwrap(), None);
    assert_eq!(list_dir(&storage, &p("nope")).unwrap_err().code, ErrorCode::NotFound);
    assert!(list_dir(&MemoryStorage::new(), &StoragePath::root()).unwrap().is_empty());
    // Nothing but the record, indexes and chunks remain.
    assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));
}

#[test]
fn reclaiming_a_dead_write_removes_its_chunks_and_stops_publication() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("dl/big.bin"), id("dead"), small_chunks(), NOW).unwrap();
    writer.write(b"0123456789abcdef01").unwrap(); // 4 full chunks stored, 2 bytes pending
    assert_eq!(chunk_keys(&storage).len(), 4);
    assert_eq!(reclaim_abandoned_write(&storage, &id("dead"), 1).unwrap(), 4);
    assert!(chunk_keys(&storage).is_empty());
    assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));
    // The writer was only slow: it must not be able to publish now.
    assert!(writer.commit(NOW + 1).is_err());
    assert_eq!(stat(&storage, &p("dl/big.bin")).unwrap(), None);
}

#[test]
fn checksum_mismatch_keeps_nothing() {
    let storage = MemoryStorage::new();
    let wrong = WriteOptions { expected_sha256: Some("00".repeat(32)), ..small_chunks() };
    let err = write_file(&storage, &p("dl/file.bin"), id("b1"), [&b"some content"[..]], wrong, NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::ChecksumMismatch);
    assert_eq!(stat(&storage, &p("dl/file.bin")).unwrap(), None);
    assert!(chunk_keys(&storage).is_empty());
    assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));

    let right = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    let ok = WriteOptions { expected_sha256: Some(right.to_uppercase()), ..small_chunks() };
    let meta = write_file(&storage, &p("dl/file.bin"), id("b2"), [&b"hello world"[..]], ok, NOW).unwrap();
    assert_eq!(meta.sha256.as_deref(), Some(right));
}

#[test]
fn empty_files_have_no_chunks() {
    let storage = MemoryStorage::new();
    let meta = put(&storage, "empty", "b1", b"");
    assert_eq!(meta.size, 0);
    assert!(chunk_keys(&storage).is_empty());
    assert_eq!(read_all(&storage, "empty"), b"");
}

#[test]
fn overwrite_replaces_atomically_and_frees_old_blob() {
    let storage = MemoryStorage::new();
    let first = put(&storage, "f.txt", "b1", b"first version");
    let second = write_file(
        &storage,
        &p("f.txt"),
        id("b2"),
        [b"second"],
        WriteOptions { origin: Origin::Url("https://example.com/f".to_owned()), ..small_chunks() },
        NOW + 10,
    )
    .unwrap();
    assert_eq!(second.created, first.created);
    assert_eq!(second.modified, NOW + 10);
    assert_ne!(second.etag(), first.etag());
    assert_eq!(read_all(&storage, "f.txt"), b"second");
    assert!(chunk_keys(&storage).iter().all(|key| key.starts_with("chunk:b2:")));
    assert_eq!(names(&list_dir(&storage, &StoragePath::root()).unwrap()), ["f.txt"]);
}

#[test]
fn write_modes() {
    let storage = MemoryStorage::new();
    let first = put(&storage, "f", "b1", b"one");
    let create_new = WriteOptions { mode: WriteMode::CreateNew, ..small_chunks() };
    let err = write_file(&storage, &p("f"), id("b2"), [b"two"], create_new.clone(), NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(write_file(&storage, &p("g"), id("b3"), [b"two"], create_new, NOW).is_ok());

    let stale = WriteOptions { mode: WriteMode::IfMatch("\"stale\"".to_owned()), ..small_chunks() };
    let err = write_file(&storage, &p("f"), id("b4"), [b"x"], stale, NOW).unwrap_err();
    assert_eq!(err.status(), 412);
    let fresh = WriteOptions { mode: WriteMode::IfMatch(first.etag()), ..small_chunks() };
    write_file(&storage, &p("f"), id("b5"), [b"three"], fresh, NOW).unwrap();
    assert_eq!(read_all(&storage, "f"), b"three");
    // Failed writes leave nothing behind.
    let chunks = chunk_keys(&storage);
    assert!(chunks.iter().all(|key| key.starts_with("chunk:b5:") || key.starts_with("chunk:b3:")));
    assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));
}

#[test]
fn create_new_race_has_one_winner() {
    let storage = MemoryStorage::new();
    let options = WriteOptions { mode: WriteMode::CreateNew, ..small_chunks() };
    let mut slow = FileWriter::begin(&storage, p("f"), id("slow"), options.clone(), NOW).unwrap();
    slow.write(b"slow data").unwrap();
    storage.before_next_cas("file:f", move |store: &MemoryStorage| {
        write_file(store, &p("f"), id("fast"), [b"fast"], options, NOW).unwrap();
    });
    assert_eq!(slow.commit(NOW).unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(read_all(&storage, "f"), b"fast");
    assert!(chunk_keys(&storage).iter().all(|key| key.starts_with("chunk:fast:")));
}

#[test]
fn concurrent_overwrites_leave_one_complete_version() {
    let storage = MemoryStorage::new();
    put(&storage, "f", "b0", b"original");
    let mut slow = FileWriter::begin(&storage, p("f"), id("slow"), small_chunks(), NOW).unwrap();
    slow.write(b"slow version").unwrap();
    storage.before_next_cas("file:f", |store: &MemoryStorage| {
        write_file(store, &p("f"), id("fast"), [b"fast version"], small_chunks(), NOW).unwrap();
    });
    slow.commit(NOW).unwrap();
    assert_eq!(read_all(&storage, "f"), b"slow version");
    // The slow writer retried against the fast version and freed its blob.
    assert!(chunk_keys(&storage).iter().all(|key| key.starts_with("chunk:slow:")));
}

#[test]
fn concurrent_writers_in_one_directory_both_get_listed() {
    let storage = MemoryStorage::new();
    put(&storage, "dir/existing", "b0", b"x");
    let mut first = FileWriter::begin(&storage, p("dir/a"), id("ba"), small_chunks(), NOW).unwrap();
    first.write(b"aaa").unwrap();
    // Just before `first` swaps the directory index, another writer adds `b` to it.
    storage.before_next_cas("dir:dir", |store: &MemoryStorage| {
        write_file(store, &p("dir/b"), id("bb"), [b"bbb"], small_chunks(), NOW).unwrap();
    });
    first.commit(NOW).unwrap();
    assert_eq!(names(&list_dir(&storage, &p("dir")).unwrap()), ["a", "b", "existing"]);
}

#[test]
fn concurrent_parent_creation_is_merged() {
    let storage = MemoryStorage::new();
    let mut first = FileWriter::begin(&storage, p("x/1"), id("b1"), small_chunks(), NOW).unwrap();
    first.write(b"1").unwrap();
    storage.before_next_cas("dir:", |store: &MemoryStorage| {
        write_file(store, &p("y/2"), id("b2"), [b"2"], small_chunks(), NOW).unwrap();
    });
    first.commit(NOW).unwrap();
    assert_eq!(names(&list_dir(&storage, &StoragePath::root()).unwrap()), ["x/", "y/"]);
}

#[test]
fn file_and_directory_names_cannot_clash() {
    let storage = MemoryStorage::new();
    put(&storage, "a/b", "b1", b"file");
    let err = write_file(&storage, &p("a/b/c"), id("b2"), [b"x"], small_chunks(), NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    let err = write_file(&storage, &p("a"), id("b3"), [b"x"], small_chunks(), NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(write_file(&storage, &StoragePath::root(), id("b4"), [b"x"], small_chunks(), NOW).is_err());
    assert!(chunk_keys(&storage).iter().all(|key| key.starts_with("chunk:b1:")));
    assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));
}

#[test]
fn directory_appearing_during_commit_rolls_back() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("d/x"), id("b1"), small_chunks(), NOW).unwrap();
    writer.write(b"data").unwrap();
    // After the record swap, before the parent index update, `d/x` becomes a directory.
    storage.before_next_cas("dir:d", |store: &MemoryStorage| {
        store.set("dir:d", br#"{"entries":{"x":"dir"}}"#).unwrap();
        store.set("dir:d/x", br#"{"entries":{}}"#).unwrap();
    });
    assert_eq!(writer.commit(NOW).unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(read_meta(&storage, &p("d/x")).unwrap(), None);
    assert!(chunk_keys(&storage).is_empty());
}

#[test]
fn size_cap_aborts_cleanly() {
    let storage = MemoryStorage::new();
    let options = WriteOptions { max_size: Some(6), ..small_chunks() };
    let err = write_file(&storage, &p("f"), id("b1"), [&b"0123"[..], b"456"], options, NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::FileTooLarge);
    assert!(storage.keys().is_empty(), "{:?}", storage.keys());
}

#[test]
fn sha256_is_recorded_on_request() {
    let storage = MemoryStorage::new();
    let options =
        WriteOptions { compute_sha256: true, content_type: Some("application/x-custom".to_owned()), ..small_chunks() };
    let meta = write_file(&storage, &p("f"), id("b1"), [b"abc"], options, NOW).unwrap();
    assert_eq!(meta.sha256.as_deref(), Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert_eq!(meta.content_type, "application/x-custom");
    assert_eq!(read_meta(&storage, &p("f")).unwrap().unwrap(), meta);
}

#[test]
fn delete_file_and_preconditions() {
    let storage = MemoryStorage::new();
    let meta = put(&storage, "d/f", "b1", b"content");
    put(&storage, "d/g", "b2", b"other");
    assert_eq!(delete_file(&storage, &p("d/f"), Some("\"nope\"")).unwrap_err().status(), 412);
    let deleted = delete_file(&storage, &p("d/f"), Some(&meta.etag())).unwrap();
    assert_eq!(deleted, meta);
    assert_eq!(read_meta(&storage, &p("d/f")).unwrap(), None);
    assert_eq!(names(&list_dir(&storage, &p("d")).unwrap()), ["g"]);
    assert!(chunk_keys(&storage).iter().all(|key| key.starts_with("chunk:b2:")));
    assert_eq!(delete_file(&storage, &p("d/f"), None).unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn recursive_delete() {
    let storage = MemoryStorage::new();
    put(&storage, "keep.txt", "k", b"keep");
    put(&storage, "tree/a", "b1", b"a");
    put(&storage, "tree/sub/b", "b2", b"b");
    put(&storage, "tree/sub/deeper/c", "b3", b"c");
    // A directory whose last file was deleted stays, empty.
    put(&storage, "tree/empty/gone", "b4", b"gone");
    delete_file(&storage, &p("tree/empty/gone"), None).unwrap();
    assert!(list_dir(&storage, &p("tree/empty")).unwrap().is_empty());
    let summary = delete_dir_recursive(&storage, &p("tree")).unwrap();
    assert_eq!(summary, DeleteSummary { files: 3, dirs: 4 });
    assert_eq!(storage.keys(), ["chunk:k:0", "dir:", "file:keep.txt"], "only the other file remains");
    assert_eq!(delete_dir_recursive(&storage, &p("tree")).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(delete_dir_recursive(&storage, &p("keep.txt")).unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(delete_dir_recursive(&storage, &StoragePath::root()).unwrap_err().code, ErrorCode::InvalidRequest);
}

#[test]
fn walk_files_recurses_in_order_with_a_cap() {
    let storage = MemoryStorage::new();
    put(&storage, "p/z", "b1", b"1");
    put(&storage, "p/a/y", "b2", b"2");
    put(&storage, "p/a/b/x", "b3", b"3");
    put(&storage, "q", "b4", b"4");
    let files = walk_files(&storage, &p("p"), 10).unwrap();
    let paths: Vec<&str> = files.iter().map(|meta| meta.path.as_str()).collect();
    assert_eq!(paths, ["p/a/b/x", "p/a/y", "p/z"]);
    assert_eq!(walk_files(&storage, &StoragePath::root(), 10).unwrap().len(), 4);
    assert_eq!(walk_files(&storage, &p("p"), 2).unwrap_err().code, ErrorCode::InvalidRequest);
    assert_eq!(walk_files(&storage, &p("missing"), 10).unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn ghost_index_entries_are_hidden() {
    let storage = MemoryStorage::new();
    put(&storage, "d/f", "b1", b"x");
    storage.delete("file:d/f").unwrap();
    assert!(list_dir(&storage, &p("d")).unwrap().is_empty());
}

#[test]
fn long_paths_use_hashed_keys() {
    let storage = MemoryStorage::new();
    let long = vec!["segment".repeat(20); 6].join("/");
    write_file(&storage, &p(&long), id("b1"), [b"deep"], small_chunks(), NOW).unwrap();
    assert_eq!(read_all(&storage, &long), b"deep");
    assert!(storage.keys().iter().all(|key| key.len() <= 255));
    assert_eq!(walk_files(&storage, &StoragePath::root(), 10).unwrap().len(), 1);
}

#[test]
fn crash_at_every_write_leaves_old_or_new_file_and_gc_cleans_up() {
    // Count the writes of an undisturbed overwrite.
    let reference = MemoryStorage::new();
    put(&reference, "d/f", "old", b"old content");
    let before = reference.write_count();
    put(&reference, "d/f", "new", b"brand new content");
    let total = reference.write_count() - before;
    assert!(total > 8);

    for crash_at in 0..total {
        let storage = MemoryStorage::new();
        put(&storage, "d/f", "old", b"old content");
        storage.set_fault(Some(Fault::CrashAtWrite(storage.write_count() + crash_at)));
        let result = write_file(&storage, &p("d/f"), id("new"), [&b"brand new "[..], b"content"], small_chunks(), NOW);
        storage.set_fault(None);
        let content = read_all(&storage, "d/f");
        assert!(content == b"old content" || content == b"brand new content", "crash at {crash_at}: {content:?}");
        if result.is_ok() {
            assert_eq!(content, b"brand new content");
        }
        // Within the grace period a live-looking writer is left alone...
        collect_garbage(&storage, NOW + 1, DEFAULT_GC_GRACE_SECS).unwrap();
        // ...afterwards everything unreferenced goes and the file is listed again.
        let report = collect_garbage(&storage, NOW + 2 * DEFAULT_GC_GRACE_SECS, DEFAULT_GC_GRACE_SECS).unwrap();
        assert_eq!(report.failures, 0);
        let meta = read_meta(&storage, &p("d/f")).unwrap().unwrap();
        let expected_prefix = format!("chunk:{}:", meta.blob_id);
        let chunks = chunk_keys(&storage);
        assert!(chunks.iter().all(|key| key.starts_with(&expected_prefix)), "crash at {crash_at}: {chunks:?}");
        assert_eq!(chunks.len() as u64, meta.chunk_count());
        assert!(!storage.keys().iter().any(|key| key.starts_with("pending:")));
        assert_eq!(names(&list_dir(&storage, &p("d")).unwrap()), ["f"]);
        assert_eq!(read_all(&storage, "d/f"), content);
    }
}

#[test]
fn crash_mid_write_of_new_file_leaves_nothing_visible() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("new.bin"), id("b1"), small_chunks(), NOW).unwrap();
    writer.write(b"0123456789abcdef").unwrap();
    storage.set_fault(Some(Fault::CrashAtWrite(storage.write_count() + 1)));
    assert!(writer.write(b"more data").is_err());
    drop(writer); // the process died: no abort
    storage.set_fault(None);
    assert_eq!(read_meta(&storage, &p("new.bin")).unwrap(), None);
    assert!(list_dir(&storage, &StoragePath::root()).unwrap().is_empty());
    assert!(!chunk_keys(&storage).is_empty());
    let early = collect_garbage(&storage, NOW + 10, 60).unwrap();
    assert_eq!(early.orphan_chunks_deleted, 0, "the writer may still be alive");
    let report = collect_garbage(&storage, NOW + 61, 60).unwrap();
    assert_eq!(report.orphan_chunks_deleted, 5);
    assert_eq!(report.markers_deleted, 1);
    assert!(storage.keys().is_empty(), "{:?}", storage.keys());
}

#[test]
fn chunks_are_stored_a_batch_at_a_time() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("f"), id("b1"), batches_of_three(), NOW).unwrap();
    writer.write(b"0123456789").unwrap();
    assert!(chunk_keys(&storage).is_empty(), "two chunks wait for the third");
    writer.write(b"ab").unwrap();
    assert_eq!(chunk_keys(&storage), ["chunk:b1:0", "chunk:b1:1", "chunk:b1:2"]);
    writer.write(b"cdefg").unwrap();
    assert_eq!(chunk_keys(&storage).len(), 3, "a full chunk and a partial one wait");
    let meta = writer.commit(NOW).unwrap().meta;
    assert_eq!(meta.size, 17);
    assert_eq!(chunk_keys(&storage).len(), 5);
    assert_eq!(read_all(&storage, "f"), b"0123456789abcdefg");
}

#[test]
fn crash_in_the_middle_of_a_batch_leaves_nothing_visible() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("f"), id("b1"), batches_of_three(), NOW).unwrap();
    writer.write(b"01234567").unwrap();
    // The batch's second set fails: a partial batch is stored, as `set_many` allows.
    storage.set_fault(Some(Fault::CrashAtWrite(storage.write_count() + 2)));
    assert!(writer.write(b"89ab").is_err());
    drop(writer);
    storage.set_fault(None);
    let stored = chunk_keys(&storage);
    assert!(!stored.is_empty() && stored.len() < 3, "{stored:?}");
    assert_eq!(read_meta(&storage, &p("f")).unwrap(), None);
    let report = collect_garbage(&storage, NOW + 61, 60).unwrap();
    assert_eq!(report.orphan_chunks_deleted, stored.len() as u64);
    assert!(storage.keys().is_empty(), "{:?}", storage.keys());
}

#[test]
fn slow_writer_reclaimed_by_gc_cannot_publish() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("slow"), id("b1"), small_chunks(), NOW).unwrap();
    writer.write(b"01234567").unwrap();
    let report = collect_garbage(&storage, NOW + 100, 60).unwrap();
    assert_eq!(report.orphan_chunks_deleted, 2);
    assert!(writer.touch(NOW + 100).is_err());
    let err = writer.commit(NOW + 101).unwrap_err();
    assert_eq!(err.code, ErrorCode::StorageError);
    assert_eq!(read_meta(&storage, &p("slow")).unwrap(), None);
    collect_garbage(&storage, NOW + 200, 60).unwrap();
    assert!(storage.keys().is_empty(), "{:?}", storage.keys());
}

#[test]
fn touching_writer_survives_gc() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("f"), id("b1"), small_chunks(), NOW).unwrap();
    writer.write(b"0123").unwrap();
    let writes = storage.write_count();
    writer.touch(NOW + 5).unwrap();
    assert_eq!(storage.write_count(), writes, "no write within the touch interval");
    writer.touch(NOW + 50).unwrap();
    let report = collect_garbage(&storage, NOW + 100, 60).unwrap();
    assert_eq!(report.orphan_chunks_deleted, 0);
    writer.touch(NOW + 150).unwrap();
    let report = collect_garbage(&storage, NOW + 200, 60).unwrap();
    assert_eq!(report.orphan_chunks_deleted, 0);
    let meta = writer.commit(NOW + 201).unwrap().meta;
    assert_eq!(meta.size, 4);
    assert_eq!(read_all(&storage, "f"), b"0123");
}

#[test]
fn gc_claim_lost_to_writer_keeps_chunks() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("f"), id("b1"), small_chunks(), NOW).unwrap();
    writer.write(b"0123").unwrap();
    // GC sees a stale marker, but the writer refreshes it just before the claim lands.
    let refreshed = PendingMarker { touched: NOW + 99, ..PendingMarker::new(p("f"), NOW) };
    storage.before_next_cas("pending:b1", move |store: &MemoryStorage| {
        store.set("pending:b1", &refreshed.to_json_bytes()).unwrap();
    });
    let report = collect_garbage(&storage, NOW + 100, 60).unwrap();
    assert_eq!(report.claims_lost, 1);
    assert_eq!(report.orphan_chunks_deleted, 0);
    assert_eq!(report.markers_deleted, 0);
    assert_eq!(chunk_keys(&storage), ["chunk:b1:0"]);
    drop(writer);
}

#[test]
fn gc_refuses_to_run_with_unreadable_records() {
    let storage = MemoryStorage::new();
    put(&storage, "f", "b1", b"x");
    storage.set("file:broken", b"{not json").unwrap();
    let err = collect_garbage(&storage, NOW, 60).unwrap_err();
    assert_eq!(err.code, ErrorCode::StorageError);
    assert_eq!(chunk_keys(&storage), ["chunk:b1:0"]);
}

#[test]
fn gc_ignores_foreign_keys() {
    let storage = MemoryStorage::new();
    storage.set("download:1", b"{}").unwrap();
    storage.increment("usage:alice", 5).unwrap();
    let report = collect_garbage(&storage, NOW, 60).unwrap();
    assert_eq!(report, GcReport::default());
    assert_eq!(storage.keys(), ["download:1", "usage:alice"]);
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let storage = MemoryStorage::new();
    storage.set("file:f", b"garbage").unwrap();
    storage.set("dir:", b"garbage").unwrap();
    assert_eq!(read_meta(&storage, &p("f")).unwrap_err().code, ErrorCode::StorageError);
    assert_eq!(list_dir(&storage, &StoragePath::root()).unwrap_err().code, ErrorCode::StorageError);
    let err = write_file(&storage, &p("g"), id("b1"), [b"x"], small_chunks(), NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::StorageError);
    // A record stored under the wrong key is treated as corrupt too.
    let meta = put(&MemoryStorage::new(), "other", "b2", b"y");
    storage.set("file:h", &meta.to_json_bytes()).unwrap();
    assert!(read_meta(&storage, &p("h")).is_err());
}

/// Writes `data` to `path` stopping at each of `cuts`: suspended and resumed there (the
/// checkpoint going through JSON, as between invocations) when `suspend`; otherwise a crash:
/// the writer is dropped after going on a little past its last boundary checkpoint, and the
/// source is resumed from the checkpoint's `stored_bytes`.
fn write_across_invocations<S: Storage + ?Sized>(
    storage: &S,
    path: &str,
    data: &[u8],
    options: WriteOptions,
    cuts: &[usize],
    suspend: bool,
) -> Result<FileMeta, crate::ApiError> {
    let mut writer = FileWriter::begin(storage, p(path), id("resumed"), options, NOW)?;
    let mut at = 0;
    for &cut in cuts {
        writer.write(&data[at..cut])?;
        let checkpoint = if suspend {
            writer.suspend()?
        } else {
            let checkpoint = writer.checkpoint()?;
            // Bytes after the checkpoint die with the invocation.
            writer.write(&data[cut..(cut + 7).min(data.len())])?;
            drop(writer);
            checkpoint
        };
        let json = serde_json::to_vec(&checkpoint).unwrap();
        let checkpoint: WriteCheckpoint = serde_json::from_slice(&json).unwrap();
        at = checkpoint.stored_bytes() as usize;
        assert!(at <= cut, "a checkpoint holds no byte it was not given");
        if suspend {
            assert_eq!(at, cut, "a suspended write keeps every byte");
        }
        writer = FileWriter::resume(storage, checkpoint, NOW + 1)?;
    }
    writer.write(&data[at..])?;
    Ok(writer.commit(NOW + 2)?.meta)
}

#[test]
fn a_write_goes_on_across_invocations_with_its_hashes() {
    let data: Vec<u8> = (0..103u32).map(|i| (i * 7) as u8).collect();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    for suspend in [true, false] {
        let storage = MemoryStorage::new();
        let options = WriteOptions { expected_sha256: Some(sha.clone()), ..batches_of_three() };
        let meta = write_across_invocations(&storage, "r.bin", &data, options, &[5, 6, 40, 41, 101], suspend).unwrap();
        assert_eq!((meta.size, meta.crc32), (103, crc32fast::hash(&data)), "suspend {suspend}");
        assert_eq!(meta.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(read_all(&storage, "r.bin"), data);
        assert_eq!(chunk_keys(&storage).len(), 26, "suspend {suspend}: exactly the file's chunks remain");
        assert!(storage.keys().iter().all(|key| !key.starts_with("pending:")));
    }
    // The whole file's SHA-256 is checked, not each invocation's part.
    let storage = MemoryStorage::new();
    let options = WriteOptions { expected_sha256: Some("00".repeat(32)), ..small_chunks() };
    let err = write_across_invocations(&storage, "bad.bin", &data, options, &[50], true).unwrap_err();
    assert_eq!(err.code, ErrorCode::ChecksumMismatch);
    assert!(chunk_keys(&storage).is_empty());
}

#[test]
fn a_checkpoint_is_refused_once_gc_reclaimed_its_write_and_discards_cleanly() {
    let storage = MemoryStorage::new();
    let mut writer = FileWriter::begin(&storage, p("g.bin"), id("g"), small_chunks(), NOW).unwrap();
    writer.write(b"0123456789").unwrap();
    let checkpoint = writer.suspend().unwrap();
    assert_eq!(checkpoint.stored_bytes(), 10);
    let report = collect_garbage(&storage, NOW + 2 * DEFAULT_GC_GRACE_SECS, DEFAULT_GC_GRACE_SECS).unwrap();
    assert!(report.markers_deleted >= 1, "{report:?}");
    let err = FileWriter::resume(&storage, checkpoint.clone(), NOW + 1).err().expect("reclaimed");
    assert!(err.message.contains("reclaimed"), "{}", err.message);

    let mut writer = FileWriter::begin(&storage, p("d.bin"), id("d"), small_chunks(), NOW).unwrap();
    writer.write(b"0123456789").unwrap();
    writer.suspend().unwrap().discard(&storage).unwrap();
    assert!(chunk_keys(&storage).is_empty());
    assert!(storage.keys().iter().all(|key| !key.starts_with("pending:")), "{:?}", storage.keys());
}

/// Object-backend tests: records in memory, bytes in a [`MemoryObjects`] bucket.
mod in_a_bucket {
    use super::*;
    use crate::blob::MIN_PART_BYTES;
    use crate::storage::objects::MemoryObjects;
    use crate::storage::WithObjects;

    type Bucketed = WithObjects<MemoryStorage, MemoryObjects>;

    fn bucketed() -> Bucketed {
        WithObjects {
            records: MemoryStorage::new(),
            objects: Some(MemoryObjects::new("files/", MIN_PART_BYTES as u32)),
        }
    }

    fn bucket(storage: &Bucketed) -> &MemoryObjects {
        storage.objects.as_ref().unwrap()
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn write(
        storage: &Bucketed,
        path: &str,
        blob: &str,
        data: &[u8],
        mode: WriteMode,
    ) -> Result<FileMeta, crate::ApiError> {
        // Pieces of an odd size, so parts are cut across them.
        let options = WriteOptions { mode, ..WriteOptions::default() };
        write_file(storage, &p(path), id(blob), data.chunks(100_003), options, NOW)
    }

    #[test]
    fn a_bucket_write_goes_on_across_invocations_keeping_its_tail_or_a_short_part() {
        let data = content(3 * MIN_PART_BYTES + 777);
        // A tail under a part size is kept in key-value pieces; one over the minimum becomes a
        // part of its own (parts may differ in size).
        let cuts = [1_000, MIN_PART_BYTES + 10, 2 * MIN_PART_BYTES + MIN_PART_BYTES / 2];
        for suspend in [true, false] {
            let storage = bucketed();
            let options = WriteOptions { compute_sha256: true, ..WriteOptions::default() };
            let meta = write_across_invocations(&storage, "r.bin", &data, options, &cuts, suspend).unwrap();
            assert_eq!((meta.size, meta.crc32), (data.len() as u64, crc32fast::hash(&data)), "suspend {suspend}");
            assert_eq!(meta.sha256, Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))));
            assert_eq!(bucket(&storage).object("files/r.bin").unwrap(), data);
            assert_eq!(bucket(&storage).pending_uploads(), 0);
            assert!(chunk_keys(&storage.records).is_empty(), "suspend {suspend}: tail pieces left behind");
        }
        let storage = bucketed();
        let mut writer = FileWriter::begin(&storage, p("x.bin"), id("x"), WriteOptions::default(), NOW).unwrap();
        writer.write(&data[..MIN_PART_BYTES + 5]).unwrap();
        let checkpoint = writer.suspend().unwrap();
        assert_eq!(bucket(&storage).pending_uploads(), 1);
        checkpoint.discard(&storage).unwrap();
        assert_eq!(bucket(&storage).pending_uploads(), 0);
        assert!(chunk_keys(&storage.records).is_empty());
    }

    #[test]
    fn a_small_file_is_one_object_at_its_path_and_no_chunks() {
        let storage = bucketed();
        let meta = write(&storage, "docs/a.txt", "b1", b"hello", WriteMode::Overwrite).unwrap();
        let object = meta.object.clone().expect("the record names the object");
        assert_eq!(object.key, "files/docs/a.txt");
        assert_eq!(bucket(&storage).object("files/docs/a.txt").unwrap(), b"hello");
        assert!(chunk_keys(&storage.records).is_empty());
        assert_eq!(read_all(&storage, "docs/a.txt"), b"hello");
        assert_eq!(names(&list_dir(&storage, &p("docs")).unwrap()), ["a.txt"]);
        assert!(storage.records.get(&crate::blob::pending_key(&id("b1"))).unwrap().is_none(), "marker gone");
    }

    #[test]
    fn a_large_file_goes_up_in_parts_and_reads_back_whole_and_in_ranges() {
        let storage = bucketed();
        let data = content(2 * MIN_PART_BYTES + 12_345);
        let meta = write(&storage, "big.bin", "b1", &data, WriteMode::Overwrite).unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.crc32, crc32fast::hash(&data));
        assert_eq!(bucket(&storage).pending_uploads(), 0);
        assert_eq!(bucket(&storage).object("files/big.bin").unwrap(), data);
        assert_eq!(read_all(&storage, "big.bin"), data);
        let mut range = Vec::new();
        let from = MIN_PART_BYTES as u64 - 3;
        StoredContent::from(&meta).stream(&storage, from, 10, ReadCheck::default(), &mut range).unwrap();
        assert_eq!(range, data[from as usize..from as usize + 10]);
    }

    #[test]
    fn a_file_of_exactly_one_part_completes_with_that_part() {
        let storage = bucketed();
        let data = content(MIN_PART_BYTES);
        write(&storage, "one.bin", "b1", &data, WriteMode::Overwrite).unwrap();
        assert_eq!(read_all(&storage, "one.bin"), data);
    }

    #[test]
    fn overwriting_replaces_the_object_in_place_and_deleting_removes_it() {
        let storage = bucketed();
        write(&storage, "a.txt", "b1", b"one", WriteMode::Overwrite).unwrap();
        write(&storage, "a.txt", "b2", b"two", WriteMode::Overwrite).unwrap();
        assert_eq!(read_all(&storage, "a.txt"), b"two");
        assert_eq!(bucket(&storage).keys(), ["files/a.txt"]);
        delete_file(&storage, &p("a.txt"), None).unwrap();
        assert!(bucket(&storage).keys().is_empty());
        assert!(read_meta(&storage, &p("a.txt")).unwrap().is_none());
    }

    #[test]
    fn create_new_does_not_overwrite_an_object_another_tool_put_there() {
        let storage = bucketed();
        bucket(&storage).overwrite("files/theirs.txt", b"not ours");
        let error =
            write(&storage, "theirs.txt", "b1", &content(MIN_PART_BYTES + 1), WriteMode::CreateNew).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict);
        assert_eq!(bucket(&storage).object("files/theirs.txt").unwrap(), b"not ours");
        assert_eq!(bucket(&storage).pending_uploads(), 0, "the refused upload is aborted");
        assert!(read_meta(&storage, &p("theirs.txt")).unwrap().is_none());
    }

    #[test]
    fn a_checksum_mismatch_aborts_the_upload_and_leaves_nothing() {
        let storage = bucketed();
        let options = WriteOptions { expected_sha256: Some("00".repeat(32)), ..WriteOptions::default() };
        let data = content(MIN_PART_BYTES * 2);
        let error = write_file(&storage, &p("x.bin"), id("b1"), data.chunks(65_536), options, NOW).unwrap_err();
        assert_eq!(error.code, ErrorCode::ChecksumMismatch);
        assert_eq!(bucket(&storage).pending_uploads(), 0);
        assert!(bucket(&storage).keys().is_empty());
        assert!(storage.records.keys().iter().all(|key| !key.starts_with("pending:")));
    }

    #[test]
    fn bytes_replaced_behind_the_record_are_never_served_as_its() {
        let storage = bucketed();
        let meta = write(&storage, "a.txt", "b1", b"ours", WriteMode::Overwrite).unwrap();
        bucket(&storage).overwrite("files/a.txt", b"other");
        let mut out = Vec::new();
        let error =
            StoredContent::from(&meta).stream(&storage, 0, meta.size, ReadCheck::default(), &mut out).unwrap_err();
        assert_eq!(
            error,
            crate::delivery::StreamError::Content(crate::delivery::ContentError::ObjectChanged { path: p("a.txt") })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn an_abandoned_write_has_its_upload_aborted_by_whoever_reclaims_it() {
        let storage = bucketed();
        let mut writer = FileWriter::begin(&storage, p("slow.bin"), id("b1"), WriteOptions::default(), NOW).unwrap();
        writer.write(&content(MIN_PART_BYTES + 10)).unwrap();
        assert_eq!(bucket(&storage).pending_uploads(), 1);
        drop(writer);
        reclaim_abandoned_write(&storage, &id("b1"), 0).unwrap();
        assert_eq!(bucket(&storage).pending_uploads(), 0);

        let mut writer = FileWriter::begin(&storage, p("slow2.bin"), id("b2"), WriteOptions::default(), NOW).unwrap();
        writer.write(&content(MIN_PART_BYTES + 10)).unwrap();
        drop(writer);
        let report = collect_garbage(&storage, NOW + DEFAULT_GC_GRACE_SECS + 1, DEFAULT_GC_GRACE_SECS).unwrap();
        assert_eq!(report.uploads_aborted, 1);
        assert_eq!(bucket(&storage).pending_uploads(), 0);
        assert!(bucket(&storage).keys().is_empty());
    }

    #[test]
    fn an_upload_that_cannot_be_aborted_now_is_left_for_gc_to_abort() {
        let storage = bucketed();
        let mut writer = FileWriter::begin(&storage, p("cut.bin"), id("b1"), WriteOptions::default(), NOW).unwrap();
        writer.write(&content(MIN_PART_BYTES + 10)).unwrap();
        bucket(&storage).set_offline(true);
        let failed = writer.write(&content(MIN_PART_BYTES)).unwrap_err();
        assert_eq!(failed.code, ErrorCode::StorageError);
        assert!(writer.abort().is_err(), "the abort cannot reach the bucket");
        bucket(&storage).set_offline(false);
        assert_eq!(bucket(&storage).pending_uploads(), 1);
        assert!(storage.records.get(&crate::blob::pending_key(&id("b1"))).unwrap().is_some(), "the marker stays");
        assert!(read_meta(&storage, &p("cut.bin")).unwrap().is_none());
        let report = collect_garbage(&storage, NOW + DEFAULT_GC_GRACE_SECS + 1, DEFAULT_GC_GRACE_SECS).unwrap();
        assert_eq!(report.uploads_aborted, 1);
        assert_eq!(bucket(&storage).pending_uploads(), 0);
        assert!(storage.records.get(&crate::blob::pending_key(&id("b1"))).unwrap().is_none(), "then it goes");
    }

    #[test]
    fn a_read_of_an_unreachable_bucket_fails_before_any_byte() {
        let storage = bucketed();
        write(&storage, "r.bin", "b1", &content(1000), WriteMode::Overwrite).unwrap();
        bucket(&storage).set_offline(true);
        let meta = read_meta(&storage, &p("r.bin")).unwrap().unwrap();
        let mut out = Vec::new();
        let error =
            StoredContent::from(&meta).stream(&storage, 0, meta.size, ReadCheck::ChunkLengths, &mut out).unwrap_err();
        assert!(matches!(error, crate::delivery::StreamError::Content(crate::delivery::ContentError::Storage(_))));
        assert!(out.is_empty());
        let answer: crate::ApiError = match error {
            crate::delivery::StreamError::Content(content) => content.into(),
            crate::delivery::StreamError::Sink(never) => match never {},
        };
        assert_eq!((answer.status(), answer.code), (500, ErrorCode::StorageError));
    }

    #[test]
    fn files_written_as_chunks_stay_readable_and_deletable_after_a_bucket_is_configured() {
        let storage = bucketed();
        let old = write_file(&storage.records, &p("old.txt"), id("b0"), [b"chunked".as_slice()], small_chunks(), NOW)
            .unwrap();
        assert!(old.object.is_none());
        assert_eq!(read_all(&storage, "old.txt"), b"chunked");
        write(&storage, "old.txt", "b1", b"now an object", WriteMode::Overwrite).unwrap();
        assert!(chunk_keys(&storage.records).is_empty(), "the replaced chunks are discarded");
        assert_eq!(read_all(&storage, "old.txt"), b"now an object");
    }
}

#[test]
fn a_path_whose_object_key_would_exceed_s3s_limit_is_refused_before_anything_is_stored() {
    use crate::storage::objects::MemoryObjects;
    use crate::storage::WithObjects;
    let storage = WithObjects {
        records: MemoryStorage::new(),
        objects: Some(MemoryObjects::new("some/prefix/", crate::blob::MIN_PART_BYTES as u32)),
    };
    let long = format!("{}/{}/{}/{}", "a".repeat(255), "b".repeat(255), "c".repeat(255), "d".repeat(252));
    assert_eq!(long.len(), 1020);
    let error = write_file(&storage, &p(&long), id("b1"), [b"x".as_slice()], WriteOptions::default(), NOW).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidPath);
    assert!(error.message.contains("1032 bytes"), "{}", error.message);
    assert!(storage.records.keys().is_empty(), "nothing stored: {:?}", storage.records.keys());
}

//! File-system operations over any [`Storage`].
//!
//! # Write protocol
//!
//! 1. [`FileWriter::begin`]: check the path can hold a file, create the blob's
//!    [`PendingMarker`] (CAS from absent, so blob ids cannot collide).
//! 2. [`FileWriter::write`]: store completed chunks under the fresh blob id, in batches of
//!    [`CHUNKS_PER_BATCH`] (one `set_many` each).
//! 3. [`FileWriter::commit`]: store the last chunk, confirm the marker is still ours, link the
//!    parent directories (top-down, so a crash leaves at worst empty directories), then
//!    compare-and-swap the file record to the new blob — the moment the file becomes visible,
//!    whole — add the file to its parent's index, delete the marker and the old blob.
//!
//! A crash before the swap leaves only unreferenced chunks, which [`collect_garbage`] removes
//! once the marker is stale. A crash after it leaves a complete file that may be missing from
//! its directory listing; [`collect_garbage`] re-links it.
//!
//! Known races, accepted because every outcome is a consistent state that GC tidies up:
//! deleting a file concurrently with overwriting it may delete the newer version (deletion is
//! not a CAS, which `wasi:keyvalue` lacks) and a reader streaming a file that is overwritten
//! fails with `STORAGE_ERROR` when the old chunks disappear.

use std::collections::{BTreeMap, BTreeSet};

use super::{cas_update, CasOutcome, CasStep, Storage};
use crate::blob::{
    chunk_key, classify_key, dir_index_key, meta_key, pending_key, plan_garbage_collection, BlobId, ChunkWriter,
    FinishedBlob, KeyKind, PendingMarker, DEFAULT_CHUNK_SIZE, MAX_VALUE_BYTES,
};
use crate::error::{ApiError, ErrorCode};
use crate::http::if_match_passes;
use crate::meta::{content_type_for, DirIndex, EntryKind, FileMeta, Origin};
use crate::path::{PathError, StoragePath};

/// A writer refreshes its pending marker at most this often (see [`FileWriter::touch`]).
pub const TOUCH_INTERVAL_SECS: u64 = 30;

/// Default for [`WriteOptions::chunks_per_batch`]. Each key-value write has a fixed cost
/// besides its bytes (a round trip, and in SQLite a transaction that rewrites index pages):
/// batches of 4 MiB amortise it, for 4 MiB more memory per writer.
pub const CHUNKS_PER_BATCH: usize = 4;

/// A sensible [`collect_garbage`] grace period: far longer than [`TOUCH_INTERVAL_SECS`] plus
/// any pause between body reads.
pub const DEFAULT_GC_GRACE_SECS: u64 = 3600;

/// What a write does when a file already exists at the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace it.
    Overwrite,
    /// Fail with `409 CONFLICT` (e.g. downloads that must not clobber files).
    CreateNew,
    /// Replace it only if its ETag strongly matches this `If-Match` value, else
    /// `412 PRECONDITION_FAILED`.
    IfMatch(String),
}

impl WriteMode {
    /// The mode of a `PUT`: with `If-Match`, only over the version it names; else overwrite.
    pub fn for_upload(if_match: Option<&str>) -> WriteMode {
        match if_match {
            Some(condition) => WriteMode::IfMatch(condition.to_owned()),
            None => WriteMode::Overwrite,
        }
    }
}

/// Parameters of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Bytes per stored chunk.
    pub chunk_size: u32,
    /// Completed chunks stored per [`Storage::set_many`] (at least 1).
    pub chunks_per_batch: usize,
    /// Reject content beyond this many bytes with `413 FILE_TOO_LARGE`.
    pub max_size: Option<u64>,
    /// Also compute and record SHA-256.
    pub compute_sha256: bool,
    /// MIME type; derived from the file name when `None`.
    pub content_type: Option<String>,
    /// Upload or source URL.
    pub origin: Origin,
    /// Treatment of an existing file.
    pub mode: WriteMode,
    /// Publish only if the content's SHA-256 is this (lower-case hex); otherwise discard
    /// everything and fail with `CHECKSUM_MISMATCH`. Implies computing SHA-256.
    pub expected_sha256: Option<String>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunks_per_batch: CHUNKS_PER_BATCH,
            max_size: None,
            compute_sha256: false,
            content_type: None,
            origin: Origin::Upload,
            mode: WriteMode::Overwrite,
            expected_sha256: None,
        }
    }
}

/// A file being written; see the module docs for the protocol.
///
/// On an error from [`write`](Self::write) or [`touch`](Self::touch), call
/// [`abort`](Self::abort); [`commit`](Self::commit) cleans up after itself. Dropping a writer
/// does no I/O: its chunks are left to garbage collection.
pub struct FileWriter<'s, S: Storage + ?Sized> {
    chunks: ChunkWriter,
    state: WriteState<'s, S>,
}

/// Everything of a [`FileWriter`] but the chunker, so `commit` can consume the chunker and
/// still use the rest.
struct WriteState<'s, S: Storage + ?Sized> {
    storage: &'s S,
    path: StoragePath,
    blob_id: BlobId,
    chunk_size: u32,
    content_type: Option<String>,
    origin: Origin,
    mode: WriteMode,
    expected_sha256: Option<String>,
    marker: PendingMarker,
    marker_bytes: Vec<u8>,
    chunks_attempted: u64,
    /// Completed chunks not stored yet (keys and bytes), fewer than `chunks_per_batch`.
    batch: Vec<(String, Vec<u8>)>,
    chunks_per_batch: usize,
}

impl<'s, S: Storage + ?Sized> FileWriter<'s, S> {
    /// Starts writing `path` into the new blob `blob_id` (caller-generated, e.g. a UUID).
    /// Fails early if the path cannot hold a file or `options.mode` already rules it out.
    pub fn begin(
        storage: &'s S,
        path: StoragePath,
        blob_id: BlobId,
        options: WriteOptions,
        now: u64,
    ) -> Result<Self, ApiError> {
        if path.is_root() {
            return Err(PathError::RootIsNotAFile.into());
        }
        let mut chunks = ChunkWriter::new(options.chunk_size)?;
        if let Some(limit) = options.max_size {
            chunks = chunks.with_max_size(limit);
        }
        if options.compute_sha256 || options.expected_sha256.is_some() {
            chunks = chunks.with_sha256();
        }
        check_kinds(storage, &path, EntryKind::File)?;
        if let Some(bytes) = storage.get(&meta_key(&path))? {
            check_mode(&options.mode, &path, Some(&bytes))?;
        } else {
            check_mode(&options.mode, &path, None)?;
        }
        let marker = PendingMarker::new(path.clone(), now);
        let marker_bytes = marker.to_json_bytes();
        // A plain set: blob ids are fresh random ids, so nobody else writes this key until
        // the write shows up in it (GC reaps by compare-and-swap against these bytes).
        storage.set(&pending_key(&blob_id), &marker_bytes)?;
        Ok(FileWriter {
            chunks,
            state: WriteState {
                storage,
                path,
                blob_id,
                chunk_size: options.chunk_size,
                content_type: options.content_type,
                origin: options.origin,
                mode: options.mode,
                expected_sha256: options.expected_sha256.map(|h| h.to_ascii_lowercase()),
                marker,
                marker_bytes,
                chunks_attempted: 0,
                batch: Vec::with_capacity(options.chunks_per_batch.max(1)),
                chunks_per_batch: options.chunks_per_batch.max(1),
            },
        })
    }

    /// The path being written.
    pub fn path(&self) -> &StoragePath {
        &self.state.path
    }

    /// Bytes accepted so far (stored, or buffered until their batch is full).
    pub fn bytes_written(&self) -> u64 {
        self.chunks.size()
    }

    /// Accepts more content, storing completed chunks a batch at a time.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        for chunk in self.chunks.push(data)? {
            self.state.queue_chunk(chunk.index, chunk.bytes)?;
        }
        Ok(())
    }

    /// Tells garbage collection the writer is alive. Cheap to call often: it writes at most
    /// every [`TOUCH_INTERVAL_SECS`]. Fails if garbage collection already reclaimed the blob
    /// (the writer was silent for longer than the grace period).
    pub fn touch(&mut self, now: u64) -> Result<(), ApiError> {
        if now < self.state.marker.touched.saturating_add(TOUCH_INTERVAL_SECS) {
            return Ok(());
        }
        self.state.refresh_marker(now)
    }

    /// Deletes everything this writer stored. Attempts every deletion; reports the first error.
    pub fn abort(self) -> Result<(), ApiError> {
        self.state.discard()
    }

    /// Finishes the content and publishes the file atomically; returns its record and whether
    /// it replaced an existing file (decided at the moment of publication, so concurrent
    /// writers of one path see exactly one "new").
    pub fn commit(self, now: u64) -> Result<Committed, ApiError> {
        let FileWriter { chunks, mut state } = self;
        match state.publish(chunks.finish(), now) {
            Ok(published) => Ok(published),
            Err((error, Published::No)) => {
                // Best effort: whatever is left, GC removes later.
                let _ = state.discard();
                Err(error)
            }
            Err((error, Published::Yes)) => Err(error),
        }
    }
}

impl<S: Storage + ?Sized> WriteState<'_, S> {
    /// Adds a completed chunk to the batch; stores the batch once it is full.
    fn queue_chunk(&mut self, index: u64, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.batch.push((chunk_key(&self.blob_id, index), bytes));
        // Counted before the attempt: a failed set may still have landed.
        self.chunks_attempted = index + 1;
        if self.batch.len() >= self.chunks_per_batch {
            self.store_batch()?;
        }
        Ok(())
    }

    fn store_batch(&mut self) -> Result<(), ApiError> {
        match self.batch.as_slice() {
            [] => {}
            [(key, bytes)] => self.storage.set(key, bytes)?,
            batch => self.storage.set_many(batch)?,
        }
        self.batch.clear();
        Ok(())
    }

    fn discard(&self) -> Result<(), ApiError> {
        discard_blob(self.storage, &self.blob_id, self.chunks_attempted)
    }

    fn refresh_marker(&mut self, now: u64) -> Result<(), ApiError> {
        let mut marker = self.marker.clone();
        marker.touched = now.max(marker.touched);
        let bytes = marker.to_json_bytes();
        let key = pending_key(&self.blob_id);
        match self.storage.compare_and_swap(&key, Some(&self.marker_bytes), &bytes)? {
            CasOutcome::Swapped => {
                self.marker = marker;
                self.marker_bytes = bytes;
                Ok(())
            }
            CasOutcome::Conflict { .. } => Err(ApiError::storage(format!(
                "the write of `{}` was idle too long and its data was reclaimed; retry",
                self.path
            ))),
        }
    }

    fn publish(&mut self, finished: FinishedBlob, now: u64) -> Result<Committed, (ApiError, Published)> {
        let not_yet = |error: ApiError| (error, Published::No);
        let storage = self.storage;
        if let Some(expected) = &self.expected_sha256 {
            if finished.sha256.as_deref() != Some(expected.as_str()) {
                let actual = finished.sha256.clone().unwrap_or_default();
                return Err(not_yet(ApiError::new(
                    ErrorCode::ChecksumMismatch,
                    format!("content SHA-256 is {actual}, expected {expected}; nothing was kept"),
                )));
            }
        }
        if let Some(last) = finished.last_chunk {
            self.queue_chunk(last.index, last.bytes).map_err(not_yet)?;
        }
        self.store_batch().map_err(not_yet)?;
        // Last check that GC has not claimed the blob; from here on it will not.
        self.refresh_marker(now).map_err(not_yet)?;
        check_kinds(storage, &self.path, EntryKind::File).map_err(not_yet)?;
        link_ancestors(storage, &self.path).map_err(not_yet)?;

        let name = self.path.file_name().unwrap_or_default().to_owned();
        let mut meta = FileMeta {
            path: self.path.clone(),
            size: finished.size,
            crc32: finished.crc32,
            content_type: self.content_type.clone().unwrap_or_else(|| content_type_for(&name).to_owned()),
            created: now,
            modified: now,
            origin: self.origin.clone(),
            blob_id: self.blob_id.clone(),
            chunk_size: self.chunk_size,
            sha256: finished.sha256,
            replaces: None,
        };
        let key = meta_key(&self.path);
        let (mode, path) = (&self.mode, &self.path);
        let mut retrying = false;
        // Every record a write attempt replaced, if it landed (the store may not say).
        let mut replaced_candidates: Vec<FileMeta> = Vec::new();
        let (previous_bytes, superseded) = cas_update(storage, &key, |current| {
            check_mode(mode, path, current)?;
            let previous = current.and_then(|bytes| FileMeta::from_json_bytes(bytes).ok());
            // A retry means another write landed since this one read the record (or, on a
            // store that reports landed swaps as conflicts, after this one landed). Such
            // concurrent writes settle on one winner whatever each writer was told.
            if retrying && previous.as_ref().is_some_and(|other| other.supersedes(&meta)) {
                return Ok(CasStep::Done((current.map(<[u8]>::to_vec), true)));
            }
            retrying = true;
            meta.created = previous.as_ref().map_or(now, |old| old.created);
            meta.replaces = previous.as_ref().map(|old| old.blob_id.clone());
            replaced_candidates.extend(previous);
            Ok(CasStep::Write(meta.to_json_bytes(), (current.map(<[u8]>::to_vec), false)))
        })
        .map_err(not_yet)?;

        // Published: the file is visible and complete.
        let parent = self.path.parent().unwrap_or_default();
        match try_insert_entry(storage, &parent, &name, EntryKind::File) {
            Ok(Ok(_)) => {}
            Err(error) => return Err((error, Published::Yes)),
            Ok(Err(refused)) => {
                let error = refused.into_error(&parent, &name);
                if superseded {
                    return Err((error, Published::Yes));
                }
                // A directory of the same name appeared meanwhile: undo the publication.
                let ours = meta.to_json_bytes();
                let restored = match &previous_bytes {
                    Some(old) => {
                        storage.compare_and_swap(&key, Some(&ours), old).map(|outcome| outcome == CasOutcome::Swapped)
                    }
                    None => storage.retire(&key).map(|()| true),
                };
                if let Ok(true) = restored {
                    return Err((error, Published::No));
                }
                return Err((error, Published::Yes));
            }
        }
        let _ = storage.delete(&pending_key(&self.blob_id));
        let replaced = previous_bytes.is_some();
        // Chunks go once nothing can point at them: the blob is not the path's record now,
        // and its writer has finished (its marker is gone; a writer still publishing runs
        // this same step for its own blob). That holds however the store reported each swap,
        // so no chunk is discarded under a record, and none is left behind by a race.
        if let Ok(current) = read_meta(storage, &self.path) {
            let current_blob = current.map(|record| record.blob_id);
            replaced_candidates.push(meta.clone());
            let mut seen = std::collections::BTreeSet::new();
            for candidate in replaced_candidates.iter().filter(|c| seen.insert(c.blob_id.clone())) {
                if Some(&candidate.blob_id) == current_blob.as_ref() {
                    continue;
                }
                if let Ok(None) = storage.get(&pending_key(&candidate.blob_id)) {
                    let _ = discard_chunks(storage, &candidate.blob_id, candidate.chunk_count());
                }
            }
        }
        Ok(Committed { meta, replaced })
    }
}

enum Published {
    Yes,
    No,
}

/// A published write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The new record.
    pub meta: FileMeta,
    /// Whether it replaced an existing file.
    pub replaced: bool,
}

/// Writes a whole file from an iterator of byte slices (begin, write each, commit).
pub fn write_file<S, I, B>(
    storage: &S,
    path: &StoragePath,
    blob_id: BlobId,
    content: I,
    options: WriteOptions,
    now: u64,
) -> Result<FileMeta, ApiError>
where
    S: Storage + ?Sized,
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut writer = FileWriter::begin(storage, path.clone(), blob_id, options, now)?;
    for piece in content {
        if let Err(error) = writer.write(piece.as_ref()) {
            let _ = writer.abort();
            return Err(error);
        }
    }
    writer.commit(now).map(|committed| committed.meta)
}

fn check_mode(mode: &WriteMode, path: &StoragePath, current: Option<&[u8]>) -> Result<(), ApiError> {
    match mode {
        WriteMode::Overwrite => Ok(()),
        WriteMode::CreateNew if current.is_some() => {
            Err(ApiError::conflict(format!("a file already exists at `{path}`")))
        }
        WriteMode::CreateNew => Ok(()),
        WriteMode::IfMatch(condition) => {
            let etag = current.and_then(|bytes| FileMeta::from_json_bytes(bytes).ok()).map(|meta| meta.etag());
            if if_match_passes(condition, etag.as_deref()) {
                Ok(())
            } else {
                Err(ApiError::new(ErrorCode::PreconditionFailed, format!("`{path}` does not match If-Match")))
            }
        }
    }
}

/// Ensures no ancestor of `path` is a file and `path` is not already the other kind.
fn check_kinds<S: Storage + ?Sized>(storage: &S, path: &StoragePath, kind: EntryKind) -> Result<(), ApiError> {
    for ancestor in path.ancestors().iter().filter(|dir| !dir.is_root()) {
        if storage.get(&meta_key(ancestor))?.is_some() {
            return Err(ApiError::conflict(format!("`{ancestor}` is a file, so it cannot contain `{path}`")));
        }
    }
    let clash = match kind {
        EntryKind::File => storage.get(&dir_index_key(path))?.is_some(),
        EntryKind::Dir => storage.get(&meta_key(path))?.is_some(),
    };
    if clash {
        let existing = match kind {
            EntryKind::File => "directory",
            EntryKind::Dir => "file",
        };
        return Err(ApiError::conflict(format!("`{path}` is a {existing}")));
    }
    Ok(())
}

/// Adds every ancestor directory of `path` to its own parent's index, top-down.
fn link_ancestors<S: Storage + ?Sized>(storage: &S, path: &StoragePath) -> Result<(), ApiError> {
    let ancestors = path.ancestors();
    for pair in ancestors.windows(2) {
        let name = pair[1].file_name().unwrap_or_default();
        insert_entry(storage, &pair[0], name, EntryKind::Dir)?;
    }
    Ok(())
}

fn parse_index(dir: &StoragePath, bytes: Option<&[u8]>) -> Result<DirIndex, ApiError> {
    match bytes {
        None => Ok(DirIndex::new()),
        Some(bytes) => DirIndex::from_json_bytes(bytes)
            .map_err(|_| ApiError::storage(format!("the index of directory `/{dir}` is corrupt"))),
    }
}

fn read_index<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Option<DirIndex>, ApiError> {
    match storage.get(&dir_index_key(dir))? {
        None => Ok(None),
        Some(bytes) => parse_index(dir, Some(&bytes)).map(Some),
    }
}

/// Why a name cannot go into a directory index.
enum EntryRefused {
    /// The name is already a file or directory of the other kind.
    Taken(EntryKind),
    /// The index would outgrow one value.
    Full,
}

impl EntryRefused {
    fn into_error(self, dir: &StoragePath, name: &str) -> ApiError {
        match self {
            EntryRefused::Full => ApiError::conflict(format!("directory `/{dir}` has too many entries")),
            EntryRefused::Taken(existing) => {
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
    }
}

/// Adds `name` as `kind` to `dir`'s index: `Ok(true)` if it changed, or why it cannot.
fn try_insert_entry<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    name: &str,
    kind: EntryKind,
) -> Result<Result<bool, EntryRefused>, ApiError> {
    cas_update(storage, &dir_index_key(dir), |current| {
        let mut index = parse_index(dir, current)?;
        Ok(match index.insert(name, kind) {
            Ok(false) if current.is_some() => CasStep::Done(Ok(false)),
            Ok(_) => {
                let bytes = index.to_json_bytes();
                if bytes.len() > MAX_VALUE_BYTES {
                    CasStep::Done(Err(EntryRefused::Full))
                } else {
                    CasStep::Write(bytes, Ok(true))
                }
            }
            Err(conflict) => CasStep::Done(Err(EntryRefused::Taken(conflict.existing))),
        })
    })
}

/// Adds `name` as `kind` to `dir`'s index; `true` if it changed; a refusal is `409`.
fn insert_entry<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    name: &str,
    kind: EntryKind,
) -> Result<bool, ApiError> {
    try_insert_entry(storage, dir, name, kind)?.map_err(|refused| refused.into_error(dir, name))
}

/// Removes `name` from `dir`'s index; `true` if it was there.
fn remove_entry<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, name: &str) -> Result<bool, ApiError> {
    cas_update(storage, &dir_index_key(dir), |current| {
        if current.is_none() {
            return Ok(CasStep::Done(false));
        }
        let mut index = parse_index(dir, current)?;
        if index.remove(name) {
            Ok(CasStep::Write(index.to_json_bytes(), true))
        } else {
            Ok(CasStep::Done(false))
        }
    })
}

/// Deletes chunks `0..count` of a blob, attempting all; reports the first error.
fn discard_chunks<S: Storage + ?Sized>(storage: &S, blob_id: &BlobId, count: u64) -> Result<(), ApiError> {
    let mut first_error = None;
    for index in 0..count {
        if let Err(error) = storage.delete(&chunk_key(blob_id, index)) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), |error| Err(error.into()))
}

fn discard_blob<S: Storage + ?Sized>(storage: &S, blob_id: &BlobId, chunk_count: u64) -> Result<(), ApiError> {
    let chunks = discard_chunks(storage, blob_id, chunk_count);
    let marker = storage.delete(&pending_key(blob_id));
    chunks?;
    marker.map_err(ApiError::from)
}

/// Reclaims the blob of a write whose writer is known to be dead (e.g. a download whose
/// heartbeat stopped), without waiting for garbage collection. The pending marker goes first,
/// so a writer that was only slow can no longer publish; then chunks from 0 up to the first
/// missing one (chunks are written in order). `known_chunks` chunks are deleted without a probe.
/// Returns how many chunks were deleted.
pub fn reclaim_abandoned_write<S: Storage + ?Sized>(
    storage: &S,
    blob_id: &BlobId,
    known_chunks: u64,
) -> Result<u64, ApiError> {
    storage.delete(&pending_key(blob_id))?;
    discard_chunks(storage, blob_id, known_chunks)?;
    let mut index = known_chunks;
    while storage.get(&chunk_key(blob_id, index))?.is_some() {
        storage.delete(&chunk_key(blob_id, index))?;
        index += 1;
    }
    Ok(index)
}

/// The record of the file at `path`, if there is one.
pub fn read_meta<S: Storage + ?Sized>(storage: &S, path: &StoragePath) -> Result<Option<FileMeta>, ApiError> {
    if path.is_root() {
        return Ok(None);
    }
    let Some(bytes) = storage.get(&meta_key(path))? else {
        return Ok(None);
    };
    match FileMeta::from_json_bytes(&bytes) {
        Ok(meta) if meta.path == *path => Ok(Some(meta)),
        _ => Err(ApiError::storage(format!("the record of `{path}` is corrupt"))),
    }
}

/// A file or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A file and its record.
    File(FileMeta),
    /// A directory.
    Dir(StoragePath),
}

impl Entry {
    /// The entry's path.
    pub fn path(&self) -> &StoragePath {
        match self {
            Entry::File(meta) => &meta.path,
            Entry::Dir(path) => path,
        }
    }
}

/// What `path` is: a file, a directory (the root always is one), or nothing.
pub fn stat<S: Storage + ?Sized>(storage: &S, path: &StoragePath) -> Result<Option<Entry>, ApiError> {
    if path.is_root() {
        return Ok(Some(Entry::Dir(StoragePath::root())));
    }
    if let Some(meta) = read_meta(storage, path)? {
        return Ok(Some(Entry::File(meta)));
    }
    if storage.get(&dir_index_key(path))?.is_some() {
        return Ok(Some(Entry::Dir(path.clone())));
    }
    Ok(None)
}

/// The direct children of `dir`, sorted by name. Index entries whose file record is missing
/// (left by an interrupted delete) are skipped, so listings never show ghosts.
pub fn list_dir<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Vec<Entry>, ApiError> {
    match list_existing_dir(storage, dir)? {
        Some(entries) => Ok(entries),
        None if dir.is_root() => Ok(Vec::new()),
        None => Err(ApiError::not_found(format!("no directory `/{dir}`"))),
    }
}

/// The entries of `dir`, `None` when it has no index (never created, or deleted).
fn list_existing_dir<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Option<Vec<Entry>>, ApiError> {
    let Some(index) = read_index(storage, dir)? else { return Ok(None) };
    let mut entries = Vec::with_capacity(index.len());
    for (name, kind) in index.iter() {
        let Ok(child) = dir.join(name) else {
            continue;
        };
        match kind {
            EntryKind::File => {
                if let Some(meta) = read_meta(storage, &child)? {
                    entries.push(Entry::File(meta));
                }
            }
            EntryKind::Dir => entries.push(Entry::Dir(child)),
        }
    }
    Ok(Some(entries))
}

/// Every file below `dir`, recursively, in path order. More than `max_files` files is
/// `400 INVALID_REQUEST`, so one request cannot make a worker walk an unbounded tree.
pub fn walk_files<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    max_files: usize,
) -> Result<Vec<FileMeta>, ApiError> {
    let mut files = Vec::new();
    if !dir.is_root() && storage.get(&dir_index_key(dir))?.is_none() {
        return Err(ApiError::not_found(format!("no directory `/{dir}`")));
    }
    walk_into(storage, dir, max_files, &mut files)?;
    Ok(files)
}

fn walk_into<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    max_files: usize,
    files: &mut Vec<FileMeta>,
) -> Result<(), ApiError> {
    // Recursion depth is bounded by MAX_DEPTH, which `join` enforces. A directory listed but
    // never materialised is simply empty.
    for entry in list_existing_dir(storage, dir)?.unwrap_or_default() {
        match entry {
            Entry::File(meta) => {
                if files.len() >= max_files {
                    return Err(ApiError::invalid_request(format!("more than {max_files} files under `/{dir}`")));
                }
                files.push(meta);
            }
            Entry::Dir(child) => walk_into(storage, &child, max_files, files)?,
        }
    }
    Ok(())
}

/// Deletes the file at `path` (optionally only if its ETag matches `if_match`) and returns its
/// last record.
pub fn delete_file<S: Storage + ?Sized>(
    storage: &S,
    path: &StoragePath,
    if_match: Option<&str>,
) -> Result<FileMeta, ApiError> {
    let meta = read_meta(storage, path)?.ok_or_else(|| ApiError::not_found(format!("no file `{path}`")))?;
    if let Some(condition) = if_match {
        if !if_match_passes(condition, Some(&meta.etag())) {
            return Err(ApiError::new(ErrorCode::PreconditionFailed, format!("`{path}` does not match If-Match")));
        }
    }
    storage.retire(&meta_key(path))?;
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        remove_entry(storage, &parent, name)?;
    }
    // The file is gone either way; leftover chunks are GC's job.
    let _ = discard_chunks(storage, &meta.blob_id, meta.chunk_count());
    Ok(meta)
}

/// Counts of what a recursive delete removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteSummary {
    /// Files deleted.
    pub files: u64,
    /// Directories deleted, including the target.
    pub dirs: u64,
}

/// Deletes `dir` and everything below it. The root cannot be deleted.
pub fn delete_dir_recursive<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<DeleteSummary, ApiError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(ApiError::invalid_request("the root directory cannot be deleted"));
    };
    if storage.get(&dir_index_key(dir))?.is_none() {
        if storage.get(&meta_key(dir))?.is_some() {
            return Err(ApiError::conflict(format!("`{dir}` is a file, not a directory")));
        }
        return Err(ApiError::not_found(format!("no directory `/{dir}`")));
    }
    let mut summary = DeleteSummary::default();
    delete_tree(storage, dir, &mut summary)?;
    remove_entry(storage, &parent, name)?;
    Ok(summary)
}

fn delete_tree<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    summary: &mut DeleteSummary,
) -> Result<(), ApiError> {
    let index = read_index(storage, dir)?.unwrap_or_default();
    for (name, kind) in index.iter() {
        let Ok(child) = dir.join(name) else {
            continue;
        };
        match kind {
            EntryKind::File => {
                if let Some(meta) = read_meta(storage, &child)? {
                    storage.retire(&meta_key(&child))?;
                    let _ = discard_chunks(storage, &meta.blob_id, meta.chunk_count());
                    summary.files += 1;
                }
            }
            EntryKind::Dir => delete_tree(storage, &child, summary)?,
        }
    }
    storage.retire(&dir_index_key(dir))?;
    summary.dirs += 1;
    Ok(())
}

/// What a garbage collection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced chunks deleted.
    pub orphan_chunks_deleted: u64,
    /// Pending markers deleted (committed, abandoned or reaped writes).
    pub markers_deleted: u64,
    /// Abandoned writes whose claim lost to a writer that came back to life.
    pub claims_lost: u64,
    /// Files re-added to their directory index after a crash between publish and link.
    pub files_relinked: u64,
    /// Deletions or re-links that failed; the next pass retries them.
    pub failures: u64,
}

/// Deletes orphaned chunks and finished markers and re-links unlisted files.
///
/// Writes whose marker has not been refreshed for `grace_secs` are treated as abandoned (use
/// [`DEFAULT_GC_GRACE_SECS`] unless writers touch more often). Refuses to run if any file
/// record is unreadable, since its chunks would otherwise look orphaned.
pub fn collect_garbage<S: Storage + ?Sized>(storage: &S, now: u64, grace_secs: u64) -> Result<GcReport, ApiError> {
    // Order matters (see `plan_garbage_collection`): keys, then markers, then records.
    let keys = storage.list_keys()?;
    let mut markers = BTreeMap::new();
    let mut marker_bytes = BTreeMap::new();
    for key in &keys {
        if let KeyKind::Pending { blob_id } = classify_key(key) {
            if let Some(bytes) = storage.get(key)? {
                markers.insert(blob_id.to_owned(), PendingMarker::from_json_bytes(&bytes).ok());
                marker_bytes.insert(blob_id.to_owned(), bytes);
            }
        }
    }
    let mut referenced = BTreeSet::new();
    let mut records = Vec::new();
    for key in &keys {
        if classify_key(key) != KeyKind::FileMeta {
            continue;
        }
        if let Some(bytes) = storage.get(key)? {
            let meta = FileMeta::from_json_bytes(&bytes).map_err(|_| {
                ApiError::storage(format!("refusing to collect garbage: the file record at key `{key}` is unreadable"))
            })?;
            referenced.insert(meta.blob_id.clone());
            records.push(meta);
        }
    }
    let mut plan = plan_garbage_collection(keys.iter().map(String::as_str), &markers, &referenced, now, grace_secs);
    let mut report = GcReport::default();

    for blob_id in &plan.abandoned_blobs {
        let (Ok(id), Some(seen)) = (BlobId::new(blob_id.as_str()), marker_bytes.get(blob_id)) else {
            continue;
        };
        let key = pending_key(&id);
        let mut reaped =
            markers.get(blob_id).cloned().flatten().unwrap_or_else(|| PendingMarker::new(StoragePath::root(), 0));
        reaped.reaped = true;
        match storage.compare_and_swap(&key, Some(seen), &reaped.to_json_bytes()) {
            Ok(CasOutcome::Swapped) => plan.finished_markers.push(key),
            Ok(CasOutcome::Conflict { .. }) => {
                report.claims_lost += 1;
                plan.orphan_chunks.remove(blob_id);
            }
            Err(_) => {
                report.failures += 1;
                plan.orphan_chunks.remove(blob_id);
            }
        }
    }
    for key in plan.orphan_chunks.values().flatten() {
        match storage.delete(key) {
            Ok(()) => report.orphan_chunks_deleted += 1,
            Err(_) => report.failures += 1,
        }
    }
    // Markers go last, so an interrupted pass leaves them to retry the claim.
    for key in &plan.finished_markers {
        match storage.delete(key) {
            Ok(()) => report.markers_deleted += 1,
            Err(_) => report.failures += 1,
        }
    }
    for meta in &records {
        let (Some(parent), Some(name)) = (meta.path.parent(), meta.path.file_name()) else {
            continue;
        };
        let relinked =
            link_ancestors(storage, &meta.path).and_then(|()| insert_entry(storage, &parent, name, EntryKind::File));
        match relinked {
            Ok(true) => report.files_relinked += 1,
            Ok(false) => {}
            Err(_) => report.failures += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::StoredContent;
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
        StoredContent::from(&meta).stream(storage, 0, meta.size, &mut content).unwrap();
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
        let options = WriteOptions {
            compute_sha256: true,
            content_type: Some("application/x-custom".to_owned()),
            ..small_chunks()
        };
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
            let result =
                write_file(&storage, &p("d/f"), id("new"), [&b"brand new "[..], b"content"], small_chunks(), NOW);
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
}

//! Writing a file: the write protocol's writer, its options and modes, and discarding blobs.

use super::{cas_update, CasOutcome, CasStep, Storage};
use crate::blob::{
    chunk_key, meta_key, pending_key, publish_lock_key, BlobId, ChunkState, ChunkWriter, FinishedBlob, PendingMarker,
    DEFAULT_CHUNK_SIZE, MIN_PART_BYTES,
};
use crate::error::{ApiError, ErrorCode};
use crate::http::if_match_passes;
use crate::meta::{content_type_for, EntryKind, FileMeta, Origin};
use crate::path::{PathError, StoragePath};
use serde::{Deserialize, Serialize};

use crate::storage::objects::{ObjectLocation, ObjectStore, PendingUpload, PutCondition, PutOutcome, UploadedPart};

use super::*;

/// What a write does when a file already exists at the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub(crate) struct WriteState<'s, S: Storage + ?Sized> {
    storage: &'s S,
    path: StoragePath,
    blob_id: BlobId,
    chunk_size: u32,
    content_type: String,
    origin: Origin,
    mode: WriteMode,
    expected_sha256: Option<String>,
    max_size: Option<u64>,
    marker: PendingMarker,
    marker_bytes: Vec<u8>,
    sink: ByteSink,
    /// Key-value pieces of a bucket write's tail left by the invocation this one resumed.
    tail_pieces: u64,
}

/// A pending write stopped between invocations: everything [`FileWriter::resume`] needs to
/// go on appending in another one. Stored as JSON by the caller (it is well under a
/// key-value value: the parts list of a 10,000-part upload is the largest member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCheckpoint {
    path: StoragePath,
    blob_id: BlobId,
    chunk_size: u32,
    content_type: String,
    origin: Origin,
    mode: WriteMode,
    expected_sha256: Option<String>,
    max_size: Option<u64>,
    /// Where the chunker stands at its last boundary.
    chunks: ChunkState,
    /// Bytes after the boundary that were stored with the checkpoint (see [`FileWriter::suspend`]).
    tail_len: u64,
    sink: SinkCheckpoint,
}

/// The stored side of a [`WriteCheckpoint`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum SinkCheckpoint {
    /// Chunks in the key-value store; the tail, if kept, is the partial chunk at the next index.
    Chunks { attempted: u64 },
    /// Parts in the bucket; the tail, if kept, is in key-value pieces under the blob's chunk keys 0, 1, ….
    Object { key: String, upload: Option<PendingUpload>, parts: Vec<UploadedPart> },
}

impl WriteCheckpoint {
    /// Bytes of the file the checkpoint holds: resume the source from here.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.size + self.tail_len
    }

    /// The blob being written.
    pub fn blob_id(&self) -> &BlobId {
        &self.blob_id
    }

    /// Deletes what the checkpointed write stored, for a write that will not be resumed
    /// (best effort; garbage collection reaps what is left).
    pub fn discard<S: Storage + ?Sized>(&self, storage: &S) -> Result<(), ApiError> {
        match &self.sink {
            SinkCheckpoint::Chunks { attempted } => {
                discard_blob(storage, &self.blob_id, (*attempted).max(self.chunks.next_index + 1))
            }
            SinkCheckpoint::Object { upload, .. } => {
                discard_chunks(storage, &self.blob_id, tail_pieces(self.tail_len))?;
                if let Some(pending) = upload {
                    bucket(storage)?.abort_upload(pending)?;
                }
                storage.delete(&pending_key(&self.blob_id)).map_err(ApiError::from)
            }
        }
    }
}

/// A write's chunker: parts of `part_size` for a bucket (`Some`), else store chunks of
/// `chunk_size`; refusing content over `max_size`, and computing SHA-256 if asked.
fn chunker(
    part_size: Option<u32>,
    chunk_size: u32,
    max_size: Option<u64>,
    sha256: bool,
) -> Result<ChunkWriter, ApiError> {
    let mut chunks = match part_size {
        Some(part_size) => ChunkWriter::for_parts(part_size)?,
        None => ChunkWriter::new(chunk_size)?,
    };
    if let Some(limit) = max_size {
        chunks = chunks.with_max_size(limit);
    }
    if sha256 {
        chunks = chunks.with_sha256();
    }
    Ok(chunks)
}

/// Key-value pieces holding `len` bytes of a bucket write's tail.
fn tail_pieces(len: u64) -> u64 {
    len.div_ceil(u64::from(DEFAULT_CHUNK_SIZE))
}

/// Where a write puts its completed chunks: the two sides of the bytes boundary.
enum ByteSink {
    /// Chunks in the key-value store, a batch at a time.
    Chunks {
        /// Chunks handed to the store so far (a failed set may still have landed).
        attempted: u64,
        /// Completed chunks not stored yet (keys and bytes), fewer than `per_batch`.
        batch: Vec<(String, Vec<u8>)>,
        per_batch: usize,
    },
    /// Parts of one object in the bucket: a single put if the file fits one part, else a
    /// multipart upload started by the first full part.
    Object { key: String, upload: Option<PendingUpload>, parts: Vec<UploadedPart> },
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
        let objects = storage.objects();
        let sha256 = options.compute_sha256 || options.expected_sha256.is_some();
        let chunks = chunker(objects.map(|o| o.part_size()), options.chunk_size, options.max_size, sha256)?;
        check_kinds(storage, &path, EntryKind::File)?;
        if let Some(bytes) = storage.get(&meta_key(&path))? {
            check_mode(&options.mode, &path, Some(&bytes))?;
        } else {
            check_mode(&options.mode, &path, None)?;
        }
        let name = path.file_name().unwrap_or_default();
        let content_type = options.content_type.unwrap_or_else(|| content_type_for(name).to_owned());
        let sink = match objects {
            Some(objects) => {
                ByteSink::Object { key: object_key_within_limit(objects, &path)?, upload: None, parts: Vec::new() }
            }
            None => {
                let per_batch = options.chunks_per_batch.max(1);
                ByteSink::Chunks { attempted: 0, batch: Vec::with_capacity(per_batch), per_batch }
            }
        };
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
                content_type,
                origin: options.origin,
                mode: options.mode,
                expected_sha256: options.expected_sha256.map(|h| h.to_ascii_lowercase()),
                max_size: options.max_size,
                marker,
                marker_bytes,
                sink,
                tail_pieces: 0,
            },
        })
    }

    /// The path being written.
    pub fn path(&self) -> &StoragePath {
        &self.state.path
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

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.chunks.size()
    }

    /// Stores every completed chunk and describes the write at its last chunk boundary, to
    /// resume from if this invocation dies (the bytes after it are not stored: resume the
    /// source from [`WriteCheckpoint::stored_bytes`]). The writer goes on.
    pub fn checkpoint(&mut self) -> Result<WriteCheckpoint, ApiError> {
        self.state.store_batch()?;
        Ok(self.state.checkpoint(self.chunks.state(), 0))
    }

    /// Stops the write to go on in another invocation: stores every completed chunk and the
    /// bytes after the last boundary too — as the partial next chunk in the store, or, for
    /// a bucket, as a part of its own if it is large enough to be one, else in key-value
    /// pieces. The checkpoint holds every byte accepted.
    pub fn suspend(mut self) -> Result<WriteCheckpoint, ApiError> {
        let bucket_part = match &self.state.sink {
            ByteSink::Object { .. } => self.chunks.tail().len() >= MIN_PART_BYTES,
            ByteSink::Chunks { .. } => false,
        };
        if bucket_part {
            if let Some(part) = self.chunks.emit_tail() {
                self.state.queue_chunk(part.index, part.bytes)?;
            }
        }
        self.state.store_batch()?;
        let tail = self.chunks.tail();
        match &mut self.state.sink {
            ByteSink::Chunks { attempted, .. } if !tail.is_empty() => {
                let index = self.chunks.state().next_index;
                *attempted = (*attempted).max(index + 1);
                self.state.storage.set(&chunk_key(&self.state.blob_id, index), tail)?;
            }
            ByteSink::Object { .. } => {
                for (index, piece) in (0..).zip(tail.chunks(DEFAULT_CHUNK_SIZE as usize)) {
                    self.state.storage.set(&chunk_key(&self.state.blob_id, index), piece)?;
                }
            }
            ByteSink::Chunks { .. } => {}
        }
        Ok(self.state.checkpoint(self.chunks.state(), tail.len() as u64))
    }

    /// Goes on with a write stopped by [`checkpoint`](Self::checkpoint) or
    /// [`suspend`](Self::suspend) in an earlier invocation. Fails if garbage collection
    /// reclaimed it meanwhile (nobody resumed it within the grace period), or its stored tail
    /// is gone.
    pub fn resume(storage: &'s S, checkpoint: WriteCheckpoint, now: u64) -> Result<Self, ApiError> {
        let WriteCheckpoint {
            path,
            blob_id,
            chunk_size,
            content_type,
            origin,
            mode,
            expected_sha256,
            max_size,
            chunks: chunk_state,
            tail_len,
            sink,
        } = checkpoint;
        let gone = || ApiError::storage(format!("the pending write of `{path}` was reclaimed; start over"));
        let marker_bytes = storage.get(&pending_key(&blob_id))?.ok_or_else(gone)?;
        let marker = PendingMarker::from_json_bytes(&marker_bytes).map_err(|_| gone())?;
        if marker.reaped {
            return Err(gone());
        }
        let tail_len = usize::try_from(tail_len).map_err(|_| gone())?;
        // A store write's tail is its partial next chunk, which the write goes on to fill; a
        // bucket write's is in pieces of its own, deleted when the write ends.
        let (part_size, sink, tail, tail_pieces_left) = match sink {
            SinkCheckpoint::Chunks { attempted } => {
                let tail = match tail_len {
                    0 => Vec::new(),
                    len => {
                        let mut bytes = storage.get(&chunk_key(&blob_id, chunk_state.next_index))?.ok_or_else(gone)?;
                        if bytes.len() < len {
                            return Err(gone());
                        }
                        bytes.truncate(len);
                        bytes
                    }
                };
                let per_batch = CHUNKS_PER_BATCH;
                let sink = ByteSink::Chunks { attempted, batch: Vec::with_capacity(per_batch), per_batch };
                (None, sink, tail, 0)
            }
            SinkCheckpoint::Object { key, upload, parts } => {
                let objects = bucket(storage)?;
                let mut tail = Vec::with_capacity(tail_len);
                for index in 0..tail_pieces(tail_len as u64) {
                    tail.extend(storage.get(&chunk_key(&blob_id, index))?.ok_or_else(gone)?);
                }
                if tail.len() != tail_len {
                    return Err(gone());
                }
                let pieces = tail_pieces(tail_len as u64);
                (Some(objects.part_size()), ByteSink::Object { key, upload, parts }, tail, pieces)
            }
        };
        let chunks = chunker(part_size, chunk_size, max_size, chunk_state.sha256.is_some())?
            .resume(chunk_state, tail)
            .map_err(|_| gone())?;
        let mut state = WriteState {
            storage,
            path,
            blob_id,
            chunk_size,
            content_type,
            origin,
            mode,
            expected_sha256,
            max_size,
            marker,
            marker_bytes,
            sink,
            tail_pieces: tail_pieces_left,
        };
        // Alive again: GC must not take the blob now.
        state.refresh_marker(now)?;
        Ok(FileWriter { chunks, state })
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
    /// Takes a completed full chunk: into the batch (stored once full), or as the next part
    /// of the object's upload (started by the first).
    fn queue_chunk(&mut self, index: u64, bytes: Vec<u8>) -> Result<(), ApiError> {
        match &mut self.sink {
            ByteSink::Chunks { attempted, batch, per_batch } => {
                batch.push((chunk_key(&self.blob_id, index), bytes));
                // Counted before the attempt: a failed set may still have landed.
                *attempted = index + 1;
                if batch.len() >= *per_batch {
                    self.store_batch()?;
                }
            }
            ByteSink::Object { .. } => self.queue_part(index, &bytes)?,
        }
        Ok(())
    }

    /// Stores a full part of the object, starting the multipart upload with the first.
    fn queue_part(&mut self, index: u64, bytes: &[u8]) -> Result<(), ApiError> {
        let objects = bucket(self.storage)?;
        let ByteSink::Object { key, upload, .. } = &mut self.sink else {
            return Ok(());
        };
        let pending = match upload {
            Some(pending) => pending.clone(),
            None => {
                let pending = objects.create_upload(key, &self.content_type)?;
                // Kept at once, so a failure from here on aborts it.
                *upload = Some(pending.clone());
                // In the marker, so whoever reclaims an abandoned write can abort the upload.
                self.marker.upload = Some(pending.clone());
                self.refresh_marker(self.marker.touched)?;
                pending
            }
        };
        let part = objects.upload_part(&pending, part_number(index)?, bytes)?;
        if let ByteSink::Object { parts, .. } = &mut self.sink {
            parts.push(part);
        }
        Ok(())
    }

    fn store_batch(&mut self) -> Result<(), ApiError> {
        if let ByteSink::Chunks { batch, .. } = &mut self.sink {
            match batch.as_slice() {
                [] => {}
                [(key, bytes)] => self.storage.set(key, bytes)?,
                entries => self.storage.set_many(entries)?,
            }
            batch.clear();
        }
        Ok(())
    }

    /// The checkpoint of this write standing at `chunks` with `tail_len` bytes stored after it.
    fn checkpoint(&self, chunks: ChunkState, tail_len: u64) -> WriteCheckpoint {
        let sink = match &self.sink {
            ByteSink::Chunks { attempted, .. } => SinkCheckpoint::Chunks { attempted: *attempted },
            ByteSink::Object { key, upload, parts } => {
                SinkCheckpoint::Object { key: key.clone(), upload: upload.clone(), parts: parts.clone() }
            }
        };
        WriteCheckpoint {
            path: self.path.clone(),
            blob_id: self.blob_id.clone(),
            chunk_size: self.chunk_size,
            content_type: self.content_type.clone(),
            origin: self.origin.clone(),
            mode: self.mode.clone(),
            expected_sha256: self.expected_sha256.clone(),
            max_size: self.max_size,
            chunks,
            tail_len,
            sink,
        }
    }

    fn discard(&self) -> Result<(), ApiError> {
        match &self.sink {
            ByteSink::Chunks { attempted, .. } => discard_blob(self.storage, &self.blob_id, *attempted),
            ByteSink::Object { upload, .. } => {
                discard_chunks(self.storage, &self.blob_id, self.tail_pieces)?;
                if let Some(pending) = upload {
                    // The marker names the upload: it stays until the upload is aborted, so a
                    // bucket that cannot be reached now leaves GC something to abort later.
                    bucket(self.storage)?.abort_upload(pending)?;
                }
                self.storage.delete(&pending_key(&self.blob_id)).map_err(ApiError::from)
            }
        }
    }

    /// What the bucket must still hold for this write's object to replace it, from the
    /// path's record now; refuses early (nothing visible yet) if the mode already rules the
    /// write out. The record is checked again when it is swapped.
    fn object_condition(&self) -> Result<PutCondition, ApiError> {
        if let ByteSink::Chunks { .. } = self.sink {
            return Ok(PutCondition::None);
        }
        let current = self.storage.get(&meta_key(&self.path))?;
        check_mode(&self.mode, &self.path, current.as_deref())?;
        let current_object =
            current.and_then(|bytes| FileMeta::from_json_bytes(&bytes).ok()).and_then(|meta| meta.object);
        Ok(match (&self.mode, current_object) {
            (WriteMode::Overwrite, _) => PutCondition::None,
            (WriteMode::CreateNew, _) => PutCondition::Absent,
            (WriteMode::IfMatch(_), Some(object)) => PutCondition::Matches(object.etag),
            (WriteMode::IfMatch(_), None) => PutCondition::None,
        })
    }

    /// Stores the last chunk and makes the bytes complete: chunks are all in the store; an
    /// object becomes visible at its key if `condition` holds (its location is returned).
    fn finish_bytes(
        &mut self,
        last_chunk: Option<crate::blob::Chunk>,
        condition: &PutCondition,
    ) -> Result<Option<ObjectLocation>, ApiError> {
        let ByteSink::Object { key, upload, parts } = &mut self.sink else {
            if let Some(last) = last_chunk {
                self.queue_chunk(last.index, last.bytes)?;
            }
            self.store_batch()?;
            return Ok(None);
        };
        let objects = bucket(self.storage)?;
        let outcome = match upload {
            None => {
                let bytes = last_chunk.map(|chunk| chunk.bytes).unwrap_or_default();
                objects.put(key, &self.content_type, &bytes, condition)?
            }
            Some(pending) => {
                if let Some(last) = last_chunk {
                    parts.push(objects.upload_part(pending, part_number(last.index)?, &last.bytes)?);
                }
                objects.complete_upload(pending, parts, condition)?
            }
        };
        match outcome {
            PutOutcome::Written { etag } => {
                // Completed: nothing left to abort.
                *upload = None;
                Ok(Some(ObjectLocation { key: key.clone(), etag }))
            }
            PutOutcome::PreconditionFailed => Err(match &self.mode {
                WriteMode::CreateNew => {
                    ApiError::conflict(format!("an object already exists at `{}` in the bucket", self.path))
                }
                _ => ApiError::new(
                    ErrorCode::PreconditionFailed,
                    format!("`{}` changed in the bucket while it was written", self.path),
                ),
            }),
        }
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
        // Last check that GC has not claimed the blob; from here on it will not (the marker
        // is fresh for the whole grace period).
        self.refresh_marker(now).map_err(not_yet)?;
        check_kinds(storage, &self.path, EntryKind::File).map_err(not_yet)?;
        link_ancestors(storage, &self.path).map_err(not_yet)?;
        // An object is visible at its key once completed, before its record: concurrent
        // writers of one path take turns, so the last object completed is the last recorded.
        let lock = match self.sink {
            ByteSink::Object { .. } => Some(PublishLock::take(storage, &self.path, &self.blob_id).map_err(not_yet)?),
            ByteSink::Chunks { .. } => None,
        };
        let published = self.publish_record(finished, now);
        if let Some(lock) = lock {
            lock.release();
        }
        published
    }

    /// Makes the bytes complete and swaps the path's record to them.
    fn publish_record(&mut self, finished: FinishedBlob, now: u64) -> Result<Committed, (ApiError, Published)> {
        let not_yet = |error: ApiError| (error, Published::No);
        let storage = self.storage;
        let condition = self.object_condition().map_err(not_yet)?;
        let object = self.finish_bytes(finished.last_chunk, &condition).map_err(not_yet)?;

        let name = self.path.file_name().unwrap_or_default().to_owned();
        let mut meta = FileMeta {
            path: self.path.clone(),
            size: finished.size,
            crc32: finished.crc32,
            content_type: self.content_type.clone(),
            created: now,
            modified: now,
            origin: self.origin.clone(),
            blob_id: self.blob_id.clone(),
            chunk_size: self.chunk_size,
            object,
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
        let _ = discard_chunks(storage, &self.blob_id, self.tail_pieces);
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
                    let _ = discard_content(storage, candidate, meta.object.as_ref());
                }
            }
        }
        Ok(Committed { meta, replaced })
    }
}

pub(crate) enum Published {
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

pub(crate) fn check_mode(mode: &WriteMode, path: &StoragePath, current: Option<&[u8]>) -> Result<(), ApiError> {
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

/// How long a write waits for another writer of the same path to publish before it takes the
/// lock over (a writer that died holding it): far longer than completing an upload and
/// swapping a record take.
const PUBLISH_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
const PUBLISH_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A path's publication lock: a key created by compare-and-swap, holding the writer's blob id.
struct PublishLock<'s, S: Storage + ?Sized> {
    storage: &'s S,
    key: String,
    ours: Vec<u8>,
}

impl<'s, S: Storage + ?Sized> PublishLock<'s, S> {
    fn take(storage: &'s S, path: &StoragePath, blob_id: &BlobId) -> Result<Self, ApiError> {
        let objects = bucket(storage)?;
        let key = publish_lock_key(path);
        let ours = blob_id.as_str().as_bytes().to_vec();
        let polls = PUBLISH_LOCK_PATIENCE.as_millis() / PUBLISH_LOCK_POLL.as_millis();
        for _ in 0..polls {
            match storage.compare_and_swap(&key, None, &ours)? {
                CasOutcome::Swapped => return Ok(PublishLock { storage, key, ours }),
                CasOutcome::Conflict { .. } => objects.pause(PUBLISH_LOCK_POLL),
            }
        }
        // Held all along: its writer died holding it. One take-over, against what is there now.
        let taken = match storage.compare_and_swap(&key, None, &ours)? {
            CasOutcome::Swapped => true,
            CasOutcome::Conflict { current: Some(holder) } => {
                storage.compare_and_swap(&key, Some(&holder), &ours)? == CasOutcome::Swapped
            }
            CasOutcome::Conflict { current: None } => false,
        };
        if taken {
            return Ok(PublishLock { storage, key, ours });
        }
        Err(ApiError::storage(format!("`{path}` is being published by another write; retry")))
    }

    /// Best effort: a lock left behind is taken over after [`PUBLISH_LOCK_PATIENCE`]. Retired,
    /// not deleted: the key is created by compare-and-swap from absent, which on Spin's stores
    /// ([`ExactKv`](crate::storage::exact::ExactKv)) is exact only against a tombstone once the
    /// key has existed; a plain delete let two writers take the lock at once.
    fn release(self) {
        if let Ok(Some(current)) = self.storage.get(&self.key) {
            if current == self.ours {
                let _ = self.storage.retire(&self.key);
            }
        }
    }
}

/// The longest object key S3 accepts, in bytes.
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;

/// `path`'s object key, if S3 can hold it (the prefix counts against the limit).
fn object_key_within_limit(objects: &dyn ObjectStore, path: &StoragePath) -> Result<String, ApiError> {
    let key = objects.key_for(path);
    if key.len() > MAX_OBJECT_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            format!(
                "`{path}` is too long for the bucket: with the key prefix it is {} bytes, S3 allows {MAX_OBJECT_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// The bucket of a write whose bytes go to objects.
pub(crate) fn bucket<S: Storage + ?Sized>(storage: &S) -> Result<&dyn ObjectStore, ApiError> {
    storage.objects().ok_or_else(|| ApiError::storage("this file's bytes are in a bucket, but no bucket is configured"))
}

/// The S3 part number of chunk `index` (parts count from 1, at most 10,000).
fn part_number(index: u64) -> Result<u16, ApiError> {
    index.checked_add(1).and_then(|n| u16::try_from(n).ok()).filter(|n| *n <= MAX_PARTS).ok_or_else(|| {
        ApiError::new(ErrorCode::FileTooLarge, format!("a file in the bucket has at most {MAX_PARTS} parts"))
    })
}

/// The most parts one S3 multipart upload may have.
pub const MAX_PARTS: u16 = 10_000;

/// Deletes the bytes of a record nothing points at any more: its chunks, or its object —
/// unless that object is `keep` (a write replaces the object at its own key in place).
pub(crate) fn discard_content<S: Storage + ?Sized>(
    storage: &S,
    meta: &FileMeta,
    keep: Option<&ObjectLocation>,
) -> Result<(), ApiError> {
    match &meta.object {
        None => discard_chunks(storage, &meta.blob_id, meta.chunk_count()),
        Some(object) if keep.is_some_and(|kept| kept.key == object.key) => Ok(()),
        Some(object) => bucket(storage)?.delete(&object.key).map_err(ApiError::from),
    }
}

/// Deletes chunks `0..count` of a blob, attempting all; reports the first error.
pub(crate) fn discard_chunks<S: Storage + ?Sized>(storage: &S, blob_id: &BlobId, count: u64) -> Result<(), ApiError> {
    let mut first_error = None;
    for index in 0..count {
        if let Err(error) = storage.delete(&chunk_key(blob_id, index)) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), |error| Err(error.into()))
}

pub(crate) fn discard_blob<S: Storage + ?Sized>(
    storage: &S,
    blob_id: &BlobId,
    chunk_count: u64,
) -> Result<(), ApiError> {
    let chunks = discard_chunks(storage, blob_id, chunk_count);
    let marker = storage.delete(&pending_key(blob_id));
    chunks?;
    marker.map_err(ApiError::from)
}

/// Reclaims the blob of a write whose writer is known to be dead (e.g. a download whose
/// heartbeat stopped), without waiting for garbage collection. The pending marker goes first,
/// so a writer that was only slow can no longer publish; then chunks from 0 up to the first
/// missing one (chunks are written in order), or the multipart upload its marker names.
/// `known_chunks` chunks are deleted without a probe. Returns how many chunks were deleted.
pub fn reclaim_abandoned_write<S: Storage + ?Sized>(
    storage: &S,
    blob_id: &BlobId,
    known_chunks: u64,
) -> Result<u64, ApiError> {
    let marker = storage.get(&pending_key(blob_id))?.and_then(|bytes| PendingMarker::from_json_bytes(&bytes).ok());
    if let Some(upload) = marker.and_then(|marker| marker.upload) {
        // A component without the bucket leaves the marker to garbage collection (which runs
        // with it), so the upload is not forgotten.
        if let Some(objects) = storage.objects() {
            storage.delete(&pending_key(blob_id))?;
            objects.abort_upload(&upload)?;
        }
        return Ok(0);
    }
    storage.delete(&pending_key(blob_id))?;
    discard_chunks(storage, blob_id, known_chunks)?;
    let mut index = known_chunks;
    while storage.get(&chunk_key(blob_id, index))?.is_some() {
        storage.delete(&chunk_key(blob_id, index))?;
        index += 1;
    }
    Ok(index)
}

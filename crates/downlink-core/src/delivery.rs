//! Serving stored content: the one path every byte a client downloads takes.
//!
//! Two steps, sans-IO in the way quinn-proto splits inputs from outputs:
//!
//! - **Decide** — [`Delivery::file`] (a file's `GET`/`HEAD`) and [`Delivery::plan`] (a prepared
//!   multi-file download: the file itself, a STORE archive laid out up front, or a deflated one)
//!   take the record and the request's conditional headers and return the answer: its
//!   [`Delivery::response`] (status and headers, sent first) and [`Delivery::bytes_to_send`] (what
//!   the bandwidth quota is checked against). Every refusal (`416` for a range outside the
//!   content, `409` for a file changed since prepare, a corrupt record) happens here, before a
//!   status is committed.
//! - **Stream** — [`Delivery::stream`] reads the chunks in order and hands each to a
//!   [`ContentSink`] the caller supplies (ripgrep's `Sink` is the model): the Spin response body
//!   in a component, a `Vec<u8>` in tests. Chunk slices are passed by reference, never copied.
//!
//! What is verified on the way ([`ReadCheck`]): always, that every chunk exists and has the
//! length its record implies — chunks live under their blob's id, so a file replaced or
//! deleted mid-read shows up as a missing chunk, never as bytes of another version. The CRC-32
//! is computed from the bytes as they are written, stored in the record and put in every ZIP
//! header; re-computing it on every read cost as much CPU in the guest as the rest of the
//! transfer, so checking a whole file (or a whole archive entry) against it on the way out is
//! [`ReadCheck::Crc32`], opt-in (the `verify_reads` setting). A deflated archive is always
//! checked (its encoder reads every byte anyway). A failure stops the stream with a
//! [`StreamError`] so the caller leaves the body unfinished and the client sees a truncated
//! response, never a silently wrong one.

use std::convert::Infallible;
use std::fmt;
use std::io;

use crate::blob::{chunk_key, BlobId, ChunkPlan};
use crate::deflate_zip::{ArchiveCompression, DeflateZipWriter};
use crate::error::{ApiError, ErrorCode};
use crate::http::{plan_response, ConditionalHeaders, Representation, ResponsePlan};
use crate::meta::FileMeta;
use crate::path::StoragePath;
use crate::prepare::{PlanEntry, PreparedPlan};
use crate::storage::objects::{ObjectLocation, ObjectReadError};
use crate::storage::{read_meta, Storage, StorageError};
use crate::zip::{Segment, ZipLayout, ZIP_CONTENT_TYPE};

/// How much of the stored content a read checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadCheck {
    /// Every chunk exists and has its expected length (always done).
    #[default]
    ChunkLengths,
    /// Also: a whole file or archive entry matches the CRC-32 recorded when it was written.
    Crc32,
}

impl ReadCheck {
    /// [`ReadCheck::Crc32`] when `verify_reads` is set, else [`ReadCheck::ChunkLengths`].
    pub fn from_setting(verify_reads: bool) -> ReadCheck {
        if verify_reads {
            ReadCheck::Crc32
        } else {
            ReadCheck::ChunkLengths
        }
    }
}

/// Content type of a single file whose record has none.
pub const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// Where streamed bytes go.
pub trait ContentSink {
    /// Why the sink stopped taking bytes (for a response body: the client went away).
    type Error;

    /// Takes the next bytes of the body, in order.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Collects the body in memory (tests, small bodies).
impl ContentSink for Vec<u8> {
    type Error = Infallible;

    fn send(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// The stored content did not match its record, or storage failed, while streaming.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A chunk the record names is gone (the file was replaced or deleted mid-read).
    #[error("chunk {index} of `/{path}` is missing (the file changed while being read)")]
    MissingChunk {
        /// The file.
        path: StoragePath,
        /// The chunk number.
        index: u64,
    },
    /// A chunk has another length than the record implies.
    #[error("chunk {index} of `/{path}` has the wrong length")]
    WrongChunkLength {
        /// The file.
        path: StoragePath,
        /// The chunk number.
        index: u64,
    },
    /// The object the record names is gone from the bucket.
    #[error("the object of `/{path}` is missing from the bucket")]
    ObjectMissing {
        /// The file.
        path: StoragePath,
    },
    /// The object at the record's key is not the one the record names (replaced by another
    /// write or another tool).
    #[error("the object of `/{path}` was replaced in the bucket (the file changed while being read)")]
    ObjectChanged {
        /// The file.
        path: StoragePath,
    },
    /// The object ended before the bytes the record promises.
    #[error("the object of `/{path}` is shorter than its record")]
    ObjectTruncated {
        /// The file.
        path: StoragePath,
    },
    /// The whole content does not match the record's CRC-32.
    #[error("`/{path}` failed its CRC-32 check")]
    ChecksumMismatch {
        /// The file.
        path: StoragePath,
    },
    /// The deflate encoder refused the content (see [`DeflateZipWriter`]).
    #[error("{0}")]
    Archive(String),
}

/// Why [`Delivery::stream`] stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError<E> {
    /// The content is not what its record says, or storage failed.
    Content(ContentError),
    /// The sink refused bytes.
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Content(e) => e.fmt(f),
            StreamError::Sink(e) => write!(f, "the body could not be sent: {e}"),
        }
    }
}

impl<E> From<ContentError> for StreamError<E> {
    fn from(e: ContentError) -> Self {
        StreamError::Content(e)
    }
}

/// A read that failed before any byte was sent is answered as `500 STORAGE_ERROR` saying what
/// broke (the message names the file and the fault, never contents or secrets).
impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Storage(e) => e.into(),
            other => ApiError::storage(other.to_string()),
        }
    }
}

impl<E> From<StorageError> for StreamError<E> {
    fn from(e: StorageError) -> Self {
        StreamError::Content(ContentError::Storage(e))
    }
}

/// Where one file's bytes are and what they must add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredContent {
    /// The file (for messages).
    pub path: StoragePath,
    /// The blob holding the chunks.
    pub blob_id: BlobId,
    /// Length in bytes.
    pub size: u64,
    /// CRC-32 of the whole content.
    pub crc32: u32,
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// The object holding the bytes, when they are in the bucket (else chunks).
    pub object: Option<ObjectLocation>,
}

impl From<&FileMeta> for StoredContent {
    fn from(meta: &FileMeta) -> Self {
        StoredContent {
            path: meta.path.clone(),
            blob_id: meta.blob_id.clone(),
            size: meta.size,
            crc32: meta.crc32,
            chunk_size: meta.chunk_size,
            object: meta.object.clone(),
        }
    }
}

impl From<&PlanEntry> for StoredContent {
    fn from(entry: &PlanEntry) -> Self {
        StoredContent {
            path: entry.path.clone(),
            blob_id: entry.blob_id.clone(),
            size: entry.size,
            crc32: entry.crc32,
            chunk_size: entry.chunk_size,
            object: entry.object.clone(),
        }
    }
}

impl StoredContent {
    /// Streams `len` bytes from `offset` into `sink`; with [`ReadCheck::Crc32`], a read of the
    /// whole content is checked against the CRC-32 (a range cannot be: the check needs every
    /// byte).
    pub fn stream<S, K>(
        &self,
        storage: &S,
        offset: u64,
        len: u64,
        check: ReadCheck,
        sink: &mut K,
    ) -> Result<(), StreamError<K::Error>>
    where
        S: Storage + ?Sized,
        K: ContentSink + ?Sized,
    {
        let whole = offset == 0 && len == self.size;
        let mut crc = (whole && check == ReadCheck::Crc32).then(crc32fast::Hasher::new);
        let mut unchecked = len;
        self.for_each_slice(storage, offset, len, |slice| {
            if let Some(crc) = &mut crc {
                crc.update(slice);
                unchecked -= slice.len() as u64;
                // Checked before the last bytes go out: once a body with a Content-Length has
                // all its bytes, the client takes it as complete, cut off or not.
                if unchecked == 0 && crc.clone().finalize() != self.crc32 {
                    return Err(ContentError::ChecksumMismatch { path: self.path.clone() }.into());
                }
            }
            sink.send(slice).map_err(StreamError::Sink)
        })
    }

    /// Hands `len` bytes from `offset` to `consume`, one stored chunk (or part of one) at a time.
    fn for_each_slice<S, E>(
        &self,
        storage: &S,
        offset: u64,
        len: u64,
        mut consume: impl FnMut(&[u8]) -> Result<(), StreamError<E>>,
    ) -> Result<(), StreamError<E>>
    where
        S: Storage + ?Sized,
    {
        if len == 0 {
            return Ok(());
        }
        if let Some(object) = &self.object {
            return self.for_each_object_piece(storage, object, offset, len, consume);
        }
        let plan = offset
            .checked_add(len - 1)
            .and_then(|last| ChunkPlan::range(self.size, self.chunk_size, offset, last))
            // Decisions only ever ask for bytes inside the content; anything else is a bug
            // (or a corrupt record with no chunk size), reported like a broken chunk.
            .ok_or_else(|| ContentError::WrongChunkLength { path: self.path.clone(), index: 0 })?;
        for slice in plan {
            let key = chunk_key(&self.blob_id, slice.index);
            let chunk = storage
                .get(&key)?
                .ok_or_else(|| ContentError::MissingChunk { path: self.path.clone(), index: slice.index })?;
            if chunk.len() != slice.expected_len {
                return Err(ContentError::WrongChunkLength { path: self.path.clone(), index: slice.index }.into());
            }
            consume(&chunk[slice.start..slice.end])?;
        }
        Ok(())
    }
}

impl StoredContent {
    /// [`for_each_slice`](Self::for_each_slice) for bytes in the bucket: one ranged read.
    fn for_each_object_piece<S, E>(
        &self,
        storage: &S,
        object: &ObjectLocation,
        offset: u64,
        len: u64,
        mut consume: impl FnMut(&[u8]) -> Result<(), StreamError<E>>,
    ) -> Result<(), StreamError<E>>
    where
        S: Storage + ?Sized,
    {
        let path = || self.path.clone();
        let read_error = |error: ObjectReadError| match error {
            ObjectReadError::Missing => ContentError::ObjectMissing { path: path() },
            ObjectReadError::Changed => ContentError::ObjectChanged { path: path() },
            ObjectReadError::Failed(error) => ContentError::Storage(error),
        };
        let objects = storage.objects().ok_or_else(|| {
            ContentError::Storage(StorageError::new(format!(
                "the bytes of `/{}` are in a bucket, but no bucket is configured",
                self.path
            )))
        })?;
        let mut body = objects.read_range(object, offset, len).map_err(read_error)?;
        let mut left = len;
        while left > 0 {
            let piece =
                body.next_piece().map_err(read_error)?.ok_or_else(|| ContentError::ObjectTruncated { path: path() })?;
            // A server sending more than asked is cut at the range's end.
            let take = usize::try_from(left).map_or(piece.len(), |left| piece.len().min(left));
            consume(&piece[..take])?;
            left -= take as u64;
        }
        Ok(())
    }
}

/// What the body of a [`Delivery`] is.
#[derive(Clone, Debug)]
enum Body {
    /// No body: `HEAD`, `304`.
    Empty,
    /// One file, whole or the response's range.
    File(StoredContent),
    /// The STORE archive, whole or the response's range.
    StoredZip { entries: Vec<StoredContent>, layout: ZipLayout },
    /// The deflated archive, whole; the STORE layout names the entries and their checks.
    DeflatedZip { entries: Vec<StoredContent>, layout: ZipLayout },
}

/// A `GET`/`HEAD` answer decided: the response to start, then the bytes to stream.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Status and headers, sent before the body.
    pub response: ResponsePlan,
    body: Body,
    check: ReadCheck,
}

impl Delivery {
    /// A stored file: `200`, `206` for a range, `304` for a matching `If-None-Match`, `416`
    /// for a range outside it; `head_only` sends the headers alone.
    pub fn file(meta: &FileMeta, conditional: ConditionalHeaders<'_>, head_only: bool) -> Result<Delivery, ApiError> {
        let etag = meta.etag();
        let representation = Representation {
            size: meta.size,
            etag: &etag,
            last_modified: meta.modified,
            content_type: &meta.content_type,
        };
        let response = plan_response(&representation, conditional)?;
        if !response.has_body || head_only {
            return Ok(Delivery { response, body: Body::Empty, check: ReadCheck::default() });
        }
        if meta.chunk_size == 0 && meta.size > 0 {
            return Err(ApiError::storage(format!("the record of `/{}` is corrupt", meta.path)));
        }
        Ok(Delivery { response, body: Body::File(StoredContent::from(meta)), check: ReadCheck::default() })
    }

    /// A prepared multi-file download: the file itself for one entry, else the archive (STORE
    /// with exact length and ranges, or deflated and streamed). Every file must still be exactly
    /// what was prepared — the sizes and CRCs are in the archive's headers — else `409` before
    /// the first byte.
    pub fn plan<S: Storage + ?Sized>(
        storage: &S,
        plan: &PreparedPlan,
        compression: ArchiveCompression,
        conditional: ConditionalHeaders<'_>,
        head_only: bool,
    ) -> Result<Delivery, ApiError> {
        for entry in &plan.entries {
            entry.check_current(read_meta(storage, &entry.path)?.as_ref())?;
        }
        let entries: Vec<StoredContent> = plan.entries.iter().map(StoredContent::from).collect();
        let layout = plan.is_archive().then(|| plan.zip_layout()).transpose()?;
        let deflate = layout.is_some() && compression == ArchiveCompression::Deflate;
        let mut response = if deflate {
            // The compressed size is unknown until sent: no length, no ranges, no validators
            // to resume against.
            ResponsePlan::streamed(ZIP_CONTENT_TYPE, plan.last_modified())
        } else {
            let etag = plan.etag();
            let size = match &layout {
                Some(layout) => layout.total_len(),
                None => entries.first().map_or(0, |entry| entry.size),
            };
            let content_type = match plan.content_type() {
                "" => FALLBACK_CONTENT_TYPE,
                other => other,
            };
            let representation =
                Representation { size, etag: &etag, last_modified: plan.last_modified(), content_type };
            plan_response(&representation, conditional)?
        };
        response.headers.push(("content-disposition", plan.content_disposition()));
        response.headers.push(("cache-control", "private".to_string()));
        let body = match layout {
            _ if !response.has_body || head_only => Body::Empty,
            Some(layout) if deflate => Body::DeflatedZip { entries, layout },
            Some(layout) => Body::StoredZip { entries, layout },
            None => Body::File(entries.into_iter().next().ok_or_else(|| ApiError::internal("empty plan"))?),
        };
        Ok(Delivery { response, body, check: ReadCheck::default() })
    }

    /// Checks the content as `check` says while streaming (default [`ReadCheck::ChunkLengths`]).
    pub fn with_check(mut self, check: ReadCheck) -> Delivery {
        self.check = check;
        self
    }

    /// Bytes the body will carry — for a deflated archive, its STORE size (the compressed
    /// size is unknown up front; it is what a quota is checked against).
    pub fn bytes_to_send(&self) -> u64 {
        match (&self.body, self.response.range) {
            (Body::Empty, _) => 0,
            (_, Some(range)) => range.len(),
            (Body::File(content), None) => content.size,
            (Body::StoredZip { layout, .. } | Body::DeflatedZip { layout, .. }, None) => layout.total_len(),
        }
    }

    /// Streams the body into `sink`.
    pub fn stream<S, K>(&self, storage: &S, sink: &mut K) -> Result<(), StreamError<K::Error>>
    where
        S: Storage + ?Sized,
        K: ContentSink,
    {
        match &self.body {
            Body::Empty => Ok(()),
            Body::File(content) => {
                let (offset, len) = match self.response.range {
                    Some(range) => (range.start, range.len()),
                    None => (0, content.size),
                };
                content.stream(storage, offset, len, self.check, sink)
            }
            Body::StoredZip { entries, layout } => {
                for segment in layout.segments(self.response.range) {
                    match segment {
                        Segment::Bytes(bytes) => sink.send(&bytes).map_err(StreamError::Sink)?,
                        Segment::Data { entry, offset, len } => {
                            let content = entries.get(entry).ok_or_else(layout_mismatch)?;
                            content.stream(storage, offset, len, self.check, sink)?;
                        }
                    }
                }
                Ok(())
            }
            Body::DeflatedZip { entries, layout } => stream_deflated(storage, entries, layout, sink),
        }
    }
}

/// A response too large for the host whose bytes are one object in the bucket: answer `302`
/// to this short-lived presigned URL (the client's `Range`, if any, goes along).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The presigned URL.
    pub location: String,
    /// What the redirect hands out (counted towards the bandwidth quota).
    pub bytes: u64,
}

impl Delivery {
    /// Measures this response against the largest one the host lets out (`cap`, a hosted
    /// target's body cap): `None` to send it as it is; over the cap, a [`Redirect`] to the
    /// bucket when the body is one stored object there, else `413 RESPONSE_TOO_LARGE` naming
    /// the cap and the `Range` requests that fetch it in parts (ranges of a file or of a STORE
    /// archive are served; a deflated archive has none, so that one says to ask for STORE).
    pub fn within_cap<S: Storage + ?Sized>(&self, storage: &S, cap: Option<u64>) -> Result<Option<Redirect>, ApiError> {
        let bytes = self.bytes_to_send();
        let Some(cap) = cap.filter(|cap| bytes > *cap) else { return Ok(None) };
        let header = |name: &str| self.response.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let total = match &self.body {
            Body::File(content) => {
                let redirect = content.object.as_ref().zip(storage.objects()).and_then(|(location, objects)| {
                    objects.presigned_get(
                        location,
                        header("content-type").unwrap_or(FALLBACK_CONTENT_TYPE),
                        header("content-disposition"),
                    )
                });
                if let Some(location) = redirect {
                    return Ok(Some(Redirect { location, bytes }));
                }
                content.size
            }
            Body::StoredZip { layout, .. } => layout.total_len(),
            Body::DeflatedZip { .. } => {
                return Err(ApiError::new(
                    ErrorCode::ResponseTooLarge,
                    format!(
                        "a compressed archive of these files would exceed this host's {cap}-byte response limit, \
                         and a compressed archive cannot be fetched in parts: ask for it uncompressed (STORE), \
                         which serves `Range` requests"
                    ),
                ))
            }
            Body::Empty => 0,
        };
        let second_end = (2 * cap).min(total).saturating_sub(1);
        Err(ApiError::new(
            ErrorCode::ResponseTooLarge,
            format!(
                "this response would carry {bytes} bytes, more than this host's {cap}-byte response limit: fetch the \
                 {total} bytes in parts of at most {cap}, with `Range: bytes=0-{}`, then `Range: bytes={cap}-{second_end}`, \
                 and so on",
                cap - 1
            ),
        ))
    }
}

fn layout_mismatch() -> ContentError {
    ContentError::Archive("the archive layout and the plan disagree".to_string())
}

/// The deflated archive: each entry compressed as its chunks are read; the writer checks each
/// against the size and CRC-32 from prepare (so the chunks are not checked twice).
fn stream_deflated<S, K>(
    storage: &S,
    entries: &[StoredContent],
    layout: &ZipLayout,
    sink: &mut K,
) -> Result<(), StreamError<K::Error>>
where
    S: Storage + ?Sized,
    K: ContentSink,
{
    let mut out = SinkWriter { sink, refused: None };
    let written = write_deflated(storage, entries, layout, &mut out);
    match (written, out.refused) {
        (Ok(()), _) => Ok(()),
        // The encoder only saw an I/O error; the sink's own error says what happened.
        (Err(_), Some(refused)) => Err(StreamError::Sink(refused)),
        (Err(e), None) => Err(StreamError::Content(e)),
    }
}

fn write_deflated<S, W>(storage: &S, entries: &[StoredContent], layout: &ZipLayout, out: W) -> Result<(), ContentError>
where
    S: Storage + ?Sized,
    W: io::Write,
{
    let archive_error = |e: ApiError| ContentError::Archive(e.message);
    let mut archive = DeflateZipWriter::new(out);
    for (index, content) in entries.iter().enumerate() {
        archive.start_entry(layout.entry(index).ok_or_else(layout_mismatch)?).map_err(archive_error)?;
        content
            .for_each_slice(storage, 0, content.size, |slice| archive.write(slice).map_err(StreamError::Sink))
            .map_err(|e| match e {
                StreamError::Content(e) => e,
                StreamError::Sink(e) => archive_error(e),
            })?;
    }
    archive.finish().map(drop).map_err(archive_error)
}

/// `io::Write` over a [`ContentSink`], for encoders built on `std::io`; keeps the sink's typed
/// error, which `io::Error` would flatten.
struct SinkWriter<'k, K: ContentSink> {
    sink: &'k mut K,
    refused: Option<K::Error>,
}

impl<K: ContentSink> io::Write for SinkWriter<'_, K> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.sink.send(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                self.refused = Some(e);
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "the sink refused the bytes"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ByteRange;
    use crate::prepare::{PlanBuilder, PlanLimits};
    use crate::storage::{write_file, MemoryStorage, WriteOptions};

    const NOW: u64 = 1_700_000_000;

    fn p(raw: &str) -> StoragePath {
        StoragePath::parse(raw).unwrap()
    }

    /// 4-byte chunks, so every test crosses chunk boundaries.
    fn put(storage: &MemoryStorage, path: &str, blob: &str, content: &[u8]) -> FileMeta {
        let options = WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() };
        write_file(storage, &p(path), BlobId::new(blob).unwrap(), [content], options, NOW).unwrap()
    }

    fn plan_of(metas: &[&FileMeta]) -> PreparedPlan {
        let mut builder = PlanBuilder::new(PlanLimits::default());
        for meta in metas {
            builder.push(PlanEntry::from_meta(meta)).unwrap();
        }
        builder.finish(&crate::prepare::new_plan_id([7; 16]), "alice", NOW, 60).unwrap()
    }

    /// `d/a.txt` ("first file", blob b1) and `d/b.txt` ("the second one", blob b2), prepared.
    fn two_files() -> (MemoryStorage, PreparedPlan) {
        let storage = MemoryStorage::new();
        let a = put(&storage, "d/a.txt", "b1", b"first file");
        let b = put(&storage, "d/b.txt", "b2", b"the second one");
        let plan = plan_of(&[&a, &b]);
        (storage, plan)
    }

    fn range(header: &str) -> ConditionalHeaders<'_> {
        ConditionalHeaders { range: Some(header), ..ConditionalHeaders::default() }
    }

    fn body<S: Storage>(storage: &S, delivery: &Delivery) -> Result<Vec<u8>, StreamError<Infallible>> {
        let mut out = Vec::new();
        delivery.stream(storage, &mut out).map(|()| out)
    }

    /// A sink that takes `budget` bytes, then refuses like a client that went away.
    struct GoesAway {
        budget: usize,
    }

    impl ContentSink for GoesAway {
        type Error = &'static str;

        fn send(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
            self.budget = self.budget.checked_sub(bytes.len()).ok_or("client went away")?;
            Ok(())
        }
    }

    #[test]
    fn a_file_whole_in_a_range_and_headers_only() {
        let storage = MemoryStorage::new();
        let meta = put(&storage, "f.bin", "b1", b"0123456789");
        let whole = Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap();
        assert_eq!((whole.response.status, whole.bytes_to_send()), (200, 10));
        assert_eq!(body(&storage, &whole).unwrap(), b"0123456789");

        let part = Delivery::file(&meta, range("bytes=3-8"), false).unwrap();
        assert_eq!((part.response.status, part.bytes_to_send()), (206, 6));
        assert_eq!(body(&storage, &part).unwrap(), b"345678");

        let head = Delivery::file(&meta, ConditionalHeaders::default(), true).unwrap();
        assert!(matches!(head.body, Body::Empty), "HEAD sends no body");
        assert_eq!((head.response.status, head.bytes_to_send()), (200, 0));
        assert_eq!(body(&storage, &head).unwrap(), b"");

        let etag = meta.etag();
        let cached = ConditionalHeaders { if_none_match: Some(&etag), ..ConditionalHeaders::default() };
        let not_modified = Delivery::file(&meta, cached, false).unwrap();
        assert_eq!((not_modified.response.status, not_modified.bytes_to_send()), (304, 0));

        assert_eq!(Delivery::file(&meta, range("bytes=10-"), false).unwrap_err().status(), 416);
        let empty = put(&storage, "empty", "b2", b"");
        assert_eq!(
            body(&storage, &Delivery::file(&empty, ConditionalHeaders::default(), false).unwrap()).unwrap(),
            b""
        );
    }

    #[test]
    fn a_corrupt_record_is_refused_before_the_status() {
        let storage = MemoryStorage::new();
        let mut meta = put(&storage, "f.bin", "b1", b"0123456789");
        meta.chunk_size = 0;
        assert_eq!(Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap_err().status(), 500);
    }

    #[test]
    fn broken_content_stops_the_stream_with_a_typed_error() {
        let storage = MemoryStorage::new();
        let meta = put(&storage, "f", "b1", b"0123456789");
        let whole = Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap();

        storage.set("chunk:b1:1", b"xx").unwrap();
        let wrong = body(&storage, &whole).unwrap_err();
        assert_eq!(wrong, StreamError::Content(ContentError::WrongChunkLength { path: p("f"), index: 1 }));

        storage.set("chunk:b1:1", b"4567").unwrap();
        storage.set("chunk:b1:2", b"8X").unwrap();
        // Same lengths, other bytes: only the CRC can tell, and only when reads are verified.
        assert_eq!(body(&storage, &whole).unwrap(), b"012345678X");
        let verified = whole.clone().with_check(ReadCheck::Crc32);
        let mut sent = Vec::new();
        assert_eq!(
            verified.stream(&storage, &mut sent).unwrap_err(),
            StreamError::Content(ContentError::ChecksumMismatch { path: p("f") })
        );
        // The mismatch is found before the last bytes go out, so the client never has them all.
        assert_eq!(sent, b"01234567");
        // A range cannot be checked against the whole file's CRC: it is served as stored.
        let tail = Delivery::file(&meta, range("bytes=8-"), false).unwrap().with_check(ReadCheck::Crc32);
        assert_eq!(body(&storage, &tail).unwrap(), b"8X");

        storage.delete("chunk:b1:0").unwrap();
        assert_eq!(
            body(&storage, &whole).unwrap_err(),
            StreamError::Content(ContentError::MissingChunk { path: p("f"), index: 0 })
        );
    }

    #[test]
    fn a_sink_that_goes_away_is_reported_as_itself() {
        let storage = MemoryStorage::new();
        let meta = put(&storage, "f", "b1", b"0123456789");
        let whole = Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap();
        assert_eq!(whole.stream(&storage, &mut GoesAway { budget: 5 }), Err(StreamError::Sink("client went away")));

        let other = put(&storage, "g", "b2", b"abcdefgh");
        let plan = plan_of(&[&meta, &other]);
        let deflated =
            Delivery::plan(&storage, &plan, ArchiveCompression::Deflate, ConditionalHeaders::default(), false).unwrap();
        assert_eq!(deflated.stream(&storage, &mut GoesAway { budget: 5 }), Err(StreamError::Sink("client went away")));
    }

    #[test]
    fn a_plan_of_one_file_serves_the_file_as_an_attachment() {
        let storage = MemoryStorage::new();
        let meta = put(&storage, "docs/a.txt", "b1", b"hello world");
        let plan = plan_of(&[&meta]);
        let single = Delivery::plan(&storage, &plan, ArchiveCompression::Store, range("bytes=6-"), false).unwrap();
        assert_eq!(single.response.status, 206);
        assert!(single
            .response
            .headers
            .iter()
            .any(|(name, value)| *name == "content-disposition" && value.contains("a.txt")));
        assert_eq!(body(&storage, &single).unwrap(), b"world");
    }

    #[test]
    fn archives_stream_whole_in_ranges_and_deflated() {
        let (storage, plan) = two_files();
        let stored =
            Delivery::plan(&storage, &plan, ArchiveCompression::Store, ConditionalHeaders::default(), false).unwrap();
        let archive = body(&storage, &stored).unwrap();
        assert_eq!(archive.len() as u64, stored.bytes_to_send());
        let mut zip = ::zip::ZipArchive::new(io::Cursor::new(archive.clone())).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut zip.by_name("b.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "the second one");

        let part = Delivery::plan(&storage, &plan, ArchiveCompression::Store, range("bytes=20-99"), false).unwrap();
        assert_eq!(part.response.range, Some(ByteRange { start: 20, end: 99 }));
        assert_eq!(body(&storage, &part).unwrap(), archive[20..100]);

        let deflated =
            Delivery::plan(&storage, &plan, ArchiveCompression::Deflate, ConditionalHeaders::default(), false).unwrap();
        assert_eq!(deflated.bytes_to_send(), stored.bytes_to_send(), "the quota sees the STORE size");
        let mut zip = ::zip::ZipArchive::new(io::Cursor::new(body(&storage, &deflated).unwrap())).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut zip.by_name("a.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "first file");
    }

    #[test]
    fn a_file_changed_since_prepare_is_a_conflict_before_any_byte() {
        let (storage, plan) = two_files();
        put(&storage, "d/b.txt", "b3", b"replaced");
        for compression in [ArchiveCompression::Store, ArchiveCompression::Deflate] {
            let refused = Delivery::plan(&storage, &plan, compression, ConditionalHeaders::default(), false);
            assert_eq!(refused.unwrap_err().status(), 409);
        }
    }

    #[test]
    fn verified_reads_check_each_whole_archive_entry() {
        let (storage, plan) = two_files();
        let stored =
            Delivery::plan(&storage, &plan, ArchiveCompression::Store, ConditionalHeaders::default(), false).unwrap();
        storage.set("chunk:b2:0", b"THE ").unwrap();
        assert!(body(&storage, &stored).is_ok(), "by default the recorded CRC is trusted");
        assert_eq!(
            body(&storage, &stored.with_check(ReadCheck::Crc32)).unwrap_err(),
            StreamError::Content(ContentError::ChecksumMismatch { path: p("d/b.txt") })
        );
        assert_eq!(ReadCheck::from_setting(true), ReadCheck::Crc32);
        assert_eq!(ReadCheck::from_setting(false), ReadCheck::ChunkLengths);
    }

    #[test]
    fn a_deflated_entry_that_no_longer_matches_stops_the_archive() {
        let (storage, plan) = two_files();
        let deflated =
            Delivery::plan(&storage, &plan, ArchiveCompression::Deflate, ConditionalHeaders::default(), false).unwrap();
        // Same length, other bytes: only the CRC can tell.
        storage.set("chunk:b2:0", b"THE ").unwrap();
        assert!(matches!(body(&storage, &deflated), Err(StreamError::Content(ContentError::Archive(_)))));
    }

    #[test]
    fn a_response_over_the_cap_is_redirected_to_its_object_or_refused_with_the_ranges_to_ask() {
        use crate::storage::objects::MemoryObjects;
        use crate::storage::WithObjects;
        // Chunks in the store: no redirect possible, so 413 with the ranges to ask for.
        let (storage, plan) = two_files();
        let meta = read_meta(&storage, &p("d/b.txt")).unwrap().unwrap();
        let whole = Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap();
        assert_eq!(whole.within_cap(&storage, None).unwrap(), None, "no cap");
        assert_eq!(whole.within_cap(&storage, Some(14)).unwrap(), None, "exactly the cap");
        let err = whole.within_cap(&storage, Some(10)).unwrap_err();
        assert_eq!((err.status(), err.code), (413, ErrorCode::ResponseTooLarge));
        assert!(err.message.contains("`Range: bytes=0-9`, then `Range: bytes=10-13`"), "{}", err.message);
        let ranged = Delivery::file(&meta, range("bytes=0-9"), false).unwrap();
        assert_eq!(ranged.within_cap(&storage, Some(10)).unwrap(), None, "a range within the cap is served");
        let archive =
            Delivery::plan(&storage, &plan, ArchiveCompression::Store, ConditionalHeaders::default(), false).unwrap();
        let err = archive.within_cap(&storage, Some(100)).unwrap_err();
        assert!(err.message.contains("bytes=0-99"), "a STORE archive is fetched in ranges: {}", err.message);
        let deflated =
            Delivery::plan(&storage, &plan, ArchiveCompression::Deflate, ConditionalHeaders::default(), false).unwrap();
        let err = deflated.within_cap(&storage, Some(100)).unwrap_err();
        assert!(err.message.contains("uncompressed"), "{}", err.message);

        // Bytes in the bucket: a redirect, carrying what the response would have.
        let bucket = WithObjects {
            records: MemoryStorage::new(),
            objects: Some(MemoryObjects::new("f/", crate::blob::MIN_PART_BYTES as u32)),
        };
        let options = WriteOptions::default();
        let meta =
            write_file(&bucket, &p("big.bin"), BlobId::new("b9").unwrap(), [&[7u8; 64][..]], options, NOW).unwrap();
        let whole = Delivery::file(&meta, ConditionalHeaders::default(), false).unwrap();
        let redirect = whole.within_cap(&bucket, Some(10)).unwrap().expect("a redirect");
        assert!(redirect.location.starts_with("memory://bucket/f/big.bin"), "{}", redirect.location);
        assert_eq!(redirect.bytes, 64);
        let head = Delivery::file(&meta, ConditionalHeaders::default(), true).unwrap();
        assert_eq!(head.within_cap(&bucket, Some(10)).unwrap(), None, "HEAD carries no body");
    }
}

//! The bytes side of the storage boundary, when file bytes live in an object store.
//!
//! A file's *record* ([`FileMeta`](crate::meta::FileMeta), directory indexes, markers) is always
//! in the key-value [`Storage`](super::Storage); its *bytes* are either chunks in that same store
//! (the zero-config default) or one plain object per file in a bucket, at `<prefix><path>`, so
//! the files stay reachable with ordinary S3 tools. The record says which
//! ([`FileMeta::object`](crate::meta::FileMeta::object)); [`Storage::objects`](super::Storage::objects)
//! is the bucket a component was configured with. Endpoints never look at either: the write
//! protocol ([`FileWriter`](super::FileWriter)) and the read path
//! ([`delivery`](crate::delivery)) do.
//!
//! [`ObjectStore`] is what a bucket backend implements (S3 over outbound HTTP in
//! `downlink-spin`, [`MemoryObjects`] in tests). It is object-safe, synchronous and narrow:
//! multipart uploads, one-shot puts, ranged reads, deletes.

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::path::StoragePath;

/// Where one file's bytes are in the bucket, as its record remembers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLocation {
    /// The object key (`<prefix><path>` when it was written).
    pub key: String,
    /// The object's ETag as the server reported it when the write completed; reads require
    /// it (`If-Match`), so bytes replaced behind the record's back are never served as its.
    pub etag: String,
}

/// The object key of `path` under `prefix` (`prefix` is used as given: `files/` gives
/// `files/a/b.txt`, `files` gives `filesa/b.txt`, as S3 tools treat prefixes).
pub fn object_key(prefix: &str, path: &StoragePath) -> String {
    format!("{prefix}{}", path.as_str())
}

/// What must hold for a write to replace the object at its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// Nothing: the write replaces whatever is there.
    None,
    /// No object may exist at the key (`If-None-Match: *`).
    Absent,
    /// The object at the key must have this ETag (`If-Match`).
    Matches(String),
}

/// How a conditional write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object is written; its ETag.
    Written {
        /// The ETag the server gave the new object.
        etag: String,
    },
    /// The [`PutCondition`] did not hold; nothing changed.
    PreconditionFailed,
}

/// A multipart upload that has been created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The object key it will complete at.
    pub key: String,
    /// The server's upload id.
    pub upload_id: String,
}

/// One stored part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPart {
    /// Part number, from 1.
    pub number: u16,
    /// The part's ETag, needed to complete the upload.
    pub etag: String,
}

/// Why a ranged read produced no (more) bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectReadError {
    /// No object at the key.
    #[error("the object is missing")]
    Missing,
    /// The object at the key is not the one the record names (its ETag differs).
    #[error("the object was replaced")]
    Changed,
    /// The server or the connection failed.
    #[error(transparent)]
    Failed(#[from] StorageError),
}

/// The body of a ranged read, pulled a piece at a time.
pub trait ObjectBody {
    /// The next bytes, `None` at the end. Ends early (an error) if the body is shorter than asked.
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, ObjectReadError>;
}

/// A bucket holding file bytes. See the module docs.
pub trait ObjectStore {
    /// The key of `path`'s object.
    fn key_for(&self, path: &StoragePath) -> String;

    /// Bytes per part of a multipart upload; a file no larger is written with one put.
    fn part_size(&self) -> u32;

    /// Writes a whole (small) object in one request, if `condition` holds.
    fn put(
        &self,
        key: &str,
        content_type: &str,
        bytes: &[u8],
        condition: &PutCondition,
    ) -> Result<PutOutcome, StorageError>;

    /// Starts a multipart upload at `key`; nothing is visible until it completes.
    fn create_upload(&self, key: &str, content_type: &str) -> Result<PendingUpload, StorageError>;

    /// Stores part `number` (from 1) of `upload`.
    fn upload_part(&self, upload: &PendingUpload, number: u16, bytes: &[u8]) -> Result<UploadedPart, StorageError>;

    /// Makes the upload the object at its key, if `condition` holds (else the upload stays
    /// pending: abort it).
    fn complete_upload(
        &self,
        upload: &PendingUpload,
        parts: &[UploadedPart],
        condition: &PutCondition,
    ) -> Result<PutOutcome, StorageError>;

    /// Discards an upload and its parts; an unknown (already gone) upload succeeds.
    fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StorageError>;

    /// Reads `len` bytes from `offset` of the object at `location`, which must still have
    /// `location.etag`.
    fn read_range(
        &self,
        location: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn ObjectBody + '_>, ObjectReadError>;

    /// Blocks this request for `duration` (between attempts to take a path's publication
    /// lock; the core has no clock of its own).
    fn pause(&self, duration: std::time::Duration);

    /// Deletes the object at `key`; deleting an absent object succeeds. Unconditional: not every
    /// S3-compatible server supports conditional deletes.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// A short-lived URL a client can fetch the object at `location` from directly (with
    /// `content_type` and `disposition` as the response's headers), for responses too large
    /// for the host; `None` when the store has no such URLs.
    fn presigned_get(&self, location: &ObjectLocation, content_type: &str, disposition: Option<&str>)
        -> Option<String>;
}

#[cfg(any(test, feature = "memory-storage"))]
pub use memory::MemoryObjects;

#[cfg(any(test, feature = "memory-storage"))]
mod memory {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// An in-memory bucket with S3's visibility rules (uploads invisible until completed), for
    /// tests; ETags are a counter.
    #[derive(Debug)]
    pub struct MemoryObjects {
        prefix: String,
        part_size: u32,
        state: RefCell<State>,
    }

    #[derive(Debug, Default)]
    struct State {
        objects: BTreeMap<String, (String, Vec<u8>)>,
        uploads: BTreeMap<String, (String, BTreeMap<u16, Vec<u8>>)>,
        next: u64,
        /// Every call fails, as when the server cannot be reached.
        offline: bool,
    }

    impl State {
        fn fresh(&mut self, what: &str) -> String {
            self.next += 1;
            format!("{what}-{}", self.next)
        }

        fn allows(&self, key: &str, condition: &PutCondition) -> bool {
            match condition {
                PutCondition::None => true,
                PutCondition::Absent => !self.objects.contains_key(key),
                PutCondition::Matches(etag) => self.objects.get(key).is_some_and(|(e, _)| e == etag),
            }
        }
    }

    impl MemoryObjects {
        /// A bucket using `prefix` and parts of `part_size` bytes.
        pub fn new(prefix: &str, part_size: u32) -> Self {
            MemoryObjects { prefix: prefix.to_owned(), part_size, state: RefCell::default() }
        }

        /// The bytes of the object at `key`.
        pub fn object(&self, key: &str) -> Option<Vec<u8>> {
            self.state.borrow().objects.get(key).map(|(_, bytes)| bytes.clone())
        }

        /// Keys of every object.
        pub fn keys(&self) -> Vec<String> {
            self.state.borrow().objects.keys().cloned().collect()
        }

        /// How many uploads are neither completed nor aborted.
        pub fn pending_uploads(&self) -> usize {
            self.state.borrow().uploads.len()
        }

        /// Makes every call fail (`true`), as a stopped server would, or work again.
        pub fn set_offline(&self, offline: bool) {
            self.state.borrow_mut().offline = offline;
        }

        fn reachable(&self) -> Result<(), StorageError> {
            match self.state.borrow().offline {
                true => Err(StorageError::new("object store: connection refused")),
                false => Ok(()),
            }
        }

        /// Replaces the object at `key` as another tool would (new ETag).
        pub fn overwrite(&self, key: &str, bytes: &[u8]) {
            let mut state = self.state.borrow_mut();
            let etag = state.fresh("etag");
            state.objects.insert(key.to_owned(), (etag, bytes.to_vec()));
        }
    }

    struct Pieces(std::vec::IntoIter<Vec<u8>>);

    impl ObjectBody for Pieces {
        fn next_piece(&mut self) -> Result<Option<Vec<u8>>, ObjectReadError> {
            Ok(self.0.next())
        }
    }

    impl ObjectStore for MemoryObjects {
        fn key_for(&self, path: &StoragePath) -> String {
            object_key(&self.prefix, path)
        }

        fn part_size(&self) -> u32 {
            self.part_size
        }

        fn put(&self, key: &str, _: &str, bytes: &[u8], condition: &PutCondition) -> Result<PutOutcome, StorageError> {
            self.reachable()?;
            let mut state = self.state.borrow_mut();
            if !state.allows(key, condition) {
                return Ok(PutOutcome::PreconditionFailed);
            }
            let etag = state.fresh("etag");
            state.objects.insert(key.to_owned(), (etag.clone(), bytes.to_vec()));
            Ok(PutOutcome::Written { etag })
        }

        fn create_upload(&self, key: &str, _: &str) -> Result<PendingUpload, StorageError> {
            self.reachable()?;
            let mut state = self.state.borrow_mut();
            let upload_id = state.fresh("upload");
            state.uploads.insert(upload_id.clone(), (key.to_owned(), BTreeMap::new()));
            Ok(PendingUpload { key: key.to_owned(), upload_id })
        }

        fn upload_part(&self, upload: &PendingUpload, number: u16, bytes: &[u8]) -> Result<UploadedPart, StorageError> {
            self.reachable()?;
            let mut state = self.state.borrow_mut();
            let etag = state.fresh("part");
            let (_, parts) = state
                .uploads
                .get_mut(&upload.upload_id)
                .ok_or_else(|| StorageError::new("object store: no such upload"))?;
            parts.insert(number, bytes.to_vec());
            Ok(UploadedPart { number, etag })
        }

        fn complete_upload(
            &self,
            upload: &PendingUpload,
            parts: &[UploadedPart],
            condition: &PutCondition,
        ) -> Result<PutOutcome, StorageError> {
            self.reachable()?;
            let mut state = self.state.borrow_mut();
            if !state.allows(&upload.key, condition) {
                return Ok(PutOutcome::PreconditionFailed);
            }
            let (key, stored) = state
                .uploads
                .remove(&upload.upload_id)
                .ok_or_else(|| StorageError::new("object store: no such upload"))?;
            let mut bytes = Vec::new();
            for part in parts {
                let piece = stored.get(&part.number).ok_or_else(|| StorageError::new("object store: missing part"))?;
                bytes.extend_from_slice(piece);
            }
            let etag = state.fresh("etag");
            state.objects.insert(key, (etag.clone(), bytes));
            Ok(PutOutcome::Written { etag })
        }

        fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StorageError> {
            self.reachable()?;
            self.state.borrow_mut().uploads.remove(&upload.upload_id);
            Ok(())
        }

        fn read_range(
            &self,
            location: &ObjectLocation,
            offset: u64,
            len: u64,
        ) -> Result<Box<dyn ObjectBody + '_>, ObjectReadError> {
            self.reachable().map_err(ObjectReadError::Failed)?;
            let state = self.state.borrow();
            let (etag, bytes) = state.objects.get(&location.key).ok_or(ObjectReadError::Missing)?;
            if *etag != location.etag {
                return Err(ObjectReadError::Changed);
            }
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
            let end = usize::try_from(offset.saturating_add(len)).unwrap_or(usize::MAX).min(bytes.len());
            // Small pieces, so readers are tested against bodies that arrive in parts.
            let pieces: Vec<Vec<u8>> = bytes[start..end].chunks(7).map(<[u8]>::to_vec).collect();
            Ok(Box::new(Pieces(pieces.into_iter())))
        }

        fn pause(&self, _: std::time::Duration) {}

        fn presigned_get(&self, location: &ObjectLocation, _: &str, _: Option<&str>) -> Option<String> {
            Some(format!("memory://bucket/{}?etag={}", location.key, location.etag))
        }

        fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.reachable()?;
            self.state.borrow_mut().objects.remove(key);
            Ok(())
        }
    }
}

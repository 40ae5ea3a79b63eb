//! Garbage collection: unreferenced chunks, stale markers, files missing from their directory.

use std::collections::{BTreeMap, BTreeSet};

use super::{CasOutcome, Storage};
use crate::blob::{classify_key, pending_key, plan_garbage_collection, BlobId, KeyKind, PendingMarker};
use crate::error::ApiError;
use crate::meta::{EntryKind, FileMeta};
use crate::path::StoragePath;

use super::*;

/// What a garbage collection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced chunks deleted.
    pub orphan_chunks_deleted: u64,
    /// Pending markers deleted (committed, abandoned or reaped writes).
    pub markers_deleted: u64,
    /// Multipart uploads of abandoned writes aborted.
    pub uploads_aborted: u64,
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
            Ok(CasOutcome::Swapped) => {
                // Claimed: the writer can no longer complete its upload, so abort it.
                if let Some(upload) = &reaped.upload {
                    match bucket(storage).and_then(|objects| objects.abort_upload(upload).map_err(Into::into)) {
                        Ok(()) => report.uploads_aborted += 1,
                        Err(_) => {
                            report.failures += 1;
                            continue;
                        }
                    }
                }
                plan.finished_markers.push(key)
            }
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

//! Carrying a transfer across worker invocations.
//!
//! A worker invocation transfers one *slice*: until the slice budget (setting
//! `download_slice_secs`), the transfer's end, or its death. Meanwhile it keeps a
//! [`TransferCheckpoint`] under `dl:ckpt:<id>` (a plain set: only the slice's owner writes
//! it) — at the start, every [`CHECKPOINT_EVERY_MS`] at a chunk boundary, and at the budget
//! with the bytes after the boundary too. The record's `slice` says which invocation owns the
//! transfer:
//!
//! 1. At its budget, the worker stores its checkpoint and [`hand_off`]s: the record is marked
//!    `awaiting_worker`. It then asks the app for the next slice (a request to the download
//!    component itself).
//! 2. A worker that died leaves a stale heartbeat; a sweep (any listing or status read) that
//!    finds it calls [`offer_recovery`], which marks it `awaiting_worker` too (at most
//!    [`MAX_RECOVERIES`] times without progress in between) and asks for the next slice.
//! 3. The next invocation [`claim_slice`]s: a compare-and-swap from the checkpoint's slice
//!    `n` to `n + 1` that only an awaiting record allows, so one invocation wins and a worker
//!    still running slice `n` stops at its next look at the record. It resumes the write from
//!    the checkpoint and asks the origin for the rest (`Range`/`If-Range`, see
//!    [`retry`](super::retry)).

use serde::{Deserialize, Serialize};

use crate::download::params::{Sha256Digest, StartRequest};
use crate::download::record::DownloadRecord;
use crate::download::registry::{finish, update_record, RecordUpdate};
use crate::download::retry::Validator;
use crate::download::url_policy::{check_url, DownloadPolicy};
use crate::error::ApiError;
use crate::path::StoragePath;
use crate::storage::Storage;
use crate::storage::WriteCheckpoint;

/// Prefix of the keys of transfer checkpoints.
pub const CHECKPOINT_PREFIX: &str = "dl:ckpt:";
/// How often a running slice stores a checkpoint (at the next chunk boundary after it is due).
pub const CHECKPOINT_EVERY_MS: u64 = 2_000;
/// Most times sweeps recover a download whose worker died without progress in between; then
/// it fails as interrupted.
pub const MAX_RECOVERIES: u32 = 3;

/// Key of a download's checkpoint (`id` must be valid).
pub fn checkpoint_key(id: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{id}")
}

/// Where a transfer stands, for the next slice to go on from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCheckpoint {
    /// The slice that wrote it.
    pub slice: u32,
    /// The version of the remote file stored so far.
    pub validator: Validator,
    /// The whole file's size, when announced.
    pub expected_size: Option<u64>,
    /// The pending write.
    pub write: WriteCheckpoint,
}

impl TransferCheckpoint {
    /// Bytes of the file stored: the next slice asks for the rest from here.
    pub fn stored_bytes(&self) -> u64 {
        self.write.stored_bytes()
    }
}

/// Stores `checkpoint` for `id` (a plain set by the slice's owner).
pub fn save_checkpoint<S: Storage + ?Sized>(
    storage: &S,
    id: &str,
    checkpoint: &TransferCheckpoint,
) -> Result<(), ApiError> {
    storage.set(&checkpoint_key(id), &crate::json::to_bytes(checkpoint))?;
    Ok(())
}

/// The checkpoint of `id`; an unreadable one counts as none (the transfer starts over).
pub fn load_checkpoint<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<Option<TransferCheckpoint>, ApiError> {
    Ok(storage.get(&checkpoint_key(id))?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Slice `slice`'s worker stops at its budget, its checkpoint stored: the next invocation may
/// take over. `false` if the record moved on (ended, or another slice owns it).
pub fn hand_off<S: Storage + ?Sized>(storage: &S, id: &str, slice: u32) -> Result<bool, ApiError> {
    let update = update_record(storage, id, |record| {
        record.ensure_slice(slice)?;
        record.awaiting_worker = true;
        Ok(())
    })?;
    Ok(matches!(update, RecordUpdate::Applied(record) if record.slice == slice && record.awaiting_worker))
}

/// Takes over the transfer from slice `slice` (its checkpoint's), if the record awaits a
/// worker for exactly that slice: the record now names slice `slice + 1`, with a fresh
/// heartbeat. `None`: someone else took it, or it ended.
pub fn claim_slice<S: Storage + ?Sized>(
    storage: &S,
    id: &str,
    slice: u32,
    now: u64,
) -> Result<Option<DownloadRecord>, ApiError> {
    let update = update_record(storage, id, |record| {
        record.ensure_slice(slice)?;
        if !record.awaiting_worker {
            return Err(record.not_awaiting());
        }
        record.slice = slice + 1;
        record.awaiting_worker = false;
        record.heartbeat = record.heartbeat.max(now);
        Ok(())
    })?;
    Ok(match update {
        RecordUpdate::Applied(record) if record.slice == slice + 1 => Some(record),
        _ => None,
    })
}

/// For a sweep that found `record` stale: if a checkpoint lets it go on and it has not been
/// recovered [`MAX_RECOVERIES`] times without progress, marks it awaiting a worker (with a
/// fresh heartbeat, so other sweeps leave it alone meanwhile) and returns the slice to ask
/// the app to continue from. `None`: end it as interrupted.
pub fn offer_recovery<S: Storage + ?Sized>(
    storage: &S,
    record: &DownloadRecord,
    now: u64,
) -> Result<Option<u32>, ApiError> {
    let Some(checkpoint) = load_checkpoint(storage, &record.id)? else { return Ok(None) };
    let slice = checkpoint.slice;
    let update = update_record(storage, &record.id, |current| {
        current.ensure_slice(slice)?;
        if current.current_size > current.recovered_at_size {
            current.recoveries = 0;
        }
        if current.recoveries >= MAX_RECOVERIES {
            return Err(current.not_awaiting());
        }
        current.recoveries += 1;
        current.recovered_at_size = current.current_size;
        current.awaiting_worker = true;
        current.heartbeat = current.heartbeat.max(now);
        Ok(())
    })?;
    Ok(match update {
        RecordUpdate::Applied(current) if current.slice == slice && current.awaiting_worker => Some(slice),
        _ => None,
    })
}

/// A download taken over by a new slice ([`take_over`]).
#[derive(Debug)]
pub struct TakenOver {
    /// The record, now naming the new slice.
    pub record: DownloadRecord,
    /// The request, rebuilt from the record and checked against today's URL policy.
    pub request: StartRequest,
    /// The file being written.
    pub target: StoragePath,
    /// Where the last slice stood; `None` (nothing usable stored): start over.
    pub checkpoint: Option<TransferCheckpoint>,
}

/// Claims the slice after `slice` of download `id` ([`claim_slice`]) and gathers what the new
/// worker needs. `None`: nothing to take over (another invocation has it, or it ended). A
/// download whose URL today's policy refuses is failed with that error.
pub fn take_over<S: Storage + ?Sized>(
    storage: &S,
    id: &str,
    slice: u32,
    policy: &DownloadPolicy,
    now: u64,
) -> Result<Option<TakenOver>, ApiError> {
    let Some(record) = claim_slice(storage, id, slice, now)? else { return Ok(None) };
    let checkpoint = load_checkpoint(storage, id)?.filter(|checkpoint| checkpoint.slice == slice);
    match resumed_request(&record, policy) {
        Ok((request, target)) => Ok(Some(TakenOver { record, request, target, checkpoint })),
        Err(error) => {
            if let Some(checkpoint) = checkpoint {
                let _ = checkpoint.write.discard(storage);
            }
            finish(storage, id, |record| record.fail_with(now, &error))?;
            Ok(None)
        }
    }
}

/// The start request a record was made from, its URL checked again.
fn resumed_request(record: &DownloadRecord, policy: &DownloadPolicy) -> Result<(StartRequest, StoragePath), ApiError> {
    let target = StoragePath::parse_file(&record.file_path)?;
    let request = StartRequest {
        url: check_url(&record.url, policy)?,
        directory: record.directory.clone(),
        filename: record.filename.clone(),
        filename_explicit: true,
        timeout_secs: record.timeout_secs,
        sha256: record.sha256.as_deref().map(Sha256Digest::from_hex).transpose()?,
    };
    Ok((request, target))
}

/// Deletes the checkpoint key of an ended download (its write is committed or discarded).
pub(crate) fn forget_checkpoint<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<(), ApiError> {
    storage.delete(&checkpoint_key(id))?;
    Ok(())
}

//! Download records and their indexes in the key-value store.
//!
//! # Key layout
//!
//! All keys start with `dl:`, which no file-storage prefix (`file:`, `file#`, `dir:`, `dir#`,
//! `chunk:`, `pending:`) overlaps, so file garbage collection never touches them. The longest
//! is 74 bytes (ids are capped at [`MAX_DOWNLOAD_ID_BYTES`]).
//!
//! | key | value |
//! |---|---|
//! | `dl:rec:<id>` | the [`DownloadRecord`] as JSON, updated by compare-and-swap at state changes |
//! | `dl:prog:<id>` | the worker's latest [`ProgressReport`] as JSON (plain `set`, only the worker writes it) |
//! | `dl:ckpt:<id>` | the running slice's [`TransferCheckpoint`](crate::download::slices::TransferCheckpoint) as JSON (plain `set` by the slice's worker) |
//! | `dl:active` | JSON list of the ids holding a concurrency slot, updated by compare-and-swap |
//! | `dl:target:<sha256(file path) hex>` | `{"id":…,"since":…}` of the download writing that path; empty when free |
//! | `dl:hist:seq` | counter (atomic increment): the last history sequence number handed out |
//! | `dl:hist:<seq, 20 digits>` | the id of the download that ended `seq`-th |
//! | `dl:hist:floor` | JSON number: the lowest sequence number not yet trimmed |
//!
//! # Life of a download
//!
//! Steps 1–4 are one call, [`start`]:
//! 1. Validate ([`parse_start_request`](super::params::parse_start_request)). If refused:
//!    [`store_rejected`] a [`DownloadRecord::rejected`] (it lands in history) and answer the
//!    failure body.
//! 2. [`choose_target`]: a free name in the directory, reserved for this id.
//! 3. [`create_record`] with [`DownloadRecord::starting`].
//! 4. [`try_reserve_slot`]; if refused, [`finish`] the record as failed with that error.
//!
//! Then the worker (inputs: [`report_progress`], [`load_record`]; the end: [`finish`]):
//! 5. Answer 202, then transfer, writing progress and heartbeats with [`report_progress`]
//!    (throttled) and reading the record now and then: once it has ended, someone cancelled it
//!    (or declared it interrupted): stop and discard the blob. Readers see the report applied
//!    to the record ([`load_record`]).
//! 6. End with [`finish`] (complete, fail); cancel does the same from the other side.
//!
//! [`finish`] claims the end's bookkeeping with a compare-and-swap on the record's `settled`
//! flag, so exactly one party (worker, canceller, or a sweeper that finds a dead worker)
//! releases the slot and target and appends the history entry. A crash between the claim and
//! the append loses that one history entry (never duplicates it). A crash between a record's
//! end and the claim is repaired by the next [`sweep_stale`], which settles ended records
//! still holding a slot.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::{BlobId, DEFAULT_CHUNK_SIZE};
use crate::download::params::{next_free_name, parse_start_request, StartRequest};
use crate::download::record::{failure_response, DownloadRecord, ProgressReport, StartResponse, TransitionError};
use crate::download::settings::DownloadSettings;
use crate::download::slices::{forget_checkpoint, load_checkpoint, offer_recovery};
use crate::error::{ApiError, ErrorCode};
use crate::path::StoragePath;
use crate::query::Query;
use crate::storage::{cas_update, reclaim_abandoned_write, stat, CasStep, Storage};

/// Prefix of download record keys.
pub const RECORD_PREFIX: &str = "dl:rec:";
/// Prefix of the keys of workers' progress reports.
pub const PROGRESS_PREFIX: &str = "dl:prog:";
/// Key of the active set.
pub const ACTIVE_KEY: &str = "dl:active";
/// Prefix of target-reservation keys.
pub const TARGET_PREFIX: &str = "dl:target:";
/// Counter of history sequence numbers.
pub const HISTORY_SEQ_KEY: &str = "dl:hist:seq";
/// Lowest history sequence number still kept.
pub const HISTORY_FLOOR_KEY: &str = "dl:hist:floor";
/// Prefix of history entry keys.
pub const HISTORY_ENTRY_PREFIX: &str = "dl:hist:";
/// Longest download id.
pub const MAX_DOWNLOAD_ID_BYTES: usize = 64;
/// History page size when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Largest history page; larger `limit`s are capped to it.
pub const MAX_HISTORY_LIMIT: usize = 500;
/// Most history entries one page request examines (with a filter, most may not match); the
/// page then ends early with a cursor to continue from.
pub const MAX_HISTORY_SCAN: u64 = 5_000;
/// Most history entries one [`trim_history`] call deletes, bounding one request's work.
pub const MAX_TRIM_PER_CALL: u64 = 1_000;
/// Names tried by [`choose_target`] (`name`, `name (1)`, … `name (999)`).
pub const MAX_NAME_ATTEMPTS: u32 = 1_000;
/// How long a target reservation whose download has no record yet is respected: the start
/// writes the record right after reserving, so an older one belongs to a start that died.
pub const TARGET_CLAIM_GRACE_SECS: u64 = 60;

/// Whether `id` can be a download id: 1–64 ASCII letters, digits, `-` or `_` (UUIDs fit).
pub fn is_valid_download_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DOWNLOAD_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn require_valid_id(id: &str) -> Result<(), ApiError> {
    if is_valid_download_id(id) {
        Ok(())
    } else {
        Err(ApiError::internal("download ids must be 1-64 ASCII letters, digits, `-` or `_`"))
    }
}

/// Key of a download's record (`id` must be valid).
pub fn record_key(id: &str) -> String {
    format!("{RECORD_PREFIX}{id}")
}

/// Key of a download's latest progress report (`id` must be valid).
pub fn progress_key(id: &str) -> String {
    format!("{PROGRESS_PREFIX}{id}")
}

/// Key of the reservation of a target path.
pub fn target_key(path: &StoragePath) -> String {
    format!("{TARGET_PREFIX}{}", hex::encode(Sha256::digest(path.as_str().as_bytes())))
}

/// Key of history entry `seq`; zero-padded so keys sort like their numbers.
pub fn history_entry_key(seq: u64) -> String {
    format!("{HISTORY_ENTRY_PREFIX}{seq:020}")
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> ApiError {
    ApiError::storage(format!("stored {what} is corrupt: {err}"))
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// Stores a new record. A plain set: ids are fresh random ids, so nobody else writes this key
/// before the record exists (and a create-if-absent would cost a claim key per download).
pub fn create_record<S: Storage + ?Sized>(storage: &S, record: &DownloadRecord) -> Result<(), ApiError> {
    require_valid_id(&record.id)?;
    storage.set(&record_key(&record.id), &record.to_json_bytes())?;
    Ok(())
}

/// What [`start`] decided.
#[derive(Debug)]
pub enum Start {
    /// Validated, target reserved, record stored, slot taken: answer `202`, then transfer.
    Accepted(Box<Started>),
    /// Refused after validation began; already recorded in history. Answer with this body.
    Refused(StartResponse),
}

/// A download [`start`] accepted.
#[derive(Debug)]
pub struct Started {
    /// The stored record (`starting`).
    pub record: DownloadRecord,
    /// The validated request.
    pub request: StartRequest,
    /// The reserved target file.
    pub target: StoragePath,
}

/// The fresh ids a start uses (the caller draws them from the host's randomness).
#[derive(Clone, Debug)]
pub struct StartIds {
    /// The download id.
    pub download: String,
    /// The blob the transfer writes into.
    pub blob: BlobId,
}

/// Steps 1–4 of the life of a download (module docs) as one call: validate the query, choose
/// and reserve a target, store the `starting` record, take a concurrency slot. A refusal from
/// validation or from the slot limit is recorded in history (trimmed to `settings`' limit)
/// and returned as the reference's failure body; other errors (storage, a name conflict) are
/// plain errors.
pub fn start<S: Storage + ?Sized>(
    storage: &S,
    query: &Query,
    directory: &StoragePath,
    owner: &str,
    settings: &DownloadSettings,
    ids: StartIds,
    now: u64,
) -> Result<Start, ApiError> {
    let refused = |filename: &str, file_path: &str, error: &ApiError| {
        let _ = trim_history(storage, settings.history_limit);
        Ok(Start::Refused(failure_response(&ids.download, filename, file_path, error.code).with_detail(&error.message)))
    };
    let request = match parse_start_request(query, directory, &settings.policy) {
        Ok(request) => request,
        Err(rejected) => {
            store_rejected(storage, &DownloadRecord::rejected(&ids.download, owner, directory, &rejected, now))?;
            return refused(&rejected.filename, &rejected.file_path, &rejected.error);
        }
    };
    let target = choose_target(storage, &request.directory, &request.filename, &ids.download, now)?;
    let mut record = DownloadRecord::starting(&ids.download, owner, &request, &target, now);
    record.blob_id = Some(ids.blob.clone());
    create_record(storage, &record)?;
    if let Err(error) = try_reserve_slot(storage, &ids.download, settings.max_concurrent) {
        finish(storage, &ids.download, |r| r.fail_with(now, &error))?;
        return refused(&record.filename, &record.file_path, &error);
    }
    Ok(Start::Accepted(Box::new(Started { record, request, target })))
}

/// The record of `id`, if any; an id that cannot exist is simply not found.
pub fn load_record<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<Option<DownloadRecord>, ApiError> {
    if !is_valid_download_id(id) {
        return Ok(None);
    }
    let Some(bytes) = storage.get(&record_key(id))? else { return Ok(None) };
    let mut record = parse_record(&bytes)?;
    if !record.is_terminal() {
        if let Some(report) = load_report(storage, id)? {
            record.apply_report(&report);
        }
    }
    Ok(Some(record))
}

fn parse_record(bytes: &[u8]) -> Result<DownloadRecord, ApiError> {
    DownloadRecord::from_json_bytes(bytes).map_err(|e| corrupt("download record", e))
}

/// The worker's latest report; an unreadable one is ignored (the next report replaces it).
fn load_report<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<Option<ProgressReport>, ApiError> {
    Ok(storage.get(&progress_key(id))?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Stores the worker's progress and heartbeat for `id` (only the worker calls this, so a
/// plain set is enough; see [`ProgressReport`]).
pub fn report_progress<S: Storage + ?Sized>(storage: &S, id: &str, report: &ProgressReport) -> Result<(), ApiError> {
    require_valid_id(id)?;
    storage.set(&progress_key(id), &report.to_json_bytes())?;
    Ok(())
}

/// The outcome of [`update_record`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordUpdate {
    /// The change was stored; here is the record as stored.
    Applied(DownloadRecord),
    /// The download had already ended (e.g. a user cancelled it); nothing was written.
    AlreadyEnded(DownloadRecord),
}

impl RecordUpdate {
    /// The record, either way.
    pub fn record(&self) -> &DownloadRecord {
        match self {
            RecordUpdate::Applied(record) | RecordUpdate::AlreadyEnded(record) => record,
        }
    }
}

/// Applies `change` (a [`DownloadRecord`] transition) to the stored record with
/// compare-and-swap, retried on conflict, so concurrent writers (worker progress, a cancel)
/// never lose each other's updates. `change` may run several times. `404 NOT_FOUND` if there
/// is no such record.
pub fn update_record<S, F>(storage: &S, id: &str, mut change: F) -> Result<RecordUpdate, ApiError>
where
    S: Storage + ?Sized,
    F: FnMut(&mut DownloadRecord) -> Result<(), TransitionError>,
{
    if !is_valid_download_id(id) {
        return Err(ApiError::not_found(format!("no download {id:?}")));
    }
    let report = load_report(storage, id)?;
    cas_update(storage, &record_key(id), |current| {
        let Some(bytes) = current else {
            return Err(ApiError::not_found(format!("no download {id:?}")));
        };
        let mut record = parse_record(bytes)?;
        // Decide on the record as readers see it (a stale-worker check needs the heartbeat).
        if let Some(report) = &report {
            record.apply_report(report);
        }
        match change(&mut record) {
            Ok(()) => Ok(CasStep::Write(record.to_json_bytes(), RecordUpdate::Applied(record))),
            Err(_) => Ok(CasStep::Done(RecordUpdate::AlreadyEnded(record))),
        }
    })
}

/// Ends a download with `change` (complete, fail, cancel, interrupted). `AlreadyEnded` means
/// another party ended it first.
///
/// The history entry is written *before* the record can be seen ended, and the ending write
/// records that entry's sequence number in the record, atomically with the status. So a client
/// that sees a download ended always finds it in history, and an entry whose record never
/// pointed back at it (this call did not end the download) is skipped by readers. The slot
/// and target are released afterwards; a crash in between is repaired by [`sweep_stale`].
pub fn finish<S, F>(storage: &S, id: &str, mut change: F) -> Result<RecordUpdate, ApiError>
where
    S: Storage + ?Sized,
    F: FnMut(&mut DownloadRecord) -> Result<(), TransitionError>,
{
    if load_record(storage, id)?.is_none() {
        return Err(ApiError::not_found(format!("no download {id:?}")));
    }
    let seq = append_history(storage, id)?;
    let update = update_record(storage, id, |record| {
        let was_terminal = record.is_terminal();
        change(record)?;
        if record.is_terminal() && !was_terminal {
            record.history_seq = Some(seq);
            record.settled = true;
        }
        Ok(())
    })?;
    match &update {
        RecordUpdate::Applied(record) if record.history_seq == Some(seq) => release(storage, record)?,
        // Nobody will ever point at this entry: drop it (readers would skip it anyway).
        _ => storage.delete(&history_entry_key(seq))?,
    }
    Ok(update)
}

/// Releases an ended download's concurrency slot and target reservation (idempotent).
fn release<S: Storage + ?Sized>(storage: &S, record: &DownloadRecord) -> Result<(), ApiError> {
    release_slot(storage, &record.id)?;
    storage.delete(&progress_key(&record.id))?;
    forget_checkpoint(storage, &record.id)?;
    if let Ok(path) = StoragePath::parse_file(&record.file_path) {
        release_target(storage, &path, &record.id)?;
    }
    Ok(())
}

/// Whether history entry `seq` stands for `record`: it has ended, and either this is the entry
/// its ending write recorded, or it ended through [`settle`] (which records none).
fn entry_belongs_to(record: &DownloadRecord, seq: u64) -> bool {
    record.is_terminal() && record.history_seq.is_none_or(|own| own == seq)
}

/// Does the bookkeeping for a record that ended without [`finish`] (one refused at
/// validation): release its slot and target, append it to history — if nobody has claimed it
/// yet. The claim is a compare-and-swap of the record's `settled` flag, so it happens exactly
/// once however many parties try. Returns whether this call did it. A record that has not
/// ended is left alone.
pub fn settle<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<bool, ApiError> {
    let claimed = cas_update(storage, &record_key(id), |current| {
        let Some(bytes) = current else { return Ok(CasStep::Done(None)) };
        let mut record = parse_record(bytes)?;
        if record.settled || !record.is_terminal() {
            return Ok(CasStep::Done(None));
        }
        record.settled = true;
        Ok(CasStep::Write(record.to_json_bytes(), Some(record)))
    })?;
    let Some(record) = claimed else { return Ok(false) };
    release(storage, &record)?;
    append_history(storage, id)?;
    Ok(true)
}

/// Stores a record refused at validation ([`DownloadRecord::rejected`]) and puts it in
/// history.
pub fn store_rejected<S: Storage + ?Sized>(storage: &S, record: &DownloadRecord) -> Result<(), ApiError> {
    create_record(storage, record)?;
    settle(storage, &record.id)?;
    Ok(())
}

/// The record of `id` as clients should see it: a download whose worker stopped reporting is
/// recovered through `resume` or ended as interrupted first ([`sweep_stale`]'s rule), so
/// nothing stays "downloading" forever.
pub fn load_current<S: Storage + ?Sized>(
    storage: &S,
    id: &str,
    now: u64,
    heartbeat_interval_secs: u64,
    resume: ContinueDownload<'_>,
) -> Result<Option<DownloadRecord>, ApiError> {
    let Some(record) = load_record(storage, id)? else { return Ok(None) };
    if !record.is_stale(now, heartbeat_interval_secs) {
        return Ok(Some(record));
    }
    recover_or_interrupt(storage, record, now, heartbeat_interval_secs, resume)?;
    load_record(storage, id)
}

// ---------------------------------------------------------------------------------------
// Active set (concurrency slots)
// ---------------------------------------------------------------------------------------

fn parse_active(bytes: Option<&[u8]>) -> Result<Vec<String>, ApiError> {
    match bytes {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| corrupt("active-download set", e)),
    }
}

fn active_bytes(ids: &[String]) -> Vec<u8> {
    crate::json::to_bytes(ids)
}

/// The ids holding a slot, in reservation order.
pub fn active_ids<S: Storage + ?Sized>(storage: &S) -> Result<Vec<String>, ApiError> {
    parse_active(storage.get(ACTIVE_KEY)?.as_deref())
}

/// Takes one of `limit` concurrent-download slots for `id`, atomically, or fails with
/// `429 TOO_MANY_DOWNLOADS`. Taking a slot already held by `id` succeeds without a change.
pub fn try_reserve_slot<S: Storage + ?Sized>(storage: &S, id: &str, limit: usize) -> Result<(), ApiError> {
    require_valid_id(id)?;
    cas_update(storage, ACTIVE_KEY, |current| {
        let mut ids = parse_active(current)?;
        if ids.iter().any(|held| held == id) {
            return Ok(CasStep::Done(()));
        }
        if ids.len() >= limit {
            return Err(ApiError::new(
                ErrorCode::TooManyDownloads,
                match limit {
                    1 => "a download is already running (the limit is 1); try again when it has finished".to_string(),
                    _ => format!("{limit} downloads are already running; try again when one has finished"),
                },
            ));
        }
        ids.push(id.to_owned());
        Ok(CasStep::Write(active_bytes(&ids), ()))
    })
}

/// Gives back `id`'s slot. Returns whether it held one.
pub fn release_slot<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<bool, ApiError> {
    cas_update(storage, ACTIVE_KEY, |current| {
        let mut ids = parse_active(current)?;
        let before = ids.len();
        ids.retain(|held| held != id);
        if ids.len() == before {
            return Ok(CasStep::Done(false));
        }
        Ok(CasStep::Write(active_bytes(&ids), true))
    })
}

/// Which records a listing includes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Only downloads into exactly this directory (`None`: all directories). Callers serving
    /// the reference's `GET /?download_history` pass `None`, since the reference lists every
    /// download there.
    pub directory: Option<StoragePath>,
    /// Only downloads started by this principal (`None`: everyone's, for admins).
    pub owner: Option<String>,
}

impl RecordFilter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &DownloadRecord) -> bool {
        self.directory.as_ref().is_none_or(|dir| record.directory == *dir)
            && self.owner.as_ref().is_none_or(|owner| record.owner == *owner)
    }
}

/// Asks the app to run the next slice of download `id`, from the checkpoint of slice `slice`
/// (a request to the download worker); `true` if it took the work.
pub type ContinueDownload<'a> = &'a dyn Fn(&str, u32) -> bool;

/// Recovers downloads whose worker stopped reporting — resumed through `resume` when a
/// checkpoint allows ([`offer_recovery`]), else ended as interrupted — settles ended ones that
/// still hold a slot, and drops slots whose record is gone. Returns the downloads this call
/// declared interrupted, so the caller can reclaim their blobs and log them.
pub fn sweep_stale<S: Storage + ?Sized>(
    storage: &S,
    now: u64,
    heartbeat_interval_secs: u64,
    resume: ContinueDownload<'_>,
) -> Result<Vec<DownloadRecord>, ApiError> {
    let mut interrupted = Vec::new();
    for id in active_ids(storage)? {
        match load_record(storage, &id)? {
            None => {
                release_slot(storage, &id)?;
            }
            Some(record) if record.is_terminal() => {
                // Its ender crashed before releasing (or is releasing right now; releasing
                // twice is harmless).
                settle(storage, &id)?;
                release(storage, &record)?;
            }
            Some(record) if record.is_stale(now, heartbeat_interval_secs) => {
                if let Some(record) = recover_or_interrupt(storage, record, now, heartbeat_interval_secs, resume)? {
                    interrupted.push(record);
                }
            }
            Some(_) => {}
        }
    }
    Ok(interrupted)
}

/// Resumes the stale `record` through `resume` if its checkpoint allows, else ends it as
/// interrupted and discards what its checkpoint stored; returns it if it was interrupted.
fn recover_or_interrupt<S: Storage + ?Sized>(
    storage: &S,
    record: DownloadRecord,
    now: u64,
    heartbeat_interval_secs: u64,
    resume: ContinueDownload<'_>,
) -> Result<Option<DownloadRecord>, ApiError> {
    let offered = offer_recovery(storage, &record, now)?;
    if let Some(slice) = offered {
        if resume(&record.id, slice) {
            return Ok(None);
        }
    }
    let checkpoint = load_checkpoint(storage, &record.id)?;
    let update = finish(storage, &record.id, |current| {
        // Offered but nobody took it: it is still ours to end, unless a worker claimed it.
        let unclaimed = offered.is_some_and(|slice| current.slice == slice && current.awaiting_worker);
        if unclaimed || current.is_stale(now, heartbeat_interval_secs) {
            current.interrupted(now)
        } else {
            Ok(())
        }
    })?;
    match update {
        RecordUpdate::Applied(record) if record.is_terminal() => {
            if let Some(checkpoint) = checkpoint {
                // Best effort: garbage collection removes what is left.
                let _ = checkpoint.write.discard(storage);
            }
            Ok(Some(record))
        }
        _ => Ok(None),
    }
}

/// [`sweep_stale`], then reclaims the blob each interrupted download was writing (its worker
/// is gone, so nobody else will). Returns the interrupted downloads.
pub fn sweep_and_reclaim<S: Storage + ?Sized>(
    storage: &S,
    now: u64,
    heartbeat_interval_secs: u64,
    resume: ContinueDownload<'_>,
) -> Result<Vec<DownloadRecord>, ApiError> {
    let interrupted = sweep_stale(storage, now, heartbeat_interval_secs, resume)?;
    for record in &interrupted {
        if let Some(blob_id) = &record.blob_id {
            let known_chunks = record.current_size / u64::from(DEFAULT_CHUNK_SIZE);
            // Best effort: whatever is left, storage garbage collection removes later.
            let _ = reclaim_abandoned_write(storage, blob_id, known_chunks);
        }
    }
    Ok(interrupted)
}

/// The running downloads passing `filter`, oldest first, after a [`sweep_stale`] so none is
/// shown as running after its worker died.
pub fn list_active<S: Storage + ?Sized>(
    storage: &S,
    filter: &RecordFilter,
    now: u64,
    heartbeat_interval_secs: u64,
    resume: ContinueDownload<'_>,
) -> Result<Vec<DownloadRecord>, ApiError> {
    sweep_stale(storage, now, heartbeat_interval_secs, resume)?;
    let mut running = Vec::new();
    for id in active_ids(storage)? {
        if let Some(record) = load_record(storage, &id)? {
            if !record.is_terminal() && filter.matches(&record) {
                running.push(record);
            }
        }
    }
    running.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
    Ok(running)
}

// ---------------------------------------------------------------------------------------
// Target reservations
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct TargetClaim {
    id: String,
    since: u64,
}

/// Reserves `path` as `id`'s download target, so no other download writes it at the same
/// time. Succeeds if the path is free, already `id`'s, or held by a download that has ended
/// (or whose start died before writing its record, after [`TARGET_CLAIM_GRACE_SECS`]).
pub fn reserve_target<S: Storage + ?Sized>(
    storage: &S,
    path: &StoragePath,
    id: &str,
    now: u64,
) -> Result<bool, ApiError> {
    require_valid_id(id)?;
    let mine = crate::json::to_bytes(&TargetClaim { id: id.to_owned(), since: now });
    cas_update(storage, &target_key(path), |current| {
        let holder = match current {
            None | Some(b"") => None,
            // An unreadable claim cannot be honoured; taking it over beats blocking the name.
            Some(bytes) => serde_json::from_slice::<TargetClaim>(bytes).ok(),
        };
        let Some(holder) = holder else { return Ok(CasStep::Write(mine.clone(), true)) };
        if holder.id == id {
            return Ok(CasStep::Done(true));
        }
        let holder_gone = match load_record(storage, &holder.id)? {
            Some(record) => record.is_terminal(),
            None => now.saturating_sub(holder.since) > TARGET_CLAIM_GRACE_SECS,
        };
        if holder_gone {
            Ok(CasStep::Write(mine.clone(), true))
        } else {
            Ok(CasStep::Done(false))
        }
    })
}

/// Frees `path` if `id` holds it (written as an empty value, by compare-and-swap, so a
/// reservation taken over by someone else is never removed).
pub fn release_target<S: Storage + ?Sized>(storage: &S, path: &StoragePath, id: &str) -> Result<(), ApiError> {
    cas_update(storage, &target_key(path), |current| {
        let held_by_id = current
            .and_then(|bytes| serde_json::from_slice::<TargetClaim>(bytes).ok())
            .is_some_and(|claim| claim.id == id);
        Ok(if held_by_id { CasStep::Write(Vec::new(), ()) } else { CasStep::Done(()) })
    })
}

/// Picks the download target in `directory`: `wanted`, else `wanted (1)`, `wanted (2)`, …
/// — the first name with no file or directory there that could be reserved for `id`.
/// `409 CONFLICT` after [`MAX_NAME_ATTEMPTS`] names; `400 INVALID_PATH` if a name does not fit
/// the path limits.
///
/// The file can still appear between this check and the download's end (an upload); the
/// worker must therefore publish without overwriting (`WriteMode::CreateNew`).
pub fn choose_target<S: Storage + ?Sized>(
    storage: &S,
    directory: &StoragePath,
    wanted: &str,
    id: &str,
    now: u64,
) -> Result<StoragePath, ApiError> {
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let path = directory.join(&next_free_name(wanted, attempt))?;
        if stat(storage, &path)?.is_some() {
            continue;
        }
        if reserve_target(storage, &path, id, now)? {
            return Ok(path);
        }
    }
    Err(ApiError::conflict(format!("no free name like {wanted:?} in this directory after {MAX_NAME_ATTEMPTS} tries")))
}

// ---------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------

fn last_history_seq<S: Storage + ?Sized>(storage: &S) -> Result<u64, ApiError> {
    Ok(u64::try_from(storage.increment(HISTORY_SEQ_KEY, 0)?).unwrap_or(0))
}

fn history_floor<S: Storage + ?Sized>(storage: &S) -> Result<u64, ApiError> {
    match storage.get(HISTORY_FLOOR_KEY)? {
        None => Ok(1),
        Some(bytes) => {
            serde_json::from_slice::<u64>(&bytes).map(|floor| floor.max(1)).map_err(|e| corrupt("history floor", e))
        }
    }
}

/// Appends `id` to history; returns its sequence number. An atomic increment hands out the
/// number, so concurrent appends never collide or overwrite each other; on a store whose
/// counter can hand a number out twice, the append that finds its number taken takes the next.
pub fn append_history<S: Storage + ?Sized>(storage: &S, id: &str) -> Result<u64, ApiError> {
    for _ in 0..crate::storage::MAX_CAS_ATTEMPTS {
        let seq = storage.increment(HISTORY_SEQ_KEY, 1)?;
        let seq = u64::try_from(seq).map_err(|_| corrupt("history counter", seq))?;
        if storage.set_numbered(&history_entry_key(seq), id.as_bytes())? {
            return Ok(seq);
        }
    }
    Err(ApiError::storage("history: every sequence number tried was taken"))
}

/// `limit` and `cursor` of a history request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryParams {
    /// Page size, 1..=[`MAX_HISTORY_LIMIT`].
    pub limit: usize,
    /// Continue below this sequence number (the previous page's `next_cursor`).
    pub cursor: Option<u64>,
}

/// Parses `limit` (default [`DEFAULT_HISTORY_LIMIT`]; above [`MAX_HISTORY_LIMIT`] is capped)
/// and `cursor` (a previous `next_cursor`). Non-numbers and 0 are `400 INVALID_REQUEST`.
pub fn parse_history_params(query: &Query) -> Result<HistoryParams, ApiError> {
    let positive = |name: &str| -> Result<Option<u64>, ApiError> {
        match query.get(name).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(value) if value > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(value)),
                _ => Err(ApiError::invalid_request(format!("`{name}` must be a positive whole number"))),
            },
        }
    };
    let limit = positive("limit")?.map_or(DEFAULT_HISTORY_LIMIT, |limit| limit.min(MAX_HISTORY_LIMIT as u64) as usize);
    Ok(HistoryParams { limit, cursor: positive("cursor")? })
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Ended downloads, the most recently ended first.
    pub records: Vec<DownloadRecord>,
    /// Pass as `cursor` for the next (older) page; `None` when there is nothing older.
    pub next_cursor: Option<u64>,
}

/// Reads history newest first: up to `limit` records passing `filter` whose sequence number
/// is below `cursor` (all when `None`). Examines at most [`MAX_HISTORY_SCAN`] entries, so a
/// page can be short yet have a `next_cursor`. Entries whose record is gone are skipped.
pub fn history_page<S: Storage + ?Sized>(
    storage: &S,
    limit: usize,
    cursor: Option<u64>,
    filter: &RecordFilter,
) -> Result<HistoryPage, ApiError> {
    let limit = limit.clamp(1, MAX_HISTORY_LIMIT);
    let last = last_history_seq(storage)?;
    let floor = history_floor(storage)?;
    let mut next = match cursor {
        Some(cursor) => cursor.saturating_sub(1).min(last),
        None => last,
    };
    let mut records = Vec::new();
    let mut scanned = 0;
    while next >= floor && records.len() < limit && scanned < MAX_HISTORY_SCAN {
        if let Some(id) = storage.get(&history_entry_key(next))? {
            let id = String::from_utf8_lossy(&id);
            if let Some(record) = load_record(storage, &id)? {
                if entry_belongs_to(&record, next) && filter.matches(&record) {
                    records.push(record);
                }
            }
        }
        next -= 1;
        scanned += 1;
    }
    let next_cursor = (next >= floor).then_some(next + 1);
    Ok(HistoryPage { records, next_cursor })
}

/// Keeps the newest `keep` history entries: older entries and their (ended) records are
/// deleted, at most [`MAX_TRIM_PER_CALL`] per call (call it after each append and it keeps
/// up). The floor is advanced first, by compare-and-swap, so concurrent trims split the work
/// instead of repeating it and readers stop looking at entries being deleted. Returns how
/// many entries this call removed.
pub fn trim_history<S: Storage + ?Sized>(storage: &S, keep: u64) -> Result<u64, ApiError> {
    let last = last_history_seq(storage)?;
    let wanted_floor = last.saturating_sub(keep) + 1;
    let claimed = cas_update(storage, HISTORY_FLOOR_KEY, |current| {
        let floor = match current {
            None => 1,
            Some(bytes) => serde_json::from_slice::<u64>(bytes).map_err(|e| corrupt("history floor", e))?.max(1),
        };
        let new_floor = wanted_floor.min(floor.saturating_add(MAX_TRIM_PER_CALL));
        if new_floor <= floor {
            return Ok(CasStep::Done(None));
        }
        Ok(CasStep::Write(crate::json::to_bytes(&new_floor), Some(floor..new_floor)))
    })?;
    let Some(range) = claimed else { return Ok(0) };
    let removed = range.end - range.start;
    for seq in range {
        let key = history_entry_key(seq);
        if let Some(id) = storage.get(&key)? {
            let id = String::from_utf8_lossy(&id).into_owned();
            // Only ended records are history; a running one (impossible unless the store was
            // edited by hand) is left for its worker.
            if load_record(storage, &id)?.is_some_and(|record| entry_belongs_to(&record, seq)) {
                storage.delete(&record_key(&id))?;
                storage.delete(&progress_key(&id))?;
            }
        }
        storage.delete(&key)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::blob::MAX_KEY_BYTES;
    use crate::download::params::parse_start_request;
    use crate::download::record::{DownloadStatus, ProgressReport};

    /// A sweep's resume that never finds a worker: stale downloads end as interrupted.
    const NO_RESUME: ContinueDownload<'static> = &|_, _| false;
    use crate::download::url_policy::DownloadPolicy;
    use crate::storage::{write_file, MemoryStorage, WriteMode, WriteOptions};

    const INTERVAL: u64 = 5;

    fn dir(raw: &str) -> StoragePath {
        StoragePath::parse(raw).unwrap()
    }

    fn starting(id: &str, url: &str, directory: &str, now: u64) -> DownloadRecord {
        let query = Query::parse(&format!("download={url}")).unwrap();
        let request = parse_start_request(&query, &dir(directory), &DownloadPolicy::default()).unwrap();
        DownloadRecord::starting(id, "alice", &request, &request.file_path().unwrap(), now)
    }

    /// Steps 2–4 of the module docs.
    /// [`super::start`] of `http://example.com/{name}` into `Downloads`, a refusal as an error.
    fn start(
        storage: &MemoryStorage,
        id: &str,
        name: &str,
        now: u64,
        limit: usize,
    ) -> Result<DownloadRecord, ApiError> {
        let query = Query::parse(&format!("download=http://example.com/{name}")).unwrap();
        let settings = DownloadSettings { max_concurrent: limit, ..DownloadSettings::load(|_| None).unwrap() };
        let ids = StartIds { download: id.to_owned(), blob: BlobId::new(format!("blob-{id}")).unwrap() };
        match super::start(storage, &query, &dir("Downloads"), "alice", &settings, ids, now)? {
            Start::Accepted(started) => Ok(started.record),
            Start::Refused(body) => {
                let code = body.error.and_then(ErrorCode::from_wire).expect("a refusal names its code");
                Err(ApiError::new(code, body.detail.unwrap_or_default()))
            }
        }
    }

    fn history_ids(storage: &MemoryStorage) -> Vec<String> {
        history_page(storage, MAX_HISTORY_LIMIT, None, &RecordFilter::default())
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn keys_are_short_and_outside_file_prefixes() {
        let long_id = "x".repeat(MAX_DOWNLOAD_ID_BYTES);
        let long_path = dir(&vec!["d".repeat(200); 5].join("/"));
        let keys = [
            record_key(&long_id),
            ACTIVE_KEY.to_owned(),
            target_key(&long_path),
            HISTORY_SEQ_KEY.to_owned(),
            HISTORY_FLOOR_KEY.to_owned(),
            history_entry_key(u64::MAX),
        ];
        for key in &keys {
            assert!(key.len() <= MAX_KEY_BYTES, "{key}");
            assert!(key.starts_with("dl:"), "{key}");
            assert_eq!(crate::blob::classify_key(key), crate::blob::KeyKind::Other, "{key}");
        }
        assert_eq!(history_entry_key(42), "dl:hist:00000000000000000042");
        assert!(history_entry_key(9) < history_entry_key(10));
    }

    #[test]
    fn download_ids() {
        assert!(is_valid_download_id("7a3f8b12-4d5e-4a1b-9c8f-2e6d7f8a9b0c"));
        assert!(is_valid_download_id("a_b"));
        for bad in ["", "a/b", "a:b", "..", "é", &"x".repeat(65), "a b"] {
            assert!(!is_valid_download_id(bad), "{bad:?}");
        }
        let storage = MemoryStorage::new();
        assert_eq!(load_record(&storage, "../etc").unwrap(), None);
        assert_eq!(update_record(&storage, "a/b", |_| Ok(())).unwrap_err().code, ErrorCode::NotFound);
        let mut bad = starting("ok", "http://x.org/a", "Downloads", 1);
        bad.id = "no/slash".into();
        assert_eq!(create_record(&storage, &bad).unwrap_err().code, ErrorCode::InternalError);
        assert_eq!(try_reserve_slot(&storage, "", 5).unwrap_err().code, ErrorCode::InternalError);
    }

    #[test]
    fn records_round_trip() {
        let storage = MemoryStorage::new();
        let record = starting("d1", "http://x.org/a.bin", "Downloads", 10);
        create_record(&storage, &record).unwrap();
        assert_eq!(load_record(&storage, "d1").unwrap().unwrap(), record);
        assert_eq!(load_record(&storage, "missing").unwrap(), None);
        storage.set(&record_key("broken"), b"{not json").unwrap();
        assert_eq!(load_record(&storage, "broken").unwrap_err().code, ErrorCode::StorageError);
        assert_eq!(update_record(&storage, "missing", |_| Ok(())).unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn progress_and_cancel_race_through_cas() {
        let storage = MemoryStorage::new();
        create_record(&storage, &starting("d1", "http://x.org/a.bin", "Downloads", 10)).unwrap();
        try_reserve_slot(&storage, "d1", 4).unwrap();
        // The user cancels exactly while the worker writes progress.
        storage.before_next_cas(&record_key("d1"), |store: &MemoryStorage| {
            let cancelled = finish(store, "d1", |r| r.cancel(11)).unwrap();
            assert!(matches!(cancelled, RecordUpdate::Applied(_)));
        });
        let update = update_record(&storage, "d1", |r| r.progress(12, 4096, Some(8192))).unwrap();
        let RecordUpdate::AlreadyEnded(record) = update else { panic!("progress must not resurrect {update:?}") };
        assert_eq!(record.status, DownloadStatus::Cancelled);
        let stored = load_record(&storage, "d1").unwrap().unwrap();
        assert_eq!((stored.status, stored.current_size), (DownloadStatus::Cancelled, 0));
        assert!(stored.settled);
        // The worker's completion after the cancel loses too, and history holds it once.
        assert!(matches!(finish(&storage, "d1", |r| r.complete(13, 8192)).unwrap(), RecordUpdate::AlreadyEnded(_)));
        assert_eq!(history_ids(&storage), ["d1"]);
        assert!(active_ids(&storage).unwrap().is_empty());
    }

    #[test]
    fn concurrent_progress_writes_are_not_lost() {
        let storage = MemoryStorage::new();
        create_record(&storage, &starting("d1", "http://x.org/a.bin", "Downloads", 10)).unwrap();
        storage.before_next_cas(&record_key("d1"), |store: &MemoryStorage| {
            update_record(store, "d1", |r| r.record_heartbeat(50)).unwrap();
        });
        update_record(&storage, "d1", |r| r.progress(20, 100, Some(1000))).unwrap();
        let stored = load_record(&storage, "d1").unwrap().unwrap();
        assert_eq!((stored.current_size, stored.expected_size, stored.heartbeat), (100, Some(1000), 50));
    }

    #[test]
    fn progress_reports_show_through_the_record_and_keep_it_alive() {
        let storage = MemoryStorage::new();
        create_record(&storage, &starting("d1", "http://x.org/a.bin", "Downloads", 10)).unwrap();
        try_reserve_slot(&storage, "d1", 4).unwrap();
        let writes = storage.write_count();
        let heartbeat_only = ProgressReport { heartbeat: 12, ..ProgressReport::default() };
        report_progress(&storage, "d1", &heartbeat_only).unwrap();
        let seen = load_record(&storage, "d1").unwrap().unwrap();
        assert_eq!((seen.status, seen.heartbeat), (DownloadStatus::Starting, 12), "no response yet");
        let report = ProgressReport { current_size: 4096, expected_size: Some(8192), heartbeat: 100, receiving: true };
        report_progress(&storage, "d1", &report).unwrap();
        assert_eq!(storage.write_count(), writes + 2, "one plain write per report, no compare-and-swap");
        let seen = load_record(&storage, "d1").unwrap().unwrap();
        assert_eq!(
            (seen.status, seen.current_size, seen.expected_size),
            (DownloadStatus::Downloading, 4096, Some(8192))
        );
        // Staleness is judged on the reported heartbeat, by readers and by the sweep alike.
        let stale_at_raw_heartbeat = 10 + 5 * (crate::download::record::STALE_AFTER_INTERVALS + 1);
        assert!(sweep_stale(&storage, stale_at_raw_heartbeat, 5, NO_RESUME).unwrap().is_empty());
        assert_eq!(
            list_active(&storage, &RecordFilter::default(), stale_at_raw_heartbeat, 5, NO_RESUME).unwrap().len(),
            1
        );
        // The end is final: a late report does not change it, and the report is removed.
        finish(&storage, "d1", |r| r.complete(101, 8192)).unwrap();
        report_progress(&storage, "d1", &ProgressReport { current_size: 1, heartbeat: 102, ..report }).unwrap();
        let done = load_record(&storage, "d1").unwrap().unwrap();
        assert_eq!((done.status, done.current_size), (DownloadStatus::Completed, 8192));
        finish(&storage, "d1", |r| r.complete(103, 8192)).unwrap();
    }

    #[test]
    fn start_refusals_are_answered_in_the_reference_shape_and_recorded() {
        let storage = MemoryStorage::new();
        let settings = DownloadSettings { max_concurrent: 1, ..DownloadSettings::load(|_| None).unwrap() };
        let begin = |id: &str, url: &str| {
            let query = Query::parse(&format!("download={url}")).unwrap();
            let ids = StartIds { download: id.to_owned(), blob: BlobId::new(format!("blob-{id}")).unwrap() };
            super::start(&storage, &query, &dir("Downloads"), "alice", &settings, ids, 5).unwrap()
        };
        let Start::Refused(body) = begin("r1", "ftp://example.com/x") else { panic!("ftp must be refused") };
        assert_eq!((body.status(), body.error, body.success), (400, Some("INVALID_URL"), false));
        let Start::Accepted(started) = begin("ok", "http://example.com/a.bin") else { panic!("valid") };
        let (record, target) = (started.record, started.target);
        assert_eq!(
            (record.blob_id.as_ref().map(|b| b.as_str()), target.as_str()),
            (Some("blob-ok"), "Downloads/a.bin")
        );
        let Start::Refused(busy) = begin("r2", "http://example.com/b.bin") else { panic!("one slot only") };
        assert_eq!((busy.status(), busy.error), (429, Some("TOO_MANY_DOWNLOADS")));
        assert_eq!(history_ids(&storage), ["r2", "r1"], "both refusals are in history, newest first");
        assert_eq!(active_ids(&storage).unwrap(), ["ok"]);
    }

    #[test]
    fn slots_respect_the_limit() {
        let storage = MemoryStorage::new();
        for id in ["a", "b", "c"] {
            try_reserve_slot(&storage, id, 3).unwrap();
        }
        let err = try_reserve_slot(&storage, "d", 3).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::TooManyDownloads, 429));
        try_reserve_slot(&storage, "b", 3).unwrap();
        assert_eq!(active_ids(&storage).unwrap(), ["a", "b", "c"]);
        assert!(release_slot(&storage, "b").unwrap());
        assert!(!release_slot(&storage, "b").unwrap());
        try_reserve_slot(&storage, "d", 3).unwrap();
        assert_eq!(active_ids(&storage).unwrap(), ["a", "c", "d"]);
        assert_eq!(try_reserve_slot(&storage, "e", 0).unwrap_err().code, ErrorCode::TooManyDownloads);
        storage.set(ACTIVE_KEY, b"oops").unwrap();
        assert_eq!(try_reserve_slot(&storage, "e", 9).unwrap_err().code, ErrorCode::StorageError);
    }

    #[test]
    fn slot_race_never_exceeds_the_limit() {
        let storage = MemoryStorage::new();
        try_reserve_slot(&storage, "a", 2).unwrap();
        // Between our read and our swap, another start takes the last slot.
        storage.before_next_cas(ACTIVE_KEY, |store: &MemoryStorage| {
            try_reserve_slot(store, "rival", 2).unwrap();
        });
        assert_eq!(try_reserve_slot(&storage, "b", 2).unwrap_err().code, ErrorCode::TooManyDownloads);
        assert_eq!(active_ids(&storage).unwrap(), ["a", "rival"]);
    }

    #[test]
    fn slot_reservation_under_thread_contention() {
        let storage = MemoryStorage::new();
        let limit = 5;
        let granted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..30)
                .map(|n| {
                    let storage = &storage;
                    scope.spawn(move || try_reserve_slot(storage, &format!("id{n}"), limit).is_ok())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(granted, limit);
        assert_eq!(active_ids(&storage).unwrap().len(), limit);
    }

    #[test]
    fn targets_are_never_shared() {
        let storage = MemoryStorage::new();
        let path = dir("Downloads/data.csv");
        assert!(reserve_target(&storage, &path, "a", 100).unwrap());
        assert!(reserve_target(&storage, &path, "a", 100).unwrap(), "idempotent for the holder");
        create_record(&storage, &starting("a", "http://x.org/data.csv", "Downloads", 100)).unwrap();
        assert!(!reserve_target(&storage, &path, "b", 100_000).unwrap(), "a running holder keeps it");
        // Someone else's release does nothing.
        release_target(&storage, &path, "b").unwrap();
        assert!(!reserve_target(&storage, &path, "b", 100).unwrap());
        release_target(&storage, &path, "a").unwrap();
        assert!(reserve_target(&storage, &path, "b", 100).unwrap());
    }

    #[test]
    fn dead_holders_lose_their_targets() {
        let storage = MemoryStorage::new();
        let path = dir("Downloads/x.bin");
        // A start that reserved and then died before writing its record.
        assert!(reserve_target(&storage, &path, "ghost", 100).unwrap());
        assert!(!reserve_target(&storage, &path, "b", 100 + TARGET_CLAIM_GRACE_SECS).unwrap());
        assert!(reserve_target(&storage, &path, "b", 101 + TARGET_CLAIM_GRACE_SECS).unwrap());
        // A holder that ended without releasing (crash) is taken over at once.
        let mut ended = starting("b", "http://x.org/x.bin", "Downloads", 200);
        ended.fail(201, ErrorCode::NetworkError, "reset").unwrap();
        create_record(&storage, &ended).unwrap();
        assert!(reserve_target(&storage, &path, "c", 202).unwrap());
        // A late release by the old holder cannot free the new holder's reservation.
        release_target(&storage, &path, "b").unwrap();
        create_record(&storage, &starting("c", "http://x.org/x.bin", "Downloads", 202)).unwrap();
        assert!(!reserve_target(&storage, &path, "d", 203).unwrap());
        storage.set(&target_key(&path), b"garbage").unwrap();
        assert!(reserve_target(&storage, &path, "d", 203).unwrap());
    }

    #[test]
    fn concurrent_target_reservation_has_one_winner() {
        let storage = MemoryStorage::new();
        let path = dir("Downloads/data.csv");
        let rival_path = path.clone();
        storage.before_next_cas(&target_key(&path), move |store: &MemoryStorage| {
            assert!(reserve_target(store, &rival_path, "rival", 1).unwrap());
            create_record(store, &starting("rival", "http://x.org/data.csv", "Downloads", 1)).unwrap();
        });
        assert!(!reserve_target(&storage, &path, "me", 1).unwrap());
    }

    #[test]
    fn choose_target_skips_existing_files_and_reservations() {
        let storage = MemoryStorage::new();
        let options = WriteOptions { mode: WriteMode::CreateNew, ..WriteOptions::default() };
        write_file(
            &storage,
            &dir("Downloads/data.csv"),
            crate::blob::BlobId::new("b1").unwrap(),
            [b"x"],
            options.clone(),
            1,
        )
        .unwrap();
        let first = choose_target(&storage, &dir("Downloads"), "data.csv", "a", 10).unwrap();
        assert_eq!(first.as_str(), "Downloads/data (1).csv");
        create_record(&storage, &starting("a", "http://x.org/data.csv", "Downloads", 10)).unwrap();
        let second = choose_target(&storage, &dir("Downloads"), "data.csv", "b", 10).unwrap();
        assert_eq!(second.as_str(), "Downloads/data (2).csv");
        // A directory with the wanted name counts as taken too.
        write_file(
            &storage,
            &dir("Downloads/report/inside"),
            crate::blob::BlobId::new("b2").unwrap(),
            [b"x"],
            options,
            1,
        )
        .unwrap();
        assert_eq!(
            choose_target(&storage, &dir("Downloads"), "report", "c", 10).unwrap().as_str(),
            "Downloads/report (1)"
        );
        assert_eq!(choose_target(&storage, &StoragePath::root(), "top.txt", "d", 10).unwrap().as_str(), "top.txt");
    }

    #[test]
    fn choose_target_gives_up_eventually() {
        let storage = MemoryStorage::new();
        for attempt in 0..MAX_NAME_ATTEMPTS {
            let path = dir("d").join(&next_free_name("f", attempt)).unwrap();
            assert!(reserve_target(&storage, &path, "holder", 0).unwrap());
        }
        create_record(&storage, &starting("holder", "http://x.org/f", "d", 0)).unwrap();
        assert_eq!(choose_target(&storage, &dir("d"), "f", "me", 0).unwrap_err().code, ErrorCode::Conflict);
    }

    #[test]
    fn full_lifecycle_and_history_views() {
        let storage = MemoryStorage::new();
        let record = start(&storage, "d1", "data.csv", 100, 4).unwrap();
        assert_eq!(active_ids(&storage).unwrap(), ["d1"]);
        let active = list_active(&storage, &RecordFilter::default(), 101, INTERVAL, NO_RESUME).unwrap();
        assert_eq!(active, [record]);
        update_record(&storage, "d1", |r| r.progress(102, 10, Some(20))).unwrap();
        let done = finish(&storage, "d1", |r| r.complete(103, 20)).unwrap();
        assert!(matches!(done, RecordUpdate::Applied(ref r) if r.status == DownloadStatus::Completed));
        assert!(active_ids(&storage).unwrap().is_empty());
        assert!(list_active(&storage, &RecordFilter::default(), 104, INTERVAL, NO_RESUME).unwrap().is_empty());
        assert_eq!(history_ids(&storage), ["d1"]);
        // The target is free again for a later download (the file itself would now exist).
        assert!(reserve_target(&storage, &dir("Downloads/data.csv"), "d2", 105).unwrap());
    }

    #[test]
    fn too_many_downloads_is_recorded_in_history() {
        let storage = MemoryStorage::new();
        start(&storage, "d1", "a.bin", 1, 1).unwrap();
        let err = start(&storage, "d2", "b.bin", 2, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyDownloads);
        let d2 = load_record(&storage, "d2").unwrap().unwrap();
        assert_eq!((d2.status, d2.error), (DownloadStatus::Failed, Some(ErrorCode::TooManyDownloads)));
        assert_eq!(history_ids(&storage), ["d2"]);
        assert_eq!(active_ids(&storage).unwrap(), ["d1"]);
        // Its target was released.
        assert!(reserve_target(&storage, &dir("Downloads/b.bin"), "d3", 3).unwrap());
    }

    #[test]
    fn rejected_starts_land_in_history() {
        let storage = MemoryStorage::new();
        let query = Query::parse("download=ftp://x.org/data.csv").unwrap();
        let rejection = parse_start_request(&query, &dir("Downloads"), &DownloadPolicy::default()).unwrap_err();
        let record = DownloadRecord::rejected("r1", "alice", &dir("Downloads"), &rejection, 7);
        store_rejected(&storage, &record).unwrap();
        let page = history_page(&storage, 10, None, &RecordFilter::default()).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].error, Some(ErrorCode::InvalidUrl));
        assert!(page.records[0].settled);
    }

    #[test]
    fn an_ended_download_is_already_in_history() {
        let storage = MemoryStorage::new();
        start(&storage, "d1", "a.bin", 1, 4).unwrap();
        // At the moment the ending write lands, the history entry exists, but readers do not
        // list the download while it is still running.
        storage.before_next_cas(&record_key("d1"), |store: &MemoryStorage| {
            assert!(history_ids(store).is_empty());
            assert!(store.keys().iter().any(|k| k.starts_with(HISTORY_ENTRY_PREFIX) && k != HISTORY_SEQ_KEY));
        });
        finish(&storage, "d1", |r| r.cancel(2)).unwrap();
        assert_eq!(history_ids(&storage), ["d1"]);
        assert!(active_ids(&storage).unwrap().is_empty());
        // Ending it again changes nothing and leaves no stray entry.
        let again = finish(&storage, "d1", |r| r.fail(3, ErrorCode::NetworkError, "late")).unwrap();
        assert!(matches!(again, RecordUpdate::AlreadyEnded(_)));
        assert_eq!(history_ids(&storage), ["d1"]);
        let entries = storage.keys().into_iter().filter(|k| k.starts_with("dl:hist:0")).count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn settle_happens_exactly_once() {
        let storage = MemoryStorage::new();
        start(&storage, "d1", "a.bin", 1, 4).unwrap();
        update_record(&storage, "d1", |r| r.fail(2, ErrorCode::NetworkError, "reset")).unwrap();
        // Worker and sweeper settle at the same moment.
        storage.before_next_cas(&record_key("d1"), |store: &MemoryStorage| {
            assert!(settle(store, "d1").unwrap());
        });
        assert!(!settle(&storage, "d1").unwrap());
        assert!(!settle(&storage, "d1").unwrap());
        assert_eq!(history_ids(&storage), ["d1"]);
        // A running download is not settled.
        start(&storage, "d2", "b.bin", 3, 4).unwrap();
        assert!(!settle(&storage, "d2").unwrap());
        assert!(!settle(&storage, "nope").unwrap());
    }

    /// A checkpoint of `id` (slice `slice`) over a real pending write of 10 bytes.
    fn checkpointed(storage: &MemoryStorage, id: &str, slice: u32) {
        use crate::download::slices::{save_checkpoint, TransferCheckpoint};
        let blob = BlobId::new(format!("blob-{id}")).unwrap();
        let mut writer = crate::storage::FileWriter::begin(
            storage,
            dir(&format!("Downloads/{id}.bin")),
            blob,
            WriteOptions::default(),
            100,
        )
        .unwrap();
        writer.write(b"0123456789").unwrap();
        let write = writer.suspend().unwrap();
        let checkpoint = TransferCheckpoint { slice, validator: Default::default(), expected_size: Some(20), write };
        save_checkpoint(storage, id, &checkpoint).unwrap();
    }

    #[test]
    fn a_stale_download_with_a_checkpoint_is_resumed_once_and_interrupted_after_fruitless_recoveries() {
        use crate::download::slices::{claim_slice, hand_off, load_checkpoint, MAX_RECOVERIES};
        use std::cell::RefCell;
        let storage = MemoryStorage::new();
        start(&storage, "d", "d.bin", 100, 4).unwrap();
        checkpointed(&storage, "d", 0);
        // A live worker cannot be taken over: nothing awaits a worker.
        assert_eq!(claim_slice(&storage, "d", 0, 101).unwrap(), None);

        let asked = RefCell::new(Vec::new());
        let resume = |id: &str, slice: u32| {
            asked.borrow_mut().push((id.to_owned(), slice));
            true
        };
        assert!(sweep_stale(&storage, 200, INTERVAL, &resume).unwrap().is_empty());
        assert_eq!(*asked.borrow(), [("d".to_owned(), 0)]);
        let record = load_record(&storage, "d").unwrap().unwrap();
        assert!(record.awaiting_worker && !record.is_terminal() && !record.is_stale(200, INTERVAL));
        // Another sweep meanwhile leaves it alone (fresh heartbeat); one claim wins.
        assert!(sweep_stale(&storage, 201, INTERVAL, &resume).unwrap().is_empty());
        assert_eq!(asked.borrow().len(), 1);
        let claimed = claim_slice(&storage, "d", 0, 202).unwrap().expect("claimed");
        assert_eq!((claimed.slice, claimed.awaiting_worker), (1, false));
        assert_eq!(claim_slice(&storage, "d", 0, 202).unwrap(), None, "claimed twice");
        // The new slice hands off at its budget; the next claim is from slice 1.
        checkpointed(&storage, "d", 1);
        assert!(hand_off(&storage, "d", 1).unwrap());
        assert!(!hand_off(&storage, "d", 0).unwrap(), "a superseded slice cannot hand off");
        assert!(claim_slice(&storage, "d", 1, 203).unwrap().is_some());

        // Progress since the last recovery resets the count; a worker that keeps dying
        // without progress is given up on.
        let report = ProgressReport { current_size: 10, heartbeat: 250, receiving: true, ..Default::default() };
        report_progress(&storage, "d", &report).unwrap();
        checkpointed(&storage, "d", 2);
        let mut now = 300;
        for _ in 0..MAX_RECOVERIES {
            assert!(sweep_stale(&storage, now, INTERVAL, &resume).unwrap().is_empty());
            assert!(load_current(&storage, "d", now + 1, INTERVAL, &resume).unwrap().is_some());
            now += 100;
        }
        let interrupted = sweep_stale(&storage, now, INTERVAL, &resume).unwrap();
        assert_eq!(interrupted.len(), 1, "after {MAX_RECOVERIES} fruitless recoveries");
        assert!(load_checkpoint(&storage, "d").unwrap().is_none(), "the checkpoint goes with the record");
        assert!(storage.keys().iter().all(|key| !key.starts_with("chunk:") && !key.starts_with("pending:")));

        // A resume nobody takes ends the download at once.
        start(&storage, "e", "e.bin", 1000, 4).unwrap();
        checkpointed(&storage, "e", 0);
        let record = load_current(&storage, "e", 2000, INTERVAL, NO_RESUME).unwrap().unwrap();
        assert_eq!(record.status, DownloadStatus::Failed);
    }

    #[test]
    fn stale_downloads_are_interrupted_and_settled() {
        let storage = MemoryStorage::new();
        start(&storage, "old", "a.bin", 100, 4).unwrap();
        start(&storage, "fresh", "b.bin", 100, 4).unwrap();
        update_record(&storage, "fresh", |r| r.record_heartbeat(118)).unwrap();
        // An ended record whose worker crashed before settling.
        start(&storage, "ended", "c.bin", 100, 4).unwrap();
        update_record(&storage, "ended", |r| r.complete(110, 5)).unwrap();
        // A slot whose record vanished.
        storage.set(ACTIVE_KEY, br#"["old","fresh","ended","orphan"]"#).unwrap();

        assert!(!load_record(&storage, "old").unwrap().unwrap().is_stale(120, INTERVAL));
        let interrupted = sweep_stale(&storage, 121, INTERVAL, NO_RESUME).unwrap();
        assert_eq!(interrupted.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["old"]);
        let old = load_record(&storage, "old").unwrap().unwrap();
        assert_eq!((old.status, old.error), (DownloadStatus::Failed, Some(ErrorCode::NetworkError)));
        assert_eq!(old.error_message.as_deref(), Some(crate::download::record::INTERRUPTED_MESSAGE));
        assert_eq!(active_ids(&storage).unwrap(), ["fresh"]);
        let mut history = history_ids(&storage);
        history.sort();
        assert_eq!(history, ["ended", "old"]);
        // Sweeping again changes nothing.
        assert!(sweep_stale(&storage, 121, INTERVAL, NO_RESUME).unwrap().is_empty());
        assert_eq!(history_ids(&storage).len(), 2);
    }

    #[test]
    fn load_current_reconciles_stale_records() {
        let storage = MemoryStorage::new();
        start(&storage, "d1", "a.bin", 100, 4).unwrap();
        assert_eq!(
            load_current(&storage, "d1", 110, INTERVAL, NO_RESUME).unwrap().unwrap().status,
            DownloadStatus::Starting
        );
        let record = load_current(&storage, "d1", 200, INTERVAL, NO_RESUME).unwrap().unwrap();
        assert_eq!(record.status, DownloadStatus::Failed);
        assert_eq!(history_ids(&storage), ["d1"]);
        assert!(active_ids(&storage).unwrap().is_empty());
        assert_eq!(load_current(&storage, "none", 200, INTERVAL, NO_RESUME).unwrap(), None);
    }

    #[test]
    fn a_worker_that_wakes_up_during_the_sweep_is_not_interrupted() {
        let storage = MemoryStorage::new();
        start(&storage, "d1", "a.bin", 100, 4).unwrap();
        storage.before_next_cas(&record_key("d1"), |store: &MemoryStorage| {
            update_record(store, "d1", |r| r.progress(130, 1, None)).unwrap();
        });
        assert!(sweep_stale(&storage, 130, INTERVAL, NO_RESUME).unwrap().is_empty());
        assert_eq!(load_record(&storage, "d1").unwrap().unwrap().status, DownloadStatus::Downloading);
        assert_eq!(active_ids(&storage).unwrap(), ["d1"]);
    }

    #[test]
    fn active_listing_filters_and_orders() {
        let storage = MemoryStorage::new();
        start(&storage, "b", "x.bin", 20, 9).unwrap();
        start(&storage, "a", "y.bin", 10, 9).unwrap();
        let mut other = starting("c", "http://x.org/z.bin", "Other", 15);
        other.owner = "bob".into();
        create_record(&storage, &other).unwrap();
        try_reserve_slot(&storage, "c", 9).unwrap();
        let ids = |filter: RecordFilter| {
            list_active(&storage, &filter, 21, INTERVAL, NO_RESUME)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(RecordFilter::default()), ["a", "c", "b"]);
        assert_eq!(ids(RecordFilter { directory: Some(dir("Downloads")), owner: None }), ["a", "b"]);
        assert_eq!(ids(RecordFilter { directory: Some(dir("Other")), owner: None }), ["c"]);
        assert_eq!(ids(RecordFilter { directory: Some(StoragePath::root()), owner: None }), Vec::<String>::new());
        assert_eq!(ids(RecordFilter { directory: None, owner: Some("bob".into()) }), ["c"]);
    }

    fn ended(storage: &MemoryStorage, id: &str, directory: &str, now: u64) {
        let mut record = starting(id, "http://x.org/f.bin", directory, now);
        record.fail(now, ErrorCode::NetworkError, "x").unwrap();
        store_rejected(storage, &record).unwrap();
    }

    #[test]
    fn history_pages_newest_first_with_cursor() {
        let storage = MemoryStorage::new();
        for n in 1..=7 {
            ended(&storage, &format!("h{n}"), "Downloads", n);
        }
        let all = RecordFilter::default();
        let page = history_page(&storage, 3, None, &all).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["h7", "h6", "h5"]);
        assert_eq!(page.next_cursor, Some(5));
        let page = history_page(&storage, 3, page.next_cursor, &all).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["h4", "h3", "h2"]);
        let page = history_page(&storage, 3, page.next_cursor, &all).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["h1"]);
        assert_eq!(page.next_cursor, None);
        // Exactly filling the last page also ends the listing.
        let page = history_page(&storage, 7, None, &all).unwrap();
        assert_eq!((page.records.len(), page.next_cursor), (7, None));
        // Out-of-range cursors and limits are tamed.
        assert_eq!(history_page(&storage, 3, Some(1_000_000), &all).unwrap().records[0].id, "h7");
        assert!(history_page(&storage, 3, Some(1), &all).unwrap().records.is_empty());
        assert_eq!(history_page(&storage, 0, None, &all).unwrap().records.len(), 1);
        assert_eq!(
            history_page(&MemoryStorage::new(), 5, None, &all).unwrap(),
            HistoryPage { records: vec![], next_cursor: None }
        );
    }

    #[test]
    fn history_directory_filter_and_scan_bound() {
        let storage = MemoryStorage::new();
        ended(&storage, "want", "A", 1);
        for n in 0..(MAX_HISTORY_SCAN + 5) {
            storage
                .set(
                    &history_entry_key(storage.increment(HISTORY_SEQ_KEY, 1).unwrap() as u64),
                    format!("gone{n}").as_bytes(),
                )
                .unwrap();
        }
        let filter = RecordFilter { directory: Some(dir("A")), owner: None };
        let first = history_page(&storage, 10, None, &filter).unwrap();
        assert!(first.records.is_empty());
        let cursor = first.next_cursor.expect("a short page must say where to go on");
        let second = history_page(&storage, 10, Some(cursor), &filter).unwrap();
        assert_eq!(second.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["want"]);
        assert_eq!(second.next_cursor, None);
    }

    #[test]
    fn history_params() {
        let params = |q: &str| parse_history_params(&Query::parse(q).unwrap());
        assert_eq!(params("").unwrap(), HistoryParams { limit: DEFAULT_HISTORY_LIMIT, cursor: None });
        assert_eq!(
            params("download_history=&limit=10&cursor=99").unwrap(),
            HistoryParams { limit: 10, cursor: Some(99) }
        );
        assert_eq!(params("limit=100000").unwrap().limit, MAX_HISTORY_LIMIT);
        assert_eq!(params("limit=&cursor=").unwrap(), HistoryParams { limit: DEFAULT_HISTORY_LIMIT, cursor: None });
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=ten",
            "limit=1.5",
            "cursor=0",
            "cursor=x",
            "limit=+5",
            "limit=99999999999999999999999",
        ] {
            assert_eq!(params(bad).unwrap_err().code, ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn thirty_concurrent_downloads_neither_lose_nor_duplicate_history() {
        let storage = MemoryStorage::new();
        let all_started = std::sync::Barrier::new(30);
        std::thread::scope(|scope| {
            for n in 0..30 {
                let (storage, all_started) = (&storage, &all_started);
                scope.spawn(move || {
                    let id = format!("d{n:02}");
                    start(storage, &id, "same-name.bin", 100, 30).unwrap();
                    // All run at once, so all need distinct targets.
                    all_started.wait();
                    update_record(storage, &id, |r| r.progress(101, 10, Some(10))).unwrap();
                    if n % 3 == 0 {
                        // A cancel racing the completion: exactly one of them wins.
                        let cancel = finish(storage, &id, |r| r.cancel(102));
                        let complete = finish(storage, &id, |r| r.complete(102, 10));
                        let wins = [cancel.unwrap(), complete.unwrap()]
                            .iter()
                            .filter(|u| matches!(u, RecordUpdate::Applied(_)))
                            .count();
                        assert_eq!(wins, 1);
                    } else {
                        finish(storage, &id, |r| r.complete(102, 10)).unwrap();
                    }
                });
            }
        });
        let ids = history_ids(&storage);
        assert_eq!(ids.len(), 30);
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 30);
        assert!(active_ids(&storage).unwrap().is_empty());
        // All 30 ran at the same time and got distinct target names.
        let paths: BTreeSet<_> = ids.iter().map(|id| load_record(&storage, id).unwrap().unwrap().file_path).collect();
        assert_eq!(paths.len(), 30);
        assert!(paths.contains("Downloads/same-name.bin") && paths.contains("Downloads/same-name (29).bin"));
    }

    #[test]
    fn appends_interleaved_with_cas_traffic_are_kept() {
        let storage = MemoryStorage::new();
        // Each append is interleaved with a competing append from the hook.
        for n in 0..15 {
            ended(&storage, &format!("x{n}"), "D", n);
            let rival = format!("y{n}");
            storage.before_next_cas(&record_key(&format!("z{n}")), move |store: &MemoryStorage| {
                ended(store, &rival, "D", 0);
            });
            ended(&storage, &format!("z{n}"), "D", n);
        }
        let ids = history_ids(&storage);
        assert_eq!(ids.len(), 45);
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 45);
    }

    #[test]
    fn trimming_keeps_the_newest() {
        let storage = MemoryStorage::new();
        for n in 1..=10 {
            ended(&storage, &format!("h{n}"), "D", n);
        }
        assert_eq!(trim_history(&storage, 4).unwrap(), 6);
        assert_eq!(trim_history(&storage, 4).unwrap(), 0);
        assert_eq!(history_ids(&storage), ["h10", "h9", "h8", "h7"]);
        assert_eq!(load_record(&storage, "h6").unwrap(), None);
        assert!(storage.get(&history_entry_key(6)).unwrap().is_none());
        assert!(load_record(&storage, "h7").unwrap().is_some());
        let page = history_page(&storage, 2, Some(9), &RecordFilter::default()).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["h8", "h7"]);
        assert_eq!(page.next_cursor, None);
        ended(&storage, "h11", "D", 11);
        assert_eq!(trim_history(&storage, 4).unwrap(), 1);
        assert_eq!(history_ids(&storage), ["h11", "h10", "h9", "h8"]);
        assert_eq!(trim_history(&storage, 0).unwrap(), 4);
        assert!(history_ids(&storage).is_empty());
        // Numbering continues after a full trim.
        ended(&storage, "h12", "D", 12);
        assert_eq!(history_ids(&storage), ["h12"]);
    }

    #[test]
    fn trimming_is_bounded_and_shared_between_concurrent_trims() {
        let storage = MemoryStorage::new();
        for n in 0..(MAX_TRIM_PER_CALL + 10) {
            storage
                .set(
                    &history_entry_key(storage.increment(HISTORY_SEQ_KEY, 1).unwrap() as u64),
                    format!("gone{n}").as_bytes(),
                )
                .unwrap();
        }
        // A concurrent trim claims the first batch while we are about to.
        storage.before_next_cas(HISTORY_FLOOR_KEY, |store: &MemoryStorage| {
            assert_eq!(trim_history(store, 0).unwrap(), MAX_TRIM_PER_CALL);
        });
        assert_eq!(trim_history(&storage, 0).unwrap(), 10);
        assert_eq!(trim_history(&storage, 0).unwrap(), 0);
        assert!(storage
            .keys()
            .iter()
            .all(|k| !k.starts_with(HISTORY_ENTRY_PREFIX) || k == HISTORY_SEQ_KEY || k == HISTORY_FLOOR_KEY));
    }

    #[test]
    fn trimming_never_deletes_running_records() {
        let storage = MemoryStorage::new();
        start(&storage, "running", "a.bin", 1, 4).unwrap();
        append_history(&storage, "running").unwrap();
        trim_history(&storage, 0).unwrap();
        assert!(load_record(&storage, "running").unwrap().is_some());
    }

    #[test]
    fn sweeping_a_dead_download_reclaims_its_blob() {
        use crate::storage::{FileWriter, MemoryStorage, WriteOptions};
        let storage = MemoryStorage::new();
        let path = StoragePath::parse_file("dl/big.bin").unwrap();
        let mut writer = FileWriter::begin(
            &storage,
            path.clone(),
            BlobId::new("blob-1").unwrap(),
            WriteOptions { chunk_size: 4, chunks_per_batch: 1, ..WriteOptions::default() },
            100,
        )
        .unwrap();
        writer.write(b"0123456789").unwrap();
        let mut record = DownloadRecord::from_json_bytes(
            br#"{"id":"d1","owner":"a","filename":"big.bin","file_path":"dl/big.bin","directory":"dl","url":"http://x/","status":"downloading","current_size":10,"start_time":100,"heartbeat":100,"timeout_secs":300}"#,
        )
        .unwrap();
        record.blob_id = Some(BlobId::new("blob-1").unwrap());
        create_record(&storage, &record).unwrap();
        try_reserve_slot(&storage, "d1", 4).unwrap();
        assert!(storage.keys().iter().any(|k| k.starts_with("chunk:")));
        let interrupted = sweep_and_reclaim(&storage, 200, 5, NO_RESUME).unwrap();
        assert_eq!(interrupted.len(), 1);
        assert!(!storage.keys().iter().any(|k| k.starts_with("chunk:") || k.starts_with("pending:")));
        assert!(active_ids(&storage).unwrap().is_empty());
        drop(writer);
    }
}

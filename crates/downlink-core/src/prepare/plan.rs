//! Plans: the files of one multi-file download, their limits, archive layout and validators.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::{BlobId, MAX_VALUE_BYTES};
use crate::error::{ApiError, ErrorCode};
use crate::http::content_disposition_attachment;
use crate::meta::FileMeta;
use crate::path::{longest_common_dir, StoragePath};
use crate::storage::objects::ObjectLocation;
use crate::zip::{ZipEntry, ZipLayout, ZIP_CONTENT_TYPE};

use super::*;

/// One file of a plan: where its bytes are and everything the ZIP layout and the response
/// headers need, captured at prepare time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The file's path.
    pub path: StoragePath,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the content.
    pub crc32: u32,
    /// The blob holding the bytes (chunks `chunk:<blob_id>:<n>`).
    pub blob_id: BlobId,
    /// Bytes per chunk of that blob.
    pub chunk_size: u32,
    /// The object holding the bytes, when they are in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectLocation>,
    /// Unix seconds of the last write.
    pub modified: u64,
    /// The file's strong ETag at prepare time.
    pub etag: String,
    /// MIME type served for a single-file download.
    pub content_type: String,
}

impl PlanEntry {
    /// The entry for a file as it is stored now.
    pub fn from_meta(meta: &FileMeta) -> PlanEntry {
        PlanEntry {
            path: meta.path.clone(),
            size: meta.size,
            crc32: meta.crc32,
            blob_id: meta.blob_id.clone(),
            chunk_size: meta.chunk_size,
            object: meta.object.clone(),
            modified: meta.modified,
            etag: meta.etag(),
            content_type: meta.content_type.clone(),
        }
    }

    /// Checks the file is still exactly what was prepared (`current` is its record now, `None`
    /// if deleted); otherwise `409 CONFLICT`, to be answered before the first byte so a changed
    /// file never produces a corrupt archive (the CRCs and sizes are already in the headers).
    pub fn check_current(&self, current: Option<&FileMeta>) -> Result<(), ApiError> {
        let Some(meta) = current else {
            return Err(ApiError::conflict(format!(
                "\"/{}\" was deleted after the download was prepared; prepare it again",
                crate::text::for_message(self.path.as_str(), crate::text::MESSAGE_NAME_BYTES)
            )));
        };
        let same = meta.blob_id == self.blob_id
            && meta.size == self.size
            && meta.crc32 == self.crc32
            && meta.chunk_size == self.chunk_size
            && meta.modified == self.modified;
        if same {
            Ok(())
        } else {
            Err(ApiError::conflict(format!(
                "\"/{}\" changed after the download was prepared; prepare it again",
                crate::text::for_message(self.path.as_str(), crate::text::MESSAGE_NAME_BYTES)
            )))
        }
    }
}

/// Caps applied while a plan is built; both come from configuration in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most files after directory expansion (`400 INVALID_REQUEST` above).
    pub max_entries: usize,
    /// Most content bytes in total (`413 FILE_TOO_LARGE` above).
    pub max_total_bytes: u64,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits { max_entries: MAX_PLAN_ENTRIES, max_total_bytes: DEFAULT_MAX_PLAN_TOTAL_BYTES }
    }
}

/// Collects a plan's files while the caller resolves paths and expands directories: drops
/// duplicates (a file listed directly and through its directory), keeps first-seen order, and
/// fails as soon as a limit is crossed so a huge directory is not walked to the end.
#[derive(Clone, Debug)]
pub struct PlanBuilder {
    limits: PlanLimits,
    entries: Vec<PlanEntry>,
    seen: HashSet<StoragePath>,
    total_bytes: u64,
}

impl PlanBuilder {
    /// An empty plan with these limits.
    pub fn new(limits: PlanLimits) -> PlanBuilder {
        PlanBuilder { limits, entries: Vec::new(), seen: HashSet::new(), total_bytes: 0 }
    }

    /// Adds a file. `Ok(false)` if its path is already in the plan (nothing changes).
    pub fn push(&mut self, entry: PlanEntry) -> Result<bool, ApiError> {
        if self.seen.contains(&entry.path) {
            return Ok(false);
        }
        if self.entries.len() >= self.limits.max_entries {
            return Err(ApiError::invalid_request(format!(
                "the selection holds more than {} files; select fewer",
                self.limits.max_entries
            )));
        }
        let total = self.total_bytes.saturating_add(entry.size);
        if total > self.limits.max_total_bytes {
            return Err(ApiError::new(
                ErrorCode::FileTooLarge,
                format!(
                    "the selected files total more than {} bytes, the limit for one download",
                    self.limits.max_total_bytes
                ),
            ));
        }
        self.total_bytes = total;
        self.seen.insert(entry.path.clone());
        self.entries.push(entry);
        Ok(true)
    }

    /// Whether `path` is already in the plan.
    pub fn contains(&self, path: &StoragePath) -> bool {
        self.seen.contains(path)
    }

    /// Number of files so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Summed size of the files so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The plan, stored under `id` (from [`new_plan_id`]) for `owner` until `now + ttl_secs`.
    ///
    /// Errors: `400 INVALID_REQUEST` when there is no file (only empty directories were
    /// listed); `400 INVALID_PATH` if the archive names would clash (cannot happen for
    /// distinct storage paths, checked so a bad plan fails at prepare, not mid-download);
    /// `500` for a malformed id (a caller bug).
    pub fn finish(self, id: &str, owner: &str, now: u64, ttl_secs: u64) -> Result<PreparedPlan, ApiError> {
        if self.entries.is_empty() {
            return Err(ApiError::invalid_request("the selection contains no files (only empty directories)"));
        }
        let canonical = validate_plan_id(id).map_err(|_| ApiError::internal("generated prepare id is malformed"))?;
        let plan = PreparedPlan {
            id: canonical,
            owner: owner.to_owned(),
            created: now,
            expires: now.saturating_add(ttl_secs),
            entries: self.entries,
        };
        if plan.is_archive() {
            plan.zip_layout()?;
        }
        Ok(plan)
    }
}

/// A stored prepare result: the files to send, whose they are, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedPlan {
    /// Canonical id (32 lowercase hex digits).
    pub id: String,
    /// Name of the principal that prepared it; only it may download.
    pub owner: String,
    /// Unix seconds of the prepare request.
    pub created: u64,
    /// Unix seconds from which the id is expired.
    pub expires: u64,
    /// The files, in request order, de-duplicated.
    pub entries: Vec<PlanEntry>,
}

impl PreparedPlan {
    /// Whether the plan has expired at `now` (the expiry second itself counts as expired).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }

    /// `403 FORBIDDEN` unless `principal` prepared this plan.
    pub fn check_owner(&self, principal: &str) -> Result<(), ApiError> {
        check_owner(&self.owner, principal)
    }

    /// Whether the download is a ZIP (two or more files) rather than the file itself.
    pub fn is_archive(&self) -> bool {
        self.entries.len() != 1
    }

    /// Summed size of the files.
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().fold(0u64, |sum, entry| sum.saturating_add(entry.size))
    }

    /// The deepest directory containing every file; archive names are relative to it.
    pub fn common_dir(&self) -> StoragePath {
        longest_common_dir(self.entries.iter().map(|entry| &entry.path))
    }

    /// The archive entries, named relative to [`PreparedPlan::common_dir`]: preparing
    /// `/photos/2024` gives `a.jpg`, `sub/b.jpg`; `/a/x` + `/b/y` give `a/x`, `b/y`.
    pub fn zip_entries(&self) -> Vec<ZipEntry> {
        let common = self.common_dir();
        self.entries
            .iter()
            .map(|entry| {
                // The common directory strictly contains every file, so the relative name is
                // never empty; fall back to the full path rather than emit an empty name.
                let name =
                    entry.path.relative_to(&common).filter(|name| !name.is_empty()).unwrap_or(entry.path.as_str());
                ZipEntry { name: name.to_owned(), size: entry.size, crc32: entry.crc32, modified: entry.modified }
            })
            .collect()
    }

    /// The archive layout (exact length, byte ranges) for these entries.
    pub fn zip_layout(&self) -> Result<ZipLayout, ApiError> {
        ZipLayout::new(self.zip_entries())
    }

    /// The attachment's file name: the file's own name for one file; for several,
    /// `<common directory name>.zip`, or [`FALLBACK_ARCHIVE_NAME`] when the files share only
    /// the root.
    pub fn download_name(&self) -> String {
        if let [single] = self.entries.as_slice() {
            if let Some(name) = single.path.file_name() {
                return name.to_owned();
            }
        }
        match self.common_dir().file_name() {
            Some(dir) => format!("{dir}.zip"),
            None => FALLBACK_ARCHIVE_NAME.to_owned(),
        }
    }

    /// The `Content-Disposition: attachment` value (ASCII fallback plus `filename*`).
    pub fn content_disposition(&self) -> String {
        content_disposition_attachment(&self.download_name())
    }

    /// `application/zip` for an archive, the file's stored type for a single file.
    pub fn content_type(&self) -> &str {
        match self.entries.as_slice() {
            [single] => &single.content_type,
            _ => ZIP_CONTENT_TYPE,
        }
    }

    /// Strong ETag of the archive: a hash of the format version and every entry's name, ETag,
    /// size, CRC and modification time — everything the archive bytes depend on. Equal tags
    /// mean byte-identical archives, as `If-Range` requires; it does not depend on the plan id,
    /// so re-preparing the same files resumes too.
    pub fn archive_etag(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(ARCHIVE_FORMAT_TAG.as_bytes());
        hasher.update([0]);
        for (zip_entry, entry) in self.zip_entries().iter().zip(&self.entries) {
            // NUL cannot occur in names or ETags, so the fields cannot run into each other.
            hasher.update(zip_entry.name.as_bytes());
            hasher.update([0]);
            hasher.update(entry.etag.as_bytes());
            hasher.update([0]);
            hasher.update(format!("{}:{:08x}:{}", entry.size, entry.crc32, entry.modified).as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        format!("\"zip-{}\"", hex::encode(&digest[..16]))
    }

    /// The ETag of what is served: the file's own for one file, [`PreparedPlan::archive_etag`]
    /// for an archive.
    pub fn etag(&self) -> String {
        match self.entries.as_slice() {
            [single] => single.etag.clone(),
            _ => self.archive_etag(),
        }
    }

    /// `Last-Modified` of what is served: the newest file's modification time.
    pub fn last_modified(&self) -> u64 {
        self.entries.iter().map(|entry| entry.modified).max().unwrap_or(self.created)
    }

    /// The whole plan as one JSON document.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    /// Parses [`PreparedPlan::to_json_bytes`] output.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<PreparedPlan, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The head record of this plan stored in `parts` entry parts (see
    /// [`PreparedPlan::to_stored`], which calls it).
    pub fn head(&self, parts: u32) -> PlanHead {
        PlanHead {
            id: self.id.clone(),
            owner: self.owner.clone(),
            created: self.created,
            expires: self.expires,
            entry_count: self.entries.len(),
            parts,
            content_bytes: self.content_bytes(),
        }
    }

    /// Key/value pairs to store, in write order: the entry parts (each at most
    /// [`MAX_VALUE_BYTES`]) first, the head at [`plan_key`] last, so a reader that finds the
    /// head finds a complete plan.
    pub fn to_stored(&self) -> Vec<(String, Vec<u8>)> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut current = vec![b'['];
        for entry in &self.entries {
            let json = crate::json::to_bytes(entry);
            // +2: the separating comma and the closing bracket.
            if current.len() > 1 && current.len() + json.len() + 2 > MAX_VALUE_BYTES {
                current.push(b']');
                parts.push(std::mem::replace(&mut current, vec![b'[']));
            }
            if current.len() > 1 {
                current.push(b',');
            }
            current.extend_from_slice(&json);
        }
        current.push(b']');
        parts.push(current);
        let head = self.head(parts.len() as u32);
        let mut stored: Vec<(String, Vec<u8>)> = parts
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| (plan_part_key(&self.id, index as u32), bytes))
            .collect();
        stored.push((plan_key(&self.id), head.to_json_bytes()));
        stored
    }

    /// Reassembles a plan from its head and the values of [`PlanHead::part_keys`], in order.
    /// A missing, extra or unreadable part is `500 STORAGE_ERROR`.
    pub fn from_stored(head: &PlanHead, parts: &[Vec<u8>]) -> Result<PreparedPlan, ApiError> {
        let broken = |why: &str| ApiError::storage(format!("prepared download record is damaged: {why}"));
        if parts.len() != head.parts as usize {
            return Err(broken("wrong number of parts"));
        }
        let mut entries = Vec::with_capacity(head.entry_count);
        for part in parts {
            let chunk: Vec<PlanEntry> = serde_json::from_slice(part).map_err(|_| broken("unreadable part"))?;
            entries.extend(chunk);
        }
        if entries.len() != head.entry_count {
            return Err(broken("wrong number of entries"));
        }
        Ok(PreparedPlan {
            id: head.id.clone(),
            owner: head.owner.clone(),
            created: head.created,
            expires: head.expires,
            entries,
        })
    }
}

/// The small record at [`plan_key`]: enough to refuse a foreign or expired id without loading
/// the entries, and to find the parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHead {
    /// Canonical plan id.
    pub id: String,
    /// Principal that prepared it.
    pub owner: String,
    /// Unix seconds of the prepare request.
    pub created: u64,
    /// Unix seconds from which the id is expired.
    pub expires: u64,
    /// Number of entries across all parts.
    pub entry_count: usize,
    /// Number of entry parts (at least 1).
    pub parts: u32,
    /// Summed size of the files.
    pub content_bytes: u64,
}

impl PlanHead {
    /// Whether the plan has expired at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }

    /// `403 FORBIDDEN` unless `principal` prepared this plan.
    pub fn check_owner(&self, principal: &str) -> Result<(), ApiError> {
        check_owner(&self.owner, principal)
    }

    /// Keys of the entry parts, in order.
    pub fn part_keys(&self) -> Vec<String> {
        (0..self.parts).map(|index| plan_part_key(&self.id, index)).collect()
    }

    /// Serialises to the stored JSON form.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    /// Parses the stored JSON form.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<PlanHead, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

pub(crate) fn check_owner(owner: &str, principal: &str) -> Result<(), ApiError> {
    if owner == principal {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, "this download was prepared by another principal"))
    }
}

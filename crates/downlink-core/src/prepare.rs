//! Multi-file download plans: the two-step `prepare` → `multi` flow of `multi-download.md`.
//!
//! 1. `POST /api/download/prepare` sends a file list. [`parse_prepare_request`] reads JSON
//!    `{"Filelist": [...]}` or a form body `Filelist[]=...&Filelist[]=...` (HTTPie sends the
//!    former by default and the latter with `--form`), caps its size and count before looking
//!    at any path, and validates every path. The caller resolves each path in storage (a
//!    directory means its files, recursively), feeding the files to a [`PlanBuilder`], which
//!    collapses duplicates and enforces [`PlanLimits`]; missing paths are reported with
//!    [`missing_paths_error`]. The finished [`PreparedPlan`] is stored under a random id
//!    ([`new_plan_id`], [`plan_key`]) bound to the caller's principal, with an expiry.
//! 2. `POST|GET /api/download/multi?id=...` checks the id's shape ([`validate_plan_id`], `404`
//!    before any lookup), loads the plan, checks owner (`403`) and expiry (`410`), checks each
//!    file is unchanged ([`PlanEntry::check_current`], `409`), then streams one file or a ZIP
//!    laid out by [`PreparedPlan::zip_layout`].
//!
//! Plans are stored as a small head ([`PlanHead`], at [`plan_key`]) plus entry parts of at most
//! [`MAX_VALUE_BYTES`] each ([`plan_part_key`]): 10,000 entries with long paths are several MiB,
//! more than one key-value value may hold, and the head alone answers owner and expiry checks.
//!
//! Bytes served count towards a per-principal counter ([`bandwidth_key`]) with an optional
//! quota ([`check_quota`]).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::{BlobId, ChunkPlan, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::error::{ApiError, ErrorCode};
use crate::http::content_disposition_attachment;
use crate::meta::FileMeta;
use crate::path::{longest_common_dir, percent_decode_once, PathError, StoragePath};
use crate::storage::Storage;
use crate::zip::{ZipEntry, ZipLayout, ZIP_CONTENT_TYPE};

/// Largest prepare body accepted (`413 PAYLOAD_TOO_LARGE` above). 10,000 paths of typical
/// length fit with room to spare.
pub const MAX_PREPARE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Most paths one prepare request may list (`400 INVALID_REQUEST` above). Checked while
/// parsing, so a 100,000-entry body is refused after reading 10,001 entries and before any
/// path is validated or looked up.
pub const MAX_PREPARE_ENTRIES: usize = 10_000;

/// Default cap on files in one plan after directories are expanded. Above 65,535 so the
/// ZIP64-by-count path is reachable; below the point where a plan record gets unwieldy.
pub const MAX_PLAN_ENTRIES: usize = 100_000;

/// Default cap on the summed size of a plan's files (64 GiB); callers usually configure it.
pub const DEFAULT_MAX_PLAN_TOTAL_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Default lifetime of a prepare id: five minutes, per the spec.
pub const DEFAULT_PLAN_TTL_SECS: u64 = 300;

/// Archive name when the files share no directory (the reference's `ftpgrid_download.zip`).
pub const FALLBACK_ARCHIVE_NAME: &str = "downlink_download.zip";

/// Prefix of a plan's head record key.
pub const PLAN_KEY_PREFIX: &str = "prep:";

/// Prefix of per-principal bandwidth counter keys.
pub const BANDWIDTH_KEY_PREFIX: &str = "bw:";

const BANDWIDTH_HASHED_PREFIX: &str = "bw#";

/// Bumped whenever the archive bytes for the same entries would change (header layout, extra
/// fields), so an old `ETag` can never validate a resume against differently laid-out bytes.
const ARCHIVE_FORMAT_TAG: &str = "downlink-zip-v1";

/// How many paths an error message names before saying "and N more".
const MAX_PATHS_IN_MESSAGE: usize = 5;

// ---------------------------------------------------------------------------------------------
// Prepare bodies
// ---------------------------------------------------------------------------------------------

/// Reads the raw path strings from a prepare body, without validating them yet.
///
/// Accepted:
/// - JSON (`application/json`, `*+json`): `{"Filelist": ["/a", "/b"]}`; the key `"Filelist[]"`
///   is accepted too, and a single string stands for a one-element list (both are what
///   HTTPie's request-item syntax produces in some forms); other keys are ignored;
/// - forms (`application/x-www-form-urlencoded`): repeated `Filelist[]=`, `Filelist=` or
///   `Filelist[N]=` fields, keys and values percent-decoded once with `+` as space; a body that
///   starts with `{` is read as JSON anyway (`curl -d '{...}'` labels JSON as a form);
/// - no or another content type: JSON if the body starts with `{`, a form otherwise.
///
/// Errors: `413 PAYLOAD_TOO_LARGE` over [`MAX_PREPARE_BODY_BYTES`]; `400 INVALID_REQUEST` for
/// an empty body, multipart bodies, malformed JSON or form encoding, wrong types, a missing or
/// empty `Filelist`, or more than [`MAX_PREPARE_ENTRIES`] entries.
pub fn parse_prepare_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<String>, ApiError> {
    if body.len() > MAX_PREPARE_BODY_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("prepare body is {} bytes; the limit is {MAX_PREPARE_BODY_BYTES}", body.len()),
        ));
    }
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(ApiError::invalid_request(
            "empty body: send JSON {\"Filelist\": [\"/path\", ...]} or a form with Filelist[]=/path",
        ));
    };
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = match media_type.as_str() {
        "multipart/form-data" => {
            return Err(ApiError::invalid_request(
                "multipart bodies are not supported: send JSON {\"Filelist\": [...]} or \
                 application/x-www-form-urlencoded (HTTPie --form) with Filelist[]=/path",
            ))
        }
        "application/json" | "text/json" => true,
        other if other.ends_with("+json") => true,
        _ => first == b'{',
    };
    let list = if is_json { parse_json_body(body)? } else { parse_form_body(body)? };
    if list.is_empty() {
        return Err(ApiError::invalid_request("Filelist is empty: list at least one path"));
    }
    Ok(list)
}

/// Validates and normalises the raw paths of a prepare body; duplicates (after normalisation,
/// so `/a` and `a/` are the same) collapse to their first occurrence, keeping order.
///
/// `/` (the root, meaning every file) is allowed; an empty string is not. Every invalid path is
/// reported at once (up to a few by name) with `400 INVALID_PATH`.
pub fn validate_prepare_paths(raw: &[String]) -> Result<Vec<StoragePath>, ApiError> {
    let mut seen = HashSet::with_capacity(raw.len());
    let mut paths = Vec::with_capacity(raw.len());
    let mut bad: Vec<String> = Vec::new();
    for text in raw {
        let parsed = if text.is_empty() {
            Err("the path is empty".to_owned())
        } else {
            StoragePath::parse(text).map_err(|err| err.to_string())
        };
        match parsed {
            Ok(path) => {
                if seen.insert(path.clone()) {
                    paths.push(path);
                }
            }
            Err(why) => {
                bad.push(format!("{:?} ({why})", crate::text::for_message(text, crate::text::MESSAGE_NAME_BYTES)))
            }
        }
    }
    if bad.is_empty() {
        Ok(paths)
    } else {
        let noun = if bad.len() == 1 { "invalid path" } else { "invalid paths" };
        Err(ApiError::new(ErrorCode::InvalidPath, format!("{noun}: {}", name_some(&bad))))
    }
}

/// [`parse_prepare_body`] then [`validate_prepare_paths`]: the validated, de-duplicated list.
pub fn parse_prepare_request(content_type: Option<&str>, body: &[u8]) -> Result<Vec<StoragePath>, ApiError> {
    validate_prepare_paths(&parse_prepare_body(content_type, body)?)
}

/// `404 NOT_FOUND` naming the listed paths that do not exist (a few by name, then a count).
pub fn missing_paths_error(missing: &[StoragePath]) -> ApiError {
    let names: Vec<String> = missing
        .iter()
        .map(|path| format!("{:?}", crate::text::for_message(&format!("/{path}"), crate::text::MESSAGE_NAME_BYTES)))
        .collect();
    let noun = if missing.len() == 1 { "no such file or directory" } else { "no such files or directories" };
    ApiError::not_found(format!("{noun}: {}", name_some(&names)))
}

/// The prepare answer, exactly the reference's `{"rslt": "<id>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareResponse {
    /// The prepare id to pass to `/api/download/multi?id=`.
    pub rslt: String,
}

impl PrepareResponse {
    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

fn parse_json_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    match serde_json::from_slice::<PrepareJson>(body) {
        Ok(PrepareJson(list)) => Ok(list),
        Err(err) if err.is_data() => Err(ApiError::invalid_request(err.to_string())),
        Err(err) => Err(ApiError::invalid_request(format!("body is not valid JSON: {err}"))),
    }
}

/// `{"Filelist": [...]}`, parsed by hand so the entry cap stops parsing early and every
/// message says what was expected.
struct PrepareJson(Vec<String>);

impl<'de> Deserialize<'de> for PrepareJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PrepareJsonVisitor)
    }
}

struct PrepareJsonVisitor;

impl<'de> Visitor<'de> for PrepareJsonVisitor {
    type Value = PrepareJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object like {\"Filelist\": [\"/path\", ...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PrepareJson, A::Error> {
        let mut list = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Filelist" || key == "Filelist[]" {
                if list.is_some() {
                    return Err(de::Error::custom("\"Filelist\" is given more than once"));
                }
                list = Some(map.next_value::<FileList>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        list.map(PrepareJson)
            .ok_or_else(|| de::Error::custom("missing \"Filelist\": expected {\"Filelist\": [\"/path\", ...]}"))
    }
}

struct FileList(Vec<String>);

impl<'de> Deserialize<'de> for FileList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FileListVisitor)
    }
}

struct FileListVisitor;

impl<'de> Visitor<'de> for FileListVisitor {
    type Value = FileList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"Filelist\" to be an array of path strings")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<FileList, E> {
        Ok(FileList(vec![value.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileList, A::Error> {
        let mut list = Vec::new();
        loop {
            if list.len() == MAX_PREPARE_ENTRIES {
                // Look at one more element only, so huge lists stop here.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(too_many_entries_message()));
                }
                break;
            }
            match seq.next_element::<PathString>()? {
                Some(PathString(path)) => list.push(path),
                None => break,
            }
        }
        Ok(FileList(list))
    }
}

struct PathString(String);

impl<'de> Deserialize<'de> for PathString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PathStringVisitor)
    }
}

struct PathStringVisitor;

impl Visitor<'_> for PathStringVisitor {
    type Value = PathString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every \"Filelist\" entry to be a path string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<PathString, E> {
        Ok(PathString(value.to_owned()))
    }
}

fn too_many_entries_message() -> String {
    format!("Filelist has more than {MAX_PREPARE_ENTRIES} entries; list a directory instead or split the request")
}

fn parse_form_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::invalid_request("form body is not UTF-8"))?;
    let mut list = Vec::new();
    // Lazily split, so a huge body stops at the cap without decoding the rest.
    for pair in text.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_filelist_key(&form_decode(raw_key)?) {
            continue;
        }
        if list.len() == MAX_PREPARE_ENTRIES {
            return Err(ApiError::invalid_request(too_many_entries_message()));
        }
        list.push(form_decode(raw_value)?);
    }
    if list.is_empty() {
        return Err(ApiError::invalid_request(
            "missing Filelist: send Filelist[]=/path fields (or JSON {\"Filelist\": [...]})",
        ));
    }
    Ok(list)
}

/// `Filelist`, `Filelist[]` or `Filelist[<digits>]` (PHP-style indexed forms).
fn is_filelist_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("Filelist") else {
        return false;
    };
    match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(index) => index.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then `%XX` exactly once
/// (so `%2B` is a literal `+`).
fn form_decode(raw: &str) -> Result<String, ApiError> {
    let spaced = raw.replace('+', " ");
    percent_decode_once(&spaced).map_err(|err| {
        let why = match err {
            PathError::NotUtf8 => "a field is not UTF-8 once decoded",
            _ => "a `%` is not followed by two hex digits",
        };
        ApiError::invalid_request(format!("form body is not valid URL encoding: {why}"))
    })
}

fn name_some(items: &[String]) -> String {
    let shown = items.iter().take(MAX_PATHS_IN_MESSAGE).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > MAX_PATHS_IN_MESSAGE {
        format!("{shown} and {} more", items.len() - MAX_PATHS_IN_MESSAGE)
    } else {
        shown
    }
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

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
            modified: meta.modified,
            etag: meta.etag(),
            content_type: meta.content_type.clone(),
        }
    }

    /// The chunks to read for `len` bytes of this file's content from `offset` — what a
    /// [`crate::zip::Segment::Data`] (or a single-file range) asks for. `None` for an empty or
    /// out-of-bounds request.
    pub fn chunk_plan(&self, offset: u64, len: u64) -> Option<ChunkPlan> {
        let end = offset.checked_add(len)?.checked_sub(1)?;
        ChunkPlan::range(self.size, self.chunk_size, offset, end)
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

fn check_owner(owner: &str, principal: &str) -> Result<(), ApiError> {
    if owner == principal {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, "this download was prepared by another principal"))
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and keys
// ---------------------------------------------------------------------------------------------

/// A prepare id from 128 caller-supplied random bits: 32 lowercase hex digits.
pub fn new_plan_id(random: [u8; 16]) -> String {
    hex::encode(random)
}

/// The canonical form (32 lowercase hex digits) of a client-supplied prepare id, or
/// `404 NOT_FOUND` — the same answer as for an unknown id — for anything that is not 32 hex
/// digits or a hyphenated UUID, before any storage lookup.
pub fn validate_plan_id(raw: &str) -> Result<String, ApiError> {
    let not_found = || ApiError::not_found("no such prepared download");
    let bytes = raw.as_bytes();
    let hex_digits: String = match bytes.len() {
        32 => raw.to_owned(),
        36 => {
            // 8-4-4-4-12 with hyphens exactly at the UUID positions.
            let hyphens_ok = [8, 13, 18, 23].iter().all(|&at| bytes[at] == b'-');
            if !hyphens_ok {
                return Err(not_found());
            }
            raw.chars().filter(|c| *c != '-').collect()
        }
        _ => return Err(not_found()),
    };
    if hex_digits.len() != 32 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    Ok(hex_digits.to_ascii_lowercase())
}

/// Key of a plan's head record: `prep:<id>` (`id` canonical).
pub fn plan_key(id: &str) -> String {
    format!("{PLAN_KEY_PREFIX}{id}")
}

/// Key of a plan's entry part `index`: `prep:<id>:<index>`.
pub fn plan_part_key(id: &str, index: u32) -> String {
    format!("{PLAN_KEY_PREFIX}{id}:{index}")
}

/// Prepared plans in a key-value store: the one place that knows their keys and in which order
/// they are written (entry parts first, the head last, so a reader that finds the head finds a
/// complete plan) and deleted (the head first, so nobody finds a head whose parts are gone).
///
/// - [`PlanStore::store`]: a new plan from [`PlanBuilder::finish`].
/// - [`PlanStore::load`]: the plan behind a client's id, for that principal: `404` unknown,
///   `403` another principal's, `410` expired (its records are deleted then).
/// - [`PlanStore::sweep_expired`]: maintenance; deletes every expired plan.
pub struct PlanStore<'s, S: Storage + ?Sized> {
    storage: &'s S,
}

impl<'s, S: Storage + ?Sized> PlanStore<'s, S> {
    /// Plans in `storage`.
    pub fn new(storage: &'s S) -> Self {
        PlanStore { storage }
    }

    /// Stores `plan`: its parts, then its head.
    pub fn store(&self, plan: &PreparedPlan) -> Result<(), ApiError> {
        for (key, value) in plan.to_stored() {
            self.storage.set(&key, &value)?;
        }
        Ok(())
    }

    /// The plan `id` (canonical, see [`validate_plan_id`]) for `principal` at `now`.
    pub fn load(&self, id: &str, principal: &str, now: u64) -> Result<PreparedPlan, ApiError> {
        let not_found = || ApiError::not_found("no such prepared download");
        let head_bytes = self.storage.get(&plan_key(id))?.ok_or_else(not_found)?;
        let head = PlanHead::from_json_bytes(&head_bytes)
            .map_err(|_| ApiError::storage("prepared download record is damaged: unreadable head"))?;
        // Owner first (`403`), so another principal learns nothing about expiry.
        head.check_owner(principal)?;
        if head.is_expired(now) {
            self.delete(&head)?;
            return Err(ApiError::new(ErrorCode::Gone, "this prepared download has expired; prepare it again"));
        }
        let mut parts = Vec::with_capacity(head.parts as usize);
        for key in head.part_keys() {
            // A part vanishing under a live head means the plan was just deleted (expiry seen by
            // a concurrent request): the same answer as for an unknown id.
            parts.push(self.storage.get(&key)?.ok_or_else(not_found)?);
        }
        PreparedPlan::from_stored(&head, &parts)
    }

    /// Deletes every expired plan and returns how many. The key-value store has no TTL, so
    /// this is what reclaims plans nobody asked for again; it lists every key, so only
    /// maintenance calls it. Parts without a head are left alone: they may belong to a prepare
    /// still being written.
    pub fn sweep_expired(&self, now: u64) -> Result<u64, ApiError> {
        let mut swept = 0;
        for key in self.storage.list_keys()? {
            let Some(id) = key.strip_prefix(PLAN_KEY_PREFIX).filter(|id| !id.contains(':')) else { continue };
            let Some(bytes) = self.storage.get(&key)? else { continue };
            let Ok(head) = PlanHead::from_json_bytes(&bytes) else { continue };
            if head.id != id || !head.is_expired(now) {
                continue;
            }
            self.delete(&head)?;
            swept += 1;
        }
        Ok(swept)
    }

    /// Head first, then the parts.
    fn delete(&self, head: &PlanHead) -> Result<(), ApiError> {
        self.storage.delete(&plan_key(&head.id))?;
        for part in head.part_keys() {
            self.storage.delete(&part)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Bandwidth
// ---------------------------------------------------------------------------------------------

/// Key of a principal's bytes-sent counter: `bw:<principal>`; names that are not plain
/// printable ASCII or would make the key too long use `bw#<sha256 hex>` instead.
pub fn bandwidth_key(principal: &str) -> String {
    let plain = !principal.is_empty()
        && BANDWIDTH_KEY_PREFIX.len() + principal.len() <= MAX_KEY_BYTES
        && principal.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        format!("{BANDWIDTH_KEY_PREFIX}{principal}")
    } else {
        format!("{BANDWIDTH_HASHED_PREFIX}{}", hex::encode(Sha256::digest(principal.as_bytes())))
    }
}

/// Whether `about_to_send` more bytes fit a quota with `used` bytes already sent: `Ok` without
/// a quota or when `used + about_to_send <= quota`, else `429 QUOTA_EXCEEDED`. Checked for the
/// whole response (or range) before the first byte, so a download is never cut off midway.
pub fn check_quota(used: u64, about_to_send: u64, quota: Option<u64>) -> Result<(), ApiError> {
    let Some(quota) = quota else {
        return Ok(());
    };
    if used.checked_add(about_to_send).is_some_and(|total| total <= quota) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("bandwidth quota exceeded: {used} of {quota} bytes used, this download needs {about_to_send} more"),
    ))
}

/// A principal's bandwidth usage, the body of the usage endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthUsage {
    /// Principal name.
    pub principal: String,
    /// Bytes sent so far.
    pub bytes_sent: u64,
    /// The quota in bytes, `null` when unlimited.
    pub quota_bytes: Option<u64>,
    /// Bytes left under the quota, `null` when unlimited.
    pub remaining_bytes: Option<u64>,
}

impl BandwidthUsage {
    /// Usage for `principal` with `used` bytes sent under `quota`.
    pub fn new(principal: &str, used: u64, quota: Option<u64>) -> BandwidthUsage {
        BandwidthUsage {
            principal: principal.to_owned(),
            bytes_sent: used,
            quota_bytes: quota,
            remaining_bytes: quota.map(|quota| quota.saturating_sub(used)),
        }
    }

    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Origin;
    use std::time::Instant;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=utf-8");
    const JSON: Option<&str> = Some("application/json");

    fn p(raw: &str) -> StoragePath {
        StoragePath::parse(raw).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn assert_invalid(result: Result<Vec<String>, ApiError>, needle: &str) {
        let err = result.expect_err(needle);
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{}", err.message);
        assert_eq!(err.status(), 400);
        assert!(err.message.contains(needle), "message {:?} lacks {needle:?}", err.message);
    }

    // ---- bodies ----

    #[test]
    fn httpie_json_body_as_sent() {
        // Exactly what `http POST .../prepare Filelist[]="/documents/report.pdf" Filelist[]=...` sends.
        let body = br#"{"Filelist": ["/documents/report.pdf", "/documents/archive.xlsx"]}"#;
        assert_eq!(
            parse_prepare_body(JSON, body).unwrap(),
            strings(&["/documents/report.pdf", "/documents/archive.xlsx"])
        );
        // Same without a content type, with a charset, or as a vendor +json type.
        assert_eq!(parse_prepare_body(None, body).unwrap().len(), 2);
        assert_eq!(parse_prepare_body(Some("Application/JSON; charset=UTF-8"), body).unwrap().len(), 2);
        assert_eq!(parse_prepare_body(Some("application/vnd.api+json"), body).unwrap().len(), 2);
        // `curl -d '{...}'` labels JSON as a form.
        assert_eq!(parse_prepare_body(FORM, body).unwrap().len(), 2);
        assert_eq!(parse_prepare_body(Some("text/plain"), b"  \n{\"Filelist\":[\"/a\"]}").unwrap(), strings(&["/a"]));
    }

    #[test]
    fn httpie_form_body_as_sent() {
        // Exactly what `http --form POST ... Filelist[]="/documents/my report.pdf" Filelist[]="/documents/ü+x.xlsx"` sends.
        let body = b"Filelist%5B%5D=%2Fdocuments%2Fmy+report.pdf&Filelist%5B%5D=%2Fdocuments%2F%C3%BC%2Bx.xlsx";
        assert_eq!(
            parse_prepare_body(FORM, body).unwrap(),
            strings(&["/documents/my report.pdf", "/documents/ü+x.xlsx"])
        );
        // Without a content type the body is sniffed as a form.
        assert_eq!(parse_prepare_body(None, body).unwrap().len(), 2);
    }

    #[test]
    fn other_form_and_json_shapes() {
        assert_eq!(parse_prepare_body(FORM, b"Filelist[]=/a&Filelist[]=/b%20c").unwrap(), strings(&["/a", "/b c"]));
        assert_eq!(parse_prepare_body(FORM, b"Filelist[0]=/a&Filelist[1]=/b").unwrap(), strings(&["/a", "/b"]));
        assert_eq!(parse_prepare_body(FORM, b"Filelist=/a").unwrap(), strings(&["/a"]));
        // Other fields and empty pairs are ignored; look-alike keys do not count.
        assert_eq!(
            parse_prepare_body(
                FORM,
                b"x=1&&Filelist[]=/a&filelist[]=/no&Filelist[x]=/no&Filelists=/no&Filelist[]]=/no"
            )
            .unwrap(),
            strings(&["/a"])
        );
        // A key without `=` is an empty value (later an invalid path), not a crash.
        assert_eq!(parse_prepare_body(FORM, b"Filelist[]").unwrap(), strings(&[""]));
        // `%2B` is a literal plus, `+` a space, decoded once only.
        assert_eq!(parse_prepare_body(FORM, b"Filelist[]=a%2Bb+c%2520").unwrap(), strings(&["a+b c%20"]));
        // JSON: a single string (HTTPie `Filelist=/a`), the `Filelist[]` key, unknown keys.
        assert_eq!(parse_prepare_body(JSON, br#"{"Filelist": "/a"}"#).unwrap(), strings(&["/a"]));
        assert_eq!(parse_prepare_body(JSON, br#"{"Filelist[]": ["/a", "/b"]}"#).unwrap().len(), 2);
        assert_eq!(
            parse_prepare_body(JSON, br#"{"x": {"deep": [1, {"y": null}]}, "Filelist": ["/a"], "z": 1}"#).unwrap(),
            strings(&["/a"])
        );
        // JSON strings are paths verbatim: no percent-decoding.
        assert_eq!(
            parse_prepare_body(JSON, br#"{"Filelist": ["/My%20Docs", "/\u00e9"]}"#).unwrap(),
            strings(&["/My%20Docs", "/é"])
        );
    }

    #[test]
    fn bad_bodies_are_clear_400s() {
        assert_invalid(parse_prepare_body(JSON, b""), "empty body");
        assert_invalid(parse_prepare_body(None, b" \r\n\t"), "empty body");
        assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"/a\""), "not valid JSON");
        assert_invalid(parse_prepare_body(JSON, b"{Filelist: []}"), "not valid JSON");
        assert_invalid(parse_prepare_body(JSON, b"not json"), "not valid JSON");
        assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"/a\"]} trailing"), "not valid JSON");
        assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"\xff\"]}"), "not valid JSON");
        assert_invalid(parse_prepare_body(JSON, br#"["/a"]"#), "a JSON object like");
        assert_invalid(parse_prepare_body(JSON, br#""/a""#), "a JSON object like");
        assert_invalid(parse_prepare_body(JSON, b"null"), "a JSON object like");
        assert_invalid(parse_prepare_body(JSON, b"42"), "a JSON object like");
        for body in
            [r#"{"Filelist": 5}"#, r#"{"Filelist": null}"#, r#"{"Filelist": {"a": "/b"}}"#, r#"{"Filelist": true}"#]
        {
            assert_invalid(parse_prepare_body(JSON, body.as_bytes()), "array of path strings");
        }
        for body in [
            r#"{"Filelist": [1]}"#,
            r#"{"Filelist": ["/a", null]}"#,
            r#"{"Filelist": [["/a"]]}"#,
            r#"{"Filelist": [{"p": "/a"}]}"#,
        ] {
            assert_invalid(parse_prepare_body(JSON, body.as_bytes()), "path string");
        }
        assert_invalid(parse_prepare_body(JSON, b"{}"), "missing \"Filelist\"");
        assert_invalid(parse_prepare_body(JSON, br#"{"filelist": ["/a"]}"#), "missing \"Filelist\"");
        assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": []}"#), "empty");
        assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": ["/a"], "Filelist": ["/b"]}"#), "more than once");
        assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": ["/a"], "Filelist[]": ["/b"]}"#), "more than once");
        assert_invalid(parse_prepare_body(Some("multipart/form-data; boundary=x"), b"--x\r\n"), "multipart");
        assert_invalid(parse_prepare_body(FORM, b"a=1&b=2"), "missing Filelist");
        assert_invalid(parse_prepare_body(FORM, b"Filelist[]=%zz"), "URL encoding");
        assert_invalid(parse_prepare_body(FORM, b"Filelist[]=%ff"), "URL encoding");
        assert_invalid(parse_prepare_body(FORM, b"Filelist[]=\xff"), "not UTF-8");
        // Deep nesting neither overflows the stack in an ignored field (skipped iteratively)
        // nor inside Filelist (refused at the first nested array).
        let deep = format!("{{\"x\": {}{}, \"Filelist\": [\"/a\"]}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_prepare_body(JSON, deep.as_bytes()).unwrap(), strings(&["/a"]));
        let deep = format!("{{\"Filelist\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_invalid(parse_prepare_body(JSON, deep.as_bytes()), "path string");
        let unclosed = format!("{{\"x\": {}", "{\"a\":".repeat(100_000));
        assert_invalid(parse_prepare_body(JSON, unclosed.as_bytes()), "not valid JSON");
    }

    #[test]
    fn body_size_cap_is_413() {
        let body = vec![b' '; MAX_PREPARE_BODY_BYTES + 1];
        let err = parse_prepare_body(JSON, &body).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::PayloadTooLarge, 413));
        // Exactly at the cap is parsed (and then found empty).
        assert_invalid(parse_prepare_body(JSON, &vec![b' '; MAX_PREPARE_BODY_BYTES]), "empty body");
    }

    #[test]
    fn entry_cap_is_exact_and_checked_before_paths() {
        let json_list =
            |n: usize, path: &str| format!("{{\"Filelist\": [{}]}}", vec![format!("\"{path}\""); n].join(","));
        let at_cap = parse_prepare_body(JSON, json_list(MAX_PREPARE_ENTRIES, "/a").as_bytes()).unwrap();
        assert_eq!(at_cap.len(), MAX_PREPARE_ENTRIES);
        assert_invalid(
            parse_prepare_body(JSON, json_list(MAX_PREPARE_ENTRIES + 1, "/a").as_bytes()),
            "more than 10000",
        );
        // 100,000 invalid paths: refused for the count, quickly, without validating any path.
        let huge = json_list(100_000, "/../x");
        assert!(huge.len() < MAX_PREPARE_BODY_BYTES);
        let started = Instant::now();
        let err = parse_prepare_request(JSON, huge.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{}", err.message);
        assert!(err.message.contains("more than 10000"));
        assert!(started.elapsed().as_secs_f64() < 2.0, "{:?}", started.elapsed());
        // The same for forms.
        let form = vec!["Filelist%5B%5D=%2F..%2Fx"; 100_000].join("&");
        let started = Instant::now();
        let err = parse_prepare_request(FORM, form.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(started.elapsed().as_secs_f64() < 2.0);
        let form_at_cap = vec!["Filelist[]=/a"; MAX_PREPARE_ENTRIES].join("&");
        assert_eq!(parse_prepare_body(FORM, form_at_cap.as_bytes()).unwrap().len(), MAX_PREPARE_ENTRIES);
        // Non-Filelist fields do not count towards the cap.
        let padded = format!("{}&Filelist[]=/a", vec!["x=1"; 20_000].join("&"));
        assert_eq!(parse_prepare_body(FORM, padded.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn paths_are_validated_normalised_and_deduplicated() {
        let paths =
            validate_prepare_paths(&strings(&["/b/x.txt", "/a", "a", "a/", "/a/", "/b/x.txt", "/Été 2024/🎉 a.jpg"]))
                .unwrap();
        assert_eq!(paths, vec![p("b/x.txt"), p("a"), p("Été 2024/🎉 a.jpg")]);
        assert_eq!(validate_prepare_paths(&strings(&["/"])).unwrap(), vec![StoragePath::root()]);
        let err = validate_prepare_paths(&strings(&["/ok", "/../etc/passwd"])).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::InvalidPath, 400));
        assert!(err.message.contains("\"/../etc/passwd\""), "{}", err.message);
        assert!(err.message.contains("`..`"), "{}", err.message);
        let err = validate_prepare_paths(&strings(&[""])).unwrap_err();
        assert!(err.message.contains("empty"), "{}", err.message);
        // Several bad paths: a few by name, then a count; control characters are escaped.
        let bad: Vec<String> = (0..8).map(|i| format!("/a\0{i}")).collect();
        let err = validate_prepare_paths(&bad).unwrap_err();
        assert!(err.message.starts_with("invalid paths: "), "{}", err.message);
        assert!(err.message.ends_with("and 3 more"), "{}", err.message);
        assert!(!err.message.contains('\0'));
        // Very long bad paths are shortened in the message.
        let long = format!("/{}/..", "é".repeat(2000));
        assert!(validate_prepare_paths(&[long]).unwrap_err().message.len() < 400);
        for bad in ["a//b", "a\\b", "/x/./y", "//"] {
            assert_eq!(validate_prepare_paths(&strings(&[bad])).unwrap_err().code, ErrorCode::InvalidPath, "{bad}");
        }
    }

    #[test]
    fn missing_paths_are_a_404_naming_them() {
        let err = missing_paths_error(&[p("documents/report.pdf")]);
        assert_eq!((err.code, err.status()), (ErrorCode::NotFound, 404));
        assert_eq!(err.message, "no such file or directory: \"/documents/report.pdf\"");
        let many: Vec<StoragePath> = (0..7).map(|i| p(&format!("f{i}"))).collect();
        let err = missing_paths_error(&many);
        assert!(err.message.contains("\"/f0\"") && err.message.ends_with("and 2 more"), "{}", err.message);
    }

    #[test]
    fn prepare_response_is_the_reference_shape() {
        let body = PrepareResponse { rslt: "8e9f6c7b4a2d".into() }.to_json_bytes();
        assert_eq!(body, br#"{"rslt":"8e9f6c7b4a2d"}"#);
    }

    // ---- plans ----

    fn meta(path: &str, content: &[u8], blob: &str) -> FileMeta {
        FileMeta {
            path: p(path),
            size: content.len() as u64,
            crc32: crc32fast::hash(content),
            content_type: crate::meta::content_type_for(path).to_owned(),
            created: 1_700_000_000,
            modified: 1_700_000_100,
            origin: Origin::Upload,
            blob_id: BlobId::new(blob).unwrap(),
            chunk_size: 1024 * 1024,
            sha256: None,
            replaces: None,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn plan(paths: &[&str]) -> PreparedPlan {
        let mut builder = PlanBuilder::new(PlanLimits::default());
        for (i, path) in paths.iter().enumerate() {
            assert!(builder.push(PlanEntry::from_meta(&meta(path, path.as_bytes(), &format!("blob{i}")))).unwrap());
        }
        builder.finish(ID, "alice", 1_000, DEFAULT_PLAN_TTL_SECS).unwrap()
    }

    #[test]
    fn builder_dedups_and_enforces_limits() {
        let mut builder = PlanBuilder::new(PlanLimits { max_entries: 2, max_total_bytes: 10 });
        assert!(builder.push(PlanEntry::from_meta(&meta("a", b"12345", "b1"))).unwrap());
        assert!(!builder.push(PlanEntry::from_meta(&meta("a", b"12345", "b1"))).unwrap());
        assert!(builder.contains(&p("a")));
        assert_eq!((builder.len(), builder.total_bytes()), (1, 5));
        let err = builder.push(PlanEntry::from_meta(&meta("b", b"123456", "b2"))).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::FileTooLarge, 413));
        assert_eq!(builder.len(), 1, "a refused entry is not added");
        assert!(builder.push(PlanEntry::from_meta(&meta("b", b"12345", "b2"))).unwrap());
        let err = builder.push(PlanEntry::from_meta(&meta("c", b"", "b3"))).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("more than 2 files"));
        // A duplicate at the limit is still just a duplicate.
        assert!(!builder.push(PlanEntry::from_meta(&meta("b", b"12345", "b2"))).unwrap());
        // Sizes near u64::MAX saturate instead of wrapping under the limit.
        let mut big = PlanBuilder::new(PlanLimits { max_entries: 10, max_total_bytes: u64::MAX - 1 });
        let mut huge = PlanEntry::from_meta(&meta("h", b"", "h1"));
        huge.size = u64::MAX - 1;
        assert!(big.push(huge.clone()).unwrap());
        huge.path = p("h2");
        assert_eq!(big.push(huge).unwrap_err().code, ErrorCode::FileTooLarge);
    }

    #[test]
    fn finish_checks_emptiness_ids_and_names() {
        let empty = PlanBuilder::new(PlanLimits::default());
        let err = empty.finish(ID, "alice", 0, 300).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let mut builder = PlanBuilder::new(PlanLimits::default());
        builder.push(PlanEntry::from_meta(&meta("a", b"x", "b1"))).unwrap();
        assert_eq!(builder.clone().finish("short", "alice", 0, 300).unwrap_err().status(), 500);
        let plan = builder.finish(&ID.to_ascii_uppercase(), "alice", 100, 300).unwrap();
        assert_eq!(plan.id, ID);
        assert_eq!((plan.created, plan.expires), (100, 400));
        let forever = {
            let mut b = PlanBuilder::new(PlanLimits::default());
            b.push(PlanEntry::from_meta(&meta("a", b"x", "b1"))).unwrap();
            b.finish(ID, "alice", u64::MAX - 5, 300).unwrap()
        };
        assert_eq!(forever.expires, u64::MAX);
    }

    #[test]
    fn archive_names_are_relative_to_the_common_directory() {
        let photos = plan(&["photos/2024/a.jpg", "photos/2024/sub/b.jpg", "photos/2024/sub/deeper/c d.jpg"]);
        assert!(photos.is_archive());
        assert_eq!(photos.common_dir(), p("photos/2024"));
        let names: Vec<String> = photos.zip_entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a.jpg", "sub/b.jpg", "sub/deeper/c d.jpg"]);
        assert_eq!(photos.download_name(), "2024.zip");
        assert_eq!(photos.content_type(), "application/zip");
        let spread = plan(&["a/x.txt", "b/y.txt", "top.txt"]);
        let names: Vec<String> = spread.zip_entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a/x.txt", "b/y.txt", "top.txt"]);
        assert_eq!(spread.download_name(), FALLBACK_ARCHIVE_NAME);
        assert_eq!(
            spread.content_disposition(),
            "attachment; filename=\"downlink_download.zip\"; filename*=UTF-8''downlink_download.zip"
        );
        // Segment-wise common directory: "ab" and "abc" share only the root.
        let names: Vec<String> = plan(&["ab/x", "abc/y"]).zip_entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["ab/x", "abc/y"]);
        // A file next to a directory of the same prefix: names stay distinct.
        let names: Vec<String> =
            plan(&["d/report", "d/report 2/x"]).zip_entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["report", "report 2/x"]);
        let utf8 = plan(&["Été 2024/a b.txt", "Été 2024/c.txt"]);
        assert_eq!(utf8.download_name(), "Été 2024.zip");
        assert_eq!(
            utf8.content_disposition(),
            "attachment; filename=\"_t_ 2024.zip\"; filename*=UTF-8''%C3%89t%C3%A9%202024.zip"
        );
        let layout = photos.zip_layout().unwrap();
        assert_eq!(layout.entry_count(), 3);
        assert_eq!(layout.entry(2).unwrap().crc32, crc32fast::hash(b"photos/2024/sub/deeper/c d.jpg"));
    }

    #[test]
    fn single_file_plans_serve_the_file_itself() {
        let single = plan(&["documents/my report.pdf"]);
        assert!(!single.is_archive());
        assert_eq!(single.download_name(), "my report.pdf");
        assert_eq!(single.content_type(), "application/pdf");
        assert_eq!(single.etag(), single.entries[0].etag);
        assert_eq!(single.last_modified(), 1_700_000_100);
        assert_eq!(single.zip_entries()[0].name, "my report.pdf");
    }

    #[test]
    fn archive_etag_tracks_exactly_what_shapes_the_bytes() {
        let base = plan(&["d/a", "d/b"]);
        let etag = base.archive_etag();
        assert!(etag.starts_with("\"zip-") && etag.ends_with('"') && etag.len() == 2 + 4 + 32, "{etag}");
        assert_eq!(base.etag(), etag);
        // Same files under another id or owner: same bytes, same tag (resume across re-prepare).
        let mut other = base.clone();
        other.id = "f".repeat(32);
        other.owner = "bob".into();
        other.created += 50;
        other.expires += 50;
        assert_eq!(other.archive_etag(), etag);
        let changed = |f: &dyn Fn(&mut PreparedPlan)| {
            let mut plan = base.clone();
            f(&mut plan);
            plan.archive_etag()
        };
        assert_ne!(changed(&|pl| pl.entries.swap(0, 1)), etag, "order");
        assert_ne!(changed(&|pl| pl.entries[0].etag = "\"other\"".into()), etag, "file etag");
        assert_ne!(changed(&|pl| pl.entries[0].modified += 1), etag, "mtime");
        assert_ne!(changed(&|pl| pl.entries[0].size += 1), etag, "size");
        assert_ne!(changed(&|pl| pl.entries[0].crc32 ^= 1), etag, "crc");
        assert_ne!(changed(&|pl| pl.entries[0].path = p("d/c")), etag, "name");
        // Moving both files to another directory keeps names (relative) but not the tag? The
        // names are the same and so are the bytes, so the tag is the same.
        assert_eq!(
            changed(&|pl| {
                pl.entries[0].path = p("e/a");
                pl.entries[1].path = p("e/b");
            }),
            etag
        );
    }

    #[test]
    fn owner_and_expiry() {
        let plan = plan(&["a", "b"]);
        assert_eq!(plan.expires, 1_300);
        assert!(!plan.is_expired(1_299));
        assert!(plan.is_expired(1_300));
        assert!(plan.check_owner("alice").is_ok());
        let err = plan.check_owner("alicE").unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::Forbidden, 403));
        let head = plan.head(1);
        assert_eq!(head.check_owner("bob").unwrap_err().status(), 403);
        assert!(head.is_expired(1_300) && !head.is_expired(1_299));
    }

    #[test]
    fn chunk_plans_for_data_segments() {
        let mut entry = PlanEntry::from_meta(&meta("a", &[7; 10], "b1"));
        entry.chunk_size = 4;
        let plan = entry.chunk_plan(3, 6).unwrap();
        assert_eq!(plan.remaining_bytes(), 6);
        let slices: Vec<_> = plan.map(|s| (s.index, s.start, s.end, s.expected_len)).collect();
        assert_eq!(slices, [(0, 3, 4, 4), (1, 0, 4, 4), (2, 0, 1, 2)]);
        assert!(entry.chunk_plan(0, 0).is_none());
        assert!(entry.chunk_plan(5, 6).is_none(), "past the end");
        assert!(entry.chunk_plan(u64::MAX, 2).is_none());
        assert_eq!(entry.chunk_plan(0, 10).unwrap().remaining_bytes(), 10);
    }

    #[test]
    fn check_current_detects_deleted_and_changed_files() {
        let original = meta("docs/a.txt", b"hello", "b1");
        let entry = PlanEntry::from_meta(&original);
        assert!(entry.check_current(Some(&original)).is_ok());
        let err = entry.check_current(None).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::Conflict, 409));
        assert!(err.message.contains("\"/docs/a.txt\" was deleted"), "{}", err.message);
        let rewritten = meta("docs/a.txt", b"hello", "b2");
        assert!(entry.check_current(Some(&rewritten)).unwrap_err().message.contains("changed"));
        let mut touched = original.clone();
        touched.modified += 1;
        assert_eq!(entry.check_current(Some(&touched)).unwrap_err().status(), 409);
        let mut resized = original.clone();
        resized.size += 1;
        assert_eq!(entry.check_current(Some(&resized)).unwrap_err().status(), 409);
        // Content type changes do not alter the bytes served.
        let mut retyped = original;
        retyped.content_type = "text/x-other".into();
        assert!(entry.check_current(Some(&retyped)).is_ok());
    }

    #[test]
    fn plan_json_round_trips_and_validates() {
        let plan = plan(&["a b/ü.txt", "a b/c.txt"]);
        let json = plan.to_json_bytes();
        assert_eq!(PreparedPlan::from_json_bytes(&json).unwrap(), plan);
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains("\"blob_id\":\"blob0\""), "{text}");
        assert!(PreparedPlan::from_json_bytes(text.replace("a b/c.txt", "a b/../c.txt").as_bytes()).is_err());
        assert!(PreparedPlan::from_json_bytes(text.replace("blob0", "bad:blob").as_bytes()).is_err());
        assert!(PreparedPlan::from_json_bytes(b"{}").is_err());
    }

    #[test]
    fn stored_form_splits_into_bounded_parts() {
        // 10,000 entries with long paths: far more than one value holds.
        let mut builder = PlanBuilder::new(PlanLimits::default());
        let long_dir = vec!["segment-name-that-is-long"; 30].join("/");
        for i in 0..MAX_PREPARE_ENTRIES {
            let path = format!("{long_dir}/file {i}.bin");
            builder.push(PlanEntry::from_meta(&meta(&path, path.as_bytes(), &format!("blob-{i}")))).unwrap();
        }
        let plan = builder.finish(ID, "alice", 10, 300).unwrap();
        let stored = plan.to_stored();
        let (head_key, head_bytes) = stored.last().unwrap();
        assert_eq!(head_key, &format!("prep:{ID}"));
        let head = PlanHead::from_json_bytes(head_bytes).unwrap();
        assert_eq!(head.entry_count, MAX_PREPARE_ENTRIES);
        assert!(head.parts > 5, "{}", head.parts);
        assert_eq!(stored.len(), head.parts as usize + 1);
        assert_eq!(head.content_bytes, plan.content_bytes());
        let mut parts = Vec::new();
        for ((key, value), expected_key) in stored.iter().zip(head.part_keys()) {
            assert_eq!(key, &expected_key);
            assert!(value.len() <= MAX_VALUE_BYTES, "{}", value.len());
            assert!(key.len() <= MAX_KEY_BYTES);
            parts.push(value.clone());
        }
        assert_eq!(head.part_keys().len() + 1, stored.len(), "the head is written last");
        assert_eq!(PreparedPlan::from_stored(&head, &parts).unwrap(), plan);
        // Damage is a storage error, never a silently shorter plan.
        assert_eq!(PreparedPlan::from_stored(&head, &parts[1..]).unwrap_err().code, ErrorCode::StorageError);
        let mut corrupt = parts.clone();
        corrupt[1].truncate(10);
        assert_eq!(PreparedPlan::from_stored(&head, &corrupt).unwrap_err().code, ErrorCode::StorageError);
        let mut wrong_count = head.clone();
        wrong_count.entry_count += 1;
        assert_eq!(PreparedPlan::from_stored(&wrong_count, &parts).unwrap_err().code, ErrorCode::StorageError);
        // A small plan is one part.
        let small = self::plan(&["x", "y"]);
        let stored = small.to_stored();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].0, format!("prep:{ID}:0"));
        let head = PlanHead::from_json_bytes(&stored[1].1).unwrap();
        assert_eq!(PreparedPlan::from_stored(&head, &[stored[0].1.clone()]).unwrap(), small);
    }

    #[test]
    fn the_plan_store_loads_for_the_owner_and_deletes_expired_plans() {
        use crate::storage::MemoryStorage;
        let storage = MemoryStorage::new();
        let plans = PlanStore::new(&storage);
        let expiring = self::plan(&["x", "y"]); // created 1000, expires 1300
        plans.store(&expiring).unwrap();
        assert_eq!(plans.load(ID, "alice", 1_299).unwrap(), expiring);
        assert_eq!(plans.load("ffffffffffffffffffffffffffffffff", "alice", 1_000).unwrap_err().status(), 404);
        // Another principal gets 403 whether or not the plan expired, and deletes nothing.
        assert_eq!(plans.load(ID, "bob", 1_299).unwrap_err().status(), 403);
        assert_eq!(plans.load(ID, "bob", 9_999).unwrap_err().status(), 403);
        let gone = plans.load(ID, "alice", 1_300).unwrap_err();
        assert_eq!((gone.code, gone.status()), (ErrorCode::Gone, 410));
        assert!(storage.keys().is_empty(), "an expired plan is deleted when seen: {:?}", storage.keys());
        assert_eq!(plans.load(ID, "alice", 1_300).unwrap_err().status(), 404, "then it is unknown");

        plans.store(&expiring).unwrap();
        storage.set("prep:orphan:0", b"[]").unwrap(); // a prepare still writing its parts
        storage.set("file:x", b"{}").unwrap();
        assert_eq!(plans.sweep_expired(1299).unwrap(), 0);
        assert_eq!(plans.sweep_expired(1300).unwrap(), 1);
        assert_eq!(storage.keys(), ["file:x", "prep:orphan:0"]);
    }

    // ---- ids, keys, quotas ----

    #[test]
    fn plan_ids() {
        let id = new_plan_id([0xAB; 16]);
        assert_eq!(id, "ab".repeat(16));
        assert_eq!(validate_plan_id(&id).unwrap(), id);
        assert_eq!(validate_plan_id(&id.to_ascii_uppercase()).unwrap(), id);
        assert_eq!(
            validate_plan_id("123E4567-E89B-12D3-A456-426614174000").unwrap(),
            "123e4567e89b12d3a456426614174000"
        );
        let thirty_two_bytes_of_utf8 = "é".repeat(16);
        let misplaced = "123e4567e-89b-12d3-a456-426614174000";
        let hex36 = "0".repeat(36);
        let uuid_with_g = "123e4567-e89b-12d3-a456-42661417400g";
        for bad in [
            "",
            "8e9f6c7b4a2d",
            &id[..31],
            &format!("{id}0"),
            &format!("{}g", &id[..31]),
            misplaced,
            hex36.as_str(),
            uuid_with_g,
            thirty_two_bytes_of_utf8.as_str(),
            "../../../../../../../../etc/pass",
            " 0123456789abcdef0123456789abcde",
            "prep:0123456789abcdef0123456789ab",
            "----------------------------------------",
        ] {
            let err = validate_plan_id(bad).unwrap_err();
            assert_eq!((err.code, err.status()), (ErrorCode::NotFound, 404), "{bad:?}");
            assert_eq!(err.message, "no such prepared download");
        }
        assert_eq!(plan_key(&id), format!("prep:{id}"));
        assert_eq!(plan_part_key(&id, 3), format!("prep:{id}:3"));
    }

    #[test]
    fn bandwidth_keys() {
        assert_eq!(bandwidth_key("alice"), "bw:alice");
        assert_eq!(bandwidth_key("ci-bot_2"), "bw:ci-bot_2");
        for odd in ["", "with space", "ünï", "tab\t", &"x".repeat(300)] {
            let key = bandwidth_key(odd);
            assert!(key.starts_with("bw#") && key.len() == 3 + 64, "{odd:?} → {key}");
        }
        assert_ne!(bandwidth_key("a b"), bandwidth_key("a  b"));
        assert_eq!(bandwidth_key(&"y".repeat(MAX_KEY_BYTES - 3)), format!("bw:{}", "y".repeat(MAX_KEY_BYTES - 3)));
    }

    #[test]
    fn quotas() {
        assert!(check_quota(u64::MAX, u64::MAX, None).is_ok());
        assert!(check_quota(0, 100, Some(100)).is_ok());
        assert!(check_quota(60, 40, Some(100)).is_ok());
        assert!(check_quota(100, 0, Some(100)).is_ok());
        let err = check_quota(60, 41, Some(100)).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::QuotaExceeded, 429));
        assert!(err.message.contains("60 of 100"), "{}", err.message);
        assert!(check_quota(101, 0, Some(100)).is_err(), "already over");
        assert!(check_quota(u64::MAX, 1, Some(u64::MAX)).is_err(), "no wrap-around");
        assert!(check_quota(0, 1, Some(0)).is_err());
        let usage = BandwidthUsage::new("alice", 60, Some(100));
        assert_eq!(
            String::from_utf8(usage.to_json_bytes()).unwrap(),
            r#"{"principal":"alice","bytes_sent":60,"quota_bytes":100,"remaining_bytes":40}"#
        );
        let over = BandwidthUsage::new("alice", 160, Some(100));
        assert_eq!(over.remaining_bytes, Some(0));
        let unlimited = BandwidthUsage::new("bob", 5, None);
        assert_eq!(
            String::from_utf8(unlimited.to_json_bytes()).unwrap(),
            r#"{"principal":"bob","bytes_sent":5,"quota_bytes":null,"remaining_bytes":null}"#
        );
    }
}

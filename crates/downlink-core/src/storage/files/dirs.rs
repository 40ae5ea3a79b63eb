//! Directories and records: reading records, listing and walking directories, deleting files and trees.

use super::{cas_update, CasStep, Storage};
use crate::blob::{dir_index_key, meta_key, MAX_VALUE_BYTES};
use crate::error::{ApiError, ErrorCode};
use crate::http::if_match_passes;
use crate::meta::{DirIndex, EntryKind, FileMeta};
use crate::path::StoragePath;

use super::*;

/// Ensures no ancestor of `path` is a file and `path` is not already the other kind.
pub(crate) fn check_kinds<S: Storage + ?Sized>(
    storage: &S,
    path: &StoragePath,
    kind: EntryKind,
) -> Result<(), ApiError> {
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
pub(crate) fn link_ancestors<S: Storage + ?Sized>(storage: &S, path: &StoragePath) -> Result<(), ApiError> {
    let ancestors = path.ancestors();
    for pair in ancestors.windows(2) {
        let name = pair[1].file_name().unwrap_or_default();
        insert_entry(storage, &pair[0], name, EntryKind::Dir)?;
    }
    Ok(())
}

pub(crate) fn parse_index(dir: &StoragePath, bytes: Option<&[u8]>) -> Result<DirIndex, ApiError> {
    match bytes {
        None => Ok(DirIndex::new()),
        Some(bytes) => DirIndex::from_json_bytes(bytes)
            .map_err(|_| ApiError::storage(format!("the index of directory `/{dir}` is corrupt"))),
    }
}

pub(crate) fn read_index<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Option<DirIndex>, ApiError> {
    match storage.get(&dir_index_key(dir))? {
        None => Ok(None),
        Some(bytes) => parse_index(dir, Some(&bytes)).map(Some),
    }
}

/// Why a name cannot go into a directory index.
pub(crate) enum EntryRefused {
    /// The name is already a file or directory of the other kind.
    Taken(EntryKind),
    /// The index would outgrow one value.
    Full,
}

impl EntryRefused {
    pub(crate) fn into_error(self, dir: &StoragePath, name: &str) -> ApiError {
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
pub(crate) fn try_insert_entry<S: Storage + ?Sized>(
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
pub(crate) fn insert_entry<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    name: &str,
    kind: EntryKind,
) -> Result<bool, ApiError> {
    try_insert_entry(storage, dir, name, kind)?.map_err(|refused| refused.into_error(dir, name))
}

/// Removes `name` from `dir`'s index; `true` if it was there.
pub(crate) fn remove_entry<S: Storage + ?Sized>(storage: &S, dir: &StoragePath, name: &str) -> Result<bool, ApiError> {
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
pub(crate) fn list_existing_dir<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
) -> Result<Option<Vec<Entry>>, ApiError> {
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

pub(crate) fn walk_into<S: Storage + ?Sized>(
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
    let _ = discard_content(storage, &meta, None);
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

pub(crate) fn delete_tree<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    summary: &mut DeleteSummary,
) -> Result<(), ApiError> {
    for entry in list_existing_dir(storage, dir)?.unwrap_or_default() {
        match entry {
            Entry::File(meta) => {
                storage.retire(&meta_key(&meta.path))?;
                let _ = discard_content(storage, &meta, None);
                summary.files += 1;
            }
            Entry::Dir(child) => delete_tree(storage, &child, summary)?,
        }
    }
    storage.retire(&dir_index_key(dir))?;
    summary.dirs += 1;
    Ok(())
}

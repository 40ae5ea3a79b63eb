//! Directories and records: reading records, listing and walking directories, deleting files and trees.

use super::index::{insert_entry, remove_entry, IndexCursor};
use super::Storage;
use crate::blob::{dir_index_key, meta_key};
use crate::error::{ApiError, ErrorCode};
use crate::http::if_match_passes;
use crate::meta::{EntryKind, FileMeta};
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

/// The direct children of `dir`, sorted by name, all at once (see [`dir_entries`] to read a
/// directory of any size a page at a time).
pub fn list_dir<S: Storage + ?Sized>(storage: &S, dir: &StoragePath) -> Result<Vec<Entry>, ApiError> {
    dir_entries(storage, dir, None)?.collect()
}

/// The direct children of `dir` in name order, starting after the name `after` (a listing's
/// cursor), read one index page at a time: memory stays flat however large the directory.
/// Index entries whose file record is missing (left by an interrupted delete) are skipped, so
/// listings never show ghosts. A missing directory is `404` (the root always exists).
pub fn dir_entries<'a, S: Storage + ?Sized>(
    storage: &'a S,
    dir: &StoragePath,
    after: Option<&str>,
) -> Result<DirEntries<'a, S>, ApiError> {
    match existing_dir_entries(storage, dir, after)? {
        Some(entries) => Ok(entries),
        None if dir.is_root() => Ok(DirEntries { storage, dir: dir.clone(), cursor: None }),
        None => Err(ApiError::not_found(format!("no directory `/{dir}`"))),
    }
}

/// The entries of `dir`, `None` when it has no index (never created, or deleted).
fn existing_dir_entries<'a, S: Storage + ?Sized>(
    storage: &'a S,
    dir: &StoragePath,
    after: Option<&str>,
) -> Result<Option<DirEntries<'a, S>>, ApiError> {
    let cursor = IndexCursor::open(storage, dir, after)?;
    Ok(cursor.map(|cursor| DirEntries { storage, dir: dir.clone(), cursor: Some(cursor) }))
}

/// A directory's children in name order, read as they are needed (see [`dir_entries`]).
pub struct DirEntries<'a, S: Storage + ?Sized> {
    storage: &'a S,
    dir: StoragePath,
    cursor: Option<IndexCursor<'a, S>>,
}

impl<S: Storage + ?Sized> Iterator for DirEntries<'_, S> {
    type Item = Result<Entry, ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        let cursor = self.cursor.as_mut()?;
        loop {
            let (name, kind) = match cursor.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let Ok(child) = self.dir.join(&name) else { continue };
            match kind {
                EntryKind::File => match read_meta(self.storage, &child) {
                    Ok(Some(meta)) => return Some(Ok(Entry::File(meta))),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                },
                EntryKind::Dir => return Some(Ok(Entry::Dir(child))),
            }
        }
    }
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
    let Some(entries) = existing_dir_entries(storage, dir, None)? else { return Ok(()) };
    for entry in entries {
        match entry? {
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

/// How many children a recursive delete reads before acting on them.
const DELETE_BATCH: usize = 1000;

pub(crate) fn delete_tree<S: Storage + ?Sized>(
    storage: &S,
    dir: &StoragePath,
    summary: &mut DeleteSummary,
) -> Result<(), ApiError> {
    // A batch of children at a time, each batch read before any is deleted, so deleting does
    // not change what the cursor is reading and memory stays flat.
    let mut after: Option<String> = None;
    while let Some(entries) = existing_dir_entries(storage, dir, after.as_deref())? {
        let batch = entries.take(DELETE_BATCH).collect::<Result<Vec<_>, _>>()?;
        let Some(last) = batch.last() else { break };
        after = last.path().file_name().map(str::to_owned);
        for entry in batch {
            match entry {
                Entry::File(meta) => {
                    storage.retire(&meta_key(&meta.path))?;
                    let _ = discard_content(storage, &meta, None);
                    summary.files += 1;
                }
                Entry::Dir(child) => delete_tree(storage, &child, summary)?,
            }
        }
    }
    for page in IndexCursor::page_keys(storage, dir)? {
        storage.retire(&page)?;
    }
    storage.retire(&dir_index_key(dir))?;
    summary.dirs += 1;
    Ok(())
}

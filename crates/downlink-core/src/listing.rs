//! Directory listings (`GET /dir/`): the query (`limit`, `cursor`) and the JSON answer, written
//! a batch of entries at a time as the directory's index is read, so a listing of any size
//! costs flat memory.
//!
//! ```json
//! {"path": "docs", "entries": [{"name": "a.txt", "type": "file", "size": 3, ...}, {"name": "sub", "type": "dir"}],
//!  "next_cursor": "a.txt"}
//! ```
//!
//! Entries come in name order. Without `limit` the listing is the whole directory and
//! `next_cursor` is `null`; with `limit=N` it holds at most `N` entries and `next_cursor` is
//! what to pass as `cursor` for the next page (`null` on the last one). A cursor is the name the
//! page ended at, so pages stay consistent while the directory changes: every entry present
//! throughout is listed exactly once.

use crate::delivery::ContentSink;
use crate::error::ApiError;
use crate::query::Query;
use crate::storage::{dir_entries, DirEntries, Entry, Storage};
use crate::StoragePath;

/// Largest `limit` accepted.
pub const MAX_LISTING_LIMIT: usize = 10_000;

/// Bytes of JSON gathered before they are handed to the sink.
const FLUSH_BYTES: usize = 64 * 1024;

/// What a listing request asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListingQuery {
    /// At most this many entries (`None`: all of them).
    pub limit: Option<usize>,
    /// Start after this name (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl ListingQuery {
    /// Reads `limit` (1 to [`MAX_LISTING_LIMIT`]) and `cursor` (a name, or empty for the
    /// start); anything else is `400 INVALID_REQUEST`.
    pub fn parse(raw_query: &str) -> Result<ListingQuery, ApiError> {
        let query = Query::parse(raw_query)?;
        let limit = match query.get("limit") {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LISTING_LIMIT).contains(&limit) => Some(limit),
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "limit must be a whole number from 1 to {MAX_LISTING_LIMIT}, not {text:?}"
                    )))
                }
            },
        };
        let cursor = query.get("cursor").filter(|cursor| !cursor.is_empty()).map(str::to_owned);
        if cursor.as_ref().is_some_and(|cursor| cursor.contains('/')) {
            return Err(ApiError::invalid_request("cursor must be a `next_cursor` from an earlier page"));
        }
        Ok(ListingQuery { limit, cursor })
    }
}

/// A listing ready to stream: the directory exists and its index could be opened.
pub struct Listing<'a, S: Storage + ?Sized> {
    dir: StoragePath,
    entries: DirEntries<'a, S>,
    limit: Option<usize>,
}

impl<'a, S: Storage + ?Sized> Listing<'a, S> {
    /// Opens `dir`'s listing (a missing directory is `404`), before any byte is sent.
    pub fn open(storage: &'a S, dir: &StoragePath, query: &ListingQuery) -> Result<Self, ApiError> {
        let entries = dir_entries(storage, dir, query.cursor.as_deref())?;
        Ok(Listing { dir: dir.clone(), entries, limit: query.limit })
    }

    /// Writes the whole JSON answer into `sink`. A storage failure part-way is returned after
    /// what was already sent (the caller can only cut the body short then).
    pub fn stream<K: ContentSink + ?Sized>(self, sink: &mut K) -> Result<(), ListingError<K::Error>> {
        let mut out = Vec::with_capacity(FLUSH_BYTES + 1024);
        out.extend_from_slice(b"{\"path\":");
        out.extend_from_slice(&crate::json::to_bytes(&self.dir.as_str()));
        out.extend_from_slice(b",\"entries\":[");
        let mut entries = self.entries.peekable();
        let mut sent = 0usize;
        let mut last_name: Option<String> = None;
        while self.limit.is_none_or(|limit| sent < limit) {
            let Some(entry) = entries.next() else { break };
            let entry = entry.map_err(ListingError::Index)?;
            if sent > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&crate::json::to_bytes(&entry_json(&entry)));
            sent += 1;
            last_name = entry.path().file_name().map(str::to_owned);
            if out.len() >= FLUSH_BYTES {
                sink.send(&out).map_err(ListingError::Sink)?;
                out.clear();
            }
        }
        let more = match entries.peek() {
            None => false,
            Some(Ok(_)) => true,
            Some(Err(e)) => return Err(ListingError::Index(e.clone())),
        };
        let next_cursor = if more { last_name } else { None };
        out.extend_from_slice(b"],\"next_cursor\":");
        out.extend_from_slice(&crate::json::to_bytes(&next_cursor));
        out.push(b'}');
        sink.send(&out).map_err(ListingError::Sink)
    }
}

/// Why a listing stopped part-way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError<E> {
    /// Reading the directory's index or a record failed.
    #[error("reading the directory failed: {0}")]
    Index(ApiError),
    /// The sink refused bytes.
    #[error("the body could not be sent")]
    Sink(E),
}

/// One entry as a listing shows it.
pub fn entry_json(entry: &Entry) -> serde_json::Value {
    match entry {
        Entry::File(meta) => serde_json::json!({
            "name": meta.path.file_name().unwrap_or_default(),
            "type": "file",
            "size": meta.size,
            "modified": meta.modified,
            "content_type": meta.content_type,
        }),
        Entry::Dir(path) => serde_json::json!({ "name": path.file_name().unwrap_or_default(), "type": "dir" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobId;
    use crate::storage::{write_file, MemoryStorage, WriteOptions};

    fn store_with(names: &[&str]) -> MemoryStorage {
        let storage = MemoryStorage::new();
        for (i, name) in names.iter().enumerate() {
            let path = StoragePath::parse(&format!("d/{name}")).unwrap();
            let blob = BlobId::new(format!("b{i}")).unwrap();
            write_file(&storage, &path, blob, [b"abc"], WriteOptions::default(), 1).unwrap();
        }
        storage
    }

    fn page(storage: &MemoryStorage, raw_query: &str) -> serde_json::Value {
        let query = ListingQuery::parse(raw_query).unwrap();
        let listing = Listing::open(storage, &StoragePath::parse("d").unwrap(), &query).unwrap();
        let mut body = Vec::new();
        listing.stream(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn names(page: &serde_json::Value) -> Vec<&str> {
        page["entries"].as_array().unwrap().iter().map(|entry| entry["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn pages_follow_the_cursor_to_the_end() {
        let storage = store_with(&["c", "a", "sub/x", "b", "e"]);
        let whole = page(&storage, "");
        assert_eq!(names(&whole), ["a", "b", "c", "e", "sub"]);
        assert_eq!(whole["next_cursor"], serde_json::Value::Null);
        assert_eq!(whole["path"], "d");
        assert_eq!(whole["entries"][0]["size"], 3);
        assert_eq!(whole["entries"][4]["type"], "dir");

        let first = page(&storage, "limit=2");
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first["next_cursor"], "b");
        let second = page(&storage, "limit=2&cursor=b");
        assert_eq!(names(&second), ["c", "e"]);
        let last = page(&storage, "limit=2&cursor=e");
        assert_eq!(names(&last), ["sub"]);
        assert_eq!(last["next_cursor"], serde_json::Value::Null);
        // Exactly as many entries as remain: the last page says so.
        assert_eq!(page(&storage, "limit=5")["next_cursor"], serde_json::Value::Null);
        assert!(names(&page(&storage, "cursor=zzz")).is_empty());
    }

    #[test]
    fn bad_queries_are_refused() {
        for bad in ["limit=0", "limit=-1", "limit=ten", "limit=10001", "cursor=a/b", "limit=%zz"] {
            let err = ListingQuery::parse(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}");
        }
        assert_eq!(
            ListingQuery::parse("limit=10000&cursor=").unwrap(),
            ListingQuery { limit: Some(10_000), cursor: None }
        );
    }

    #[test]
    fn a_large_listing_reaches_the_sink_in_pieces() {
        struct Pieces(Vec<usize>);
        impl ContentSink for Pieces {
            type Error = std::convert::Infallible;
            fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
                self.0.push(bytes.len());
                Ok(())
            }
        }
        let names: Vec<String> = (0..3000).map(|i| format!("file-{i:05}.bin")).collect();
        let storage = store_with(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let listing = Listing::open(&storage, &StoragePath::parse("d").unwrap(), &ListingQuery::default()).unwrap();
        let mut pieces = Pieces(Vec::new());
        listing.stream(&mut pieces).unwrap();
        assert!(pieces.0.len() >= 3, "{:?}", pieces.0);
        assert!(pieces.0.iter().all(|len| *len < FLUSH_BYTES + 1024), "{:?}", pieces.0);
    }
}

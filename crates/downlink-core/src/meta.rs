//! Stored records: per-file metadata and per-directory child indexes.
//!
//! Both serialise to deterministic JSON (struct field order, sorted maps), so byte equality is
//! value equality, which is what compare-and-swap on a key-value store compares.

use serde::{Deserialize, Serialize};

use crate::blob::BlobId;
use crate::path::StoragePath;
use crate::storage::objects::ObjectLocation;

/// Where a file's bytes came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "url", rename_all = "lowercase")]
pub enum Origin {
    /// Uploaded by a client.
    Upload,
    /// Fetched by the download worker from this URL.
    Url(String),
}

/// Everything stored about one file; the value behind [`crate::blob::meta_key`].
///
/// The file's bytes are the chunks of `blob_id`. Writing a new version writes a new blob and
/// then swaps this record, so readers see either the old or the new file, never a mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The file's path.
    pub path: StoragePath,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the content, as ZIP needs it up front.
    pub crc32: u32,
    /// MIME type served with the file.
    pub content_type: String,
    /// Unix seconds when the path first got a file.
    pub created: u64,
    /// Unix seconds of the last completed write.
    pub modified: u64,
    /// Upload or source URL.
    pub origin: Origin,
    /// The blob holding the bytes.
    pub blob_id: BlobId,
    /// Bytes per chunk; every chunk but the last is exactly this long (chunks in the
    /// key-value store; unused when the bytes are an [`object`](Self::object)).
    pub chunk_size: u32,
    /// Where the bytes are when they are one object in the bucket; `None`: chunks in the
    /// key-value store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectLocation>,
    /// Hex SHA-256 of the content, when it was computed (e.g. to verify a download).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The blob of the record this one replaced, so a concurrent writer can tell that its own
    /// write landed before this one (see [`FileMeta::supersedes`]). Never shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<BlobId>,
}

impl FileMeta {
    /// Strong ETag: the blob id changes on every write and size and CRC pin the content, so two
    /// equal tags mean byte-identical bodies (required for `If-Range` resume).
    pub fn etag(&self) -> String {
        format!("\"{}-{:x}-{:08x}\"", self.blob_id, self.size, self.crc32)
    }

    /// Whether this record, found by `other`'s writer on a retry (a concurrent write landed),
    /// stays rather than `other`: it replaced `other` itself, or it is the later of the two in
    /// (`modified`, `blob_id`) order. Every writer decides the same, so concurrent writes of a
    /// path end with one record however the store reported each swap.
    pub fn supersedes(&self, other: &FileMeta) -> bool {
        self.replaces.as_ref() == Some(&other.blob_id)
            || (self.modified, &self.blob_id) > (other.modified, &other.blob_id)
    }

    /// Serialises to the stored JSON form.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Plain data with string keys: serialisation cannot fail.
        crate::json::to_bytes(self)
    }

    /// Parses the stored JSON form.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<FileMeta, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Number of chunks holding the content.
    pub fn chunk_count(&self) -> u64 {
        crate::blob::chunk_count(self.size, self.chunk_size)
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A file with a [`FileMeta`].
    File,
    /// A directory with its own [`DirPage`].
    Dir,
}

/// An insert found the name already used by the other kind (file vs directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("name already used by a {existing:?}")]
pub struct KindConflict {
    /// What the name already is.
    pub existing: EntryKind,
}

/// One page of a directory's index: some of its direct children, name → kind, sorted by name.
///
/// A directory's index is a chain of pages in name order (see `storage::files::index`): the
/// first page, the *head*, lives at the directory's own key, and each page holds the names from
/// its lower bound up to the lower bound of the page its [`next`](DirPage::next) link names.
/// The head also keeps [`routes`](DirPage::routes) to every later page it knows of, so a name's
/// page is found with two reads however large the directory is. Operations report whether they
/// changed anything, so a caller's compare-and-swap loop can skip the write when there is nothing
/// to do. The stored form of a single-page directory is the same as before pages existed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirPage {
    entries: SortedEntries,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<PageLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<PageLink>,
}

/// A page's entries sorted by name, stored as a JSON object `{"name": "file", ...}`.
///
/// A sorted `Vec` rather than a `BTreeMap`: a page is parsed, changed once and written back on
/// every insert, and reading a thousand sorted pairs into a vector is several times cheaper
/// than building a tree from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SortedEntries(Vec<(String, EntryKind)>);

impl SortedEntries {
    /// Where `name` is (`Ok`) or would go (`Err`).
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(entry, _)| entry.as_str().cmp(name))
    }
}

impl Serialize for SortedEntries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, kind)| (name, kind)))
    }
}

impl<'de> Deserialize<'de> for SortedEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SortedEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of entry names to kinds")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SortedEntries, A::Error> {
                let mut entries: Vec<(String, EntryKind)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                // Written sorted; anything else (a hand-edited store) is put in order, and a
                // repeated name keeps its last kind, as a map would.
                if !entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
                    entries.reverse();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    entries.dedup_by(|later, earlier| later.0 == earlier.0);
                }
                Ok(SortedEntries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Where a later page of a directory index starts: names from `low` on live in page `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLink {
    /// The first name the page may hold (a separator: no name of an earlier page reaches it).
    pub low: String,
    /// The page's id (see `blob::dir_page_key`).
    pub id: String,
}

/// A page splits once it holds more entries than this...
pub const PAGE_SPLIT_ENTRIES: usize = 1000;
/// ...or once its entries take more than this many bytes stored, so every page read and write stays small
/// and an insert costs the same in a directory of a thousand or of millions of entries.
pub const PAGE_SPLIT_BYTES: usize = 48 * 1024;
/// Stored bytes of one entry besides its name: `"":"file",`.
const ENTRY_OVERHEAD_BYTES: usize = 10;

impl DirPage {
    /// An empty directory.
    pub fn new() -> Self {
        DirPage::default()
    }

    /// Adds `name` as `kind`. `Ok(true)` if added, `Ok(false)` if already present as `kind`,
    /// `Err` if present as the other kind (nothing changes).
    pub fn insert(&mut self, name: &str, kind: EntryKind) -> Result<bool, KindConflict> {
        match self.entries.find(name) {
            Ok(at) if self.entries.0[at].1 == kind => Ok(false),
            Ok(at) => Err(KindConflict { existing: self.entries.0[at].1 }),
            Err(at) => {
                self.entries.0.insert(at, (name.to_owned(), kind));
                Ok(true)
            }
        }
    }

    /// Removes `name`; `true` if it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.entries.find(name) {
            Ok(at) => {
                self.entries.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The kind of `name`, if present.
    pub fn get(&self, name: &str) -> Option<EntryKind> {
        self.entries.find(name).ok().map(|at| self.entries.0[at].1)
    }

    /// Entries sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, EntryKind)> {
        self.entries.0.iter().map(|(name, kind)| (name.as_str(), *kind))
    }

    /// Entries whose name sorts after `after` (all of them for `None`), sorted by name.
    pub fn iter_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = (&'a str, EntryKind)> + 'a {
        let start = match after {
            None => 0,
            Some(after) => self.entries.0.partition_point(|(name, _)| name.as_str() <= after),
        };
        self.entries.0[start..].iter().map(|(name, kind)| (name.as_str(), *kind))
    }

    /// Number of entries in this page.
    pub fn len(&self) -> usize {
        self.entries.0.len()
    }

    /// Whether this page has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.0.is_empty()
    }

    /// The page after this one, if any.
    pub fn next(&self) -> Option<&PageLink> {
        self.next.as_ref()
    }

    /// The head's routes to later pages, sorted by `low`.
    pub fn routes(&self) -> &[PageLink] {
        &self.routes
    }

    /// Whether `name` belongs in this page rather than a later one. (It never belongs in an
    /// earlier one: a page is reached only through a link whose `low` is at most the name.)
    pub fn covers(&self, name: &str) -> bool {
        self.next.as_ref().is_none_or(|next| name < next.low.as_str())
    }

    /// The known page to start from when looking for `name` in a directory whose head is this
    /// page: the route with the greatest `low` not above `name`, else the head's own `next`.
    pub fn route_for(&self, name: &str) -> Option<&PageLink> {
        let later = self.routes.partition_point(|route| route.low.as_str() <= name);
        later.checked_sub(1).map(|i| &self.routes[i]).or(self.next.as_ref())
    }

    /// Records a route to a later page; `false` if it was already known.
    pub fn add_route(&mut self, link: PageLink) -> bool {
        match self.routes.binary_search_by(|route| route.low.cmp(&link.low)) {
            Ok(_) => false,
            Err(at) => {
                self.routes.insert(at, link);
                true
            }
        }
    }

    /// Whether this page holds more than one page should and must [`split`](DirPage::split).
    /// Only the entries count (the head's routes are bounded separately).
    pub fn needs_split(&self) -> bool {
        let entry_bytes: usize = self.entries.0.iter().map(|(name, _)| name.len() + ENTRY_OVERHEAD_BYTES).sum();
        self.len() >= 2 && (self.len() > PAGE_SPLIT_ENTRIES || entry_bytes > PAGE_SPLIT_BYTES)
    }

    /// Splits a page in two halves by name: `(lower, upper, separator)`. The lower half keeps
    /// this page's routes; the upper half takes over its `next` link; the caller links the lower
    /// half to the upper one (whose id comes from its stored bytes). The separator is the
    /// shortest prefix of the upper half's first name that sorts after the lower half's last,
    /// so routes stay short however long the names are.
    pub fn split(mut self) -> (DirPage, DirPage, String) {
        let upper_entries = SortedEntries(self.entries.0.split_off(self.len() / 2));
        let first_upper = upper_entries.0.first().map(|(name, _)| name.as_str()).unwrap_or_default();
        let last_lower = self.entries.0.last().map(|(name, _)| name.as_str()).unwrap_or_default();
        let separator = shortest_separator(last_lower, first_upper);
        let upper = DirPage { entries: upper_entries, next: self.next.take(), routes: Vec::new() };
        (self, upper, separator)
    }

    /// Points this page at the page holding the names from `link.low` on.
    pub fn link_to(&mut self, link: PageLink) {
        self.next = Some(link);
    }

    /// Serialises deterministically (sorted names).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    /// Parses the stored form.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<DirPage, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The shortest prefix of `upper` (on a character boundary) that sorts after `lower`, given
/// `lower < upper`.
fn shortest_separator(lower: &str, upper: &str) -> String {
    upper
        .char_indices()
        .map(|(at, c)| &upper[..at + c.len_utf8()])
        .find(|prefix| *prefix > lower)
        .unwrap_or(upper)
        .to_owned()
}

/// MIME type for a file name by extension, `application/octet-stream` when unknown.
///
/// A small table instead of `mime_guess`: Downlink serves files, it does not need a thousand
/// rarely used types, and every component that embeds this crate stays smaller and free of a
/// build script. Text types carry `charset=utf-8` so browsers do not guess.
pub fn content_type_for(name: &str) -> &'static str {
    let Some((_, extension)) = name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    if extension.len() > 8 {
        return "application/octet-stream";
    }
    match extension.to_ascii_lowercase().as_str() {
        "txt" | "log" | "text" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "ics" => "text/calendar; charset=utf-8",
        "json" | "map" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "bz2" => "application/x-bzip2",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        "7z" => "application/x-7z-compressed",
        "rar" => "application/vnd.rar",
        "jar" => "application/java-archive",
        "apk" => "application/vnd.android.package-archive",
        "deb" => "application/vnd.debian.binary-package",
        "rpm" => "application/x-rpm",
        "dmg" => "application/x-apple-diskimage",
        "iso" => "application/x-iso9660-image",
        "exe" | "dll" | "msi" => "application/octet-stream",
        "sh" => "application/x-sh",
        "epub" => "application/epub+zip",
        "parquet" => "application/vnd.apache.parquet",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "odp" => "application/vnd.oasis.opendocument.presentation",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "heic" => "image/heic",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "mpeg" | "mpg" => "video/mpeg",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileMeta {
        FileMeta {
            path: StoragePath::parse("docs/report.pdf").unwrap(),
            size: 1234,
            crc32: 0xdead_beef,
            content_type: content_type_for("report.pdf").to_owned(),
            created: 1_700_000_000,
            modified: 1_700_000_100,
            origin: Origin::Url("https://example.com/r.pdf".to_owned()),
            blob_id: BlobId::new("b1").unwrap(),
            chunk_size: 1024,
            object: None,
            sha256: None,
            replaces: None,
        }
    }

    #[test]
    fn meta_round_trips_and_omits_missing_sha() {
        let meta = sample();
        let bytes = meta.to_json_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("sha256"));
        assert!(text.contains(r#""origin":{"kind":"url","url":"https://example.com/r.pdf"}"#));
        assert_eq!(FileMeta::from_json_bytes(&bytes).unwrap(), meta);
        let upload = FileMeta { origin: Origin::Upload, sha256: Some("ab".repeat(32)), ..sample() };
        let text = String::from_utf8(upload.to_json_bytes()).unwrap();
        assert!(text.contains(r#""origin":{"kind":"upload"}"#));
        assert_eq!(FileMeta::from_json_bytes(text.as_bytes()).unwrap(), upload);
        assert_eq!(meta.chunk_count(), 2);
    }

    #[test]
    fn stored_meta_with_bad_path_is_rejected() {
        let text = String::from_utf8(sample().to_json_bytes()).unwrap().replace("docs/report.pdf", "docs/../x");
        assert!(FileMeta::from_json_bytes(text.as_bytes()).is_err());
    }

    #[test]
    fn etag_is_strong_and_changes_with_content() {
        let meta = sample();
        assert_eq!(meta.etag(), "\"b1-4d2-deadbeef\"");
        let other_blob = FileMeta { blob_id: BlobId::new("b2").unwrap(), ..sample() };
        assert_ne!(meta.etag(), other_blob.etag());
        assert!(!meta.etag().starts_with("W/"));
    }

    #[test]
    fn dir_page_operations_report_changes() {
        let mut index = DirPage::new();
        assert_eq!(index.insert("b", EntryKind::File), Ok(true));
        assert_eq!(index.insert("b", EntryKind::File), Ok(false));
        assert_eq!(index.insert("b", EntryKind::Dir), Err(KindConflict { existing: EntryKind::File }));
        assert_eq!(index.insert("a", EntryKind::Dir), Ok(true));
        assert_eq!(index.get("a"), Some(EntryKind::Dir));
        assert_eq!(String::from_utf8(index.to_json_bytes()).unwrap(), r#"{"entries":{"a":"dir","b":"file"}}"#);
        assert!(index.remove("b"));
        assert!(!index.remove("b"));
        assert_eq!(index.len(), 1);
        let back = DirPage::from_json_bytes(&index.to_json_bytes()).unwrap();
        assert_eq!(back, index);
    }

    #[test]
    fn dir_page_reads_unsorted_or_repeated_names_as_a_map_would() {
        let page = DirPage::from_json_bytes(br#"{"entries":{"b":"file","a":"dir","b":"dir"}}"#).unwrap();
        assert_eq!(page.iter().collect::<Vec<_>>(), [("a", EntryKind::Dir), ("b", EntryKind::Dir)]);
        assert_eq!(page.iter_after(Some("a")).collect::<Vec<_>>(), [("b", EntryKind::Dir)]);
        assert!(DirPage::from_json_bytes(br#"{"entries":["a"]}"#).is_err());
    }

    #[test]
    fn dir_page_splits_in_halves_at_a_short_separator() {
        let mut page = DirPage::new();
        for name in ["report-2023.pdf", "report-2024.pdf", "zebra", "apple"] {
            page.insert(name, EntryKind::File).unwrap();
        }
        let (lower, upper, separator) = page.split();
        assert_eq!(lower.iter().map(|(name, _)| name).collect::<Vec<_>>(), ["apple", "report-2023.pdf"]);
        assert_eq!(upper.iter().map(|(name, _)| name).collect::<Vec<_>>(), ["report-2024.pdf", "zebra"]);
        assert_eq!(separator, "report-2024");
        assert!(separator.as_str() > "report-2023.pdf" && separator.as_str() <= "report-2024.pdf");
    }

    #[test]
    fn dir_page_bytes_are_order_independent() {
        let mut first = DirPage::new();
        let mut second = DirPage::new();
        for name in ["z", "a", "m"] {
            first.insert(name, EntryKind::File).unwrap();
        }
        for name in ["m", "z", "a"] {
            second.insert(name, EntryKind::File).unwrap();
        }
        assert_eq!(first.to_json_bytes(), second.to_json_bytes());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("a.PDF"), "application/pdf");
        assert_eq!(content_type_for("a.tar.gz"), "application/gzip");
        assert_eq!(content_type_for("notes.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type_for("README"), "application/octet-stream");
        assert_eq!(content_type_for(".bashrc"), "application/octet-stream");
        assert_eq!(content_type_for("x."), "application/octet-stream");
        assert_eq!(content_type_for("x.verylongextension"), "application/octet-stream");
        assert_eq!(content_type_for("photo.JpEg"), "image/jpeg");
    }
}

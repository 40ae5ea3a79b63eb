//! User-visible file paths.
//!
//! A [`StoragePath`] is the one normalised form every component compares and stores: segments
//! joined by `/`, no leading or trailing `/`, the empty string for the root directory. Anything
//! that cannot be normalised without guessing is rejected with [`PathError`], which maps to
//! `400 INVALID_PATH`.
//!
//! Rules (see the spec, "Files and paths"):
//! - UTF-8, `/`-separated, spaces allowed;
//! - one leading and one trailing `/` are ignored (the trailing one is reported, because
//!   `GET /dir/` means "list");
//! - rejected: empty segments (`a//b`), `.` and `..`, control characters (including NUL),
//!   backslashes, segments over [`MAX_SEGMENT_BYTES`], paths over [`MAX_PATH_BYTES`],
//!   more than [`MAX_DEPTH`] segments;
//! - URL paths are percent-decoded exactly once, per segment, and an encoded `/` (`%2F`) is
//!   rejected because it would smuggle a separator into a segment.
//!
//! Paths are compared byte for byte; no Unicode normalisation is applied.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// Longest allowed segment, in bytes (a common file-system name limit).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest allowed normalised path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most segments a path may have; bounds recursion and per-write index updates.
pub const MAX_DEPTH: usize = 32;

/// Why a path was rejected. Messages never echo the input, so they are safe to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `a//b`, or a path made only of slashes.
    #[error("path contains an empty segment (`//`)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path segments `.` and `..` are not allowed")]
    DotSegment,
    /// NUL or another control character.
    #[error("path contains a control character")]
    ControlChar,
    /// `\`, rejected so no client can mistake it for a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// A segment longer than [`MAX_SEGMENT_BYTES`].
    #[error("a path segment is longer than {} bytes", MAX_SEGMENT_BYTES)]
    SegmentTooLong,
    /// A path longer than [`MAX_PATH_BYTES`].
    #[error("path is longer than {} bytes", MAX_PATH_BYTES)]
    TooLong,
    /// More than [`MAX_DEPTH`] segments.
    #[error("path has more than {} segments", MAX_DEPTH)]
    TooDeep,
    /// `%` not followed by two hex digits.
    #[error("path contains an invalid percent-escape")]
    BadPercentEncoding,
    /// The decoded bytes are not UTF-8.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// `%2F` inside a URL path segment.
    #[error("path contains an encoded `/` (%2F) inside a segment")]
    EncodedSlash,
    /// A single segment (e.g. for [`StoragePath::join`]) contained `/`.
    #[error("a single path segment may not contain `/`")]
    SlashInSegment,
    /// The root was given where a file is required.
    #[error("the root directory is not a file path")]
    RootIsNotAFile,
    /// A request path under [`RESERVED_TOP_LEVEL`], which is the app's, not storage.
    #[error("`/api/` is reserved for the app's own endpoints (API, console, OpenAPI document); store files elsewhere")]
    Reserved,
}

/// The top-level name the app keeps for itself: its API routes, the console and the OpenAPI
/// document live under `/api/`, so no stored file may be addressed there (it would be shadowed
/// by a route, now or after an upgrade).
pub const RESERVED_TOP_LEVEL: &str = "api";

impl From<PathError> for ApiError {
    fn from(err: PathError) -> Self {
        ApiError::new(ErrorCode::InvalidPath, err.to_string())
    }
}

/// A validated, normalised path. The root directory is the empty path.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoragePath(String);

/// A parsed request path plus whether it ended in `/`, which selects "list" for `GET /dir/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPath {
    /// The normalised path.
    pub path: StoragePath,
    /// The input ended with `/`.
    pub trailing_slash: bool,
}

impl ParsedPath {
    /// The methods the files endpoint takes on this path: the root is only read (it is neither
    /// uploaded to nor deleted), a directory path (ending in `/`) is read or deleted, a file path
    /// takes all four.
    pub fn allowed_methods(&self) -> &'static str {
        if self.path.is_root() {
            "GET, HEAD"
        } else if self.trailing_slash {
            "GET, HEAD, DELETE"
        } else {
            "GET, HEAD, PUT, DELETE"
        }
    }

    /// Whether `method` (upper-case) is one of [`ParsedPath::allowed_methods`].
    pub fn allows(&self, method: &str) -> bool {
        self.allowed_methods().split(", ").any(|allowed| allowed == method)
    }
}

impl StoragePath {
    /// The root directory.
    pub fn root() -> Self {
        StoragePath(String::new())
    }

    /// Parses an already-decoded path, ignoring one leading and one trailing `/`.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        Ok(Self::parse_with_trailing_slash(raw)?.path)
    }

    /// Parses an already-decoded path that must name a file (not the root).
    pub fn parse_file(raw: &str) -> Result<Self, PathError> {
        let path = Self::parse(raw)?;
        if path.is_root() {
            return Err(PathError::RootIsNotAFile);
        }
        Ok(path)
    }

    /// Parses an already-decoded path and reports whether it ended with `/`.
    pub fn parse_with_trailing_slash(raw: &str) -> Result<ParsedPath, PathError> {
        let trailing_slash = raw.ends_with('/');
        let without_leading = raw.strip_prefix('/').unwrap_or(raw);
        let inner = without_leading.strip_suffix('/').unwrap_or(without_leading);
        if inner.is_empty() {
            // Only "" and "/" are the root; "//" hides an empty segment.
            if raw.len() > 1 {
                return Err(PathError::EmptySegment);
            }
            return Ok(ParsedPath { path: Self::root(), trailing_slash });
        }
        if inner.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        for (depth, segment) in inner.split('/').enumerate() {
            if depth >= MAX_DEPTH {
                return Err(PathError::TooDeep);
            }
            validate_segment(segment)?;
        }
        Ok(ParsedPath { path: StoragePath(inner.to_owned()), trailing_slash })
    }

    /// Parses the raw (still percent-encoded) path of a request URL.
    ///
    /// Each segment is decoded exactly once, so `%252e` stays the literal `%2e`, `%2e%2e` becomes
    /// `..` and is rejected, and `%2F` is rejected instead of becoming a separator.
    pub fn from_url_path(encoded: &str) -> Result<ParsedPath, PathError> {
        // Bound work before decoding: every decoded byte needs at most three encoded ones.
        if encoded.len() > 3 * MAX_PATH_BYTES + 2 {
            return Err(PathError::TooLong);
        }
        let mut decoded = String::with_capacity(encoded.len());
        for (index, segment) in encoded.split('/').enumerate() {
            if index > 0 {
                decoded.push('/');
            }
            decoded.push_str(&percent_decode_segment(segment)?);
        }
        let parsed = Self::parse_with_trailing_slash(&decoded)?;
        parsed.path.refuse_reserved()?;
        Ok(parsed)
    }

    /// Refuses a path under [`RESERVED_TOP_LEVEL`]: every path a request names for storing or
    /// reading (the request URL, a download's target) goes through this.
    pub fn refuse_reserved(&self) -> Result<(), PathError> {
        match self.segments().next() {
            Some(RESERVED_TOP_LEVEL) => Err(PathError::Reserved),
            _ => Ok(()),
        }
    }

    /// The normalised form: no leading or trailing `/`, empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root directory.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The segments, outermost first; empty for the root.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }

    /// Number of segments; 0 for the root.
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The containing directory, or `None` for the root.
    pub fn parent(&self) -> Option<StoragePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(cut) => StoragePath(self.0[..cut].to_owned()),
            None => Self::root(),
        })
    }

    /// The last segment, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(cut) => &self.0[cut + 1..],
            None => &self.0,
        })
    }

    /// Appends one segment, validating it and the resulting length and depth.
    pub fn join(&self, segment: &str) -> Result<StoragePath, PathError> {
        if segment.contains('/') {
            return Err(PathError::SlashInSegment);
        }
        validate_segment(segment)?;
        if self.depth() >= MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        let joined = if self.is_root() { segment.to_owned() } else { format!("{}/{}", self.0, segment) };
        if joined.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        Ok(StoragePath(joined))
    }

    /// Whether `dir` is this path or one of its ancestors, compared segment by segment
    /// (so `a/bc` does not start with `a/b`). Every path starts with the root.
    pub fn starts_with(&self, dir: &StoragePath) -> bool {
        self.relative_to(dir).is_some()
    }

    /// The rest of this path below `dir` (empty if equal), or `None` if it is not below `dir`.
    pub fn relative_to(&self, dir: &StoragePath) -> Option<&str> {
        if dir.is_root() {
            return Some(&self.0);
        }
        let rest = self.0.strip_prefix(dir.as_str())?;
        if rest.is_empty() {
            return Some(rest);
        }
        rest.strip_prefix('/')
    }

    /// Every ancestor directory from the root down to the parent (excluding this path).
    pub fn ancestors(&self) -> Vec<StoragePath> {
        let mut ancestors = Vec::with_capacity(self.depth());
        let mut current = self.parent();
        while let Some(dir) = current {
            current = dir.parent();
            ancestors.push(dir);
        }
        ancestors.reverse();
        ancestors
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StoragePath {
    type Error = PathError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        StoragePath::parse(&raw)
    }
}

impl From<StoragePath> for String {
    fn from(path: StoragePath) -> Self {
        path.0
    }
}

impl AsRef<str> for StoragePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The deepest directory that strictly contains every given file path, used to name ZIP
/// entries relative to it. A file never counts as its own container, so a single `a/b/c.txt`
/// gives `a/b`; an empty input gives the root.
pub fn longest_common_dir<'a, I>(paths: I) -> StoragePath
where
    I: IntoIterator<Item = &'a StoragePath>,
{
    let mut common: Option<Vec<&str>> = None;
    for path in paths {
        let mut parent_segments: Vec<&str> = path.segments().collect();
        parent_segments.pop();
        common = Some(match common {
            None => parent_segments,
            Some(mut prefix) => {
                let shared = prefix.iter().zip(&parent_segments).take_while(|(a, b)| a == b).count();
                prefix.truncate(shared);
                prefix
            }
        });
    }
    StoragePath(common.unwrap_or_default().join("/"))
}

/// Decodes `%XX` escapes exactly once and requires UTF-8.
///
/// For query and form values, where `/` is legitimately sent as `%2F`. Strict: a `%` not
/// followed by two hex digits is an error rather than a literal, so ambiguous input never
/// reaches validation. `+` is left alone (form decoding is the caller's choice).
pub fn percent_decode_once(input: &str) -> Result<String, PathError> {
    let bytes = input.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(input.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err(PathError::BadPercentEncoding),
            }
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// Decodes one URL path segment exactly once; an encoded `/` is rejected.
pub fn percent_decode_segment(segment: &str) -> Result<String, PathError> {
    let decoded = percent_decode_once(segment)?;
    if decoded.contains('/') {
        return Err(PathError::EncodedSlash);
    }
    Ok(decoded)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Checks one segment against the rules in the module docs.
pub(crate) fn validate_segment(segment: &str) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(PathError::SegmentTooLong);
    }
    for c in segment.chars() {
        if c == '\\' {
            return Err(PathError::Backslash);
        }
        if c == '/' {
            return Err(PathError::SlashInSegment);
        }
        if c.is_control() {
            return Err(PathError::ControlChar);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> StoragePath {
        StoragePath::parse(raw).expect(raw)
    }

    #[test]
    fn normalises_leading_and_trailing_slash() {
        assert_eq!(p("/a/b").as_str(), "a/b");
        assert_eq!(p("a/b/").as_str(), "a/b");
        assert_eq!(p("/a b/c d.txt/").as_str(), "a b/c d.txt");
        let parsed = StoragePath::parse_with_trailing_slash("/dir/").unwrap();
        assert!(parsed.trailing_slash);
        assert_eq!(parsed.path.as_str(), "dir");
        assert!(!StoragePath::parse_with_trailing_slash("/dir").unwrap().trailing_slash);
    }

    #[test]
    fn root_forms() {
        assert!(p("").is_root());
        assert!(p("/").is_root());
        assert!(StoragePath::parse_with_trailing_slash("/").unwrap().trailing_slash);
        assert_eq!(StoragePath::parse("//"), Err(PathError::EmptySegment));
        assert_eq!(StoragePath::parse("///"), Err(PathError::EmptySegment));
        assert_eq!(StoragePath::parse_file("/"), Err(PathError::RootIsNotAFile));
        assert_eq!(StoragePath::parse_file("").unwrap_err(), PathError::RootIsNotAFile);
        assert_eq!(p("").parent(), None);
        assert_eq!(p("").file_name(), None);
        assert_eq!(p("").segments().count(), 0);
    }

    #[test]
    fn rejects_bad_segments() {
        let cases = [
            ("a//b", PathError::EmptySegment),
            ("//a", PathError::EmptySegment),
            ("a//", PathError::EmptySegment),
            (".", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("a/../b", PathError::DotSegment),
            ("..", PathError::DotSegment),
            ("/../etc/passwd", PathError::DotSegment),
            ("a\0b", PathError::ControlChar),
            ("a\nb", PathError::ControlChar),
            ("a\u{7f}", PathError::ControlChar),
            ("a\u{85}", PathError::ControlChar),
            ("a\\b", PathError::Backslash),
            ("..\\x", PathError::Backslash),
        ];
        for (raw, want) in cases {
            assert_eq!(StoragePath::parse(raw), Err(want), "{raw:?}");
        }
        // Dots that are not exactly `.` or `..` are ordinary names.
        assert_eq!(p("...").as_str(), "...");
        assert_eq!(p(".hidden/..x").as_str(), ".hidden/..x");
    }

    #[test]
    fn length_and_depth_limits() {
        let max_segment = "a".repeat(MAX_SEGMENT_BYTES);
        assert!(StoragePath::parse(&max_segment).is_ok());
        assert_eq!(StoragePath::parse(&"a".repeat(MAX_SEGMENT_BYTES + 1)), Err(PathError::SegmentTooLong));
        // Multi-byte characters count in bytes: 128 × 2 bytes = 256.
        assert_eq!(StoragePath::parse(&"é".repeat(128)), Err(PathError::SegmentTooLong));
        let deep_ok = vec!["d"; MAX_DEPTH].join("/");
        assert!(StoragePath::parse(&deep_ok).is_ok());
        let too_deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(StoragePath::parse(&too_deep), Err(PathError::TooDeep));
        let segment = "x".repeat(200);
        let long = [segment.as_str(); 6].join("/");
        assert!(long.len() > MAX_PATH_BYTES);
        assert_eq!(StoragePath::parse(&long), Err(PathError::TooLong));
        // 5 × 204 + 4 separators = 1024 bytes exactly; the ignored slashes do not count.
        let at_limit = format!("/{}/", vec!["q".repeat(204); 5].join("/"));
        assert!(StoragePath::parse(&at_limit).is_ok());
        let over = vec!["q".repeat(205); 5].join("/");
        assert_eq!(StoragePath::parse(&over), Err(PathError::TooLong));
    }

    #[test]
    fn unicode_and_spaces_are_fine() {
        let path = p("/Fotos/Été 2024/🎉 party.jpg");
        assert_eq!(path.file_name(), Some("🎉 party.jpg"));
        assert_eq!(path.parent().unwrap().as_str(), "Fotos/Été 2024");
        assert_eq!(p("/ / /").as_str(), " / ");
    }

    #[test]
    fn url_path_decoding() {
        let parsed = StoragePath::from_url_path("/My%20Docs/r%C3%A9sum%C3%A9.pdf").unwrap();
        assert_eq!(parsed.path.as_str(), "My Docs/résumé.pdf");
        assert!(!parsed.trailing_slash);
        assert!(StoragePath::from_url_path("/dir%20x/").unwrap().trailing_slash);
        assert_eq!(StoragePath::from_url_path("/a/%2e%2e/b"), Err(PathError::DotSegment));
        assert_eq!(StoragePath::from_url_path("/%2E"), Err(PathError::DotSegment));
        assert_eq!(StoragePath::from_url_path("/a%2fb"), Err(PathError::EncodedSlash));
        for reserved in ["/api", "/api/", "/api/v2/x", "/%61pi/x"] {
            assert_eq!(StoragePath::from_url_path(reserved), Err(PathError::Reserved), "{reserved}");
        }
        assert!(StoragePath::from_url_path("/apis/x").is_ok());
        let allowed = |raw: &str| StoragePath::from_url_path(raw).unwrap().allowed_methods();
        assert_eq!(allowed("/"), "GET, HEAD");
        assert_eq!(allowed("/docs/"), "GET, HEAD, DELETE");
        assert_eq!(allowed("/docs/a.txt"), "GET, HEAD, PUT, DELETE");
        let dir = StoragePath::from_url_path("/docs/").unwrap();
        assert!(dir.allows("DELETE") && !dir.allows("PUT") && !dir.allows("HEAD, DELETE"));
        assert!(StoragePath::from_url_path("/docs/api/x").is_ok());
        assert_eq!(StoragePath::from_url_path("/a%2F..%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(StoragePath::from_url_path("/a%00"), Err(PathError::ControlChar));
        assert_eq!(StoragePath::from_url_path("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(StoragePath::from_url_path("/a%ff"), Err(PathError::NotUtf8));
        assert_eq!(StoragePath::from_url_path("/a%c3"), Err(PathError::NotUtf8));
        assert_eq!(StoragePath::from_url_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(StoragePath::from_url_path("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(StoragePath::from_url_path("/a%"), Err(PathError::BadPercentEncoding));
        // Decoded once only: %252e%252e is the literal name "%2e%2e".
        assert_eq!(StoragePath::from_url_path("/%252e%252e").unwrap().path.as_str(), "%2e%2e");
        assert_eq!(StoragePath::from_url_path(&"%41".repeat(4000)), Err(PathError::TooLong));
    }

    #[test]
    fn percent_decode_once_is_generic() {
        assert_eq!(percent_decode_once("a%2Fb").unwrap(), "a/b");
        assert_eq!(percent_decode_once("a+b").unwrap(), "a+b");
        assert_eq!(percent_decode_once("plain").unwrap(), "plain");
        assert_eq!(percent_decode_once("%25").unwrap(), "%");
        assert_eq!(percent_decode_once("%%41"), Err(PathError::BadPercentEncoding));
        // A multi-byte character split across an escape and a literal byte is still invalid.
        assert_eq!(percent_decode_once("%e2x"), Err(PathError::NotUtf8));
        assert_eq!(percent_decode_segment("a%2fb"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn navigation() {
        let path = p("a/b/c.txt");
        assert_eq!(path.segments().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
        assert_eq!(path.depth(), 3);
        assert_eq!(path.file_name(), Some("c.txt"));
        assert_eq!(path.parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), Some(StoragePath::root()));
        assert_eq!(path.ancestors(), vec![StoragePath::root(), p("a"), p("a/b")]);
        assert!(p("a").ancestors() == vec![StoragePath::root()]);
        assert!(StoragePath::root().ancestors().is_empty());
    }

    #[test]
    fn join_validates() {
        assert_eq!(StoragePath::root().join("x").unwrap(), p("x"));
        assert_eq!(p("a").join("b c").unwrap(), p("a/b c"));
        assert_eq!(p("a").join("b/c"), Err(PathError::SlashInSegment));
        assert_eq!(p("a").join(".."), Err(PathError::DotSegment));
        assert_eq!(p("a").join(""), Err(PathError::EmptySegment));
        assert_eq!(p("a").join("x\0"), Err(PathError::ControlChar));
        let deep = p(&vec!["d"; MAX_DEPTH].join("/"));
        assert_eq!(deep.join("e"), Err(PathError::TooDeep));
        let long = p(&vec!["l".repeat(250); 4].join("/"));
        assert_eq!(long.join(&"m".repeat(30)), Err(PathError::TooLong));
    }

    #[test]
    fn starts_with_is_segment_wise() {
        assert!(p("a/b/c").starts_with(&p("a/b")));
        assert!(p("a/b").starts_with(&p("a/b")));
        assert!(p("a/b").starts_with(&StoragePath::root()));
        assert!(StoragePath::root().starts_with(&StoragePath::root()));
        assert!(!p("a/bc").starts_with(&p("a/b")));
        assert!(!p("a").starts_with(&p("a/b")));
        assert!(!StoragePath::root().starts_with(&p("a")));
        assert_eq!(p("a/b/c").relative_to(&p("a")), Some("b/c"));
        assert_eq!(p("a/b/c").relative_to(&StoragePath::root()), Some("a/b/c"));
        assert_eq!(p("a/b").relative_to(&p("a/b")), Some(""));
        assert_eq!(p("ab/c").relative_to(&p("a")), None);
    }

    #[test]
    fn common_dir() {
        assert_eq!(longest_common_dir([] as [&StoragePath; 0]), StoragePath::root());
        assert_eq!(longest_common_dir([&p("a/b/c.txt")]), p("a/b"));
        assert_eq!(longest_common_dir([&p("top.txt")]), StoragePath::root());
        assert_eq!(longest_common_dir([&p("a/x.txt"), &p("a/b/y.txt")]), p("a"));
        assert_eq!(longest_common_dir([&p("a/b/x"), &p("a/b/y"), &p("a/b/z/w")]), p("a/b"));
        assert_eq!(longest_common_dir([&p("a/x"), &p("b/y")]), StoragePath::root());
        // Segment-wise, not byte-wise: "ab" and "abc" share nothing.
        assert_eq!(longest_common_dir([&p("ab/x"), &p("abc/y")]), StoragePath::root());
        // A file named like a directory of another file does not count as a container.
        assert_eq!(longest_common_dir([&p("a/b"), &p("a/b/c")]), p("a"));
    }

    #[test]
    fn serde_validates() {
        let path: StoragePath = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(path, p("a/b"));
        assert_eq!(serde_json::to_string(&path).unwrap(), "\"a/b\"");
        assert!(serde_json::from_str::<StoragePath>("\"a/../b\"").is_err());
    }

    #[test]
    fn maps_to_invalid_path() {
        let err: ApiError = PathError::DotSegment.into();
        assert_eq!(err.code, ErrorCode::InvalidPath);
        assert_eq!(err.status(), 400);
    }
}

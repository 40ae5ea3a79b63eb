//! The start request `GET /{directory}?download=URL[&filename=][&timeout=][&sha256=]`:
//! parameters validated, the target file name chosen and sanitised.
//!
//! File names:
//! - An explicit `filename` is the user's choice and is never silently changed: if it is not
//!   one valid path segment (contains `/` or `\`, is `.`/`..`, has control characters, exceeds
//!   255 bytes) the request fails with `400 INVALID_PATH`. An empty `filename=` counts as
//!   absent. Leading dots are allowed there (the user asked for a hidden file).
//! - Otherwise the name comes from the URL's last path segment, percent-decoded once, and is
//!   sanitised rather than refused (the user did not pick it): control characters removed, `/`
//!   and `\` (e.g. from `%2F`) replaced by `_`, leading and trailing dots and white space
//!   trimmed (no hidden files or `..` from a remote URL; trailing dots and spaces break
//!   Windows sync clients), capped at 255 bytes on a character boundary keeping a short
//!   extension. An empty result becomes [`FALLBACK_FILENAME`].
//! - Collisions are resolved later with [`next_free_name`]: `data.csv`, `data (1).csv`, …

use crate::download::url_policy::{check_url, CheckedUrl, DownloadPolicy};
use crate::error::{ApiError, ErrorCode};
use crate::path::{percent_decode_once, StoragePath, MAX_SEGMENT_BYTES};
use crate::query::Query;

/// Seconds a download may take when `timeout` is not given (the reference's default).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Smallest accepted `timeout`.
pub const MIN_TIMEOUT_SECS: u64 = 1;
/// Largest accepted `timeout` (one day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// The name used when neither `filename` nor the URL gives a usable one.
pub const FALLBACK_FILENAME: &str = "download";
/// Query parameter carrying the URL (the reference's `download`).
pub const URL_PARAM: &str = "download";
/// Query parameter naming the target file.
pub const FILENAME_PARAM: &str = "filename";
/// Query parameter with the deadline in seconds.
pub const TIMEOUT_PARAM: &str = "timeout";
/// Query parameter with the expected SHA-256 (64 hex digits).
pub const SHA256_PARAM: &str = "sha256";

/// Longest extension [`next_free_name`] and truncation keep apart from the stem; anything
/// longer is more likely part of the name than a type.
const MAX_EXTENSION_BYTES: usize = 16;

/// A SHA-256 digest the user expects the download to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Sha256Digest, ApiError> {
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) => Ok(Sha256Digest(bytes)),
            Err(_) => Err(ApiError::invalid_request(format!(
                "`{SHA256_PARAM}` must be 64 hexadecimal digits (a SHA-256 digest)"
            ))),
        }
    }

    /// Lower-case hex, as stored in records and compared with the storage layer's digest.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A validated start request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// The URL, normalised and allowed by the policy.
    pub url: CheckedUrl,
    /// The directory to download into.
    pub directory: StoragePath,
    /// The wanted file name (before collision handling); one valid path segment.
    pub filename: String,
    /// Whether `filename` was given explicitly (rather than derived from the URL).
    pub filename_explicit: bool,
    /// The whole transfer's deadline.
    pub timeout_secs: u64,
    /// The expected digest, if the user asked for verification.
    pub sha256: Option<Sha256Digest>,
}

impl StartRequest {
    /// `directory/filename`.
    pub fn file_path(&self) -> Result<StoragePath, ApiError> {
        Ok(self.directory.join(&self.filename)?)
    }
}

/// A start request that failed validation, with what the failure body and the history record
/// need: the best name and path that could be made out of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedStart {
    /// Why (`INVALID_URL`, `DOMAIN_BLOCKED`, `INVALID_PATH`, `INVALID_REQUEST`).
    pub error: ApiError,
    /// The URL as given (trimmed, capped at [`MAX_URL_BYTES`](super::url_policy::MAX_URL_BYTES)
    /// bytes) or normalised if it was valid.
    pub url: String,
    /// Best-effort file name.
    pub filename: String,
    /// Best-effort `directory/filename`.
    pub file_path: String,
}

/// Validates the start request's query for `directory`.
///
/// Order of checks, so the first reported problem is the most fundamental: URL (form, then
/// policy), `filename`, `timeout`, `sha256`.
pub fn parse_start_request(
    query: &Query,
    directory: &StoragePath,
    policy: &DownloadPolicy,
) -> Result<StartRequest, Box<RejectedStart>> {
    let raw_url = query.get(URL_PARAM).unwrap_or("");
    let explicit = query.get(FILENAME_PARAM).filter(|name| !name.is_empty());
    let reject = |error: ApiError, url: String| {
        let filename = best_effort_filename(explicit, raw_url);
        let file_path = match directory.join(&filename) {
            Ok(path) => path.to_string(),
            Err(_) if directory.is_root() => filename.clone(),
            Err(_) => format!("{directory}/{filename}"),
        };
        Box::new(RejectedStart { error, url, filename, file_path })
    };
    let shown_url = || redact_credentials(crate::text::clip(raw_url.trim(), super::url_policy::MAX_URL_BYTES));

    let url = check_url(raw_url, policy).map_err(|error| reject(error, shown_url()))?;
    let normalised = url.as_str().to_owned();
    let checked = (|| {
        let (filename, filename_explicit) = match explicit {
            Some(name) => (validate_explicit_filename(name)?, true),
            None => (filename_from_url(&url), false),
        };
        // The URL's own name may be the reserved `api` at the root.
        directory.join(&filename)?.refuse_reserved()?;
        let timeout_secs = parse_timeout(query.get(TIMEOUT_PARAM))?;
        let sha256 = match query.get(SHA256_PARAM).filter(|value| !value.is_empty()) {
            Some(text) => Some(Sha256Digest::from_hex(text)?),
            None => None,
        };
        Ok(StartRequest {
            url: url.clone(),
            directory: directory.clone(),
            filename,
            filename_explicit,
            timeout_secs,
            sha256,
        })
    })();
    checked.map_err(|error: ApiError| reject(error, normalised))
}

/// Replaces the userinfo of a URL (`user:pass@`) with `***@`, so a refused URL can be
/// recorded in history without its credentials. The authority ends where [`check_url`] ends
/// it (the first `/`, `?` or `#`), and everything up to its last `@` goes, so a backslash
/// trick (`user:pw@evil.com\@good.com`) cannot keep a password visible.
pub fn redact_credentials(raw: &str) -> String {
    let Some(authority_start) = raw.find("://").map(|at| at + 3) else { return raw.to_owned() };
    let rest = &raw[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &raw[..authority_start], &rest[at..]),
        None => raw.to_owned(),
    }
}

/// Parses `timeout`: absent or empty → [`DEFAULT_TIMEOUT_SECS`]; otherwise plain decimal
/// digits within [`MIN_TIMEOUT_SECS`]`..=`[`MAX_TIMEOUT_SECS`], else `400 INVALID_REQUEST`.
pub fn parse_timeout(value: Option<&str>) -> Result<u64, ApiError> {
    let Some(text) = value.filter(|text| !text.is_empty()) else {
        return Ok(DEFAULT_TIMEOUT_SECS);
    };
    let out_of_range = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "`{TIMEOUT_PARAM}` must be a whole number of seconds from {MIN_TIMEOUT_SECS} to {MAX_TIMEOUT_SECS}"
            ),
        )
    };
    // Digits only: `+5`, `-1`, ` 5`, `5s`, `1e3`, `0x10` are all refused, and huge values are
    // refused without overflowing.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(out_of_range());
    }
    match text.parse::<u64>() {
        Ok(secs) if (MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&secs) => Ok(secs),
        _ => Err(out_of_range()),
    }
}

/// Checks an explicit `filename`: it must be one valid path segment, or `400 INVALID_PATH`.
pub fn validate_explicit_filename(name: &str) -> Result<String, ApiError> {
    match StoragePath::root().join(name) {
        Ok(_) => Ok(name.to_owned()),
        Err(err) => Err(ApiError::new(ErrorCode::InvalidPath, format!("`{FILENAME_PARAM}`: {err}"))),
    }
}

/// The file name a URL suggests: its last path segment, decoded and sanitised
/// ([`sanitize_filename`]).
pub fn filename_from_url(url: &CheckedUrl) -> String {
    filename_from_segment(url.last_path_segment())
}

fn filename_from_segment(encoded: &str) -> String {
    // A segment with a malformed escape is used as it is rather than refused: it is only a name.
    let decoded = percent_decode_once(encoded).unwrap_or_else(|_| encoded.to_owned());
    sanitize_filename(&decoded)
}

/// Turns any text into one safe path segment (see the module docs); never fails.
pub fn sanitize_filename(raw: &str) -> String {
    let replaced: String = raw
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let capped = cap_name(trimmed, MAX_SEGMENT_BYTES);
    // Truncation can leave trailing dots or spaces again; a second trim is idempotent.
    let capped = capped.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if capped.is_empty() {
        FALLBACK_FILENAME.to_owned()
    } else {
        capped.to_owned()
    }
}

/// Bidirectional-text overrides and isolates, which can make `evil\u{202e}fdp.exe` display as
/// `evilexe.pdf`; dropped from names a remote URL suggests.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The name for a rejected request's body: the explicit name if it is valid, else one
/// sanitised from the raw URL text, else the fallback.
fn best_effort_filename(explicit: Option<&str>, raw_url: &str) -> String {
    if let Some(name) = explicit {
        if let Ok(valid) = validate_explicit_filename(name) {
            return valid;
        }
        return sanitize_filename(name);
    }
    let without_scheme = raw_url.trim().split_once("://").map_or("", |(_, rest)| rest);
    let before_query = without_scheme.split(['?', '#']).next().unwrap_or("");
    match before_query.split_once('/') {
        Some((_, path)) => filename_from_segment(path.rsplit('/').next().unwrap_or("")),
        None => FALLBACK_FILENAME.to_owned(),
    }
}

/// Splits `name` into stem and extension (with its dot): the last dot not at the start, with
/// `.tar.*` kept together; no extension when the dot is the last character or the extension
/// is long or contains white space.
pub fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.').filter(|&dot| dot > 0 && dot + 1 < name.len()) else {
        return (name, "");
    };
    let (mut stem, mut extension) = name.split_at(dot);
    if extension.len() > MAX_EXTENSION_BYTES || extension.contains(char::is_whitespace) {
        return (name, "");
    }
    if stem.len() > 4 && stem.is_char_boundary(stem.len() - 4) && stem[stem.len() - 4..].eq_ignore_ascii_case(".tar") {
        (stem, extension) = name.split_at(stem.len() - 4);
    }
    (stem, extension)
}

/// The name to try on attempt `attempt` when `name` is taken: attempt 0 is `name` itself,
/// then `stem (n).ext` (`data (1).csv`, `archive (1).tar.gz`, `README (1)`). The result stays
/// within 255 bytes by shortening the stem on a character boundary.
pub fn next_free_name(name: &str, attempt: u32) -> String {
    if attempt == 0 {
        return name.to_owned();
    }
    let (stem, extension) = split_extension(name);
    let suffix = format!(" ({attempt}){extension}");
    let stem = crate::text::clip(stem, MAX_SEGMENT_BYTES.saturating_sub(suffix.len()));
    format!("{stem}{suffix}")
}

/// Caps a name at `max` bytes, shortening the stem so a short extension survives.
fn cap_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, extension) = split_extension(name);
    format!("{}{extension}", crate::text::clip(stem, max - extension.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DownloadPolicy {
        DownloadPolicy::default()
    }

    fn dir(raw: &str) -> StoragePath {
        StoragePath::parse(raw).unwrap()
    }

    fn start(raw_query: &str) -> Result<StartRequest, Box<RejectedStart>> {
        parse_start_request(&Query::parse(raw_query).unwrap(), &dir("Downloads"), &policy())
    }

    fn encode(url: &str) -> String {
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn a_download_never_lands_on_the_reserved_top_level_name() {
        let root = StoragePath::root();
        for query in [
            format!("download={}", encode("https://example.com/api")),
            format!("download={}&filename=api", encode("https://example.com/x")),
        ] {
            let refused = parse_start_request(&Query::parse(&query).unwrap(), &root, &policy()).unwrap_err();
            assert_eq!(refused.error.status(), 400, "{query}");
            assert!(refused.error.message.contains("reserved"), "{}", refused.error.message);
        }
        let nested = start(&format!("download={}", encode("https://example.com/api"))).unwrap();
        assert_eq!(nested.file_path().unwrap(), dir("Downloads/api"));
    }

    #[test]
    fn reference_example() {
        let request = start(&format!("download={}", encode("https://files.example.com/data.csv"))).unwrap();
        assert_eq!(request.url.as_str(), "https://files.example.com/data.csv");
        assert_eq!(request.directory, dir("Downloads"));
        assert_eq!(request.filename, "data.csv");
        assert!(!request.filename_explicit);
        assert_eq!(request.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(request.sha256, None);
        assert_eq!(request.file_path().unwrap(), dir("Downloads/data.csv"));

        let query =
            format!("download={}&filename=renamed-data.csv&timeout=600", encode("https://files.example.com/data.csv"));
        let request = start(&query).unwrap();
        assert_eq!(
            (request.filename.as_str(), request.filename_explicit, request.timeout_secs),
            ("renamed-data.csv", true, 600)
        );
    }

    #[test]
    fn rejected_requests_keep_a_best_effort_name() {
        let rejected = start("download=ftp://files.example.com/data.csv").unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidUrl);
        assert_eq!((rejected.filename.as_str(), rejected.file_path.as_str()), ("data.csv", "Downloads/data.csv"));
        assert_eq!(rejected.url, "ftp://files.example.com/data.csv");

        let rejected = start(&format!("download={}", encode("http://127.0.0.1/x/y.bin?q#f"))).unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::DomainBlocked);
        assert_eq!(rejected.filename, "y.bin");

        let rejected = start("download=").unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidUrl);
        assert_eq!(rejected.filename, FALLBACK_FILENAME);
        assert_eq!(rejected.file_path, "Downloads/download");

        let rejected = start("filename=x.txt").unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidUrl);
        assert_eq!(rejected.filename, "x.txt");

        let rejected = start("download=http://example.com/a.csv&timeout=0").unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidRequest);
        assert_eq!(rejected.url, "http://example.com/a.csv");
        assert_eq!(rejected.file_path, "Downloads/a.csv");

        let rejected = start("download=http://example.com/a.csv&filename=..%2F..%2Fetc%2Fpasswd").unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidPath);
        assert_eq!(rejected.filename, "_.._etc_passwd");

        let huge = format!("download=http://{}", "a".repeat(5000));
        let rejected = start(&huge).unwrap_err();
        assert!(rejected.url.len() <= super::super::url_policy::MAX_URL_BYTES);
    }

    #[test]
    fn refused_urls_are_recorded_without_credentials() {
        let rejected =
            start(&format!("download={}", encode("https://bob:hunter2@files.example.com/a.csv"))).unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidUrl);
        assert_eq!(rejected.url, "https://***@files.example.com/a.csv");
        assert_eq!(rejected.filename, "a.csv");
        assert!(!rejected.error.message.contains("hunter2"));
        assert_eq!(redact_credentials("http://a:b@c@host/x@y"), "http://***@host/x@y");
        assert_eq!(redact_credentials("http://host/path@x"), "http://host/path@x");
        assert_eq!(redact_credentials("http://host?u=a@b"), "http://host?u=a@b");
        assert_eq!(redact_credentials("http://user:pw@evil.com\\@good.com/"), "http://***@good.com/");
        assert_eq!(redact_credentials("http://u:p\\w@host/"), "http://***@host/");
        assert_eq!(redact_credentials("no scheme@host"), "no scheme@host");
        assert_eq!(redact_credentials("http://@"), "http://***@");
    }

    #[test]
    fn root_directory_paths() {
        let request = parse_start_request(
            &Query::parse("download=http://example.com/f.txt").unwrap(),
            &StoragePath::root(),
            &policy(),
        )
        .unwrap();
        assert_eq!(request.file_path().unwrap().as_str(), "f.txt");
        let rejected =
            parse_start_request(&Query::parse("download=nope").unwrap(), &StoragePath::root(), &policy()).unwrap_err();
        assert_eq!(rejected.file_path, "download");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(None).unwrap(), 300);
        assert_eq!(parse_timeout(Some("")).unwrap(), 300);
        assert_eq!(parse_timeout(Some("1")).unwrap(), 1);
        assert_eq!(parse_timeout(Some("86400")).unwrap(), 86_400);
        assert_eq!(parse_timeout(Some("0600")).unwrap(), 600);
        for bad in [
            "0",
            "86401",
            "-1",
            "+5",
            " 5",
            "5 ",
            "5s",
            "1.5",
            "1e3",
            "0x10",
            "abc",
            "18446744073709551616",
            "99999999999999999999999999999",
            "٣",
        ] {
            let err = parse_timeout(Some(bad)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad}");
            assert!(err.message.contains("timeout"), "{bad}");
        }
        let rejected = start("download=http://example.com/a&timeout=abc").unwrap_err();
        assert_eq!(rejected.error.status(), 400);
    }

    #[test]
    fn sha256_parameter() {
        let digest = "AB".repeat(32);
        let request = start(&format!("download=http://example.com/a&sha256={digest}")).unwrap();
        assert_eq!(request.sha256.unwrap().to_hex(), "ab".repeat(32));
        assert_eq!(request.sha256.unwrap().0, [0xab; 32]);
        assert_eq!(start("download=http://example.com/a&sha256=").unwrap().sha256, None);
        for bad in ["abc", &"a".repeat(63), &"a".repeat(65), &"g".repeat(64), &format!("{} ", "a".repeat(63))] {
            let rejected = start(&format!("download=http://example.com/a&sha256={}", encode(bad))).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn explicit_filenames_are_validated_not_changed() {
        for bad in ["a/b", "../x", "..", ".", "a\\b", "x\0", "tab\there", &"n".repeat(256), "/"] {
            let query = format!("download=http://example.com/a&filename={}", encode(bad));
            let rejected = start(&query).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidPath, "{bad:?}");
            assert!(rejected.error.message.contains("filename"), "{bad:?}");
        }
        for good in [".hidden", "...", "my file (1).csv", "Été 2024.pdf", "a..b", " spaced ", &"n".repeat(255)] {
            let query = format!("download=http://example.com/a&filename={}", encode(good));
            assert_eq!(start(&query).unwrap().filename, good, "{good:?}");
        }
        // Empty counts as absent.
        assert_eq!(start("download=http://example.com/a.bin&filename=").unwrap().filename, "a.bin");
    }

    #[test]
    fn explicit_filename_must_fit_the_path() {
        let deep = dir(&vec!["d"; crate::path::MAX_DEPTH].join("/"));
        let query = Query::parse("download=http://example.com/a&filename=x").unwrap();
        let rejected = parse_start_request(&query, &deep, &policy()).unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::InvalidPath);
        assert_eq!(rejected.file_path, format!("{deep}/x"));
    }

    #[test]
    fn names_from_urls() {
        let name = |url: &str| filename_from_url(&check_url(url, &policy()).unwrap());
        assert_eq!(name("http://x.org/dir/report%202024.pdf"), "report 2024.pdf");
        assert_eq!(name("http://x.org/dir/r%C3%A9sum%C3%A9.pdf?dl=1"), "résumé.pdf");
        assert_eq!(name("http://x.org/a/%2e%2e"), FALLBACK_FILENAME);
        assert_eq!(name("http://x.org/a/..%2F..%2Fetc%2Fpasswd"), "_.._etc_passwd");
        assert_eq!(name("http://x.org/a%5C..%5Cwin.ini"), "a_.._win.ini");
        assert_eq!(name("http://x.org/.bashrc"), "bashrc");
        assert_eq!(name("http://x.org/..hidden..."), "hidden");
        assert_eq!(name("http://x.org/evil%00name%0A.txt"), "evilname.txt");
        assert_eq!(name("http://x.org/dir/"), FALLBACK_FILENAME);
        assert_eq!(name("http://x.org"), FALLBACK_FILENAME);
        assert_eq!(name("http://x.org/%20%20"), FALLBACK_FILENAME);
        assert_eq!(name("http://x.org/bad%zzescape"), "bad%zzescape");
        assert_eq!(name("http://x.org/bad%FFutf8"), "bad%FFutf8");
        assert_eq!(name("http://x.org/%252e%252e"), "%2e%2e");
        let long = name(&format!("http://x.org/{}", "é".repeat(300)));
        assert!(long.len() <= MAX_SEGMENT_BYTES && long.chars().all(|c| c == 'é'));
        assert_eq!(long.len(), 254);
    }

    #[test]
    fn sanitised_names_are_always_valid_segments() {
        let nasty = [
            "",
            ".",
            "..",
            "...",
            "/",
            "\\",
            "a/b",
            "\0",
            "\u{7f}",
            "\u{85}x",
            " ",
            " . ",
            "a\r\nb",
            "..%2F",
            "\u{202e}txt.exe",
            "CON",
            "😀",
            &"x".repeat(1000),
            &format!("{}😀", "x".repeat(254)),
        ];
        for raw in nasty {
            let name = sanitize_filename(raw);
            assert!(StoragePath::root().join(&name).is_ok(), "{raw:?} → {name:?}");
            assert!(!name.starts_with('.'), "{raw:?} → {name:?}");
        }
        assert_eq!(sanitize_filename(&format!("{}😀", "x".repeat(254))), "x".repeat(254));
        assert_eq!(sanitize_filename("a/b\\c"), "a_b_c");
        assert_eq!(sanitize_filename("evil\u{202e}fdp.exe"), "evilfdp.exe");
        // Shortening keeps a short extension.
        let long = sanitize_filename(&format!("{}.csv", "r".repeat(300)));
        assert_eq!(long.len(), MAX_SEGMENT_BYTES);
        assert!(long.ends_with("r.csv"));
    }

    #[test]
    fn extensions() {
        assert_eq!(split_extension("data.csv"), ("data", ".csv"));
        assert_eq!(split_extension("archive.tar.gz"), ("archive", ".tar.gz"));
        assert_eq!(split_extension("Archive.TAR.XZ"), ("Archive", ".TAR.XZ"));
        assert_eq!(split_extension(".tar.gz"), (".tar", ".gz"));
        assert_eq!(split_extension("my.report.v2.pdf"), ("my.report.v2", ".pdf"));
        assert_eq!(split_extension("README"), ("README", ""));
        assert_eq!(split_extension(".env"), (".env", ""));
        assert_eq!(split_extension("file."), ("file.", ""));
        assert_eq!(split_extension("notes.this is text"), ("notes.this is text", ""));
        assert_eq!(split_extension("x.averyveryverylongextension"), ("x.averyveryverylongextension", ""));
        assert_eq!(split_extension("é.tar.gz"), ("é", ".tar.gz"));
    }

    #[test]
    fn free_names() {
        assert_eq!(next_free_name("data.csv", 0), "data.csv");
        assert_eq!(next_free_name("data.csv", 1), "data (1).csv");
        assert_eq!(next_free_name("data.csv", 2), "data (2).csv");
        assert_eq!(next_free_name("archive.tar.gz", 1), "archive (1).tar.gz");
        assert_eq!(next_free_name("name", 1), "name (1)");
        assert_eq!(next_free_name(".env", 3), ".env (3)");
        assert_eq!(next_free_name("data (1).csv", 1), "data (1) (1).csv");
        let long = format!("{}.csv", "é".repeat(125));
        assert_eq!(long.len(), 254);
        let renamed = next_free_name(&long, 123);
        assert!(renamed.len() <= MAX_SEGMENT_BYTES, "{}", renamed.len());
        assert!(renamed.ends_with(" (123).csv"));
        assert!(StoragePath::root().join(&renamed).is_ok());
    }
}

//! Query strings and the gateway's dispatch rule.
//!
//! Spin routes by path only, and the reference API puts several endpoints on the same path
//! (`/{dir}?download=`, `?downloads=`, `?download_history=`, plain file access), so which
//! component serves a request under `/...` is decided here, from the query.

use crate::error::{ApiError, ErrorCode};
use crate::path::percent_decode_once;

/// Largest query string accepted, in bytes (a URL to download must fit in it).
pub const MAX_QUERY_BYTES: usize = 8192;

/// A parsed query string: `application/x-www-form-urlencoded` pairs in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query (without `?`). `+` means space and `%XX` escapes are decoded once,
    /// as browsers and `curl --data-urlencode` encode them. Malformed escapes or non-UTF-8
    /// values are `400 INVALID_REQUEST`.
    pub fn parse(raw: &str) -> Result<Query, ApiError> {
        if raw.len() > MAX_QUERY_BYTES {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("query longer than {MAX_QUERY_BYTES} bytes")));
        }
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_decode_once(&s.replace('+', " ")).map_err(|e| {
                    ApiError::new(ErrorCode::InvalidRequest, format!("malformed query parameter {name:?}: {e}"))
                })
            };
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Query { pairs })
    }

    /// The first value of `name`, if present (an empty value counts as present).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether `name` appears at all.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Which component serves a request under `/...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayTarget {
    /// `?download=URL`: start a server-side download.
    StartDownload,
    /// `?downloads`: active downloads in a directory.
    ActiveDownloads,
    /// `?download_history`: finished and failed downloads.
    DownloadHistory,
    /// Anything else: file access.
    Files,
}

impl GatewayTarget {
    /// Decides from the query. More than one download parameter is ambiguous and refused,
    /// so a request never silently does something other than what one of them asked.
    pub fn for_query(query: &Query) -> Result<GatewayTarget, ApiError> {
        let wanted: Vec<GatewayTarget> = [
            ("download", GatewayTarget::StartDownload),
            ("downloads", GatewayTarget::ActiveDownloads),
            ("download_history", GatewayTarget::DownloadHistory),
        ]
        .into_iter()
        .filter(|(name, _)| query.has(name))
        .map(|(_, target)| target)
        .collect();
        match wanted.as_slice() {
            [] => Ok(GatewayTarget::Files),
            [one] => Ok(*one),
            _ => Err(ApiError::invalid_request(
                "use only one of `download`, `downloads` and `download_history` per request",
            )),
        }
    }

    /// The private component id (`http://<id>.spin.internal`) that serves this target.
    pub fn component(self) -> &'static str {
        match self {
            GatewayTarget::StartDownload => "download",
            GatewayTarget::ActiveDownloads => "downloads",
            GatewayTarget::DownloadHistory => "history",
            GatewayTarget::Files => "files",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_form_encoding() {
        let q = Query::parse("download=https%3A%2F%2Fx.org%2Fa%20b.csv&filename=my+file.csv&timeout=&flag").unwrap();
        assert_eq!(q.get("download"), Some("https://x.org/a b.csv"));
        assert_eq!(q.get("filename"), Some("my file.csv"));
        assert_eq!(q.get("timeout"), Some(""));
        assert!(q.has("flag"));
        assert_eq!(q.get("missing"), None);
        assert!(Query::parse("").unwrap().pairs().is_empty());
    }

    #[test]
    fn rejects_malformed_queries() {
        for bad in ["a=%zz", "a=%e9", "%=1"] {
            assert_eq!(Query::parse(bad).unwrap_err().code, ErrorCode::InvalidRequest, "{bad}");
        }
        assert!(Query::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    #[test]
    fn dispatches_by_query() {
        let target = |q: &str| GatewayTarget::for_query(&Query::parse(q).unwrap());
        assert_eq!(target("download=http://x").unwrap(), GatewayTarget::StartDownload);
        assert_eq!(target("downloads=").unwrap(), GatewayTarget::ActiveDownloads);
        assert_eq!(target("download_history").unwrap(), GatewayTarget::DownloadHistory);
        assert_eq!(target("").unwrap(), GatewayTarget::Files);
        assert_eq!(target("foo=bar").unwrap(), GatewayTarget::Files);
        assert!(target("download=x&downloads=").is_err());
        assert_eq!(GatewayTarget::Files.component(), "files");
    }
}

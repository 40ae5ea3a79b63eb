//! The app's own static pages: the web console and the OpenAPI document, served by the `console`
//! component from bytes compiled into it.
//!
//! Everything under the top-level name `api` belongs to the app ([`crate::path::RESERVED_TOP_LEVEL`]),
//! so the console lives at [`CONSOLE_PREFIX`] and the document at [`OPENAPI_PATH`] without ever
//! shadowing a user's file. Answers carry a strict `Content-Security-Policy` (no inline script or
//! style, nothing from other origins, no framing) and are revalidated by `ETag`, so a new deploy is
//! picked up at once.

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::if_none_match_matches;

/// Where the console is served; `GET` of exactly this path is its page.
pub const CONSOLE_PREFIX: &str = "/api/console/";
/// The console's page, also served at [`CONSOLE_PREFIX`] itself.
pub const CONSOLE_INDEX: &str = "/api/console/index.html";
/// Where the OpenAPI document is served (no token needed).
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// The console's policy: its own scripts, styles and API calls only. `img-src data:` is for the
/// stylesheet's inline icons; `form-action 'none'` because every form is handled by script.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One file compiled into the component.
#[derive(Clone, Copy, Debug)]
pub struct WebAsset {
    /// The request path that serves it, e.g. `/api/console/console.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// What to answer for a static path.
#[derive(Debug, PartialEq, Eq)]
pub struct WebAnswer {
    /// `200`, or `304` when the client's copy is current.
    pub status: u16,
    /// Every header to send, `Content-Length` included: for `HEAD` it is the asset's length, as
    /// `GET` would send, though no body follows.
    pub headers: Vec<(&'static str, String)>,
    /// The body: the asset for `GET`, empty for `HEAD` and `304`.
    pub body: &'static [u8],
}

/// Answers `method path` from `assets`: the console page for [`CONSOLE_PREFIX`] and its
/// `index.html`, an asset by its exact path, `404` for anything else under the prefix and
/// `405` (with `Allow`) for methods other than `GET`/`HEAD`.
pub fn answer(
    assets: &[WebAsset],
    method: &str,
    path: &str,
    if_none_match: Option<&str>,
) -> Result<WebAnswer, ApiError> {
    // Checked first: a page of any path takes only these.
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(ApiError::method_not_allowed("GET, HEAD")),
    };
    // `/api/console` without its slash: the page's relative links need the directory form.
    if path == CONSOLE_PREFIX.trim_end_matches('/') {
        let headers = vec![("location", CONSOLE_PREFIX.to_string()), ("content-length", "0".to_string())];
        return Ok(WebAnswer { status: 308, headers, body: b"" });
    }
    let wanted = if path == CONSOLE_PREFIX { CONSOLE_INDEX } else { path };
    let asset = assets
        .iter()
        .find(|asset| asset.path == wanted)
        .ok_or_else(|| ApiError::not_found(format!("no page `{}`", printable(path))))?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(asset.bytes)[..12]));
    let mut headers = vec![
        ("content-type", asset.content_type.to_string()),
        ("etag", etag.clone()),
        // Always revalidated (cheap, by ETag), so a deploy is seen at once.
        ("cache-control", "no-cache".to_string()),
        ("x-content-type-options", "nosniff".to_string()),
        ("referrer-policy", "no-referrer".to_string()),
    ];
    if asset.path == OPENAPI_PATH {
        // A public description: other origins' API tools (Swagger UI, generators) may read it.
        headers.push(("access-control-allow-origin", "*".to_string()));
    } else {
        headers.push(("content-security-policy", CONSOLE_CSP.to_string()));
        headers.push(("x-frame-options", "DENY".to_string()));
    }
    if if_none_match.is_some_and(|header| if_none_match_matches(header, &etag)) {
        return Ok(WebAnswer { status: 304, headers, body: b"" });
    }
    headers.push(("content-length", asset.bytes.len().to_string()));
    Ok(WebAnswer { status: 200, headers, body: if head_only { b"" } else { asset.bytes } })
}

/// Whether a request is a person opening the app's root in a browser without a token: it is
/// sent to the console instead of getting a `401` it cannot act on. API clients (no `text/html`
/// in `Accept`, or any `Authorization`) are unaffected.
pub fn is_browser_landing(
    method: &str,
    path_with_query: &str,
    accept: Option<&str>,
    authorization: Option<&str>,
) -> bool {
    method == "GET"
        && path_with_query == "/"
        && authorization.is_none()
        && accept.is_some_and(|accept| accept.split(',').any(|kind| kind.trim().starts_with("text/html")))
}

/// A path as it may appear in a message: bounded, control characters dropped.
fn printable(path: &str) -> String {
    path.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSETS: &[WebAsset] = &[
        WebAsset {
            path: "/api/console/index.html",
            content_type: "text/html; charset=utf-8",
            bytes: b"<!doctype html>",
        },
        WebAsset { path: "/api/console/console.js", content_type: "text/javascript; charset=utf-8", bytes: b"1;" },
        WebAsset { path: OPENAPI_PATH, content_type: "application/json", bytes: b"{}" },
    ];

    fn header<'a>(answer: &'a WebAnswer, name: &str) -> Option<&'a str> {
        answer.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    #[test]
    fn the_console_page_and_assets_are_served_with_a_strict_policy() {
        for path in ["/api/console/", "/api/console/index.html"] {
            let page = answer(ASSETS, "GET", path, None).unwrap();
            assert_eq!((page.status, page.body), (200, &b"<!doctype html>"[..]), "{path}");
            assert_eq!(header(&page, "content-type"), Some("text/html; charset=utf-8"));
            let csp = header(&page, "content-security-policy").unwrap();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
            assert_eq!(header(&page, "x-frame-options"), Some("DENY"));
        }
        let script = answer(ASSETS, "GET", "/api/console/console.js", None).unwrap();
        assert_eq!(header(&script, "content-type"), Some("text/javascript; charset=utf-8"));
        assert_eq!(header(&script, "x-content-type-options"), Some("nosniff"));
    }

    #[test]
    fn the_openapi_document_is_public_and_readable_cross_origin() {
        let doc = answer(ASSETS, "GET", OPENAPI_PATH, None).unwrap();
        assert_eq!((doc.status, doc.body), (200, &b"{}"[..]));
        assert_eq!(header(&doc, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&doc, "content-security-policy"), None);
        // The document is not reachable as a console asset, nor the other way round.
        assert_eq!(answer(ASSETS, "GET", "/api/console/openapi.json", None).unwrap_err().status(), 404);
        assert_eq!(answer(ASSETS, "GET", "/api/openapi.json/", None).unwrap_err().status(), 404);
    }

    #[test]
    fn revalidation_head_and_other_methods() {
        let first = answer(ASSETS, "GET", "/api/console/console.js", None).unwrap();
        let etag = header(&first, "etag").unwrap().to_string();
        let again = answer(ASSETS, "GET", "/api/console/console.js", Some(&etag)).unwrap();
        assert_eq!((again.status, again.body), (304, &b""[..]));
        let head = answer(ASSETS, "HEAD", "/api/console/console.js", None).unwrap();
        assert_eq!((head.status, head.body), (200, &b""[..]));
        // HEAD tells the length GET would send.
        let length = first.body.len().to_string();
        assert_eq!(
            (header(&head, "content-length"), header(&first, "content-length")),
            (Some(&*length), Some(&*length))
        );
        assert_eq!(header(&again, "content-length"), None, "a 304 has no body to measure");
        for (method, path) in [("POST", "/api/console/"), ("TRACE", "/api/console"), ("PUT", OPENAPI_PATH)] {
            let refused = answer(ASSETS, method, path, None).unwrap_err();
            assert_eq!(refused.status(), 405, "{method} {path}");
            assert_eq!(refused.extra_headers(), &[("allow", "GET, HEAD".to_string())]);
        }
    }

    #[test]
    fn unknown_pages_are_404_and_the_bare_prefix_redirects() {
        for path in ["/api/console/../secret", "/api/console/nope.js", "/api/consolex", "/api/console/index.html/"] {
            let missing = answer(ASSETS, "GET", path, None).unwrap_err();
            assert_eq!(missing.status(), 404, "{path}");
        }
        let bare = answer(ASSETS, "GET", "/api/console", None).unwrap();
        assert_eq!((bare.status, header(&bare, "location")), (308, Some(CONSOLE_PREFIX)));
    }

    #[test]
    fn only_a_browser_without_a_token_opening_the_root_lands_on_the_console() {
        let html = Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        assert!(is_browser_landing("GET", "/", html, None));
        assert!(!is_browser_landing("GET", "/", html, Some("Bearer x")));
        assert!(!is_browser_landing("GET", "/", Some("*/*"), None));
        assert!(!is_browser_landing("GET", "/", None, None));
        assert!(!is_browser_landing("GET", "/docs/", html, None));
        assert!(!is_browser_landing("GET", "/?download_history=", html, None));
        assert!(!is_browser_landing("HEAD", "/", html, None));
    }
}

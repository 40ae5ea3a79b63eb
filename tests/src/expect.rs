//! Response checks with readable failure messages.

use crate::*;

/// How much of a body failure messages show by default (see [`short_to`]).
pub const SHORT_LIMIT: usize = 600;

/// `text`, cut to at most `limit` bytes (at a char boundary) plus its full length when longer.
pub fn short_to(text: &str, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    } else {
        text.to_string()
    }
}

/// [`short_to`] with [`SHORT_LIMIT`].
pub fn short(text: &str) -> String {
    short_to(text, SHORT_LIMIT)
}

/// Asserts `resp.status == status`; the message shows the headers and up to `limit` bytes of the
/// body.
pub fn expect_status_to(resp: &Resp, status: u16, what: &str, limit: usize) {
    assert_eq!(
        resp.status,
        status,
        "{what}: expected status {status}, got {} with headers {:?} and body {:?}",
        resp.status,
        resp.headers,
        short_to(&resp.text(), limit)
    );
}

/// [`expect_status_to`] with [`SHORT_LIMIT`].
pub fn expect_status(resp: &Resp, status: u16, what: &str) {
    expect_status_to(resp, status, what, SHORT_LIMIT)
}

/// Status plus the error envelope `{"success":false,"error":CODE,"message":"…"}` (JSON
/// content type, non-empty message); returns the body.
pub fn expect_error(resp: &Resp, status: u16, code: &str, what: &str) -> Json {
    expect_status(resp, status, what);
    let content_type = resp.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: error response content-type is {content_type:?}, expected application/json; body {:?}",
        short(&resp.text())
    );
    let body: Json = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {:?}", short(&resp.text())));
    assert_eq!(body["success"], serde_json::json!(false), "{what}: envelope {body}");
    assert_eq!(body["error"], serde_json::json!(code), "{what}: envelope {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: envelope has no message: {body}");
    body
}

/// The `WWW-Authenticate: Bearer ...` challenge of a 401.
pub fn expect_bearer_challenge(resp: &Resp, what: &str) {
    let challenge = resp
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate; headers {:?}", resp.headers));
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "{what}: WWW-Authenticate is {challenge:?}, expected a Bearer challenge"
    );
}

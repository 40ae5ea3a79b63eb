//! S3-compatible object storage, sans-IO: the operator's settings, the signed requests each
//! [`ObjectStore`](crate::storage::ObjectStore) operation needs, and what their responses mean.
//! Signing is `rusty-s3`'s (SigV4 presigned URLs: the signature is in the query, so bodies are
//! streamed unsigned and no request needs the whole payload hashed first). `downlink-spin`
//! sends the requests; nothing here does I/O or reads a clock.

use std::fmt;
use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::blob::{MAX_PART_BYTES, MIN_PART_BYTES};
use crate::config::Settings;
use crate::error::ApiError;
use crate::path::StoragePath;
use crate::storage::objects::{object_key, ObjectLocation, PendingUpload, PutCondition, UploadedPart};
use crate::storage::StorageError;

/// Spin variable: where file bytes go, `kv` (default) or `s3`.
pub const STORAGE_BACKEND_VARIABLE: &str = "storage_backend";
/// Spin variable: the S3 endpoint URL, e.g. `https://s3.eu-central-1.amazonaws.com`.
pub const ENDPOINT_VARIABLE: &str = "s3_endpoint";
/// Spin variable: the bucket's region (`us-east-1` for most non-AWS servers).
pub const REGION_VARIABLE: &str = "s3_region";
/// Spin variable: the bucket name.
pub const BUCKET_VARIABLE: &str = "s3_bucket";
/// Spin variable: the access key id.
pub const ACCESS_KEY_VARIABLE: &str = "s3_access_key_id";
/// Spin variable (secret): the secret access key.
pub const SECRET_KEY_VARIABLE: &str = "s3_secret_access_key";
/// Spin variable: `true` for path-style URLs (`endpoint/bucket/key`, needed by most local
/// servers and IP endpoints), `false` (default) for virtual-host style (`bucket.endpoint/key`).
pub const PATH_STYLE_VARIABLE: &str = "s3_path_style";
/// Spin variable: prepended to every object key (e.g. `downlink/`); default none.
pub const PREFIX_VARIABLE: &str = "s3_prefix";
/// Spin variable: multipart part size in MiB (5–64, default 8); bounds a write's memory.
pub const PART_SIZE_VARIABLE: &str = "s3_part_size_mib";

/// The `s3_endpoint` default in `spin.toml`: a reserved name that never resolves, there only
/// because `allowed_outbound_hosts` needs a valid entry while the backend is `kv`. It counts
/// as unset.
pub const PLACEHOLDER_ENDPOINT: &str = "https://s3.invalid";

/// Default part size in MiB.
pub const DEFAULT_PART_SIZE_MIB: u64 = 8;

/// How long a signed request stays valid: long enough for a slow part, short enough that a
/// leaked URL is soon useless.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Where file bytes go, as configured.
#[derive(Debug)]
pub enum BytesBackend {
    /// Chunks in the key-value store.
    KeyValue,
    /// An S3-compatible bucket (boxed: the client is large, and loaded once per request).
    S3(Box<S3Client>),
}

impl BytesBackend {
    /// The configured backend; any missing or invalid setting is a `500` naming its variable.
    pub fn load<F: Fn(&str) -> Option<String>>(settings: &Settings<F>) -> Result<BytesBackend, ApiError> {
        let backend = settings.text(STORAGE_BACKEND_VARIABLE);
        match backend.to_ascii_lowercase().as_str() {
            "" | "kv" => Ok(BytesBackend::KeyValue),
            "s3" => S3Client::load(settings).map(|client| BytesBackend::S3(Box::new(client))),
            _ => Err(invalid(STORAGE_BACKEND_VARIABLE, &format!("{backend:?}; it must be `kv` or `s3`"))),
        }
    }
}

fn invalid(name: &str, problem: &str) -> ApiError {
    ApiError::internal(format!("the `{name}` variable is {problem}"))
}

fn required<F: Fn(&str) -> Option<String>>(settings: &Settings<F>, name: &str) -> Result<String, ApiError> {
    let value = settings.text(name);
    if value.is_empty() {
        return Err(invalid(name, "not set; `storage_backend = s3` needs it"));
    }
    Ok(value)
}

/// A bucket with its credentials: builds the signed request of every operation.
pub struct S3Client {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    part_size: u32,
}

impl fmt::Debug for S3Client {
    // Never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.bucket.base_url().as_str())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An HTTP request to send as it is: the signature is in `url`'s query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// `GET`, `PUT`, `POST`, `DELETE`.
    pub method: &'static str,
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// Path and (signed) query.
    pub path_and_query: String,
    /// Headers to send; the signed ones must be sent exactly so.
    pub headers: Vec<(&'static str, String)>,
    /// The body, when the request has a small one of its own (completing an upload); parts
    /// and objects are sent by the caller.
    pub body: Option<Vec<u8>>,
}

impl S3Client {
    /// The client the settings describe (`storage_backend = s3`).
    pub fn load<F: Fn(&str) -> Option<String>>(settings: &Settings<F>) -> Result<S3Client, ApiError> {
        let endpoint_text = required(settings, ENDPOINT_VARIABLE)?;
        if endpoint_text.trim_end_matches('/') == PLACEHOLDER_ENDPOINT {
            return Err(invalid(ENDPOINT_VARIABLE, "not set (still the placeholder); `storage_backend = s3` needs it"));
        }
        let endpoint: url::Url = endpoint_text
            .parse()
            .ok()
            .filter(|url: &url::Url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
            .filter(|url| url.query().is_none() && url.fragment().is_none())
            .ok_or_else(|| invalid(ENDPOINT_VARIABLE, &format!("{endpoint_text:?}; it must be an http(s) URL")))?;
        let region = required(settings, REGION_VARIABLE)?;
        let name = required(settings, BUCKET_VARIABLE)?;
        let key = required(settings, ACCESS_KEY_VARIABLE)?;
        let secret = required(settings, SECRET_KEY_VARIABLE)?;
        let style = if settings.flag(PATH_STYLE_VARIABLE)? { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let prefix = settings.text(PREFIX_VARIABLE);
        if prefix.starts_with('/') || prefix.len() > 512 {
            return Err(invalid(PREFIX_VARIABLE, &format!("{prefix:?}; it must not start with `/`")));
        }
        let part_mib = settings.number(PART_SIZE_VARIABLE, DEFAULT_PART_SIZE_MIB)?;
        let (min_mib, max_mib) = ((MIN_PART_BYTES >> 20) as u64, (MAX_PART_BYTES >> 20) as u64);
        if !(min_mib..=max_mib).contains(&part_mib) {
            return Err(invalid(PART_SIZE_VARIABLE, &format!("{part_mib}; it must be {min_mib} to {max_mib}")));
        }
        if !valid_bucket_name(&name) {
            return Err(invalid(BUCKET_VARIABLE, &format!("{name:?}; it must be a bucket name (3–63 of a-z 0-9 . -)")));
        }
        let bucket = Bucket::new(endpoint, style, name, region).map_err(|e| {
            invalid(ENDPOINT_VARIABLE, &format!("unusable with this bucket ({e}); try `s3_path_style = true`"))
        })?;
        Ok(S3Client { bucket, credentials: Credentials::new(key, secret), prefix, part_size: (part_mib << 20) as u32 })
    }

    /// The key of `path`'s object.
    pub fn key_for(&self, path: &StoragePath) -> String {
        object_key(&self.prefix, path)
    }

    /// Bytes per multipart part.
    pub fn part_size(&self) -> u32 {
        self.part_size
    }

    /// `PUT` of a whole object (the caller sends the bytes as the body).
    pub fn put_object(&self, key: &str, content_type: &str, condition: &PutCondition, now: u64) -> SignedRequest {
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        let signed = condition_header(condition);
        if let Some((name, value)) = &signed {
            action.headers_mut().insert(*name, value.clone());
        }
        let mut request = self.signed("PUT", action, now);
        request.headers.extend(signed);
        request.headers.push(("content-type", content_type.to_owned()));
        request
    }

    /// `POST ?uploads`: starts a multipart upload.
    pub fn create_upload(&self, key: &str, content_type: &str, now: u64) -> SignedRequest {
        let action = self.bucket.create_multipart_upload(Some(&self.credentials), key);
        let mut request = self.signed("POST", action, now);
        request.headers.push(("content-type", content_type.to_owned()));
        request
    }

    /// The upload id in a `create_upload` response body.
    pub fn parse_upload_id(body: &[u8]) -> Result<String, StorageError> {
        let text = std::str::from_utf8(body).map_err(|_| StorageError::new("s3: a response that is not UTF-8"))?;
        CreateMultipartUpload::parse_response(text)
            .map(|response| response.upload_id().to_owned())
            .map_err(|_| StorageError::new("s3: CreateMultipartUpload answered without an upload id"))
    }

    /// `PUT ?partNumber&uploadId`: one part (the caller sends the bytes).
    pub fn upload_part(&self, upload: &PendingUpload, number: u16, now: u64) -> SignedRequest {
        let action = self.bucket.upload_part(Some(&self.credentials), &upload.key, number, &upload.upload_id);
        self.signed("PUT", action, now)
    }

    /// `POST ?uploadId`: completes an upload from its parts, if `condition` holds.
    pub fn complete_upload(
        &self,
        upload: &PendingUpload,
        parts: &[UploadedPart],
        condition: &PutCondition,
        now: u64,
    ) -> SignedRequest {
        let etags = parts.iter().map(|part| part.etag.as_str());
        let mut action =
            self.bucket.complete_multipart_upload(Some(&self.credentials), &upload.key, &upload.upload_id, etags);
        let signed = condition_header(condition);
        if let Some((name, value)) = &signed {
            action.headers_mut().insert(*name, value.clone());
        }
        let url = action.sign_with_time(SIGNATURE_VALIDITY, &timestamp(now));
        let body = action.body().into_bytes();
        let mut request = request_for("POST", &url);
        request.headers.extend(signed);
        request.body = Some(body);
        request
    }

    /// The new object's ETag in a `complete_upload` response (which can be `200` and still
    /// carry an error).
    pub fn parse_completed_etag(body: &[u8]) -> Result<String, StorageError> {
        let text = std::str::from_utf8(body).map_err(|_| StorageError::new("s3: a response that is not UTF-8"))?;
        if let Some(code) = error_code(body) {
            return Err(StorageError::new(format!("s3: CompleteMultipartUpload failed: {code}")));
        }
        CompleteMultipartUploadResponse::parse(text)
            .map(|response| response.etag().to_owned())
            .map_err(|_| StorageError::new("s3: CompleteMultipartUpload answered without an ETag"))
    }

    /// `DELETE ?uploadId`: discards an upload.
    pub fn abort_upload(&self, upload: &PendingUpload, now: u64) -> SignedRequest {
        let action = self.bucket.abort_multipart_upload(Some(&self.credentials), &upload.key, &upload.upload_id);
        self.signed("DELETE", action, now)
    }

    /// `GET` of `len` (> 0) bytes from `offset`, only if the object still has the recorded ETag.
    pub fn get_range(&self, location: &ObjectLocation, offset: u64, len: u64, now: u64) -> SignedRequest {
        let action = self.bucket.get_object(Some(&self.credentials), &location.key);
        let mut request = self.signed("GET", action, now);
        let last = offset + len.max(1) - 1;
        request.headers.push(("range", format!("bytes={offset}-{last}")));
        request.headers.push(("if-match", location.etag.clone()));
        request
    }

    /// A URL anyone may `GET` the object at `location` with, for `validity` from `now` (no
    /// `If-Match`: a presigned URL carries no headers, so it serves whatever the key holds
    /// then). `content_type` and `disposition` become the response's headers.
    pub fn presigned_get(
        &self,
        location: &ObjectLocation,
        content_type: &str,
        disposition: Option<&str>,
        validity: Duration,
        now: u64,
    ) -> String {
        let mut action = self.bucket.get_object(Some(&self.credentials), &location.key);
        action.query_mut().insert("response-content-type", content_type.to_owned());
        if let Some(disposition) = disposition {
            action.query_mut().insert("response-content-disposition", disposition.to_owned());
        }
        action.sign_with_time(validity, &timestamp(now)).to_string()
    }

    /// `DELETE` of an object.
    pub fn delete_object(&self, key: &str, now: u64) -> SignedRequest {
        let action = self.bucket.delete_object(Some(&self.credentials), key);
        self.signed("DELETE", action, now)
    }

    fn signed<'a>(&self, method: &'static str, action: impl S3Action<'a>, now: u64) -> SignedRequest {
        request_for(method, &action.sign_with_time(SIGNATURE_VALIDITY, &timestamp(now)))
    }
}

fn timestamp(now: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(i64::try_from(now).unwrap_or(i64::MAX)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn request_for(method: &'static str, url: &url::Url) -> SignedRequest {
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    SignedRequest {
        method,
        scheme: url.scheme().to_owned(),
        authority,
        path_and_query,
        headers: Vec::new(),
        body: None,
    }
}

fn condition_header(condition: &PutCondition) -> Option<(&'static str, String)> {
    match condition {
        PutCondition::None => None,
        PutCondition::Absent => Some(("if-none-match", "*".to_owned())),
        PutCondition::Matches(etag) => Some(("if-match", etag.clone())),
    }
}

/// S3's naming rules for a bucket (the subset every provider accepts).
fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// What an S3 response status (and error body) means for the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Status {
    /// Success.
    Ok,
    /// `404`: no such key or upload.
    NotFound,
    /// `412` (or `409 ConditionalRequestConflict`): the write's condition did not hold.
    PreconditionFailed,
    /// `500`/`503` (`SlowDown`, `InternalError`) or `429`: worth retrying after a pause.
    Transient(String),
    /// Anything else: the request is wrong or refused (bad signature, no such bucket, …).
    Failed(String),
}

impl S3Status {
    /// Classifies `status` with the response body's S3 error code, if any.
    pub fn of(status: u16, body: &[u8]) -> S3Status {
        let code = || error_code(body).unwrap_or_else(|| format!("HTTP {status}"));
        match status {
            200..=299 => S3Status::Ok,
            404 => S3Status::NotFound,
            412 => S3Status::PreconditionFailed,
            409 if error_code(body).as_deref() == Some("ConditionalRequestConflict") => S3Status::PreconditionFailed,
            429 | 500 | 502 | 503 | 504 => S3Status::Transient(code()),
            _ => S3Status::Failed(code()),
        }
    }

    /// The failure as a storage error naming the operation; credentials problems say which
    /// variables to check.
    pub fn into_error(self, operation: &str) -> StorageError {
        let detail = match &self {
            S3Status::Ok => "succeeded".to_owned(),
            S3Status::NotFound => "not found".to_owned(),
            S3Status::PreconditionFailed => "precondition failed".to_owned(),
            S3Status::Transient(code) => format!("{code} (after retries)"),
            S3Status::Failed(code) if is_credentials_error(code) => {
                format!("{code}: check `{ACCESS_KEY_VARIABLE}` and `{SECRET_KEY_VARIABLE}`")
            }
            S3Status::Failed(code) if code == "NoSuchBucket" => format!("{code}: check `{BUCKET_VARIABLE}`"),
            S3Status::Failed(code) => code.clone(),
        };
        StorageError::new(format!("s3 {operation}: {detail}"))
    }
}

fn is_credentials_error(code: &str) -> bool {
    matches!(code, "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied" | "AuthorizationHeaderMalformed")
}

/// The `<Code>` of an S3 `<Error>` document.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let error = &text[text.find("<Error>")?..];
    let start = error.find("<Code>")? + "<Code>".len();
    let end = start + error[start..].find("</Code>")?;
    Some(error[start..end].trim().to_owned()).filter(|code| !code.is_empty() && code.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_with(pairs: &'static [(&'static str, &'static str)]) -> Result<BytesBackend, ApiError> {
        BytesBackend::load(&Settings::new(|name: &str| {
            pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        }))
    }

    const LOCAL: &[(&str, &str)] = &[
        ("storage_backend", "s3"),
        ("s3_endpoint", "http://127.0.0.1:9000"),
        ("s3_region", "us-east-1"),
        ("s3_bucket", "downlink"),
        ("s3_access_key_id", "AKIDEXAMPLE"),
        ("s3_secret_access_key", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        ("s3_path_style", "true"),
        ("s3_prefix", "files/"),
    ];

    fn local() -> S3Client {
        match client_with(LOCAL).unwrap() {
            BytesBackend::S3(client) => *client,
            BytesBackend::KeyValue => panic!("expected s3"),
        }
    }

    #[test]
    fn kv_is_the_default_and_unknown_backends_are_refused() {
        assert!(matches!(client_with(&[]).unwrap(), BytesBackend::KeyValue));
        assert!(matches!(client_with(&[("storage_backend", "kv")]).unwrap(), BytesBackend::KeyValue));
        let error = client_with(&[("storage_backend", "disk")]).unwrap_err();
        assert!(error.message.contains("`storage_backend`"), "{}", error.message);
    }

    #[test]
    fn every_missing_setting_is_named_never_a_fallback() {
        let placeholder = Settings::new(|name: &str| {
            if name == "s3_endpoint" {
                return Some(PLACEHOLDER_ENDPOINT.to_owned());
            }
            LOCAL.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        });
        assert!(BytesBackend::load(&placeholder).unwrap_err().message.contains("`s3_endpoint` variable is not set"));
        for missing in ["s3_endpoint", "s3_region", "s3_bucket", "s3_access_key_id", "s3_secret_access_key"] {
            let settings = Settings::new(move |name: &str| {
                LOCAL.iter().find(|(key, _)| *key == name && *key != missing).map(|(_, value)| (*value).to_owned())
            });
            let error = BytesBackend::load(&settings).unwrap_err();
            assert_eq!(error.status(), 500);
            assert!(error.message.contains(&format!("`{missing}`")), "{}", error.message);
        }
    }

    #[test]
    fn invalid_settings_are_named() {
        let with = |name: &'static str, value: &'static str| {
            let settings = Settings::new(move |key: &str| {
                if key == name {
                    return Some(value.to_owned());
                }
                LOCAL.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
            });
            BytesBackend::load(&settings).unwrap_err().message
        };
        assert!(with("s3_endpoint", "ftp://x").contains("`s3_endpoint`"));
        assert!(with("s3_endpoint", "not a url").contains("`s3_endpoint`"));
        assert!(with("s3_bucket", "No_Such").contains("`s3_bucket`"));
        assert!(with("s3_path_style", "maybe").contains("`s3_path_style`"));
        assert!(with("s3_part_size_mib", "4").contains("`s3_part_size_mib`"));
        assert!(with("s3_prefix", "/abs").contains("`s3_prefix`"));
    }

    #[test]
    fn the_secret_never_appears_in_debug_output() {
        let text = format!("{:?}", local());
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(text.contains("downlink"));
    }

    #[test]
    fn requests_are_signed_path_style_against_the_endpoint() {
        let client = local();
        let key = client.key_for(&StoragePath::parse("docs/a b.txt").unwrap());
        assert_eq!(key, "files/docs/a b.txt");
        let request = client.put_object(&key, "text/plain", &PutCondition::Absent, 1_700_000_000);
        assert_eq!(request.method, "PUT");
        assert_eq!(request.scheme, "http");
        assert_eq!(request.authority, "127.0.0.1:9000");
        assert!(request.path_and_query.starts_with("/downlink/files/docs/a%20b.txt?"), "{}", request.path_and_query);
        assert!(request.path_and_query.contains("X-Amz-Signature="));
        assert!(request.path_and_query.contains("X-Amz-SignedHeaders=host%3Bif-none-match"));
        assert!(request.headers.contains(&("if-none-match", "*".to_owned())));
        // Same inputs, same signature: nothing but `now` varies it.
        assert_eq!(request, client.put_object(&key, "text/plain", &PutCondition::Absent, 1_700_000_000));
        assert_ne!(request, client.put_object(&key, "text/plain", &PutCondition::Absent, 1_700_000_001));
    }

    #[test]
    fn virtual_host_style_puts_the_bucket_in_the_host() {
        let settings = Settings::new(|key: &str| {
            if key == "s3_path_style" {
                return Some("false".into());
            }
            if key == "s3_endpoint" {
                return Some("https://s3.eu-central-1.amazonaws.com".into());
            }
            LOCAL.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
        });
        let BytesBackend::S3(client) = BytesBackend::load(&settings).unwrap() else { panic!() };
        let request = client.delete_object("k", 1_700_000_000);
        assert_eq!(request.authority, "downlink.s3.eu-central-1.amazonaws.com");
        assert_eq!(request.scheme, "https");
    }

    #[test]
    fn ranged_reads_require_the_recorded_etag() {
        let location = ObjectLocation { key: "files/a".into(), etag: "\"abc\"".into() };
        let request = local().get_range(&location, 10, 5, 1_700_000_000);
        assert!(request.headers.contains(&("range", "bytes=10-14".to_owned())));
        assert!(request.headers.contains(&("if-match", "\"abc\"".to_owned())));
    }

    #[test]
    fn completing_an_upload_lists_its_parts() {
        let upload = PendingUpload { key: "files/big".into(), upload_id: "u-1".into() };
        let parts =
            [UploadedPart { number: 1, etag: "\"e1\"".into() }, UploadedPart { number: 2, etag: "\"e2\"".into() }];
        let request = local().complete_upload(&upload, &parts, &PutCondition::None, 1_700_000_000);
        let body = String::from_utf8(request.body.unwrap()).unwrap();
        assert!(body.contains("<PartNumber>1</PartNumber>") && body.contains("<PartNumber>2</PartNumber>"), "{body}");
        assert!(request.path_and_query.contains("uploadId=u-1"));
    }

    #[test]
    fn responses_are_classified_by_status_and_s3_error_code() {
        let error =
            |code: &str| format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
        assert_eq!(S3Status::of(200, b""), S3Status::Ok);
        assert_eq!(S3Status::of(404, error("NoSuchKey").as_bytes()), S3Status::NotFound);
        assert_eq!(S3Status::of(412, b""), S3Status::PreconditionFailed);
        assert_eq!(S3Status::of(409, error("ConditionalRequestConflict").as_bytes()), S3Status::PreconditionFailed);
        assert_eq!(S3Status::of(503, error("SlowDown").as_bytes()), S3Status::Transient("SlowDown".into()));
        let denied = S3Status::of(403, error("SignatureDoesNotMatch").as_bytes()).into_error("put");
        assert!(denied.message.contains("s3_secret_access_key"), "{}", denied.message);
        assert!(S3Client::parse_completed_etag(error("InternalError").as_bytes()).is_err());
        let done = "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>";
        assert_eq!(S3Client::parse_completed_etag(done.as_bytes()).unwrap(), "\"x-2\"");
        let created = "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket><Key>k</Key><UploadId>up-7</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(S3Client::parse_upload_id(created.as_bytes()).unwrap(), "up-7");
    }
}

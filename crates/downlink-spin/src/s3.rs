//! [`ObjectStore`] over outbound HTTP: sends the requests [`S3Client`] signs, with bounded
//! retries for S3's transient answers (`503 SlowDown`, `500`, connection failures).

use std::cell::RefCell;
use std::time::Duration;

use downlink_core::backoff::{clock_jitter, Backoff};
use downlink_core::path::StoragePath;
use downlink_core::s3::{S3Client, S3Status, SignedRequest};
use downlink_core::storage::objects::{
    ObjectBody, ObjectLocation, ObjectReadError, ObjectStore, PendingUpload, PutCondition, PutOutcome, UploadedPart,
};
use downlink_core::storage::StorageError;
use spin_sdk::http::Method;
use spin_sdk::wit::wasi::http0_2_0::types::IncomingResponse;

use crate::fetch::{self, BodyStep, FetchError, ResponseBody, Target};
use crate::now_unix;

/// Attempts per request (the first and two retries).
const ATTEMPTS: u32 = 3;
/// Waits between attempts: about 200 ms, then 400 ms, jittered.
const BACKOFF: Backoff = Backoff { first: Duration::from_millis(200), max: Duration::from_secs(2) };
/// Connecting, and waiting for the first byte of an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest silence inside a response body.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Error and XML bodies are small; a larger one is cut here.
const MAX_SMALL_BODY: usize = 1 << 20;
/// Bytes asked of the host per read of an object.
const READ_PIECE: u64 = 1 << 20;

/// A bucket reached over outbound HTTP.
pub struct S3Objects {
    client: S3Client,
    /// Called about every [`WAIT_TICK`] while an answer is awaited (see [`S3Objects::while_waiting`]).
    waiting: RefCell<Option<Box<dyn FnMut()>>>,
}

impl std::fmt::Debug for S3Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Objects").field("client", &self.client).finish_non_exhaustive()
    }
}

/// How often a wait for an answer wakes to run the [`S3Objects::while_waiting`] hook.
const WAIT_TICK: Duration = Duration::from_secs(1);

impl S3Objects {
    /// The bucket `client` signs for.
    pub fn new(client: S3Client) -> Self {
        S3Objects { client, waiting: RefCell::new(None) }
    }

    /// Runs `hook` about every second while a request waits for its answer: a worker keeps
    /// its heartbeat fresh while the bucket assembles a large object (`CompleteMultipartUpload`
    /// of gigabytes takes tens of seconds, past the point where the download looks dead).
    pub fn while_waiting(&self, hook: Box<dyn FnMut()>) {
        *self.waiting.borrow_mut() = Some(hook);
    }

    /// [`send`] with this bucket's waiting hook.
    fn send(
        &self,
        operation: &str,
        body: &[u8],
        build: impl Fn(u64) -> SignedRequest,
    ) -> Result<(Answer, S3Status), StorageError> {
        send(operation, body, build, &mut || {
            if let Some(hook) = self.waiting.borrow_mut().as_mut() {
                hook();
            }
        })
    }
}

/// A response whose head arrived.
struct Answer {
    status: u16,
    response: IncomingResponse,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        fetch::response_header(&self.response, name)
    }

    /// The whole (small) body.
    fn small_body(&self) -> Result<Vec<u8>, StorageError> {
        let mut body = ResponseBody::of(&self.response).map_err(transport)?;
        let mut bytes = Vec::new();
        let deadline = fetch::after(IDLE_TIMEOUT);
        loop {
            match body.step(64 * 1024, deadline, IDLE_TIMEOUT).map_err(transport)? {
                BodyStep::Data(piece) => {
                    let room = MAX_SMALL_BODY.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                BodyStep::Idle => {}
                BodyStep::End => return Ok(bytes),
            }
        }
    }
}

fn transport(error: FetchError) -> StorageError {
    StorageError::new(match error {
        FetchError::Http(code) => format!("s3: the request failed ({:?})", fetch::outbound_failure(&code)),
        FetchError::Deadline => "s3: the server did not answer in time".to_owned(),
        FetchError::Cancelled => "s3: cancelled".to_owned(),
        FetchError::BodyBroken(_) => "s3: the connection broke off".to_owned(),
        FetchError::Invalid(why) => format!("s3: {why}"),
    })
}

fn method(name: &str) -> Method {
    match name {
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        _ => Method::Get,
    }
}

fn pause(duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wasi::clocks::monotonic_clock::subscribe_duration(nanos).block();
}

/// Sends the request built by `build` (re-signed per attempt), retrying transient failures;
/// returns the first answer that is not transient, with its classification.
fn send(
    operation: &str,
    body: &[u8],
    build: impl Fn(u64) -> SignedRequest,
    waiting: &mut dyn FnMut(),
) -> Result<(Answer, S3Status), StorageError> {
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            pause(BACKOFF.delay(attempt - 1, clock_jitter()));
        }
        let request = build(now_unix());
        let payload = request.body.as_deref().unwrap_or(body);
        let headers: Vec<(&str, &str)> = request.headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let target =
            Target { scheme: &request.scheme, authority: &request.authority, path_and_query: &request.path_and_query };
        let answer = fetch::start_request(
            method(request.method),
            &target,
            &headers,
            payload,
            CONNECT_TIMEOUT,
            FIRST_BYTE_TIMEOUT,
        )
        .and_then(|pending| {
            fetch::await_response(&pending, fetch::after(FIRST_BYTE_TIMEOUT + CONNECT_TIMEOUT), WAIT_TICK, &mut || {
                waiting();
                true
            })
        });
        let response = match answer {
            Ok(response) => response,
            // Refused or reset connections are worth another attempt; a bad request is not.
            Err(FetchError::Invalid(why)) => return Err(StorageError::new(format!("s3 {operation}: {why}"))),
            Err(error) => {
                last_error = Some(transport(error));
                continue;
            }
        };
        let answer = Answer { status: response.status(), response };
        if (200..300).contains(&answer.status) {
            return Ok((answer, S3Status::Ok));
        }
        let error_body = answer.small_body().unwrap_or_default();
        match S3Status::of(answer.status, &error_body) {
            S3Status::Transient(code) => last_error = Some(S3Status::Transient(code).into_error(operation)),
            status => return Ok((answer, status)),
        }
    }
    Err(last_error.unwrap_or_else(|| StorageError::new(format!("s3 {operation}: failed"))))
}

/// The outcome of a conditional write from its answer.
fn written(operation: &str, answer: &Answer, status: S3Status) -> Result<PutOutcome, StorageError> {
    match status {
        S3Status::Ok => {
            let etag = answer.header("etag").ok_or_else(|| StorageError::new(format!("s3 {operation}: no ETag")))?;
            Ok(PutOutcome::Written { etag })
        }
        S3Status::PreconditionFailed => Ok(PutOutcome::PreconditionFailed),
        other => Err(other.into_error(operation)),
    }
}

/// How long a redirect to the bucket stays usable: long enough to start the download, short
/// enough that a leaked URL is soon worthless.
const PRESIGNED_GET_VALIDITY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl ObjectStore for S3Objects {
    fn key_for(&self, path: &StoragePath) -> String {
        self.client.key_for(path)
    }

    fn part_size(&self) -> u32 {
        self.client.part_size()
    }

    fn put(
        &self,
        key: &str,
        content_type: &str,
        bytes: &[u8],
        condition: &PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        let (answer, status) =
            self.send("PutObject", bytes, |now| self.client.put_object(key, content_type, condition, now))?;
        written("PutObject", &answer, status)
    }

    fn create_upload(&self, key: &str, content_type: &str) -> Result<PendingUpload, StorageError> {
        let (answer, status) =
            self.send("CreateMultipartUpload", &[], |now| self.client.create_upload(key, content_type, now))?;
        if status != S3Status::Ok {
            return Err(status.into_error("CreateMultipartUpload"));
        }
        let upload_id = S3Client::parse_upload_id(&answer.small_body()?)?;
        Ok(PendingUpload { key: key.to_owned(), upload_id })
    }

    fn upload_part(&self, upload: &PendingUpload, number: u16, bytes: &[u8]) -> Result<UploadedPart, StorageError> {
        let (answer, status) = self.send("UploadPart", bytes, |now| self.client.upload_part(upload, number, now))?;
        match written("UploadPart", &answer, status)? {
            PutOutcome::Written { etag } => Ok(UploadedPart { number, etag }),
            PutOutcome::PreconditionFailed => Err(StorageError::new("s3 UploadPart: precondition failed")),
        }
    }

    fn complete_upload(
        &self,
        upload: &PendingUpload,
        parts: &[UploadedPart],
        condition: &PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        let (answer, status) = self
            .send("CompleteMultipartUpload", &[], |now| self.client.complete_upload(upload, parts, condition, now))?;
        match status {
            // A 200 can still carry an error; the ETag is in the body.
            S3Status::Ok => {
                S3Client::parse_completed_etag(&answer.small_body()?).map(|etag| PutOutcome::Written { etag })
            }
            S3Status::PreconditionFailed => Ok(PutOutcome::PreconditionFailed),
            other => Err(other.into_error("CompleteMultipartUpload")),
        }
    }

    fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StorageError> {
        let (_, status) = self.send("AbortMultipartUpload", &[], |now| self.client.abort_upload(upload, now))?;
        match status {
            S3Status::Ok | S3Status::NotFound => Ok(()),
            other => Err(other.into_error("AbortMultipartUpload")),
        }
    }

    fn read_range(
        &self,
        location: &ObjectLocation,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn ObjectBody + '_>, ObjectReadError> {
        let (answer, status) = self.send("GetObject", &[], |now| self.client.get_range(location, offset, len, now))?;
        match status {
            S3Status::Ok => {}
            S3Status::NotFound => return Err(ObjectReadError::Missing),
            S3Status::PreconditionFailed => return Err(ObjectReadError::Changed),
            other => return Err(other.into_error("GetObject").into()),
        }
        // A server that ignores `If-Match` is caught by the ETag it sends back.
        if answer.header("etag").is_some_and(|etag| etag != location.etag) {
            return Err(ObjectReadError::Changed);
        }
        let body = ResponseBody::of(&answer.response).map_err(|e| ObjectReadError::Failed(transport(e)))?;
        Ok(Box::new(ObjectPieces { body, _answer: answer }))
    }

    fn pause(&self, duration: Duration) {
        pause(duration);
    }

    fn presigned_get(
        &self,
        location: &ObjectLocation,
        content_type: &str,
        disposition: Option<&str>,
    ) -> Option<String> {
        Some(self.client.presigned_get(location, content_type, disposition, PRESIGNED_GET_VALIDITY, crate::now_unix()))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (_, status) = self.send("DeleteObject", &[], |now| self.client.delete_object(key, now))?;
        match status {
            S3Status::Ok | S3Status::NotFound => Ok(()),
            other => Err(other.into_error("DeleteObject")),
        }
    }
}

/// The body of a ranged GET.
struct ObjectPieces {
    // The body is a child of the response and must drop first.
    body: ResponseBody,
    _answer: Answer,
}

impl ObjectBody for ObjectPieces {
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, ObjectReadError> {
        let deadline = fetch::after(IDLE_TIMEOUT);
        loop {
            match self
                .body
                .step(READ_PIECE, deadline, IDLE_TIMEOUT)
                .map_err(|e| ObjectReadError::Failed(transport(e)))?
            {
                BodyStep::Data(piece) => return Ok(Some(piece)),
                BodyStep::Idle => {}
                BodyStep::End => return Ok(None),
            }
        }
    }
}

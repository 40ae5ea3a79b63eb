//! A download's record: its state machine, its stored JSON and its wire views.
//!
//! The record is stored as JSON (every field, including ones no endpoint shows such as the
//! owner and heartbeat). The views are typed structs serialised in the reference's field
//! order: [`ActiveView`] (active lists), [`HistoryView`] (history), [`DetailView`] (one
//! record) and [`StartResponse`] (the start endpoint's body).
//!
//! Statuses move `starting → downloading → completed | failed | cancelled`; `starting` may
//! also end directly. The last three are terminal: every transition out of them is refused,
//! which is what lets a cancel and a completion race through compare-and-swap with exactly
//! one winner. Times are Unix seconds supplied by the caller.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::blob::BlobId;
use crate::download::params::{RejectedStart, StartRequest};
use crate::error::{ApiError, ErrorCode};
use crate::path::StoragePath;

/// A record whose heartbeat is older than this many heartbeat intervals is considered
/// abandoned by its worker (host restart, killed invocation).
pub const STALE_AFTER_INTERVALS: u64 = 4;

/// The message of a download whose worker stopped reporting.
pub const INTERRUPTED_MESSAGE: &str = "interrupted (the worker stopped reporting)";

/// Where a download is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadStatus {
    /// Accepted; no response from the remote yet.
    Starting,
    /// Bytes are arriving.
    Downloading,
    /// The file was stored (terminal).
    Completed,
    /// It ended with an error (terminal).
    Failed,
    /// A user cancelled it (terminal).
    Cancelled,
}

impl DownloadStatus {
    /// The wire string, e.g. `"downloading"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadStatus::Starting => "starting",
            DownloadStatus::Downloading => "downloading",
            DownloadStatus::Completed => "completed",
            DownloadStatus::Failed => "failed",
            DownloadStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, DownloadStatus::Completed | DownloadStatus::Failed | DownloadStatus::Cancelled)
    }
}

impl fmt::Display for DownloadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition was attempted on a download that has already ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("download {id} has already {status}")]
pub struct TransitionError {
    /// The download.
    pub id: String,
    /// Its (terminal) status.
    pub status: DownloadStatus,
}

impl From<TransitionError> for ApiError {
    fn from(err: TransitionError) -> Self {
        ApiError::conflict(err.to_string())
    }
}

/// Everything known about one download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// The download id (also the `download_id` of the start response).
    pub id: String,
    /// Name of the principal that started it; only they (or an admin) may see or cancel it.
    pub owner: String,
    /// The target file name (after collision handling).
    pub filename: String,
    /// `directory/filename`, as the reference shows it. Text, not a `StoragePath`: a download
    /// refused at validation keeps the best-effort path it asked for, which may be invalid.
    pub file_path: String,
    /// The target directory.
    pub directory: StoragePath,
    /// The URL as requested (normalised when it was valid).
    pub url: String,
    /// Where it is in its life.
    pub status: DownloadStatus,
    /// Bytes received so far.
    pub current_size: u64,
    /// `Content-Length` of the response, when the remote sent one.
    #[serde(default)]
    pub expected_size: Option<u64>,
    /// When it was started.
    pub start_time: u64,
    /// When it ended.
    #[serde(default)]
    pub end_time: Option<u64>,
    /// Size of the stored file; set only when completed (the reference shows null otherwise).
    #[serde(default)]
    pub total_bytes: Option<u64>,
    /// Why it failed (set for failed downloads only).
    #[serde(default)]
    pub error: Option<ErrorCode>,
    /// Human explanation of the failure or cancellation.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Last time the worker reported; see [`DownloadRecord::is_stale`].
    pub heartbeat: u64,
    /// The whole transfer's deadline.
    pub timeout_secs: u64,
    /// Expected SHA-256, lower-case hex, if verification was asked for.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The history sequence number the ending write recorded (see
    /// [`registry::finish`](super::registry::finish)). Never shown to clients.
    #[serde(default)]
    pub history_seq: Option<u64>,
    /// The storage blob the transfer writes into, so the blob of a dead worker can be
    /// reclaimed at once. Never shown to clients.
    #[serde(default)]
    pub blob_id: Option<BlobId>,
    /// Whether the bookkeeping after the end (slot and target released, history entry
    /// appended) has been claimed; see [`registry::settle`](super::registry::settle). Never
    /// shown to clients.
    #[serde(default)]
    pub settled: bool,
    /// Which worker invocation owns the transfer: each slice ([`registry::claim_slice`](super::registry::claim_slice))
    /// takes the next number, and a worker whose number is no longer the record's stops. Never
    /// shown to clients.
    #[serde(default)]
    pub slice: u32,
    /// No worker runs slice `slice` (it handed off at its budget, or a sweep found it dead):
    /// the next invocation may claim it. Never shown to clients.
    #[serde(default)]
    pub awaiting_worker: bool,
    /// Recoveries by sweeps since the transfer last made progress. Never shown to clients.
    #[serde(default)]
    pub recoveries: u32,
    /// `current_size` when a sweep last recovered it. Never shown to clients.
    #[serde(default)]
    pub recovered_at_size: u64,
}

/// What a running download's worker reports between the record's state changes: kept under a
/// key of its own that only the worker writes, with a plain `set`. So progress and heartbeats
/// cost no compare-and-swap (Spin 4.0.2's Redis store holds two connections per swap until
/// the request ends: a download swapping every 250 ms would exhaust Redis within the hour).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// Bytes received so far.
    pub current_size: u64,
    /// `Content-Length` of the response, when known.
    #[serde(default)]
    pub expected_size: Option<u64>,
    /// When the worker wrote this report.
    pub heartbeat: u64,
    /// Whether the response has arrived (the download shows as `downloading`).
    #[serde(default)]
    pub receiving: bool,
}

impl ProgressReport {
    /// The report as stored.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

impl DownloadRecord {
    /// A new record in `starting` for a validated request, with its final (collision-free)
    /// target path.
    pub fn starting(
        id: impl Into<String>,
        owner: impl Into<String>,
        request: &StartRequest,
        target: &StoragePath,
        now: u64,
    ) -> DownloadRecord {
        DownloadRecord {
            id: id.into(),
            owner: owner.into(),
            filename: target.file_name().unwrap_or_default().to_owned(),
            file_path: target.to_string(),
            directory: target.parent().unwrap_or_default(),
            url: request.url.as_str().to_owned(),
            status: DownloadStatus::Starting,
            current_size: 0,
            expected_size: None,
            start_time: now,
            end_time: None,
            total_bytes: None,
            error: None,
            error_message: None,
            heartbeat: now,
            timeout_secs: request.timeout_secs,
            sha256: request.sha256.map(|digest| digest.to_hex()),
            history_seq: None,
            blob_id: None,
            settled: false,
            slice: 0,
            awaiting_worker: false,
            recoveries: 0,
            recovered_at_size: 0,
        }
    }

    /// A `failed` record for a request refused at validation, so it shows up in history.
    pub fn rejected(
        id: impl Into<String>,
        owner: impl Into<String>,
        directory: &StoragePath,
        rejection: &RejectedStart,
        now: u64,
    ) -> DownloadRecord {
        DownloadRecord {
            id: id.into(),
            owner: owner.into(),
            filename: rejection.filename.clone(),
            file_path: rejection.file_path.clone(),
            directory: directory.clone(),
            url: rejection.url.clone(),
            status: DownloadStatus::Failed,
            current_size: 0,
            expected_size: None,
            start_time: now,
            end_time: Some(now),
            total_bytes: None,
            error: Some(rejection.error.code),
            error_message: Some(rejection.error.message.clone()),
            heartbeat: now,
            timeout_secs: 0,
            sha256: None,
            history_seq: None,
            blob_id: None,
            settled: false,
            slice: 0,
            awaiting_worker: false,
            recoveries: 0,
            recovered_at_size: 0,
        }
    }

    /// Serialises for storage.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and enums always serialises.
        crate::json::to_bytes(self)
    }

    /// Parses a stored record.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<DownloadRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the download has ended.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether the worker has stopped reporting: not ended, and the heartbeat is more than
    /// [`STALE_AFTER_INTERVALS`] intervals old.
    pub fn is_stale(&self, now: u64, heartbeat_interval_secs: u64) -> bool {
        !self.is_terminal()
            && now.saturating_sub(self.heartbeat) > heartbeat_interval_secs.saturating_mul(STALE_AFTER_INTERVALS)
    }

    /// `Ok` if the download runs and slice `slice` owns it.
    pub(crate) fn ensure_slice(&self, slice: u32) -> Result<(), TransitionError> {
        self.ensure_running()?;
        if self.slice != slice {
            return Err(self.not_awaiting());
        }
        Ok(())
    }

    /// The refusal of a slice change that does not apply (the caller reads the record).
    pub(crate) fn not_awaiting(&self) -> TransitionError {
        TransitionError { id: self.id.clone(), status: self.status }
    }

    fn ensure_running(&self) -> Result<(), TransitionError> {
        if self.is_terminal() {
            return Err(TransitionError { id: self.id.clone(), status: self.status });
        }
        Ok(())
    }

    /// Test shorthand for a worker's report: bytes arrived (`current`, `expected` if known);
    /// refused once the record has ended.
    #[cfg(test)]
    pub(crate) fn progress(&mut self, now: u64, current: u64, expected: Option<u64>) -> Result<(), TransitionError> {
        self.ensure_running()?;
        self.apply_report(&ProgressReport {
            current_size: current,
            expected_size: expected,
            receiving: true,
            heartbeat: now,
        });
        Ok(())
    }

    /// Test shorthand for a heartbeat with nothing new; refused once the record has ended.
    #[cfg(test)]
    pub(crate) fn record_heartbeat(&mut self, now: u64) -> Result<(), TransitionError> {
        self.ensure_running()?;
        self.heartbeat = self.heartbeat.max(now);
        Ok(())
    }

    /// Shows a running download as its worker last reported it ([`ProgressReport`]); an ended
    /// one keeps what its end recorded.
    pub fn apply_report(&mut self, report: &ProgressReport) {
        if self.is_terminal() {
            return;
        }
        if report.receiving {
            self.status = DownloadStatus::Downloading;
        }
        // The worker's latest word, even when smaller: a download that had to start over
        // shows the bytes it has now.
        self.current_size = report.current_size;
        if report.expected_size.is_some() {
            self.expected_size = report.expected_size;
        }
        self.heartbeat = self.heartbeat.max(report.heartbeat);
    }

    fn end(&mut self, now: u64, status: DownloadStatus) {
        self.status = status;
        self.end_time = Some(now.max(self.start_time));
        self.heartbeat = self.heartbeat.max(now);
    }

    /// The file of `total` bytes was stored.
    pub fn complete(&mut self, now: u64, total: u64) -> Result<(), TransitionError> {
        self.ensure_running()?;
        self.end(now, DownloadStatus::Completed);
        self.current_size = total;
        self.total_bytes = Some(total);
        Ok(())
    }

    /// It failed with `code`; `message` says why (never the URL's secrets).
    pub fn fail(&mut self, now: u64, code: ErrorCode, message: impl Into<String>) -> Result<(), TransitionError> {
        self.ensure_running()?;
        self.end(now, DownloadStatus::Failed);
        self.error = Some(code);
        self.error_message = Some(message.into());
        Ok(())
    }

    /// [`DownloadRecord::fail`] with an [`ApiError`]'s code and message.
    pub fn fail_with(&mut self, now: u64, error: &ApiError) -> Result<(), TransitionError> {
        self.fail(now, error.code, error.message.clone())
    }

    /// A user cancelled it. No error code: cancelling is not a failure.
    pub fn cancel(&mut self, now: u64) -> Result<(), TransitionError> {
        self.ensure_running()?;
        self.end(now, DownloadStatus::Cancelled);
        self.error_message = Some("cancelled by the user".to_owned());
        Ok(())
    }

    /// Its worker stopped reporting: failed with `NETWORK_ERROR` and [`INTERRUPTED_MESSAGE`].
    pub fn interrupted(&mut self, now: u64) -> Result<(), TransitionError> {
        self.fail(now, ErrorCode::NetworkError, INTERRUPTED_MESSAGE)
    }

    /// `current_size` as a percentage of `expected_size`, one decimal, capped at 100; `None`
    /// when the size is unknown or zero.
    pub fn progress_percentage(&self) -> Option<f64> {
        let expected = self.expected_size.filter(|size| *size > 0)?;
        let ratio = self.current_size as f64 / expected as f64;
        Some(((ratio * 1000.0).round() / 10.0).min(100.0))
    }

    fn view_head(&self) -> ViewHead<'_> {
        ViewHead {
            id: &self.id,
            filename: &self.filename,
            file_path: &self.file_path,
            directory: self.directory.as_str(),
            url: &self.url,
            status: self.status,
        }
    }

    /// The item of an active-downloads list, exactly the reference's fields.
    pub fn active_view(&self) -> ActiveView<'_> {
        ActiveView {
            head: self.view_head(),
            current_size: self.current_size,
            expected_size: self.expected_size,
            progress_percentage: self.progress_percentage(),
            start_time: self.start_time,
        }
    }

    /// The item of the history list: the reference's fields plus `message`.
    pub fn history_view(&self) -> HistoryView<'_> {
        HistoryView {
            head: self.view_head(),
            total_bytes: self.total_bytes,
            start_time: self.start_time,
            end_time: self.end_time,
            error: self.error.map(ErrorCode::as_str),
            message: self.error_message.as_deref(),
        }
    }

    /// One download in full (`GET /api/v1/downloads/{id}`): the union of the list views.
    pub fn detail_view(&self) -> DetailView<'_> {
        DetailView {
            head: self.view_head(),
            current_size: self.current_size,
            expected_size: self.expected_size,
            progress_percentage: self.progress_percentage(),
            total_bytes: self.total_bytes,
            start_time: self.start_time,
            end_time: self.end_time,
            error: self.error.map(ErrorCode::as_str),
            message: self.error_message.as_deref(),
        }
    }
}

/// The fields every view starts with, in the reference's order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViewHead<'a> {
    /// Download id.
    pub id: &'a str,
    /// Target file name.
    pub filename: &'a str,
    /// `directory/filename`.
    pub file_path: &'a str,
    /// Target directory.
    pub directory: &'a str,
    /// Source URL.
    pub url: &'a str,
    /// Where the download is in its life.
    pub status: DownloadStatus,
}

/// An active-downloads list item (reference field order).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActiveView<'a> {
    /// Identity and status, first as in the reference.
    #[serde(flatten)]
    pub head: ViewHead<'a>,
    /// Bytes so far.
    pub current_size: u64,
    /// Expected bytes, null when unknown.
    pub expected_size: Option<u64>,
    /// Percent done, null when the size is unknown.
    pub progress_percentage: Option<f64>,
    /// Start (Unix seconds).
    pub start_time: u64,
}

/// A history list item (reference field order, then `message`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryView<'a> {
    /// Identity and status, first as in the reference.
    #[serde(flatten)]
    pub head: ViewHead<'a>,
    /// Stored size, null unless completed.
    pub total_bytes: Option<u64>,
    /// Start (Unix seconds).
    pub start_time: u64,
    /// End (Unix seconds).
    pub end_time: Option<u64>,
    /// Error code, null unless failed.
    pub error: Option<&'static str>,
    /// Human explanation of a failure or cancellation (not in the reference), else null.
    pub message: Option<&'a str>,
}

/// One download in full: active and history fields together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetailView<'a> {
    /// Identity and status, first as in the reference.
    #[serde(flatten)]
    pub head: ViewHead<'a>,
    /// Bytes so far.
    pub current_size: u64,
    /// Expected bytes, null when unknown.
    pub expected_size: Option<u64>,
    /// Percent done, null when the size is unknown.
    pub progress_percentage: Option<f64>,
    /// Stored size, null unless completed.
    pub total_bytes: Option<u64>,
    /// Start (Unix seconds).
    pub start_time: u64,
    /// End (Unix seconds), null while running.
    pub end_time: Option<u64>,
    /// Error code, null unless failed.
    pub error: Option<&'static str>,
    /// Human explanation of a failure or cancellation, else null.
    pub message: Option<&'a str>,
}

impl DetailView<'_> {
    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

#[derive(Serialize)]
struct ActiveListBody<'a> {
    downloads: Vec<ActiveView<'a>>,
}

/// `{"downloads":[…]}` for the active-downloads endpoints.
pub fn active_list_body<'a>(records: impl IntoIterator<Item = &'a DownloadRecord>) -> Vec<u8> {
    crate::json::to_bytes(&ActiveListBody { downloads: records.into_iter().map(DownloadRecord::active_view).collect() })
}

#[derive(Serialize)]
struct HistoryBody<'a> {
    history: Vec<HistoryView<'a>>,
    /// A string, so clients treat it as opaque (its encoding may change).
    next_cursor: Option<String>,
}

/// `{"history":[…],"next_cursor":"N"|null}`: pass `next_cursor` back as `cursor` for the
/// next (older) page; null means there is none.
pub fn history_body<'a>(records: impl IntoIterator<Item = &'a DownloadRecord>, next_cursor: Option<u64>) -> Vec<u8> {
    crate::json::to_bytes(&HistoryBody {
        history: records.into_iter().map(DownloadRecord::history_view).collect(),
        next_cursor: next_cursor.map(|cursor| cursor.to_string()),
    })
}

/// The start endpoint's body (reference field order), for success and failure alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartResponse {
    /// The download id.
    pub download_id: String,
    /// The target file name.
    pub filename: String,
    /// `directory/filename`.
    pub path: String,
    /// Whether the download was started.
    pub success: bool,
    /// `"Download started"` or `"Download failed"`, as the reference has them.
    pub message: String,
    /// The error code, null on success.
    pub error: Option<&'static str>,
    /// Why it failed, in words (not in the reference; omitted on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StartResponse {
    /// Adds a human explanation of a failure.
    pub fn with_detail(mut self, detail: impl Into<String>) -> StartResponse {
        self.detail = Some(detail.into());
        self
    }

    /// The HTTP status: 202 when started, else the error code's status.
    pub fn status(&self) -> u16 {
        match self.error.and_then(ErrorCode::from_wire) {
            Some(code) => code.status(),
            None if self.success => 202,
            None => 500,
        }
    }

    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

/// The `202 Accepted` body for a started download.
pub fn start_response(record: &DownloadRecord) -> StartResponse {
    StartResponse {
        download_id: record.id.clone(),
        filename: record.filename.clone(),
        path: record.file_path.clone(),
        success: true,
        message: "Download started".to_owned(),
        error: None,
        detail: None,
    }
}

/// The body for a download refused at start.
pub fn failure_response(
    download_id: impl Into<String>,
    filename: impl Into<String>,
    path: impl Into<String>,
    code: ErrorCode,
) -> StartResponse {
    StartResponse {
        download_id: download_id.into(),
        filename: filename.into(),
        path: path.into(),
        success: false,
        message: "Download failed".to_owned(),
        error: Some(code.as_str()),
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::download::params::parse_start_request;
    use crate::download::url_policy::DownloadPolicy;
    use crate::query::Query;

    fn request(query: &str) -> StartRequest {
        let dir = StoragePath::parse("Downloads").unwrap();
        parse_start_request(&Query::parse(query).unwrap(), &dir, &DownloadPolicy::default()).unwrap()
    }

    fn record() -> DownloadRecord {
        let request = request("download=https://files.example.com/dataset.zip");
        DownloadRecord::starting(
            "7a3f8b12-4d5e-4a1b-9c8f-2e6d7f8a9b0c",
            "alice",
            &request,
            &request.file_path().unwrap(),
            1_700_000_000,
        )
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn starting_record() {
        let rec = record();
        assert_eq!(rec.status, DownloadStatus::Starting);
        assert_eq!(
            (rec.filename.as_str(), rec.file_path.as_str(), rec.directory.as_str()),
            ("dataset.zip", "Downloads/dataset.zip", "Downloads")
        );
        assert_eq!(rec.timeout_secs, 300);
        assert_eq!(rec.heartbeat, 1_700_000_000);
        let with_sha = request(&format!("download=http://x.org/a&sha256={}", "AA".repeat(32)));
        let rec = DownloadRecord::starting("id", "bob", &with_sha, &StoragePath::parse("a").unwrap(), 5);
        assert_eq!(rec.sha256.as_deref(), Some("aa".repeat(32).as_str()));
        assert_eq!(rec.directory, StoragePath::root());
        assert_eq!(rec.filename, "a");
    }

    #[test]
    fn status_wire_strings() {
        for (status, wire) in [
            (DownloadStatus::Starting, "starting"),
            (DownloadStatus::Downloading, "downloading"),
            (DownloadStatus::Completed, "completed"),
            (DownloadStatus::Failed, "failed"),
            (DownloadStatus::Cancelled, "cancelled"),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{wire}\""));
            assert_eq!(status.as_str(), wire);
            assert_eq!(status.to_string(), wire);
            assert_eq!(serde_json::from_str::<DownloadStatus>(&format!("\"{wire}\"")).unwrap(), status);
        }
        assert!(serde_json::from_str::<DownloadStatus>("\"Completed\"").is_err());
    }

    #[test]
    fn active_view_matches_the_reference_exactly() {
        let mut rec = record();
        rec.progress(1_700_000_010, 52_428_800, Some(104_857_600)).unwrap();
        assert_eq!(
            text(active_list_body([&rec])),
            concat!(
                r#"{"downloads":[{"id":"7a3f8b12-4d5e-4a1b-9c8f-2e6d7f8a9b0c","filename":"dataset.zip","#,
                r#""file_path":"Downloads/dataset.zip","directory":"Downloads","#,
                r#""url":"https://files.example.com/dataset.zip","status":"downloading","current_size":52428800,"#,
                r#""expected_size":104857600,"progress_percentage":50.0,"start_time":1700000000}]}"#
            )
        );
        let fresh = record();
        let value: Value = serde_json::to_value(fresh.active_view()).unwrap();
        assert_eq!(value["status"], "starting");
        assert_eq!(value["expected_size"], Value::Null);
        assert_eq!(value["progress_percentage"], Value::Null);
        assert_eq!(value.as_object().unwrap().len(), 10);
        assert_eq!(text(active_list_body([])), r#"{"downloads":[]}"#);
    }

    #[test]
    fn history_view_matches_the_reference() {
        let mut done = record();
        done.progress(1_700_000_001, 10, None).unwrap();
        done.complete(1_700_000_030, 104_857_600).unwrap();
        let value: Value = serde_json::to_value(done.history_view()).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "7a3f8b12-4d5e-4a1b-9c8f-2e6d7f8a9b0c",
                "filename": "dataset.zip",
                "file_path": "Downloads/dataset.zip",
                "directory": "Downloads",
                "url": "https://files.example.com/dataset.zip",
                "status": "completed",
                "total_bytes": 104857600,
                "start_time": 1700000000,
                "end_time": 1700000030,
                "error": null,
                "message": null
            })
        );
        let mut missing = record();
        missing.fail(1_700_000_005, ErrorCode::RemoteFileNotFound, "the server answered 404").unwrap();
        let body = text(history_body([&missing], Some(7)));
        assert!(body.starts_with(r#"{"history":[{"id":"#), "{body}");
        assert!(
            body.ends_with(r#""status":"failed","total_bytes":null,"start_time":1700000000,"end_time":1700000005,"error":"REMOTE_FILE_NOT_FOUND","message":"the server answered 404"}],"next_cursor":"7"}"#),
            "{body}"
        );
        assert_eq!(text(history_body([], None)), r#"{"history":[],"next_cursor":null}"#);
    }

    #[test]
    fn detail_view_has_everything() {
        let mut rec = record();
        rec.progress(1_700_000_001, 1, Some(3)).unwrap();
        let value: Value = serde_json::from_slice(&rec.detail_view().to_json_bytes()).unwrap();
        assert_eq!(value["progress_percentage"], json!(33.3));
        assert_eq!(value["total_bytes"], Value::Null);
        assert_eq!(value["end_time"], Value::Null);
        assert_eq!(value.as_object().unwrap().len(), 14);
        assert!(value.get("owner").is_none() && value.get("heartbeat").is_none());
    }

    #[test]
    fn start_and_failure_bodies() {
        let rec = record();
        let started = start_response(&rec);
        assert_eq!(started.status(), 202);
        assert_eq!(
            text(started.to_json_bytes()),
            r#"{"download_id":"7a3f8b12-4d5e-4a1b-9c8f-2e6d7f8a9b0c","filename":"dataset.zip","path":"Downloads/dataset.zip","success":true,"message":"Download started","error":null}"#
        );
        let failed = failure_response("id-1", "data.csv", "Downloads/data.csv", ErrorCode::InvalidUrl);
        assert_eq!(failed.status(), 400);
        assert_eq!(
            text(failed.to_json_bytes()),
            r#"{"download_id":"id-1","filename":"data.csv","path":"Downloads/data.csv","success":false,"message":"Download failed","error":"INVALID_URL"}"#
        );
        let detailed = failure_response("id", "f", "f", ErrorCode::TooManyDownloads).with_detail("limit of 4 reached");
        assert_eq!(detailed.status(), 429);
        assert!(
            text(detailed.to_json_bytes()).ends_with(r#""error":"TOO_MANY_DOWNLOADS","detail":"limit of 4 reached"}"#)
        );
        assert_eq!(failure_response("i", "f", "f", ErrorCode::DomainBlocked).status(), 403);
    }

    #[test]
    fn rejected_record_goes_to_history() {
        let dir = StoragePath::parse("Downloads").unwrap();
        let rejection = parse_start_request(
            &Query::parse("download=ftp://x.org/data.csv").unwrap(),
            &dir,
            &DownloadPolicy::default(),
        )
        .unwrap_err();
        let rec = DownloadRecord::rejected("id", "alice", &dir, &rejection, 100);
        assert!(rec.is_terminal());
        assert_eq!((rec.start_time, rec.end_time), (100, Some(100)));
        let value: Value = serde_json::to_value(rec.history_view()).unwrap();
        assert_eq!(value["error"], "INVALID_URL");
        assert_eq!(value["file_path"], "Downloads/data.csv");
        assert_eq!(value["url"], "ftp://x.org/data.csv");
    }

    #[test]
    fn storage_round_trip() {
        let mut rec = record();
        rec.progress(1_700_000_003, 5, Some(10)).unwrap();
        rec.fail(1_700_000_004, ErrorCode::DownloadTimeout, "deadline of 300 s passed").unwrap();
        let back = DownloadRecord::from_json_bytes(&rec.to_json_bytes()).unwrap();
        assert_eq!(back, rec);
        let stored: Value = serde_json::from_slice(&rec.to_json_bytes()).unwrap();
        assert_eq!(stored["error"], "DOWNLOAD_TIMEOUT");
        assert_eq!(stored["owner"], "alice");
        // Optional fields may be missing from older records.
        let minimal = r#"{"id":"a","owner":"o","filename":"f","file_path":"f","directory":"","url":"http://x/",
            "status":"starting","current_size":0,"start_time":1,"heartbeat":1,"timeout_secs":300}"#;
        let parsed = DownloadRecord::from_json_bytes(minimal.as_bytes()).unwrap();
        assert_eq!(parsed.expected_size, None);
        assert!(DownloadRecord::from_json_bytes(br#"{"id":"a"}"#).is_err());
        assert!(DownloadRecord::from_json_bytes(
            minimal.replace(r#""directory":"""#, r#""directory":"../x""#).as_bytes()
        )
        .is_err());
    }

    #[test]
    fn transitions() {
        let mut rec = record();
        rec.record_heartbeat(1_700_000_002).unwrap();
        assert_eq!((rec.status, rec.heartbeat), (DownloadStatus::Starting, 1_700_000_002));
        rec.progress(1_700_000_003, 100, Some(1000)).unwrap();
        rec.progress(1_700_000_004, 200, None).unwrap();
        assert_eq!((rec.status, rec.current_size, rec.expected_size), (DownloadStatus::Downloading, 200, Some(1000)));
        // A clock that steps back does not move the heartbeat back.
        rec.progress(1_700_000_001, 300, None).unwrap();
        assert_eq!(rec.heartbeat, 1_700_000_004);
        rec.complete(1_700_000_010, 1000).unwrap();
        assert_eq!((rec.current_size, rec.total_bytes, rec.end_time), (1000, Some(1000), Some(1_700_000_010)));

        for attempt in [
            rec.clone().progress(1, 1, None),
            rec.clone().record_heartbeat(1),
            rec.clone().complete(1, 1),
            rec.clone().fail(1, ErrorCode::NetworkError, "x"),
            rec.clone().cancel(1),
            rec.clone().interrupted(1),
        ] {
            let err = attempt.unwrap_err();
            assert_eq!(err.status, DownloadStatus::Completed);
            let api: ApiError = err.into();
            assert_eq!(api.code, ErrorCode::Conflict);
            assert!(api.message.contains("completed"));
        }

        let mut cancelled = record();
        cancelled.cancel(1_700_000_001).unwrap();
        assert_eq!((cancelled.status, cancelled.error, cancelled.total_bytes), (DownloadStatus::Cancelled, None, None));
        assert!(cancelled.error_message.is_some());
        assert!(cancelled.complete(1_700_000_002, 5).is_err());
        assert_eq!(cancelled.status, DownloadStatus::Cancelled);

        let mut failed = record();
        failed.fail_with(1_700_000_001, &ApiError::new(ErrorCode::NetworkError, "connection refused")).unwrap();
        assert!(failed.cancel(1_700_000_002).is_err());
        // An end time never precedes the start, whatever the clock says.
        let mut skewed = record();
        skewed.cancel(5).unwrap();
        assert_eq!(skewed.end_time, Some(skewed.start_time));
    }

    #[test]
    fn staleness_and_interruption() {
        let mut rec = record();
        let start = rec.heartbeat;
        assert!(!rec.is_stale(start + 20, 5));
        assert!(rec.is_stale(start + 21, 5));
        assert!(!rec.is_stale(start - 100, 5), "a clock behind the heartbeat is not staleness");
        assert!(!rec.is_stale(u64::MAX, u64::MAX));
        rec.interrupted(start + 21).unwrap();
        assert_eq!(rec.status, DownloadStatus::Failed);
        assert_eq!(rec.error, Some(ErrorCode::NetworkError));
        assert_eq!(rec.error_message.as_deref(), Some(INTERRUPTED_MESSAGE));
        assert!(!rec.is_stale(start + 1000, 5), "ended downloads are never stale");
    }

    #[test]
    fn percentages() {
        let mut rec = record();
        let pct = |rec: &mut DownloadRecord, current, expected| {
            rec.expected_size = expected;
            rec.current_size = current;
            rec.progress_percentage()
        };
        assert_eq!(pct(&mut rec, 0, None), None);
        assert_eq!(pct(&mut rec, 5, Some(0)), None);
        assert_eq!(pct(&mut rec, 0, Some(10)), Some(0.0));
        assert_eq!(pct(&mut rec, 1, Some(3)), Some(33.3));
        assert_eq!(pct(&mut rec, 2, Some(3)), Some(66.7));
        assert_eq!(pct(&mut rec, 999, Some(1000)), Some(99.9));
        assert_eq!(pct(&mut rec, 9999, Some(10000)), Some(100.0));
        assert_eq!(pct(&mut rec, 10, Some(10)), Some(100.0));
        assert_eq!(pct(&mut rec, 50, Some(10)), Some(100.0), "a lying Content-Length never shows over 100%");
        assert_eq!(pct(&mut rec, u64::MAX, Some(u64::MAX)), Some(100.0));
    }
}

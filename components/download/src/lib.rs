//! The download worker (private; the gateway forwards `GET /{dir}?download=URL` here).
//!
//! It validates the request, reserves a target name and a concurrency slot, answers `202`
//! with the download id, and then — in the same invocation, after the response is complete —
//! streams the remote body into storage, writing throttled progress and heartbeats until the
//! download completes, fails or is cancelled. Every rule lives in `downlink_core::download`.

use downlink_core::auth::Scope;
use downlink_core::download::params::StartRequest;
use downlink_core::download::progress::{ProgressThrottle, TransferDeadline};
use downlink_core::download::record::{start_response, DownloadRecord, ProgressReport};
use downlink_core::download::registry::{
    finish, load_record, report_progress, start, trim_history, RecordUpdate, Start, StartIds, Started,
};
use downlink_core::download::remote_status::{
    check_body_complete, check_size_cap, classify_response_status, parse_content_length,
};
use downlink_core::download::settings::DownloadSettings;
use downlink_core::download::url_policy::{next_hop, CheckedUrl};
use downlink_core::meta::{FileMeta, Origin};
use downlink_core::query::Query;
use downlink_core::storage::{delete_file, stat, Entry, FileWriter, WriteMode, WriteOptions};
use downlink_core::{ApiError, ErrorCode, StoragePath};
use downlink_spin::fetch::{self, BodyStep, FetchError, ResponseBody};
use downlink_spin::http::{send_error, send_json, RequestHead, IO_CHUNK};
use downlink_spin::kv::AppStorage;
use downlink_spin::{auth, download_settings, now_unix, random_blob_id, random_id};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Longest a connection attempt may take (the whole-transfer deadline may be shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the worker waits for response headers without checking its deadline, cancel flag
/// and heartbeat (body reads wait until the next such duty, [`Duties::next_wait`]).
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Shortest wait for body bytes.
const MIN_WAIT: Duration = Duration::from_millis(10);
const USER_AGENT: &str = concat!("Downlink/", env!("CARGO_PKG_VERSION"));

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    drop(req);
    let started = match accept(&head) {
        Ok(Accepted::Started(download)) => download,
        Ok(Accepted::Refused(status, body)) => return send_json(out, status, &body, &[]),
        Err(e) => return send_error(out, &e),
    };
    let location = format!("/api/v1/downloads/{}", started.record.id);
    let body = start_response(&started.record).to_json_bytes();
    // The client has its complete answer now; the transfer continues in this invocation.
    send_json(out, 202, &body, &[("location", location)]);
    started.run();
}

enum Accepted {
    Started(Box<Download>),
    /// Refused after validation, in the reference's start-body shape (recorded in history).
    Refused(u16, Vec<u8>),
}

/// Everything before the `202`: auth, the operator switch, validation, target and slot.
fn accept(head: &RequestHead) -> Result<Accepted, ApiError> {
    let principal = auth::authenticate(head.header("authorization"))?;
    principal.require(Scope::DownloadCreate)?;
    let settings = download_settings()?;
    if !settings.allow_download {
        return Err(ApiError::new(
            ErrorCode::DownloadForbidden,
            "downloading from URLs is switched off on this server (variable `allow_download`)",
        ));
    }
    let directory = StoragePath::from_url_path(head.path())?.path;
    let query = Query::parse(head.query())?;
    let storage = downlink_spin::kv::open_default()?;
    if let Some(Entry::File(_)) = stat(&storage, &directory)? {
        return Err(ApiError::conflict(format!("`/{directory}` is a file, not a directory")));
    }
    let ids = StartIds { download: random_id(), blob: random_blob_id() };
    Ok(match start(&storage, &query, &directory, &principal.name, &settings, ids, now_unix())? {
        Start::Accepted(started) => {
            let Started { record, request, target } = *started;
            Accepted::Started(Box::new(Download { storage, settings, request, target, record }))
        }
        Start::Refused(body) => Accepted::Refused(body.status(), body.to_json_bytes()),
    })
}

/// A started download: the transfer runs after the response was sent.
struct Download {
    storage: AppStorage,
    settings: DownloadSettings,
    request: StartRequest,
    target: StoragePath,
    record: DownloadRecord,
}

/// How a transfer ended when it did not complete.
enum Stop {
    /// Someone else ended the record (a cancel, or a sweep that thought us dead).
    Ended,
    /// It failed with this error.
    Failed(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Failed(e)
    }
}

fn monotonic_ms() -> u64 {
    fetch::now() / 1_000_000
}

impl Download {
    fn run(self) {
        let id = self.record.id.clone();
        let outcome = self.transfer();
        let now = now_unix();
        let ended = match outcome {
            Ok(meta) => {
                let ended = finish(&self.storage, &id, |r| r.complete(now, meta.size));
                if let Ok(RecordUpdate::AlreadyEnded(_)) = ended {
                    // Cancelled between the last check and publication: take the file back,
                    // but only this exact version of it.
                    let _ = delete_file(&self.storage, &meta.path, Some(&meta.etag()));
                }
                ended
            }
            Err(Stop::Ended) => Ok(RecordUpdate::AlreadyEnded(self.record.clone())),
            Err(Stop::Failed(e)) => {
                eprintln!("download {id}: {}: {}", e.code.as_str(), e.message);
                finish(&self.storage, &id, |r| r.fail_with(now, &e))
            }
        };
        if let Err(e) = ended {
            eprintln!("download {id}: could not record the end: {}", e.message);
        }
        let _ = trim_history(&self.storage, self.settings.history_limit);
    }

    /// Fetches (following redirects) and stores the body; returns the published file.
    fn transfer(&self) -> Result<FileMeta, Stop> {
        let start_ms = monotonic_ms();
        let deadline = TransferDeadline::new(start_ms, self.request.timeout_secs);
        let deadline_ns = fetch::after(Duration::from_secs(self.request.timeout_secs));
        let mut duties = Duties::new(self, start_ms);

        let (response, url) = self.fetch_following_redirects(deadline_ns, &deadline, &mut duties)?;
        classify_response_status(response.status())?;
        let expected = fetch::response_header(&response, "content-length").and_then(|v| parse_content_length(&v));
        check_size_cap(self.settings.max_bytes, expected, 0)?;
        duties.report(0, expected)?;

        let blob_id = self.record.blob_id.clone().unwrap_or_else(random_blob_id);
        let options = WriteOptions {
            mode: WriteMode::CreateNew,
            origin: Origin::Url(url.as_str().to_owned()),
            max_size: self.settings.max_bytes,
            expected_sha256: self.request.sha256.map(|d| d.to_hex()),
            ..WriteOptions::default()
        };
        let mut writer = FileWriter::begin(&self.storage, self.target.clone(), blob_id, options, now_unix())?;
        let streamed = self
            .stream_body(&response, expected, &deadline, deadline_ns, &mut duties, &mut writer)
            .and_then(|received| check_body_complete(expected, received).map_err(Stop::from));
        // A cancel may have landed since the last check: look once more before publishing.
        let streamed = streamed.and_then(|()| duties.check_not_ended());
        match streamed {
            // CreateNew: a file that appeared at the target meanwhile is never overwritten.
            Ok(()) => Ok(writer.commit(now_unix())?.meta),
            Err(stop) => {
                let _ = writer.abort();
                Err(stop)
            }
        }
    }

    fn fetch_following_redirects(
        &self,
        deadline_ns: fetch::Instant,
        deadline: &TransferDeadline,
        duties: &mut Duties<'_>,
    ) -> Result<(spin_sdk::http::IncomingResponse, CheckedUrl), Stop> {
        let mut url = self.request.url.clone();
        let mut redirects = 0;
        loop {
            let remaining =
                Duration::from_millis(deadline.remaining_ms(monotonic_ms()).ok_or_else(|| deadline.expired())?);
            let authority = url.authority();
            let target = fetch::Target {
                scheme: url.scheme().as_str(),
                authority: &authority,
                path_and_query: url.path_and_query(),
            };
            // The host's own timeouts get a little slack: our deadline is the one that counts.
            let host_limit = remaining + Duration::from_secs(1);
            let pending =
                fetch::start_get(&target, &[("user-agent", USER_AGENT)], host_limit.min(CONNECT_TIMEOUT), host_limit)
                    .map_err(|e| fetch_error(e, deadline))?;
            let mut cancelled = false;
            let response = fetch::await_response(&pending, deadline_ns, MAX_WAIT, &mut || match duties.tick() {
                Ok(()) => true,
                Err(_) => {
                    cancelled = true;
                    false
                }
            });
            if cancelled {
                return Err(Stop::Ended);
            }
            let response = response.map_err(|e| fetch_error(e, deadline))?;
            let location = fetch::response_header(&response, "location");
            match next_hop(&url, response.status(), location.as_deref(), redirects, &self.settings.policy)? {
                Some(next) => {
                    redirects += 1;
                    url = next;
                }
                None => return Ok((response, url)),
            }
        }
    }

    fn stream_body(
        &self,
        response: &spin_sdk::http::IncomingResponse,
        expected: Option<u64>,
        deadline: &TransferDeadline,
        deadline_ns: fetch::Instant,
        duties: &mut Duties<'_>,
        writer: &mut FileWriter<'_, AppStorage>,
    ) -> Result<u64, Stop> {
        let mut body = ResponseBody::of(response).map_err(|e| fetch_error(e, deadline))?;
        let mut received = 0u64;
        loop {
            match body.step(IO_CHUNK, deadline_ns, duties.next_wait()).map_err(|e| fetch_error(e, deadline))? {
                BodyStep::Data(bytes) => {
                    received += bytes.len() as u64;
                    check_size_cap(self.settings.max_bytes, expected, received)?;
                    writer.write(&bytes)?;
                }
                BodyStep::Idle => {}
                BodyStep::End => return Ok(received),
            }
            // Also while waiting, so bytes received before a stall are shown.
            if duties.throttle.should_report(monotonic_ms(), received) {
                duties.report(received, expected)?;
            }
            duties.tick()?;
            writer.touch(now_unix())?;
        }
    }
}

/// The worker's periodic duties: progress, heartbeats and noticing a cancel.
struct Duties<'d> {
    download: &'d Download,
    throttle: ProgressThrottle,
    heartbeat_ms: u64,
    /// The last report written (its sizes are repeated by heartbeats); shared with the hook
    /// that keeps the heartbeat fresh while the bucket is slow to answer.
    last: Rc<RefCell<ProgressReport>>,
}

impl<'d> Duties<'d> {
    fn new(download: &'d Download, start_ms: u64) -> Self {
        let duties = Duties {
            download,
            throttle: ProgressThrottle::new(start_ms),
            heartbeat_ms: download.settings.heartbeat_secs * 1000,
            last: Rc::default(),
        };
        duties.keep_alive_while_the_bucket_works();
        duties
    }

    /// With bytes in a bucket, a request can keep the worker waiting far longer than a
    /// heartbeat interval (completing a multipart upload of gigabytes): meanwhile the bucket's
    /// waiting hook repeats the last report with a fresh heartbeat, through a store handle of
    /// its own.
    fn keep_alive_while_the_bucket_works(&self) {
        let (Some(objects), Ok(records)) = (&self.download.storage.objects, downlink_spin::kv::open_records()) else {
            return;
        };
        let (last, id, interval) =
            (self.last.clone(), self.download.record.id.clone(), self.download.settings.heartbeat_secs);
        objects.while_waiting(Box::new(move || {
            let now = now_unix();
            let mut report = last.borrow_mut();
            if now >= report.heartbeat + interval {
                report.heartbeat = now;
                if let Err(e) = report_progress(&records, &id, &report) {
                    eprintln!("download {id}: heartbeat while the bucket works: {e}");
                }
            }
        }));
    }

    /// Reports `received` bytes of a response that has arrived, then looks at the record.
    fn report(&mut self, received: u64, expected: Option<u64>) -> Result<(), Stop> {
        {
            let mut last = self.last.borrow_mut();
            last.current_size = received;
            last.expected_size = expected.or(last.expected_size);
            last.receiving = true;
        }
        self.write_report()
    }

    /// Stores the report, fresh heartbeat included (a plain set of the worker's own key, no
    /// compare-and-swap), then `Ended` if someone ended the record meanwhile.
    fn write_report(&mut self) -> Result<(), Stop> {
        let report = {
            let mut last = self.last.borrow_mut();
            last.heartbeat = now_unix();
            last.clone()
        };
        report_progress(&self.download.storage, &self.download.record.id, &report)?;
        self.check_not_ended()
    }

    /// `Ended` if someone ended the record (a cancel).
    fn check_not_ended(&self) -> Result<(), Stop> {
        match load_record(&self.download.storage, &self.download.record.id)? {
            Some(record) if !record.is_terminal() => Ok(()),
            _ => Err(Stop::Ended),
        }
    }

    /// How long to wait for body bytes before a duty (heartbeat, cancel check) is due; at
    /// least [`MIN_WAIT`], so an overdue duty does not turn the wait into a busy loop.
    fn next_wait(&self) -> Duration {
        Duration::from_millis(self.throttle.until_next_duty_ms(monotonic_ms(), self.heartbeat_ms)).max(MIN_WAIT)
    }

    /// Sends a heartbeat when due and checks for a cancel when due.
    fn tick(&mut self) -> Result<(), Stop> {
        let now_ms = monotonic_ms();
        if self.throttle.heartbeat_due(now_ms, self.heartbeat_ms) {
            self.write_report()?;
        } else if self.throttle.cancel_check_due(now_ms) {
            self.check_not_ended()?;
        }
        Ok(())
    }
}

fn fetch_error(e: FetchError, deadline: &TransferDeadline) -> Stop {
    // Past the whole-transfer deadline, whatever else went wrong, the download timed out
    // (e.g. the host's own timeout or a dropped connection noticed a moment after it).
    if !matches!(e, FetchError::Cancelled) && deadline.remaining_ms(monotonic_ms()).is_none() {
        return Stop::Failed(deadline.expired());
    }
    match e {
        FetchError::Http(code) => Stop::Failed(fetch::outbound_failure(&code).into()),
        FetchError::Deadline => Stop::Failed(deadline.expired()),
        FetchError::Cancelled => Stop::Ended,
        FetchError::BodyBroken(detail) => {
            Stop::Failed(ApiError::new(ErrorCode::NetworkError, format!("the connection broke off mid-body: {detail}")))
        }
        FetchError::Invalid(detail) => Stop::Failed(ApiError::new(ErrorCode::NetworkError, detail)),
    }
}

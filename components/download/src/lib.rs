//! The download worker (private; the gateway forwards `GET /{dir}?download=URL` here).
//!
//! It validates the request, reserves a target name and a concurrency slot, answers `202`
//! with the download id, and then — in the same invocation, after the response is complete —
//! streams the remote body into storage, writing throttled progress and heartbeats until the
//! download completes, fails or is cancelled. Transient faults are retried, asking for the
//! rest of the file with `Range`/`If-Range` (`downlink_core::download::retry`). At the slice
//! budget the transfer is checkpointed and handed to the next invocation, which arrives here
//! as `?resume=<id>&slice=<n>` from the app itself; so do the downloads of dead workers that
//! sweeps resume (`downlink_core::download::slices`). Every rule lives in
//! `downlink_core::download`.

use downlink_core::auth::Scope;
use downlink_core::backoff::clock_jitter;
use downlink_core::download::params::StartRequest;
use downlink_core::download::progress::{ProgressThrottle, TransferDeadline};
use downlink_core::download::record::{start_response, DownloadRecord, ProgressReport};
use downlink_core::download::registry::{
    finish, load_record, report_progress, start, trim_history, RecordUpdate, Start, StartIds, Started,
};
use downlink_core::download::remote_status::{check_size_cap, parse_content_length};
use downlink_core::download::retry::{
    check_body_end, classify_answer, resume_headers, AfterFault, Answer, RemoteFault, Validator,
};
use downlink_core::download::settings::DownloadSettings;
use downlink_core::download::slices::{
    hand_off, save_checkpoint, take_over, TakenOver, TransferCheckpoint, CHECKPOINT_EVERY_MS,
};
use downlink_core::download::url_policy::{next_hop, CheckedUrl};
use downlink_core::meta::{FileMeta, Origin};
use downlink_core::query::Query;
use downlink_core::storage::{delete_file, stat, Entry, FileWriter, WriteMode, WriteOptions};
use downlink_core::{ApiError, ErrorCode, StoragePath};
use downlink_spin::continuation::continue_download;
use downlink_spin::fetch::{self, BodyStep, FetchError, ResponseBody};
use downlink_spin::http::{send_error, send_json, RequestHead, IO_CHUNK};
use downlink_spin::kv::AppStorage;
use downlink_spin::{auth, download_settings, now_unix, random_blob_id, random_id};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
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

/// Serves one request (the component's export; the gateway calls it directly where the host
/// has no service chaining).
#[cfg_attr(feature = "export", spin_sdk::http_component)]
pub async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    drop(req);
    // `?resume=` without `download=` only comes from the app itself (the gateway forwards
    // `download=` alone here): see `downlink_spin::continuation`.
    if let Ok(query) = Query::parse(head.query()) {
        if query.get("download").is_none() {
            if let Some(id) = query.get("resume") {
                return resume(id, query.get("slice"), out);
            }
        }
    }
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

/// Takes over download `id` from the checkpoint of slice `slice`: `202` and the next slice
/// runs in this invocation, or `409` when there is nothing to take over.
fn resume(id: &str, slice: Option<&str>, out: ResponseOutparam) {
    let taken = (|| {
        let slice: u32 = slice.and_then(|s| s.parse().ok()).ok_or_else(|| ApiError::invalid_request("bad `slice`"))?;
        let settings = download_settings()?;
        let storage = downlink_spin::kv::open_default()?;
        let taken = take_over(&storage, id, slice, &settings.policy, now_unix())?;
        Ok::<_, ApiError>(taken.map(|taken| {
            let TakenOver { record, request, target, checkpoint } = taken;
            let slice = record.slice;
            Download { storage, settings, request, target, record, slice, checkpoint }
        }))
    })();
    match taken {
        Ok(Some(download)) => {
            send_json(out, 202, br#"{"resumed":true}"#, &[]);
            download.run();
        }
        Ok(None) => send_json(out, 409, br#"{"resumed":false}"#, &[]),
        Err(e) => send_error(out, &e),
    }
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
    // Starting a download changes state: `GET` as the spec has it, never as a side effect of a
    // `HEAD` (which must be safe) or of a method meant for the directory.
    if head.method != Method::Get {
        return Err(ApiError::method_not_allowed("GET"));
    }
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
            let slice = record.slice;
            Accepted::Started(Box::new(Download {
                storage,
                settings,
                request,
                target,
                record,
                slice,
                checkpoint: None,
            }))
        }
        Start::Refused(body) => Accepted::Refused(body.status(), body.to_json_bytes()),
    })
}

/// A download this invocation transfers (one slice of it): the transfer runs after the
/// response was sent.
struct Download {
    storage: AppStorage,
    settings: DownloadSettings,
    request: StartRequest,
    target: StoragePath,
    record: DownloadRecord,
    /// The slice this invocation owns; the record naming another means it was taken over.
    slice: u32,
    /// Where the previous slice stopped (a resumed download).
    checkpoint: Option<TransferCheckpoint>,
}

/// How a transfer ended when it did not complete.
enum Stop {
    /// Someone else ended the record (a cancel, or a sweep that thought us dead).
    Ended,
    /// Another invocation took the download over (this one was thought dead): its write is
    /// theirs now, so it is left alone.
    Superseded,
    /// It failed with this error.
    Failed(ApiError),
}

/// How this invocation's part of a transfer ended.
enum Outcome {
    /// The file is published.
    Completed(FileMeta),
    /// The slice budget ran out; the next invocation goes on from the checkpoint.
    HandedOff,
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
            Ok(Outcome::HandedOff) => return,
            Ok(Outcome::Completed(meta)) => {
                let ended = finish(&self.storage, &id, |r| r.complete(now, meta.size));
                if let Ok(RecordUpdate::AlreadyEnded(_)) = ended {
                    // Cancelled between the last check and publication: take the file back,
                    // but only this exact version of it.
                    let _ = delete_file(&self.storage, &meta.path, Some(&meta.etag()));
                }
                ended
            }
            Err(Stop::Ended | Stop::Superseded) => Ok(RecordUpdate::AlreadyEnded(self.record.clone())),
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

    /// Fetches (following redirects) and stores the body, retrying transient faults and
    /// resuming from the bytes already stored where the origin allows; returns the published
    /// file.
    fn transfer(&self) -> Result<Outcome, Stop> {
        let start_ms = monotonic_ms();
        let elapsed_secs = now_unix().saturating_sub(self.record.start_time);
        let deadline =
            TransferDeadline::new(start_ms, elapsed_secs, self.request.timeout_secs, self.settings.invocation_secs);
        let deadline_ns = fetch::after(Duration::from_millis(deadline.remaining_ms(start_ms).unwrap_or(0)));
        let mut duties = Duties::new(self, start_ms);
        let mut stored = self.resume_write()?;
        if let Some(resumed) = &mut stored {
            // From here on the tail the last slice kept is in memory only: the stored
            // checkpoint stands at a boundary again, so the next one may reuse those keys.
            self.save_checkpoint(resumed)?;
        }
        // Attempts in a row that stored nothing new: a flaky link that makes progress each
        // time is not given up on.
        let mut attempt = 1;
        loop {
            let before = stored.as_ref().map(|s| s.received);
            let interrupted = match self.attempt(&mut stored, &deadline, deadline_ns, &mut duties) {
                // A cancel may have landed since the last check: look once more before publishing.
                Ok(()) => match duties.check_not_ended() {
                    Ok(()) => break,
                    Err(stop) => Interrupted::Stop(stop),
                },
                Err(interrupted) => interrupted,
            };
            let stop = match interrupted {
                Interrupted::SliceEnd => return self.hand_off(stored, &mut duties),
                Interrupted::Stop(stop) => stop,
                Interrupted::Fault(fault) => {
                    if stored.as_ref().map(|s| s.received) > before {
                        attempt = 1;
                    }
                    if let RemoteFault::UnusableRange { .. } = fault {
                        discard(&mut stored);
                    }
                    let remaining = deadline.remaining_ms(monotonic_ms()).map(Duration::from_millis);
                    match self.settings.retry.after_fault(attempt, &fault, clock_jitter(), remaining) {
                        AfterFault::Retry(wait) => {
                            let at = stored.as_ref().map_or(0, |s| s.received);
                            eprintln!(
                                "download {}: attempt {attempt} failed ({}); retrying in {} ms from byte {at}",
                                self.record.id,
                                fault.error().message,
                                wait.as_millis()
                            );
                            match duties.wait(wait) {
                                Ok(()) => {
                                    attempt += 1;
                                    continue;
                                }
                                Err(stop) => stop,
                            }
                        }
                        AfterFault::GiveUp(error) => Stop::Failed(error),
                    }
                }
            };
            if !matches!(stop, Stop::Superseded) {
                discard(&mut stored);
            }
            return Err(stop);
        }
        let stored = stored.ok_or_else(|| Stop::Failed(ApiError::internal("a finished transfer stored nothing")))?;
        // CreateNew: a file that appeared at the target meanwhile is never overwritten.
        Ok(Outcome::Completed(stored.writer.commit(now_unix())?.meta))
    }

    /// The write the previous slice left, if it is still there; else (by the restart setting)
    /// the download starts over.
    fn resume_write(&self) -> Result<Option<Stored<'_>>, Stop> {
        let Some(checkpoint) = &self.checkpoint else { return Ok(None) };
        match FileWriter::resume(&self.storage, checkpoint.write.clone(), now_unix()) {
            Ok(writer) => Ok(Some(Stored {
                writer,
                received: checkpoint.stored_bytes(),
                expected: checkpoint.expected_size,
                validator: checkpoint.validator.clone(),
            })),
            Err(e) => {
                self.may_restart(checkpoint.stored_bytes(), &format!("what it stored is gone ({})", e.message))?;
                let _ = checkpoint.write.discard(&self.storage);
                Ok(None)
            }
        }
    }

    /// Stores where the transfer stands (at its last chunk boundary), for the next slice or a
    /// recovery after this invocation dies.
    fn save_checkpoint(&self, stored: &mut Stored<'_>) -> Result<(), Stop> {
        let write = stored.writer.checkpoint()?;
        let checkpoint = TransferCheckpoint {
            slice: self.slice,
            validator: stored.validator.clone(),
            expected_size: stored.expected,
            write,
        };
        save_checkpoint(&self.storage, &self.record.id, &checkpoint)?;
        Ok(())
    }

    /// At the slice budget: stores the write with its tail, marks the download as awaiting
    /// its next slice, and asks the app to run it.
    fn hand_off(&self, stored: Option<Stored<'_>>, duties: &mut Duties<'_>) -> Result<Outcome, Stop> {
        let id = &self.record.id;
        let Stored { writer, received, expected, validator } =
            stored.ok_or_else(|| Stop::Failed(ApiError::internal("a slice ended with nothing stored")))?;
        let write = writer.suspend()?;
        let checkpoint = TransferCheckpoint { slice: self.slice, validator, expected_size: expected, write };
        save_checkpoint(&self.storage, id, &checkpoint)?;
        let handed_off = duties.report(received, expected).is_ok() && hand_off(&self.storage, id, self.slice)?;
        if !handed_off {
            return match duties.check_not_ended() {
                Err(Stop::Ended) => {
                    let _ = checkpoint.write.discard(&self.storage);
                    Err(Stop::Ended)
                }
                _ => Err(Stop::Superseded),
            };
        }
        eprintln!("download {id}: slice {} ends at byte {received}; the next one goes on from there", self.slice);
        if !continue_download(id, self.slice) {
            eprintln!("download {id}: a sweep resumes it once its heartbeat is stale");
        }
        Ok(Outcome::HandedOff)
    }

    /// One request for the file (the rest of it when `stored` holds a start), streamed into
    /// the pending write; `Ok` once the whole file is stored.
    fn attempt<'s>(
        &'s self,
        stored: &mut Option<Stored<'s>>,
        deadline: &TransferDeadline,
        deadline_ns: fetch::Instant,
        duties: &mut Duties<'_>,
    ) -> Result<(), Interrupted> {
        let resume = match stored.as_ref().filter(|s| s.received > 0) {
            None => None,
            Some(s) => match resume_headers(s.received, &s.validator) {
                Some(headers) => Some((s.received, headers)),
                None => {
                    self.may_restart(s.received, "it gave no strong ETag or Last-Modified to resume by")?;
                    discard(stored);
                    None
                }
            },
        };
        let extra: Vec<(&str, &str)> = resume
            .iter()
            .flat_map(|(_, headers)| headers.iter().map(|(name, value)| (*name, value.as_str())))
            .collect();
        let (response, url) = self.fetch_following_redirects(&extra, deadline_ns, deadline, duties)?;
        let header = |name| fetch::response_header(&response, name);
        let answer = classify_answer(
            response.status(),
            header("content-range").as_deref(),
            header("retry-after").as_deref(),
            resume.as_ref().map(|(offset, _)| *offset),
            now_unix(),
        )
        .map_err(Interrupted::Fault)?;
        let content_length = header("content-length").and_then(|v| parse_content_length(&v));
        if let (Answer::Whole, Some(s)) = (answer, stored.as_ref()) {
            self.may_restart(s.received, "it sent the whole file again (the file changed, or it ignores ranges)")?;
            discard(stored);
        }
        if let Answer::Rest { total } = answer {
            let s = stored.as_ref().ok_or_else(|| Stop::Failed(ApiError::internal("a range without a start")))?;
            let rest_fits = content_length.is_none_or(|rest| Some(s.received + rest) == s.expected.or(total));
            if total.is_some_and(|total| s.expected.is_some_and(|expected| expected != total)) || !rest_fits {
                return Err(Interrupted::Fault(RemoteFault::UnusableRange { status: 206 }));
            }
        }
        if stored.is_none() {
            check_size_cap(self.settings.max_bytes, content_length, 0)?;
            let mut begun = self.begin_write(&url, content_length, &response)?;
            // A download killed from here on can be recovered.
            self.save_checkpoint(&mut begun)?;
            *stored = Some(begun);
        }
        let stored = stored.as_mut().ok_or_else(|| Stop::Failed(ApiError::internal("no pending write")))?;
        duties.report(stored.received, stored.expected)?;
        self.stream_body(&response, stored, deadline, deadline_ns, duties)?;
        check_body_end(stored.expected, stored.received).map_err(Interrupted::Fault)
    }

    /// `Ok` if a download that stored `received` bytes may start over; the origin cannot
    /// send the rest `because`.
    fn may_restart(&self, received: u64, because: &str) -> Result<(), Stop> {
        if self.settings.restart_without_ranges {
            eprintln!("download {}: starting over after {received} bytes: {because}", self.record.id);
            return Ok(());
        }
        Err(Stop::Failed(ApiError::new(
            ErrorCode::NetworkError,
            format!(
                "the origin cannot continue the download at byte {received}: {because}; \
                 starting over is switched off (download_restart_without_ranges)"
            ),
        )))
    }

    /// Starts the pending write for the whole file `response` delivers.
    fn begin_write(
        &self,
        url: &CheckedUrl,
        expected: Option<u64>,
        response: &spin_sdk::http::IncomingResponse,
    ) -> Result<Stored<'_>, Stop> {
        // The record names the blob, so a sweep can reclaim it if this worker dies; a restart
        // reuses it (the discarded write left nothing under it).
        let blob_id = self.record.blob_id.clone().unwrap_or_else(random_blob_id);
        let options = WriteOptions {
            mode: WriteMode::CreateNew,
            origin: Origin::Url(url.as_str().to_owned()),
            max_size: self.settings.max_bytes,
            expected_sha256: self.request.sha256.map(|d| d.to_hex()),
            ..WriteOptions::default()
        };
        let writer = FileWriter::begin(&self.storage, self.target.clone(), blob_id, options, now_unix())?;
        let validator = Validator::from_headers(
            fetch::response_header(response, "etag").as_deref(),
            fetch::response_header(response, "last-modified").as_deref(),
        );
        Ok(Stored { writer, received: 0, expected, validator })
    }

    fn fetch_following_redirects(
        &self,
        extra_headers: &[(&str, &str)],
        deadline_ns: fetch::Instant,
        deadline: &TransferDeadline,
        duties: &mut Duties<'_>,
    ) -> Result<(spin_sdk::http::IncomingResponse, CheckedUrl), Interrupted> {
        let mut url = self.request.url.clone();
        let mut redirects = 0;
        let mut headers = vec![("user-agent", USER_AGENT)];
        headers.extend_from_slice(extra_headers);
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
            let pending = fetch::start_get(&target, &headers, host_limit.min(CONNECT_TIMEOUT), host_limit)
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
                return Err(Stop::Ended.into());
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
        stored: &mut Stored<'_>,
        deadline: &TransferDeadline,
        deadline_ns: fetch::Instant,
        duties: &mut Duties<'_>,
    ) -> Result<(), Interrupted> {
        let mut body = ResponseBody::of(response).map_err(|e| fetch_error(e, deadline))?;
        loop {
            match body.step(IO_CHUNK, deadline_ns, duties.next_wait()).map_err(|e| fetch_error(e, deadline))? {
                BodyStep::Data(bytes) => {
                    stored.received += bytes.len() as u64;
                    check_size_cap(self.settings.max_bytes, stored.expected, stored.received)?;
                    stored.writer.write(&bytes).map_err(Stop::from)?;
                }
                BodyStep::Idle => {}
                BodyStep::End => return Ok(()),
            }
            // Also while waiting, so bytes received before a stall are shown.
            let now_ms = monotonic_ms();
            if duties.throttle.should_report(now_ms, stored.received) {
                duties.report(stored.received, stored.expected)?;
            }
            if duties.checkpoint_due(now_ms) {
                self.save_checkpoint(stored)?;
            }
            duties.tick()?;
            stored.writer.touch(now_unix()).map_err(Stop::from)?;
            // Only a download the next slice can resume hands off: one the origin cannot
            // send the rest of would start over at every slice and never finish.
            if duties.slice_ended(now_ms) && resume_headers(stored.received, &stored.validator).is_some() {
                return Err(Interrupted::SliceEnd);
            }
        }
    }
}

/// What the attempts so far stored: the pending write and what the origin said of the file.
struct Stored<'s> {
    writer: FileWriter<'s, AppStorage>,
    /// Bytes of the file written so far.
    received: u64,
    /// The whole file's size, when announced.
    expected: Option<u64>,
    /// The version stored so far, to ask for the rest of exactly it.
    validator: Validator,
}

/// Takes back whatever `stored` holds (best effort: storage GC removes any rest).
fn discard(stored: &mut Option<Stored<'_>>) {
    if let Some(stored) = stored.take() {
        let _ = stored.writer.abort();
    }
}

/// Why an attempt ended early: the download stops, the attempt may be retried, or the slice
/// budget ran out.
enum Interrupted {
    Stop(Stop),
    Fault(RemoteFault),
    SliceEnd,
}

impl From<Stop> for Interrupted {
    fn from(stop: Stop) -> Self {
        Interrupted::Stop(stop)
    }
}

impl From<ApiError> for Interrupted {
    fn from(e: ApiError) -> Self {
        Interrupted::Stop(Stop::Failed(e))
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
    last_checkpoint_ms: u64,
    /// When this invocation's slice ends (`download_slice_secs`).
    slice_end_ms: Option<u64>,
}

impl<'d> Duties<'d> {
    fn new(download: &'d Download, start_ms: u64) -> Self {
        let duties = Duties {
            download,
            throttle: ProgressThrottle::new(start_ms),
            heartbeat_ms: download.settings.heartbeat_secs * 1000,
            last: Rc::default(),
            last_checkpoint_ms: start_ms,
            slice_end_ms: download.settings.slice_secs.map(|secs| start_ms.saturating_add(secs.saturating_mul(1000))),
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

    /// `Ended` if someone ended the record (a cancel); `Superseded` if another invocation
    /// took the download over.
    fn check_not_ended(&self) -> Result<(), Stop> {
        match load_record(&self.download.storage, &self.download.record.id)? {
            Some(record) if record.is_terminal() => Err(Stop::Ended),
            Some(record) if record.slice != self.download.slice => Err(Stop::Superseded),
            Some(_) => Ok(()),
            None => Err(Stop::Ended),
        }
    }

    /// Whether a checkpoint is due ([`CHECKPOINT_EVERY_MS`]); `true` assumes the caller stores one.
    fn checkpoint_due(&mut self, now_ms: u64) -> bool {
        let due = now_ms.saturating_sub(self.last_checkpoint_ms) >= CHECKPOINT_EVERY_MS;
        if due {
            self.last_checkpoint_ms = now_ms;
        }
        due
    }

    /// Whether this invocation's slice budget has run out.
    fn slice_ended(&self, now_ms: u64) -> bool {
        self.slice_end_ms.is_some_and(|end| now_ms >= end)
    }

    /// How long to wait for body bytes before a duty (heartbeat, cancel check) is due; at
    /// least [`MIN_WAIT`], so an overdue duty does not turn the wait into a busy loop.
    fn next_wait(&self) -> Duration {
        Duration::from_millis(self.throttle.until_next_duty_ms(monotonic_ms(), self.heartbeat_ms)).max(MIN_WAIT)
    }

    /// Waits `wait` (between retries), keeping up heartbeats and cancel checks.
    fn wait(&mut self, wait: Duration) -> Result<(), Stop> {
        let until = monotonic_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        while let Some(left) = until.checked_sub(monotonic_ms()).filter(|left| *left > 0) {
            downlink_spin::pause(Duration::from_millis(left).min(self.next_wait()));
            self.tick()?;
        }
        Ok(())
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

fn fetch_error(e: FetchError, deadline: &TransferDeadline) -> Interrupted {
    // Past the whole-transfer deadline, whatever else went wrong, the download timed out
    // (e.g. the host's own timeout or a dropped connection noticed a moment after it).
    if !matches!(e, FetchError::Cancelled) && deadline.remaining_ms(monotonic_ms()).is_none() {
        return Stop::Failed(deadline.expired()).into();
    }
    match e {
        FetchError::Http(code) => Interrupted::Fault(RemoteFault::Outbound(fetch::outbound_failure(&code))),
        FetchError::Deadline => Stop::Failed(deadline.expired()).into(),
        FetchError::Cancelled => Stop::Ended.into(),
        FetchError::BodyBroken(detail) => {
            eprintln!("the connection broke off mid-body: {detail}");
            Interrupted::Fault(RemoteFault::BodyBroken)
        }
        FetchError::Invalid(detail) => Stop::Failed(ApiError::new(ErrorCode::NetworkError, detail)).into(),
    }
}

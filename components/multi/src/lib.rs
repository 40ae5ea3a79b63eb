//! Step two of a multi-file download (`POST|GET|HEAD /api/download/multi?id=...`): loads the
//! prepared plan, checks owner (`403`), expiry (`410`) and that every file is unchanged (`409`,
//! before the first byte), then streams the single file as an attachment or a STORE ZIP laid
//! out up front (exact `Content-Length`, `Range`/`If-Range` on the archive) — or, with
//! `compression=deflate`, a deflated ZIP streamed without length or ranges. Bytes sent count
//! towards the caller's bandwidth counter, with an optional quota (`429`);
//! `GET /api/download/usage` reports it. All rules live in `downlink-core`.

use downlink_core::auth::{Principal, Scope};
use downlink_core::blob::chunk_key;
use downlink_core::deflate_zip::{ArchiveCompression, DeflateZipWriter};
use downlink_core::http::{plan_response, ConditionalHeaders, Representation, ResponsePlan};
use downlink_core::prepare::{validate_plan_id, BandwidthUsage, PlanEntry, PlanStore, PreparedPlan};
use downlink_core::query::Query;
use downlink_core::storage::{read_meta, Storage};
use downlink_core::zip::{Segment, ZipLayout, ZIP_CONTENT_TYPE};
use downlink_core::ApiError;
use downlink_spin::bandwidth::{self, CountingSink};
use downlink_spin::http::{send_bytes, send_error, start_response, RequestHead};
use downlink_spin::{auth, now_unix};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

/// Content type of a single file whose record has none.
const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    // The request body (the reference sends none) is never read.
    drop(req);
    if let Err(e) = serve(&head, out) {
        // Only reached once the response has started: the body is left unfinished, so the
        // client sees a truncated response, never a silently short file or archive.
        eprintln!("multi: {} {} failed mid-response: {}", head.method_name(), head.path(), e.message);
    }
}

/// Answers one request. Errors returned here happened after the response started.
fn serve(head: &RequestHead, out: ResponseOutparam) -> Result<(), ApiError> {
    let ready = auth::authenticate(head.header("authorization")).and_then(|principal| {
        let storage = downlink_spin::kv::open_default()?;
        Ok((principal, storage))
    });
    let (principal, storage) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            send_error(out, &e);
            return Ok(());
        }
    };
    let decided = match head.path().trim_end_matches('/') {
        "/api/download/usage" => usage(&storage, &principal, head).map(Reply::Json),
        _ => download(&storage, &principal, head).map(Reply::Download),
    };
    match decided {
        Ok(Reply::Json(body)) => {
            send_bytes(out, 200, &[("content-type", downlink_core::error::JSON_CONTENT_TYPE.to_string())], &body);
            Ok(())
        }
        Ok(Reply::Download(download)) => download.send(&storage, out),
        Err(e) => {
            send_error(out, &e);
            Ok(())
        }
    }
}

enum Reply {
    Json(Vec<u8>),
    Download(Box<Download>),
}

/// `GET /api/download/usage`.
fn usage<S: Storage>(storage: &S, principal: &Principal, head: &RequestHead) -> Result<Vec<u8>, ApiError> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    principal.require(Scope::FileRead)?;
    let quota = bandwidth::quota()?;
    let used = bandwidth::bytes_sent(storage, &principal.name)?;
    Ok(BandwidthUsage::new(&principal.name, used, quota).to_json_bytes())
}

/// What the body of a download is.
enum Body {
    /// The one file of the plan (or a range of it).
    Single,
    /// The STORE archive, laid out up front (or a range of it).
    StoredZip(ZipLayout),
    /// The deflated archive, streamed whole (the STORE layout names its entries).
    DeflatedZip(ZipLayout),
}

/// A download decided and checked, ready to send.
struct Download {
    plan: PreparedPlan,
    body: Body,
    response: ResponsePlan,
    head_only: bool,
    /// Whose bandwidth counter the bytes go to.
    principal: String,
}

fn download<S: Storage>(storage: &S, principal: &Principal, head: &RequestHead) -> Result<Box<Download>, ApiError> {
    if !matches!(head.method, Method::Get | Method::Head | Method::Post) {
        return Err(ApiError::method_not_allowed("GET, HEAD, POST"));
    }
    principal.require(Scope::FileRead)?;
    let query = Query::parse(head.query())?;
    let raw_id = query.get("id").ok_or_else(|| {
        ApiError::invalid_request("missing the `id` query parameter: /api/download/multi?id=<id from prepare>")
    })?;
    let id = validate_plan_id(raw_id)?;
    let compression = ArchiveCompression::from_param(query.get("compression"))?;
    let plan = PlanStore::new(storage).load(&id, &principal.name, now_unix())?;

    // Every file must still be exactly what was prepared: the sizes and CRCs are in the
    // headers, so a changed file would make a corrupt archive. Checked before any byte is sent.
    for entry in &plan.entries {
        entry.check_current(read_meta(storage, &entry.path)?.as_ref())?;
    }

    let head_only = head.method == Method::Head;
    let (layout, size) = if plan.is_archive() {
        let layout = plan.zip_layout()?;
        let size = layout.total_len();
        (Some(layout), size)
    } else {
        (None, plan.entries[0].size)
    };
    let deflate = layout.is_some() && compression == ArchiveCompression::Deflate;
    let mut response = if deflate {
        // The compressed size is unknown until sent: no length, no ranges, no validators to
        // resume against. The STORE size is what the quota is checked against.
        ResponsePlan::streamed(ZIP_CONTENT_TYPE, plan.last_modified())
    } else {
        let etag = plan.etag();
        let content_type = match plan.content_type() {
            "" => FALLBACK_CONTENT_TYPE,
            other => other,
        };
        let representation = Representation { size, etag: &etag, last_modified: plan.last_modified(), content_type };
        let conditional = ConditionalHeaders {
            range: head.header("range"),
            if_range: head.header("if-range"),
            if_none_match: head.header("if-none-match"),
        };
        plan_response(&representation, conditional)?
    };
    response.headers.push(("content-disposition", plan.content_disposition()));
    response.headers.push(("cache-control", "private".to_string()));

    let about_to_send = match (response.has_body && !head_only, response.range) {
        (false, _) => 0,
        (true, Some(range)) => range.len(),
        (true, None) => size,
    };
    bandwidth::check_before_sending(storage, &principal.name, about_to_send)?;
    let body = match layout {
        Some(layout) if deflate => Body::DeflatedZip(layout),
        Some(layout) => Body::StoredZip(layout),
        None => Body::Single,
    };
    Ok(Box::new(Download { plan, body, response, head_only, principal: principal.name.clone() }))
}

impl Download {
    fn send<S: Storage>(self, storage: &S, out: ResponseOutparam) -> Result<(), ApiError> {
        let body = start_response(out, self.response.status, &self.response.headers);
        if self.head_only || !self.response.has_body {
            let _ = body.finish();
            return Ok(());
        }
        let mut sink = CountingSink::new(body, storage, &self.principal);
        let sent = match &self.body {
            Body::StoredZip(layout) => send_archive(storage, &self.plan, layout, &self.response, &mut sink),
            Body::DeflatedZip(layout) => send_deflated_archive(storage, &self.plan, layout, &mut sink),
            Body::Single => {
                let entry = &self.plan.entries[0];
                let (offset, len) = match self.response.range {
                    Some(range) => (range.start, range.len()),
                    None => (0, entry.size),
                };
                send_entry(storage, entry, offset, len, &mut sink)
            }
        };
        // What went out is counted also when the transfer broke off (the sink counts on drop).
        sent?;
        sink.finish()
    }
}

fn send_archive<S: Storage>(
    storage: &S,
    plan: &PreparedPlan,
    layout: &ZipLayout,
    response: &ResponsePlan,
    sink: &mut CountingSink<'_, S>,
) -> Result<(), ApiError> {
    for segment in layout.segments(response.range) {
        match segment {
            Segment::Bytes(bytes) => sink.write(&bytes)?,
            Segment::Data { entry, offset, len } => {
                let entry = plan.entries.get(entry).ok_or_else(|| ApiError::internal("layout and plan disagree"))?;
                send_entry(storage, entry, offset, len, sink)?;
            }
        }
    }
    Ok(())
}

/// The whole deflated archive: every entry compressed as its chunks are read; the writer
/// checks each against the size and CRC-32 from prepare.
fn send_deflated_archive<S: Storage>(
    storage: &S,
    plan: &PreparedPlan,
    layout: &ZipLayout,
    sink: &mut CountingSink<'_, S>,
) -> Result<(), ApiError> {
    let mut archive = DeflateZipWriter::new(sink);
    for (index, entry) in plan.entries.iter().enumerate() {
        let zip_entry = layout.entry(index).ok_or_else(|| ApiError::internal("layout and plan disagree"))?;
        archive.start_entry(zip_entry)?;
        for_each_slice(storage, entry, 0, entry.size, |part| archive.write(part))?;
    }
    archive.finish().map(drop)
}

/// Copies `len` bytes of `entry`'s content from `offset`, one stored chunk at a time. A whole
/// entry is also checked against its CRC-32; on any mismatch the error stops the response
/// before it is finished.
fn send_entry<S: Storage>(
    storage: &S,
    entry: &PlanEntry,
    offset: u64,
    len: u64,
    sink: &mut CountingSink<'_, S>,
) -> Result<(), ApiError> {
    let mut crc = (offset == 0 && len == entry.size).then(crc32fast::Hasher::new);
    for_each_slice(storage, entry, offset, len, |part| {
        if let Some(crc) = &mut crc {
            crc.update(part);
        }
        sink.write(part)
    })?;
    if let Some(crc) = crc {
        if crc.finalize() != entry.crc32 {
            return Err(ApiError::storage(format!("`/{}` failed its CRC-32 check", entry.path)));
        }
    }
    Ok(())
}

/// Reads `len` bytes of `entry` from `offset`, one stored chunk at a time, into `consume`.
fn for_each_slice<S: Storage>(
    storage: &S,
    entry: &PlanEntry,
    offset: u64,
    len: u64,
    mut consume: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let Some(chunks) = entry.chunk_plan(offset, len) else {
        return if len == 0 { Ok(()) } else { Err(ApiError::internal("range outside the file")) };
    };
    for slice in chunks {
        let bytes = storage.get(&chunk_key(&entry.blob_id, slice.index))?.ok_or_else(|| {
            ApiError::storage(format!("chunk {} of `/{}` vanished during the download", slice.index, entry.path))
        })?;
        if bytes.len() != slice.expected_len {
            return Err(ApiError::storage(format!("chunk {} of `/{}` has the wrong length", slice.index, entry.path)));
        }
        consume(&bytes[slice.start..slice.end])?;
    }
    Ok(())
}

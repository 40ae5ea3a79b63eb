//! Step two of a multi-file download (`POST|GET|HEAD /api/download/multi?id=...`): loads the
//! prepared plan, checks owner (`403`), expiry (`410`) and that every file is unchanged (`409`,
//! before the first byte), then streams the single file as an attachment or a STORE ZIP laid
//! out up front (exact `Content-Length`, `Range`/`If-Range` on the archive) — or, with
//! `compression=deflate`, a deflated ZIP streamed without length or ranges. Bytes sent count
//! towards the caller's bandwidth counter, with an optional quota (`429`);
//! `GET /api/download/usage` reports it. All rules live in `downlink-core`.

use downlink_core::auth::{Principal, Scope};
use downlink_core::deflate_zip::ArchiveCompression;
use downlink_core::delivery::{Delivery, StreamError};
use downlink_core::prepare::{validate_plan_id, BandwidthUsage, PlanStore};
use downlink_core::query::Query;
use downlink_core::storage::Storage;
use downlink_core::ApiError;
use downlink_spin::bandwidth;
use downlink_spin::http::{send_error, send_json, ClientGone, RequestHead};
use downlink_spin::{auth, now_unix};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    // The request body (the reference sends none) is never read.
    drop(req);
    match serve(&head, out) {
        // A HEAD answer has no body to cut: ending it reports the Content-Length it did not
        // send (the host checks that count), which is no failure.
        Err(_) if head.method == Method::Head => {}
        // Only reached once the response has started: the body is left unfinished, so the
        // client sees a truncated response, never a silently short file or archive.
        Err(e) => eprintln!("multi: {} {} failed mid-response: {e}", head.method_name(), head.path()),
        Ok(()) => {}
    }
}

/// Answers one request. Errors returned here happened after the response started.
fn serve(head: &RequestHead, out: ResponseOutparam) -> Result<(), StreamError<ClientGone>> {
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
            send_json(out, 200, &body, &[]);
            Ok(())
        }
        // Bytes sent count towards the principal's bandwidth, with an optional quota (`429`).
        Ok(Reply::Download(delivery)) => bandwidth::deliver(&storage, &principal.name, &delivery, out),
        Err(e) => {
            send_error(out, &e);
            Ok(())
        }
    }
}

enum Reply {
    Json(Vec<u8>),
    Download(Box<Delivery>),
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

/// `POST|GET|HEAD /api/download/multi?id=..[&compression=deflate]`: the prepared plan, checked
/// (owner, expiry, every file unchanged) and decided, ready to stream.
fn download<S: Storage>(storage: &S, principal: &Principal, head: &RequestHead) -> Result<Box<Delivery>, ApiError> {
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
    let head_only = head.method == Method::Head;
    let delivery = Delivery::plan(storage, &plan, compression, head.conditional(), head_only)?;
    Ok(Box::new(delivery.with_check(downlink_spin::read_check()?)))
}

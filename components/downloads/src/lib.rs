//! Active downloads: `GET /{dir}?downloads=` (through the gateway) lists one directory's,
//! `GET /api/v1/downloads` all of them; `GET /api/v1/downloads/{id}` shows one record in any
//! state and `DELETE /api/v1/downloads/{id}` cancels it. Before answering, downloads whose
//! worker stopped reporting are ended as interrupted and their blobs reclaimed, so nothing
//! stays "downloading" forever.

use downlink_core::auth::{Principal, Scope};
use downlink_core::download::record::active_list_body;
use downlink_core::download::registry::{
    finish, list_active, load_current, load_record, sweep_and_reclaim, RecordFilter, RecordUpdate,
};
use downlink_core::query::Query;
use downlink_core::{ApiError, ErrorCode, StoragePath};
use downlink_spin::continuation::continue_download;
use downlink_spin::http::{send_error, send_json, RequestHead};
use downlink_spin::kv::AppStorage;
use downlink_spin::{auth, download_settings, now_unix};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

const API_PREFIX: &str = "/api/v1/downloads";

/// Serves one request (the component's export; the gateway calls it directly where the host
/// has no service chaining).
#[cfg_attr(feature = "export", spin_sdk::http_component)]
pub async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    drop(req);
    match serve(&head) {
        Ok((status, body)) => send_json(out, status, &body, &[]),
        Err(e) => send_error(out, &e),
    }
}

fn serve(head: &RequestHead) -> Result<(u16, Vec<u8>), ApiError> {
    let principal = auth::authenticate(head.header("authorization"))?;
    let settings = download_settings()?;
    let storage = downlink_spin::kv::open_default()?;
    let now = now_unix();
    let query = Query::parse(head.query())?;
    sweep_and_reclaim(&storage, now, settings.heartbeat_secs, &continue_download)?;

    // The gateway forwards `/{dir}?downloads=`; everything else arrives on /api/v1/downloads.
    if query.has("downloads") {
        principal.require(Scope::DownloadRead)?;
        require_method(head, Method::Get, "GET, HEAD")?;
        let directory = StoragePath::from_url_path(head.path())?.path;
        let filter = RecordFilter { directory: Some(directory), owner: None };
        let running = list_active(&storage, &filter, now, settings.heartbeat_secs, &continue_download)?;
        return Ok((200, active_list_body(&running)));
    }
    let rest = head.path().strip_prefix(API_PREFIX).ok_or_else(|| ApiError::not_found("no such endpoint"))?;
    match rest.trim_end_matches('/') {
        "" => {
            principal.require(Scope::DownloadRead)?;
            require_method(head, Method::Get, "GET, HEAD")?;
            let running =
                list_active(&storage, &RecordFilter::default(), now, settings.heartbeat_secs, &continue_download)?;
            Ok((200, active_list_body(&running)))
        }
        id => {
            let id = id.strip_prefix('/').filter(|id| !id.contains('/')).ok_or_else(|| not_found(id))?;
            match head.method {
                Method::Get | Method::Head => {
                    principal.require(Scope::DownloadRead)?;
                    // As the list shows it: a worker that stopped reporting ends as interrupted.
                    let record = load_current(&storage, id, now, settings.heartbeat_secs, &continue_download)?
                        .ok_or_else(|| not_found(id))?;
                    Ok((200, record.detail_view().to_json_bytes()))
                }
                Method::Delete => cancel(&storage, &principal, id, now),
                _ => Err(ApiError::method_not_allowed("GET, HEAD, DELETE")),
            }
        }
    }
}

/// Ends the download as cancelled. The worker notices within a second (its next progress
/// write or cancel check finds the record ended) and discards what it stored.
fn cancel(storage: &AppStorage, principal: &Principal, id: &str, now: u64) -> Result<(u16, Vec<u8>), ApiError> {
    principal.require(Scope::DownloadCreate)?;
    let record = load_record(storage, id)?.ok_or_else(|| not_found(id))?;
    if record.owner != principal.name && !principal.scopes.allows(Scope::Admin) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the principal that started a download (or an admin) may cancel it",
        ));
    }
    match finish(storage, id, |r| r.cancel(now))? {
        RecordUpdate::Applied(record) => Ok((200, record.detail_view().to_json_bytes())),
        RecordUpdate::AlreadyEnded(record) => {
            Err(ApiError::conflict(format!("download {id} already ended ({})", record.status.as_str())))
        }
    }
}

fn require_method(head: &RequestHead, method: Method, allowed: &str) -> Result<(), ApiError> {
    if head.method == method || (method == Method::Get && head.method == Method::Head) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allowed))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no download {id:?}"))
}

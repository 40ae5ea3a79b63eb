//! Download history (private; the gateway forwards `GET /?download_history=` here): finished,
//! failed and cancelled downloads, the most recently ended first. `limit` and `cursor` page
//! through it (`next_cursor` in the answer); `directory=` — or a non-root path such as
//! `/Downloads?download_history=` — keeps one directory's downloads.

use downlink_core::auth::Scope;
use downlink_core::download::record::history_body;
use downlink_core::download::registry::{history_page, parse_history_params, sweep_and_reclaim, RecordFilter};
use downlink_core::query::Query;
use downlink_core::{ApiError, StoragePath};
use downlink_spin::continuation::continue_download;
use downlink_spin::http::{send_error, send_json, RequestHead};
use downlink_spin::{auth, download_settings, now_unix};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

/// Serves one request (the component's export; the gateway calls it directly where the host
/// has no service chaining).
#[cfg_attr(feature = "export", spin_sdk::http_component)]
pub async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    drop(req);
    match serve(&head) {
        Ok(body) => send_json(out, 200, &body, &[]),
        Err(e) => send_error(out, &e),
    }
}

fn serve(head: &RequestHead) -> Result<Vec<u8>, ApiError> {
    let principal = auth::authenticate(head.header("authorization"))?;
    principal.require(Scope::DownloadRead)?;
    if !matches!(head.method, Method::Get | Method::Head) {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    let query = Query::parse(head.query())?;
    let params = parse_history_params(&query)?;
    let path_dir = StoragePath::from_url_path(head.path())?.path;
    let directory = match query.get("directory").filter(|d| !d.is_empty()) {
        Some(dir) => Some(StoragePath::parse(dir)?),
        None if !path_dir.is_root() => Some(path_dir),
        None => None,
    };
    let settings = download_settings()?;
    let storage = downlink_spin::kv::open_default()?;
    // Downloads whose worker died belong in history too.
    sweep_and_reclaim(&storage, now_unix(), settings.heartbeat_secs, &continue_download)?;
    let page = history_page(&storage, params.limit, params.cursor, &RecordFilter { directory, owner: None })?;
    Ok(history_body(&page.records, page.next_cursor))
}

//! Operator endpoints (scope `admin`):
//! `POST /api/v1/admin/gc[?grace=SECONDS]` removes what interrupted writes left behind
//! (orphan chunks, abandoned pending markers) and re-links files a crash left out of their
//! directory listing, and deletes expired multi-download plans. Writes younger than the grace
//! period are left alone.

use downlink_core::auth::Scope;
use downlink_core::prepare::PlanStore;
use downlink_core::query::Query;
use downlink_core::storage::{collect_garbage, DEFAULT_GC_GRACE_SECS};
use downlink_core::ApiError;
use downlink_spin::http::{send_error, send_json, RequestHead};
use downlink_spin::{auth, now_unix};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    match serve(&head) {
        Ok(body) => send_json(out, 200, &downlink_core::json::to_bytes(&body), &[]),
        Err(e) => send_error(out, &e),
    }
}

fn serve(head: &RequestHead) -> Result<serde_json::Value, ApiError> {
    let principal = auth::authenticate(head.header("authorization"))?;
    principal.require(Scope::Admin)?;
    if head.path() != "/api/v1/admin/gc" {
        return Err(ApiError::not_found(format!("no admin endpoint `{}`", head.path())));
    }
    if head.method != Method::Post {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let query = Query::parse(head.query())?;
    let grace = match query.get("grace") {
        None => DEFAULT_GC_GRACE_SECS,
        Some(v) => v.parse().map_err(|_| ApiError::invalid_request("`grace` must be a number of seconds"))?,
    };
    let storage = downlink_spin::kv::open_default()?;
    let now = now_unix();
    let report = collect_garbage(&storage, now, grace)?;
    let expired_plans_deleted = PlanStore::new(&storage).sweep_expired(now)?;
    Ok(json!({
        "success": true,
        "orphan_chunks_deleted": report.orphan_chunks_deleted,
        "markers_deleted": report.markers_deleted,
        "uploads_aborted": report.uploads_aborted,
        "claims_lost": report.claims_lost,
        "files_relinked": report.files_relinked,
        "failures": report.failures,
        "expired_plans_deleted": expired_plans_deleted,
    }))
}

//! Step one of a multi-file download (`POST /api/download/prepare`): reads a JSON
//! `{"Filelist": [...]}` or form `Filelist[]=` body, resolves every path now (a directory means
//! its files, recursively; missing paths → `404` naming them), and stores the plan under a fresh
//! random id, bound to the caller and expiring after `prepare_ttl_secs`. Answers
//! `{"rslt": "<id>"}`. All rules live in `downlink-core`.

use downlink_core::auth::{Principal, Scope};
use downlink_core::prepare::{
    missing_paths_error, new_plan_id, parse_prepare_request, PlanBuilder, PlanEntry, PlanLimits, PlanStore,
    PrepareResponse, DEFAULT_PLAN_TTL_SECS, MAX_PREPARE_BODY_BYTES,
};
use downlink_core::storage::{stat, walk_files, Entry, Storage};
use downlink_core::{ApiError, ErrorCode, StoragePath};
use downlink_spin::http::{send_error, send_json, BodyReader, RequestHead, IO_CHUNK};
use downlink_spin::{auth, now_unix};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

/// Spin variable: seconds a prepare id stays valid.
const TTL_VARIABLE: &str = "prepare_ttl_secs";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    match prepare(req, &head) {
        Ok(answer) => send_json(out, 200, &answer.to_json_bytes(), &[]),
        Err(e) => send_error(out, &e),
    }
}

fn prepare(req: IncomingRequest, head: &RequestHead) -> Result<PrepareResponse, ApiError> {
    let principal = auth::authenticate(head.header("authorization"))?;
    if head.method != Method::Post {
        return Err(ApiError::method_not_allowed("POST"));
    }
    principal.require(Scope::FileRead)?;
    let ttl_secs = ttl_secs()?;
    let body = read_body(req, head)?;
    let paths = parse_prepare_request(head.header("content-type"), &body)?;
    drop(body);
    let storage = downlink_spin::kv::open_default()?;
    store_plan(&storage, &principal, &paths, ttl_secs)
}

/// `prepare_ttl_secs`: a positive number of seconds (default five minutes).
fn ttl_secs() -> Result<u64, ApiError> {
    downlink_spin::settings().positive(TTL_VARIABLE, DEFAULT_PLAN_TTL_SECS)
}

/// After a body turned out too large, up to this many more bytes are read and dropped before
/// answering `413`, so a client that sends its whole body before reading the answer (most
/// libraries) gets the `413` rather than a broken pipe. Bodies declared larger than the limit plus
/// this are refused at once, without reading them (and `Expect: 100-continue` clients never send
/// them).
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// The whole body, refusing (`413`) anything over [`MAX_PREPARE_BODY_BYTES`] before parsing it.
fn read_body(req: IncomingRequest, head: &RequestHead) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the prepare body is larger than {MAX_PREPARE_BODY_BYTES} bytes; list a directory instead"),
        )
    };
    let limit = MAX_PREPARE_BODY_BYTES as u64;
    let declared = head.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit + DRAIN_BYTES) {
        return Err(too_large());
    }
    let mut reader = BodyReader::new(req)?;
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while body.len() as u64 <= limit {
        let want = IO_CHUNK.min(limit + 1 - body.len() as u64);
        match reader.read(want)? {
            Some(bytes) => body.extend_from_slice(&bytes),
            None => return Ok(body),
        }
    }
    let mut drained = 0u64;
    while drained < DRAIN_BYTES {
        match reader.read(IO_CHUNK) {
            Ok(Some(bytes)) => drained += bytes.len() as u64,
            Ok(None) | Err(_) => break,
        }
    }
    Err(too_large())
}

/// Resolves `paths` into a plan and stores it.
fn store_plan<S: Storage>(
    storage: &S,
    principal: &Principal,
    paths: &[StoragePath],
    ttl_secs: u64,
) -> Result<PrepareResponse, ApiError> {
    let limits = PlanLimits::default();
    let mut builder = PlanBuilder::new(limits);
    let mut missing = Vec::new();
    for path in paths {
        match stat(storage, path)? {
            None => missing.push(path.clone()),
            // Once something is missing the answer is 404: only look for more missing paths.
            Some(_) if !missing.is_empty() => {}
            Some(Entry::File(meta)) => {
                builder.push(PlanEntry::from_meta(&meta))?;
            }
            Some(Entry::Dir(dir)) => {
                for meta in walk_files(storage, &dir, limits.max_entries)? {
                    builder.push(PlanEntry::from_meta(&meta))?;
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(missing_paths_error(&missing));
    }
    // The spec asks for ids of at least 128 random bits, more than a v4 UUID's 122.
    let random = downlink_spin::random_bytes();
    let plan = builder.finish(&new_plan_id(random), &principal.name, now_unix(), ttl_secs)?;
    PlanStore::new(storage).store(&plan)?;
    Ok(PrepareResponse { rslt: plan.id })
}

//! File access (private; reached through the gateway): `PUT` streams an upload into storage,
//! `GET`/`HEAD` stream a file (with `Range`, `If-None-Match`, `If-Range`) or a directory listing
//! (`limit`, `cursor`),
//! `DELETE` removes a file or a directory tree. All rules live in `downlink-core`.

use downlink_core::auth::{Principal, Scope};
use downlink_core::delivery::{Delivery, StreamError};
use downlink_core::error::JSON_CONTENT_TYPE;
use downlink_core::listing::{Listing, ListingError, ListingQuery};
use downlink_core::path::ParsedPath;
use downlink_core::storage::{
    delete_dir_recursive, delete_file, stat, Committed, Entry, FileWriter, WriteMode, WriteOptions, TOUCH_INTERVAL_SECS,
};
use downlink_core::{ApiError, StoragePath};
use downlink_spin::bandwidth;
use downlink_spin::http::{send_error, send_json, BodyReader, ClientGone, DeferredResponse, RequestHead, IO_CHUNK};
use downlink_spin::kv::AppStorage;
use downlink_spin::{auth, now_unix};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

/// Serves one request (the component's export; the gateway calls it directly where the host
/// has no service chaining).
#[cfg_attr(feature = "export", spin_sdk::http_component)]
pub async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    match serve(req, &head, out) {
        // A HEAD answer has no body to cut: ending it reports the Content-Length it did not
        // send (the host checks that count), which is no failure.
        Err(_) if head.method == Method::Head => {}
        // Only reached when the response had already started; the client sees a cut body.
        Err(e) => eprintln!("files: {} {} failed mid-response: {e}", head.method_name(), head.path()),
        Ok(()) => {}
    }
}

/// Answers one request. Errors returned here happened after the response started.
fn serve(req: IncomingRequest, head: &RequestHead, out: ResponseOutparam) -> Result<(), StreamError<ClientGone>> {
    let prepared = auth::authenticate(head.header("authorization")).and_then(|principal| {
        let target = StoragePath::from_url_path(head.path())?;
        Ok((principal, target, downlink_spin::kv::open_default()?))
    });
    let (principal, target, storage) = match prepared {
        Ok(p) => p,
        Err(e) => {
            send_error(out, &e);
            return Ok(());
        }
    };
    let outcome = match head.method {
        _ if !target.allows(&head.method_name()) => Err(ApiError::method_not_allowed(target.allowed_methods())),
        Method::Get | Method::Head => read(&storage, &principal, &target, head),
        Method::Put => head
            .required_text("if-match")
            .and_then(|if_match| upload(&storage, &principal, &target, if_match, req))
            .map(Reply::Json),
        Method::Delete => head
            .required_text("if-match")
            .and_then(|if_match| remove(&storage, &principal, &target, if_match))
            .map(Reply::Json),
        _ => Err(ApiError::method_not_allowed(target.allowed_methods())),
    };
    match outcome {
        Ok(Reply::Json((status, body))) => send_json(out, status, &downlink_core::json::to_bytes(&body), &[]),
        // Bytes sent count towards the principal's bandwidth (the reference: downloads through
        // the REST API count).
        Ok(Reply::File(delivery)) => return bandwidth::deliver(&storage, &principal.name, &delivery, out),
        Ok(Reply::Listing(listing)) => {
            // Held back like a file's answer: a failure in the first 64 KiB is still a JSON error.
            let mut body = DeferredResponse::new(out, 200, vec![("content-type", JSON_CONTENT_TYPE.to_owned())]);
            if head.method != Method::Head {
                if let Err(e) = listing.stream(&mut body) {
                    match (e, body.into_unsent()) {
                        (ListingError::Index(error), Some(out)) => send_error(out, &error),
                        // The body is cut short, so the client cannot take it for a whole listing.
                        (e, _) => eprintln!("files: listing /{} failed part-way: {e}", target.path),
                    }
                    return Ok(());
                }
            }
            let _ = body.finish();
        }
        Err(e) => send_error(out, &e),
    }
    Ok(())
}

/// What a request decided to send.
enum Reply<'a> {
    Json((u16, serde_json::Value)),
    File(Box<Delivery>),
    Listing(Listing<'a, AppStorage>),
}

fn read<'a>(
    storage: &'a AppStorage,
    principal: &Principal,
    target: &ParsedPath,
    head: &RequestHead,
) -> Result<Reply<'a>, ApiError> {
    principal.require(Scope::FileRead)?;
    match stat(storage, &target.path)? {
        Some(Entry::File(meta)) if !target.trailing_slash => {
            let delivery = Delivery::file(&meta, head.conditional(), head.method == Method::Head)?;
            Ok(Reply::File(Box::new(delivery.with_check(downlink_spin::read_check()?))))
        }
        Some(Entry::File(_)) => Err(not_a_directory(&target.path)),
        Some(Entry::Dir(dir)) => Ok(Reply::Listing(Listing::open(storage, &dir, &ListingQuery::parse(head.query())?)?)),
        None => Err(ApiError::not_found(format!("no file or directory `/{}`", target.path))),
    }
}

/// `PUT`: stores the body as the file (`If-Match`: only over the version with that ETag, else
/// `412`; nothing is kept then).
fn upload(
    storage: &AppStorage,
    principal: &Principal,
    target: &ParsedPath,
    if_match: Option<&str>,
    req: IncomingRequest,
) -> Result<(u16, serde_json::Value), ApiError> {
    principal.require(Scope::FileWrite)?;
    let blob_id = downlink_spin::random_blob_id();
    let started = now_unix();
    let options = WriteOptions { mode: WriteMode::for_upload(if_match), ..WriteOptions::default() };
    let mut writer = FileWriter::begin(storage, target.path.clone(), blob_id, options, started)?;
    let mut body = BodyReader::new(req)?;
    let mut last_touch = started;
    loop {
        let chunk = match body.read(IO_CHUNK) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(aborted) => {
                let _ = writer.abort();
                return Err(aborted.into());
            }
        };
        if let Err(e) = writer.write(&chunk) {
            let _ = writer.abort();
            return Err(e);
        }
        let now = now_unix();
        if now >= last_touch + TOUCH_INTERVAL_SECS {
            writer.touch(now)?;
            last_touch = now;
        }
    }
    let Committed { meta, replaced } = writer.commit(now_unix())?;
    Ok((
        if replaced { 200 } else { 201 },
        json!({
            "success": true,
            "path": meta.path.as_str(),
            "size": meta.size,
            "crc32": format!("{:08x}", meta.crc32),
            "content_type": meta.content_type,
            "etag": meta.etag(),
        }),
    ))
}

/// `DELETE`: a file (`If-Match`: only the version with that ETag, else `412`) or a tree.
fn remove(
    storage: &AppStorage,
    principal: &Principal,
    target: &ParsedPath,
    if_match: Option<&str>,
) -> Result<(u16, serde_json::Value), ApiError> {
    principal.require(Scope::FileWrite)?;
    match stat(storage, &target.path)? {
        // As for `GET`: `/name/` names a directory, so it never deletes a file.
        Some(Entry::File(_)) if target.trailing_slash => Err(not_a_directory(&target.path)),
        Some(Entry::File(meta)) => {
            delete_file(storage, &meta.path, if_match)?;
            Ok((200, json!({ "success": true, "path": meta.path.as_str(), "deleted_files": 1 })))
        }
        Some(Entry::Dir(dir)) => {
            let summary = delete_dir_recursive(storage, &dir)?;
            Ok((
                200,
                json!({ "success": true, "path": dir.as_str(), "deleted_files": summary.files, "deleted_dirs": summary.dirs }),
            ))
        }
        None => Err(ApiError::not_found(format!("no file or directory `/{}`", target.path))),
    }
}

/// `/name/` names a directory; a file there is not found as one.
fn not_a_directory(path: &StoragePath) -> ApiError {
    ApiError::not_found(format!("`/{path}` is a file, not a directory"))
}

//! Per-principal bandwidth accounting: the quota from the `bandwidth_quota_bytes` variable,
//! the atomic bytes-sent counter, and a response body that counts what it sends.

use crate::http::{send_error, send_json, ClientGone, DeferredResponse};
use downlink_core::delivery::{ContentSink, Delivery, Redirect, StreamError};
use downlink_core::prepare::{bandwidth_key, check_quota};
use downlink_core::storage::{Storage, StorageError};
use downlink_core::ApiError;
use spin_sdk::http::ResponseOutparam;

/// Spin variable: bytes each principal may download in total; `0` or empty = no quota.
pub const QUOTA_VARIABLE: &str = "bandwidth_quota_bytes";

/// Bytes sent are added to the principal's counter whenever this many have accumulated, and
/// once more at the end: a few atomic increments per download rather than one per chunk.
const COUNT_EVERY_BYTES: u64 = 8 * 1024 * 1024;

/// The per-principal quota (`bandwidth_quota_bytes`), `None` when unlimited (0 or unset); a
/// value that is not a number is a `500` naming the variable.
pub fn quota() -> Result<Option<u64>, ApiError> {
    crate::settings().limit(QUOTA_VARIABLE)
}

/// The principal's bytes-sent counter. Read with an atomic increment by zero, which returns the
/// current value whatever the backend's counter representation.
pub fn bytes_sent<S: Storage + ?Sized>(storage: &S, principal: &str) -> Result<u64, ApiError> {
    let value = storage.increment(&bandwidth_key(principal), 0)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Adds `bytes` to the bytes-sent counter at `key` (a principal's [`bandwidth_key`]).
fn count_sent<S: Storage + ?Sized>(storage: &S, key: &str, bytes: u64) -> Result<(), StorageError> {
    storage.increment(key, i64::try_from(bytes).unwrap_or(i64::MAX)).map(drop)
}

/// `429 QUOTA_EXCEEDED` if sending `about_to_send` more bytes would exceed the quota.
pub fn check_before_sending<S: Storage + ?Sized>(
    storage: &S,
    principal: &str,
    about_to_send: u64,
) -> Result<(), ApiError> {
    if about_to_send == 0 {
        return Ok(());
    }
    match quota()? {
        Some(quota) => check_quota(bytes_sent(storage, principal)?, about_to_send, Some(quota)),
        None => Ok(()),
    }
}

/// Spin variable: the largest response body this host lets out (the hosted targets' 10 MiB
/// cap); `0` or empty = no cap. Larger answers are redirected to the bucket or refused
/// ([`Delivery::within_cap`]).
pub const MAX_RESPONSE_VARIABLE: &str = "max_response_bytes";

/// Answers with `delivery`: the principal's quota is checked first (a clean `429` before any
/// status is committed); over the response cap, a `302` to the bucket (or the JSON `413` that
/// says how to fetch it in parts); else the body streams, counted as it goes. A read that fails
/// before the response is committed (see [`DeferredResponse`]) is answered with its JSON error.
/// An error returned means the body broke off after the status was sent; it is left unfinished,
/// so the client sees a truncated response, never a silently short one.
pub fn deliver<S: Storage + ?Sized>(
    storage: &S,
    principal: &str,
    delivery: &Delivery,
    out: ResponseOutparam,
) -> Result<(), StreamError<ClientGone>> {
    if let Err(refused) = check_before_sending(storage, principal, delivery.bytes_to_send()) {
        send_error(out, &refused);
        return Ok(());
    }
    match crate::settings().limit(MAX_RESPONSE_VARIABLE).and_then(|cap| delivery.within_cap(storage, cap)) {
        Ok(None) => {}
        Ok(Some(Redirect { location, bytes })) => {
            // The bytes leave through the bucket, but they are this principal's download.
            match count_sent(storage, &bandwidth_key(principal), bytes) {
                Ok(_) => send_redirect(out, &location),
                Err(e) => send_error(out, &e.into()),
            }
            return Ok(());
        }
        Err(refused) => {
            send_error(out, &refused);
            return Ok(());
        }
    }
    let body = DeferredResponse::new(out, delivery.response.status, delivery.response.headers.clone());
    let mut sink = CountingSink::new(body, storage, principal);
    // What went out is counted also when the transfer breaks off (the sink counts on drop).
    match delivery.stream(storage, &mut sink) {
        Ok(()) => sink.finish().map_err(StreamError::Sink),
        Err(StreamError::Content(error)) => match sink.into_unsent() {
            Some(out) => {
                send_error(out, &error.into());
                Ok(())
            }
            None => Err(StreamError::Content(error)),
        },
        Err(other) => Err(other),
    }
}

/// A response body that counts the bytes it sends into a principal's counter, in batches.
pub struct CountingSink<'a, S: Storage + ?Sized> {
    /// `None` once finished.
    body: Option<DeferredResponse>,
    storage: &'a S,
    key: String,
    uncounted: u64,
}

impl<'a, S: Storage + ?Sized> CountingSink<'a, S> {
    /// Counts what is written to `body` for `principal`.
    pub fn new(body: DeferredResponse, storage: &'a S, principal: &str) -> Self {
        CountingSink { body: Some(body), storage, key: bandwidth_key(principal), uncounted: 0 }
    }

    /// Adds the bytes sent since the last call to the counter. A failed increment is logged,
    /// not fatal: the download itself is fine.
    pub fn count_now(&mut self) {
        if self.uncounted == 0 {
            return;
        }
        match count_sent(self.storage, &self.key, self.uncounted) {
            Ok(_) => self.uncounted = 0,
            Err(e) => eprintln!("could not count {} bytes sent: {e}", self.uncounted),
        }
    }

    /// Counts the rest and ends the body.
    pub fn finish(mut self) -> Result<(), ClientGone> {
        self.count_now();
        self.body.take().map_or(Ok(()), DeferredResponse::finish)
    }

    /// The response slot if no byte was sent yet (see [`DeferredResponse::into_unsent`]).
    pub fn into_unsent(mut self) -> Option<ResponseOutparam> {
        let out = self.body.take().and_then(DeferredResponse::into_unsent);
        if out.is_some() {
            // Held back, never sent: not counted.
            self.uncounted = 0;
        }
        out
    }
}

/// Sends `data` and counts it.
impl<S: Storage + ?Sized> ContentSink for CountingSink<'_, S> {
    type Error = ClientGone;

    fn send(&mut self, data: &[u8]) -> Result<(), ClientGone> {
        self.body.as_mut().ok_or(ClientGone)?.send(data)?;
        self.uncounted += data.len() as u64;
        if self.uncounted >= COUNT_EVERY_BYTES {
            self.count_now();
        }
        Ok(())
    }
}

impl<S: Storage + ?Sized> Drop for CountingSink<'_, S> {
    /// A body that broke off still counts what was sent.
    fn drop(&mut self) {
        self.count_now();
    }
}

/// `302` to `location`, with the URL in a small JSON body too (for clients that do not follow
/// redirects); never cached, since the URL expires.
fn send_redirect(out: ResponseOutparam, location: &str) {
    let body = serde_json::json!({ "redirect": location, "reason": "larger than this host's response limit" });
    send_json(
        out,
        302,
        &downlink_core::json::to_bytes(&body),
        &[("location", location.to_owned()), ("cache-control", "no-store".to_owned())],
    );
}

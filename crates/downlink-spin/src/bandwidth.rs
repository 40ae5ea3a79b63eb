//! Per-principal bandwidth accounting: the quota from the `bandwidth_quota_bytes` variable,
//! the atomic bytes-sent counter, and a response body that counts what it sends.

use crate::http::BodyWriter;
use downlink_core::prepare::{bandwidth_key, check_quota};
use downlink_core::storage::Storage;
use downlink_core::ApiError;

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

/// A response body that counts the bytes it sends into a principal's counter, in batches.
pub struct CountingSink<'a, S: Storage + ?Sized> {
    /// `None` once finished.
    body: Option<BodyWriter>,
    storage: &'a S,
    key: String,
    uncounted: u64,
}

impl<'a, S: Storage + ?Sized> CountingSink<'a, S> {
    /// Counts what is written to `body` for `principal`.
    pub fn new(body: BodyWriter, storage: &'a S, principal: &str) -> Self {
        CountingSink { body: Some(body), storage, key: bandwidth_key(principal), uncounted: 0 }
    }

    /// Sends `data` and counts it.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        let body = self.body.as_mut().ok_or_else(|| ApiError::internal("body already finished"))?;
        body.write_all(data).map_err(|_| ApiError::internal("client went away"))?;
        self.uncounted += data.len() as u64;
        if self.uncounted >= COUNT_EVERY_BYTES {
            self.count_now();
        }
        Ok(())
    }

    /// Adds the bytes sent since the last call to the counter. A failed increment is logged,
    /// not fatal: the download itself is fine.
    pub fn count_now(&mut self) {
        if self.uncounted == 0 {
            return;
        }
        let delta = i64::try_from(self.uncounted).unwrap_or(i64::MAX);
        match self.storage.increment(&self.key, delta) {
            Ok(_) => self.uncounted = 0,
            Err(e) => eprintln!("could not count {} bytes sent: {e}", self.uncounted),
        }
    }

    /// Counts the rest and ends the body.
    pub fn finish(mut self) -> Result<(), ApiError> {
        self.count_now();
        match self.body.take() {
            Some(body) => body.finish().map_err(|_| ApiError::internal("client went away at the end")),
            None => Ok(()),
        }
    }
}

/// For writers built on `std::io` (the deflate archive): errors carry the `ApiError` message.
impl<S: Storage + ?Sized> std::io::Write for CountingSink<'_, S> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        CountingSink::write(self, data).map_err(|e| std::io::Error::other(e.message))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<S: Storage + ?Sized> Drop for CountingSink<'_, S> {
    /// A body that broke off still counts what was sent.
    fn drop(&mut self) {
        self.count_now();
    }
}

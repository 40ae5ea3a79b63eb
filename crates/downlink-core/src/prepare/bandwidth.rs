//! Per-principal bandwidth counters and the quota check.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::MAX_KEY_BYTES;
use crate::error::{ApiError, ErrorCode};

use super::*;

/// Key of a principal's bytes-sent counter: `bw:<principal>`; names that are not plain
/// printable ASCII or would make the key too long use `bw#<sha256 hex>` instead.
pub fn bandwidth_key(principal: &str) -> String {
    let plain = !principal.is_empty()
        && BANDWIDTH_KEY_PREFIX.len() + principal.len() <= MAX_KEY_BYTES
        && principal.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        format!("{BANDWIDTH_KEY_PREFIX}{principal}")
    } else {
        format!("{BANDWIDTH_HASHED_PREFIX}{}", hex::encode(Sha256::digest(principal.as_bytes())))
    }
}

/// Whether `about_to_send` more bytes fit a quota with `used` bytes already sent: `Ok` without
/// a quota or when `used + about_to_send <= quota`, else `429 QUOTA_EXCEEDED`. Checked for the
/// whole response (or range) before the first byte, so a download is never cut off midway.
pub fn check_quota(used: u64, about_to_send: u64, quota: Option<u64>) -> Result<(), ApiError> {
    let Some(quota) = quota else {
        return Ok(());
    };
    if used.checked_add(about_to_send).is_some_and(|total| total <= quota) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("bandwidth quota exceeded: {used} of {quota} bytes used, this download needs {about_to_send} more"),
    ))
}

/// A principal's bandwidth usage, the body of the usage endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthUsage {
    /// Principal name.
    pub principal: String,
    /// Bytes sent so far.
    pub bytes_sent: u64,
    /// The quota in bytes, `null` when unlimited.
    pub quota_bytes: Option<u64>,
    /// Bytes left under the quota, `null` when unlimited.
    pub remaining_bytes: Option<u64>,
}

impl BandwidthUsage {
    /// Usage for `principal` with `used` bytes sent under `quota`.
    pub fn new(principal: &str, used: u64, quota: Option<u64>) -> BandwidthUsage {
        BandwidthUsage {
            principal: principal.to_owned(),
            bytes_sent: used,
            quota_bytes: quota,
            remaining_bytes: quota.map(|quota| quota.saturating_sub(used)),
        }
    }

    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

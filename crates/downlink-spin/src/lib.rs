//! Spin I/O for Downlink's components: the thin layer between `downlink-core`'s pure logic and
//! the host. Components use only this and the core; nothing here makes decisions.
//!
//! - [`kv`]: the core's [`Storage`](downlink_core::storage::Storage) trait over `wasi:keyvalue`.
//! - [`http`]: request heads, streamed request/response bodies, JSON and error responses.
//! - [`auth`]: bearer-token authentication against the `api_tokens` variable.
//! - [`bandwidth`]: per-principal bytes-sent counters and the quota.
//! - [`fetch`]: outbound requests with deadlines and cancellation that hold against slow servers.
//! - [`s3`]: the core's object store over outbound HTTP (S3-compatible buckets).

#![warn(missing_docs)]

use downlink_core::delivery::ReadCheck;

pub mod auth;
pub mod bandwidth;
pub mod continuation;
pub mod fetch;
pub mod http;
pub mod kv;
pub mod s3;

/// Blocks this instance for `duration` (a WASI timer; other instances keep running).
pub fn pause(duration: std::time::Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wasi::clocks::monotonic_clock::subscribe_duration(nanos).block();
}

/// Seconds since the Unix epoch (wall clock).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// 128 bits from the host's CSPRNG (`wasi:random`): the one source of every random id.
pub fn random_bytes() -> [u8; 16] {
    let bytes = wasi::random::random::get_random_bytes(16);
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes[..16]);
    out
}

/// 64 bits from the host's CSPRNG (`wasi:random`).
pub fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// A fresh random id: a UUID v4 (122 of [`random_bytes`]' bits) in its hyphenated spelling.
pub fn random_id() -> String {
    uuid::Builder::from_random_bytes(random_bytes()).into_uuid().to_string()
}

/// A fresh blob id for a write (a random id always is a valid one).
pub fn random_blob_id() -> downlink_core::blob::BlobId {
    downlink_core::blob::BlobId::new(random_id()).expect("a UUID is a valid blob id")
}

/// A Spin variable's value, `None` when it is not granted or not set.
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).ok()
}

/// This component's settings (its Spin variables), the one way components read them.
pub fn settings() -> downlink_core::config::Settings<fn(&str) -> Option<String>> {
    downlink_core::config::Settings::new(variable)
}

/// Spin variable: `true` checks every whole file (and archive entry) read against the CRC-32
/// recorded when it was written; default `false` (see [`ReadCheck`]).
pub const VERIFY_READS_VARIABLE: &str = "verify_reads";

/// How reads check stored content, from `verify_reads`; a value that is not a boolean is a
/// `500` naming the variable.
pub fn read_check() -> Result<ReadCheck, downlink_core::ApiError> {
    Ok(ReadCheck::from_setting(settings().flag(VERIFY_READS_VARIABLE)?))
}

/// The download settings from this component's variables.
pub fn download_settings() -> Result<downlink_core::download::settings::DownloadSettings, downlink_core::ApiError> {
    downlink_core::download::settings::DownloadSettings::load(variable)
}

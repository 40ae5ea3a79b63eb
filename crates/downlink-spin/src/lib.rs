//! Spin I/O for Downlink's components: the thin layer between `downlink-core`'s pure logic and
//! the host. Components use only this and the core; nothing here makes decisions.
//!
//! - [`kv`]: the core's [`Storage`](downlink_core::storage::Storage) trait over `wasi:keyvalue`.
//! - [`http`]: request heads, streamed request/response bodies, JSON and error responses.
//! - [`auth`]: bearer-token authentication against the `api_tokens` variable.
//! - [`bandwidth`]: per-principal bytes-sent counters and the quota.
//! - [`fetch`]: outbound GET with deadlines and cancellation that hold against slow servers.

#![warn(missing_docs)]

pub mod auth;
pub mod bandwidth;
pub mod fetch;
pub mod http;
pub mod kv;

/// Seconds since the Unix epoch (wall clock).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh random id (UUID v4: 122 random bits from the host's CSPRNG).
pub fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Spin variable's value, `None` when it is not granted or not set.
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).ok()
}

/// The download settings from this component's variables.
pub fn download_settings() -> Result<downlink_core::download::settings::DownloadSettings, downlink_core::ApiError> {
    downlink_core::download::settings::DownloadSettings::load(variable)
}

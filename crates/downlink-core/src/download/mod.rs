//! Remote URL downloads: URL policy, records, progress, history (sans-IO).
//!
//! The download worker, the active-downloads and the history components share this logic;
//! they supply the clock (`now`), ids, and a [`Storage`](crate::storage::Storage) where state
//! is needed, and do the network I/O themselves.
//!
//! - [`url_policy`]: strict URL parsing and normalisation, the SSRF/domain policy, redirects.
//! - [`params`]: the start request's parameters; file-name sanitising and collision names.
//! - [`record`]: the download record, its state machine and its wire views.
//! - [`progress`]: progress-write throttling, heartbeats, the transfer deadline.
//! - [`registry`]: records, concurrency slots, target reservations and history in the store.
//! - [`remote_status`]: remote statuses and outbound-HTTP failures mapped to error codes.
//! - [`retry`]: which faults are retried, how long to wait, resuming with `Range`/`If-Range`.
//! - [`slices`]: carrying a transfer across invocations: checkpoints, hand-off, recovery.
//! - [`settings`]: the operator settings from Spin variables.

pub mod params;
pub mod progress;
pub mod record;
pub mod registry;
pub mod remote_status;
pub mod retry;
pub mod settings;
pub mod slices;
pub mod url_policy;

pub use params::{parse_start_request, RejectedStart, StartRequest};
pub use record::{DownloadRecord, DownloadStatus};
pub use url_policy::{check_url, CheckedUrl, DownloadPolicy};

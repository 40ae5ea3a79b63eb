//! Multi-file download plans: the two-step `prepare` → `multi` flow of `multi-download.md`.
//!
//! 1. `POST /api/download/prepare` sends a file list. [`parse_prepare_request`] reads JSON
//!    `{"Filelist": [...]}` or a form body `Filelist[]=...&Filelist[]=...` (HTTPie sends the
//!    former by default and the latter with `--form`), caps its size and count before looking
//!    at any path, and validates every path. The caller resolves each path in storage (a
//!    directory means its files, recursively), feeding the files to a [`PlanBuilder`], which
//!    collapses duplicates and enforces [`PlanLimits`]; missing paths are reported with
//!    [`missing_paths_error`]. The finished [`PreparedPlan`] is stored under a random id
//!    ([`new_plan_id`], [`plan_key`]) bound to the caller's principal, with an expiry.
//! 2. `POST|GET /api/download/multi?id=...` checks the id's shape ([`validate_plan_id`], `404`
//!    before any lookup), loads the plan, checks owner (`403`) and expiry (`410`), checks each
//!    file is unchanged ([`PlanEntry::check_current`], `409`), then streams one file or a ZIP
//!    laid out by [`PreparedPlan::zip_layout`] ([`crate::delivery::Delivery::plan`]).
//!
//! Plans are stored as a small head ([`PlanHead`], at [`plan_key`]) plus entry parts of at most
//! [`MAX_VALUE_BYTES`](crate::blob::MAX_VALUE_BYTES) each ([`plan_part_key`]): 10,000 entries with long paths are several MiB,
//! more than one key-value value may hold, and the head alone answers owner and expiry checks.
//!
//! Bytes served count towards a per-principal counter ([`bandwidth_key`]) with an optional
//! quota ([`check_quota`]).
//!
//! One submodule per concern: `body` (prepare bodies), `plan` (plans, limits, archive layout
//! and validators), `store` (ids, keys, [`PlanStore`]), `bandwidth` (counters, quota).

mod bandwidth;
mod body;
mod plan;
mod store;

pub use bandwidth::*;
pub use body::*;
pub use plan::*;
pub use store::*;

/// Largest prepare body accepted (`413 PAYLOAD_TOO_LARGE` above). 10,000 paths of typical
/// length fit with room to spare.
pub const MAX_PREPARE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Most paths one prepare request may list (`400 INVALID_REQUEST` above). Checked while
/// parsing, so a 100,000-entry body is refused after reading 10,001 entries and before any
/// path is validated or looked up.
pub const MAX_PREPARE_ENTRIES: usize = 10_000;

/// Default cap on files in one plan after directories are expanded. Above 65,535 so the
/// ZIP64-by-count path is reachable; below the point where a plan record gets unwieldy.
pub const MAX_PLAN_ENTRIES: usize = 100_000;

/// Default cap on the summed size of a plan's files (64 GiB); callers usually configure it.
pub const DEFAULT_MAX_PLAN_TOTAL_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Default lifetime of a prepare id: five minutes, per the spec.
pub const DEFAULT_PLAN_TTL_SECS: u64 = 300;

/// Archive name when the files share no directory (the reference's `ftpgrid_download.zip`).
pub const FALLBACK_ARCHIVE_NAME: &str = "downlink_download.zip";

/// Prefix of a plan's head record key.
pub const PLAN_KEY_PREFIX: &str = "prep:";

/// Prefix of per-principal bandwidth counter keys.
pub const BANDWIDTH_KEY_PREFIX: &str = "bw:";

const BANDWIDTH_HASHED_PREFIX: &str = "bw#";

/// Bumped whenever the archive bytes for the same entries would change (header layout, extra
/// fields), so an old `ETag` can never validate a resume against differently laid-out bytes.
const ARCHIVE_FORMAT_TAG: &str = "downlink-zip-v1";

/// How many paths an error message names before saying "and N more".
const MAX_PATHS_IN_MESSAGE: usize = 5;

#[cfg(test)]
mod tests;

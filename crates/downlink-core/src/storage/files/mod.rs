//! File-system operations over any [`Storage`]: `write` (the writer and the protocol below),
//! `dirs` (records, listings, walks, deletes), `gc` (garbage collection). Reading file bytes is
//! [`crate::delivery`].
//!
//! # Write protocol
//!
//! 1. [`FileWriter::begin`]: check the path can hold a file, create the blob's
//!    [`PendingMarker`] (CAS from absent, so blob ids cannot collide).
//! 2. [`FileWriter::write`]: store completed chunks under the fresh blob id, in batches of
//!    [`CHUNKS_PER_BATCH`] (one `set_many` each).
//! 3. [`FileWriter::commit`]: store the last chunk, confirm the marker is still ours, link the
//!    parent directories (top-down, so a crash leaves at worst empty directories), then
//!    compare-and-swap the file record to the new blob — the moment the file becomes visible,
//!    whole — add the file to its parent's index, delete the marker and the old blob.
//!
//! A crash before the swap leaves only unreferenced chunks, which [`collect_garbage`] removes
//! once the marker is stale. A crash after it leaves a complete file that may be missing from
//! its directory listing; [`collect_garbage`] re-links it.
//!
//! Known races, accepted because every outcome is a consistent state that GC tidies up:
//! deleting a file concurrently with overwriting it may delete the newer version (deletion is
//! not a CAS, which `wasi:keyvalue` lacks) and a reader streaming a file that is overwritten
//! fails with `STORAGE_ERROR` when the old chunks disappear.

use super::{cas_update, CasOutcome, CasStep, Storage};

mod dirs;
mod gc;
mod index;
mod write;

pub use dirs::*;
pub use gc::*;
pub(crate) use index::{insert_entry, try_insert_entry};
pub use write::*;

/// A writer refreshes its pending marker at most this often (see [`FileWriter::touch`]).
pub const TOUCH_INTERVAL_SECS: u64 = 30;

/// Default for [`WriteOptions::chunks_per_batch`]. Each key-value write has a fixed cost
/// besides its bytes (a round trip, and in SQLite a transaction that rewrites index pages):
/// batches of 4 MiB amortise it, for 4 MiB more memory per writer.
pub const CHUNKS_PER_BATCH: usize = 4;

/// A sensible [`collect_garbage`] grace period: far longer than [`TOUCH_INTERVAL_SECS`] plus
/// any pause between body reads.
pub const DEFAULT_GC_GRACE_SECS: u64 = 3600;

#[cfg(test)]
mod tests;

//! Plan ids, keys and the plan store (store, load for a principal, sweep expired).

use crate::error::{ApiError, ErrorCode};
use crate::storage::Storage;

use super::*;

/// A prepare id from 128 caller-supplied random bits: 32 lowercase hex digits.
pub fn new_plan_id(random: [u8; 16]) -> String {
    hex::encode(random)
}

/// The canonical form (32 lowercase hex digits) of a client-supplied prepare id, or
/// `404 NOT_FOUND` — the same answer as for an unknown id — for anything that is not 32 hex
/// digits or a hyphenated UUID, before any storage lookup.
pub fn validate_plan_id(raw: &str) -> Result<String, ApiError> {
    let not_found = || ApiError::not_found("no such prepared download");
    let bytes = raw.as_bytes();
    let hex_digits: String = match bytes.len() {
        32 => raw.to_owned(),
        36 => {
            // 8-4-4-4-12 with hyphens exactly at the UUID positions.
            let hyphens_ok = [8, 13, 18, 23].iter().all(|&at| bytes[at] == b'-');
            if !hyphens_ok {
                return Err(not_found());
            }
            raw.chars().filter(|c| *c != '-').collect()
        }
        _ => return Err(not_found()),
    };
    if hex_digits.len() != 32 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    Ok(hex_digits.to_ascii_lowercase())
}

/// Key of a plan's head record: `prep:<id>` (`id` canonical).
pub fn plan_key(id: &str) -> String {
    format!("{PLAN_KEY_PREFIX}{id}")
}

/// Key of a plan's entry part `index`: `prep:<id>:<index>`.
pub fn plan_part_key(id: &str, index: u32) -> String {
    format!("{PLAN_KEY_PREFIX}{id}:{index}")
}

/// Prepared plans in a key-value store: the one place that knows their keys and in which order
/// they are written (entry parts first, the head last, so a reader that finds the head finds a
/// complete plan) and deleted (the head first, so nobody finds a head whose parts are gone).
///
/// - [`PlanStore::store`]: a new plan from [`PlanBuilder::finish`].
/// - [`PlanStore::load`]: the plan behind a client's id, for that principal: `404` unknown,
///   `403` another principal's, `410` expired (its records are deleted then).
/// - [`PlanStore::sweep_expired`]: maintenance; deletes every expired plan.
pub struct PlanStore<'s, S: Storage + ?Sized> {
    storage: &'s S,
}

impl<'s, S: Storage + ?Sized> PlanStore<'s, S> {
    /// Plans in `storage`.
    pub fn new(storage: &'s S) -> Self {
        PlanStore { storage }
    }

    /// Stores `plan`: its parts, then its head.
    pub fn store(&self, plan: &PreparedPlan) -> Result<(), ApiError> {
        for (key, value) in plan.to_stored() {
            self.storage.set(&key, &value)?;
        }
        Ok(())
    }

    /// The plan `id` (canonical, see [`validate_plan_id`]) for `principal` at `now`.
    pub fn load(&self, id: &str, principal: &str, now: u64) -> Result<PreparedPlan, ApiError> {
        let not_found = || ApiError::not_found("no such prepared download");
        let head_bytes = self.storage.get(&plan_key(id))?.ok_or_else(not_found)?;
        let head = PlanHead::from_json_bytes(&head_bytes)
            .map_err(|_| ApiError::storage("prepared download record is damaged: unreadable head"))?;
        // Owner first (`403`), so another principal learns nothing about expiry.
        head.check_owner(principal)?;
        if head.is_expired(now) {
            self.delete(&head)?;
            return Err(ApiError::new(ErrorCode::Gone, "this prepared download has expired; prepare it again"));
        }
        let mut parts = Vec::with_capacity(head.parts as usize);
        for key in head.part_keys() {
            // A part vanishing under a live head means the plan was just deleted (expiry seen by
            // a concurrent request): the same answer as for an unknown id.
            parts.push(self.storage.get(&key)?.ok_or_else(not_found)?);
        }
        PreparedPlan::from_stored(&head, &parts)
    }

    /// Deletes every expired plan and returns how many. The key-value store has no TTL, so
    /// this is what reclaims plans nobody asked for again; it lists every key, so only
    /// maintenance calls it. Parts without a head are left alone: they may belong to a prepare
    /// still being written.
    pub fn sweep_expired(&self, now: u64) -> Result<u64, ApiError> {
        let mut swept = 0;
        for key in self.storage.list_keys()? {
            let Some(id) = key.strip_prefix(PLAN_KEY_PREFIX).filter(|id| !id.contains(':')) else { continue };
            let Some(bytes) = self.storage.get(&key)? else { continue };
            let Ok(head) = PlanHead::from_json_bytes(&bytes) else { continue };
            if head.id != id || !head.is_expired(now) {
                continue;
            }
            self.delete(&head)?;
            swept += 1;
        }
        Ok(swept)
    }

    /// Head first, then the parts.
    fn delete(&self, head: &PlanHead) -> Result<(), ApiError> {
        self.storage.delete(&plan_key(&head.id))?;
        for part in head.part_keys() {
            self.storage.delete(&part)?;
        }
        Ok(())
    }
}

//! One way to turn the core's records into stored or sent bytes.

use serde::Serialize;

/// `value` as JSON bytes.
///
/// Every type the core stores or sends is plain data (strings, numbers, options, lists and
/// string-keyed maps), for which `serde_json` cannot fail; a failure would be a bug in a
/// `Serialize` impl, and storing empty bytes instead would corrupt a record silently, so it
/// panics (the request fails with a trap, nothing is written).
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a {} did not serialise: {e}", std::any::type_name::<T>()),
    }
}

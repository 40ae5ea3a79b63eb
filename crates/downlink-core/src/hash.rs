//! Content hashes whose state can be stored and picked up by another invocation.
//!
//! A download carried across invocations must hash the whole file without reading back what
//! earlier invocations stored. CRC-32 resumes through `crc32fast` itself. The `sha2` crate's
//! `Sha256` cannot export or import its state, so [`ResumableSha256`] keeps the state words
//! itself and drives `sha2::compress256` (the crate's own block function) on whole blocks;
//! only the FIPS 180-4 padding at the end is written here.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const INITIAL_STATE: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const BLOCK: usize = 64;

/// A SHA-256 computation that can be serialized mid-stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, whole blocks and `pending` together.
    len: u64,
    /// Bytes of the incomplete last block (fewer than 64).
    #[serde(with = "hex_bytes")]
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 { state: INITIAL_STATE, len: 0, pending: Vec::new() }
    }
}

impl ResumableSha256 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.compress(&block);
        }
        let whole = data.len() - data.len() % BLOCK;
        self.compress(&data[..whole]);
        self.pending.extend_from_slice(&data[whole..]);
    }

    fn compress(&mut self, blocks: &[u8]) {
        for block in blocks.chunks_exact(BLOCK) {
            sha2::compress256(&mut self.state, std::slice::from_ref(GenericArray::from_slice(block)));
        }
    }

    /// The digest as lower-case hex.
    pub fn finalize_hex(mut self) -> String {
        let bit_len = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&bit_len.to_be_bytes());
        self.compress(&tail);
        self.state.iter().map(|word| format!("{word:08x}")).collect()
    }
}

/// A CRC-32 (IEEE) computation that can be serialized mid-stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableCrc32 {
    /// The CRC of the bytes so far.
    pub crc: u32,
    /// How many bytes that is.
    pub len: u64,
}

impl ResumableCrc32 {
    /// Hashes more bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut hasher = crc32fast::Hasher::new_with_initial_len(self.crc, self.len);
        hasher.update(data);
        self.crc = hasher.finalize();
        self.len += data.len() as u64;
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() >= super::BLOCK {
            return Err(serde::de::Error::custom("a pending SHA-256 block is shorter than 64 bytes"));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8).collect()
    }

    #[test]
    fn matches_sha2_for_every_split_and_survives_a_round_trip_through_json() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 70_000] {
            let data = bytes(len);
            let expected = hex::encode(Sha256::digest(&data));
            let mut whole = ResumableSha256::new();
            whole.update(&data);
            assert_eq!(whole.finalize_hex(), expected, "len {len}");
            for split in [0, 1, 63, 64, 65, len / 2, len] {
                let split = split.min(len);
                let mut first = ResumableSha256::new();
                first.update(&data[..split]);
                let stored = serde_json::to_string(&first).unwrap();
                let mut resumed: ResumableSha256 = serde_json::from_str(&stored).unwrap();
                for piece in data[split..].chunks(17) {
                    resumed.update(piece);
                }
                assert_eq!(resumed.finalize_hex(), expected, "len {len} split {split}");
            }
        }
        assert!(serde_json::from_str::<ResumableSha256>(&format!(
            r#"{{"state":[0,0,0,0,0,0,0,0],"len":64,"pending":"{}"}}"#,
            "00".repeat(64)
        ))
        .is_err());
    }

    #[test]
    fn crc32_resumes() {
        let data = bytes(10_000);
        let mut crc = ResumableCrc32::default();
        crc.update(&data[..3333]);
        let mut resumed: ResumableCrc32 = serde_json::from_str(&serde_json::to_string(&crc).unwrap()).unwrap();
        resumed.update(&data[3333..]);
        assert_eq!((resumed.crc, resumed.len), (crc32fast::hash(&data), 10_000));
        assert_eq!(ResumableCrc32::default().crc, crc32fast::hash(b""));
    }
}

//! ZIP archive layout computed up front (STORE, UTF-8 names, ZIP64 when needed), so the exact
//! length is known before the first byte and any byte range can be produced on its own.
//!
//! A [`ZipLayout`] is built from each entry's name, size, CRC-32 and modification time — all
//! known from stored metadata before any content is read. From that alone it knows every
//! header's offset and the archive's exact [`ZipLayout::total_len`], so a response can carry
//! `Content-Length`, and [`ZipLayout::segments`] turns any byte range into a short sequence of
//! [`Segment`]s: generated metadata bytes, and slices of entry content the caller copies from
//! storage. That is what makes `Range`/`If-Range` resume work for archives.
//!
//! Format choices (APPNOTE 6.3.x):
//! - every entry is STORE (method 0): the content is a pure copy, CRCs are precomputed;
//! - general-purpose flag bit 11 (UTF-8 names) is set; bit 3 (data descriptor) is never set,
//!   because CRC and sizes are written in the local header up front;
//! - ZIP64 extra fields only on entries whose size or local-header offset reaches
//!   `0xFFFFFFFF`, and the ZIP64 end of central directory record + locator only when the entry
//!   count reaches `0xFFFF` or the central directory's offset or size reaches `0xFFFFFFFF`;
//! - DOS date/time from unix seconds (UTC, clamped to 1980-01-01..2107-12-31), plus the
//!   extended-timestamp extra field (`0x5455`) carrying the exact mtime when it fits the
//!   field's signed 32 bits (until 2038); later times rely on the DOS field alone, because a
//!   wrapped value would be read back as a wrong date;
//! - "version made by" says Unix, and external attributes carry mode `0644`, so extractors
//!   create ordinary readable files.
//!
//! Why hand-written rather than the `zip` crate: `zip::ZipWriter` writes an archive into a
//! `Write + Seek` sink from start to end. It cannot report the final length before writing,
//! and it cannot produce an arbitrary byte range without first producing every byte before
//! it — so neither `Content-Length` nor resuming a 10 GiB archive at byte 9 GiB would be
//! possible without generating (and reading from storage) the whole prefix. The layout here
//! is small, fully determined by the entry list, and verified in the tests by reading
//! archives back with the `zip` crate, Info-ZIP `unzip -t` and Python's `zipfile`.
//!
//! Entry names are validated again here (relative, `/`-separated, no empty, `.` or `..`
//! segments, no backslash or control characters, unique, no name that is also a directory of
//! another): a zip-slip defence in depth, even though names come from validated storage paths.

use std::collections::HashSet;

use crate::error::{ApiError, ErrorCode};
use crate::http::ByteRange;

/// Longest entry name in bytes: the header field is 16 bits.
pub const MAX_NAME_BYTES: usize = 0xFFFF;

/// Content type of an archive response.
pub const ZIP_CONTENT_TYPE: &str = "application/zip";

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

const LOCAL_HEADER_LEN: u64 = 30;
const CENTRAL_HEADER_LEN: u64 = 46;
const EOCD_LEN: u64 = 22;
const ZIP64_EOCD_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;

/// A 32-bit size/offset field holding this (or more) must move to a ZIP64 extra field;
/// `0xFFFFFFFF` itself is the "look in ZIP64" sentinel, so it cannot be a real value.
const U32_SENTINEL: u64 = 0xFFFF_FFFF;
/// Same for 16-bit entry counts.
const U16_SENTINEL: u64 = 0xFFFF;

const FLAG_UTF8: u16 = 1 << 11;
const METHOD_STORE: u16 = 0;
/// 1.0: stored entries need nothing newer.
const VERSION_NEEDED_STORE: u16 = 10;
/// 4.5: ZIP64.
const VERSION_NEEDED_ZIP64: u16 = 45;
/// Upper byte 3 = Unix (so external attributes are a mode), lower byte 63 = APPNOTE 6.3,
/// the version that defined the UTF-8 flag.
const VERSION_MADE_BY: u16 = (3 << 8) | 63;
/// Regular file, `rw-r--r--`.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;

const EXTRA_ZIP64: u16 = 0x0001;
const EXTRA_EXT_TIMESTAMP: u16 = 0x5455;
/// The extended timestamp is a signed 32-bit unix time.
const EXT_TIMESTAMP_MAX: u64 = i32::MAX as u64;

/// Consecutive metadata (e.g. many central-directory records) is merged into one
/// [`Segment::Bytes`] up to about this size, so a caller writes a few large buffers rather than
/// thousands of tiny ones, while memory stays bounded.
pub const SEGMENT_COALESCE_BYTES: usize = 64 * 1024;

/// Unix seconds of 1980-01-01T00:00:00Z, the earliest DOS timestamp.
const DOS_EPOCH_UNIX: u64 = 315_532_800;

/// One file to put into the archive. Everything the layout needs is known before reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    /// Name inside the archive: relative, `/`-separated, UTF-8.
    pub name: String,
    /// Content length in bytes (stored uncompressed, so also the compressed size).
    pub size: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
    /// Last modification, unix seconds.
    pub modified: u64,
}

impl ZipEntry {
    fn size_needs_zip64(&self) -> bool {
        self.size >= U32_SENTINEL
    }

    fn has_ext_timestamp(&self) -> bool {
        self.modified <= EXT_TIMESTAMP_MAX
    }

    fn local_extra_len(&self) -> u64 {
        // The local ZIP64 field must hold both sizes when present (APPNOTE 4.5.3).
        let zip64 = if self.size_needs_zip64() { 4 + 16 } else { 0 };
        let timestamp = if self.has_ext_timestamp() { 4 + 5 } else { 0 };
        zip64 + timestamp
    }

    fn local_header_len(&self) -> u64 {
        LOCAL_HEADER_LEN + self.name.len() as u64 + self.local_extra_len()
    }
}

/// One piece of the archive (or of a requested range of it), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Generated metadata (headers, central directory, end records), already cut to the range.
    Bytes(Vec<u8>),
    /// Copy `len` bytes of entry `entry`'s content starting at `offset` within that content.
    Data {
        /// Index into the entries given to [`ZipLayout::new`].
        entry: usize,
        /// Offset within the entry's content.
        offset: u64,
        /// Number of bytes; never 0.
        len: u64,
    },
}

impl Segment {
    /// Number of archive bytes this segment stands for.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(bytes) => bytes.len() as u64,
            Segment::Data { len, .. } => *len,
        }
    }

    /// Whether the segment stands for no bytes (never produced by [`ZipLayout::segments`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Placed {
    entry: ZipEntry,
    /// Absolute offset of the local header.
    local_offset: u64,
    /// Absolute offset of the central-directory record.
    central_offset: u64,
}

impl Placed {
    fn offset_needs_zip64(&self) -> bool {
        self.local_offset >= U32_SENTINEL
    }

    fn needs_zip64(&self) -> bool {
        self.entry.size_needs_zip64() || self.offset_needs_zip64()
    }

    fn version_needed(&self) -> u16 {
        if self.needs_zip64() {
            VERSION_NEEDED_ZIP64
        } else {
            VERSION_NEEDED_STORE
        }
    }

    fn central_zip64_fields(&self) -> u64 {
        let sizes = if self.entry.size_needs_zip64() { 2 } else { 0 };
        let offset = if self.offset_needs_zip64() { 1 } else { 0 };
        sizes + offset
    }

    fn central_extra_len(&self) -> u64 {
        let fields = self.central_zip64_fields();
        let zip64 = if fields > 0 { 4 + 8 * fields } else { 0 };
        let timestamp = if self.entry.has_ext_timestamp() { 4 + 5 } else { 0 };
        zip64 + timestamp
    }

    fn central_len(&self) -> u64 {
        CENTRAL_HEADER_LEN + self.entry.name.len() as u64 + self.central_extra_len()
    }

    fn data_offset(&self) -> u64 {
        self.local_offset + self.entry.local_header_len()
    }
}

/// The complete layout of a STORE archive, computed from entry metadata alone.
///
/// Memory is proportional to the number of entries (their names), never to their content.
#[derive(Clone, Debug)]
pub struct ZipLayout {
    entries: Vec<Placed>,
    cd_offset: u64,
    cd_size: u64,
    zip64_end: bool,
    total_len: u64,
}

/// What part of the archive a part index stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    LocalHeader(usize),
    Data(usize),
    Central(usize),
    Tail,
}

impl ZipLayout {
    /// Validates the entries and computes every offset.
    ///
    /// Errors: `400 INVALID_PATH` for a name that is not a safe relative path, is duplicated, or
    /// is also a directory of another entry; `413 PAYLOAD_TOO_LARGE` if the archive would not
    /// fit in 64 bits (only reachable with nonsensical sizes).
    pub fn new(entries: Vec<ZipEntry>) -> Result<ZipLayout, ApiError> {
        validate_names(&entries)?;
        let too_large = || ApiError::new(ErrorCode::PayloadTooLarge, "the archive would be larger than 2^64 bytes");
        let mut placed = Vec::with_capacity(entries.len());
        let mut offset: u64 = 0;
        for entry in entries {
            let local_offset = offset;
            offset = offset
                .checked_add(entry.local_header_len())
                .and_then(|o| o.checked_add(entry.size))
                .ok_or_else(too_large)?;
            placed.push(Placed { entry, local_offset, central_offset: 0 });
        }
        let cd_offset = offset;
        for item in &mut placed {
            item.central_offset = offset;
            offset = offset.checked_add(item.central_len()).ok_or_else(too_large)?;
        }
        let cd_size = offset - cd_offset;
        let zip64_end = placed.len() as u64 >= U16_SENTINEL
            || cd_offset >= U32_SENTINEL
            || cd_size >= U32_SENTINEL
            // Implied by the offsets above; kept so the rule reads like the spec.
            || placed.iter().any(Placed::needs_zip64);
        let tail = if zip64_end { ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN + EOCD_LEN } else { EOCD_LEN };
        let total_len = offset.checked_add(tail).ok_or_else(too_large)?;
        Ok(ZipLayout { entries: placed, cd_offset, cd_size, zip64_end, total_len })
    }

    /// Exact archive length in bytes.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether any ZIP64 structure (extra field or end records) is written.
    pub fn needs_zip64(&self) -> bool {
        self.zip64_end
    }

    /// The entry at `index`, as given to [`ZipLayout::new`].
    pub fn entry(&self, index: usize) -> Option<&ZipEntry> {
        self.entries.get(index).map(|placed| &placed.entry)
    }

    /// Absolute offset of entry `index`'s local header.
    #[cfg(test)]
    pub(crate) fn local_header_offset(&self, index: usize) -> Option<u64> {
        self.entries.get(index).map(|placed| placed.local_offset)
    }

    /// Absolute offset of entry `index`'s first content byte.
    pub fn data_offset(&self, index: usize) -> Option<u64> {
        self.entries.get(index).map(Placed::data_offset)
    }

    /// Absolute offset of the central directory.
    #[cfg(test)]
    pub(crate) fn central_directory_offset(&self) -> u64 {
        self.cd_offset
    }

    /// Length of the central directory in bytes.
    #[cfg(test)]
    pub(crate) fn central_directory_len(&self) -> u64 {
        self.cd_size
    }

    /// The archive's bytes in `range` (the whole archive for `None`) as segments, in order.
    ///
    /// Only metadata inside the range is generated, one record at a time, so a request for the
    /// last bytes of a 100,000-entry archive costs a few records, not the whole central
    /// directory. A range reaching past the end is cut at the end; one starting at or past the
    /// end yields nothing.
    pub fn segments(&self, range: Option<ByteRange>) -> Segments<'_> {
        let (start, end) = match range {
            Some(range) => (range.start, range.end.saturating_add(1).min(self.total_len)),
            None => (0, self.total_len),
        };
        let part = if start < end { self.part_at(start) } else { self.part_count() };
        Segments { layout: self, part, pos: start, end: end.max(start), pending: Vec::new(), parts_generated: 0 }
    }

    fn part_count(&self) -> usize {
        3 * self.entries.len() + 1
    }

    fn part(&self, index: usize) -> Part {
        let n = self.entries.len();
        if index < 2 * n {
            if index.is_multiple_of(2) {
                Part::LocalHeader(index / 2)
            } else {
                Part::Data(index / 2)
            }
        } else if index < 3 * n {
            Part::Central(index - 2 * n)
        } else {
            Part::Tail
        }
    }

    /// Absolute `[start, end)` of a part.
    fn part_range(&self, part: Part) -> (u64, u64) {
        match part {
            Part::LocalHeader(i) => {
                let placed = &self.entries[i];
                (placed.local_offset, placed.data_offset())
            }
            Part::Data(i) => {
                let start = self.entries[i].data_offset();
                (start, start + self.entries[i].entry.size)
            }
            Part::Central(i) => {
                let placed = &self.entries[i];
                (placed.central_offset, placed.central_offset + placed.central_len())
            }
            Part::Tail => (self.cd_offset + self.cd_size, self.total_len),
        }
    }

    /// Index of the part holding byte `offset` (`offset < total_len`), by binary search.
    fn part_at(&self, offset: u64) -> usize {
        let n = self.entries.len();
        if offset < self.cd_offset {
            // Local offsets strictly increase (every header is at least 30 bytes).
            let i = self.entries.partition_point(|p| p.local_offset <= offset) - 1;
            if offset < self.entries[i].data_offset() {
                2 * i
            } else {
                2 * i + 1
            }
        } else if offset < self.cd_offset + self.cd_size {
            let i = self.entries.partition_point(|p| p.central_offset <= offset) - 1;
            2 * n + i
        } else {
            3 * n
        }
    }

    fn part_bytes(&self, part: Part) -> Vec<u8> {
        match part {
            Part::LocalHeader(i) => self.local_header(i),
            Part::Central(i) => self.central_record(i),
            Part::Tail => self.tail(),
            Part::Data(_) => Vec::new(),
        }
    }

    fn local_header(&self, index: usize) -> Vec<u8> {
        let placed = &self.entries[index];
        let entry = &placed.entry;
        let (time, date) = dos_date_time(entry.modified);
        let size32 = clamp_u32(entry.size);
        let mut out = Vec::with_capacity(entry.local_header_len() as usize);
        put_u32(&mut out, LOCAL_HEADER_SIG);
        put_u16(&mut out, placed.version_needed());
        put_u16(&mut out, FLAG_UTF8);
        put_u16(&mut out, METHOD_STORE);
        put_u16(&mut out, time);
        put_u16(&mut out, date);
        put_u32(&mut out, entry.crc32);
        put_u32(&mut out, size32); // compressed
        put_u32(&mut out, size32); // uncompressed
        put_u16(&mut out, entry.name.len() as u16);
        put_u16(&mut out, entry.local_extra_len() as u16);
        out.extend_from_slice(entry.name.as_bytes());
        if entry.size_needs_zip64() {
            put_u16(&mut out, EXTRA_ZIP64);
            put_u16(&mut out, 16);
            put_u64(&mut out, entry.size); // uncompressed
            put_u64(&mut out, entry.size); // compressed
        }
        if entry.has_ext_timestamp() {
            put_ext_timestamp(&mut out, entry.modified);
        }
        debug_assert_eq!(out.len() as u64, entry.local_header_len());
        out
    }

    fn central_record(&self, index: usize) -> Vec<u8> {
        let placed = &self.entries[index];
        let entry = &placed.entry;
        let (time, date) = dos_date_time(entry.modified);
        let size32 = clamp_u32(entry.size);
        let mut out = Vec::with_capacity(placed.central_len() as usize);
        put_u32(&mut out, CENTRAL_HEADER_SIG);
        put_u16(&mut out, VERSION_MADE_BY);
        put_u16(&mut out, placed.version_needed());
        put_u16(&mut out, FLAG_UTF8);
        put_u16(&mut out, METHOD_STORE);
        put_u16(&mut out, time);
        put_u16(&mut out, date);
        put_u32(&mut out, entry.crc32);
        put_u32(&mut out, size32);
        put_u32(&mut out, size32);
        put_u16(&mut out, entry.name.len() as u16);
        put_u16(&mut out, placed.central_extra_len() as u16);
        put_u16(&mut out, 0); // comment length
        put_u16(&mut out, 0); // disk number start
        put_u16(&mut out, 0); // internal attributes
        put_u32(&mut out, EXTERNAL_ATTRS);
        put_u32(&mut out, clamp_u32(placed.local_offset));
        out.extend_from_slice(entry.name.as_bytes());
        let fields = placed.central_zip64_fields();
        if fields > 0 {
            // Only the fields whose 32-bit slot holds the sentinel, in APPNOTE order.
            put_u16(&mut out, EXTRA_ZIP64);
            put_u16(&mut out, (8 * fields) as u16);
            if entry.size_needs_zip64() {
                put_u64(&mut out, entry.size);
                put_u64(&mut out, entry.size);
            }
            if placed.offset_needs_zip64() {
                put_u64(&mut out, placed.local_offset);
            }
        }
        if entry.has_ext_timestamp() {
            put_ext_timestamp(&mut out, entry.modified);
        }
        debug_assert_eq!(out.len() as u64, placed.central_len());
        out
    }

    fn tail(&self) -> Vec<u8> {
        let count = self.entries.len() as u64;
        let mut out = Vec::with_capacity((self.total_len - self.cd_offset - self.cd_size) as usize);
        if self.zip64_end {
            let zip64_eocd_offset = self.cd_offset + self.cd_size;
            put_u32(&mut out, ZIP64_EOCD_SIG);
            put_u64(&mut out, ZIP64_EOCD_LEN - 12); // size of the rest of the record
            put_u16(&mut out, VERSION_MADE_BY);
            put_u16(&mut out, VERSION_NEEDED_ZIP64);
            put_u32(&mut out, 0); // this disk
            put_u32(&mut out, 0); // disk with the central directory
            put_u64(&mut out, count);
            put_u64(&mut out, count);
            put_u64(&mut out, self.cd_size);
            put_u64(&mut out, self.cd_offset);
            put_u32(&mut out, ZIP64_LOCATOR_SIG);
            put_u32(&mut out, 0); // disk with the ZIP64 end record
            put_u64(&mut out, zip64_eocd_offset);
            put_u32(&mut out, 1); // total disks
        }
        let count16 = count.min(U16_SENTINEL) as u16;
        put_u32(&mut out, EOCD_SIG);
        put_u16(&mut out, 0);
        put_u16(&mut out, 0);
        put_u16(&mut out, count16);
        put_u16(&mut out, count16);
        put_u32(&mut out, clamp_u32(self.cd_size));
        put_u32(&mut out, clamp_u32(self.cd_offset));
        put_u16(&mut out, 0); // comment length
        out
    }
}

/// Iterator over the [`Segment`]s of a range; see [`ZipLayout::segments`].
#[derive(Debug)]
pub struct Segments<'a> {
    layout: &'a ZipLayout,
    /// Index of the part holding `pos`.
    part: usize,
    /// Next absolute offset to produce.
    pos: u64,
    /// End of the range (exclusive).
    end: u64,
    /// Metadata generated but not yet handed out, merged up to [`SEGMENT_COALESCE_BYTES`].
    pending: Vec<u8>,
    /// Metadata records generated so far; lets tests prove ranges stay cheap.
    parts_generated: usize,
}

impl Segments<'_> {
    /// How many metadata records (headers, central records, the end block) have been generated
    /// so far. A range costs only the records it touches.
    #[cfg(test)]
    pub(crate) fn records_generated(&self) -> usize {
        self.parts_generated
    }
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        while self.pos < self.end {
            let part = self.layout.part(self.part);
            let (part_start, part_end) = self.layout.part_range(part);
            if part_end <= self.pos {
                // Already past it (or an empty entry's content).
                self.part += 1;
                continue;
            }
            let from = self.pos;
            let to = part_end.min(self.end);
            if let Part::Data(entry) = part {
                if !self.pending.is_empty() {
                    return Some(Segment::Bytes(std::mem::take(&mut self.pending)));
                }
                self.pos = to;
                self.part += 1;
                return Some(Segment::Data { entry, offset: from - part_start, len: to - from });
            }
            let bytes = self.layout.part_bytes(part);
            self.parts_generated += 1;
            self.pending.extend_from_slice(&bytes[(from - part_start) as usize..(to - part_start) as usize]);
            self.pos = to;
            self.part += 1;
            if self.pending.len() >= SEGMENT_COALESCE_BYTES {
                return Some(Segment::Bytes(std::mem::take(&mut self.pending)));
            }
        }
        if self.pending.is_empty() {
            None
        } else {
            Some(Segment::Bytes(std::mem::take(&mut self.pending)))
        }
    }
}

/// Why an entry name is unsafe, or `None` if it is fine.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("is longer than 65535 bytes");
    }
    if name.starts_with('/') {
        return Some("is absolute (starts with `/`)");
    }
    if name.contains('\\') {
        return Some("contains a backslash");
    }
    if name.chars().any(char::is_control) {
        return Some("contains a NUL or control character");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return Some("has an empty segment");
        }
        if segment == "." || segment == ".." {
            return Some("has a `.` or `..` segment");
        }
    }
    None
}

fn validate_names(entries: &[ZipEntry]) -> Result<(), ApiError> {
    let invalid = |name: &str, why: &str| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("archive entry name {:?} {why}", crate::text::for_message(name, crate::text::MESSAGE_NAME_BYTES)),
        )
    };
    let mut names: HashSet<&str> = HashSet::with_capacity(entries.len());
    for entry in entries {
        if let Some(why) = name_problem(&entry.name) {
            return Err(invalid(&entry.name, why));
        }
        if !names.insert(&entry.name) {
            return Err(invalid(&entry.name, "appears twice"));
        }
    }
    // A file `a` next to `a/b` cannot be extracted: `a` would have to be a file and a directory.
    for entry in entries {
        for (cut, _) in entry.name.match_indices('/') {
            let dir = &entry.name[..cut];
            if names.contains(dir) {
                return Err(invalid(dir, "is both a file and a directory of another entry"));
            }
        }
    }
    Ok(())
}

/// MS-DOS `(time, date)` for unix seconds, UTC, clamped to the representable
/// 1980-01-01 00:00:00 ..= 2107-12-31 23:59:58. Seconds are stored halved (2 s resolution).
pub fn dos_date_time(unix_secs: u64) -> (u16, u16) {
    const MIN: (u16, u16) = (0, 1 << 5 | 1); // 00:00:00, 1980-01-01
    const MAX: (u16, u16) = (23 << 11 | 59 << 5 | 29, 127 << 9 | 12 << 5 | 31); // 23:59:58, 2107-12-31
    if unix_secs < DOS_EPOCH_UNIX {
        return MIN;
    }
    // Far beyond 2107 anyway; keeps the arithmetic below comfortably in range.
    if unix_secs >= 1 << 40 {
        return MAX;
    }
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = crate::http::civil_from_days(unix_secs / 86_400);
    if year > 2107 {
        return MAX;
    }
    let hour = (secs_of_day / 3600) as u16;
    let minute = (secs_of_day % 3600 / 60) as u16;
    let second = (secs_of_day % 60) as u16;
    let time = (hour << 11) | (minute << 5) | (second / 2);
    let date = ((year - 1980) as u16) << 9 | (month as u16) << 5 | day as u16;
    (time, date)
}

fn clamp_u32(value: u64) -> u32 {
    value.min(U32_SENTINEL) as u32
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_ext_timestamp(out: &mut Vec<u8>, modified: u64) {
    put_u16(out, EXTRA_EXT_TIMESTAMP);
    put_u16(out, 5);
    out.push(1); // flags: modification time present
    put_u32(out, modified as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{BufWriter, Cursor, Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const MTIME: u64 = 1_709_210_096; // 2024-02-29T12:34:56Z

    fn entry(name: &str, content: &[u8]) -> ZipEntry {
        ZipEntry { name: name.to_owned(), size: content.len() as u64, crc32: crc32fast::hash(content), modified: MTIME }
    }

    fn layout_of(files: &[(&str, Vec<u8>)]) -> (ZipLayout, Vec<Vec<u8>>) {
        let entries = files.iter().map(|(name, content)| entry(name, content)).collect();
        let layout = ZipLayout::new(entries).expect("valid layout");
        (layout, files.iter().map(|(_, content)| content.clone()).collect())
    }

    /// Resolves segments against in-memory contents, checking segment invariants on the way.
    fn bytes_of(layout: &ZipLayout, contents: &[Vec<u8>], range: Option<ByteRange>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous_was_small_bytes = false;
        for segment in layout.segments(range) {
            assert!(!segment.is_empty(), "empty segment");
            match segment {
                Segment::Bytes(bytes) => {
                    // Consecutive metadata is merged unless the buffer was already full.
                    assert!(!previous_was_small_bytes, "unmerged metadata segments");
                    assert!(bytes.len() <= SEGMENT_COALESCE_BYTES + 70_000, "segment too big: {}", bytes.len());
                    previous_was_small_bytes = bytes.len() < SEGMENT_COALESCE_BYTES;
                    out.extend_from_slice(&bytes);
                }
                Segment::Data { entry, offset, len } => {
                    previous_was_small_bytes = false;
                    let content = &contents[entry];
                    assert!(offset + len <= content.len() as u64);
                    out.extend_from_slice(&content[offset as usize..(offset + len) as usize]);
                }
            }
        }
        out
    }

    fn range(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    // ---- external checkers ----

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("downlink-zip-{}-{tag}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether an external tool runs; in CI a missing tool fails the test instead of skipping.
    fn tool(program: &str, version_arg: &str) -> bool {
        let ok = Command::new(program).arg(version_arg).output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            assert!(std::env::var_os("CI").is_none(), "{program} is required in CI");
            eprintln!("note: {program} not available, skipping that check");
        }
        ok
    }

    fn unzip_test(path: &Path, expect_empty: bool) {
        if !tool("unzip", "-v") {
            return;
        }
        let output = Command::new("unzip").arg("-tq").arg(path).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if expect_empty {
            // Info-ZIP reports an empty archive as a warning (exit 1) but must not call it broken.
            assert!(text.contains("empty"), "unzip on empty archive: {text}");
        } else {
            assert!(output.status.success(), "unzip -t failed: {text}");
            assert!(text.contains("No errors detected"), "unzip -t: {text}");
        }
    }

    const PY_CHECK: &str = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    infos = [[i.filename, i.file_size, i.compress_size, i.CRC, i.flag_bits, i.compress_type, list(i.date_time)] for i in z.infolist()]
print(json.dumps({"bad": bad, "entries": infos}))
"#;

    /// Python's `zipfile`: `testzip()` reads every entry and checks its CRC.
    fn python_check(path: &Path, layout: &ZipLayout) {
        if !tool("python3", "--version") {
            return;
        }
        let output = Command::new("python3").arg("-c").arg(PY_CHECK).arg(path).output().unwrap();
        assert!(output.status.success(), "python zipfile: {}", String::from_utf8_lossy(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(report["bad"].is_null(), "testzip found a bad entry: {}", report["bad"]);
        let infos = report["entries"].as_array().unwrap();
        assert_eq!(infos.len(), layout.entry_count());
        for (index, info) in infos.iter().enumerate() {
            let want = layout.entry(index).unwrap();
            assert_eq!(info[0].as_str().unwrap(), want.name, "python name");
            assert_eq!(info[1].as_u64().unwrap(), want.size);
            assert_eq!(info[2].as_u64().unwrap(), want.size);
            assert_eq!(info[3].as_u64().unwrap(), u64::from(want.crc32));
            let flags = info[4].as_u64().unwrap();
            assert_eq!(flags & 0x800, 0x800, "UTF-8 flag");
            assert_eq!(flags & 0x8, 0, "no data descriptor");
            assert_eq!(info[5].as_u64().unwrap(), 0, "STORE");
        }
    }

    /// The `zip` crate: header consistency, names, sizes, CRCs, contents, times.
    fn zip_crate_check(bytes: &[u8], layout: &ZipLayout, contents: &[Vec<u8>]) {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip crate opens archive");
        assert_eq!(archive.len(), layout.entry_count());
        archive.validate_header_consistency().expect("consistent headers");
        for (index, content) in contents.iter().enumerate() {
            let want = layout.entry(index).unwrap().clone();
            let mut file = archive.by_index(index).unwrap();
            assert_eq!(file.name().unwrap(), want.name);
            assert_eq!(file.size(), want.size);
            assert_eq!(file.crc32(), want.crc32);
            assert_eq!(file.compression(), zip::CompressionMethod::Stored);
            assert_eq!(file.unix_mode(), Some(0o100_644));
            assert!(file.is_file());
            let mut read_back = Vec::new();
            file.read_to_end(&mut read_back).unwrap();
            assert!(read_back == *content, "content of {}", want.name);
        }
    }

    /// Every external check on a whole archive built from in-memory contents.
    fn check_archive(layout: &ZipLayout, contents: &[Vec<u8>]) -> Vec<u8> {
        let full = bytes_of(layout, contents, None);
        assert_eq!(full.len() as u64, layout.total_len());
        zip_crate_check(&full, layout, contents);
        let dir = TempDir::new("check");
        let path = dir.path("archive.zip");
        std::fs::write(&path, &full).unwrap();
        unzip_test(&path, layout.entry_count() == 0);
        python_check(&path, layout);
        full
    }

    // ---- archives ----

    #[test]
    fn empty_archive_is_just_the_end_record() {
        let (layout, contents) = layout_of(&[]);
        assert_eq!(layout.total_len(), 22);
        assert!(!layout.needs_zip64());
        let full = check_archive(&layout, &contents);
        assert_eq!(&full[..4], b"PK\x05\x06");
        assert!(full[4..].iter().all(|b| *b == 0));
    }

    #[test]
    fn one_empty_entry() {
        let (layout, contents) = layout_of(&[("empty.txt", Vec::new())]);
        let full = check_archive(&layout, &contents);
        // local header + name + timestamp, central record + name + timestamp, end record.
        assert_eq!(layout.total_len(), (30 + 9 + 9) + (46 + 9 + 9) + 22);
        assert_eq!(layout.data_offset(0), Some(48));
        assert!(layout.segments(None).all(|s| matches!(s, Segment::Bytes(_))));
        assert_eq!(&full[..4], b"PK\x03\x04");
    }

    #[test]
    fn two_entries_exact_header_bytes() {
        let (layout, contents) = layout_of(&[("a.txt", b"hello".to_vec()), ("b/c.bin", vec![0, 1, 2, 255])]);
        let full = check_archive(&layout, &contents);
        let local = &full[..30];
        assert_eq!(u16::from_le_bytes([local[4], local[5]]), 10, "version needed");
        assert_eq!(u16::from_le_bytes([local[6], local[7]]), 0x0800, "flags");
        assert_eq!(u16::from_le_bytes([local[8], local[9]]), 0, "STORE");
        assert_eq!(u32::from_le_bytes(local[14..18].try_into().unwrap()), crc32fast::hash(b"hello"));
        assert_eq!(u32::from_le_bytes(local[18..22].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(local[22..26].try_into().unwrap()), 5);
        assert_eq!(&full[30..35], b"a.txt");
        // Extended timestamp: tag, length 5, flags 1, mtime.
        assert_eq!(&full[35..40], &[0x55, 0x54, 5, 0, 1]);
        assert_eq!(u32::from_le_bytes(full[40..44].try_into().unwrap()), MTIME as u32);
        assert_eq!(&full[44..49], b"hello");
        assert_eq!(layout.local_header_offset(1), Some(49));
        assert_eq!(layout.central_directory_offset(), 49 + 30 + 7 + 9 + 4);
        // Segments: header, data, header, data, central directory + end (merged).
        let kinds: Vec<_> = layout.segments(None).map(|s| matches!(s, Segment::Bytes(_))).collect();
        assert_eq!(kinds, [true, false, true, false, true]);
    }

    #[test]
    fn thousand_small_entries_nested_and_unicode() {
        let mut files = Vec::new();
        for i in 0..1000 {
            let name = match i % 4 {
                0 => format!("top {i}.txt"),
                1 => format!("dir/sub dir/{i}.log"),
                2 => format!("Été 2024/🎉 фото {i}.jpg"),
                _ => format!("deep/a/b/c/d/e/f/{i}"),
            };
            let content: Vec<u8> = (0..(i * 7 % 300)).map(|b| (b * 31 + i) as u8).collect();
            files.push((name, content));
        }
        let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
        let (layout, contents) = layout_of(&refs);
        assert_eq!(layout.entry_count(), 1000);
        assert!(!layout.needs_zip64());
        let full = check_archive(&layout, &contents);

        // Random ranges, seeded, against the same slice of the full archive.
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let a = rng.below(full.len() as u64);
            let b = match rng.below(4) {
                0 => a,
                1 => (a + rng.below(64)).min(full.len() as u64 - 1),
                _ => rng.below(full.len() as u64),
            };
            let (start, end) = (a.min(b), a.max(b));
            assert_eq!(
                bytes_of(&layout, &contents, range(start, end)),
                &full[start as usize..=end as usize],
                "{start}-{end}"
            );
        }
    }

    #[test]
    fn utf8_and_space_names_read_back() {
        let (layout, contents) = layout_of(&[
            ("my report (final).pdf", b"%PDF".to_vec()),
            ("Ünïcödé/日本語 ファイル.txt", "こんにちは".as_bytes().to_vec()),
            ("emoji/🎉.bin", vec![7; 3]),
        ]);
        check_archive(&layout, &contents);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    // ---- ranges ----

    #[test]
    fn every_range_of_a_small_archive() {
        let (layout, contents) =
            layout_of(&[("a", b"0123456789".to_vec()), ("empty", Vec::new()), ("d/ü", b"xyz".to_vec())]);
        let full = bytes_of(&layout, &contents, None);
        let total = full.len() as u64;
        for start in 0..total {
            for end in start..total {
                let got = bytes_of(&layout, &contents, range(start, end));
                assert!(got == full[start as usize..=end as usize], "{start}-{end}");
            }
        }
    }

    #[test]
    fn ranges_at_every_boundary() {
        let (layout, contents) = layout_of(&[
            ("first.txt", vec![b'a'; 100]),
            ("zero", Vec::new()),
            ("second/file.txt", vec![b'b'; 1]),
            ("third", vec![b'c'; 70_000]),
        ]);
        let full = bytes_of(&layout, &contents, None);
        let total = layout.total_len();
        let mut boundaries = vec![
            0,
            layout.central_directory_offset(),
            layout.central_directory_offset() + layout.central_directory_len(),
            total - 1,
        ];
        for i in 0..layout.entry_count() {
            boundaries.push(layout.local_header_offset(i).unwrap());
            boundaries.push(layout.data_offset(i).unwrap());
            boundaries.push(layout.data_offset(i).unwrap() + layout.entry(i).unwrap().size);
        }
        for &b in &boundaries {
            for start in b.saturating_sub(2)..=b + 2 {
                for end in [start, start + 1, b + 1, b + 3, total - 1] {
                    if start >= total || end < start {
                        continue;
                    }
                    let end = end.min(total - 1);
                    assert_eq!(
                        bytes_of(&layout, &contents, range(start, end)),
                        &full[start as usize..=end as usize],
                        "{start}-{end}"
                    );
                }
            }
        }
        // Start, middle, end and across entry boundaries.
        let d3 = layout.data_offset(3).unwrap();
        for (start, end) in
            [(0, 9), (total / 2, total / 2 + 500), (total - 10, total - 1), (50, d3 + 10), (0, total - 1)]
        {
            assert_eq!(bytes_of(&layout, &contents, range(start, end)), &full[start as usize..=end as usize]);
        }
    }

    #[test]
    fn range_edges_are_cut_or_empty() {
        let (layout, contents) = layout_of(&[("a", b"abc".to_vec()), ("b", b"def".to_vec())]);
        let full = bytes_of(&layout, &contents, None);
        let total = layout.total_len();
        assert_eq!(bytes_of(&layout, &contents, range(total - 5, u64::MAX)), &full[full.len() - 5..]);
        assert_eq!(layout.segments(range(total, total + 10)).count(), 0);
        assert_eq!(layout.segments(range(u64::MAX, u64::MAX)).count(), 0);
        // Inverted ranges (fields are public) produce nothing rather than panicking.
        assert_eq!(layout.segments(range(10, 5)).count(), 0);
        // A range inside content is one data segment with the right offset.
        let d1 = layout.data_offset(1).unwrap();
        assert_eq!(
            layout.segments(range(d1 + 1, d1 + 2)).collect::<Vec<_>>(),
            [Segment::Data { entry: 1, offset: 1, len: 2 }]
        );
    }

    #[test]
    fn ranges_only_generate_the_records_they_touch() {
        let n = 20_000;
        let entries: Vec<ZipEntry> = (0..n).map(|i| entry(&format!("f{i}"), b"x")).collect();
        let contents = vec![b"x".to_vec(); n];
        let layout = ZipLayout::new(entries).unwrap();
        let total = layout.total_len();

        let mut tail = layout.segments(range(total - 10, total - 1));
        let bytes: Vec<Segment> = tail.by_ref().collect();
        assert_eq!(tail.records_generated(), 1, "only the end record");
        assert_eq!(bytes.iter().map(Segment::len).sum::<u64>(), 10);

        let mid_cd = layout.central_directory_offset() + layout.central_directory_len() / 2;
        let mut middle = layout.segments(range(mid_cd, mid_cd + 9));
        middle.by_ref().for_each(drop);
        assert!(middle.records_generated() <= 2, "{}", middle.records_generated());

        let mid_local = layout.local_header_offset(n / 2).unwrap();
        let mut local = layout.segments(range(mid_local, mid_local + 40));
        local.by_ref().for_each(drop);
        assert!(local.records_generated() <= 2);

        // And the full archive is still exactly right, in bounded segments.
        let full = bytes_of(&layout, &contents, None);
        assert_eq!(full.len() as u64, total);
        let max_bytes = layout.segments(None).map(|s| s.len()).max().unwrap();
        assert!(max_bytes < (SEGMENT_COALESCE_BYTES + 200) as u64);
    }

    // ---- names ----

    #[test]
    fn rejects_unsafe_names() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for name in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            ".",
            "..",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            "C:\\x",
            long.as_str(),
        ] {
            let err = ZipLayout::new(vec![entry(name, b"")]).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPath, "{name:?}");
        }
        let ok_long = "a".repeat(MAX_NAME_BYTES);
        assert!(ZipLayout::new(vec![entry(&ok_long, b"")]).is_ok());
        assert!(ZipLayout::new(vec![entry("...", b""), entry(".hidden/..x", b"")]).is_ok());
    }

    #[test]
    fn rejects_duplicates_and_file_dir_clashes() {
        let err = ZipLayout::new(vec![entry("a/b", b"1"), entry("a/b", b"2")]).unwrap_err();
        assert!(err.message.contains("twice"), "{}", err.message);
        for pair in [["a", "a/b"], ["a/b/c", "a/b"], ["x/y", "x/y/z/w"]] {
            let err = ZipLayout::new(vec![entry(pair[0], b""), entry(pair[1], b"")]).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPath);
        }
        // Prefixes that are not whole segments are fine; case differences are distinct names.
        assert!(ZipLayout::new(vec![entry("ab", b""), entry("a/b", b""), entry("A/b", b"")]).is_ok());
        // Messages quote the name but stay short.
        let err = ZipLayout::new(vec![entry(&format!("{}/..", "é".repeat(500)), b"")]).unwrap_err();
        assert!(err.message.len() < 400, "{}", err.message.len());
    }

    #[test]
    fn sizes_that_overflow_u64_are_refused() {
        let huge = ZipEntry { name: "a".into(), size: u64::MAX - 10, crc32: 0, modified: 0 };
        assert_eq!(ZipLayout::new(vec![huge.clone()]).unwrap_err().code, ErrorCode::PayloadTooLarge);
        let half = ZipEntry { size: u64::MAX / 2, ..huge.clone() };
        let other = ZipEntry { name: "b".into(), ..half.clone() };
        assert_eq!(ZipLayout::new(vec![half, other]).unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    // ---- times ----

    #[test]
    fn dos_times() {
        let ymdhms = |(time, date): (u16, u16)| {
            (1980 + (date >> 9), (date >> 5) & 15, date & 31, time >> 11, (time >> 5) & 63, (time & 31) * 2)
        };
        assert_eq!(ymdhms(dos_date_time(MTIME)), (2024, 2, 29, 12, 34, 56));
        assert_eq!(ymdhms(dos_date_time(0)), (1980, 1, 1, 0, 0, 0));
        assert_eq!(ymdhms(dos_date_time(DOS_EPOCH_UNIX - 1)), (1980, 1, 1, 0, 0, 0));
        assert_eq!(ymdhms(dos_date_time(DOS_EPOCH_UNIX + 61)), (1980, 1, 1, 0, 1, 0));
        assert_eq!(ymdhms(dos_date_time(951_868_801)), (2000, 3, 1, 0, 0, 0));
        assert_eq!(ymdhms(dos_date_time(4_354_819_198)), (2107, 12, 31, 23, 59, 58));
        assert_eq!(ymdhms(dos_date_time(4_354_819_199)), (2107, 12, 31, 23, 59, 58));
        assert_eq!(ymdhms(dos_date_time(4_354_819_200)), (2107, 12, 31, 23, 59, 58));
        assert_eq!(ymdhms(dos_date_time(u64::MAX)), (2107, 12, 31, 23, 59, 58));
        assert_eq!(ymdhms(dos_date_time(1 << 40)), (2107, 12, 31, 23, 59, 58));
    }

    #[test]
    fn timestamps_read_back_and_late_dates_drop_the_extra_field() {
        let mut late = entry("late", b"x");
        late.modified = 4_000_000_000; // 2096: beyond the signed 32-bit extra field
        let mut old = entry("old", b"y");
        old.modified = 1; // 1970: clamped to 1980 in DOS, exact in the extra field
        let early_layout = ZipLayout::new(vec![entry("now", b"z")]).unwrap();
        let layout = ZipLayout::new(vec![late, old, entry("now", b"z")]).unwrap();
        // The late entry has no 9-byte extended timestamp, in either header.
        assert_eq!(layout.data_offset(0), Some(30 + 4));
        let contents = vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()];
        let full = check_archive(&layout, &contents);
        let mut archive = zip::ZipArchive::new(Cursor::new(&full)).unwrap();
        let late = archive.by_index(0).unwrap();
        let dt = late.last_modified().unwrap();
        assert_eq!((dt.year(), dt.month(), dt.day()), (2096, 10, 2));
        drop(late);
        let now = archive.by_index(2).unwrap();
        let dt = now.last_modified().unwrap();
        assert_eq!((dt.year(), dt.month(), dt.day(), dt.hour(), dt.minute(), dt.second()), (2024, 2, 29, 12, 34, 56));
        let mtime = now.extra_data_fields().find_map(|field| match field {
            zip::extra_fields::ExtraField::ExtendedTimestamp(ts) => ts.mod_time(),
            _ => None,
        });
        assert_eq!(mtime, Some(MTIME as u32));
        drop(now);
        assert!(early_layout.total_len() < layout.total_len());
    }

    // ---- ZIP64 ----

    /// Reads only metadata through ranges, as a client resuming from the end would, and checks
    /// every structure against the layout without any content bytes.
    fn parse_metadata(layout: &ZipLayout) -> Vec<(String, u64, u64)> {
        let read = |start: u64, len: u64| -> Vec<u8> {
            let mut out = Vec::new();
            for segment in layout.segments(range(start, start + len - 1)) {
                match segment {
                    Segment::Bytes(bytes) => out.extend_from_slice(&bytes),
                    Segment::Data { .. } => panic!("metadata range {start}+{len} touched content"),
                }
            }
            out
        };
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let total = layout.total_len();
        let eocd = read(total - 22, 22);
        assert_eq!(u32_at(&eocd, 0), EOCD_SIG);
        let (mut count, mut cd_size, mut cd_offset) =
            (u64::from(u16_at(&eocd, 10)), u64::from(u32_at(&eocd, 12)), u64::from(u32_at(&eocd, 16)));
        if layout.needs_zip64() {
            let locator = read(total - 42, 20);
            assert_eq!(u32_at(&locator, 0), ZIP64_LOCATOR_SIG);
            let record_at = u64_at(&locator, 8);
            assert_eq!(record_at, total - 42 - 56);
            let record = read(record_at, 56);
            assert_eq!(u32_at(&record, 0), ZIP64_EOCD_SIG);
            assert_eq!(u64_at(&record, 4), 44);
            assert_eq!(u16_at(&record, 14), 45);
            count = u64_at(&record, 24);
            assert_eq!(u64_at(&record, 32), count);
            cd_size = u64_at(&record, 40);
            cd_offset = u64_at(&record, 48);
            assert_eq!(cd_offset + cd_size, record_at);
        } else {
            assert_eq!(cd_offset + cd_size, total - 22);
        }
        assert_eq!(
            (count, cd_size, cd_offset),
            (layout.entry_count() as u64, layout.central_directory_len(), layout.central_directory_offset())
        );
        let cd = read(cd_offset, cd_size);
        let mut at = 0;
        let mut out = Vec::new();
        while at < cd.len() {
            assert_eq!(u32_at(&cd, at), CENTRAL_HEADER_SIG);
            let needed = u16_at(&cd, at + 6);
            let mut size = u64::from(u32_at(&cd, at + 24));
            let size_c = u64::from(u32_at(&cd, at + 20));
            let name_len = usize::from(u16_at(&cd, at + 28));
            let extra_len = usize::from(u16_at(&cd, at + 30));
            let mut offset = u64::from(u32_at(&cd, at + 42));
            let name = String::from_utf8(cd[at + 46..at + 46 + name_len].to_vec()).unwrap();
            let extra = &cd[at + 46 + name_len..at + 46 + name_len + extra_len];
            let mut zip64_seen = false;
            let mut e = 0;
            while e < extra.len() {
                let (tag, len) = (u16_at(extra, e), usize::from(u16_at(extra, e + 2)));
                if tag == EXTRA_ZIP64 {
                    zip64_seen = true;
                    let mut f = e + 4;
                    if size == U32_SENTINEL {
                        assert_eq!(size_c, U32_SENTINEL);
                        size = u64_at(extra, f);
                        assert_eq!(u64_at(extra, f + 8), size);
                        f += 16;
                    }
                    if offset == U32_SENTINEL {
                        offset = u64_at(extra, f);
                        f += 8;
                    }
                    assert_eq!(f, e + 4 + len, "zip64 field holds exactly the overflowing values");
                }
                e += 4 + len;
            }
            assert_eq!(zip64_seen, needed == 45, "version needed follows ZIP64 use for {name}");
            assert_eq!(zip64_seen, size >= U32_SENTINEL || offset >= U32_SENTINEL);
            // The local header agrees.
            let index = out.len();
            assert_eq!(layout.local_header_offset(index), Some(offset));
            let header_len = layout.data_offset(index).unwrap() - offset;
            let local = read(offset, header_len);
            assert_eq!(u32_at(&local, 0), LOCAL_HEADER_SIG);
            assert_eq!(u16_at(&local, 4), needed);
            assert_eq!(u16_at(&local, 6), FLAG_UTF8);
            let local_name_len = usize::from(u16_at(&local, 26));
            assert_eq!(&local[30..30 + local_name_len], name.as_bytes());
            if size >= U32_SENTINEL {
                assert_eq!(u32_at(&local, 18), u32::MAX);
                let extra = &local[30 + local_name_len..];
                assert_eq!((u16_at(extra, 0), u16_at(extra, 2)), (EXTRA_ZIP64, 16));
                assert_eq!((u64_at(extra, 4), u64_at(extra, 12)), (size, size));
            } else {
                assert_eq!(u64::from(u32_at(&local, 22)), size);
            }
            out.push((name, size, offset));
            at += 46 + name_len + extra_len;
        }
        out
    }

    #[test]
    fn zip64_thresholds_in_the_layout() {
        let sized = |name: &str, size: u64| ZipEntry { name: name.into(), size, crc32: 0x1234_5678, modified: MTIME };
        // Just below every limit: no ZIP64 at all.
        let below = ZipLayout::new(vec![sized("a", 0xFFFF_FFFE - 200)]).unwrap();
        assert!(!below.needs_zip64());
        parse_metadata(&below);
        // An entry of exactly 0xFFFFFFFF bytes needs it (the value is the sentinel).
        let sentinel = ZipLayout::new(vec![sized("a", 0xFFFF_FFFF)]).unwrap();
        assert!(sentinel.needs_zip64());
        assert_eq!(parse_metadata(&sentinel)[0].1, 0xFFFF_FFFF);
        // 0xFFFFFFFE fits, but the archive still crosses 4 GiB, so the end records need ZIP64.
        let fits = ZipLayout::new(vec![sized("a", 0xFFFF_FFFE), sized("b", 1)]).unwrap();
        assert!(fits.needs_zip64());
        let parsed = parse_metadata(&fits);
        assert!(parsed[1].2 >= U32_SENTINEL, "second local header past 4 GiB");
        // A local header exactly at 0xFFFFFFFF needs the offset field; one byte earlier does not.
        let first_header = 30 + 1 + 9;
        let exact = ZipLayout::new(vec![sized("a", 0xFFFF_FFFF - first_header), sized("b", 0)]).unwrap();
        assert_eq!(exact.local_header_offset(1), Some(0xFFFF_FFFF));
        parse_metadata(&exact);
        let just_before = ZipLayout::new(vec![sized("a", 0xFFFF_FFFE - first_header), sized("b", 0)]).unwrap();
        assert_eq!(just_before.local_header_offset(1), Some(0xFFFF_FFFE));
        parse_metadata(&just_before);
        // Many large entries: sizes and offsets beyond 32 bits, exact total length.
        let big: Vec<ZipEntry> = (0..5).map(|i| sized(&format!("dir/{i}.bin"), 5 << 30)).collect();
        let layout = ZipLayout::new(big).unwrap();
        let parsed = parse_metadata(&layout);
        let expected_total: u64 =
            parsed.iter().map(|(name, size, _)| (30 + name.len() as u64 + 20 + 9) + size).sum::<u64>()
                + layout.central_directory_len()
                + 56
                + 20
                + 22;
        assert_eq!(layout.total_len(), expected_total);
        assert_eq!(parsed[4].2, 4 * ((5 << 30) + 30 + 9 + 20 + 9));
    }

    #[test]
    fn zip64_by_entry_count() {
        let n = 0xFFFF; // 65,535: the 16-bit count field cannot hold it
        let entries: Vec<ZipEntry> =
            (0..n).map(|i| entry(&format!("d{}/f{i:05}.txt", i % 16), &[(i % 251) as u8])).collect();
        let contents: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 251) as u8]).collect();
        let fewer = ZipLayout::new(entries[..n - 1].to_vec()).unwrap();
        assert!(!fewer.needs_zip64());
        let layout = ZipLayout::new(entries).unwrap();
        assert!(layout.needs_zip64());
        assert_eq!(layout.entry_count(), n);
        let full = check_archive(&layout, &contents);
        // The classic end record says "see ZIP64" for the count only.
        let eocd = &full[full.len() - 22..];
        assert_eq!(u16::from_le_bytes([eocd[8], eocd[9]]), 0xFFFF);
        assert_eq!(u32::from_le_bytes(eocd[16..20].try_into().unwrap()) as u64, layout.central_directory_offset());
        parse_metadata(&layout);
    }

    /// Content of the big test entries, generated on the fly: a prime-period pattern, so chunk
    /// boundaries never line up with it.
    struct Pattern {
        block: Vec<u8>,
    }

    const PERIOD: usize = 4099;

    impl Pattern {
        fn new(seed: u8) -> Pattern {
            let unit: Vec<u8> =
                (0..PERIOD).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect();
            Pattern { block: unit.iter().copied().cycle().take(PERIOD * 256).collect() }
        }

        /// Feeds `len` bytes starting at content offset `offset` to `sink`, in large slices.
        fn emit(&self, mut offset: u64, mut len: u64, mut sink: impl FnMut(&[u8])) {
            while len > 0 {
                let phase = (offset % PERIOD as u64) as usize;
                let take = len.min((self.block.len() - phase) as u64) as usize;
                sink(&self.block[phase..phase + take]);
                offset += take as u64;
                len -= take as u64;
            }
        }
    }

    /// Over 4 GiB on disk: an entry larger than 4 GiB (ZIP64 sizes in both headers), entries whose
    /// local headers sit past 4 GiB (ZIP64 offsets) and the ZIP64 end records, written by
    /// streaming segments with content generated on the fly, then read back by the `zip` crate,
    /// `unzip -t` and Python's `zipfile.testzip()` (which re-reads and CRC-checks everything).
    #[test]
    fn zip64_archive_over_4_gib_on_disk() {
        let started = Instant::now();
        let sizes: [(&str, u64, u8); 4] = [
            ("big/huge.bin", (4 << 30) + 4096 + 17, 1),
            ("big/after.bin", (3 << 20) + 1, 2),
            ("z empty.txt", 0, 3),
            ("ü ñ/tail.txt", 5, 4),
        ];
        let patterns: Vec<Pattern> = sizes.iter().map(|(_, _, seed)| Pattern::new(*seed)).collect();
        let entries: Vec<ZipEntry> = sizes
            .iter()
            .zip(&patterns)
            .map(|((name, size, _), pattern)| {
                let mut hasher = crc32fast::Hasher::new();
                pattern.emit(0, *size, |bytes| hasher.update(bytes));
                ZipEntry { name: (*name).to_owned(), size: *size, crc32: hasher.finalize(), modified: MTIME }
            })
            .collect();
        eprintln!("crc of {} bytes: {:?}", entries.iter().map(|e| e.size).sum::<u64>(), started.elapsed());
        let layout = ZipLayout::new(entries).unwrap();
        assert!(layout.needs_zip64());
        let parsed = parse_metadata(&layout);
        assert!(parsed[1].2 > U32_SENTINEL && parsed[3].2 > U32_SENTINEL);

        let dir = TempDir::new("zip64");
        let path = dir.path("big.zip");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
        for segment in layout.segments(None) {
            match segment {
                Segment::Bytes(bytes) => out.write_all(&bytes).unwrap(),
                Segment::Data { entry, offset, len } => {
                    patterns[entry].emit(offset, len, |bytes| out.write_all(bytes).unwrap());
                }
            }
        }
        out.into_inner().unwrap().sync_all().ok();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), layout.total_len());
        eprintln!("written {} bytes: {:?}", layout.total_len(), started.elapsed());

        // The zip crate: central directory, ZIP64 fields, header consistency, small contents.
        let mut archive = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        archive.validate_header_consistency().unwrap();
        for (index, want) in (0..layout.entry_count()).map(|i| (i, layout.entry(i).unwrap().clone())) {
            let mut file = archive.by_index(index).unwrap();
            assert_eq!(
                (file.name().unwrap().to_string(), file.size(), file.crc32()),
                (want.name.clone(), want.size, want.crc32)
            );
            assert_eq!(file.header_start(), layout.local_header_offset(index).unwrap());
            if want.size < (16 << 20) {
                let mut content = Vec::new();
                file.read_to_end(&mut content).unwrap();
                let mut expected = Vec::new();
                patterns[index].emit(0, want.size, |bytes| expected.extend_from_slice(bytes));
                assert!(content == expected);
            }
        }
        drop(archive);
        // A range read from the middle of the file matches what the segments say.
        let probe = layout.data_offset(0).unwrap() + (4 << 30) - 3;
        let mut file = File::open(&path).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(probe)).unwrap();
        let mut on_disk = vec![0; 64];
        file.read_exact(&mut on_disk).unwrap();
        let mut from_segments = Vec::new();
        for segment in layout.segments(range(probe, probe + 63)) {
            match segment {
                Segment::Bytes(bytes) => from_segments.extend_from_slice(&bytes),
                Segment::Data { entry, offset, len } => {
                    patterns[entry].emit(offset, len, |b| from_segments.extend_from_slice(b))
                }
            }
        }
        assert_eq!(on_disk, from_segments);

        unzip_test(&path, false);
        eprintln!("unzip -t done: {:?}", started.elapsed());
        python_check(&path, &layout);
        eprintln!("python zipfile done: {:?}", started.elapsed());
    }
}

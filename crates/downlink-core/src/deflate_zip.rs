//! The optional deflate mode of a multi-file download (`compression=deflate`).
//!
//! The default archive is STOREd and laid out up front by [`crate::zip`], which gives an exact
//! `Content-Length` and byte ranges. A deflated entry's size is only known once it has been
//! compressed, so this mode streams: each entry's local header is followed by its compressed
//! bytes and a data descriptor, and the response has no length and no ranges (as the spec
//! allows). Smaller downloads of compressible files, at the price of CPU and resumability.
//!
//! The archive format is the `zip` crate's streaming writer (ZIP64 where needed, UTF-8 names);
//! this module feeds it the content a chunk at a time and checks every entry against the size
//! and CRC-32 recorded at prepare time, so a file changed mid-download fails the response
//! instead of producing a silently different archive.

use std::io::Write;

use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::error::ApiError;
use crate::zip::{dos_date_time, ZipEntry};

/// How the archive of a multi-file download is encoded (`compression` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveCompression {
    /// STORE, laid out up front: exact `Content-Length`, `Range`/`If-Range` (the default).
    #[default]
    Store,
    /// DEFLATE, streamed: no `Content-Length`, no ranges.
    Deflate,
}

impl ArchiveCompression {
    /// The `compression` parameter: absent or `store`, or `deflate` (any case); anything else
    /// is `400 INVALID_REQUEST` rather than silently ignored.
    pub fn from_param(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None => Ok(ArchiveCompression::Store),
            Some(v) if v.eq_ignore_ascii_case("store") => Ok(ArchiveCompression::Store),
            Some(v) if v.eq_ignore_ascii_case("deflate") => Ok(ArchiveCompression::Deflate),
            Some(_) => Err(ApiError::invalid_request("`compression` must be `store` (the default) or `deflate`")),
        }
    }
}

/// zlib's fastest level: most of the size win on text and logs at a fraction of the CPU of the
/// default (6), which matters when one wasm instance compresses a whole archive.
const DEFLATE_LEVEL: i64 = 1;

/// The entry being written: what was promised and what has been fed so far.
struct OpenEntry {
    name: String,
    size: u64,
    crc32: u32,
    written: u64,
    crc: crc32fast::Hasher,
}

/// Writes a deflated ZIP to `W` as the entries' bytes are fed in: [`start_entry`], then
/// [`write`] the entry's content, for every entry, then [`finish`]. Memory is the compressor's
/// state (a few hundred KiB), whatever the sizes.
///
/// [`start_entry`]: Self::start_entry
/// [`write`]: Self::write
/// [`finish`]: Self::finish
pub struct DeflateZipWriter<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
    open: Option<OpenEntry>,
}

impl<W: Write> DeflateZipWriter<W> {
    /// A writer emitting the archive into `out`.
    pub fn new(out: W) -> Self {
        DeflateZipWriter { zip: ZipWriter::new_stream(out), open: None }
    }

    /// Ends the previous entry (checking it) and starts `entry`.
    pub fn start_entry(&mut self, entry: &ZipEntry) -> Result<(), ApiError> {
        self.close_entry()?;
        let (time, date) = dos_date_time(entry.modified);
        let modified = DateTime::try_from_msdos(date, time).unwrap_or_default();
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(DEFLATE_LEVEL))
            .last_modified_time(modified)
            .large_file(entry.size >= u64::from(u32::MAX));
        self.zip.start_file(entry.name.as_str(), options).map_err(|e| zip_error(&entry.name, e))?;
        self.open = Some(OpenEntry {
            name: entry.name.clone(),
            size: entry.size,
            crc32: entry.crc32,
            written: 0,
            crc: crc32fast::Hasher::new(),
        });
        Ok(())
    }

    /// Feeds content of the current entry.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        let open = self.open.as_mut().ok_or_else(|| ApiError::internal("deflate archive: no entry started"))?;
        open.written += bytes.len() as u64;
        if open.written > open.size {
            return Err(changed(&open.name));
        }
        open.crc.update(bytes);
        self.zip.write_all(bytes).map_err(|e| zip_error(&open.name, e.into()))
    }

    /// Ends the last entry, writes the central directory and returns the sink.
    pub fn finish(mut self) -> Result<W, ApiError> {
        self.close_entry()?;
        let out = self.zip.finish().map_err(|e| zip_error("the central directory", e))?;
        Ok(out.into_inner())
    }

    fn close_entry(&mut self) -> Result<(), ApiError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        if open.written != open.size || open.crc.finalize() != open.crc32 {
            return Err(changed(&open.name));
        }
        Ok(())
    }
}

fn changed(name: &str) -> ApiError {
    ApiError::storage(format!("`{name}` no longer matches its size and CRC-32 from prepare"))
}

fn zip_error(what: &str, e: zip::result::ZipError) -> ApiError {
    ApiError::storage(format!("deflate archive: writing {what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    fn entry(name: &str, content: &[u8]) -> ZipEntry {
        ZipEntry {
            name: name.to_owned(),
            size: content.len() as u64,
            crc32: crc32fast::hash(content),
            modified: 1_709_210_096,
        }
    }

    fn archive(files: &[(&str, Vec<u8>)], feed: usize) -> Vec<u8> {
        let mut writer = DeflateZipWriter::new(Vec::new());
        for (name, content) in files {
            writer.start_entry(&entry(name, content)).unwrap();
            for piece in content.chunks(feed) {
                writer.write(piece).unwrap();
            }
        }
        writer.finish().unwrap()
    }

    #[test]
    fn compression_parameter() {
        assert_eq!(ArchiveCompression::from_param(None).unwrap(), ArchiveCompression::Store);
        assert_eq!(ArchiveCompression::from_param(Some("STORE")).unwrap(), ArchiveCompression::Store);
        assert_eq!(ArchiveCompression::from_param(Some("deflate")).unwrap(), ArchiveCompression::Deflate);
        let err = ArchiveCompression::from_param(Some("gzip")).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::InvalidRequest);
    }

    #[test]
    fn archive_reads_back_deflated_and_smaller() {
        let text: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}: the quick brown fox\n").into_bytes()).collect();
        let noise: Vec<u8> = (0u32..70_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let files = [("docs/a.txt", text.clone()), ("empty", Vec::new()), ("données/ü.bin", noise.clone())];
        let bytes = archive(&files, 4096);
        assert!(bytes.len() < text.len() / 4 + noise.len() + 1024, "{} bytes", bytes.len());
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(zip.len(), 3);
        for (i, (name, content)) in files.iter().enumerate() {
            let mut file = zip.by_index(i).unwrap();
            assert_eq!(file.name().unwrap(), *name);
            assert_eq!(file.compression(), CompressionMethod::Deflated);
            assert_eq!(file.crc32(), crc32fast::hash(content));
            let mut read = Vec::new();
            file.read_to_end(&mut read).unwrap();
            assert_eq!(&read, content, "{name}");
        }
    }

    #[test]
    fn content_that_differs_from_prepare_is_an_error() {
        let mut writer = DeflateZipWriter::new(Vec::new());
        writer.start_entry(&entry("a", b"abc")).unwrap();
        writer.write(b"abd").unwrap();
        assert!(writer.start_entry(&entry("b", b"x")).is_err(), "wrong CRC");

        let mut writer = DeflateZipWriter::new(Vec::new());
        writer.start_entry(&entry("a", b"abc")).unwrap();
        assert!(writer.write(b"abcd").is_err(), "longer than prepared");

        let mut writer = DeflateZipWriter::new(Vec::new());
        writer.start_entry(&entry("a", b"abc")).unwrap();
        writer.write(b"ab").unwrap();
        assert!(writer.finish().is_err(), "shorter than prepared");
    }

    #[test]
    fn writing_before_an_entry_is_an_error() {
        let mut writer = DeflateZipWriter::new(Vec::new());
        assert!(writer.write(b"x").is_err());
    }
}

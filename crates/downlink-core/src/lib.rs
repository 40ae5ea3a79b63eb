//! Sans-IO core of Downlink.
//!
//! Everything here is pure logic over inputs the caller supplies — request headers, bytes,
//! the current time, random ids — returning decisions, records and bytes to send or store.
//! No sockets, files, clocks, randomness or threads, so the same code runs natively in tests
//! and inside `wasm32-wasip2` Spin components.
//!
//! - [`path`]: user paths, normalised and validated.
//! - [`error`]: the error envelope and the code → status table.
//! - [`auth`]: bearer tokens checked against hashed configuration, scopes.
//! - [`meta`]: file records, directory indexes, content types.
//! - [`blob`]: key layout, chunking, read plans, garbage-collection planning.
//! - [`http`]: `Range`, conditional requests, HTTP dates, `Content-Disposition`.
//! - [`prepare`]: multi-file download plans: prepare bodies, plan records, quotas.
//! - [`query`]: query strings and the gateway's dispatch rule.
//! - [`download`]: remote URL downloads: URL policy, records, progress, history.
//! - [`zip`]: ZIP layout computed up front, served by byte range.
//! - [`deflate_zip`]: the streamed, deflated archive of `compression=deflate`.
//! - [`delivery`]: serving stored content — decide the `GET`/`HEAD` answer, stream the bytes
//!   into a caller's sink.
//! - [`storage`]: the key-value trait backends implement and the file operations on it.
//! - [`json`]: the one way records become bytes.
//! - [`text`]: cutting names and messages to a length.
//! - [`config`]: operator settings (Spin variables), parsed one way.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod blob;
pub mod config;
pub mod deflate_zip;
pub mod delivery;
pub mod download;
pub mod error;
pub mod hash;
pub mod http;
pub mod json;
pub mod listing;
pub mod meta;
pub mod path;
pub mod prepare;
pub mod query;
pub mod s3;
pub mod storage;
pub mod text;
pub mod web;
pub mod zip;

pub use error::{ApiError, ErrorCode};
pub use path::StoragePath;

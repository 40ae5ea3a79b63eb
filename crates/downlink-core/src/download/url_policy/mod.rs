//! Which URLs a download may fetch: strict parsing, normalisation and the SSRF policy —
//! `url` parses, `policy` decides.
//!
//! The parser is deliberately stricter than a browser's (WHATWG) parser: anything two HTTP
//! stacks could read differently is refused instead of guessed at, because the URL we check
//! must be the URL that is fetched. The worker builds its outbound request from
//! [`CheckedUrl::scheme`], [`CheckedUrl::authority`] and [`CheckedUrl::path_and_query`], so no
//! second parser ever sees the raw input.
//!
//! Refused as `INVALID_URL`: schemes other than http/https, missing `//` or host, userinfo
//! (`user:pass@`), backslashes, control characters, percent signs or non-ASCII characters in
//! the host (IDNA is out of scope: use the `xn--` form), IPv6 zone ids, bad ports, URLs over
//! [`MAX_URL_BYTES`], and any host whose last label is numeric but which is not a canonical
//! dotted quad (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`): resolvers and HTTP clients
//! accept such spellings for loopback and private addresses, so they are never allowed through.
//!
//! Normalised: scheme and host lower-case, one trailing dot of the host removed, default port
//! dropped, empty path made `/`, dot segments removed, fragment dropped, and characters that
//! may not appear raw (space, `"`, `<`, `>`, `` ` ``, `{`, `}`, non-ASCII) percent-encoded.
//!
//! Refused as `DOMAIN_BLOCKED` (see [`DownloadPolicy`]): always `self`, `self.alt`,
//! `spin.internal` and `*.spin.internal` (they reach this app's own components through Spin's
//! service chaining) and the app's own host names; unless private targets are allowed,
//! `localhost`, `*.localhost`, private-use names (`*.internal`, `*.local`, `*.home.arpa`,
//! `*.localdomain`) and literal addresses that are not globally routable; then the block list;
//! then, if one is configured, anything not on the allow list.
//!
//! Host names are not resolved here (this code does no I/O), so a public name that resolves to
//! a private address is not caught by this module; that needs the host's outbound network
//! policy, whose refusals map to `DOMAIN_BLOCKED` in
//! [`remote_status`](super::remote_status::OutboundFailure::PolicyDenied).

mod policy;
mod url;

pub use policy::*;
pub use url::*;

/// Longest URL accepted, in bytes, both as given and after normalisation.
pub const MAX_URL_BYTES: usize = 2048;

/// Most redirects followed for one download; one more is `NETWORK_ERROR`.
pub const MAX_REDIRECTS: usize = 10;

/// Longest host name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;

/// Longest host label (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;

/// Names that reach this app itself through Spin (service chaining and self-requests); blocked
/// even when private targets are allowed, because they would bypass authentication between
/// components.
const ALWAYS_BLOCKED_NAMES: [&str; 2] = ["self", "self.alt"];

/// Domains whose every subdomain (and the domain itself) is always blocked, for the same reason.
const ALWAYS_BLOCKED_SUFFIXES: [&str; 1] = ["spin.internal"];

/// Names that only ever resolve to the local machine or a private network (RFC 6761
/// `localhost`, ICANN's private-use `internal` — where cloud metadata services live, e.g.
/// `metadata.google.internal` — mDNS `local`, RFC 8375 `home.arpa`, and `localdomain`).
const PRIVATE_SUFFIXES: [&str; 5] = ["localhost", "internal", "local", "home.arpa", "localdomain"];

#[cfg(test)]
mod tests;

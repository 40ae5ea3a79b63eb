//! Which URLs a download may fetch: strict parsing, normalisation and the SSRF policy.
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

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ApiError, ErrorCode};

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

/// `http` or `https`, the only schemes a download may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated host: a lower-case DNS name or a literal address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower-case ASCII, without a trailing dot.
    Domain(String),
    /// A canonical dotted-quad IPv4 literal.
    Ipv4(Ipv4Addr),
    /// A bracketed IPv6 literal (stored without brackets).
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    /// The host as it appears in a URL (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// The operator's download rules, from Spin variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadPolicy {
    /// If non-empty, only these domains (and their subdomains) or exact addresses are allowed.
    pub allow_domains: Vec<String>,
    /// These domains (and their subdomains) or exact addresses are refused.
    pub block_domains: Vec<String>,
    /// Allow loopback, private, link-local and other non-public targets (tests with a local
    /// origin need it). `self`, `self.alt`, `*.spin.internal` and own hosts stay blocked.
    pub allow_private_targets: bool,
    /// This app's own public host names, optionally with a port (`app.example.com`,
    /// `127.0.0.1:3000`); a URL naming one is always blocked. An entry without a port matches
    /// every port.
    pub own_hosts: Vec<String>,
}

impl DownloadPolicy {
    /// Builds a policy from raw variable values: lists separated by commas and/or whitespace.
    ///
    /// List entries are domains (`example.com`; a leading `*.` or `.` is accepted and ignored,
    /// since matching covers subdomains anyway) or literal addresses (`10.1.2.3`, `[::1]` or
    /// `::1`). Own-host entries may carry a port and may be written as URLs
    /// (`https://app.example.com`). An entry that is not a valid host fails the whole policy
    /// (`500 INTERNAL_ERROR` naming it): a typo in a block list must not silently allow
    /// everything.
    pub fn from_variables(
        allow_domains: &str,
        block_domains: &str,
        allow_private_targets: bool,
        own_hosts: &str,
    ) -> Result<DownloadPolicy, ApiError> {
        Ok(DownloadPolicy {
            allow_domains: parse_domain_list(allow_domains, "allow")?,
            block_domains: parse_domain_list(block_domains, "block")?,
            allow_private_targets,
            own_hosts: parse_own_hosts(own_hosts)?,
        })
    }
}

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| c == ',' || c.is_whitespace()).filter(|entry| !entry.is_empty())
}

fn config_error(list: &str, entry: &str, why: &str) -> ApiError {
    ApiError::internal(format!("download {list} list entry {entry:?} is not a valid host: {why}"))
}

fn parse_domain_list(raw: &str, list: &str) -> Result<Vec<String>, ApiError> {
    let mut entries = Vec::new();
    for entry in split_list(raw) {
        let bare = entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.')).unwrap_or(entry);
        let host = parse_list_host(bare).map_err(|why| config_error(list, entry, &why))?;
        entries.push(host_key(&host));
    }
    Ok(entries)
}

fn parse_own_hosts(raw: &str) -> Result<Vec<String>, ApiError> {
    let mut entries = Vec::new();
    for entry in split_list(raw) {
        let authority = match entry.split_once("://") {
            Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or(""),
            None => entry,
        };
        let (host_text, port_text) = split_host_port(authority).map_err(|e| config_error("own-host", entry, &e))?;
        let host = parse_host(host_text).map_err(|e| config_error("own-host", entry, &e.message))?;
        let port = parse_port(port_text).map_err(|e| config_error("own-host", entry, &e.message))?;
        entries.push(match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        });
    }
    Ok(entries)
}

/// A list entry is a bare domain or address; IPv6 may come with or without brackets.
fn parse_list_host(entry: &str) -> Result<Host, String> {
    if !entry.starts_with('[') && entry.contains(':') {
        return entry.parse::<Ipv6Addr>().map(Host::Ipv6).map_err(|_| "invalid IPv6 address".to_owned());
    }
    parse_host(entry).map_err(|e| e.message)
}

/// The form list entries are compared in: the domain, or the address without brackets.
fn host_key(host: &Host) -> String {
    match host {
        Host::Domain(name) => name.clone(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

/// A URL that passed [`check_url`]: normalised, and allowed by the policy it was checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedUrl {
    scheme: Scheme,
    host: Host,
    /// Only a non-default port is kept.
    port: Option<u16>,
    path_and_query: String,
    serialized: String,
}

impl CheckedUrl {
    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: a lower-case name, or an address (IPv6 without brackets).
    pub fn host(&self) -> String {
        host_key(&self.host)
    }

    /// The host with its kind.
    pub fn host_kind(&self) -> &Host {
        &self.host
    }

    /// The port to connect to (the scheme's default if none was given).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// `host[:port]` for the request's authority (`Host` header): IPv6 in brackets, the port
    /// only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The request target: path (always starting with `/`) and `?query` if any.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("/")
    }

    /// The last path segment, still percent-encoded (empty when the path ends with `/`).
    pub fn last_path_segment(&self) -> &str {
        self.path().rsplit('/').next().unwrap_or("")
    }

    /// The normalised URL, without fragment.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// Resolves a redirect's `Location` (absolute, scheme-relative `//host/…`, absolute-path,
    /// relative or query-only) against this URL, RFC 3986 §5.2, and checks the result against
    /// `policy` as a new URL, so every hop obeys the same rules as the first.
    pub fn redirect(&self, location: &str, policy: &DownloadPolicy) -> Result<CheckedUrl, ApiError> {
        let location = location.trim_matches(|c: char| c.is_ascii_whitespace());
        let refused = |err: ApiError| ApiError::new(err.code, format!("redirect refused: {}", err.message));
        if location.is_empty() {
            return Err(refused(invalid("the Location header is empty")));
        }
        // Checked before joining: a backslash or newline could otherwise change which branch
        // below reads the reference (`/\evil.com` is `//evil.com` to a browser).
        reject_forbidden_chars(location).map_err(refused)?;
        let target = if has_scheme(location) {
            location.to_owned()
        } else if location.starts_with("//") {
            format!("{}:{location}", self.scheme)
        } else if location.starts_with('/') {
            format!("{}://{}{location}", self.scheme, self.authority())
        } else if location.starts_with('?') {
            format!("{}://{}{}{location}", self.scheme, self.authority(), self.path())
        } else if location.starts_with('#') {
            self.serialized.clone()
        } else {
            let base_path = self.path();
            let directory = &base_path[..base_path.rfind('/').map_or(0, |cut| cut + 1)];
            format!("{}://{}{directory}{location}", self.scheme, self.authority())
        };
        check_url(&target, policy).map_err(refused)
    }
}

impl fmt::Display for CheckedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

/// Whether `status` is a redirect that is followed (301, 302, 303, 307, 308).
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Decides the next hop after a response: `Ok(None)` when `status` is not a redirect (use this
/// response), `Ok(Some(url))` to fetch next. `redirects_followed` counts hops already taken.
/// A redirect without `Location`, or one past [`MAX_REDIRECTS`], is `NETWORK_ERROR`; a refused
/// target keeps its code from [`CheckedUrl::redirect`].
pub fn next_hop(
    current: &CheckedUrl,
    status: u16,
    location: Option<&str>,
    redirects_followed: usize,
    policy: &DownloadPolicy,
) -> Result<Option<CheckedUrl>, ApiError> {
    if !is_redirect(status) {
        return Ok(None);
    }
    if redirects_followed >= MAX_REDIRECTS {
        return Err(ApiError::new(ErrorCode::NetworkError, format!("more than {MAX_REDIRECTS} redirects")));
    }
    let Some(location) = location else {
        return Err(ApiError::new(
            ErrorCode::NetworkError,
            format!("the server answered {status} without a Location header"),
        ));
    };
    current.redirect(location, policy).map(Some)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidUrl, message)
}

fn blocked(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::DomainBlocked, message)
}

fn reject_forbidden_chars(raw: &str) -> Result<(), ApiError> {
    if raw.chars().any(|c| c.is_control()) {
        return Err(invalid("the URL contains control characters (tab, newline, NUL…)"));
    }
    if raw.contains('\\') {
        return Err(invalid("the URL contains a backslash, which HTTP clients read differently; encode it as %5C"));
    }
    Ok(())
}

/// `scheme ":"` at the start, RFC 3986 §3.1.
fn has_scheme(raw: &str) -> bool {
    let Some((scheme, _)) = raw.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Parses, normalises and checks a download URL against `policy`.
///
/// `INVALID_URL` for anything malformed or ambiguous, `DOMAIN_BLOCKED` for a well-formed URL
/// the policy refuses; the messages say why and never echo credentials (URLs with userinfo
/// are refused before anything else is reported about them).
pub fn check_url(raw: &str, policy: &DownloadPolicy) -> Result<CheckedUrl, ApiError> {
    let url = parse_url(raw)?;
    check_policy(&url, policy)?;
    Ok(url)
}

fn parse_url(raw: &str) -> Result<CheckedUrl, ApiError> {
    // Like browsers, ignore surrounding white space (copy-paste); inside, spaces are encoded
    // below and other control characters refused.
    let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(invalid("the URL is empty; give an absolute http:// or https:// URL"));
    }
    if trimmed.len() > MAX_URL_BYTES {
        return Err(invalid(format!("the URL is longer than {MAX_URL_BYTES} bytes")));
    }
    reject_forbidden_chars(trimmed)?;
    if !has_scheme(trimmed) {
        return Err(invalid("the URL must be absolute and start with http:// or https://"));
    }
    let (scheme_text, rest) = trimmed.split_once(':').unwrap_or_default();
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => {
            let shown: String = scheme_text.chars().take(16).collect();
            return Err(invalid(format!("only http and https URLs can be downloaded, not {shown:?}")));
        }
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(invalid(format!("the URL must have the form {scheme}://host/path")));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    // The fragment is never sent to a server.
    let rest = rest.split('#').next().unwrap_or("");
    if authority.contains('@') {
        return Err(invalid(
            "URLs with credentials (user:password@host) are refused: they would leak into logs and the download history",
        ));
    }
    if authority.is_empty() {
        return Err(invalid("the URL has no host"));
    }
    let (host_text, port_text) = split_host_port(authority).map_err(invalid)?;
    let host = parse_host(host_text)?;
    let port = parse_port(port_text)?.filter(|port| *port != scheme.default_port());

    let (raw_path, raw_query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = remove_dot_segments(&encode_component(if raw_path.is_empty() { "/" } else { raw_path }, false));
    let mut path_and_query = path;
    if let Some(query) = raw_query {
        path_and_query.push('?');
        path_and_query.push_str(&encode_component(query, true));
    }
    let port_suffix = port.map(|port| format!(":{port}")).unwrap_or_default();
    let serialized = format!("{scheme}://{host}{port_suffix}{path_and_query}");
    if serialized.len() > MAX_URL_BYTES {
        return Err(invalid(format!("the URL is longer than {MAX_URL_BYTES} bytes once normalised")));
    }
    Ok(CheckedUrl { scheme, host, port, path_and_query, serialized })
}

/// Splits `host[:port]` / `[v6][:port]`; the port text is `""` when absent.
fn split_host_port(authority: &str) -> Result<(&str, &str), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("the IPv6 address is missing its closing `]`".to_owned());
        };
        return match after {
            "" => Ok((&authority[..host.len() + 2], "")),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((&authority[..host.len() + 2], port)),
                None => Err("unexpected characters after the IPv6 address".to_owned()),
            },
        };
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("IPv6 addresses must be written in brackets, e.g. http://[2001:db8::1]/".to_owned())
        }
        Some((host, port)) => Ok((host, port)),
        None => Ok((authority, "")),
    }
}

fn parse_port(text: &str) -> Result<Option<u16>, ApiError> {
    // An empty port (`host:/`) means the default, as RFC 3986 §3.2.3 allows.
    if text.is_empty() {
        return Ok(None);
    }
    let valid = text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if valid && port != 0 => Ok(Some(port)),
        _ => Err(invalid("the port must be a number from 1 to 65535")),
    }
}

/// Parses a host as it appears in a URL (IPv6 in brackets).
fn parse_host(text: &str) -> Result<Host, ApiError> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| invalid("the IPv6 address is missing its closing `]`"))?;
        if inner.contains('%') {
            return Err(invalid("IPv6 zone identifiers (%25…) are not allowed in download URLs"));
        }
        if inner.starts_with(['v', 'V']) {
            return Err(invalid("IPvFuture addresses are not supported"));
        }
        return inner.parse::<Ipv6Addr>().map(Host::Ipv6).map_err(|_| invalid("the IPv6 address is malformed"));
    }
    if !text.is_ascii() {
        return Err(invalid("internationalised (non-ASCII) host names are not supported; use the ASCII form (xn--…)"));
    }
    if text.contains('%') {
        return Err(invalid("percent-escapes are not allowed in the host"));
    }
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(invalid("the URL has no host"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(invalid(format!("the host contains {bad:?}, which is not allowed in a host name")));
    }
    if name.len() > MAX_HOST_BYTES {
        return Err(invalid(format!("the host is longer than {MAX_HOST_BYTES} bytes")));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("the host has an empty label (`..`)"));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(invalid(format!("a host label is longer than {MAX_LABEL_BYTES} bytes")));
        }
    }
    let last_label = name.rsplit('.').next().unwrap_or(name);
    if looks_numeric(last_label) {
        // WHATWG and many resolvers read such a host as an IPv4 address in some spelling.
        if let Some(ip) = parse_canonical_ipv4(name) {
            return Ok(Host::Ipv4(ip));
        }
        return Err(match parse_lenient_ipv4(name) {
            Some(ip) => invalid(format!(
                "the host {name:?} is a non-canonical spelling of the IPv4 address {ip}; write addresses as four decimal numbers"
            )),
            None => invalid(format!("the host {name:?} looks like an IPv4 address but is not one")),
        });
    }
    Ok(Host::Domain(name.to_owned()))
}

/// Digits only, or `0x` followed by hex digits: what WHATWG treats as an IPv4 number.
fn looks_numeric(label: &str) -> bool {
    if let Some(hex) = label.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// Exactly four decimal parts 0–255 without leading zeros.
fn parse_canonical_ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// The WHATWG IPv4 parser (1–4 parts, each decimal, octal with a leading 0, or hex with 0x;
/// the last part fills the remaining bytes), used only to explain a refusal.
fn parse_lenient_ipv4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        let value = if digits.is_empty() { 0 } else { u64::from_str_radix(digits, radix).ok()? };
        numbers.push(value);
    }
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return None;
    }
    let mut address = *last;
    for (index, number) in leading.iter().enumerate() {
        address += number << (8 * (3 - index));
    }
    u32::try_from(address).ok().map(Ipv4Addr::from)
}

/// Percent-encodes what may not appear raw in a path or query, keeping valid `%XX` escapes
/// (re-encoding them would change the request) and encoding a stray `%` as `%25`.
fn encode_component(text: &str, is_query: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let needs_encoding = match byte {
            b'%' => {
                !(bytes.get(index + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(index + 2).is_some_and(u8::is_ascii_hexdigit))
            }
            b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' => true,
            b'\'' => is_query,
            byte => !byte.is_ascii(),
        };
        if needs_encoding {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

/// RFC 3986 §5.2.4 for a path starting with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_directory = false;
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        ends_in_directory = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let mut out = format!("/{}", kept.join("/"));
    if ends_in_directory && !kept.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `host` is `entry` or a subdomain of it, comparing whole labels.
fn domain_matches(host: &str, entry: &str) -> bool {
    host == entry || host.strip_suffix(entry).is_some_and(|prefix| prefix.ends_with('.'))
}

fn list_matches(host: &Host, list: &[String]) -> bool {
    match host {
        Host::Domain(name) => list.iter().any(|entry| domain_matches(name, entry)),
        address => list.contains(&host_key(address)),
    }
}

fn check_policy(url: &CheckedUrl, policy: &DownloadPolicy) -> Result<(), ApiError> {
    let shown = url.host.to_string();
    if let Host::Domain(name) = &url.host {
        if ALWAYS_BLOCKED_NAMES.contains(&name.as_str())
            || ALWAYS_BLOCKED_SUFFIXES.iter().any(|suffix| domain_matches(name, suffix))
        {
            return Err(blocked(format!(
                "{shown} is an internal address of this app and can never be downloaded from"
            )));
        }
    }
    let host_and_port = format!("{shown}:{}", url.port());
    if policy.own_hosts.iter().any(|own| *own == shown || *own == host_and_port) {
        return Err(blocked(format!("{shown} is this service's own host")));
    }
    if !policy.allow_private_targets {
        if let Some(reason) = non_public_reason(&url.host) {
            return Err(blocked(format!("{shown} is {reason}, and private targets are not allowed")));
        }
    }
    if list_matches(&url.host, &policy.block_domains) {
        return Err(blocked(format!("{shown} is on the download block list")));
    }
    if !policy.allow_domains.is_empty() && !list_matches(&url.host, &policy.allow_domains) {
        return Err(blocked(format!("{shown} is not on the download allow list")));
    }
    Ok(())
}

/// Why a host is not a public Internet target, or `None` if it is (as far as can be told
/// without resolving names).
pub fn non_public_reason(host: &Host) -> Option<&'static str> {
    match host {
        Host::Domain(name) => {
            PRIVATE_SUFFIXES.iter().any(|suffix| domain_matches(name, suffix)).then_some("a local or private-use name")
        }
        Host::Ipv4(ip) => ipv4_non_public_reason(*ip),
        Host::Ipv6(ip) => ipv6_non_public_reason(*ip),
    }
}

fn ipv4_non_public_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (this-network) address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address",
        (192, 0, 0) => "an IETF protocol-assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => "the broadcast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    })
}

fn ipv6_non_public_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 =
        || Ipv4Addr::new((segments[6] >> 8) as u8, segments[6] as u8, (segments[7] >> 8) as u8, segments[7] as u8);
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Forms that carry an IPv4 address: judge the address they lead to.
    let carries_v4 = segments[..5] == [0; 5] && (segments[5] == 0 || segments[5] == 0xffff) // compatible, mapped
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0] // SIIT-translated (::ffff:0:a.b.c.d)
        || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]; // NAT64 well-known prefix
    if carries_v4 {
        return ipv4_non_public_reason(embedded_v4()).map(|_| "an IPv6 form of a non-public IPv4 address");
    }
    if segments[0] == 0x2002 {
        // 6to4: the IPv4 address sits in bits 16–47.
        let v4 =
            Ipv4Addr::new((segments[1] >> 8) as u8, segments[1] as u8, (segments[2] >> 8) as u8, segments[2] as u8);
        return ipv4_non_public_reason(v4).map(|_| "a 6to4 form of a non-public IPv4 address");
    }
    Some(match segments[0] {
        0x0064 if segments[1] == 0xff9b && segments[2] == 1 => "a local-use NAT64 address",
        0x0100 if segments[1..4] == [0, 0, 0] => "a discard-only address",
        0x2001 if segments[1] < 0x0200 => "an IETF protocol-assignment (Teredo, ORCHID…) address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        0x3fff if segments[1] < 0x1000 => "a documentation address",
        first if first & 0xfe00 == 0xfc00 => "a unique-local (private) address",
        first if first & 0xffc0 == 0xfe80 => "a link-local address",
        first if first & 0xffc0 == 0xfec0 => "a site-local address",
        first if first & 0xff00 == 0xff00 => "a multicast address",
        _ if segments[..6] == [0; 6] => "a reserved address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> DownloadPolicy {
        DownloadPolicy::default()
    }

    fn local() -> DownloadPolicy {
        DownloadPolicy { allow_private_targets: true, ..DownloadPolicy::default() }
    }

    fn ok(raw: &str) -> CheckedUrl {
        check_url(raw, &open()).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn code(raw: &str, policy: &DownloadPolicy) -> ErrorCode {
        match check_url(raw, policy) {
            Ok(url) => panic!("{raw} was accepted as {url}"),
            Err(err) => err.code,
        }
    }

    #[test]
    fn accepts_and_normalises_ordinary_urls() {
        let url = ok("HTTPS://Files.Example.COM./Data/report.csv?x=1&y=a b#frag");
        assert_eq!(url.as_str(), "https://files.example.com/Data/report.csv?x=1&y=a%20b");
        assert_eq!(url.scheme(), Scheme::Https);
        assert_eq!(url.host(), "files.example.com");
        assert_eq!(url.port(), 443);
        assert_eq!(url.authority(), "files.example.com");
        assert_eq!(url.path_and_query(), "/Data/report.csv?x=1&y=a%20b");
        assert_eq!(url.path(), "/Data/report.csv");
        assert_eq!(url.last_path_segment(), "report.csv");
        assert_eq!(ok("http://example.com").as_str(), "http://example.com/");
        assert_eq!(ok("http://example.com?q").path_and_query(), "/?q");
        assert_eq!(ok("  http://example.com/a  ").as_str(), "http://example.com/a");
        assert_eq!(ok("http://example.com:80/").as_str(), "http://example.com/");
        assert_eq!(ok("https://example.com:443/").port(), 443);
        assert_eq!(ok("http://example.com:/x").as_str(), "http://example.com/x");
        let custom = ok("http://example.com:8080/x");
        assert_eq!((custom.port(), custom.authority().as_str()), (8080, "example.com:8080"));
        assert_eq!(custom.as_str(), "http://example.com:8080/x");
        assert_eq!(ok("http://my_host.example.com/").host(), "my_host.example.com");
        assert_eq!(ok("http://example.com/").to_string(), "http://example.com/");
    }

    #[test]
    fn encodes_unsafe_path_and_query_characters() {
        assert_eq!(ok("http://x.org/a b/é.txt").path(), "/a%20b/%C3%A9.txt");
        assert_eq!(ok("http://x.org/%41%zz%").path(), "/%41%25zz%25");
        assert_eq!(ok("http://x.org/<\"{}`>").path(), "/%3C%22%7B%7D%60%3E");
        assert_eq!(ok("http://x.org/it's?q='x'").path_and_query(), "/it's?q=%27x%27");
        assert_eq!(ok("http://x.org/a?b?c=d/e").path_and_query(), "/a?b?c=d/e");
    }

    #[test]
    fn removes_dot_segments() {
        assert_eq!(ok("http://x.org/a/b/../c").path(), "/a/c");
        assert_eq!(ok("http://x.org/a/./b/.").path(), "/a/b/");
        assert_eq!(ok("http://x.org/../../etc/passwd").path(), "/etc/passwd");
        assert_eq!(ok("http://x.org/a/..").path(), "/");
        assert_eq!(ok("http://x.org/a/b/..").path(), "/a/");
        assert_eq!(ok("http://x.org/a//b/").path(), "/a//b/");
        // Query text is not a path.
        assert_eq!(ok("http://x.org/a?p=../b").path_and_query(), "/a?p=../b");
    }

    #[test]
    fn rejects_malformed_urls() {
        let cases = [
            "",
            "   ",
            "example.com/file",
            "/relative/path",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "gopher://127.0.0.1:70/",
            "http:/example.com",
            "http:example.com",
            "http://",
            "http:///path",
            "http://:80/",
            "http://example.com:0/",
            "http://example.com:65536/",
            "http://example.com:99999/",
            "http://example.com:-1/",
            "http://example.com:8o/",
            "http://example.com:+80/",
            "http://example.com:80:80/",
            "http://exa mple.com/",
            "http://example..com/",
            "http://.example.com/",
            "http://ex%61mple.com/",
            "http://exa\tmple.com/",
            "http://example.com/a\nb",
            "http://example.com/\0",
            "http://example.com\\@evil.com/",
            "http://example.com/a\\b",
            "http://bücher.de/",
            "http://例え.jp/",
            "http://[::1/",
            "http://[::1]x/",
            "http://[zz::1]/",
            "http://[v1.abc]/",
            "http://::1/",
            "http://2001:db8::1/",
            "http://exa<mple.com/",
        ];
        for raw in cases {
            assert_eq!(code(raw, &local()), ErrorCode::InvalidUrl, "{raw:?}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(code(&long, &open()), ErrorCode::InvalidUrl);
        // Encoding may push a URL over the cap.
        let grows = format!("http://example.com/{}", "é".repeat(600));
        assert!(grows.len() <= MAX_URL_BYTES);
        assert_eq!(code(&grows, &open()), ErrorCode::InvalidUrl);
        let label = "a".repeat(64);
        assert_eq!(code(&format!("http://{label}.com/"), &open()), ErrorCode::InvalidUrl);
        let long_host = vec!["abcdefghi"; 26].join(".");
        assert_eq!(code(&format!("http://{long_host}/"), &open()), ErrorCode::InvalidUrl);
    }

    #[test]
    fn messages_explain() {
        let message = |raw: &str| check_url(raw, &open()).unwrap_err().message;
        assert!(message("ftp://x.org/").contains("only http and https"));
        assert!(message("http://bücher.de/").contains("non-ASCII"));
        assert!(message("http://user:secret@x.org/").contains("credentials"));
        assert!(!message("http://user:secret@x.org/").contains("secret"));
        assert!(message("http://0x7f000001/").contains("127.0.0.1"));
        assert!(message("http://10.0.0.1/").contains("private"));
        assert!(message("http://[fe80::1%25eth0]/").contains("zone"));
    }

    #[test]
    fn uppercase_and_mixed_case_schemes() {
        assert_eq!(ok("HTTP://example.com/").as_str(), "http://example.com/");
        assert_eq!(ok("hTtPs://example.com/").scheme(), Scheme::Https);
        assert_eq!(code("HTTPS://LOCALHOST/", &open()), ErrorCode::DomainBlocked);
    }

    #[test]
    fn refuses_userinfo_in_every_form() {
        for raw in [
            "http://user@example.com/",
            "http://user:pass@example.com/",
            "http://:@example.com/",
            "http://@example.com/",
            "http://127.0.0.1@evil.com/",
            "http://good.com@127.0.0.1/",
            "http://a@b@example.com/",
            "http://[::1]@example.com/",
        ] {
            let err = check_url(raw, &local()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidUrl, "{raw}");
            assert!(err.message.contains("credentials"), "{raw}: {}", err.message);
        }
    }

    #[test]
    fn fragment_cannot_hide_the_host() {
        let url = ok("http://evil.com#@good.com/");
        assert_eq!(url.host(), "evil.com");
        assert_eq!(url.as_str(), "http://evil.com/");
        assert_eq!(ok("http://evil.com?@good.com/").host(), "evil.com");
        assert_eq!(ok("http://evil.com/#@good.com").host(), "evil.com");
        let allow = DownloadPolicy { allow_domains: vec!["good.com".into()], ..open() };
        assert_eq!(code("http://evil.com#@good.com", &allow), ErrorCode::DomainBlocked);
    }

    #[test]
    fn blocks_local_names() {
        for raw in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://localhost:8080/",
            "http://a.b.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://printer.local/",
            "http://nas.home.arpa/",
            "http://box.localdomain/",
        ] {
            assert_eq!(code(raw, &open()), ErrorCode::DomainBlocked, "{raw}");
            assert!(check_url(raw, &local()).is_ok(), "{raw} should pass with private targets allowed");
        }
        // Whole labels only.
        assert!(check_url("http://notlocalhost/", &open()).is_ok());
        assert!(check_url("http://localhost.example.com/", &open()).is_ok());
        assert!(check_url("http://internal.example.com/", &open()).is_ok());
    }

    #[test]
    fn internal_spin_hosts_are_always_blocked() {
        for raw in [
            "http://self/",
            "http://SELF./api",
            "http://self.alt/",
            "http://spin.internal/",
            "http://files.spin.internal/secret",
            "https://Download.Spin.Internal:443/",
        ] {
            assert_eq!(code(raw, &local()), ErrorCode::DomainBlocked, "{raw}");
            let allow_all = DownloadPolicy { allow_domains: vec!["spin.internal".into(), "self".into()], ..local() };
            assert_eq!(code(raw, &allow_all), ErrorCode::DomainBlocked, "{raw}");
        }
        assert!(check_url("http://myself/", &open()).is_ok());
        assert!(check_url("http://self.example.com/", &open()).is_ok());
        assert!(check_url("http://notspin.internal.example/", &open()).is_ok());
    }

    #[test]
    fn own_hosts_are_always_blocked_port_aware() {
        let policy = DownloadPolicy::from_variables(
            "",
            "",
            true,
            "Downlink.Example.com, https://cdn.example.com/x 127.0.0.1:3000",
        )
        .unwrap();
        assert_eq!(policy.own_hosts, ["downlink.example.com", "cdn.example.com", "127.0.0.1:3000"]);
        assert_eq!(code("https://downlink.example.com/x", &policy), ErrorCode::DomainBlocked);
        assert_eq!(code("http://downlink.example.com:8443/x", &policy), ErrorCode::DomainBlocked);
        assert_eq!(code("http://cdn.example.com/", &policy), ErrorCode::DomainBlocked);
        assert_eq!(code("http://127.0.0.1:3000/", &policy), ErrorCode::DomainBlocked);
        // Another port on the same loopback host is a different service (a test origin).
        assert!(check_url("http://127.0.0.1:3001/", &policy).is_ok());
        assert!(check_url("http://sub.downlink.example.com/", &policy).is_ok());
        let v6 = DownloadPolicy::from_variables("", "", true, "[::1]:3000").unwrap();
        assert_eq!(v6.own_hosts, ["[::1]:3000"]);
        assert_eq!(code("http://[0::1]:3000/", &v6), ErrorCode::DomainBlocked);
        assert!(check_url("http://[::1]:3001/", &v6).is_ok());
    }

    #[test]
    fn blocks_non_public_ipv4_literals() {
        for raw in [
            "http://127.0.0.1/",
            "http://127.255.255.254/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.127.255.255/",
            "http://192.0.0.8/",
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            "http://198.18.0.1/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            "http://127.0.0.1./",
        ] {
            assert_eq!(code(raw, &open()), ErrorCode::DomainBlocked, "{raw}");
            assert!(check_url(raw, &local()).is_ok(), "{raw}");
        }
        for raw in ["http://8.8.8.8/", "http://172.32.0.1/", "http://100.128.0.1/", "http://1.1.1.1:8080/"] {
            assert!(check_url(raw, &open()).is_ok(), "{raw}");
        }
    }

    #[test]
    fn refuses_alternative_ipv4_spellings() {
        for raw in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7F000001/",
            "http://0177.0.0.1/",
            "http://0177.0000.0000.0001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0x7f.1/",
            "http://0x7f.0.0.1/",
            "http://127.0.0.01/",
            "http://010.0.0.1/",
            "http://0/",
            "http://00/",
            "http://0x/",
            "http://1.2.3.4.5/",
            "http://256.0.0.1/",
            "http://1.2.3.256/",
            "http://999999999999999999999999/",
            "http://example.123/",
            "http://example.0x1f/",
            "http://3232235521/",
        ] {
            // Refused whatever the private-target setting: the spelling itself is the problem.
            assert_eq!(code(raw, &local()), ErrorCode::InvalidUrl, "{raw}");
        }
        // Numeric labels elsewhere are ordinary names.
        assert!(check_url("http://123.example.com/", &open()).is_ok());
        assert!(check_url("http://0x7f.example.com/", &open()).is_ok());
        assert!(check_url("http://1e100.net/", &open()).is_ok());
    }

    #[test]
    fn lenient_ipv4_reading_for_messages() {
        let read = |s: &str| parse_lenient_ipv4(s).map(|ip| ip.to_string());
        assert_eq!(read("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(read("0x7f000001").as_deref(), Some("127.0.0.1"));
        assert_eq!(read("0177.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(read("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(read("192.168.257").as_deref(), Some("192.168.1.1"));
        assert_eq!(read("0x").as_deref(), Some("0.0.0.0"));
        assert_eq!(read("4294967296"), None);
        assert_eq!(read("256.1"), None);
        assert_eq!(read("1.2.3.4.5"), None);
        assert_eq!(read("08"), None);
        assert_eq!(read("99999999999999999999999"), None);
    }

    #[test]
    fn ipv6_literals() {
        for raw in [
            "http://[::1]/",
            "http://[::]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:0:192.168.0.1]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[64:ff9b:1::1]/",
            "http://[2002:7f00:1::]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
            "http://[2001::1]/",
            "http://[100::1]/",
            "http://[3fff::1]/",
            "http://[::2]/",
        ] {
            assert_eq!(code(raw, &open()), ErrorCode::DomainBlocked, "{raw}");
        }
        for raw in ["http://[2606:4700::1111]/", "http://[::ffff:8.8.8.8]/", "http://[2002:808:808::]/"] {
            assert!(check_url(raw, &open()).is_ok(), "{raw}");
        }
        let url = check_url("http://[::FFFF:127.0.0.1]:8080/x", &local()).unwrap();
        assert_eq!(url.as_str(), "http://[::ffff:127.0.0.1]:8080/x");
        assert_eq!(url.authority(), "[::ffff:127.0.0.1]:8080");
        assert_eq!(url.host(), "::ffff:127.0.0.1");
        assert_eq!(url.host_kind(), &Host::Ipv6("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(check_url("http://[0:0::1]/", &local()).unwrap().as_str(), "http://[::1]/");
        // Zone identifiers are refused outright, even where private targets are allowed.
        assert_eq!(code("http://[fe80::1%25eth0]/", &local()), ErrorCode::InvalidUrl);
        assert_eq!(code("http://[fe80::1%eth0]/", &local()), ErrorCode::InvalidUrl);
    }

    #[test]
    fn block_and_allow_lists_match_whole_labels() {
        let policy =
            DownloadPolicy::from_variables("", "example.com, *.bad.org .worse.net 10.9.9.9", false, "").unwrap();
        assert_eq!(policy.block_domains, ["example.com", "bad.org", "worse.net", "10.9.9.9"]);
        for raw in [
            "http://example.com/",
            "http://a.example.com/",
            "http://a.b.EXAMPLE.com./",
            "http://bad.org/",
            "http://x.worse.net/",
        ] {
            assert_eq!(code(raw, &policy), ErrorCode::DomainBlocked, "{raw}");
        }
        for raw in
            ["http://badexample.com/", "http://example.com.evil.net/", "http://notbad.org/", "http://example.co/"]
        {
            assert!(check_url(raw, &policy).is_ok(), "{raw}");
        }
        let allow = DownloadPolicy::from_variables("files.example.com, cdn.net", "", false, "").unwrap();
        assert!(check_url("https://files.example.com/x", &allow).is_ok());
        assert!(check_url("https://eu.files.example.com/x", &allow).is_ok());
        assert!(check_url("https://x.cdn.net/", &allow).is_ok());
        for raw in
            ["https://example.com/", "https://evilfiles.example.com/", "https://cdn.net.evil.com/", "http://1.2.3.4/"]
        {
            assert_eq!(code(raw, &allow), ErrorCode::DomainBlocked, "{raw}");
        }
        // The block list wins over the allow list.
        let both = DownloadPolicy::from_variables("example.com", "secret.example.com", false, "").unwrap();
        assert!(check_url("http://www.example.com/", &both).is_ok());
        assert_eq!(code("http://a.secret.example.com/", &both), ErrorCode::DomainBlocked);
    }

    #[test]
    fn address_list_entries_match_exactly() {
        let policy = DownloadPolicy::from_variables("127.0.0.1 [::1] ::2", "", true, "").unwrap();
        assert_eq!(policy.allow_domains, ["127.0.0.1", "::1", "::2"]);
        assert!(check_url("http://127.0.0.1:9000/", &policy).is_ok());
        assert!(check_url("http://[::1]/", &policy).is_ok());
        assert!(check_url("http://[0::2]/", &policy).is_ok());
        assert_eq!(code("http://27.0.0.1/", &policy), ErrorCode::DomainBlocked);
        assert_eq!(code("http://0.0.1/", &policy), ErrorCode::InvalidUrl);
        // An allow-list entry does not lift the private-target rule.
        let allow_private_name = DownloadPolicy::from_variables("localhost", "", false, "").unwrap();
        assert_eq!(code("http://localhost/", &allow_private_name), ErrorCode::DomainBlocked);
    }

    #[test]
    fn invalid_policy_entries_fail_closed() {
        for (allow, block, own) in
            [("", "exa mple.com,bad/", ""), ("bücher.de", "", ""), ("", "", "x.com:99999"), ("", "0x7f.1", "")]
        {
            let err = DownloadPolicy::from_variables(allow, block, false, own).unwrap_err();
            assert_eq!(err.code, ErrorCode::InternalError, "{allow}|{block}|{own}");
        }
        let empty = DownloadPolicy::from_variables(" , ,, ", "\n", false, "").unwrap();
        assert!(empty.allow_domains.is_empty() && empty.block_domains.is_empty());
    }

    #[test]
    fn redirects_resolve_and_are_rechecked() {
        let base = check_url("https://files.example.com/dir/sub/file.csv?x=1", &open()).unwrap();
        let hop = |location: &str| base.redirect(location, &open()).map(|url| url.as_str().to_owned());
        assert_eq!(hop("https://cdn.example.net/a").unwrap(), "https://cdn.example.net/a");
        assert_eq!(hop("//cdn.example.net/b").unwrap(), "https://cdn.example.net/b");
        assert_eq!(hop("/abs/path").unwrap(), "https://files.example.com/abs/path");
        assert_eq!(hop("other.csv").unwrap(), "https://files.example.com/dir/sub/other.csv");
        assert_eq!(hop("../up.csv?y=2").unwrap(), "https://files.example.com/dir/up.csv?y=2");
        assert_eq!(hop("../../../../root.csv").unwrap(), "https://files.example.com/root.csv");
        assert_eq!(hop("?page=2").unwrap(), "https://files.example.com/dir/sub/file.csv?page=2");
        assert_eq!(hop("#top").unwrap(), base.as_str());
        assert_eq!(hop("  /spaced  ").unwrap(), "https://files.example.com/spaced");
        assert_eq!(hop("HTTP://Other.Example.com/").unwrap(), "http://other.example.com/");
        assert_eq!(hop("/a b").unwrap(), "https://files.example.com/a%20b");

        let code_of = |location: &str| base.redirect(location, &open()).unwrap_err().code;
        assert_eq!(code_of("http://127.0.0.1/"), ErrorCode::DomainBlocked);
        assert_eq!(code_of("//localhost/x"), ErrorCode::DomainBlocked);
        assert_eq!(code_of("http://[::ffff:127.0.0.1]/"), ErrorCode::DomainBlocked);
        assert_eq!(code_of("http://files.spin.internal/"), ErrorCode::DomainBlocked);
        assert_eq!(code_of("http://169.254.169.254/latest"), ErrorCode::DomainBlocked);
        assert_eq!(code_of("http://127.0.0.1@evil.com/"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("http://2130706433/"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("file:///etc/passwd"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("javascript:alert(1)"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("/\\evil.com/"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("\\\\evil.com"), ErrorCode::InvalidUrl);
        assert_eq!(code_of("/x\r\nSet-Cookie: a=b"), ErrorCode::InvalidUrl);
        assert_eq!(code_of(""), ErrorCode::InvalidUrl);
        assert_eq!(code_of("http:evil.com"), ErrorCode::InvalidUrl);
        assert!(base.redirect("http://127.0.0.1/", &open()).unwrap_err().message.starts_with("redirect refused:"));
    }

    #[test]
    fn scheme_relative_redirect_to_a_public_host_is_followed() {
        let base = check_url("http://files.example.com/a", &open()).unwrap();
        assert_eq!(base.redirect("//evil.com/x", &open()).unwrap().as_str(), "http://evil.com/x");
        let allow = DownloadPolicy { allow_domains: vec!["example.com".into()], ..open() };
        let base = check_url("http://files.example.com/a", &allow).unwrap();
        assert_eq!(base.redirect("//evil.com/x", &allow).unwrap_err().code, ErrorCode::DomainBlocked);
        assert_eq!(base.redirect("http://evil.com#@example.com", &allow).unwrap_err().code, ErrorCode::DomainBlocked);
        let blocked_hop = base.redirect("//example.com.evil.com/", &allow).unwrap_err();
        assert_eq!(blocked_hop.code, ErrorCode::DomainBlocked);
    }

    #[test]
    fn redirect_relative_to_ipv6_and_port_bases() {
        let base = check_url("http://[::1]:8080/a/b", &local()).unwrap();
        assert_eq!(base.redirect("c", &local()).unwrap().as_str(), "http://[::1]:8080/a/c");
        let base = check_url("http://127.0.0.1:9/x/", &local()).unwrap();
        assert_eq!(base.redirect("y", &local()).unwrap().as_str(), "http://127.0.0.1:9/x/y");
        assert_eq!(base.redirect("http://self/", &local()).unwrap_err().code, ErrorCode::DomainBlocked);
    }

    #[test]
    fn redirect_hops_are_bounded() {
        let url = check_url("http://example.com/", &open()).unwrap();
        assert!(is_redirect(301) && is_redirect(302) && is_redirect(303) && is_redirect(307) && is_redirect(308));
        assert!(!is_redirect(300) && !is_redirect(304) && !is_redirect(200) && !is_redirect(305));
        assert_eq!(next_hop(&url, 200, Some("/x"), 0, &open()).unwrap(), None);
        let next = next_hop(&url, 302, Some("/x"), 0, &open()).unwrap().unwrap();
        assert_eq!(next.as_str(), "http://example.com/x");
        assert!(next_hop(&url, 302, Some("/x"), MAX_REDIRECTS - 1, &open()).unwrap().is_some());
        assert_eq!(next_hop(&url, 302, Some("/x"), MAX_REDIRECTS, &open()).unwrap_err().code, ErrorCode::NetworkError);
        assert_eq!(next_hop(&url, 307, None, 0, &open()).unwrap_err().code, ErrorCode::NetworkError);
        assert_eq!(
            next_hop(&url, 308, Some("http://10.0.0.1/"), 0, &open()).unwrap_err().code,
            ErrorCode::DomainBlocked
        );
    }

    #[test]
    fn non_public_reason_is_exposed() {
        assert_eq!(non_public_reason(&Host::Domain("example.com".into())), None);
        assert!(non_public_reason(&Host::Ipv4(Ipv4Addr::LOCALHOST)).is_some());
        assert!(non_public_reason(&Host::Ipv6(Ipv6Addr::LOCALHOST)).is_some());
    }
}

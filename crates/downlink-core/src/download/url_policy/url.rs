//! URL parsing: the strict, normalising parser behind every download URL and redirect target.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ApiError, ErrorCode};

use super::*;

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

/// A URL that passed [`check_url`]: normalised, and allowed by the policy it was checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedUrl {
    pub(super) scheme: Scheme,
    pub(super) host: Host,
    /// Only a non-default port is kept.
    pub(super) port: Option<u16>,
    pub(super) path_and_query: String,
    pub(super) serialized: String,
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
    #[cfg(test)]
    pub(crate) fn host_kind(&self) -> &Host {
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

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidUrl, message)
}

pub(crate) fn reject_forbidden_chars(raw: &str) -> Result<(), ApiError> {
    if raw.chars().any(|c| c.is_control()) {
        return Err(invalid("the URL contains control characters (tab, newline, NUL…)"));
    }
    if raw.contains('\\') {
        return Err(invalid("the URL contains a backslash, which HTTP clients read differently; encode it as %5C"));
    }
    Ok(())
}

/// `scheme ":"` at the start, RFC 3986 §3.1.
pub(crate) fn has_scheme(raw: &str) -> bool {
    let Some((scheme, _)) = raw.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

pub(crate) fn parse_url(raw: &str) -> Result<CheckedUrl, ApiError> {
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
pub(crate) fn split_host_port(authority: &str) -> Result<(&str, &str), String> {
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

pub(crate) fn parse_port(text: &str) -> Result<Option<u16>, ApiError> {
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
pub(crate) fn parse_host(text: &str) -> Result<Host, ApiError> {
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
pub(crate) fn looks_numeric(label: &str) -> bool {
    if let Some(hex) = label.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// Exactly four decimal parts 0–255 without leading zeros.
pub(crate) fn parse_canonical_ipv4(text: &str) -> Option<Ipv4Addr> {
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
pub(crate) fn parse_lenient_ipv4(text: &str) -> Option<Ipv4Addr> {
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
pub(crate) fn encode_component(text: &str, is_query: bool) -> String {
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
pub(crate) fn remove_dot_segments(path: &str) -> String {
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

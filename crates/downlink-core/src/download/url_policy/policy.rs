//! SSRF and domain policy: the operator's lists, what counts as non-public, redirects.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ApiError, ErrorCode};

use super::*;

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

pub(crate) fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| c == ',' || c.is_whitespace()).filter(|entry| !entry.is_empty())
}

pub(crate) fn config_error(list: &str, entry: &str, why: &str) -> ApiError {
    ApiError::internal(format!("download {list} list entry {entry:?} is not a valid host: {why}"))
}

pub(crate) fn parse_domain_list(raw: &str, list: &str) -> Result<Vec<String>, ApiError> {
    let mut entries = Vec::new();
    for entry in split_list(raw) {
        let bare = entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.')).unwrap_or(entry);
        let host = parse_list_host(bare).map_err(|why| config_error(list, entry, &why))?;
        entries.push(host_key(&host));
    }
    Ok(entries)
}

pub(crate) fn parse_own_hosts(raw: &str) -> Result<Vec<String>, ApiError> {
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
pub(crate) fn parse_list_host(entry: &str) -> Result<Host, String> {
    if !entry.starts_with('[') && entry.contains(':') {
        return entry.parse::<Ipv6Addr>().map(Host::Ipv6).map_err(|_| "invalid IPv6 address".to_owned());
    }
    parse_host(entry).map_err(|e| e.message)
}

/// The form list entries are compared in: the domain, or the address without brackets.
pub(crate) fn host_key(host: &Host) -> String {
    match host {
        Host::Domain(name) => name.clone(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
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

pub(crate) fn blocked(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::DomainBlocked, message)
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

/// Whether `host` is `entry` or a subdomain of it, comparing whole labels.
pub(crate) fn domain_matches(host: &str, entry: &str) -> bool {
    host == entry || host.strip_suffix(entry).is_some_and(|prefix| prefix.ends_with('.'))
}

pub(crate) fn list_matches(host: &Host, list: &[String]) -> bool {
    match host {
        Host::Domain(name) => list.iter().any(|entry| domain_matches(name, entry)),
        address => list.contains(&host_key(address)),
    }
}

pub(crate) fn check_policy(url: &CheckedUrl, policy: &DownloadPolicy) -> Result<(), ApiError> {
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

pub(crate) fn ipv4_non_public_reason(ip: Ipv4Addr) -> Option<&'static str> {
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

pub(crate) fn ipv6_non_public_reason(ip: Ipv6Addr) -> Option<&'static str> {
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

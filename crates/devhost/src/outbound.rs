//! Outbound HTTP policy: Spin's `allowed_outbound_hosts` syntax and the runtime config's
//! `[outbound_networking] block_networks`, both as pure decisions over parsed URLs/addresses.

use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use std::net::IpAddr;

/// Suffix of service-chaining hosts (`http://<component>.spin.internal`).
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq)]
enum SchemePattern {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    /// `*`: any host, including `*.spin.internal` and `self`.
    Any,
    /// `*.example.com`: any subdomain (not the apex).
    Subdomains(String),
    /// A literal name or IP.
    Exact(String),
    /// An IPv4/IPv6 network in CIDR form.
    Network(IpNet),
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    /// No port written: the scheme's default port only.
    SchemeDefault,
    Any,
    Range(u16, u16),
}

/// What an outbound request targets, as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundTarget {
    /// Lower-case scheme (`http`/`https`).
    pub scheme: String,
    /// Lower-case host; IPv6 without brackets.
    pub host: String,
    /// Effective port (explicit or the scheme default).
    pub port: u16,
}

impl OutboundTarget {
    /// Builds a target from a request URI's parts.
    pub fn from_uri(uri: &http::Uri) -> Result<Self> {
        let scheme = uri.scheme_str().ok_or_else(|| anyhow!("outbound URL has no scheme"))?.to_ascii_lowercase();
        let authority = uri.authority().ok_or_else(|| anyhow!("outbound URL has no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = match authority.port_u16() {
            Some(p) => p,
            None => default_port(&scheme).ok_or_else(|| anyhow!("no default port for scheme {scheme:?}"))?,
        };
        Ok(OutboundTarget { scheme, host, port })
    }

    /// The component id if this is a service-chaining target.
    pub fn chained_component(&self) -> Option<&str> {
        self.host.strip_suffix(SERVICE_CHAINING_SUFFIX).filter(|id| !id.is_empty() && !id.contains('.'))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one entry (templates already expanded).
    pub fn parse(entry: &str) -> Result<Self> {
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| anyhow!("allowed_outbound_hosts entry {entry:?} needs a scheme (e.g. https://)"))?;
        let scheme = match scheme {
            "*" => SchemePattern::Any,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
                SchemePattern::Exact(s.to_ascii_lowercase())
            }
            _ => bail!("allowed_outbound_hosts entry {entry:?} has an invalid scheme"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') && rest.parse::<IpNet>().is_err() && !looks_like_cidr_with_port(rest) {
            bail!("allowed_outbound_hosts entry {entry:?} must not contain a path");
        }
        let (host, port) =
            split_host_port(rest).ok_or_else(|| anyhow!("allowed_outbound_hosts entry {entry:?} is malformed"))?;
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                bail!("allowed_outbound_hosts entry {entry:?} has an invalid wildcard");
            }
            HostPattern::Subdomains(domain.to_string())
        } else if host.contains('*') {
            bail!("allowed_outbound_hosts entry {entry:?}: wildcards only as `*` or `*.domain`");
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Network(net)
        } else if host.is_empty() {
            bail!("allowed_outbound_hosts entry {entry:?} has no host");
        } else {
            HostPattern::Exact(host.trim_start_matches('[').trim_end_matches(']').to_string())
        };
        let port = match port {
            None => {
                if let SchemePattern::Exact(s) = &scheme {
                    if default_port(s).is_none() {
                        bail!("allowed_outbound_hosts entry {entry:?}: scheme {s:?} has no default port; give one");
                    }
                }
                PortPattern::SchemeDefault
            }
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_port(lo, entry)?, parse_port(hi, entry)?);
                    if lo >= hi {
                        bail!("allowed_outbound_hosts entry {entry:?} has an empty port range");
                    }
                    // Spin's ranges are half-open like Rust's `..`.
                    PortPattern::Range(lo, hi - 1)
                }
                None => {
                    let p = parse_port(p, entry)?;
                    PortPattern::Range(p, p)
                }
            },
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether this entry allows `target`.
    pub fn allows(&self, target: &OutboundTarget) -> bool {
        let scheme_ok = match &self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Exact(s) => *s == target.scheme,
        };
        // Service chaining ignores the scheme and port (Spin dispatches in-process).
        let chaining = target.chained_component().is_some();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomains(d) => {
                target.host.strip_suffix(d.as_str()).is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
            }
            HostPattern::Exact(h) => *h == target.host,
            HostPattern::Network(net) => target.host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        };
        if chaining {
            return host_ok;
        }
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::SchemeDefault => default_port(&target.scheme) == Some(target.port),
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&target.port),
        };
        scheme_ok && host_ok && port_ok
    }
}

fn looks_like_cidr_with_port(s: &str) -> bool {
    split_host_port(s).is_some_and(|(h, _)| h.parse::<IpNet>().is_ok())
}

/// Splits `host[:port]`, handling bracketed IPv6.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        return match &rest[end + 1..] {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => Some((s, None)), // bare IPv6 without brackets
        None => Some((s, None)),
    }
}

fn parse_port(p: &str, entry: &str) -> Result<u16> {
    p.parse().map_err(|_| anyhow!("allowed_outbound_hosts entry {entry:?} has an invalid port {p:?}"))
}

/// A component's whole outbound allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses every entry.
    pub fn parse(entries: &[String]) -> Result<Self> {
        Ok(AllowedHosts { entries: entries.iter().map(|e| AllowedHost::parse(e)).collect::<Result<_>>()? })
    }

    /// Whether any entry allows `target`.
    pub fn allows(&self, target: &OutboundTarget) -> bool {
        self.entries.iter().any(|e| e.allows(target))
    }
}

/// Networks outbound connections must never reach, checked on every resolved address.
#[derive(Debug, Clone, Default)]
pub struct BlockedNetworks {
    nets: Vec<IpNet>,
}

/// What `"private"` stands for in `block_networks`: RFC 1918, loopback, link-local,
/// carrier-grade NAT, unspecified, and their IPv6 counterparts (unique-local, link-local,
/// loopback, unspecified, IPv4-mapped private ranges).
const PRIVATE_NETWORKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

impl BlockedNetworks {
    /// Parses `block_networks` entries: CIDRs, bare IPs, or `"private"`.
    pub fn parse(entries: &[String]) -> Result<Self> {
        let mut nets = Vec::new();
        for e in entries {
            if e == "private" {
                nets.extend(PRIVATE_NETWORKS.iter().map(|n| n.parse::<IpNet>().expect("valid constant")));
            } else if let Ok(net) = e.parse::<IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                bail!("block_networks entry {e:?} is not a CIDR, an IP address or \"private\"");
            }
        }
        Ok(BlockedNetworks { nets })
    }

    /// Whether connecting to `ip` is forbidden. IPv4-mapped IPv6 addresses are checked as IPv4.
    pub fn blocks(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> OutboundTarget {
        OutboundTarget::from_uri(&url.parse().unwrap()).unwrap()
    }

    fn allows(entry: &str, url: &str) -> bool {
        AllowedHost::parse(entry).unwrap().allows(&target(url))
    }

    #[test]
    fn spin_allowed_host_syntax() {
        assert!(allows("https://example.com", "https://example.com/x"));
        assert!(!allows("https://example.com", "https://example.com:8443/x"));
        assert!(!allows("https://example.com", "http://example.com/x"));
        assert!(allows("https://*", "https://anything.org"));
        assert!(!allows("https://*", "https://anything.org:8443"));
        assert!(allows("https://*:*", "https://anything.org:8443"));
        assert!(allows("*://example.com:*", "http://example.com:81"));
        assert!(allows("https://*.example.com", "https://a.b.example.com"));
        assert!(!allows("https://*.example.com", "https://example.com"));
        assert!(!allows("https://*.example.com", "https://badexample.com"));
        assert!(allows("http://127.0.0.1:1000..2000", "http://127.0.0.1:1500"));
        assert!(!allows("http://127.0.0.1:1000..2000", "http://127.0.0.1:2000"));
        assert!(allows("http://10.0.0.0/8:*", "http://10.1.2.3:9"));
        assert!(!allows("http://10.0.0.0/8:*", "http://11.1.2.3:9"));
        assert!(allows("http://[::1]:8080", "http://[::1]:8080/"));
    }

    #[test]
    fn chaining_ignores_scheme_and_port_but_needs_the_host() {
        assert!(allows("http://files.spin.internal", "https://files.spin.internal:9/x"));
        assert!(!allows("http://files.spin.internal", "http://other.spin.internal/x"));
        assert!(allows("https://*", "http://other.spin.internal/"), "Spin's `*` matches chaining hosts");
        assert_eq!(target("http://files.spin.internal/").chained_component(), Some("files"));
        assert_eq!(target("http://a.b.spin.internal/").chained_component(), None);
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "example.com",
            "https://exa*mple.com",
            "https://example.com/path",
            "https://x:port",
            "ftp://x",
            "https://x:10..5",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_networks_private() {
        let b = BlockedNetworks::parse(&["private".to_string(), "203.0.113.0/24".to_string()]).unwrap();
        for ip in ["127.0.0.1", "10.9.9.9", "192.168.1.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "203.0.113.7"]
        {
            assert!(b.blocks(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!b.blocks(ip.parse().unwrap()), "{ip}");
        }
        assert!(BlockedNetworks::parse(&["nope".to_string()]).is_err());
    }
}

use super::*;
use crate::error::ErrorCode;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    let policy =
        DownloadPolicy::from_variables("", "", true, "Downlink.Example.com, https://cdn.example.com/x 127.0.0.1:3000")
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
    let policy = DownloadPolicy::from_variables("", "example.com, *.bad.org .worse.net 10.9.9.9", false, "").unwrap();
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
    for raw in ["http://badexample.com/", "http://example.com.evil.net/", "http://notbad.org/", "http://example.co/"] {
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
    assert_eq!(next_hop(&url, 308, Some("http://10.0.0.1/"), 0, &open()).unwrap_err().code, ErrorCode::DomainBlocked);
}

#[test]
fn non_public_reason_is_exposed() {
    assert_eq!(non_public_reason(&Host::Domain("example.com".into())), None);
    assert!(non_public_reason(&Host::Ipv4(Ipv4Addr::LOCALHOST)).is_some());
    assert!(non_public_reason(&Host::Ipv6(Ipv6Addr::LOCALHOST)).is_some());
}

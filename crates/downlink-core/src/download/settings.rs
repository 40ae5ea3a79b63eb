//! The operator's download settings, read from Spin variables with [`Settings`].

use super::progress::HEARTBEAT_INTERVAL_SECS;
use super::retry::{RetryPolicy, DEFAULT_MAX_ATTEMPTS};
use super::url_policy::DownloadPolicy;
use crate::config::Settings;
use crate::error::ApiError;

/// Variable names, as declared in `spin.toml`.
pub mod vars {
    /// The operator switch (the reference's `--allow-download`).
    pub const ALLOW_DOWNLOAD: &str = "allow_download";
    /// Allow-list of domains.
    pub const ALLOW_DOMAINS: &str = "download_allow_domains";
    /// Block-list of domains.
    pub const BLOCK_DOMAINS: &str = "download_block_domains";
    /// Allow non-public targets (local testing).
    pub const ALLOW_PRIVATE: &str = "download_allow_private";
    /// This app's own host names.
    pub const OWN_HOSTS: &str = "download_own_hosts";
    /// Concurrent downloads.
    pub const MAX_CONCURRENT: &str = "max_concurrent_downloads";
    /// Size cap per download, 0 = none.
    pub const MAX_BYTES: &str = "max_download_bytes";
    /// History entries kept.
    pub const HISTORY_LIMIT: &str = "download_history_limit";
    /// Heartbeat interval.
    pub const HEARTBEAT_SECS: &str = "download_heartbeat_secs";
    /// How long one worker invocation may transfer, 0 = no limit (the hosted targets: 25).
    pub const INVOCATION_SECS: &str = "download_invocation_secs";
    /// How long one worker invocation transfers before handing the download to the next, 0 = no limit.
    pub const SLICE_SECS: &str = "download_slice_secs";
    /// Most attempts per download (the first and its retries).
    pub const MAX_ATTEMPTS: &str = "download_max_attempts";
    /// Whether a download whose origin cannot resume may start over from byte 0.
    pub const RESTART_WITHOUT_RANGES: &str = "download_restart_without_ranges";
}

/// Parsed download settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadSettings {
    /// Whether downloads may be started at all.
    pub allow_download: bool,
    /// URL rules.
    pub policy: DownloadPolicy,
    /// Most downloads running at once (≥ 1).
    pub max_concurrent: usize,
    /// Largest file a download may produce.
    pub max_bytes: Option<u64>,
    /// History entries kept (≥ 1).
    pub history_limit: u64,
    /// Seconds between heartbeats (≥ 1).
    pub heartbeat_secs: u64,
    /// How long one invocation may transfer: below the host's handler limit (`None`: no limit).
    pub invocation_secs: Option<u64>,
    /// How long one invocation transfers before handing off to the next (`None`: until done).
    pub slice_secs: Option<u64>,
    /// Retries of transient faults.
    pub retry: RetryPolicy,
    /// Whether a retry may start over when the origin cannot send the rest (no ranges, no
    /// validator, or the file changed); otherwise that fails the download.
    pub restart_without_ranges: bool,
}

impl DownloadSettings {
    /// Reads every setting through `lookup` (absent variables take their defaults). A value
    /// that does not parse is `500 INTERNAL_ERROR` naming the variable: a typo in operator
    /// configuration must not silently change behaviour.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<DownloadSettings, ApiError> {
        let settings = Settings::new(lookup);
        Ok(DownloadSettings {
            allow_download: settings.flag(vars::ALLOW_DOWNLOAD)?,
            policy: DownloadPolicy::from_variables(
                &settings.text(vars::ALLOW_DOMAINS),
                &settings.text(vars::BLOCK_DOMAINS),
                settings.flag(vars::ALLOW_PRIVATE)?,
                &settings.text(vars::OWN_HOSTS),
            )?,
            max_concurrent: usize::try_from(settings.number(vars::MAX_CONCURRENT, 4)?.max(1)).unwrap_or(usize::MAX),
            max_bytes: settings.limit(vars::MAX_BYTES)?,
            history_limit: settings.number(vars::HISTORY_LIMIT, 1000)?.max(1),
            heartbeat_secs: settings.number(vars::HEARTBEAT_SECS, HEARTBEAT_INTERVAL_SECS)?.max(1),
            invocation_secs: settings.limit(vars::INVOCATION_SECS)?,
            slice_secs: settings.limit(vars::SLICE_SECS)?,
            retry: RetryPolicy::with_attempts(
                u32::try_from(settings.positive(vars::MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS)?).unwrap_or(u32::MAX),
            ),
            restart_without_ranges: settings.flag_or(vars::RESTART_WITHOUT_RANGES, true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<DownloadSettings, ApiError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DownloadSettings::load(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_safe() {
        let s = load(&[]).unwrap();
        assert!(!s.allow_download);
        assert!(!s.policy.allow_private_targets);
        assert_eq!((s.max_concurrent, s.max_bytes, s.history_limit, s.heartbeat_secs), (4, None, 1000, 5));
        assert_eq!(s.retry.max_attempts, 5);
        assert!(s.restart_without_ranges);
    }

    #[test]
    fn parses_values_and_refuses_typos() {
        let s = load(&[
            ("allow_download", "TRUE"),
            ("download_allow_private", "yes"),
            ("max_concurrent_downloads", "30"),
            ("max_download_bytes", "1048576"),
            ("download_block_domains", "evil.com, bad.org"),
            ("download_heartbeat_secs", "0"),
            ("download_max_attempts", "1"),
            ("download_restart_without_ranges", "off"),
        ])
        .unwrap();
        assert!(s.allow_download && s.policy.allow_private_targets);
        assert_eq!((s.max_concurrent, s.max_bytes, s.heartbeat_secs), (30, Some(1_048_576), 1));
        assert_eq!((s.retry.max_attempts, s.restart_without_ranges), (1, false));
        assert_eq!(s.policy.block_domains, vec!["evil.com", "bad.org"]);
        for (name, value) in [
            ("allow_download", "maybe"),
            ("max_concurrent_downloads", "-1"),
            ("max_download_bytes", "1MB"),
            ("download_max_attempts", "0"),
            ("download_restart_without_ranges", "sometimes"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
            assert!(err.message.contains(name), "{}", err.message);
        }
    }
}

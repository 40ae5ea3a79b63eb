//! Deployment-target profiles (`devhost up --platform ...`): what each host provides and
//! forbids, from its own documentation, so that an app that would not load or would break there
//! fails here first. The numbers and their sources are in the README's platform table
//! (`fermyon/developer`: `content/wasm-functions/faq.md`, `content/cloud/faq.md`; Akamai's
//! "Quotas and limits" page).
//!
//! A profile is a set of limits; where they are enforced:
//! - imports and chaining grants: at startup ([`Platform::check_import`], [`Platform::check_outbound_grant`]),
//! - runtime config: at startup (`main.rs`),
//! - handler duration, including work after the response: the instance is stopped (`app.rs`),
//! - request and response body caps: `server.rs`,
//! - key-value key, value and key-count limits: every write (`state.rs`),
//! - memory: the instance's store limits (`app.rs`).

use anyhow::{bail, Result};
use std::time::Duration;

/// One deployment target's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Self-hosted Spin 3.x/4.x or SpinKube: no limits beyond the process's.
    Spin,
    /// Fermyon Wasm Functions (Akamai Functions).
    WasmFunctions,
    /// Fermyon Cloud.
    FermyonCloud,
}

/// 1 MB as the hosts write it (decimal): the stricter reading of "1 MB".
const ONE_MB: usize = 1_000_000;

impl Platform {
    /// Parses `spin`, `wasm-functions` or `fermyon-cloud`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "spin" => Platform::Spin,
            "wasm-functions" => Platform::WasmFunctions,
            "fermyon-cloud" => Platform::FermyonCloud,
            other => bail!("unknown platform {other:?}: expected spin, wasm-functions or fermyon-cloud"),
        })
    }

    /// The name `--platform` takes.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Spin => "spin",
            Platform::WasmFunctions => "wasm-functions",
            Platform::FermyonCloud => "fermyon-cloud",
        }
    }

    /// Interfaces (package/interface, no version) the host does not provide: a component that
    /// imports one does not load there.
    fn missing_interfaces(self) -> &'static [&'static str] {
        match self {
            Platform::Spin => &[],
            // "requires a different consistency guarantee than our global store"; no SQLite API.
            Platform::WasmFunctions => &["wasi:keyvalue/atomics", "fermyon:spin/sqlite"],
            Platform::FermyonCloud => &["wasi:keyvalue/atomics", "wasi:keyvalue/batch"],
        }
    }

    /// Refuses an import the host lacks, naming it.
    pub fn check_import(self, component: &str, import: &str) -> Result<()> {
        let interface = import.split('@').next().unwrap_or(import);
        if self.missing_interfaces().contains(&interface) {
            bail!(
                "component {component:?} imports {import}, which {} does not provide: the app would not load there \
                 (build it for that target, see the README)",
                self.title()
            );
        }
        Ok(())
    }

    /// Refuses a grant the host cannot honour (service chaining on Fermyon Cloud).
    pub fn check_outbound_grant(self, component: &str, host: &str) -> Result<()> {
        if !self.service_chaining() && host.contains(".spin.internal") {
            bail!("component {component:?} is granted {host}: {} has no service chaining", self.title());
        }
        Ok(())
    }

    /// The target's name in messages.
    pub fn title(self) -> &'static str {
        match self {
            Platform::Spin => "self-hosted Spin",
            Platform::WasmFunctions => "Fermyon Wasm Functions",
            Platform::FermyonCloud => "Fermyon Cloud",
        }
    }

    /// Whether `--runtime-config-file` exists there.
    pub fn runtime_config(self) -> bool {
        self == Platform::Spin
    }

    /// Whether `http://<component>.spin.internal` requests work there.
    pub fn service_chaining(self) -> bool {
        self != Platform::FermyonCloud
    }

    /// How long one invocation may run, response and work after it included.
    pub fn handler_limit(self) -> Option<Duration> {
        match self {
            Platform::Spin => None,
            Platform::WasmFunctions | Platform::FermyonCloud => Some(Duration::from_secs(30)),
        }
    }

    /// Largest request body and largest response body, each.
    pub fn body_limit(self) -> Option<u64> {
        match self {
            Platform::Spin => None,
            Platform::WasmFunctions => Some(10 << 20),
            Platform::FermyonCloud => Some(10_000_000),
        }
    }

    /// Largest linear memory of one instance. Cloud states none; its sibling's 128 MiB is assumed.
    pub fn memory_limit(self) -> usize {
        match self {
            Platform::Spin => 512 << 20,
            Platform::WasmFunctions | Platform::FermyonCloud => 128 << 20,
        }
    }

    /// The key-value limits of a write.
    pub fn kv_limits(self) -> KvLimits {
        match self {
            Platform::Spin => KvLimits { max_key: None, max_value: None, max_keys: None },
            // Its keys may be 8 KiB; the store's own 255-byte check (every profile, `kv.rs`) is stricter.
            Platform::WasmFunctions => KvLimits { max_key: None, max_value: Some(ONE_MB), max_keys: None },
            Platform::FermyonCloud => KvLimits { max_key: Some(255), max_value: Some(ONE_MB), max_keys: Some(1024) },
        }
    }
}

/// What one key-value write may be on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, bytes.
    pub max_key: Option<usize>,
    /// Largest value, bytes.
    pub max_value: Option<usize>,
    /// Most keys in one store.
    pub max_keys: Option<usize>,
}

impl KvLimits {
    /// Refuses a key or value over the limits (the key count is checked by the caller, who
    /// knows whether the key is new).
    pub fn check_write(&self, key: &str, value_len: usize) -> Result<()> {
        if let Some(max) = self.max_key.filter(|max| key.len() > *max) {
            bail!("key of {} bytes exceeds this platform's {max}-byte limit", key.len());
        }
        if let Some(max) = self.max_value.filter(|max| value_len > *max) {
            bail!("value of {value_len} bytes exceeds this platform's {max}-byte limit");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_refused_by_interface_whatever_the_version() {
        assert!(Platform::Spin.check_import("c", "wasi:keyvalue/atomics@0.2.0-draft2").is_ok());
        let err = Platform::WasmFunctions.check_import("files", "wasi:keyvalue/atomics@0.2.0-draft2").unwrap_err();
        assert!(err.to_string().contains("wasi:keyvalue/atomics@0.2.0-draft2"), "{err}");
        assert!(Platform::WasmFunctions.check_import("c", "wasi:keyvalue/batch@0.2.0-draft2").is_ok());
        assert!(Platform::FermyonCloud.check_import("c", "wasi:keyvalue/batch@0.2.0-draft2").is_err());
        assert!(Platform::FermyonCloud.check_import("c", "wasi:keyvalue/store@0.2.0-draft2").is_ok());
    }

    #[test]
    fn chaining_grants_are_refused_only_on_cloud() {
        assert!(Platform::WasmFunctions.check_outbound_grant("g", "http://files.spin.internal").is_ok());
        assert!(Platform::FermyonCloud.check_outbound_grant("g", "http://files.spin.internal").is_err());
        assert!(Platform::FermyonCloud.check_outbound_grant("g", "https://s3.example.com").is_ok());
    }

    #[test]
    fn kv_writes_are_checked_against_key_and_value_limits() {
        let cloud = Platform::FermyonCloud.kv_limits();
        assert!(cloud.check_write(&"k".repeat(255), ONE_MB).is_ok());
        assert!(cloud.check_write(&"k".repeat(256), 1).is_err());
        assert!(cloud.check_write("k", ONE_MB + 1).is_err());
        assert!(Platform::Spin.kv_limits().check_write(&"k".repeat(10_000), 5 << 20).is_ok());
        assert_eq!(Platform::parse("fermyon-cloud").unwrap(), Platform::FermyonCloud);
        assert!(Platform::parse("aws").is_err());
    }
}

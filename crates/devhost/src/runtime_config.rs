//! Spin's runtime configuration file (`--runtime-config-file`), the parts this host supports:
//! key-value store backends and outbound network blocking.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed runtime config.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Store label → backend.
    pub key_value_stores: BTreeMap<String, KvBackendConfig>,
    /// `[outbound_networking] block_networks`.
    pub block_networks: Vec<String>,
}

/// Where a key-value store label lives.
#[derive(Debug, Clone, PartialEq)]
pub enum KvBackendConfig {
    /// Spin's SQLite store; `None` = the state dir's `sqlite_key_value.db`.
    Sqlite(Option<PathBuf>),
    /// A Redis server URL.
    Redis(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    key_value_store: BTreeMap<String, RawStore>,
    #[serde(default)]
    outbound_networking: Option<RawOutbound>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawStore {
    #[serde(rename = "spin")]
    Spin { path: Option<String> },
    #[serde(rename = "redis")]
    Redis { url: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    #[serde(default)]
    block_networks: Vec<String>,
}

impl RuntimeConfig {
    /// Reads a runtime config file; relative SQLite paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).with_context(|| format!("invalid runtime config {}", path.display()))
    }

    /// Parses runtime config text.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let raw: Raw = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut key_value_stores = BTreeMap::new();
        for (label, store) in raw.key_value_store {
            let backend = match store {
                RawStore::Spin { path } => KvBackendConfig::Sqlite(path.map(|p| dir.join(p))),
                RawStore::Redis { url } => {
                    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                        bail!("key_value_store.{label}: url {url:?} must start with redis://");
                    }
                    KvBackendConfig::Redis(url)
                }
            };
            key_value_stores.insert(label, backend);
        }
        Ok(RuntimeConfig {
            key_value_stores,
            block_networks: raw.outbound_networking.map(|o| o.block_networks).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spin_format() {
        let rc = RuntimeConfig::parse(
            r#"
[key_value_store.default]
type = "redis"
url = "redis://127.0.0.1:6379"
[key_value_store.cache]
type = "spin"
path = "cache.db"
[outbound_networking]
block_networks = ["private"]
"#,
            Path::new("/etc"),
        )
        .unwrap();
        assert_eq!(rc.key_value_stores["default"], KvBackendConfig::Redis("redis://127.0.0.1:6379".into()));
        assert_eq!(rc.key_value_stores["cache"], KvBackendConfig::Sqlite(Some("/etc/cache.db".into())));
        assert_eq!(rc.block_networks, vec!["private"]);
    }

    #[test]
    fn rejects_unsupported() {
        assert!(RuntimeConfig::parse("[sqlite_database.default]\ntype = \"spin\"", Path::new(".")).is_err());
        assert!(RuntimeConfig::parse("[key_value_store.x]\ntype = \"azure_cosmos\"", Path::new(".")).is_err());
        assert!(
            RuntimeConfig::parse("[key_value_store.x]\ntype = \"redis\"\nurl = \"http://x\"", Path::new(".")).is_err()
        );
    }
}

//! The app's key-value store, read and seeded directly (SQLite file or Redis).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::*;

/// The app's `default` store behind the host: the SQLite file (Spin's schema
/// `spin_key_value(store, key, value)`, which both hosts use) or the Redis server (plain keys,
/// as both hosts store them).
#[derive(Clone, Debug)]
pub enum KvStore {
    Sqlite(PathBuf),
    Redis(u16),
}

impl KvStore {
    fn sqlite(path: &Path) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.value_sizes().into_iter().map(|(k, _)| k).collect()
    }

    /// Every key with the size of its value, sorted by key.
    pub fn value_sizes(&self) -> Vec<(String, usize)> {
        match self {
            KvStore::Sqlite(path) => {
                let conn = KvStore::sqlite(path);
                let mut stmt = conn
                    .prepare("SELECT key, length(value) FROM spin_key_value WHERE store = 'default' ORDER BY key")
                    .unwrap();
                stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as usize)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            KvStore::Redis(port) => {
                let mut conn = RedisConn::open(*port);
                let keys = match conn.call(&[b"KEYS", b"*"]) {
                    RespValue::Array(Some(items)) => items
                        .into_iter()
                        .map(|v| match v {
                            RespValue::Bulk(Some(k)) => String::from_utf8_lossy(&k).into_owned(),
                            other => panic!("redis KEYS: unexpected item {other:?}"),
                        })
                        .collect::<Vec<_>>(),
                    other => panic!("redis KEYS: unexpected reply {other:?}"),
                };
                let mut out: Vec<(String, usize)> = keys
                    .into_iter()
                    .map(|k| match conn.call(&[b"STRLEN", k.as_bytes()]) {
                        RespValue::Int(n) => (k, n as usize),
                        other => panic!("redis STRLEN {k}: unexpected reply {other:?}"),
                    })
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            KvStore::Sqlite(path) => KvStore::sqlite(path)
                .query_row("SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1", [key], |row| {
                    row.get(0)
                })
                .ok(),
            KvStore::Redis(port) => match RedisConn::open(*port).call(&[b"GET", key.as_bytes()]) {
                RespValue::Bulk(value) => value,
                other => panic!("redis GET {key}: unexpected reply {other:?}"),
            },
        }
    }

    /// Redis's `connected_clients` (`INFO clients`); `None` for the SQLite store.
    pub fn redis_connected_clients(&self) -> Option<u64> {
        let KvStore::Redis(port) = self else { return None };
        let info = match RedisConn::open(*port).call(&[b"INFO", b"clients"]) {
            RespValue::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("redis INFO clients: unexpected reply {other:?}"),
        };
        let line = info.lines().find_map(|l| l.strip_prefix("connected_clients:"));
        Some(line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no connected_clients in {info:?}")))
    }

    /// Set `key` to `value` behind the app's back.
    pub fn set(&self, key: &str, value: &[u8]) {
        match self {
            KvStore::Sqlite(path) => {
                KvStore::sqlite(path)
                    .execute(
                        "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2) \
                         ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![key, value],
                    )
                    .unwrap_or_else(|e| panic!("sqlite set {key}: {e}"));
            }
            KvStore::Redis(port) => match RedisConn::open(*port).call(&[b"SET", key.as_bytes(), value]) {
                RespValue::Simple(ok) if ok == "OK" => {}
                other => panic!("redis SET {key}: unexpected reply {other:?}"),
            },
        }
    }
}

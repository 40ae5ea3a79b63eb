//! Key-value backends: Spin's SQLite store (same file format as `spin up`) and Redis.
//! Compare-and-swap and increment are atomic across concurrent instances; for Redis also across
//! processes (server-side script), for SQLite across processes too (`BEGIN IMMEDIATE`).

use anyhow::{anyhow, bail, Context, Result};
use redis::AsyncCommands;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest key a hosted Spin store accepts (Fermyon Cloud); enforced here so apps find out early.
pub const MAX_KEY_BYTES: usize = 255;
/// Largest value a hosted Spin store accepts (Fermyon Cloud).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

const SELECT: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                      ON CONFLICT (store, key) DO UPDATE SET value = excluded.value";

/// One opened store label.
#[derive(Clone)]
pub enum KvStore {
    /// A label inside a SQLite database (`spin_key_value(store, key, value)`).
    Sqlite { db: Arc<SqliteDb>, label: String },
    /// A Redis server.
    Redis(redis::aio::MultiplexedConnection),
}

/// A SQLite database file shared by every label configured to use it.
pub struct SqliteDb {
    conn: Mutex<Connection>,
}

impl SqliteDb {
    /// Opens (creating if needed) a database with Spin's schema.
    pub fn open(path: &Path) -> Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Values are up to 1 MiB (file chunks): large pages keep them off long overflow-page
        // chains. Only takes effect when the file is created; existing files keep theirs.
        conn.pragma_update(None, "page_size", 65536)?;
        // A development store, tuned for bulk 1 MiB writes. A rollback journal writes each new
        // page once (WAL writes it twice: log, then checkpoint), and without fsync every write
        // is still in the OS before `set` returns: the store survives the dev host being killed
        // (the journal rolls back a torn transaction on the next open), not a power cut.
        // Measured on the 2-core CI machine, 1 MiB values: WAL+NORMAL ~700 MB/s, WAL+OFF
        // ~1500 MB/s, PERSIST+OFF ~2800 MB/s. PERSIST keeps the journal file instead of
        // re-creating it per transaction; a WAL file left by an older dev host is folded back.
        conn.pragma_update(None, "journal_mode", "PERSIST")?;
        conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            );",
        )?;
        Ok(Arc::new(SqliteDb { conn: Mutex::new(conn) }))
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().map_err(|_| anyhow!("sqlite connection poisoned"))?;
            f(&mut conn).map_err(anyhow::Error::from)
        })
        .await?
    }
}

/// Connects to Redis, failing fast with a clear message.
pub async fn connect_redis(url: &str) -> Result<KvStore> {
    let client = redis::Client::open(url).with_context(|| format!("invalid redis url {url:?}"))?;
    let conn = tokio::time::timeout(std::time::Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| anyhow!("timed out connecting to redis at {url}"))?
        .with_context(|| format!("cannot connect to redis at {url}"))?;
    Ok(KvStore::Redis(conn))
}

fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        bail!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len());
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        bail!("value is {} bytes; the limit is {MAX_VALUE_BYTES}", value.len());
    }
    Ok(())
}

/// Server-side compare-and-swap: ARGV[1] = "1" if a value was observed, ARGV[2] = it,
/// ARGV[3] = the new value. Returns 1 when swapped.
const REDIS_CAS_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur == false or cur ~= ARGV[2] then return 0 end
elseif cur ~= false then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"#;

fn parse_counter(bytes: &[u8]) -> Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("value is not a decimal integer; cannot increment"))
}

impl KvStore {
    /// Reads a value.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>> {
        check_key(&key)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    c.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get::<_, Vec<u8>>(0)).optional()
                })
                .await
            }
            KvStore::Redis(conn) => Ok(conn.clone().get::<_, Option<Vec<u8>>>(key).await?),
        }
    }

    /// Writes a value.
    pub async fn set(&self, key: String, value: Vec<u8>) -> Result<()> {
        check_key(&key)?;
        check_value(&value)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| c.prepare_cached(UPSERT)?.execute(params![label, key, value]).map(drop)).await
            }
            KvStore::Redis(conn) => Ok(conn.clone().set::<_, _, ()>(key, value).await?),
        }
    }

    /// Writes several values in one transaction (SQLite) or one `MSET` (Redis): a bulk writer
    /// pays for one commit, not one per value.
    pub async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        for (key, value) in &entries {
            check_key(key)?;
            check_value(value)?;
        }
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    {
                        let mut upsert = tx.prepare_cached(UPSERT)?;
                        for (key, value) in entries {
                            upsert.execute(params![label, key, value])?;
                        }
                    }
                    tx.commit()
                })
                .await
            }
            KvStore::Redis(conn) => match entries.as_slice() {
                [] => Ok(()),
                pairs => Ok(conn.clone().mset::<_, _, ()>(pairs).await?),
            },
        }
    }

    /// Deletes a key (absent keys are fine).
    pub async fn delete(&self, key: String) -> Result<()> {
        check_key(&key)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    c.execute("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2", params![label, key]).map(drop)
                })
                .await
            }
            KvStore::Redis(conn) => Ok(conn.clone().del::<_, ()>(key).await?),
        }
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: String) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// Every key in the store.
    pub async fn keys(&self) -> Result<Vec<String>> {
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    let mut stmt = c.prepare("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?;
                    let rows = stmt.query_map(params![label], |r| r.get::<_, String>(0))?;
                    rows.collect()
                })
                .await
            }
            KvStore::Redis(conn) => {
                let mut keys: Vec<String> = conn.clone().keys("*").await?;
                keys.sort();
                Ok(keys)
            }
        }
    }

    /// Adds `delta` to a decimal counter (absent = 0) atomically and returns the new value.
    pub async fn increment(&self, key: String, delta: i64) -> Result<i64> {
        check_key(&key)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                let db = db.clone();
                tokio::task::spawn_blocking(move || -> Result<i64> {
                    let mut conn = db.conn.lock().map_err(|_| anyhow!("sqlite connection poisoned"))?;
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let current: Option<Vec<u8>> =
                        tx.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get(0)).optional()?;
                    let current = current.as_deref().map(parse_counter).transpose()?.unwrap_or(0);
                    let next = current.checked_add(delta).ok_or_else(|| anyhow!("counter overflow"))?;
                    tx.prepare_cached(UPSERT)?.execute(params![label, key, next.to_string().into_bytes()])?;
                    tx.commit()?;
                    Ok(next)
                })
                .await?
            }
            KvStore::Redis(conn) => Ok(conn.clone().incr::<_, _, i64>(key, delta).await?),
        }
    }

    /// Sets `key` to `new` only if its value is still `expected` (`None` = absent).
    /// Returns whether the swap happened.
    pub async fn compare_and_swap(&self, key: String, expected: Option<Vec<u8>>, new: Vec<u8>) -> Result<bool> {
        check_key(&key)?;
        check_value(&new)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                let db = db.clone();
                tokio::task::spawn_blocking(move || -> Result<bool> {
                    let mut conn = db.conn.lock().map_err(|_| anyhow!("sqlite connection poisoned"))?;
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let current: Option<Vec<u8>> =
                        tx.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get(0)).optional()?;
                    if current != expected {
                        return Ok(false);
                    }
                    tx.prepare_cached(UPSERT)?.execute(params![label, key, new])?;
                    tx.commit()?;
                    Ok(true)
                })
                .await?
            }
            KvStore::Redis(conn) => {
                let (flag, observed) = match expected {
                    Some(v) => ("1", v),
                    None => ("0", Vec::new()),
                };
                let swapped: i64 = redis::Script::new(REDIS_CAS_SCRIPT)
                    .key(key)
                    .arg(flag)
                    .arg(observed)
                    .arg(new)
                    .invoke_async(&mut conn.clone())
                    .await?;
                Ok(swapped == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_round_trip_and_atomics() {
        let dir = std::env::temp_dir().join(format!("devhost-kv-{}", std::process::id()));
        let db = SqliteDb::open(&dir.join("kv.db")).unwrap();
        let a = KvStore::Sqlite { db: db.clone(), label: "default".into() };
        let b = KvStore::Sqlite { db, label: "other".into() };
        a.set("k".into(), b"v".to_vec()).await.unwrap();
        assert_eq!(a.get("k".into()).await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(b.get("k".into()).await.unwrap(), None, "labels are separate namespaces");
        assert!(!a.compare_and_swap("k".into(), Some(b"x".to_vec()), b"y".to_vec()).await.unwrap());
        assert!(a.compare_and_swap("k".into(), Some(b"v".to_vec()), b"y".to_vec()).await.unwrap());
        assert!(a.compare_and_swap("new".into(), None, b"1".to_vec()).await.unwrap());
        assert!(!a.compare_and_swap("new".into(), None, b"2".to_vec()).await.unwrap());
        assert_eq!(a.increment("n".into(), 5).await.unwrap(), 5);
        assert_eq!(a.increment("n".into(), -2).await.unwrap(), 3);
        assert!(a.increment("k".into(), 1).await.is_err(), "non-numeric value");
        assert_eq!(a.keys().await.unwrap(), vec!["k", "n", "new"]);
        a.set_many(vec![("m1".into(), b"1".to_vec()), ("m2".into(), b"2".to_vec())]).await.unwrap();
        assert_eq!(a.get("m2".into()).await.unwrap(), Some(b"2".to_vec()));
        assert!(a.set_many(vec![("ok".into(), vec![]), ("y".repeat(256), vec![])]).await.is_err());
        assert_eq!(a.get("ok".into()).await.unwrap(), None, "checked before anything is written");
        a.delete("m1".into()).await.unwrap();
        a.delete("m2".into()).await.unwrap();
        a.delete("k".into()).await.unwrap();
        assert!(!a.exists("k".into()).await.unwrap());
        assert!(a.set("x".repeat(256), vec![]).await.is_err());
        assert!(a.set("big".into(), vec![0; MAX_VALUE_BYTES + 1]).await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}

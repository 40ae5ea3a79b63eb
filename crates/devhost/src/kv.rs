//! Key-value backends as Spin 4.0.2 implements them: its SQLite store (same file format as
//! `spin up`, `crates/key-value-spin`) and Redis (`crates/key-value-redis`).
//!
//! The dev host must never be kinder than Spin, so each call behaves as Spin's does, bugs
//! included (the README's "Differences" list names them):
//!
//! | call | SQLite (Spin) | Redis (Spin) |
//! |---|---|---|
//! | `increment` | counter = 8-byte little-endian `i64`; any other value **panics the host** while it holds the store's lock, so every later call fails until restart | `INCRBY` (decimal text) |
//! | cas `current` | reads and remembers the value | `WATCH key` + `GET` on the ticket's own connection |
//! | cas `swap` | remembered `Some(old)`: `UPDATE … WHERE value = old` (no row changed = `cas-failed`); remembered `None`: **unconditional upsert**, reported as success | `MULTI`/`SET`/`EXEC` (aborted if the key changed since `WATCH`), then `UNWATCH key`, which Redis rejects: **always `cas-failed`**, whether or not the value was written |
//! | after `cas-failed` | a new ticket whose `current` was already read | same (a new connection, `WATCH`ed) |
//! | `get-many` | found keys only, absent ones omitted | `KEYS k1 k2 …` (keys as patterns): fails or returns garbage |
//! | `set-many` / `delete-many` | one transaction / one `DELETE` | `MSET` / one `DEL` |
//! | `list-keys` | every key of the label, one page, unordered | `KEYS *`: the whole database (labels share it) |
//!
//! Hosted limits (keys ≤ 255 bytes, values ≤ 1 MiB) are enforced on top, so apps find out early.

use anyhow::{anyhow, bail, Context, Result};
use redis::AsyncCommands;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest key a hosted Spin store accepts (Fermyon Cloud); enforced here so apps find out early.
pub const MAX_KEY_BYTES: usize = 255;
/// Largest value a hosted Spin store accepts (Fermyon Cloud).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

const SELECT: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                      ON CONFLICT (store, key) DO UPDATE SET value = excluded.value";
const UPDATE_IF: &str = "UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3";

/// Where Spin itself would have panicked inside a host call. The caller traps the instance
/// (the guest sees its request fail), as Spin's would.
#[derive(Debug)]
pub struct HostPanic(pub String);

impl std::fmt::Display for HostPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host panic (as Spin 4.0.2 would): {}", self.0)
    }
}

impl std::error::Error for HostPanic {}

/// One opened store label.
#[derive(Clone)]
pub enum KvStore {
    /// A label inside a SQLite database (`spin_key_value(store, key, value)`).
    Sqlite { db: Arc<SqliteDb>, label: String },
    /// A Redis server; compare-and-swap tickets open their own connections from `client`.
    Redis { client: redis::Client, conn: redis::aio::MultiplexedConnection },
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

    /// Runs `f` on the connection in a blocking thread. A panic inside `f` poisons the lock, so
    /// every later call fails with [`HostPanic`] — as Spin's `lock().unwrap()` does.
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.clone();
        match tokio::task::spawn_blocking(move || f(&mut *db.lock()?)).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => Err(HostPanic(panic_text(join.into_panic())).into()),
            Err(join) => Err(anyhow!("sqlite task: {join}")),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| {
            HostPanic("the SQLite store's connection lock is poisoned by an earlier panic; restart the host".into())
                .into()
        })
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Connects to Redis, failing fast with a clear message.
pub async fn connect_redis(url: &str) -> Result<KvStore> {
    let client = redis::Client::open(url).with_context(|| format!("invalid redis url {url:?}"))?;
    let conn = redis_connection(&client).await.with_context(|| format!("cannot connect to redis at {url}"))?;
    Ok(KvStore::Redis { client, conn })
}

async fn redis_connection(client: &redis::Client) -> Result<redis::aio::MultiplexedConnection> {
    tokio::time::timeout(std::time::Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| anyhow!("timed out connecting to redis"))?
        .map_err(anyhow::Error::from)
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

/// Spin's SQLite counter: exactly 8 little-endian bytes. Spin `expect`s that, so anything else
/// is a panic, not an error.
fn sqlite_counter(value: Vec<u8>) -> i64 {
    let bytes: [u8; 8] = match value.try_into() {
        Ok(bytes) => bytes,
        Err(value) => panic!("incorrect length: {value:?} (Spin 4.0.2 key-value-spin store.rs: increment)"),
    };
    i64::from_le_bytes(bytes)
}

impl KvStore {
    /// Reads a value.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>> {
        check_key(&key)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    Ok(c.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get(0)).optional()?)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().get::<_, Option<Vec<u8>>>(key).await?),
        }
    }

    /// Writes a value.
    pub async fn set(&self, key: String, value: Vec<u8>) -> Result<()> {
        check_key(&key)?;
        check_value(&value)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| Ok(c.prepare_cached(UPSERT)?.execute(params![label, key, value]).map(drop)?)).await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().set::<_, _, ()>(key, value).await?),
        }
    }

    /// Writes several values in one transaction (SQLite) or one `MSET` (Redis).
    pub async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        for (key, value) in &entries {
            check_key(key)?;
            check_value(value)?;
        }
        if entries.is_empty() {
            return Ok(());
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
                    Ok(tx.commit()?)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().mset::<_, _, ()>(&entries).await?),
        }
    }

    /// Spin's `get-many`: SQLite returns the keys that exist (absent ones are left out);
    /// Redis sends `KEYS` with the keys as patterns, which fails for more than one key and
    /// returns key names, not values, for one.
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        for key in &keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    let mut found = Vec::new();
                    let mut select = c.prepare_cached(SELECT)?;
                    for key in keys {
                        if let Some(value) = select.query_row(params![label, key], |r| r.get(0)).optional()? {
                            found.push((key, Some(value)));
                        }
                    }
                    Ok(found)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().keys::<_, Vec<(String, Option<Vec<u8>>)>>(keys).await?),
        }
    }

    /// Deletes a key (absent keys are fine).
    pub async fn delete(&self, key: String) -> Result<()> {
        self.delete_many(vec![key]).await
    }

    /// Deletes keys with one statement (SQLite) or one `DEL` (Redis).
    pub async fn delete_many(&self, keys: Vec<String>) -> Result<()> {
        for key in &keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    let tx = c.transaction()?;
                    {
                        let mut delete =
                            tx.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
                        for key in keys {
                            delete.execute(params![label, key])?;
                        }
                    }
                    Ok(tx.commit()?)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().del::<_, ()>(keys).await?),
        }
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: String) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// Every key of the label (SQLite), or of the whole database (Redis), in no defined order.
    pub async fn keys(&self) -> Result<Vec<String>> {
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    let mut stmt = c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
                    let rows = stmt.query_map(params![label], |r| r.get::<_, String>(0))?;
                    Ok(rows.collect::<rusqlite::Result<_>>()?)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().keys("*").await?),
        }
    }

    /// Adds `delta` to a counter (absent = 0) atomically and returns the new value. SQLite
    /// keeps it as 8 little-endian bytes and panics on anything else; Redis is `INCRBY`.
    pub async fn increment(&self, key: String, delta: i64) -> Result<i64> {
        check_key(&key)?;
        match self {
            KvStore::Sqlite { db, label } => {
                let label = label.clone();
                db.with(move |c| {
                    // IMMEDIATE: atomic across processes sharing the file, too (Spin's lock is
                    // per process; the dev host's tests run several hosts on one file).
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let current: Option<Vec<u8>> =
                        tx.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get(0)).optional()?;
                    // Spin adds without an overflow check (a debug build would panic, a release
                    // build wraps); wrap as its release build does.
                    let next = current.map_or(0, sqlite_counter).wrapping_add(delta);
                    tx.prepare_cached(UPSERT)?.execute(params![label, key, next.to_le_bytes().to_vec()])?;
                    tx.commit()?;
                    Ok(next)
                })
                .await
            }
            KvStore::Redis { conn, .. } => Ok(conn.clone().incr::<_, _, i64>(key, delta).await?),
        }
    }

    /// A compare-and-swap ticket for `key` (Spin's `new_compare_and_swap`: nothing is read yet).
    pub async fn new_cas(&self, key: String) -> Result<CasTicket> {
        check_key(&key)?;
        Ok(match self {
            KvStore::Sqlite { db, label } => {
                CasTicket::Sqlite { db: db.clone(), label: label.clone(), key, observed: None }
            }
            KvStore::Redis { client, .. } => {
                CasTicket::Redis { conn: redis_connection(client).await.context("compare-and-swap connection")?, key }
            }
        })
    }
}

/// What a swap reported (not necessarily what happened: see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapReport {
    /// `swap` returned success.
    Swapped,
    /// `swap` returned `cas-failed`.
    CasFailed,
}

/// One compare-and-swap in progress, as Spin keeps it.
pub enum CasTicket {
    /// Remembers what `current` read; `swap` is conditional on it only if it found a value.
    Sqlite { db: Arc<SqliteDb>, label: String, key: String, observed: Option<Vec<u8>> },
    /// Its own connection, on which `current` has `WATCH`ed the key.
    Redis { conn: redis::aio::MultiplexedConnection, key: String },
}

impl CasTicket {
    /// The key this ticket swaps.
    pub fn key(&self) -> &str {
        match self {
            CasTicket::Sqlite { key, .. } | CasTicket::Redis { key, .. } => key,
        }
    }

    /// Reads the current value (and, on Redis, starts watching the key).
    pub async fn current(&mut self) -> Result<Option<Vec<u8>>> {
        match self {
            CasTicket::Sqlite { db, label, key, observed } => {
                let (label, key) = (label.clone(), key.clone());
                let value: Option<Vec<u8>> = db
                    .with(move |c| {
                        Ok(c.prepare_cached(SELECT)?.query_row(params![label, key], |r| r.get(0)).optional()?)
                    })
                    .await?;
                observed.clone_from(&value);
                Ok(value)
            }
            CasTicket::Redis { conn, key } => {
                redis::cmd("WATCH").arg(&*key).exec_async(conn).await?;
                Ok(conn.get::<_, Option<Vec<u8>>>(&*key).await?)
            }
        }
    }

    /// Spin's `swap`; see the module docs for what each backend reports.
    pub async fn swap(&mut self, value: Vec<u8>) -> Result<SwapReport> {
        check_value(&value)?;
        match self {
            CasTicket::Sqlite { db, label, key, observed } => {
                let (label, key, observed) = (label.clone(), key.clone(), observed.clone());
                let rows = db
                    .with(move |c| {
                        Ok(match observed {
                            Some(old) => c.prepare_cached(UPDATE_IF)?.execute(params![label, key, old, value])?,
                            None => {
                                let tx = c.transaction()?;
                                let rows = tx.prepare_cached(UPSERT)?.execute(params![label, key, value])?;
                                tx.commit()?;
                                rows
                            }
                        })
                    })
                    .await?;
                Ok(if rows == 1 { SwapReport::Swapped } else { SwapReport::CasFailed })
            }
            CasTicket::Redis { conn, key } => {
                // Spin ignores EXEC's answer (an aborted transaction parses as success too)...
                let _: redis::Value = redis::pipe().atomic().set(&*key, value).query_async(conn).await?;
                // ...and then sends `UNWATCH key`, which Redis refuses ("wrong number of
                // arguments"); Spin turns that refusal into `cas-failed`.
                match redis::cmd("UNWATCH").arg(&*key).exec_async(conn).await {
                    Ok(()) => Ok(SwapReport::Swapped),
                    Err(_) => Ok(SwapReport::CasFailed),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> (std::path::PathBuf, Arc<SqliteDb>) {
        let dir = std::env::temp_dir().join(format!("devhost-kv-{name}-{}", std::process::id()));
        let db = SqliteDb::open(&dir.join("kv.db")).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn sqlite_round_trip_batches_and_limits() {
        let (dir, db) = temp_db("basic");
        let a = KvStore::Sqlite { db: db.clone(), label: "default".into() };
        let b = KvStore::Sqlite { db, label: "other".into() };
        a.set("k".into(), b"v".to_vec()).await.unwrap();
        assert_eq!(a.get("k".into()).await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(b.get("k".into()).await.unwrap(), None, "labels are separate namespaces");
        a.set_many(vec![("m1".into(), b"1".to_vec()), ("m2".into(), b"2".to_vec())]).await.unwrap();
        assert_eq!(a.get("m2".into()).await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            a.get_many(vec!["m1".into(), "absent".into(), "m2".into()]).await.unwrap(),
            vec![("m1".into(), Some(b"1".to_vec())), ("m2".into(), Some(b"2".to_vec()))],
            "absent keys are left out, as Spin's rarray query does"
        );
        let mut keys = a.keys().await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["k", "m1", "m2"]);
        assert!(a.set_many(vec![("ok".into(), vec![]), ("y".repeat(256), vec![])]).await.is_err());
        assert_eq!(a.get("ok".into()).await.unwrap(), None, "checked before anything is written");
        a.delete_many(vec!["m1".into(), "m2".into(), "never".into()]).await.unwrap();
        a.delete("k".into()).await.unwrap();
        assert!(!a.exists("k".into()).await.unwrap());
        assert!(a.set("x".repeat(256), vec![]).await.is_err());
        assert!(a.set("big".into(), vec![0; MAX_VALUE_BYTES + 1]).await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn sqlite_counters_are_little_endian_and_text_panics_the_store() {
        let (dir, db) = temp_db("counter");
        let a = KvStore::Sqlite { db, label: "default".into() };
        assert_eq!(a.increment("n".into(), 5).await.unwrap(), 5);
        assert_eq!(a.increment("n".into(), -2).await.unwrap(), 3);
        assert_eq!(a.get("n".into()).await.unwrap(), Some(3i64.to_le_bytes().to_vec()), "Spin's encoding");
        a.set("text".into(), b"3000".to_vec()).await.unwrap();
        let err = a.increment("text".into(), 1).await.unwrap_err();
        assert!(err.downcast_ref::<HostPanic>().is_some(), "{err:#}");
        let after = a.get("n".into()).await.unwrap_err();
        assert!(after.downcast_ref::<HostPanic>().is_some(), "the store stays broken: {after:#}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn sqlite_swap_is_conditional_only_on_a_value_it_saw() {
        let (dir, db) = temp_db("cas");
        let a = KvStore::Sqlite { db, label: "default".into() };
        a.set("k".into(), b"v".to_vec()).await.unwrap();
        let mut cas = a.new_cas("k".into()).await.unwrap();
        assert_eq!(cas.current().await.unwrap(), Some(b"v".to_vec()));
        a.set("k".into(), b"other".to_vec()).await.unwrap();
        assert_eq!(cas.swap(b"mine".to_vec()).await.unwrap(), SwapReport::CasFailed);
        assert_eq!(a.get("k".into()).await.unwrap(), Some(b"other".to_vec()));

        let mut cas = a.new_cas("new".into()).await.unwrap();
        assert_eq!(cas.current().await.unwrap(), None);
        a.set("new".into(), b"theirs".to_vec()).await.unwrap();
        assert_eq!(cas.swap(b"mine".to_vec()).await.unwrap(), SwapReport::Swapped, "absent: an upsert");
        assert_eq!(a.get("new".into()).await.unwrap(), Some(b"mine".to_vec()), "theirs was overwritten");
        std::fs::remove_dir_all(dir).ok();
    }
}

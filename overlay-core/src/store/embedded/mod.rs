//! The embedded store (`file://` URLs): one SQLite file that every process on the host can open
//! at once (the CLI and a running agent do), the default when no cluster store is given.
//!
//! # Why SQLite
//!
//! Two engines on this machine let several processes share one file: SQLite in WAL mode and redb
//! (≥ 4.5, `MultiWriter`). SQLite was chosen because its multi-process locking and crash
//! recovery have decades of use behind them (redb's multi-writer mode is new), readers never
//! block the writer nor each other, `busy_timeout` gives exactly the "wait at most the URL's
//! timeout" rule, SQL makes prefix ranges, the lease sweep and log replay simple, and an
//! operator can inspect the file with the `sqlite3` shell. Neither engine tells other processes
//! about a change, so both would need the change log and poller below.
//!
//! # Layout
//!
//! * `kv(key, value, version, lease)`: keys are stored as `<prefix>/<key>`, so stores with
//!   different prefixes can share a file; the API sees keys relative to its prefix.
//! * `log(id, rev, key, value, deleted)`: every change, read by watchers in every process. The
//!   current revision is the `rev` of its last row.
//! * `meta`: the compacted revision (history at or below it is gone) and the schema version.
//! * `leases(id, expires_ms, owner)`: one per client holding ephemeral keys.
//!
//! Every write transaction (`BEGIN IMMEDIATE`, waiting at most the URL's `timeout` for the
//! file's write lock) bumps the revision once; a key's version is the revision of its last
//! write (like etcd's mod_revision), so get, list and watch agree, and a delete's version is
//! above every version the key had. Conditions (create, compare-and-swap, compare-and-delete,
//! transactions) are checked inside that transaction, so a failed one writes nothing. A list and
//! the revision it returns are read in one read transaction.
//!
//! Ephemeral keys are bound to a lease that the client renews every TTL/3 (URL option `ttl`,
//! default 10 s); every open store sweeps expired leases, so the keys of a killed owner go
//! within the TTL plus a sweep period (a tenth of the TTL, at most 250 ms). Lease expiry uses the
//! wall clock all processes share: a clock jumping forward by more than the TTL expires leases
//! early, and their owners then re-create them.
//!
//! # Threads
//!
//! SQLite calls block, so none runs on a tokio worker: each open store has a worker thread
//! owning the connection API calls run on, and a background thread with a second connection
//! that polls the change log for this store's watchers (at once when any process commits,
//! woken by inotify on the write-ahead log, and every 10 ms while there are watchers in case
//! inotify is unavailable), renews its lease every TTL/3, sweeps expired leases of every
//! client and compacts the log to its last 10,000 rows. Dropping the store without
//! [`KvStore::close`] closes it on the worker thread, without blocking the dropper.

mod background;
mod fork;
mod hub;
mod lease;
mod notify;
mod schema;
mod scope;
mod tx;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use self::background::{Msg, Registration, Tuning};
use self::scope::Keys;
use self::worker::{Job, Outcome, Worker, closed};
use super::{
    Backend, Capabilities, KeyValue, KvStore, Listing, Scheme, StoreUrl, TxnOp, TxnResult, Version,
    Watch, validate_key, validate_prefix,
};
use crate::error::{Error, ErrorKind, Result};

/// Largest value the embedded store accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 4 << 20;

/// Most operations in one transaction.
pub const MAX_TXN_OPS: usize = 128;

/// A client of an embedded store file. See the [module docs](self).
pub struct EmbeddedStore {
    jobs: Sender<Job>,
    bg: Sender<Msg>,
    keys: Keys,
    closed: AtomicBool,
    path: PathBuf,
    prefix: String,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if absent) the store file a `file://` URL names. Its directory must
    /// exist; a file that is not an overlay store is refused without being changed.
    pub async fn open(url: &StoreUrl) -> Result<Self> {
        let tuning = Tuning::for_ttl(url.options.ttl);
        Self::open_tuned(url, tuning).await
    }

    async fn open_tuned(url: &StoreUrl, tuning: Tuning) -> Result<Self> {
        if url.scheme != Scheme::File {
            return Err(Error::invalid(
                "open embedded store",
                format!("{url} is not a file:// URL"),
            )
            .with_hint("use store::connect, which picks the backend from the scheme"));
        }
        let url = url.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&url, tuning))
            .await
            .map_err(|e| {
                Error::internal(
                    "open embedded store",
                    format!("the opening task failed: {e}"),
                )
            })?
    }

    fn open_blocking(url: &StoreUrl, tuning: Tuning) -> Result<Self> {
        let path = url.path.clone().ok_or_else(|| {
            Error::invalid("open embedded store", format!("{url} names no file"))
                .with_hint("write file:///PATH/TO/store.db")
        })?;
        let (timeout, ttl) = (url.options.timeout, url.options.ttl);
        let stretch = fork::Stretch::begin();
        let main = schema::open(&path, timeout)?;
        let mut side = schema::open(&path, timeout)?;
        let keys = Keys::new(&url.prefix);
        let hub = hub::Hub::new(&mut side, keys.clone()).map_err(|e| {
            schema::sql_error("open embedded store", "cannot read the change log", e)
        })?;
        drop(stretch);
        let lessee = Arc::new(lease::Lessee::new(ttl));
        let spawn_failed =
            |e| Error::io("open embedded store", "cannot start the store's threads", e);
        let (bg_tx, bg_rx) = std::sync::mpsc::channel();
        let flags = Arc::new(notify::Flags::default());
        let bg = background::Background {
            conn: side,
            hub,
            lessee: lessee.clone(),
            ttl,
            tuning,
            flags: flags.clone(),
            last_warn: None,
        };
        let handle = background::spawn(bg, bg_rx).map_err(spawn_failed)?;
        notify::spawn(&path, bg_tx.clone(), flags);
        let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
        let worker = Worker::new(main, keys.clone(), lessee, (bg_tx.clone(), handle));
        std::thread::Builder::new()
            .name("overlay-store".into())
            .spawn(move || worker.run(&job_rx))
            .map_err(spawn_failed)?;
        Ok(EmbeddedStore {
            jobs,
            bg: bg_tx,
            keys,
            closed: AtomicBool::new(false),
            path,
            prefix: url.prefix.clone(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key prefix of this client.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `f` on the worker thread.
    async fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed(op));
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w: &mut Worker| {
            let _ = tx.send(f(w));
        });
        self.jobs.send(job).map_err(|_| closed(op))?;
        rx.await.map_err(|_| closed(op))?
    }

    async fn write(&self, op: &'static str, o: TxnOp) -> Result<Outcome> {
        let outcomes = self
            .call(op, move |w| w.apply(op, std::slice::from_ref(&o)))
            .await?;
        outcomes
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal(op, "the write transaction reported no outcome"))
    }
}

fn check_value(op: &'static str, key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(
            op,
            format!(
                "the value for key {key:?} is {} bytes, over the limit of {MAX_VALUE_LEN}",
                value.len()
            ),
        )
        .with_hint("store large data elsewhere and keep a reference in the store"));
    }
    Ok(())
}

fn written(op: &'static str, o: Outcome) -> Result<Version> {
    match o {
        Outcome::Written(v) => Ok(v),
        other => Err(Error::internal(op, format!("a write reported {other:?}"))),
    }
}

/// Checks a transaction before any I/O: size, keys, values, no key twice.
fn check_txn(ops: &[TxnOp]) -> Result<()> {
    const OP: &str = "store txn";
    if ops.len() > MAX_TXN_OPS {
        return Err(Error::invalid(
            OP,
            format!(
                "the transaction has {} operations, over the limit of {MAX_TXN_OPS}",
                ops.len()
            ),
        )
        .with_hint("split it into smaller transactions"));
    }
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    let mut total = 0usize;
    for o in ops {
        let key = o.key();
        validate_key(key)?;
        if let TxnOp::Create { value, .. }
        | TxnOp::Put { value, .. }
        | TxnOp::Update { value, .. } = o
        {
            check_value(OP, key, value)?;
            // One write transaction holds all its values in memory at once.
            total += value.len();
            if total > MAX_VALUE_LEN {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "the transaction's values add up to more than the limit of \
                         {MAX_VALUE_LEN} bytes"
                    ),
                )
                .with_hint("split it into smaller transactions"));
            }
        }
        if !seen.insert(key) {
            return Err(Error::invalid(
                OP,
                format!("key {key:?} appears twice in the transaction"),
            )
            .with_hint("give each key at most one operation"));
        }
    }
    Ok(())
}

#[async_trait]
impl KvStore for EmbeddedStore {
    fn backend(&self) -> Backend {
        Backend::Embedded
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            watch_replay: true,
            max_value_len: MAX_VALUE_LEN,
            max_txn_ops: MAX_TXN_OPS,
            current_reads: true,
        }
    }

    /// Reads are current already (`current_reads`).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let key = key.to_string();
        self.call("store get", move |w| w.get(&key)).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        const OP: &str = "store put";
        validate_key(key)?;
        check_value(OP, key, value)?;
        let o = TxnOp::Put {
            key: key.into(),
            value: value.into(),
        };
        written(OP, self.write(OP, o).await?)
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        const OP: &str = "store create";
        validate_key(key)?;
        check_value(OP, key, value)?;
        let o = TxnOp::Create {
            key: key.into(),
            value: value.into(),
        };
        written(OP, self.write(OP, o).await?)
    }

    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        const OP: &str = "store compare-and-swap";
        validate_key(key)?;
        check_value(OP, key, value)?;
        let o = TxnOp::Update {
            key: key.into(),
            value: value.into(),
            version,
        };
        written(OP, self.write(OP, o).await?)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        const OP: &str = "store delete";
        validate_key(key)?;
        match self.write(OP, TxnOp::Delete { key: key.into() }).await? {
            Outcome::Deleted(existed) => Ok(existed),
            other => Err(Error::internal(OP, format!("a delete reported {other:?}"))),
        }
    }

    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        const OP: &str = "store compare-and-delete";
        validate_key(key)?;
        self.write(
            OP,
            TxnOp::DeleteIf {
                key: key.into(),
                version,
            },
        )
        .await
        .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_string();
        self.call("store list", move |w| w.list(&prefix)).await
    }

    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        const OP: &str = "store txn";
        check_txn(ops)?;
        if ops.is_empty() {
            return Ok(TxnResult {
                versions: Vec::new(),
            });
        }
        let ops = ops.to_vec();
        let outcomes = self.call(OP, move |w| w.apply(OP, &ops)).await?;
        let versions = outcomes
            .into_iter()
            .map(|o| match o {
                Outcome::Written(v) => Some(v),
                Outcome::Deleted(_) | Outcome::Checked => None,
            })
            .collect();
        Ok(TxnResult { versions })
    }

    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        const OP: &str = "store watch";
        validate_prefix(prefix)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed(OP));
        }
        let (tx, rx) = mpsc::channel(hub::CHANNEL);
        let (ack, acked) = oneshot::channel();
        let scope = self.keys.scope(prefix);
        self.bg
            .send(Msg::Register(Registration {
                scope,
                from,
                tx,
                ack,
            }))
            .map_err(|_| closed(OP))?;
        acked.await.map_err(|_| closed(OP))??;
        Ok(Watch::new(rx, None))
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        const OP: &str = "store put_ephemeral";
        validate_key(key)?;
        check_value(OP, key, value)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.call(OP, move |w| w.put_ephemeral(&key, &value, false))
            .await
    }

    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        const OP: &str = "store create_ephemeral";
        validate_key(key)?;
        check_value(OP, key, value)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.call(OP, move |w| w.put_ephemeral(&key, &value, true))
            .await
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w: &mut Worker| w.close_then_answer(tx));
        if self.jobs.send(job).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Internal,
                "store close",
                "the store's worker thread died",
            ))
        })
    }
}

#[cfg(test)]
mod tests;

//! The worker thread of an open store: it owns the connection every API call runs on, so
//! SQLite's blocking calls never run on a tokio worker. Calls reach it as jobs over a channel and
//! answer through a oneshot.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::background::Msg;
use super::fork::Stretch;
use super::lease::{LeaseError, Lessee};
use super::schema::sql_error;
use super::scope::Keys;
use super::tx::{self, WriteTx};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{KeyValue, Listing, TxnOp};

/// Work for the worker thread.
pub(super) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// What one op of [`Worker::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Wrote the key at this version.
    Written(u64),
    /// Deleted the key, or found it absent (`false`).
    Deleted(bool),
    /// Checked a condition only.
    Checked,
}

/// The state the worker thread owns.
pub(super) struct Worker {
    conn: Connection,
    keys: Keys,
    lessee: Arc<Lessee>,
    bg: Option<(Sender<Msg>, JoinHandle<()>)>,
    done: bool,
    /// The stretch of SQLite work of the job under way (see [`super::fork`]).
    stretch: Option<Stretch>,
    /// A close's answer, sent once the connection is closed.
    answer: Option<(oneshot::Sender<Result<()>>, Result<()>)>,
}

impl Worker {
    pub(super) fn new(
        conn: Connection,
        keys: Keys,
        lessee: Arc<Lessee>,
        bg: (Sender<Msg>, JoinHandle<()>),
    ) -> Self {
        Worker {
            conn,
            keys,
            lessee,
            bg: Some(bg),
            done: false,
            stretch: None,
            answer: None,
        }
    }

    /// Runs jobs until the store closes or is dropped; a dropped store is closed here, off the
    /// thread that dropped it.
    pub(super) fn run(mut self, rx: &Receiver<Job>) {
        while !self.done {
            match rx.recv() {
                Ok(job) => {
                    self.stretch = Some(Stretch::begin());
                    job(&mut self);
                    self.stretch = None;
                }
                Err(_) => {
                    if let Err(e) = self.shutdown() {
                        tracing::warn!(error = %e, "closing a dropped embedded store");
                    }
                }
            }
        }
        // A close is answered only once the connection is closed (its last checkpoint written,
        // its WAL file removed): when `close` returns, no thread of this store touches the
        // store's files any more.
        let answer = self.answer.take();
        {
            let _stretch = Stretch::begin();
            drop(self);
        }
        if let Some((tx, result)) = answer {
            let _ = tx.send(result);
        }
    }

    /// Closes the store, and has [`run`](Self::run) answer `tx` once the connection is closed.
    pub(super) fn close_then_answer(&mut self, tx: oneshot::Sender<Result<()>>) {
        let result = self.shutdown();
        self.answer = Some((tx, result));
    }

    /// Tells the background thread to poll now, so local watchers see a write at once.
    fn wake(&self) {
        if let Some((bg, _)) = &self.bg {
            let _ = bg.send(Msg::Wake);
        }
    }

    /// Deletes this client's ephemeral keys and lease, lets the background thread deliver the
    /// last events and waits for it to exit. The worker stops after this job.
    pub(super) fn shutdown(&mut self) -> Result<()> {
        self.done = true;
        let stretch = self.stretch.take().unwrap_or_else(Stretch::begin);
        let released = self.lessee.release(&mut self.conn).map_err(|e| {
            sql_error(
                "store close",
                "cannot delete this client's ephemeral keys",
                e,
            )
        });
        // Out of the stretch before waiting for the background thread: it may be waiting to
        // begin one of its own while a fork waits for this one to end.
        drop(stretch);
        if let Some((bg, handle)) = self.bg.take() {
            let _ = bg.send(Msg::Stop);
            if handle.join().is_err() {
                tracing::error!("the embedded store's background thread panicked");
            }
        }
        released
    }

    /// The value and version of API key `key`.
    pub(super) fn get(&mut self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.keys.full(key);
        let row = tx::get(&self.conn, &full)
            .map_err(|e| sql_error("store get", format!("cannot read key {key:?}"), e))?;
        Ok(row.map(|(value, version)| KeyValue {
            key: key.to_string(),
            value,
            version: version as u64,
        }))
    }

    /// The keys of API prefix `prefix` and the revision they were read at.
    pub(super) fn list(&mut self, prefix: &str) -> Result<Listing> {
        let scope = self.keys.scope(prefix);
        let end = scope.range_end();
        let (rows, rev) = tx::list(&mut self.conn, scope.exact.as_deref(), &scope.dir, &end)
            .map_err(|e| sql_error("store list", format!("cannot list prefix {prefix:?}"), e))?;
        let kvs = rows
            .into_iter()
            .filter_map(|(full, value, version)| {
                let key = self.keys.relative(&full)?.to_string();
                Some(KeyValue {
                    key,
                    value,
                    version: version as u64,
                })
            })
            .collect();
        Ok(Listing {
            kvs,
            revision: rev as u64,
        })
    }

    /// Writes API key `key` bound to this client's lease; when `exclusive`, only if it does
    /// not exist.
    pub(super) fn put_ephemeral(
        &mut self,
        key: &str,
        value: &[u8],
        exclusive: bool,
    ) -> Result<u64> {
        let op = if exclusive {
            "store create_ephemeral"
        } else {
            "store put_ephemeral"
        };
        let full = self.keys.full(key);
        let v = self
            .lessee
            .put(&mut self.conn, &full, value, exclusive)
            .map_err(|e| match e {
                LeaseError::Closed => closed(op),
                LeaseError::Exists => crate::store::remote::exists_error(op, key),
                LeaseError::Sql(e) => sql_error(op, format!("cannot write key {key:?}"), e),
            })?;
        self.wake();
        Ok(v as u64)
    }

    /// Applies `ops` in one write transaction: every condition is checked first, and the first
    /// that fails aborts the whole transaction with nothing written.
    pub(super) fn apply(&mut self, op: &'static str, ops: &[TxnOp]) -> Result<Vec<Outcome>> {
        let what = match ops {
            [one] => format!("cannot write key {:?}", one.key()),
            _ => format!("cannot apply a transaction of {} operations", ops.len()),
        };
        let sql = |e| sql_error(op, what.clone(), e);
        let full: Vec<String> = ops.iter().map(|o| self.keys.full(o.key())).collect();
        let mut tx = WriteTx::begin(&mut self.conn).map_err(sql)?;
        for (o, key) in ops.iter().zip(&full) {
            if !matches!(o, TxnOp::Put { .. } | TxnOp::Delete { .. }) {
                let cur = tx.current(key).map_err(sql)?.map(|c| c.version as u64);
                check(op, o, cur)?;
            }
        }
        let mut out = Vec::with_capacity(ops.len());
        for (o, key) in ops.iter().zip(&full) {
            out.push(match o {
                TxnOp::Create { value, .. }
                | TxnOp::Put { value, .. }
                | TxnOp::Update { value, .. } => {
                    Outcome::Written(tx.write(key, value, None).map_err(sql)? as u64)
                }
                TxnOp::Delete { .. } | TxnOp::DeleteIf { .. } => {
                    Outcome::Deleted(tx.remove(key).map_err(sql)?)
                }
                TxnOp::Check { .. } => Outcome::Checked,
            });
        }
        if tx.commit().map_err(sql)?.is_some() {
            for (o, key) in ops.iter().zip(&full) {
                if !matches!(o, TxnOp::Check { .. }) {
                    self.lessee.forget(key);
                }
            }
            self.wake();
        }
        Ok(out)
    }
}

impl Drop for Worker {
    /// Stops the background thread even if this one unwinds.
    fn drop(&mut self) {
        if let Some((bg, _)) = self.bg.take() {
            let _ = bg.send(Msg::Stop);
        }
    }
}

/// Checks the condition of `o` against the key's current version.
fn check(op: &'static str, o: &TxnOp, cur: Option<u64>) -> Result<()> {
    let key = o.key();
    let want = match o {
        TxnOp::Create { .. } => {
            return match cur {
                None => Ok(()),
                Some(v) => Err(Error::new(
                    ErrorKind::AlreadyExists,
                    op,
                    format!("key {key:?} already exists (at version {v})"),
                )
                .with_hint("read the existing value, or write with put or compare-and-swap")),
            };
        }
        TxnOp::Put { .. } | TxnOp::Delete { .. } => return Ok(()),
        TxnOp::Update { version, .. } | TxnOp::DeleteIf { version, .. } => Some(*version),
        TxnOp::Check { version, .. } => *version,
    };
    let context = match (want, cur) {
        (w, c) if w == c => return Ok(()),
        (Some(w), Some(c)) => format!("key {key:?} is at version {c}, not {w}"),
        (Some(w), None) => format!("key {key:?} does not exist (expected version {w})"),
        (None, Some(c)) => format!("key {key:?} exists (at version {c}) but was required absent"),
        (None, None) => return Ok(()),
    };
    Err(Error::new(ErrorKind::Conflict, op, context)
        .with_hint("nothing was changed; re-read the key and retry with its current version"))
}

/// The error of a call on a closed store.
pub(super) fn closed(op: &'static str) -> Error {
    Error::new(ErrorKind::Unavailable, op, "the embedded store was closed")
        .with_hint("open the store again with store::connect")
}

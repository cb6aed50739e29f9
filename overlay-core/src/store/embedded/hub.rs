//! Watch fan-out: the change log read by one poller per open store and handed to its watchers.
//!
//! The log is shared by every process using the file, so polling it (`WHERE id > cursor`, an
//! index seek on the rowid that costs microseconds when nothing changed) sees every process's
//! writes. Registration runs on the poller's thread between two polls, so a watch from a version
//! replays the rows the poller already passed and then receives the live ones: nothing lost,
//! nothing twice.

use std::collections::VecDeque;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::scope::{Keys, Scope};
use crate::error::Result;
use crate::store::{KeyValue, WatchEvent};

/// Capacity of a watch channel.
pub(super) const CHANNEL: usize = 256;
/// Events a watcher may have queued beyond its channel before it gets a Resync instead.
const MAX_PENDING: usize = 10_000;
/// Bytes of values and keys a watcher may have queued beyond its channel, likewise.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// Log rows read at once...
const BATCH: usize = 256;
/// ... or fewer when their values add up to this, bounding memory when values are large.
const BATCH_BYTES: usize = 8 << 20;

type Event = Result<WatchEvent>;

struct Watcher {
    scope: Scope,
    /// Deliver only rows with a revision above this.
    after: i64,
    tx: mpsc::Sender<Event>,
    pending: VecDeque<Event>,
    pending_bytes: usize,
}

fn size(ev: &Event) -> usize {
    match ev {
        Ok(WatchEvent::Put(kv)) => kv.key.len() + kv.value.len(),
        Ok(WatchEvent::Delete { key, .. }) => key.len(),
        _ => 0,
    }
}

impl Watcher {
    fn new(scope: Scope, after: i64, tx: mpsc::Sender<Event>) -> Self {
        Watcher {
            scope,
            after,
            tx,
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }

    fn push(&mut self, ev: Event) {
        let n = size(&ev);
        if self.pending.len() >= MAX_PENDING || self.pending_bytes + n > MAX_PENDING_BYTES {
            // The consumer is too slow to keep up: drop the backlog and tell it to re-list,
            // rather than buffer without bound.
            self.pending.clear();
            self.pending_bytes = 0;
            self.pending.push_back(Ok(WatchEvent::Resync {
                reason: format!(
                    "the watcher fell more than {MAX_PENDING} events or {} MiB behind",
                    MAX_PENDING_BYTES >> 20
                ),
            }));
        } else {
            self.pending_bytes += n;
            self.pending.push_back(ev);
        }
    }

    /// Sends what the channel takes; returns false once the watch was dropped.
    fn flush(&mut self) -> bool {
        while let Some(ev) = self.pending.pop_front() {
            let n = size(&ev);
            match self.tx.try_send(ev) {
                Ok(()) => self.pending_bytes -= n,
                Err(TrySendError::Full(ev)) => {
                    self.pending.push_front(ev);
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        !self.tx.is_closed()
    }
}

/// One change log row.
struct Row {
    id: i64,
    rev: i64,
    key: String,
    value: Option<Vec<u8>>,
}

/// The poller's state: how far it has read the log, and its watchers.
pub(super) struct Hub {
    keys: Keys,
    cursor_id: i64,
    cursor_rev: i64,
    watchers: Vec<Watcher>,
}

impl Hub {
    /// A hub starting at the current end of the log.
    pub(super) fn new(conn: &mut Connection, keys: Keys) -> rusqlite::Result<Self> {
        let (id, rev) = conn
            .query_row(
                "SELECT id, rev FROM log ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        Ok(Hub {
            keys,
            cursor_id: id,
            cursor_rev: rev,
            watchers: Vec::new(),
        })
    }

    /// Reads the log rows written since the last poll and queues them for the watchers.
    pub(super) fn poll(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        if self.watchers.is_empty() {
            // Nobody to tell: just move to the end of the log without reading values.
            let last = conn
                .prepare_cached("SELECT id, rev FROM log ORDER BY id DESC LIMIT 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((id, rev)) = last {
                (self.cursor_id, self.cursor_rev) = (id, rev);
            }
            return Ok(());
        }
        loop {
            let tx = conn.transaction()?;
            let compacted: i64 = tx
                .prepare_cached("SELECT compacted FROM meta WHERE id = 0")?
                .query_row([], |r| r.get(0))?;
            let (rows, more) = read_rows(&tx, self.cursor_id, i64::MAX)?;
            tx.commit()?;
            if compacted > self.cursor_rev {
                // Another process compacted rows this poller had not read yet (it was stalled).
                let reason = format!(
                    "the change log was compacted to revision {compacted} while this store had \
                     read up to {}",
                    self.cursor_rev
                );
                for w in &mut self.watchers {
                    w.push(Ok(WatchEvent::Resync {
                        reason: reason.clone(),
                    }));
                }
                self.cursor_rev = compacted;
            }
            for row in rows {
                self.cursor_id = row.id;
                self.cursor_rev = row.rev;
                self.deliver(&row, None);
            }
            if !more {
                return Ok(());
            }
        }
    }

    fn deliver(&mut self, row: &Row, only: Option<usize>) {
        let Some(key) = self.keys.relative(&row.key) else {
            return;
        };
        let mut event = None;
        for (i, w) in self.watchers.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) || row.rev <= w.after || !w.scope.contains(&row.key) {
                continue;
            }
            let ev = event.get_or_insert_with(|| match &row.value {
                Some(value) => WatchEvent::Put(KeyValue {
                    key: key.to_string(),
                    value: value.clone(),
                    version: row.rev as u64,
                }),
                None => WatchEvent::Delete {
                    key: key.to_string(),
                    version: row.rev as u64,
                },
            });
            w.push(Ok(ev.clone()));
        }
    }

    /// Adds a watcher of `scope`. Call right after [`Hub::poll`], on the poller's thread.
    pub(super) fn register(
        &mut self,
        conn: &mut Connection,
        scope: Scope,
        from: Option<u64>,
        tx: mpsc::Sender<Event>,
    ) -> rusqlite::Result<()> {
        let Some(from) = from else {
            self.watchers.push(Watcher::new(scope, self.cursor_rev, tx));
            return Ok(());
        };
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let rtx = conn.transaction()?;
        let compacted: i64 =
            rtx.query_row("SELECT compacted FROM meta WHERE id = 0", [], |r| r.get(0))?;
        if from < compacted {
            rtx.commit()?;
            let mut w = Watcher::new(scope, self.cursor_rev, tx);
            w.push(Ok(WatchEvent::Resync {
                reason: format!(
                    "revision {from} is compacted (history starts after {compacted}); re-list"
                ),
            }));
            self.watchers.push(w);
            return Ok(());
        }
        self.watchers.push(Watcher::new(scope, from, tx));
        let me = self.watchers.len() - 1;
        // Revisions grow with ids: walk back from the cursor to the last row at or before
        // `from`, then replay forward from there up to the cursor, in batches.
        let mut after_id = self.cursor_id;
        {
            let mut stmt =
                rtx.prepare_cached("SELECT id, rev FROM log WHERE id <= ?1 ORDER BY id DESC")?;
            let mut q = stmt.query([self.cursor_id])?;
            while let Some(r) = q.next()? {
                if r.get::<_, i64>(1)? <= from {
                    break;
                }
                after_id = r.get::<_, i64>(0)? - 1;
            }
        }
        loop {
            let (rows, more) = read_rows(&rtx, after_id, self.cursor_id)?;
            for row in &rows {
                after_id = row.id;
                self.deliver(row, Some(me));
            }
            if !more {
                break;
            }
        }
        rtx.commit()
    }

    /// Hands queued events to the watch channels and forgets dropped watches.
    pub(super) fn flush(&mut self) {
        self.watchers.retain_mut(Watcher::flush);
    }

    /// Whether nobody watches.
    pub(super) fn is_idle(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Whether some watcher has events its full channel did not take yet.
    pub(super) fn has_backlog(&self) -> bool {
        self.watchers.iter().any(|w| !w.pending.is_empty())
    }
}

/// Log rows with `after_id < id <= upto_id` in id order, at most a batch; `true` with them when
/// the batch filled up and more may follow.
fn read_rows(
    tx: &rusqlite::Transaction<'_>,
    after_id: i64,
    upto_id: i64,
) -> rusqlite::Result<(Vec<Row>, bool)> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, rev, key, value, deleted FROM log WHERE id > ?1 AND id <= ?2 ORDER BY id",
    )?;
    let mut q = stmt.query(params![after_id, upto_id])?;
    let (mut rows, mut bytes) = (Vec::new(), 0);
    while let Some(r) = q.next()? {
        let deleted: bool = r.get(4)?;
        let value: Option<Vec<u8>> = if deleted { None } else { Some(r.get(3)?) };
        bytes += value.as_ref().map_or(0, Vec::len);
        rows.push(Row {
            id: r.get(0)?,
            rev: r.get(1)?,
            key: r.get(2)?,
            value,
        });
        if rows.len() >= BATCH || bytes >= BATCH_BYTES {
            return Ok((rows, true));
        }
    }
    Ok((rows, false))
}

/// Deletes the oldest log rows so at most about `keep` remain, whole revisions at a time, and
/// records the highest deleted revision as compacted. Does nothing until the log holds a tenth
/// more than `keep`, so compaction runs in batches.
pub(super) fn compact(conn: &mut Connection, keep: i64) -> rusqlite::Result<()> {
    let (lo, hi): (i64, i64) = conn.query_row(
        "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM log",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if hi - lo < keep + keep / 10 {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let cut: Option<i64> = tx
        .query_row(
            "SELECT rev FROM log WHERE id <= ?1 ORDER BY id DESC LIMIT 1",
            [hi - keep],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(rev) = cut {
        // Whole revisions only: stop at the first row of a later revision, which also keeps
        // the last row (the current revision) whatever `keep` is.
        let end: Option<i64> = tx
            .query_row(
                "SELECT id FROM log WHERE id > ?1 AND rev > ?2 ORDER BY id LIMIT 1",
                [hi - keep, rev],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(end) = end {
            tx.execute("DELETE FROM log WHERE id < ?1", [end])?;
            tx.execute(
                "UPDATE meta SET compacted = max(compacted, ?1) WHERE id = 0",
                [rev],
            )?;
        }
    }
    tx.commit()
}

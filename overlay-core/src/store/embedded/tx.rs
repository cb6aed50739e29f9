//! Reads and write transactions on the store file, in terms of full keys (store prefix
//! included).
//!
//! Every write transaction (`BEGIN IMMEDIATE`, so it takes the file's write lock up front and
//! waits at most the busy timeout for it) bumps the global revision at most once; every key it
//! writes gets that revision as its version and every change is appended to `log` with it, which
//! is what watchers in every process read.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// The current revision: that of the last log row (compaction always keeps it), 0 when none.
pub(super) const REVISION: &str =
    "SELECT coalesce((SELECT rev FROM log ORDER BY id DESC LIMIT 1), 0)";

/// A key's current state: version and the lease it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Current {
    pub(super) version: i64,
    pub(super) lease: Option<i64>,
}

/// One write transaction. Dropping it without [`WriteTx::commit`] rolls it back.
pub(super) struct WriteTx<'c> {
    tx: Transaction<'c>,
    base: i64,
    bumped: bool,
}

impl<'c> WriteTx<'c> {
    /// Takes the write lock and reads the current revision.
    pub(super) fn begin(conn: &'c mut Connection) -> rusqlite::Result<Self> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let base = tx.prepare_cached(REVISION)?.query_row([], |r| r.get(0))?;
        Ok(WriteTx {
            tx,
            base,
            bumped: false,
        })
    }

    /// The revision this transaction's writes get.
    fn rev(&mut self) -> i64 {
        self.bumped = true;
        self.base + 1
    }

    /// The state of `key`, or `None` when absent.
    pub(super) fn current(&self, key: &str) -> rusqlite::Result<Option<Current>> {
        self.tx
            .prepare_cached("SELECT version, lease FROM kv WHERE key = ?1")?
            .query_row([key], |r| {
                Ok(Current {
                    version: r.get(0)?,
                    lease: r.get(1)?,
                })
            })
            .optional()
    }

    /// Writes `value` at `key`, bound to `lease` (or to none); returns the new version.
    pub(super) fn write(
        &mut self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> rusqlite::Result<i64> {
        let rev = self.rev();
        self.tx
            .prepare_cached(
                "INSERT INTO kv (key, value, version, lease) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET
                   value = excluded.value, version = excluded.version, lease = excluded.lease",
            )?
            .execute(params![key, value, rev, lease])?;
        self.tx
            .prepare_cached("INSERT INTO log (rev, key, value, deleted) VALUES (?1, ?2, ?3, 0)")?
            .execute(params![rev, key, value])?;
        Ok(rev)
    }

    /// Deletes `key` if present; returns whether it was.
    pub(super) fn remove(&mut self, key: &str) -> rusqlite::Result<bool> {
        let gone = self
            .tx
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?
            > 0;
        if gone {
            let rev = self.rev();
            self.tx
                .prepare_cached(
                    "INSERT INTO log (rev, key, value, deleted) VALUES (?1, ?2, NULL, 1)",
                )?
                .execute(params![rev, key])?;
        }
        Ok(gone)
    }

    /// The keys bound to `lease`.
    pub(super) fn keys_of_lease(&self, lease: i64) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT key FROM kv WHERE lease = ?1")?;
        stmt.query_map([lease], |r| r.get(0))?.collect()
    }

    /// The underlying transaction, for lease bookkeeping.
    pub(super) fn sql(&self) -> &Transaction<'c> {
        &self.tx
    }

    /// Commits; returns the new revision if anything was written.
    pub(super) fn commit(self) -> rusqlite::Result<Option<i64>> {
        let new = self.bumped.then_some(self.base + 1);
        self.tx.commit()?;
        Ok(new)
    }
}

/// A listed key: full key, value, version.
pub(super) type Entry = (String, Vec<u8>, i64);

/// A key's value and version, read outside any explicit transaction.
pub(super) fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<(Vec<u8>, i64)>> {
    conn.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Keys in `[lo, hi)` plus, if given, the key `exact`, sorted, with the revision read in the
/// same read transaction.
pub(super) fn list(
    conn: &mut Connection,
    exact: Option<&str>,
    lo: &str,
    hi: &str,
) -> rusqlite::Result<(Vec<Entry>, i64)> {
    let tx = conn.transaction()?;
    let rev: i64 = tx.prepare_cached(REVISION)?.query_row([], |r| r.get(0))?;
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT key, value, version FROM kv WHERE (key >= ?1 AND key < ?2) OR key = ?3
             ORDER BY key",
        )?;
        let mut q = stmt.query(params![lo, hi, exact])?;
        while let Some(r) = q.next()? {
            rows.push((r.get(0)?, r.get(1)?, r.get(2)?));
        }
    }
    tx.commit()?;
    Ok((rows, rev))
}

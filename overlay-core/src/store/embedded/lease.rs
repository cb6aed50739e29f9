//! Ephemeral keys: one lease row per store client, renewed by its owner, swept by anyone.
//!
//! A client creates its lease on its first `put_ephemeral` and binds its ephemeral keys to it
//! (`kv.lease`). Its background thread pushes `expires_ms` forward every TTL/3. Every open store
//! (in any process) sweeps leases whose `expires_ms` has passed, deleting their keys through
//! ordinary logged deletes so watchers everywhere see them go. An owner that finds its lease
//! swept while it is alive (it was stalled, e.g. stopped or swapped out, for longer than the TTL)
//! creates a new lease and puts its ephemeral keys back, so a stall costs a blip, not the keys.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::tx::WriteTx;

/// Milliseconds since the Unix epoch: leases are compared across processes, so they need a
/// clock every process on the host shares.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Default)]
struct Session {
    lease: Option<i64>,
    /// Full key → value of every ephemeral key this client holds, to put them back after a
    /// sweep.
    keys: BTreeMap<String, Vec<u8>>,
    closed: bool,
}

/// The lease state of one store client, shared by its worker and background threads.
#[derive(Debug)]
pub(super) struct Lessee {
    session: Mutex<Session>,
    ttl_ms: i64,
    owner: String,
}

/// Why an ephemeral write was refused.
#[derive(Debug)]
pub(super) enum LeaseError {
    /// The client was closed.
    Closed,
    /// An exclusive write found the key present.
    Exists,
    /// SQLite failed.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for LeaseError {
    fn from(e: rusqlite::Error) -> Self {
        LeaseError::Sql(e)
    }
}

impl Lessee {
    /// A client whose leases last `ttl`.
    pub(super) fn new(ttl: Duration) -> Self {
        Lessee {
            session: Mutex::new(Session::default()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4),
            owner: format!("pid {}", std::process::id()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        // A panic while holding the lock leaves consistent data (every update is a single
        // assignment after the commit), so a poisoned lock is still usable.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `value` at `key` bound to this client's lease (creating or restoring the lease);
    /// when `exclusive`, only if `key` does not exist, else [`LeaseError::Exists`] with
    /// nothing written.
    pub(super) fn put(
        &self,
        conn: &mut Connection,
        key: &str,
        value: &[u8],
        exclusive: bool,
    ) -> Result<i64, LeaseError> {
        let mut s = self.lock();
        if s.closed {
            return Err(LeaseError::Closed);
        }
        let mut tx = WriteTx::begin(conn)?;
        if exclusive && tx.current(key)?.is_some() {
            // Dropping the transaction rolls it back.
            return Err(LeaseError::Exists);
        }
        let fix = self.ensure(&mut tx, &s)?;
        let version = tx.write(key, value, Some(fix.lease))?;
        tx.commit()?;
        fix.apply(&mut s);
        s.keys.insert(key.to_string(), value.to_vec());
        Ok(version)
    }

    /// Forgets `key` as ephemeral: this client wrote or deleted it as an ordinary key.
    pub(super) fn forget(&self, key: &str) {
        let mut s = self.lock();
        if !s.keys.is_empty() {
            s.keys.remove(key);
        }
    }

    /// Extends the lease, re-creating it (and putting the keys back) if it was swept. Returns
    /// false when it did not get to try: an ephemeral write held the session (the background
    /// thread must not wait behind a write queued for the file's lock), so retry soon.
    pub(super) fn renew(&self, conn: &mut Connection) -> rusqlite::Result<bool> {
        let mut s = match self.session.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        if s.closed || s.lease.is_none() {
            return Ok(true);
        }
        let mut tx = WriteTx::begin(conn)?;
        let fix = self.ensure(&mut tx, &s)?;
        tx.commit()?;
        fix.apply(&mut s);
        Ok(true)
    }

    /// Ends the session: deletes this client's ephemeral keys and lease. Later ephemeral
    /// writes and renewals do nothing.
    pub(super) fn release(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let mut s = self.lock();
        s.closed = true;
        let Some(lease) = s.lease else { return Ok(()) };
        let mut tx = WriteTx::begin(conn)?;
        for key in tx.keys_of_lease(lease)? {
            tx.remove(&key)?;
        }
        tx.sql()
            .prepare_cached("DELETE FROM leases WHERE id = ?1")?
            .execute([lease])?;
        tx.commit()?;
        s.lease = None;
        s.keys.clear();
        Ok(())
    }

    /// Within `tx`: renews the lease, or creates a new one and restores the keys.
    fn ensure(&self, tx: &mut WriteTx<'_>, s: &Session) -> rusqlite::Result<Fix> {
        let expires = now_ms().saturating_add(self.ttl_ms);
        if let Some(id) = s.lease {
            let renewed = tx
                .sql()
                .prepare_cached("UPDATE leases SET expires_ms = ?1 WHERE id = ?2")?
                .execute(params![expires, id])?;
            if renewed == 1 {
                return Ok(Fix {
                    lease: id,
                    lost: Vec::new(),
                    created: false,
                });
            }
            tracing::warn!(
                lease = id,
                "lease of this store client was swept; re-creating it"
            );
        }
        tx.sql()
            .prepare_cached("INSERT INTO leases (expires_ms, owner) VALUES (?1, ?2)")?
            .execute(params![expires, self.owner])?;
        let lease = tx.sql().last_insert_rowid();
        let mut lost = Vec::new();
        for (key, value) in &s.keys {
            match tx.current(key)? {
                // Gone with the old lease, or still bound to it: ours to put back.
                None => {
                    tx.write(key, value, Some(lease))?;
                }
                Some(c) if c.lease.is_some() && c.lease == s.lease => {
                    tx.write(key, value, Some(lease))?;
                }
                // Someone else wrote it meanwhile; it is theirs now.
                Some(_) => lost.push(key.clone()),
            }
        }
        Ok(Fix {
            lease,
            lost,
            created: true,
        })
    }
}

/// What [`Lessee::ensure`] changed, applied to the session once the transaction committed.
struct Fix {
    lease: i64,
    lost: Vec<String>,
    created: bool,
}

impl Fix {
    fn apply(self, s: &mut Session) {
        if self.created {
            s.lease = Some(self.lease);
        }
        for key in self.lost {
            s.keys.remove(&key);
        }
    }
}

/// Deletes every expired lease with its keys (as logged deletes). Cheap when nothing expired:
/// one indexed read, no write lock.
pub(super) fn sweep(conn: &mut Connection) -> rusqlite::Result<usize> {
    let now = now_ms();
    let any: Option<i64> = conn
        .prepare_cached("SELECT id FROM leases WHERE expires_ms < ?1 LIMIT 1")?
        .query_row([now], |r| r.get(0))
        .optional()?;
    if any.is_none() {
        return Ok(0);
    }
    let mut tx = WriteTx::begin(conn)?;
    let expired: Vec<i64> = {
        let mut stmt = tx
            .sql()
            .prepare_cached("SELECT id FROM leases WHERE expires_ms < ?1")?;
        stmt.query_map([now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut removed = 0;
    for lease in &expired {
        for key in tx.keys_of_lease(*lease)? {
            removed += usize::from(tx.remove(&key)?);
        }
        tx.sql()
            .prepare_cached("DELETE FROM leases WHERE id = ?1")?
            .execute([lease])?;
    }
    tx.commit()?;
    if !expired.is_empty() {
        tracing::info!(leases = ?expired, keys = removed, "swept expired leases");
    }
    Ok(removed)
}

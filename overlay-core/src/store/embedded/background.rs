//! The background thread of an open store, with its own connection: polls the change log for
//! this store's watchers, renews this client's lease, sweeps expired leases of every client and
//! compacts the log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::fork::Stretch;
use super::hub::{self, Hub};
use super::lease::{self, Lessee};
use super::notify::Flags;
use super::schema::sql_error;
use super::scope::Scope;
use crate::error::{Error, Result};
use crate::store::WatchEvent;

/// How soon to hand more events to a watcher whose channel was full, or to look again for a
/// commit a wake-up announced.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// How many times to look again for an announced commit before waiting a full poll period.
const RECHECKS: u8 = 5;

/// Timings of the background work; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// Longest wait between two polls of the change log while there are watchers (a write
    /// wakes the poller at once: a local one through the channel, any through inotify).
    pub(super) poll: Duration,
    /// Period of the sweep of expired leases.
    pub(super) sweep: Duration,
    /// Period of the compaction check.
    pub(super) compact: Duration,
    /// Change log rows kept by compaction.
    pub(super) log_keep: i64,
}

impl Tuning {
    /// The defaults for a lease TTL of `ttl`: a key of a dead owner goes at most a sweep period
    /// (a tenth of the TTL, at most 250 ms) after its lease expired.
    pub(super) fn for_ttl(ttl: Duration) -> Self {
        Tuning {
            poll: Duration::from_millis(10),
            sweep: (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
            compact: Duration::from_secs(1),
            log_keep: 10_000,
        }
    }
}

/// A request to the background thread.
pub(super) enum Msg {
    /// Something was written here: poll now.
    Wake,
    /// Add a watcher.
    Register(Registration),
    /// Deliver what is left and exit.
    Stop,
}

/// A watch to add; `ack` gets the outcome once replay (if any) is queued.
pub(super) struct Registration {
    pub(super) scope: Scope,
    pub(super) from: Option<u64>,
    pub(super) tx: mpsc::Sender<Result<WatchEvent>>,
    pub(super) ack: oneshot::Sender<Result<()>>,
}

/// Starts the thread.
pub(super) fn spawn(bg: Background, rx: Receiver<Msg>) -> std::io::Result<JoinHandle<()>> {
    // Checkpoints (which fsync) are left to the worker connections' commits, so they never
    // delay a watch poll on this thread.
    if let Err(e) = bg.conn.pragma_update(None, "wal_autocheckpoint", 0) {
        tracing::debug!(error = %e, "cannot turn off checkpoints on the background connection");
    }
    std::thread::Builder::new()
        .name("overlay-store-bg".into())
        .spawn(move || bg.run(&rx))
}

/// What the background thread owns: its own connection, the watchers, the leases.
pub(super) struct Background {
    pub(super) conn: Connection,
    pub(super) hub: Hub,
    pub(super) lessee: Arc<Lessee>,
    pub(super) ttl: Duration,
    pub(super) tuning: Tuning,
    pub(super) flags: Arc<Flags>,
    /// When it last warned of a failing poll (warnings are rate-limited).
    pub(super) last_warn: Option<Instant>,
}

impl Drop for Background {
    /// Stops the notifier however this thread ends.
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::Release);
    }
}

impl Background {
    fn run(mut self, rx: &Receiver<Msg>) {
        let renew_every = self.ttl / 3;
        let now = Instant::now();
        let (mut next_renew, mut next_sweep, mut next_compact) =
            (now + renew_every, now, now + self.tuning.compact);
        let mut recheck = 0;
        loop {
            let mut msgs = Vec::new();
            // A watcher with a backlog gets its channel refilled soon after it drains; with no
            // watcher there is nothing to poll for until the next lease chore (a new watch
            // wakes the thread through the channel).
            let wait = if recheck > 0 {
                // 1, 2, 4, 8, 16 ms after the wake-up.
                BACKLOG_RETRY * (1 << (RECHECKS - recheck))
            } else if self.hub.has_backlog() {
                BACKLOG_RETRY
            } else if self.hub.is_idle() {
                next_renew
                    .min(next_sweep)
                    .saturating_duration_since(Instant::now())
            } else {
                self.tuning.poll
            };
            match rx.recv_timeout(wait) {
                Ok(m) => msgs.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => msgs.push(Msg::Stop),
            }
            msgs.extend(std::iter::from_fn(|| rx.try_recv().ok()));
            // This round's SQLite work, up to the next wait (see [`super::fork`]).
            let _stretch = Stretch::begin();
            let mut regs = Vec::new();
            let (mut stop, mut woken) = (false, false);
            for msg in msgs {
                match msg {
                    Msg::Wake => woken = true,
                    Msg::Register(r) => regs.push(r),
                    Msg::Stop => stop = true,
                }
            }
            match self.hub.poll(&mut self.conn) {
                Ok(true) => recheck = 0,
                // inotify reports the first write of a commit, which may not be visible yet:
                // look again shortly rather than a whole poll period later.
                Ok(false) if woken => recheck = RECHECKS,
                Ok(false) => recheck = recheck.saturating_sub(1),
                Err(e) => self.warn("poll the change log", e),
            }
            for r in regs {
                let res = self
                    .hub
                    .register(&mut self.conn, r.scope, r.from, r.tx)
                    .map_err(|e| sql_error("store watch", "cannot start the watch", e));
                let _ = r.ack.send(res);
            }
            self.hub.flush();
            if stop {
                return;
            }
            self.flags
                .wanted
                .store(!self.hub.is_idle(), Ordering::Relaxed);
            let now = Instant::now();
            if now >= next_renew {
                next_renew = match self.lessee.renew(&mut self.conn) {
                    Ok(true) => now + renew_every,
                    Ok(false) => now + renew_every / 4,
                    Err(e) => {
                        self.warn("renew the lease", e);
                        now + renew_every / 4
                    }
                };
            }
            if now >= next_sweep {
                if let Err(e) = lease::sweep(&mut self.conn) {
                    self.warn("sweep expired leases", e);
                }
                next_sweep = now + self.tuning.sweep;
            }
            if now >= next_compact {
                if let Err(e) = hub::compact(&mut self.conn, self.tuning.log_keep) {
                    self.warn("compact the change log", e);
                }
                next_compact = now + self.tuning.compact;
            }
        }
    }

    /// Logs a failure of background work, at most once every 10 s: it is retried on the next
    /// period anyway, and a vanished file would otherwise log a hundred lines a second.
    fn warn(&mut self, what: &'static str, e: rusqlite::Error) {
        if self
            .last_warn
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last_warn = Some(Instant::now());
        let err: Error = sql_error("embedded store background", format!("cannot {what}"), e);
        tracing::warn!(error = %err, "embedded store background work failed; retrying");
    }
}

//! Watches: the journal is the event stream.
//!
//! A persistent watch on the journal node says "something was written"; the watch then reads
//! every journal entry after the last one it delivered, so no change is lost between
//! notifications (ZooKeeper's one-shot watch gap does not exist here) and each event carries
//! the value and version of that very write. A persistent recursive watch on the prefix's
//! nodes catches what bypasses the journal: ephemeral nodes removed by the server when their
//! owner's session ended. A reconnect re-reads the journal and then reports a Resync (an
//! ephemeral removal during the gap cannot be replayed); an expired session of the watcher
//! itself gives a Resync too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, EventType, PersistentWatcher, SessionState};

use super::Inner;
use super::layout::{Entry, KV, LOG, entry_seq, holds_value, key_of, node};
use super::session::map_err;
use crate::error::Result;
use crate::store::remote::{AbortOnDrop, Backoff, bounded, under};
use crate::store::{KeyValue, Version, Watch, WatchEvent};

const OP: &str = "store watch";

struct Watcher {
    s: Arc<Inner>,
    prefix: String,
    client: Client,
    generation: u64,
    /// Sequence number of the last journal entry read.
    last_seq: i64,
    /// czxid of the last journal entry read (or the journal head the watch started at).
    last_czxid: Version,
    /// Version of the last event delivered.
    last_version: Version,
    /// Whether each key below the prefix exists, as far as the journal said.
    present: HashMap<String, bool>,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

type Watchers = (PersistentWatcher, PersistentWatcher);

/// What a watch does after a failed call.
enum Recovery {
    /// The session is alive: try again (after a backoff step).
    Retry,
    /// The session had ended; the watch now uses the store's new one.
    Renewed,
    /// The store closed.
    Closed,
}

/// Starts watching `prefix` (normalised), replaying journal entries after `from`.
pub(super) async fn start(s: Arc<Inner>, prefix: String, from: Option<Version>) -> Result<Watch> {
    let client = s.client(OP)?;
    let generation = s.client.borrow().0;
    let (tx, rx) = mpsc::channel(256);
    let mut w = Watcher {
        s,
        prefix,
        client,
        generation,
        last_seq: -1,
        last_czxid: 0,
        last_version: 0,
        present: HashMap::new(),
        tx,
    };
    let url = w.s.url.clone();
    // Notifications first, then the position: a write in between is read, not missed.
    let watchers = bounded(OP, &url, w.arm()).await?;
    let resync = bounded(OP, &url, w.position(from)).await?;
    let task = tokio::spawn(w.run(watchers, from.is_some(), resync));
    Ok(Watch::new(rx, Some(Box::new(AbortOnDrop(task)))))
}

impl Watcher {
    async fn arm(&self) -> Result<Watchers> {
        let c = &self.client;
        let log = c.watch(LOG, AddWatchMode::Persistent).await;
        let log = log.map_err(|e| map_err(OP, &self.s.url, e))?;
        let kv = c
            .watch(&node(&self.prefix), AddWatchMode::PersistentRecursive)
            .await;
        let kv = kv.map_err(|e| map_err(OP, &self.s.url, e))?;
        Ok((log, kv))
    }

    async fn entries(&self) -> Result<Vec<(i64, String)>> {
        let names = self
            .client
            .list_children(LOG)
            .await
            .map_err(|e| map_err(OP, &self.s.url, e))?;
        let mut seqs: Vec<(i64, String)> = names
            .into_iter()
            .filter_map(|n| entry_seq(&n).map(|s| (s, n)))
            .collect();
        seqs.sort();
        Ok(seqs)
    }

    /// The zxid up to which journal entries were pruned (kept in the journal node's data).
    async fn pruned(&self) -> Result<Version> {
        let (data, _) = self
            .client
            .get_data(LOG)
            .await
            .map_err(|e| map_err(OP, &self.s.url, e))?;
        Ok(std::str::from_utf8(&data)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    /// Moves to the end of the journal, skipping what is there.
    async fn skip_to_end(&mut self) -> Result<()> {
        let head = super::read::head(&self.s, &self.client, OP).await?;
        let entries = self.entries().await?;
        self.last_seq = entries.last().map_or(self.last_seq, |(s, _)| *s);
        self.last_czxid = self.last_czxid.max(head);
        Ok(())
    }

    /// Sets `last_seq` to just before the first entry newer than `from` (or to the end);
    /// returns whether entries after `from` were pruned already (a Resync is due).
    async fn position(&mut self, from: Option<Version>) -> Result<bool> {
        self.skip_to_end().await?;
        let Some(from) = from else { return Ok(false) };
        if from < self.pruned().await? {
            return Ok(true);
        }
        // Entries are in zxid order: binary search for the first one written after `from`.
        let entries = self.entries().await?;
        let (mut lo, mut hi) = (0, entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let path = format!("{LOG}/{}", entries[mid].1);
            match self
                .client
                .check_stat(&path)
                .await
                .map_err(|e| map_err(OP, &self.s.url, e))?
            {
                Some(st) if st.czxid as Version <= from => lo = mid + 1,
                Some(_) => hi = mid,
                None => return Ok(true),
            }
        }
        if let Some((seq, _)) = entries.get(lo) {
            self.last_seq = seq - 1;
            self.last_czxid = from;
        }
        Ok(false)
    }

    async fn send(&self, ev: WatchEvent) -> bool {
        self.tx.send(Ok(ev)).await.is_ok()
    }

    /// Delivers every journal entry after `last_seq`; false when the receiver is gone.
    ///
    /// Entries are read by name in sequence (`e-<last_seq + 1>` ...) without listing the
    /// journal. ZooKeeper numbers a sequential node with its parent's `cversion`, so a missing
    /// name below the journal's `cversion` is a gap (pruning deletes bump it) and only then is
    /// the journal listed.
    async fn catch_up(&mut self) -> Result<bool> {
        loop {
            let seq = self.last_seq + 1;
            let read = self.client.get_data(&format!("{LOG}/e-{seq:010}")).await;
            match read {
                Ok((data, stat)) => {
                    if !self.deliver(seq, &data, stat.czxid as Version).await {
                        return Ok(false);
                    }
                }
                Err(zk::Error::NoNode) => {
                    let st = self.client.check_stat(LOG).await;
                    let cversion = st
                        .map_err(|e| map_err(OP, &self.s.url, e))?
                        .map_or(0, |st| st.cversion);
                    if seq >= i64::from(cversion) {
                        return Ok(true);
                    }
                    return self.catch_up_listed().await;
                }
                Err(e) => return Err(map_err(OP, &self.s.url, e)),
            }
        }
    }

    /// [`catch_up`](Self::catch_up) across a gap in the numbering: lists the journal, and
    /// reports a Resync if entries this watch had not read were pruned.
    async fn catch_up_listed(&mut self) -> Result<bool> {
        if self.pruned().await? > self.last_czxid {
            self.skip_to_end().await?;
            let reason = "the ZooKeeper journal was pruned past this watch".to_string();
            return Ok(self.send(WatchEvent::Resync { reason }).await);
        }
        for (seq, name) in self.entries().await? {
            if seq <= self.last_seq {
                continue;
            }
            let (data, stat) = match self.client.get_data(&format!("{LOG}/{name}")).await {
                Ok(r) => r,
                // Pruned while being read: the check above decides next round.
                Err(zk::Error::NoNode) => return Box::pin(self.catch_up_listed()).await,
                Err(e) => return Err(map_err(OP, &self.s.url, e)),
            };
            if !self.deliver(seq, &data, stat.czxid as Version).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records journal entry `seq` as read and delivers it if it is below the prefix.
    async fn deliver(&mut self, seq: i64, data: &[u8], czxid: Version) -> bool {
        self.last_seq = seq;
        self.last_czxid = self.last_czxid.max(czxid);
        let Some(entry) = Entry::decode(data) else {
            return true;
        };
        if !under(&self.prefix, entry.key()) {
            return true;
        }
        let version = czxid;
        self.last_version = self.last_version.max(version);
        let ev = match entry {
            Entry::Put { key, value } => {
                self.present.insert(key.clone(), true);
                WatchEvent::Put(KeyValue {
                    key,
                    value,
                    version,
                })
            }
            Entry::Delete { key } => {
                self.present.insert(key.clone(), false);
                WatchEvent::Delete { key, version }
            }
        };
        self.send(ev).await
    }

    /// A node below the prefix was deleted: report it unless the journal already did (or
    /// the key exists again), as for an ephemeral node removed with its session.
    async fn node_deleted(&mut self, path: &str) -> Result<bool> {
        let Some(key) = key_of(path).map(str::to_string) else {
            return Ok(true);
        };
        if !under(&self.prefix, &key) || !self.catch_up().await? {
            return Ok(!self.tx.is_closed());
        }
        if self.present.get(&key) == Some(&false) {
            return Ok(true);
        }
        let c = &self.client;
        let now = c
            .check_stat(path)
            .await
            .map_err(|e| map_err(OP, &self.s.url, e))?;
        if now.as_ref().is_some_and(holds_value) {
            return Ok(true);
        }
        // The deletion's zxid is not in the notification; the nearest existing ancestor's
        // pzxid is at least that zxid, so above every version the key had.
        let mut parent = path.to_string();
        let mut version = 0;
        while let Some((up, _)) = parent.rsplit_once('/') {
            parent = up.to_string();
            let st = c
                .check_stat(if parent.is_empty() { KV } else { &parent })
                .await;
            if let Some(st) = st.map_err(|e| map_err(OP, &self.s.url, e))? {
                version = st.pzxid as Version;
                break;
            }
        }
        self.last_version = self.last_version.max(version);
        self.present.insert(key.clone(), false);
        Ok(self
            .send(WatchEvent::Delete {
                key,
                version: self.last_version,
            })
            .await)
    }

    async fn run(mut self, mut watchers: Watchers, replay: bool, mut resync: bool) {
        let mut shutdown = self.s.life.shutdown();
        // A close that came before this task subscribed is never reported by `changed()`.
        if *shutdown.borrow_and_update() {
            return;
        }
        let mut clients = self.s.client.subscribe();
        let mut states = self.client.state_watcher();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut pending = replay;
        let mut rearm = false;
        let mut reconnected = false;
        loop {
            if resync {
                resync = false;
                let reason = "ZooKeeper changes may have been missed (session expired, \
                              reconnected, or journal pruned)"
                    .to_string();
                if !self.send(WatchEvent::Resync { reason }).await {
                    return;
                }
            }
            // Every step that talks to the server can fail because the session expired: the
            // old client then never answers again, so the watch moves to the store's new
            // session instead of retrying on a dead one (it used to retry forever, and the
            // watch saw nothing more).
            if rearm {
                match bounded(OP, &self.s.url.clone(), self.arm()).await {
                    Ok(w) => {
                        watchers = w;
                        rearm = false;
                    }
                    Err(e) => {
                        tracing::debug!("ZooKeeper watch of {:?}: re-arming: {e}", self.prefix);
                        match self
                            .recover(&mut clients, &mut states, &mut shutdown, &mut backoff)
                            .await
                        {
                            Recovery::Retry => {}
                            Recovery::Renewed => {
                                (pending, resync, reconnected) = (true, true, false)
                            }
                            Recovery::Closed => return,
                        }
                        continue;
                    }
                }
            }
            if pending {
                match self.catch_up().await {
                    Ok(true) => pending = false,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::debug!("ZooKeeper watch of {:?}: {e}", self.prefix);
                        match self
                            .recover(&mut clients, &mut states, &mut shutdown, &mut backoff)
                            .await
                        {
                            Recovery::Retry => {}
                            Recovery::Renewed => {
                                (rearm, resync, reconnected) = (true, true, false);
                            }
                            Recovery::Closed => return,
                        }
                        continue;
                    }
                }
                if reconnected {
                    reconnected = false;
                    resync = true;
                    continue;
                }
                backoff.reset();
            }
            let mut expired = false;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.tx.closed() => return,
                ev = watchers.0.changed() => match ev.event_type {
                    EventType::Session => expired = ev.session_state.is_terminated(),
                    _ => pending = true,
                },
                ev = watchers.1.changed() => match ev.event_type {
                    EventType::NodeDeleted => match self.node_deleted(&ev.path).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(_) => pending = true,
                    },
                    EventType::Session => expired = ev.session_state.is_terminated(),
                    _ => {}
                },
                st = states.changed() => match st {
                    // The session came back, maybe on another server, which then holds none
                    // of its watches: zookeeper-client 0.11 re-sends only one-shot watches on
                    // a reconnect (its SetWatches request never reaches the persistent lists),
                    // and a partitioned follower's clients otherwise lose every later change.
                    // Add them again (the server takes a repeat as a no-op), before the
                    // catch-up reads the journal, so nothing falls between; the old
                    // receivers' drop removes nothing on the server while the new ones watch
                    // the same paths. A state watcher keeps the latest state only, so a
                    // Disconnected may never be seen: any SyncConnected is taken for a
                    // reconnect, and a re-arm that fails is tried again.
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        pending = true;
                        rearm = true;
                        reconnected = true;
                    }
                    SessionState::Disconnected => reconnected = true,
                    st => expired = st.is_terminated(),
                },
            }
            if expired {
                if !self.renew(&mut clients, &mut states, &mut shutdown).await {
                    return;
                }
                (rearm, pending, resync, reconnected) = (true, true, true, false);
            }
        }
    }

    /// After a failed call: moves to the store's new session if this one ended (the caller
    /// then arms the watches again, reports a Resync and reads the journal), else waits a
    /// backoff step.
    async fn recover(
        &mut self,
        clients: &mut tokio::sync::watch::Receiver<(u64, Option<Client>)>,
        states: &mut zk::StateWatcher,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Recovery {
        let ended = states.peek_state().is_terminated() || clients.borrow().0 != self.generation;
        if ended {
            return match self.renew(clients, states, shutdown).await {
                true => Recovery::Renewed,
                false => Recovery::Closed,
            };
        }
        backoff.wait().await;
        if *shutdown.borrow() {
            Recovery::Closed
        } else {
            Recovery::Retry
        }
    }

    /// Waits for the store's monitor to open a new session, then watches again on it from the
    /// journal's end (the caller reports a Resync); false when the store closed meanwhile.
    async fn renew(
        &mut self,
        clients: &mut tokio::sync::watch::Receiver<(u64, Option<Client>)>,
        states: &mut zk::StateWatcher,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        loop {
            let generation = clients.borrow_and_update().0;
            if generation != self.generation {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => return false,
                r = clients.changed() => if r.is_err() { return false },
            }
        }
        let (generation, client) = clients.borrow().clone();
        let Some(client) = client else { return false };
        self.generation = generation;
        self.client = client;
        *states = self.client.state_watcher();
        // What the old session's watch missed is covered by the Resync; `skip_to_end` failing
        // leaves the journal to be read from where the watch was.
        if let Err(e) = self.skip_to_end().await {
            tracing::debug!("ZooKeeper watch of {:?}: {e}", self.prefix);
        }
        !*shutdown.borrow()
    }
}

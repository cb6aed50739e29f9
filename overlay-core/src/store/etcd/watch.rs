//! Watches: an etcd watch stream of a key range that resumes from the last revision it saw.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::mpsc;

use super::{Inner, raw};
use crate::error::Result;
use crate::store::remote::{AbortOnDrop, Backoff, bounded, under};
use crate::store::{KeyValue, Version, Watch, WatchEvent};

struct Watcher {
    s: Arc<Inner>,
    prefix: String,
    /// The first revision not yet delivered: where a new stream starts.
    next: Option<i64>,
    /// A Resync to send once the replacement stream exists, so a re-list by the caller
    /// cannot miss a change made before the new stream started.
    pending_resync: Option<String>,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

/// Starts watching `prefix` (normalised) from after `from`, or from now.
pub(super) async fn start(s: Arc<Inner>, prefix: String, from: Option<Version>) -> Result<Watch> {
    s.life.check_open("store watch", &s.url)?;
    let (tx, rx) = mpsc::channel(256);
    let mut w = Watcher {
        s,
        prefix,
        next: from.map(|v| v as i64 + 1),
        pending_resync: None,
        tx,
    };
    // The first stream is opened before returning: every change after watch() returns is seen.
    let stream = w.open().await?;
    let task = tokio::spawn(w.run(stream));
    Ok(Watch::new(rx, Some(Box::new(AbortOnDrop(task)))))
}

impl Watcher {
    /// Opens a stream from `next` and waits for etcd to confirm it.
    async fn open(&mut self) -> Result<WatchStream> {
        let (start, end) = self.s.range(&self.prefix);
        let mut opts = WatchOptions::new().with_range(end);
        if let Some(n) = self.next {
            opts = opts.with_start_revision(n);
        }
        let mut stream = raw(&self.s, "store watch", |mut c| async move {
            c.watch(start, Some(opts)).await
        })
        .await?;
        let created = bounded("store watch", &self.s.url, async {
            stream
                .message()
                .await
                .map_err(|e| super::map_err("store watch", &self.s.url, e))
        })
        .await?;
        if let Some(resp) = created {
            self.handle(resp).await;
        }
        Ok(stream)
    }

    /// Handles one response; false when the stream must be replaced.
    async fn handle(&mut self, resp: etcd_client::WatchResponse) -> bool {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                self.pending_resync = Some(format!(
                    "etcd compacted its history up to revision {} before revision {} was read",
                    resp.compact_revision(),
                    self.next.unwrap_or_default()
                ));
                self.next = None;
            }
            return false;
        }
        if resp.created() {
            if self.next.is_none() {
                self.next = resp.header().map(|h| h.revision() + 1);
            }
            if let Some(reason) = self.pending_resync.take() {
                let _ = self.tx.send(Ok(WatchEvent::Resync { reason })).await;
            }
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision();
            self.next = Some(self.next.map_or(rev + 1, |n| n.max(rev + 1)));
            let Some(key) = self.s.rel(kv.key()) else {
                continue;
            };
            if !under(&self.prefix, key) {
                continue;
            }
            let event = match ev.event_type() {
                EventType::Put => WatchEvent::Put(KeyValue {
                    key: key.to_string(),
                    value: kv.value().to_vec(),
                    version: rev as Version,
                }),
                EventType::Delete => WatchEvent::Delete {
                    key: key.to_string(),
                    version: rev as Version,
                },
            };
            if self.tx.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn run(mut self, mut stream: WatchStream) {
        let mut shutdown = self.s.life.shutdown();
        // A close that came before this task subscribed is never reported by `changed()`.
        if *shutdown.borrow_and_update() {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                msg = stream.message() => {
                    if let Ok(Some(resp)) = msg
                        && self.handle(resp).await
                    {
                        continue;
                    }
                }
            }
            if self.tx.is_closed() {
                return;
            }
            // The stream ended: reconnect from the first revision not yet delivered.
            loop {
                if *shutdown.borrow() {
                    return;
                }
                backoff.wait().await;
                match self.open().await {
                    Ok(s) => {
                        stream = s;
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        tracing::debug!("etcd watch of {:?}: reconnect failed: {e}", self.prefix)
                    }
                }
            }
        }
    }
}

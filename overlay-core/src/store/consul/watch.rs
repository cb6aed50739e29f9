//! Watches: blocking queries on the prefix, each result diffed against the previous one so
//! deletes are reported too, in version order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Inner;
use crate::error::Result;
use crate::store::remote::{AbortOnDrop, Backoff, bounded};
use crate::store::{KeyValue, Version, Watch, WatchEvent};

const OP: &str = "store watch";

pub(super) async fn start(s: Arc<Inner>, prefix: String, from: Option<Version>) -> Result<Watch> {
    s.life.check_open(OP, &s.url)?;
    let (kvs, index) = bounded(OP, &s.url, s.read_prefix(OP, &prefix, None)).await?;
    let (tx, rx) = mpsc::channel(256);
    if from.is_some() {
        let reason = "Consul keeps no change history to replay from a version".to_string();
        let _ = tx.send(Ok(WatchEvent::Resync { reason })).await;
    }
    let known = kvs.into_iter().map(|kv| (kv.key, kv.version)).collect();
    let task = tokio::spawn(run(s, prefix, known, index, tx));
    Ok(Watch::new(rx, Some(Box::new(AbortOnDrop(task)))))
}

async fn run(
    s: Arc<Inner>,
    prefix: String,
    mut known: HashMap<String, Version>,
    mut index: u64,
    tx: mpsc::Sender<Result<WatchEvent>>,
) {
    let mut shutdown = s.life.shutdown();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let wait = Duration::from_secs(30);
    loop {
        let read = tokio::select! {
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
            r = s.read_prefix(OP, &prefix, Some((index.max(1), wait))) => r,
        };
        let (kvs, new_index) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("Consul watch of {prefix:?}: {e}");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        if new_index < index {
            // The index went back (a restored snapshot): nothing can be trusted.
            known = kvs.into_iter().map(|kv| (kv.key, kv.version)).collect();
            index = new_index;
            let reason = "the Consul index went backwards".to_string();
            if tx.send(Ok(WatchEvent::Resync { reason })).await.is_err() {
                return;
            }
            continue;
        }
        let mut events: Vec<WatchEvent> = Vec::new();
        let mut seen = HashMap::with_capacity(kvs.len());
        for kv in kvs {
            seen.insert(kv.key.clone(), kv.version);
            if known.get(&kv.key) != Some(&kv.version) {
                events.push(WatchEvent::Put(KeyValue { ..kv }));
            }
        }
        for key in known.keys().filter(|k| !seen.contains_key(*k)) {
            events.push(WatchEvent::Delete {
                key: key.clone(),
                version: new_index,
            });
        }
        events.sort_by_key(|e| match e {
            WatchEvent::Put(kv) => kv.version,
            WatchEvent::Delete { version, .. } => *version,
            WatchEvent::Resync { .. } => 0,
        });
        known = seen;
        index = new_index;
        for ev in events {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    }
}

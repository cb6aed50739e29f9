//! Reads: get, list (a breadth-first walk batched with multi-reads) and journal pruning.
//!
//! Every read is current (the store's read contract, [`KvStore`](crate::store::KvStore)): a
//! ZooKeeper server answers reads from its own state, which on a follower may lag behind
//! writes the leader has already acknowledged to another client. So each read is preceded by
//! a `sync`, which the server orders before this session's later requests: the read then sees
//! every write committed before the sync reached the leader. The sync is sent in the same
//! flight as the read (the client writes requests in call order, the server answers a
//! session's requests in order), so it costs one round trip to the leader rather than two.

use zookeeper_client as zk;
use zookeeper_client::{Client, MultiReadResult};

use super::Inner;
use super::layout::{LOG, decode_value, entry_seq, key_of, node, version};
use super::session::map_err;
use crate::error::Result;
use crate::store::remote::{bounded, under};
use crate::store::{KeyValue, Listing, StoreUrl, Version};

/// Nodes read per multi-read while listing.
const BATCH: usize = 128;
/// Journal entries kept; older ones are pruned (a watch from before them gets a Resync).
const KEEP: usize = 4096;
/// How often a listing is retried when the store changed while it was read.
const LIST_TRIES: usize = 4;

pub(super) async fn get(s: &Inner, key: &str) -> Result<Option<KeyValue>> {
    const OP: &str = "store get";
    let c = s.client(OP)?;
    bounded(OP, &s.url, async {
        loop {
            // Both requests leave before either answer is awaited.
            let (synced, got) = tokio::join!(c.sync("/"), c.get_data(&node(key)));
            match synced.and(got) {
                Ok((data, stat)) => {
                    return Ok(decode_value(&data).map(|v| KeyValue {
                        key: key.to_string(),
                        value: v.to_vec(),
                        version: version(&stat),
                    }));
                }
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) if lost(&e) => moving().await,
                Err(e) => return Err(map_err(OP, &s.url, e)),
            }
        }
    })
    .await
}

/// A read that lost its connection is asked again, within the store's deadline: the session
/// lives on and the client is moving to another server (its own was cut off or died), and a
/// read is safe to repeat. A write is not (it may have been applied), so it fails instead.
pub(super) async fn moving() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Whether the client lost the connection a request was on: `ConnectionLoss`, or the
/// transport's own error (a reset, an unanswered ping) that zookeeper-client hands every
/// request in flight when it drops a connection.
pub(super) fn lost(e: &zk::Error) -> bool {
    matches!(e, zk::Error::ConnectionLoss | zk::Error::Custom(_))
}

/// [`lost`], for an error already mapped.
fn connection_lost(e: &crate::error::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<zk::Error>())
        .is_some_and(lost)
}

/// The journal's pzxid: the zxid of its newest entry (or of a later pruning), so at least
/// the version of every write made so far.
pub(super) async fn head(s: &Inner, c: &Client, op: &'static str) -> Result<Version> {
    match c.check_stat(LOG).await {
        Ok(Some(st)) => Ok(st.pzxid as Version),
        Ok(None) => Ok(0),
        Err(e) => Err(map_err(op, &s.url, e)),
    }
}

pub(super) async fn list(s: &Inner, prefix: &str) -> Result<Listing> {
    const OP: &str = "store list";
    let c = s.client(OP)?;
    bounded(OP, &s.url, async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let read = async {
                // The sync goes out with the first read of the journal (see the module docs).
                let (synced, before) = tokio::join!(c.sync("/"), head(s, &c, OP));
                synced.map_err(|e| map_err(OP, &s.url, e))?;
                let before = before?;
                let kvs = walk(s, &c, prefix).await?;
                Ok::<_, crate::error::Error>((before, kvs, head(s, &c, OP).await?))
            };
            let (before, kvs, after) = match read.await {
                Ok(r) => r,
                Err(e) if connection_lost(&e) => {
                    attempt -= 1;
                    moving().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Unchanged journal: the walk saw one state, and a watch from `before` misses
            // nothing. Under constant writes, give the older revision: a watch from it may
            // repeat a change, but never misses one.
            if before == after || attempt == LIST_TRIES {
                return Ok(Listing {
                    kvs,
                    revision: before,
                });
            }
        }
    })
    .await
}

/// Every key at or below `prefix`, sorted.
async fn walk(s: &Inner, c: &Client, prefix: &str) -> Result<Vec<KeyValue>> {
    const OP: &str = "store list";
    let mut kvs = Vec::new();
    let mut level = vec![node(prefix)];
    while !level.is_empty() {
        let mut next = Vec::new();
        for chunk in level.chunks(BATCH) {
            let mut r = c.new_multi_reader();
            for path in chunk {
                r.add_get_data(path).map_err(|e| map_err(OP, &s.url, e))?;
                r.add_get_children(path)
                    .map_err(|e| map_err(OP, &s.url, e))?;
            }
            let results = r.commit().await.map_err(|e| map_err(OP, &s.url, e))?;
            for (path, pair) in chunk.iter().zip(results.chunks(2)) {
                if let [MultiReadResult::Data { data, stat }, ..] = pair
                    && let (Some(value), Some(key)) = (decode_value(data), key_of(path))
                    && under(prefix, key)
                {
                    kvs.push(KeyValue {
                        key: key.to_string(),
                        value: value.to_vec(),
                        version: version(stat),
                    });
                }
                if let [_, MultiReadResult::Children { children }] = pair {
                    next.extend(children.iter().map(|child| format!("{path}/{child}")));
                }
            }
        }
        level = next;
    }
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(kvs)
}

/// Deletes journal entries beyond the newest [`KEEP`], recording in the journal node's data
/// the zxid up to which entries are gone. Best effort: a failure only delays pruning.
pub(super) async fn prune(c: Client, url: StoreUrl) {
    const OP: &str = "prune ZooKeeper journal";
    let run = async {
        let mut children = c
            .list_children(LOG)
            .await
            .map_err(|e| map_err(OP, &url, e))?;
        if children.len() <= KEEP {
            return Ok(());
        }
        children.sort_by_key(|n| entry_seq(n).unwrap_or(i64::MAX));
        let old = &children[..children.len() - KEEP];
        for chunk in old.chunks(64) {
            let last = format!("{LOG}/{}", chunk[chunk.len() - 1]);
            let Some(st) = c
                .check_stat(&last)
                .await
                .map_err(|e| map_err(OP, &url, e))?
            else {
                continue;
            };
            let mut m = c.new_multi_writer();
            m.add_set_data(LOG, st.czxid.to_string().as_bytes(), None)
                .map_err(|e| map_err(OP, &url, e))?;
            for name in chunk {
                m.add_delete(&format!("{LOG}/{name}"), None)
                    .map_err(|e| map_err(OP, &url, e))?;
            }
            // Another client pruning the same entries makes this fail; that is fine.
            if m.commit().await.is_err() {
                break;
            }
        }
        Ok::<(), crate::Error>(())
    };
    if let Err(e) = bounded(OP, &url, run).await {
        tracing::debug!("{e}");
    }
}

//! The requests a client makes of its store, counted by kind, so that the store load of an
//! operation (a connect, a `network ls`) can be read off a running host: the health call
//! reports them, benchmarks take differences.
//!
//! Counted at the [`KvStore`] boundary, one per call, so the figure is the same whatever the
//! backend does underneath. A backend's own upkeep does not go through it and is not counted:
//! lease and session keep-alives, and the etcd client's one status request a second to each
//! member (to keep requests on the leader).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Backend, Capabilities, KeyValue, KvStore, Listing, TxnOp, TxnResult, Version, Watch};
use crate::error::Result;

/// How many requests of each kind a store client made since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// [`KvStore::get`] calls.
    pub get: u64,
    /// [`KvStore::list`] calls.
    pub list: u64,
    /// [`KvStore::put`] calls.
    pub put: u64,
    /// [`KvStore::create`] calls.
    pub create: u64,
    /// [`KvStore::compare_and_swap`] calls.
    pub compare_and_swap: u64,
    /// [`KvStore::delete`] calls.
    pub delete: u64,
    /// [`KvStore::compare_and_delete`] calls.
    pub compare_and_delete: u64,
    /// [`KvStore::txn`] calls (one request, whatever the number of operations in it).
    pub txn: u64,
    /// [`KvStore::put_ephemeral`] calls.
    pub put_ephemeral: u64,
    /// [`KvStore::create_ephemeral`] calls.
    pub create_ephemeral: u64,
    /// [`KvStore::sync`] calls.
    #[serde(default)]
    pub sync: u64,
    /// Watches opened.
    pub watch: u64,
    /// Events the watches delivered (not requests: the store pushes them).
    pub watch_events: u64,
}

/// `to_array` and `from_array` of [`RequestCounts`] from its field names, in [`Kind`]'s order.
macro_rules! array_conversions {
    ($($field:ident),*) => {
        fn to_array(self) -> [u64; KINDS] {
            [$(self.$field),*]
        }

        fn from_array(n: [u64; KINDS]) -> RequestCounts {
            let [$($field),*] = n;
            RequestCounts { $($field),* }
        }
    };
}

impl RequestCounts {
    /// Every request this client sent: all but the watch events.
    pub fn unary(&self) -> u64 {
        self.to_array().iter().sum::<u64>() - self.watch_events
    }

    /// What was counted after `earlier`, a reading of the same client.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        self.zip(earlier, u64::saturating_sub)
    }

    // Each count in the order of [`Kind`], and back: one list of the fields for both ways.
    array_conversions!(
        get,
        list,
        put,
        create,
        compare_and_swap,
        delete,
        compare_and_delete,
        txn,
        put_ephemeral,
        create_ephemeral,
        sync,
        watch,
        watch_events
    );

    /// `f` of each pair of counts.
    fn zip(&self, o: &RequestCounts, f: impl Fn(u64, u64) -> u64) -> RequestCounts {
        let (a, b) = (self.to_array(), o.to_array());
        RequestCounts::from_array(std::array::from_fn(|i| f(a[i], b[i])))
    }
}

/// Sums the counts of several clients (the hosts of a cluster, say).
impl std::ops::Add for RequestCounts {
    type Output = RequestCounts;

    fn add(self, o: RequestCounts) -> RequestCounts {
        self.zip(&o, |a, b| a + b)
    }
}

/// The kinds counted, as indexes into [`Counters`].
#[derive(Clone, Copy)]
enum Kind {
    Get,
    List,
    Put,
    Create,
    CompareAndSwap,
    Delete,
    CompareAndDelete,
    Txn,
    PutEphemeral,
    CreateEphemeral,
    Sync,
    Watch,
    WatchEvent,
}

const KINDS: usize = Kind::WatchEvent as usize + 1;

#[derive(Debug, Default)]
struct Counters([AtomicU64; KINDS]);

impl Counters {
    fn count(&self, k: Kind) {
        self.0[k as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> RequestCounts {
        RequestCounts::from_array(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

/// A store whose calls are counted; every store [`connect`](super::connect) opens is one.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: Arc<dyn KvStore>,
    counters: Arc<Counters>,
}

impl Counted {
    pub(crate) fn new(inner: Arc<dyn KvStore>) -> Counted {
        Counted {
            inner,
            counters: Arc::default(),
        }
    }
}

/// A watch's events, counted as they are delivered.
#[derive(Debug)]
pub(super) struct EventCounter(Arc<Counters>);

impl EventCounter {
    pub(super) fn delivered(&self) {
        self.0.count(Kind::WatchEvent);
    }
}

#[async_trait]
impl KvStore for Counted {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        Some(self.counters.read())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.counters.count(Kind::Get);
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.counters.count(Kind::Put);
        self.inner.put(key, value).await
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.counters.count(Kind::Create);
        self.inner.create(key, value).await
    }

    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        self.counters.count(Kind::CompareAndSwap);
        self.inner.compare_and_swap(key, value, version).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.counters.count(Kind::Delete);
        self.inner.delete(key).await
    }

    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        self.counters.count(Kind::CompareAndDelete);
        self.inner.compare_and_delete(key, version).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.counters.count(Kind::List);
        self.inner.list(prefix).await
    }

    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        self.counters.count(Kind::Txn);
        self.inner.txn(ops).await
    }

    async fn sync(&self) -> Result<()> {
        self.counters.count(Kind::Sync);
        self.inner.sync().await
    }

    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        self.counters.count(Kind::Watch);
        let w = self.inner.watch(prefix, from).await?;
        Ok(w.counted(EventCounter(self.counters.clone())))
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.counters.count(Kind::PutEphemeral);
        self.inner.put_ephemeral(key, value).await
    }

    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.counters.count(Kind::CreateEphemeral);
        self.inner.create_ephemeral(key, value).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_and_event_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/s.db", dir.path().display());
        let store = crate::store::connect_str(&url).await.unwrap();
        let before = store.request_counts().expect("connect counts");
        let mut w = store.watch("a", None).await.unwrap();
        store.put("a/1", b"x").await.unwrap();
        store.create("a/2", b"y").await.unwrap();
        assert!(store.get("a/1").await.unwrap().is_some());
        store.list("a").await.unwrap();
        store
            .txn(&[
                TxnOp::Delete { key: "a/1".into() },
                TxnOp::Delete { key: "a/2".into() },
            ])
            .await
            .unwrap();
        // A failed call was still sent.
        assert!(store.compare_and_swap("a/3", b"z", 1).await.is_err());
        for _ in 0..4 {
            w.next().await.unwrap().unwrap();
        }
        let n = store.request_counts().unwrap().since(&before);
        assert_eq!(
            n,
            RequestCounts {
                get: 1,
                list: 1,
                put: 1,
                create: 1,
                compare_and_swap: 1,
                txn: 1,
                watch: 1,
                watch_events: 4,
                ..RequestCounts::default()
            }
        );
        assert_eq!(n.unary(), 7);
        store.close().await.unwrap();
    }
}

//! Test fixtures: an embedded store in a temporary directory, and a round-trip counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::error::Result;
use crate::store::{KeyValue, KvStore, Listing, TxnOp, TxnResult, Version, Watch};

/// An embedded store in a fresh temporary directory, removed when dropped.
pub(super) struct Fixture {
    store: Arc<dyn KvStore>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub(super) async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("file://{}/store.db", dir.path().display());
        let store = crate::store::connect_str(&url)
            .await
            .expect("open the embedded store");
        Fixture { store, _dir: dir }
    }

    pub(super) fn store(&self) -> Arc<dyn KvStore> {
        self.store.clone()
    }
}

/// Counts the store operations (round trips) that pass through it.
#[derive(Debug)]
pub(super) struct Counting {
    inner: Arc<dyn KvStore>,
    calls: AtomicUsize,
    writes: AtomicUsize,
}

impl Counting {
    pub(super) fn new(inner: Arc<dyn KvStore>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        })
    }
    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub(super) fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
    fn hit(&self, write: bool) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl KvStore for Counting {
    fn backend(&self) -> crate::store::Backend {
        self.inner.backend()
    }
    fn capabilities(&self) -> crate::store::Capabilities {
        self.inner.capabilities()
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.hit(false);
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit(true);
        self.inner.put(key, value).await
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit(true);
        self.inner.create(key, value).await
    }
    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        self.hit(true);
        self.inner.compare_and_swap(key, value, version).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.hit(true);
        self.inner.delete(key).await
    }
    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        self.hit(true);
        self.inner.compare_and_delete(key, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.hit(false);
        self.inner.list(prefix).await
    }
    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        self.hit(true);
        self.inner.txn(ops).await
    }
    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        self.inner.watch(prefix, from).await
    }
    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit(true);
        self.inner.put_ephemeral(key, value).await
    }
    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit(true);
        self.inner.create_ephemeral(key, value).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

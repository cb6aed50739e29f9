//! `overlay.Store`: the cluster store from Python, so tools share it with the library.

use std::borrow::Cow;
use std::sync::Arc;

use overlay_core::store::{self, KeyValue, KvStore, StoreUrl};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::runtime::{DropInRuntime, run};
use crate::watch::Watch;

/// One `(key, value, version)` entry of a listing, as Python sees it.
type Entry = (String, Py<PyBytes>, u64);

fn entry(py: Python<'_>, kv: KeyValue) -> Entry {
    (kv.key, PyBytes::new(py, &kv.value).unbind(), kv.version)
}

/// A connection to a cluster store (`file://`, `etcd://`, `zk://`, `consul://` URL).
///
/// Every method blocks the calling thread only (the GIL is released), answers Ctrl-C, and may be
/// called from several threads at once.
#[pyclass(module = "overlay", frozen)]
pub(crate) struct Store {
    inner: DropInRuntime<Arc<dyn KvStore>>,
    /// The URL without secrets, for `repr`.
    url: String,
}

impl Store {
    /// The connection, unless this is a forked child of the process that opened it.
    fn store(&self, py: Python<'_>) -> PyResult<Arc<dyn KvStore>> {
        Ok(Arc::clone(self.inner.get(py, "use store")?))
    }
}

#[pymethods]
impl Store {
    /// Opens the store `url` names.
    #[new]
    fn new(py: Python<'_>, url: &str) -> PyResult<Self> {
        let parsed = StoreUrl::parse(url).map_err(|e| crate::errors::to_py(py, &e))?;
        let shown = parsed.to_string();
        let inner = run(py, async move { store::connect(&parsed).await })?;
        Ok(Store {
            inner: DropInRuntime::new(inner),
            url: shown,
        })
    }

    /// The value and version at `key`, or None.
    fn get(&self, py: Python<'_>, key: String) -> PyResult<Option<(Py<PyBytes>, u64)>> {
        let store = self.store(py)?;
        let got = run(py, async move { store.get(&key).await })?;
        Ok(got.map(|kv| (PyBytes::new(py, &kv.value).unbind(), kv.version)))
    }

    /// Writes `value` at `key` whatever is there; returns the new version.
    fn put(&self, py: Python<'_>, key: String, value: Cow<'_, [u8]>) -> PyResult<u64> {
        let (store, value) = (self.store(py)?, value.into_owned());
        run(py, async move { store.put(&key, &value).await })
    }

    /// Writes `value` only if `key` does not exist (else AlreadyExistsError); returns the version.
    fn create(&self, py: Python<'_>, key: String, value: Cow<'_, [u8]>) -> PyResult<u64> {
        let (store, value) = (self.store(py)?, value.into_owned());
        run(py, async move { store.create(&key, &value).await })
    }

    /// Writes `value` only if `key` is at `version` (else ConflictError); returns the new version.
    fn cas(
        &self,
        py: Python<'_>,
        key: String,
        value: Cow<'_, [u8]>,
        version: u64,
    ) -> PyResult<u64> {
        let (store, value) = (self.store(py)?, value.into_owned());
        run(py, async move {
            store.compare_and_swap(&key, &value, version).await
        })
    }

    /// Deletes `key`; returns whether it existed.
    fn delete(&self, py: Python<'_>, key: String) -> PyResult<bool> {
        let store = self.store(py)?;
        run(py, async move { store.delete(&key).await })
    }

    /// Deletes `key` only if it is at `version` (else ConflictError).
    fn cas_delete(&self, py: Python<'_>, key: String, version: u64) -> PyResult<()> {
        let store = self.store(py)?;
        run(
            py,
            async move { store.compare_and_delete(&key, version).await },
        )
    }

    /// Every `(key, value, version)` below `prefix`, sorted by key.
    #[pyo3(signature = (prefix = ""))]
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<Entry>> {
        Ok(self.list_with_revision(py, prefix)?.0)
    }

    /// Like `list`, plus the revision to pass to `watch(prefix, from_version=...)` so that a list
    /// followed by a watch misses no change.
    #[pyo3(signature = (prefix = ""))]
    fn list_with_revision(&self, py: Python<'_>, prefix: &str) -> PyResult<(Vec<Entry>, u64)> {
        let (store, prefix) = (self.store(py)?, prefix.to_owned());
        let listing = run(py, async move { store.list(&prefix).await })?;
        let entries = listing.kvs.into_iter().map(|kv| entry(py, kv)).collect();
        Ok((entries, listing.revision))
    }

    /// Applies every op atomically, or none (the first failed condition raises
    /// AlreadyExistsError for a "create", ConflictError otherwise, naming the key). Ops are
    /// tuples: ("create", key, value), ("put", key, value), ("update", key, value, version),
    /// ("delete", key), ("delete_if", key, version), ("check", key, version or None).
    /// Returns, per op, the new version of a written key and None for deletes and checks.
    fn txn(&self, py: Python<'_>, ops: &Bound<'_, PyAny>) -> PyResult<Vec<Option<u64>>> {
        let ops = ops
            .try_iter()?
            .map(|item| crate::txn::op(&item?))
            .collect::<PyResult<Vec<_>>>()?;
        let store = self.store(py)?;
        Ok(run(py, async move { store.txn(&ops).await })?.versions)
    }

    /// Writes `value` at `key` bound to this connection's session: the key goes away when the
    /// store is closed or this process dies.
    fn put_ephemeral(&self, py: Python<'_>, key: String, value: Cow<'_, [u8]>) -> PyResult<u64> {
        let (store, value) = (self.store(py)?, value.into_owned());
        run(py, async move { store.put_ephemeral(&key, &value).await })
    }

    /// Watches every key below `prefix`; with `from_version`, first replays the changes after it.
    #[pyo3(signature = (prefix = "", from_version = None))]
    fn watch(&self, py: Python<'_>, prefix: &str, from_version: Option<u64>) -> PyResult<Watch> {
        let (store, prefix) = (self.store(py)?, prefix.to_owned());
        let watch = run(py, async move { store.watch(&prefix, from_version).await })?;
        Ok(Watch::new(watch))
    }

    /// Which backend this is: "embedded", "etcd", "zookeeper" or "consul".
    #[getter]
    fn backend(&self) -> &'static str {
        match self.inner.peek().backend() {
            store::Backend::Embedded => "embedded",
            store::Backend::Etcd => "etcd",
            store::Backend::ZooKeeper => "zookeeper",
            store::Backend::Consul => "consul",
        }
    }

    /// Ends the session (removing this connection's ephemeral keys); later calls raise
    /// UnavailableError.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        run(py, async move { store.close().await })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("overlay.Store({:?})", self.url)
    }
}

//! `overlay.Watch` and `overlay.WatchEvent`: a store watch as a Python iterator.

use std::sync::Arc;

use overlay_core::store::{self, Version};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};
use tokio::sync::Mutex;

use crate::errors;
use crate::runtime::{Home, seconds_arg, wait};

/// The live watch, `None` once closed or ended. Behind an async mutex because waiting for the
/// next event holds it with the GIL released, and several Python threads may call `next`.
type Shared = Arc<Mutex<Option<store::Watch>>>;

/// A change seen by a watch.
///
/// `kind` is "put" (with `key`, `value`, `version`), "delete" (with `key`, `version`) or
/// "resync" (with `reason`): events may have been lost, re-list the prefix and diff.
#[pyclass(module = "overlay", frozen)]
pub(crate) struct WatchEvent {
    kind: &'static str,
    key: Option<String>,
    value: Option<Py<PyBytes>>,
    version: Option<Version>,
    reason: Option<String>,
}

impl WatchEvent {
    fn of(py: Python<'_>, event: store::WatchEvent) -> Self {
        match event {
            store::WatchEvent::Put(kv) => WatchEvent {
                kind: "put",
                key: Some(kv.key),
                value: Some(PyBytes::new(py, &kv.value).unbind()),
                version: Some(kv.version),
                reason: None,
            },
            store::WatchEvent::Delete { key, version } => WatchEvent {
                kind: "delete",
                key: Some(key),
                value: None,
                version: Some(version),
                reason: None,
            },
            store::WatchEvent::Resync { reason } => WatchEvent {
                kind: "resync",
                key: None,
                value: None,
                version: None,
                reason: Some(reason),
            },
        }
    }
}

#[pymethods]
impl WatchEvent {
    /// "put", "delete" or "resync".
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The key, relative to the store prefix (None for a resync).
    #[getter]
    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The new value of a put (None otherwise).
    #[getter]
    fn value(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.value.as_ref().map(|v| v.clone_ref(py))
    }

    /// The version of a put or delete (None for a resync).
    #[getter]
    fn version(&self) -> Option<Version> {
        self.version
    }

    /// Why a resync happened (None otherwise).
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.kind {
            "resync" => format!("WatchEvent(kind='resync', reason={:?})", self.reason()),
            _ => {
                let value = match &self.value {
                    Some(v) => v
                        .bind(py)
                        .repr()
                        .map_or_else(|_| "?".into(), |r| r.to_string()),
                    None => "None".into(),
                };
                format!(
                    "WatchEvent(kind={:?}, key={:?}, value={value}, version={})",
                    self.kind,
                    self.key.as_deref().unwrap_or_default(),
                    self.version.unwrap_or_default()
                )
            }
        }
    }
}

/// The changes below a prefix, as an iterator: `for event in watch` waits as long as it takes
/// (Ctrl-C still interrupts it) and ends when the store is closed; `watch.next(timeout)` returns
/// None when nothing arrived in time.
#[pyclass(module = "overlay", frozen)]
pub(crate) struct Watch {
    inner: Shared,
    home: Home,
}

impl Watch {
    pub(crate) fn new(watch: store::Watch) -> Self {
        Watch {
            inner: Arc::new(Mutex::new(Some(watch))),
            home: Home::here(),
        }
    }

    /// Waits for the next event; `Ok(None)` on timeout, `StopIteration` at the end.
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<WatchEvent>> {
        self.home.check(py, "watch next")?;
        let timeout = seconds_arg(py, "watch next", "timeout", timeout)?;
        let shared = self.inner.clone();
        let got = wait(py, timeout, move || {
            let shared = shared.clone();
            async move {
                let mut guard = shared.lock().await;
                let watch = guard.as_mut()?;
                let item = watch.next().await;
                if item.is_none() {
                    // The stream ended: forget it so later calls end at once.
                    *guard = None;
                }
                item
            }
        })?;
        match got {
            None => Ok(None),
            Some(Some(Ok(event))) => Ok(Some(WatchEvent::of(py, event))),
            Some(Some(Err(err))) => Err(errors::to_py(py, &err)),
            Some(None) => Err(PyStopIteration::new_err(())),
        }
    }
}

#[pymethods]
impl Watch {
    /// The next event, waiting up to `timeout` seconds (forever with None); None if nothing
    /// arrived in time. Raises StopIteration once the watch has ended or was closed.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<WatchEvent>> {
        self.next_event(py, timeout)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<WatchEvent> {
        match self.next_event(py, None)? {
            Some(event) => Ok(event),
            // Unreachable without a timeout, but an end is the honest answer.
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// Cancels the watch; iteration ends.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.home.check(py, "close watch")?;
        let shared = self.inner.clone();
        wait(py, None, move || {
            let shared = shared.clone();
            async move { shared.lock().await.take() }
        })?;
        Ok(())
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
}

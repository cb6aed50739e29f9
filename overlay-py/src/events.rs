//! `overlay.Events`: the controller's events as a Python iterator of dicts.

use std::sync::Arc;

use overlay_core::ControllerEvent;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use tokio::sync::{Mutex, broadcast};

use crate::convert::to_python;
use crate::runtime::{Home, seconds_arg, wait};

type Receiver = Arc<Mutex<Option<broadcast::Receiver<ControllerEvent>>>>;

/// The controller's events as an iterator of dicts (`{"type": "endpoint_up", ...}`); a reader
/// that fell behind gets `{"type": "lagged", "missed": N}` and goes on.
#[pyclass(module = "overlay", frozen)]
pub(crate) struct Events {
    rx: Receiver,
    home: Home,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<ControllerEvent>) -> Self {
        Events {
            rx: Arc::new(Mutex::new(Some(rx))),
            home: Home::here(),
        }
    }

    fn next_event<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.home.check(py, "controller events")?;
        let timeout = seconds_arg(py, "controller events", "timeout", timeout)?;
        let shared = self.rx.clone();
        let got = wait(py, timeout, move || {
            let shared = shared.clone();
            async move {
                let mut guard = shared.lock().await;
                let rx = guard.as_mut()?;
                let item = rx.recv().await;
                if matches!(item, Err(broadcast::error::RecvError::Closed)) {
                    *guard = None;
                }
                Some(item)
            }
        })?;
        match got {
            None => Ok(None),
            Some(None) | Some(Some(Err(broadcast::error::RecvError::Closed))) => {
                Err(PyStopIteration::new_err(()))
            }
            Some(Some(Err(broadcast::error::RecvError::Lagged(missed)))) => {
                let lagged = serde_json::json!({"type": "lagged", "missed": missed});
                to_python(py, &lagged).map(Some)
            }
            Some(Some(Ok(event))) => to_python(py, &event).map(Some),
        }
    }
}

#[pymethods]
impl Events {
    /// The next event, waiting up to `timeout` seconds (forever with None); None if nothing
    /// arrived in time. Raises StopIteration once the controller is closed.
    #[pyo3(signature = (timeout = None))]
    fn next<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.next_event(py, timeout)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.next_event(py, None)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }
}

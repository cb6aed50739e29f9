//! Conversions between the core's serde types and plain Python values (dicts, lists, str).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use serde::Serialize;

use crate::errors;

/// `json.loads`, imported once.
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `value` as the Python object its JSON form reads as: Docker's shapes become the same dicts
/// `docker network inspect` prints, key for key.
pub(crate) fn to_python<'py, T: Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| {
        errors::internal(
            py,
            "convert result",
            format!("cannot serialise the result: {e}"),
        )
    })?;
    let loads = LOADS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("json")?.getattr("loads")?.unbind())
    })?;
    loads.bind(py).call1((text,))
}

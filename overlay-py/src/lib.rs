//! The Python module of `overlay`: the native part `overlay._overlay`, re-exported by the pure
//! Python package `overlay` (see `python/overlay/`).
//!
//! Every blocking call releases the GIL and runs on one tokio runtime per process
//! (module `runtime`); core errors become exceptions under `overlay.OverlayError` (module
//! `errors`).

mod controller;
mod convert;
mod errors;
mod events;
mod runtime;
mod store;
mod txn;
mod watch;

use pyo3::prelude::*;

/// Version of the library, reported as `overlay.__version__`.
pub const VERSION: &str = overlay_core::VERSION;

/// The native module. Its name matches `module-name` in `pyproject.toml`.
#[pymodule(name = "_overlay")]
fn overlay_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", VERSION)?;
    errors::register(module)?;
    module.add_class::<controller::Controller>()?;
    module.add_class::<events::Events>()?;
    module.add_class::<store::Store>()?;
    module.add_class::<watch::Watch>()?;
    module.add_class::<watch::WatchEvent>()?;
    Ok(())
}

//! Python module of `overlay`. The pyo3 bindings arrive with the Python issue; until then this
//! crate only proves that the core builds as its dependency.

/// Version of the library, as the Python module will report it as `overlay.__version__`.
pub const VERSION: &str = overlay_core::VERSION;

//! The exception classes of the Python face and the mapping from [`ErrorKind`] onto them.
//!
//! Each class also derives from the built-in exception a Python caller would naturally catch
//! (`NotFoundError` is a `LookupError`, `KernelError` an `OSError`, …), which `create_exception!`
//! cannot express: it takes a single base. So the classes are made at module init by calling
//! `type(name, bases, namespace)`, exactly as a `class` statement would.

use overlay_core::{Error, ErrorKind};
use pyo3::exceptions::{
    PyConnectionError, PyException, PyLookupError, PyOSError, PyPermissionError, PyTimeoutError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// The classes, created once per process when the module is first imported.
static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// Every exception class the module exports.
struct Classes {
    base: Py<PyType>,
    /// One class per known kind, in [`ErrorKind::ALL`] order.
    by_kind: Vec<(ErrorKind, Py<PyType>)>,
}

/// Name, kind, extra built-in base and docstring of each class below `OverlayError`.
fn specs(
    py: Python<'_>,
) -> [(
    &'static str,
    ErrorKind,
    Option<Bound<'_, PyType>>,
    &'static str,
); 10] {
    [
        (
            "NotFoundError",
            ErrorKind::NotFound,
            Some(py.get_type::<PyLookupError>()),
            "The named key, network, endpoint or namespace does not exist.",
        ),
        (
            "AlreadyExistsError",
            ErrorKind::AlreadyExists,
            None,
            "A create found the thing already there.",
        ),
        (
            "ConflictError",
            ErrorKind::Conflict,
            None,
            "A conditional write lost a race or a precondition does not hold; nothing changed.",
        ),
        (
            "InvalidArgumentError",
            ErrorKind::InvalidArgument,
            Some(py.get_type::<PyValueError>()),
            "An argument was malformed or out of range; nothing changed.",
        ),
        (
            "UnavailableError",
            ErrorKind::Unavailable,
            Some(py.get_type::<PyConnectionError>()),
            "The cluster store or another dependency cannot be reached, or was closed.",
        ),
        (
            "TimeoutError",
            ErrorKind::Timeout,
            Some(py.get_type::<PyTimeoutError>()),
            "An operation did not complete within its deadline.",
        ),
        (
            "PermissionDeniedError",
            ErrorKind::PermissionDenied,
            Some(py.get_type::<PyPermissionError>()),
            "The process lacks a privilege (usually CAP_NET_ADMIN or CAP_SYS_ADMIN).",
        ),
        (
            "UnsupportedError",
            ErrorKind::Unsupported,
            None,
            "The request is valid but this backend, kernel or build cannot do it.",
        ),
        (
            "KernelError",
            ErrorKind::Kernel,
            Some(py.get_type::<PyOSError>()),
            "The kernel refused a netlink or namespace operation; see errno.",
        ),
        (
            "InternalError",
            ErrorKind::Internal,
            None,
            "A bug or broken invariant inside overlay; please report it.",
        ),
    ]
}

/// Makes a class the way a `class name(*bases): __doc__ = doc` statement in module `overlay`
/// would.
fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Vec<Bound<'py, PyType>>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "overlay")?;
    namespace.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?;
    Ok(class)
}

fn create_classes(py: Python<'_>) -> PyResult<Classes> {
    let base = make_class(
        py,
        "OverlayError",
        vec![py.get_type::<PyException>()],
        "Base class of every error raised by overlay. Attributes: kind (a stable lowercase name \
         such as 'not found'), op, context, hint and errno (None unless the kernel gave one).",
    )?;
    let mut by_kind = Vec::new();
    for (name, kind, builtin, doc) in specs(py) {
        let mut bases = vec![base.clone()];
        bases.extend(builtin);
        by_kind.push((kind, make_class(py, name, bases, doc)?.unbind()));
    }
    Ok(Classes {
        base: base.unbind(),
        by_kind,
    })
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || create_classes(py))
}

/// Adds `OverlayError` and every subclass to the module.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let classes = classes(py)?;
    module.add("OverlayError", classes.base.bind(py))?;
    for (_, class) in &classes.by_kind {
        let class = class.bind(py);
        module.add(class.name()?, class)?;
    }
    Ok(())
}

/// The class for `kind`; kinds added after this module was written map to `InternalError`
/// (the enum is `#[non_exhaustive]`).
fn class_for(classes: &Classes, kind: ErrorKind) -> &Py<PyType> {
    let lookup = |k: ErrorKind| classes.by_kind.iter().find(|(c, _)| *c == k);
    match lookup(kind).or_else(|| lookup(ErrorKind::Internal)) {
        Some((_, class)) => class,
        None => &classes.base,
    }
}

/// The exception for a core error: its class follows the kind, its message is the error's full
/// text (operation, context, errno, source and hint), and the parts are attributes.
pub(crate) fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    match build(py, err) {
        Ok(exc) => exc,
        Err(failed) => failed,
    }
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let classes = classes(py)?;
    let exc = class_for(classes, err.kind())
        .bind(py)
        .call1((err.to_string(),))?;
    exc.setattr("kind", err.kind().as_str())?;
    exc.setattr("op", err.op())?;
    exc.setattr("context", err.context())?;
    exc.setattr("hint", err.hint())?;
    exc.setattr("errno", err.errno())?;
    Ok(PyErr::from_value(exc))
}

/// An `InvalidArgumentError` for a bad argument caught on the Python side of the boundary.
pub(crate) fn invalid(py: Python<'_>, op: &'static str, context: String) -> PyErr {
    to_py(py, &Error::invalid(op, context))
}

/// An `InternalError`, for failures of the binding itself (a panicked task, no runtime).
pub(crate) fn internal(py: Python<'_>, op: &'static str, context: String) -> PyErr {
    to_py(py, &Error::internal(op, context))
}

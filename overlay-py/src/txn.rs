//! Transactions from Python: ops as tuples, checked before anything is sent.

use overlay_core::store::TxnOp;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors;

/// The accepted shapes, for error messages.
const SHAPES: &str = "(\"create\", key, value), (\"put\", key, value), \
                      (\"update\", key, value, version), (\"delete\", key), \
                      (\"delete_if\", key, version) or (\"check\", key, version_or_None)";

/// One op from a tuple such as `("update", "k", b"v", 7)`.
pub(crate) fn op(item: &Bound<'_, PyAny>) -> PyResult<TxnOp> {
    let py = item.py();
    let tuple = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err(format!("each transaction op must be a tuple: {SHAPES}"))
    })?;
    let name: String = tuple
        .get_item(0)
        .map_err(|_| PyTypeError::new_err(format!("empty transaction op; expected {SHAPES}")))?
        .extract()?;
    let arity = |n: usize| -> PyResult<()> {
        if tuple.len() == n {
            Ok(())
        } else {
            Err(PyTypeError::new_err(format!(
                "transaction op {name:?} takes {n} items, got {}; expected {SHAPES}",
                tuple.len()
            )))
        }
    };
    let key = || -> PyResult<String> { tuple.get_item(1)?.extract() };
    let value = || -> PyResult<Vec<u8>> {
        Ok(tuple
            .get_item(2)?
            .extract::<std::borrow::Cow<'_, [u8]>>()?
            .into_owned())
    };
    match name.as_str() {
        "create" => {
            arity(3)?;
            Ok(TxnOp::Create {
                key: key()?,
                value: value()?,
            })
        }
        "put" => {
            arity(3)?;
            Ok(TxnOp::Put {
                key: key()?,
                value: value()?,
            })
        }
        "update" => {
            arity(4)?;
            Ok(TxnOp::Update {
                key: key()?,
                value: value()?,
                version: tuple.get_item(3)?.extract()?,
            })
        }
        "delete" => {
            arity(2)?;
            Ok(TxnOp::Delete { key: key()? })
        }
        "delete_if" => {
            arity(3)?;
            Ok(TxnOp::DeleteIf {
                key: key()?,
                version: tuple.get_item(2)?.extract()?,
            })
        }
        "check" => {
            arity(3)?;
            Ok(TxnOp::Check {
                key: key()?,
                version: tuple.get_item(2)?.extract()?,
            })
        }
        other => Err(errors::invalid(
            py,
            "store txn",
            format!("unknown transaction op {other:?}; expected {SHAPES}"),
        )),
    }
}

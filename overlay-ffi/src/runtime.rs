//! The one tokio runtime of the library, created on first use and shared by every handle.
//!
//! Blocking C calls drive their future with `block_on` on the caller's own thread; the
//! runtime's worker threads run the background tasks (store sessions, watches, agents). A call
//! made from inside a tokio runtime (a worker thread, or inside `block_on`) would deadlock or
//! panic, so it is refused with `OVL_ERR_UNSUPPORTED` instead.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::boundary::{Failure, FfiResult};
use crate::status::ovl_status;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime, built on first use.
pub(crate) fn runtime() -> FfiResult<&'static Runtime> {
    let built = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .thread_name("overlay-ffi")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|e| {
        Failure::new(
            ovl_status::OVL_ERR_INTERNAL,
            format!(
                "could not start the library's async runtime: {e} (check the process's thread \
                 and file descriptor limits)"
            ),
        )
    })
}

/// Runs `fut` to completion on the caller's thread.
pub(crate) fn block_on<F: Future>(fut: F) -> FfiResult<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            ovl_status::OVL_ERR_UNSUPPORTED,
            "called from a thread that is running an async runtime; blocking calls would \
             deadlock there (call the library from a plain thread)",
        ));
    }
    Ok(runtime()?.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_are_refused_not_deadlocked() {
        let inner = block_on(async { block_on(async { 1 }).map(|_| ()) }).unwrap();
        let failure = inner.unwrap_err();
        assert_eq!(
            crate::boundary::run("ovl_nested", || Err(failure)),
            ovl_status::OVL_ERR_UNSUPPORTED
        );
        assert_eq!(block_on(async { 2 }).unwrap(), 2);
    }
}

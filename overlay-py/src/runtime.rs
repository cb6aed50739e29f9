//! The one tokio runtime of the process, and the bridge that runs core futures from Python
//! without holding the GIL and without going deaf to Ctrl-C.
//!
//! Every blocking call spawns its future on the shared runtime and waits for it in slices of
//! [`SIGNAL_POLL`] with the GIL released; between slices it re-attaches to let Python run its
//! signal handlers, so `KeyboardInterrupt` arrives within a slice even during a long wait. The
//! runtime is created on first use and lives until the process exits.
//!
//! A `fork()` copies memory but not threads: a child (multiprocessing's default start method on
//! Linux) builds a runtime of its own on first use, and objects made before the fork refuse to
//! work in it ([`Home`]) instead of waiting forever for tasks that only exist in the parent.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use overlay_core::{Error, ErrorKind};
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::errors;

/// How often a waiting call checks for signals (Ctrl-C). Short enough to feel immediate.
pub(crate) const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The runtime and the process it was built in.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime, built on first use.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, rt)) = *slot
        && owner == pid
    {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("overlay-runtime")
        .build()
        .map_err(|e| {
            errors::internal(
                py,
                "start runtime",
                format!("cannot start the tokio runtime: {e}"),
            )
        })?;
    // Leaked on purpose: it lives as long as the process, and one inherited through a fork
    // must never be dropped (its worker threads do not exist in the child).
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// The process an object was made in. Its connections and tasks live on that process's
/// runtime, so a forked child must not use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Home(u32);

impl Home {
    /// The current process.
    pub(crate) fn here() -> Self {
        Home(std::process::id())
    }

    /// Whether this is still the process the object was made in.
    fn is_here(self) -> bool {
        self == Home::here()
    }

    /// UnsupportedError when called in a forked child of the object's process.
    pub(crate) fn check(self, py: Python<'_>, op: &'static str) -> PyResult<()> {
        if self.is_here() {
            return Ok(());
        }
        let err = Error::new(
            ErrorKind::Unsupported,
            op,
            format!(
                "this object was made in process {} and this is its forked child {}",
                self.0,
                std::process::id()
            ),
        )
        .with_hint(
            "open stores and controllers in the process that uses them (after the fork), or use \
             multiprocessing's \"spawn\" start method",
        );
        Err(errors::to_py(py, &err))
    }
}

/// Aborts the task if the caller stops waiting (an exception from a signal handler), so an
/// interrupted call does not go on in the background.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the runtime and waits for it with the GIL released, checking signals every
/// [`SIGNAL_POLL`]. A core error becomes the matching exception.
pub(crate) fn run<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = overlay_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime(py)?;
    let mut task = AbortOnDrop(rt.spawn(fut));
    loop {
        let slice = py
            .detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut task.0).await }));
        match slice {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(err))) => return Err(errors::to_py(py, &err)),
            Ok(Err(join)) => {
                return Err(errors::internal(
                    py,
                    "run operation",
                    format!("the operation's task failed: {join}"),
                ));
            }
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// Waits up to `timeout` (forever with `None`) for `poll` to produce a value, in slices of
/// [`SIGNAL_POLL`] with the GIL released and signals checked between slices. `poll` is called
/// once per slice and must be cancellation safe (a slice that runs out drops its future).
/// Returns `None` when the timeout passed.
pub(crate) fn wait<P, Fut, T>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut poll: P,
) -> PyResult<Option<T>>
where
    P: FnMut() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let rt = runtime(py)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            None => SIGNAL_POLL,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_POLL),
        };
        let got =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, poll()).await.ok() }));
        if let Some(value) = got {
            return Ok(Some(value));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// A duration in seconds from Python (`param` names it in errors): `None` for none given;
/// negative, NaN or infinite is refused.
pub(crate) fn seconds_arg(
    py: Python<'_>,
    op: &'static str,
    param: &str,
    seconds: Option<f64>,
) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            errors::invalid(
                py,
                op,
                format!("{param} must be a non-negative number of seconds or None, not {s}"),
            )
        }),
    }
}

/// Holds a value whose last drop must happen on the runtime: a store's or controller's
/// background machinery may spawn or need the reactor when it shuts down, and Python drops
/// objects on its own threads, outside any runtime. Also remembers its [`Home`].
pub(crate) struct DropInRuntime<T: Send + 'static> {
    value: ManuallyDrop<T>,
    home: Home,
}

impl<T: Send + 'static> DropInRuntime<T> {
    pub(crate) fn new(value: T) -> Self {
        DropInRuntime {
            value: ManuallyDrop::new(value),
            home: Home::here(),
        }
    }

    /// The value, unless this is a forked child of the process that made it.
    pub(crate) fn get(&self, py: Python<'_>, op: &'static str) -> PyResult<&T> {
        self.home.check(py, op)?;
        Ok(&self.value)
    }

    /// The value without the fork check, for reading plain fields.
    pub(crate) fn peek(&self) -> &T {
        &self.value
    }
}

impl<T: Send + 'static> Drop for DropInRuntime<T> {
    fn drop(&mut self) {
        // SAFETY: the value is taken exactly once, here, and `self` is never used after drop.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        if !self.home.is_here() {
            // A forked child's copy: closing it would close the parent's sessions and sockets.
            std::mem::forget(value);
            return;
        }
        let slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
        match *slot {
            Some((_, rt)) => drop(rt.spawn(async move { drop(value) })),
            None => drop(value),
        }
    }
}

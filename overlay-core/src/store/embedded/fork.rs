//! Forks and SQLite. `fork()` copies the memory of every thread but runs only the calling one,
//! so whatever another thread held at that instant stays held in the child for ever: a mutex
//! of SQLite's, or SQLite's in-process record of the file locks a half-done transaction took.
//! The child's first connection to the same file shares that per-file record, and waits on it.
//! (A Python child of `multiprocessing`'s default start method opening a store is the case.)
//!
//! So the store's threads do their SQLite work in [`Stretch`]es, and a fork, through
//! `pthread_atfork`, waits for the stretches under way to end and lets no new one begin until
//! it is done: the child is copied from a process in which no thread is inside SQLite. A
//! stretch is one job or one round of the background thread, milliseconds, so a fork waits at
//! most that long (or, while a write waits for another process's lock, that wait's timeout).
//!
//! The rule that keeps it deadlock-free: a thread never waits for another thread while it is
//! in a stretch (the worker leaves its stretch before it joins the background thread), and a
//! thread never enters a second stretch inside its first.

use std::cell::RefCell;
use std::sync::{Condvar, Mutex, MutexGuard, Once};

use crate::sync::lock;

/// How many stretches are under way, and whether a fork is waiting for them.
#[derive(Debug, Default)]
struct State {
    active: usize,
    forking: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    active: 0,
    forking: false,
});
static CHANGED: Condvar = Condvar::new();
static INSTALL: Once = Once::new();

thread_local! {
    /// The forking thread holds the state's lock across `fork()`, so no other thread holds it
    /// at the instant of the copy (the child would find it locked for ever).
    static HELD: RefCell<Option<MutexGuard<'static, State>>> = const { RefCell::new(None) };
}

/// A stretch of SQLite work: while one is under way, no fork happens. Ends when dropped.
#[derive(Debug)]
#[must_use = "the stretch ends when this is dropped"]
pub(super) struct Stretch(());

impl Stretch {
    /// Waits for a fork under way to finish, then begins a stretch.
    pub(super) fn begin() -> Stretch {
        INSTALL.call_once(install);
        let mut state = lock(&STATE);
        while state.forking {
            state = CHANGED
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.active += 1;
        Stretch(())
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        let mut state = lock(&STATE);
        state.active -= 1;
        if state.active == 0 {
            CHANGED.notify_all();
        }
    }
}

fn install() {
    // SAFETY: the three handlers are `extern "C"` functions of no arguments that never unwind
    // (they only lock, wait and unlock a mutex this module owns).
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    if rc != 0 {
        // Only ENOMEM is documented: forks are then unguarded, as before this module.
        tracing::warn!(
            errno = rc,
            "cannot register the embedded store's fork handler; a forked child that opens \
             the same store may hang"
        );
    }
}

/// Before `fork()`: waits until no stretch is under way, and keeps new ones from starting.
extern "C" fn prepare() {
    let mut state = lock(&STATE);
    state.forking = true;
    while state.active > 0 {
        state = CHANGED
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    HELD.with(|h| *h.borrow_mut() = Some(state));
}

/// After `fork()`, in the parent and in the child: stretches may begin again.
extern "C" fn after() {
    HELD.with(|h| {
        if let Some(mut state) = h.borrow_mut().take() {
            state.forking = false;
            drop(state);
            CHANGED.notify_all();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_waits_for_the_stretch_under_way() {
        let stretch = Stretch::begin();
        let (tx, rx) = std::sync::mpsc::channel();
        let forker = std::thread::spawn(move || {
            prepare();
            tx.send(()).unwrap();
            after();
        });
        // The fork's preparation cannot end while the stretch lasts.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "prepare returned while a stretch was under way"
        );
        drop(stretch);
        rx.recv().expect("prepare returns once the stretch ends");
        forker.join().unwrap();
        // And stretches begin again after it.
        drop(Stretch::begin());
    }
}

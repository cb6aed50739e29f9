//! Wakes the poller as soon as any process commits: inotify on the file's write-ahead log, which
//! every commit appends to. Without it (inotify unavailable or out of watches) the poller still
//! polls every 10 ms; with it a change made by another process reaches watchers here in well
//! under a millisecond instead of half a poll period on average.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use super::background::Msg;

/// How long the notifier sleeps at most between two checks of [`Flags::stop`].
const STOP_CHECK_MS: libc::c_int = 250;

/// How long the notifier naps after a change while nobody watches.
const IDLE_NAP: std::time::Duration = std::time::Duration::from_millis(50);

/// Flags the background thread shares with its notifier.
#[derive(Debug, Default)]
pub(super) struct Flags {
    /// The background thread exited: the notifier exits too.
    pub(super) stop: AtomicBool,
    /// The background thread has watchers, so wake-ups are worth sending.
    pub(super) wanted: AtomicBool,
}

/// Starts a thread that sends [`Msg::Wake`] to `bg` whenever the write-ahead log of the store
/// file `db` changes. Returns false (and the poller keeps its 10 ms period) if inotify cannot
/// watch the log.
pub(super) fn spawn(db: &Path, bg: Sender<Msg>, flags: Arc<Flags>) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let Ok(wal) = CString::new(wal.as_bytes()) else {
        return false;
    };
    // SAFETY: inotify_init1 takes no pointers; a non-negative result is a new descriptor.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        tracing::debug!("inotify unavailable; watch delivery falls back to 10 ms polling");
        return false;
    }
    // SAFETY: `raw` is a descriptor we just created and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is a valid inotify descriptor and `wal` a NUL-terminated path that outlives
    // the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), wal.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        tracing::debug!(wal = ?wal, "cannot watch the write-ahead log; polling every 10 ms");
        return false;
    }
    std::thread::Builder::new()
        .name("overlay-store-notify".into())
        .spawn(move || run(&fd, &bg, &flags))
        .is_ok()
}

fn run(fd: &OwnedFd, bg: &Sender<Msg>, flags: &Flags) {
    let mut buf = [0u8; 4096];
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives across the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, STOP_CHECK_MS) };
        if flags.stop.load(Ordering::Acquire) {
            return;
        }
        if ready < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if ready == 0 {
            continue;
        }
        // Drain the queue: what changed does not matter, only that something did.
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
        if !flags.wanted.load(Ordering::Relaxed) {
            // Nobody watches: let changes pile up in the queue rather than wake on every
            // commit of a busy writer.
            std::thread::sleep(IDLE_NAP);
        } else if bg.send(Msg::Wake).is_err() {
            return;
        }
    }
}

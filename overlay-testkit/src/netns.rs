//! Private network namespaces for the members of a test cluster: each member runs alone in
//! one, with only its loopback, and the testkit's proxies are the only way in or out. Cutting
//! those proxies is then a real partition of that member, in both directions.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A network namespace of the test process's own, held open by a file descriptor (it has no
/// name under `/run/netns` and disappears when the last holder closes it).
#[derive(Debug)]
pub(crate) struct PrivateNetns(OwnedFd);

impl PrivateNetns {
    /// A new namespace with its loopback up (and so 127.0.0.1 assigned). Needs root.
    pub(crate) fn new() -> io::Result<PrivateNetns> {
        // unshare(CLONE_NEWNET) moves only the calling thread: do it on a thread of its own,
        // which ends right after, so no thread of the caller is left in the namespace.
        std::thread::spawn(|| {
            // SAFETY: unshare has no memory-safety preconditions.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            Ok(PrivateNetns(File::open("/proc/thread-self/ns/net")?.into()))
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// The descriptor, for a child process to enter before it execs.
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Runs `f` on a thread inside the namespace. Sockets made there stay in it when used
    /// from any other thread.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.0.try_clone()?;
        std::thread::spawn(move || {
            // SAFETY: setns on a descriptor of a network namespace this thread may enter.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
    }
}

/// Sets `lo` up in the calling thread's namespace (SIOCSIFFLAGS: no netlink library here).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket call; the descriptor is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a descriptor this function just opened and nothing else owns.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write `req`, a valid ifreq naming "lo".
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

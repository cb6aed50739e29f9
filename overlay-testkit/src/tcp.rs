//! TCP traffic inside network namespaces: the servers and clients the data-plane tests use to
//! prove a path works end to end, with real sockets.
//!
//! A namespace is named by its path (`/run/netns/<name>`, or any `ns/net` file): a thread enters
//! it with `setns` and every socket it opens lives there. Only the network namespace is entered
//! (never the mount namespace, see the README's facts about `ip netns exec`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Moves the calling thread into the network namespace at `netns`.
pub(crate) fn enter(netns: &Path) -> io::Result<()> {
    let file = File::open(netns)?;
    // SAFETY: setns on a descriptor this function owns; it only changes the calling thread's
    // network namespace, and the file stays open for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the network namespace at `netns` and returns its result.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        enter(&netns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
}

/// A TCP server in a namespace that writes a fixed greeting to every connection and closes
/// it; stopped (and its thread joined) when dropped.
pub struct TcpGreeter {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpGreeter {
    /// Listens on `addr` (port 0: any free port) inside the namespace at `netns`. `[::]`
    /// listens on IPv4 too (dual-stack by default).
    pub fn start(netns: &Path, addr: SocketAddr, greeting: &str) -> io::Result<TcpGreeter> {
        let greeting = greeting.to_string();
        TcpGreeter::answering(netns, addr, move |_| greeting.clone())
    }

    /// Like [`start`](Self::start), greeting each connection with `reply(its peer's address)`:
    /// a server that tells the client where it seems to come from (after NAT).
    pub fn answering(
        netns: &Path,
        addr: SocketAddr,
        reply: impl Fn(SocketAddr) -> String + Send + 'static,
    ) -> io::Result<TcpGreeter> {
        let netns: PathBuf = netns.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready, listening) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tcp-greeter".into())
            .spawn(move || {
                let listener = enter(&netns).and_then(|()| {
                    let l = TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                });
                let listener = match listener.and_then(|l| Ok((l.local_addr()?.port(), l))) {
                    Ok((port, l)) => {
                        let _ = ready.send(Ok(port));
                        l
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                // Polled, so that a drop stops it without a connection to wake it.
                while !stopped.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(reply(peer).as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        let port = listening
            .recv()
            .map_err(|_| io::Error::other("the server thread died"))??;
        Ok(TcpGreeter {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TcpGreeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from the namespace at `netns` to `addr` and reads what the server sends until it
/// closes; `None` when no connection could be made or nothing could be read within `limit`
/// (each of the connect and the read).
pub fn fetch(netns: &Path, addr: SocketAddr, limit: Duration) -> Option<String> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
        s.set_read_timeout(Some(limit)).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok().map(|_| text)
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The servers and clients themselves are exercised by the kernel, cluster and walkthrough
    // tests, inside namespaces those tests create: none runs in this machine's own namespace.

    #[test]
    fn a_namespace_that_is_not_one_is_an_error() {
        let e = TcpGreeter::start(
            Path::new("/nonexistent/ns"),
            "127.0.0.1:0".parse().unwrap(),
            "x",
        );
        assert!(e.is_err());
        assert!(in_netns(Path::new("/nonexistent/ns"), || ()).is_err());
    }
}

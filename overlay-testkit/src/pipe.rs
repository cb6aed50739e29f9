//! One-way TCP links between namespaces, for the members of a test cluster: a listener in one
//! namespace forwarding every connection to an address in another. A link can be held: it
//! then stops moving bytes and accepting connections, the way a network partition looks to
//! both ends (nothing is refused or reset: packets just stop arriving), and resumes when
//! released, as TCP does when a short partition heals.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::netns::PrivateNetns;

/// How often a held or idle link looks at its flags again.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Flags {
    held: AtomicBool,
    stop: AtomicBool,
    /// Every socket of every open connection, to close them when the link is dropped.
    conns: Mutex<Vec<TcpStream>>,
}

/// A link from a listener to `target` in namespace `to` (the caller's when `None`); it stops
/// when dropped, closing its connections.
#[derive(Debug)]
pub(crate) struct Link {
    flags: Arc<Flags>,
    /// The accept loop, which owns the listener: joined on drop, so that the port is closed
    /// (and connections to it refused) when the drop returns.
    accepting: Option<thread::JoinHandle<()>>,
}

impl Link {
    /// Forwards connections accepted on `listener` (already bound, in any namespace) to
    /// `target` inside `to`.
    pub(crate) fn start(
        listener: TcpListener,
        to: Option<Arc<PrivateNetns>>,
        target: SocketAddr,
    ) -> io::Result<Link> {
        listener.set_nonblocking(true)?;
        let flags = Arc::new(Flags::default());
        let f = flags.clone();
        let accepting = thread::Builder::new()
            .name("testkit-link".into())
            .spawn(move || accept(&listener, to.as_ref(), target, &f))?;
        Ok(Link {
            flags,
            accepting: Some(accepting),
        })
    }

    /// Stops moving bytes and accepting connections until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.flags.held.store(true, Ordering::SeqCst);
    }

    /// Lets bytes and connections through again.
    pub(crate) fn release(&self) {
        self.flags.held.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
        for c in self
            .flags
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept(
    listener: &TcpListener,
    to: Option<&Arc<PrivateNetns>>,
    target: SocketAddr,
    f: &Arc<Flags>,
) {
    while !f.stop.load(Ordering::SeqCst) {
        // A held link leaves new connections in the listen queue: their handshake completed,
        // nothing answers, as across a partition.
        if f.held.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => return,
        };
        let (to, f) = (to.cloned(), f.clone());
        // Connecting may take a while (a killed member): never in the accept loop.
        thread::spawn(move || {
            let connect = move || TcpStream::connect_timeout(&target, Duration::from_secs(2));
            let server = match &to {
                Some(ns) => ns.run(connect).and_then(|r| r),
                None => connect(),
            };
            let Ok(server) = server else {
                return; // the client sees its connection closed, as when nobody listens
            };
            forward(client, server, &f);
        });
    }
}

/// Copies both ways until either end closes.
fn forward(client: TcpStream, server: TcpStream, f: &Arc<Flags>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    f.conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([client, server]);
    for pair in pairs {
        if let (Ok(from), Ok(to)) = pair {
            let f = f.clone();
            thread::spawn(move || copy(from, to, &f));
        }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, f: &Flags) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    while !f.stop.load(Ordering::SeqCst) {
        // Held: the bytes wait in the kernel's buffers, and the sender's window fills.
        if f.held.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

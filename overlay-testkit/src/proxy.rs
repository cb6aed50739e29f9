//! A loopback TCP proxy that a test can cut, to partition a client from its server while both
//! keep running (sessions and leases then expire on the server, as after a network split).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A TCP proxy from a free loopback port to `target`; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every open connection, to shut them down on a cut.
    conns: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Starts forwarding connections to `target` (`host:port`).
    pub fn start(target: &str) -> io::Result<TcpProxy> {
        let target: SocketAddr = target
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{target}: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::Builder::new()
            .name("testkit-proxy".into())
            .spawn(move || accept(&listener, target, &s))?;
        Ok(TcpProxy { addr, shared })
    }

    /// `127.0.0.1:PORT` to give clients instead of the server's address.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn accept(listener: &TcpListener, target: SocketAddr, s: &Shared) {
    while !s.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => return,
        };
        if s.cut.load(Ordering::SeqCst) {
            continue; // dropped: the client sees the connection closed
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue;
        };
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        {
            let mut conns = s.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.extend([client, server]);
        }
        for pair in pairs {
            if let (Ok(mut from), Ok(mut to)) = pair {
                thread::spawn(move || {
                    let _ = io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn forwards_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for mut c in echo.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(&target).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        proxy.cut();
        let mut rest = Vec::new();
        assert_eq!(
            c.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
            0,
            "cut closes"
        );
        let mut c2 = TcpStream::connect(proxy.addr()).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = c2.write_all(b"x");
        assert_eq!(c2.read(&mut buf).unwrap_or(0), 0, "a cut proxy refuses");
        proxy.restore();
        let mut c3 = TcpStream::connect(proxy.addr()).unwrap();
        c3.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c3.write_all(b"pong").unwrap();
        c3.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}

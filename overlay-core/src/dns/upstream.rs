//! Forwarding the names that are not ours to the host's own resolvers.
//!
//! Queries leave from the host namespace (the sandbox a query arrives in has no way out: the
//! resolver's thread entered the host's), each on a fresh socket with a fresh id and source
//! port, so an answer can only be taken for the query it belongs to. Each upstream gets
//! [`PER_TRY`]; the whole exchange stays under [`BUDGET`], inside the 5 s a stub resolver waits
//! before it retries, so the client's own retry still finds us listening rather than busy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream has to answer one query.
pub(crate) const PER_TRY: Duration = Duration::from_millis(1500);
/// How long a forwarded query may take over all upstreams.
pub(crate) const BUDGET: Duration = Duration::from_millis(4000);
/// The largest answer taken over UDP (EDNS's usual ceiling is well under it).
const MAX_UDP: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Udp,
    Tcp,
}

fn make_socket(kind: Kind, to: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(to);
    let s = match kind {
        Kind::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        Kind::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
    };
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    Ok(s)
}

/// The host's upstream resolvers.
#[derive(Debug)]
pub(crate) struct Upstreams {
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    /// Forwards to `servers`, in order.
    pub(crate) fn new(servers: Vec<SocketAddr>) -> Upstreams {
        Upstreams { servers }
    }

    /// Sends `query` (a whole DNS message) to each upstream in turn until one answers; over
    /// TCP when `tcp` or when a UDP answer came truncated. The answer carries the query's id.
    /// Its sockets live in the calling thread's namespace: the resolver's thread entered the
    /// host's.
    pub(crate) async fn exchange(&self, query: &[u8], tcp: bool) -> std::io::Result<Vec<u8>> {
        if query.len() < 12 {
            return Err(std::io::Error::other("a DNS query is at least 12 bytes"));
        }
        let start = Instant::now();
        let mut last = std::io::Error::other("no upstream resolver is configured");
        for server in &self.servers {
            let Some(left) = BUDGET.checked_sub(start.elapsed()) else {
                break;
            };
            let limit = PER_TRY.min(left);
            let mut q = query.to_vec();
            let id: u16 = rand::random();
            q[..2].copy_from_slice(&id.to_be_bytes());
            let tried = tokio::time::timeout(limit, async {
                let answer = if tcp {
                    self.over_tcp(*server, &q).await?
                } else {
                    let a = self.over_udp(*server, &q, id).await?;
                    if truncated(&a) {
                        self.over_tcp(*server, &q).await?
                    } else {
                        a
                    }
                };
                check_answer(&answer, id)?;
                Ok::<_, std::io::Error>(answer)
            })
            .await;
            match tried {
                Ok(Ok(mut answer)) => {
                    answer[..2].copy_from_slice(&query[..2]);
                    return Ok(answer);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{server} did not answer within {limit:?}"),
                    )
                }
            }
            tracing::debug!(%server, error = %last, "upstream resolver failed; trying the next");
        }
        Err(last)
    }

    async fn over_udp(&self, to: SocketAddr, q: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
        let s = make_socket(Kind::Udp, to)?;
        let s = tokio::net::UdpSocket::from_std(s.into())?;
        // Connected: the kernel drops datagrams from anyone but the upstream.
        s.connect(to).await?;
        s.send(q).await?;
        let mut buf = vec![0u8; MAX_UDP];
        loop {
            let n = s.recv(&mut buf).await?;
            // A stray datagram with another id is not the answer: keep waiting for it.
            if n >= 2 && buf[..2] == id.to_be_bytes() {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn over_tcp(&self, to: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
        let s = make_socket(Kind::Tcp, to)?;
        let std_stream: std::net::TcpStream = s.into();
        let mut stream = tokio::net::TcpSocket::from_std_stream(std_stream)
            .connect(to)
            .await?;
        let len = u16::try_from(q.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(q.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(q);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }
}

/// Whether a DNS message has the TC bit.
fn truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// An answer is a response (QR) to the query with `id`.
fn check_answer(msg: &[u8], id: u16) -> std::io::Result<()> {
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() || msg[2] & 0x80 == 0 {
        return Err(std::io::Error::other(
            "the upstream sent something that is not the answer to this query",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream on loopback answering every query with its own bytes, QR set, after `delay`.
    async fn echo_upstream(delay: Duration) -> SocketAddr {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80;
                tokio::time::sleep(delay).await;
                let _ = s.send_to(&a, from).await;
            }
        });
        addr
    }

    fn query(id: u16) -> Vec<u8> {
        let mut q = vec![0u8; 12];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q
    }

    #[tokio::test]
    async fn the_next_upstream_answers_when_one_is_silent() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ok = echo_upstream(Duration::ZERO).await;
        let up = Upstreams::new(vec![silent.local_addr().unwrap(), ok]);
        let start = Instant::now();
        let answer = up.exchange(&query(0xbeef), false).await.unwrap();
        assert_eq!(
            answer[..2],
            0xbeef_u16.to_be_bytes(),
            "the client's id comes back"
        );
        assert!(answer[2] & 0x80 != 0);
        let took = start.elapsed();
        assert!(
            took >= PER_TRY,
            "the silent one had its whole try: {took:?}"
        );
    }

    #[tokio::test]
    async fn no_upstream_is_an_error_not_a_hang() {
        let up = Upstreams::new(vec![]);
        assert!(up.exchange(&query(1), false).await.is_err());
        assert!(up.exchange(&[0u8; 3], false).await.is_err(), "too short");
    }
}

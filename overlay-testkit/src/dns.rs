//! DNS inside network namespaces: a stub client that asks one question as a container would,
//! and an upstream resolver that answers a fixed zone and counts what reaches it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::tcp::{enter, in_netns};

/// What a resolver answered one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The response code: `NoError`, `NXDomain`, `Refused`, `ServFail`, ...
    pub code: String,
    /// The addresses of the A and AAAA records of the answer section.
    pub addresses: Vec<IpAddr>,
    /// The targets of its PTR records (without the root's dot).
    pub names: Vec<String>,
    /// The AA bit.
    pub authoritative: bool,
}

/// The `in-addr.arpa` / `ip6.arpa` name of `ip`.
pub fn reverse_name(ip: IpAddr) -> String {
    Name::from(ip).to_ascii()
}

/// Asks `server` for `name` (`qtype`: "A", "AAAA", "PTR", ...) from the namespace at `netns`,
/// over TCP when `tcp`; `None` when nothing answered within `limit`.
pub fn dns_query(
    netns: &Path,
    server: SocketAddr,
    name: &str,
    qtype: &str,
    tcp: bool,
    limit: Duration,
) -> Option<DnsAnswer> {
    let qname = Name::from_ascii(name).ok()?;
    let rtype: RecordType = qtype.parse().ok()?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, rtype));
    let id = msg.metadata.id;
    let bytes = msg.to_vec().ok()?;
    let raw = in_netns(netns, move || exchange(server, &bytes, tcp, limit).ok())
        .ok()
        .flatten()?;
    let answer = Message::from_vec(&raw).ok()?;
    if answer.metadata.id != id {
        return None;
    }
    let mut addresses = Vec::new();
    let mut names = Vec::new();
    for r in &answer.answers {
        match &r.data {
            RData::A(a) => addresses.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => addresses.push(IpAddr::V6(a.0)),
            RData::PTR(p) => names.push(p.0.to_ascii().trim_end_matches('.').to_string()),
            _ => {}
        }
    }
    Some(DnsAnswer {
        code: format!("{:?}", answer.metadata.response_code),
        addresses,
        names,
        authoritative: answer.metadata.authoritative,
    })
}

fn exchange(server: SocketAddr, q: &[u8], tcp: bool, limit: Duration) -> io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    if tcp {
        let mut s = TcpStream::connect_timeout(&server, limit)?;
        s.set_read_timeout(Some(limit))?;
        let len = u16::try_from(q.len()).map_err(io::Error::other)?;
        s.write_all(&len.to_be_bytes())?;
        s.write_all(q)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        return Ok(buf);
    }
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(server)?;
    s.set_read_timeout(Some(limit))?;
    s.send(q)?;
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// An upstream resolver in a namespace: answers A for the names it was given, NXDOMAIN for
/// every other, over UDP; counts the queries it saw. Stopped when dropped.
pub struct DnsUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsUpstream {
    /// Serves `zone` (name → address) on UDP `addr` inside the namespace at `netns`.
    pub fn start(netns: &Path, addr: SocketAddr, zone: &[(&str, Ipv4Addr)]) -> io::Result<Self> {
        let zone: HashMap<String, Ipv4Addr> = zone
            .iter()
            .map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), *a))
            .collect();
        let netns: PathBuf = netns.to_path_buf();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = std::sync::mpsc::channel();
        let (seen, stopped) = (queries.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dns-upstream".into())
            .spawn(move || {
                let socket = enter(&netns).and_then(|()| {
                    let s = UdpSocket::bind(addr)?;
                    s.set_read_timeout(Some(Duration::from_millis(20)))?;
                    Ok(s)
                });
                let socket = match socket.and_then(|s| Ok((s.local_addr()?, s))) {
                    Ok((a, s)) => {
                        let _ = ready.send(Ok(a));
                        s
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let mut buf = [0u8; 4096];
                while !stopped.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    seen.fetch_add(1, Ordering::Relaxed);
                    if let Some(a) = answer(&buf[..n], &zone) {
                        let _ = socket.send_to(&a, from);
                    }
                }
            })?;
        let addr = bound
            .recv()
            .map_err(|_| io::Error::other("the upstream thread died"))??;
        Ok(DnsUpstream {
            addr,
            queries,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it answers on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries reached it.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

fn answer(query: &[u8], zone: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut a = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    a.metadata.recursion_desired = q.metadata.recursion_desired;
    a.metadata.recursion_available = true;
    a.add_query(question.clone());
    let key = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match zone.get(&key) {
        Some(ip) if question.query_type() == RecordType::A => {
            a.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(*ip)),
            ));
        }
        Some(_) => {}
        None => a.metadata.response_code = ResponseCode::NXDomain,
    }
    a.to_vec().ok()
}

impl Drop for DnsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! One network's resolver socket pair and the answers it gives, on hickory-server.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::names::{Directory, Lookup};
use super::upstream::Upstreams;
use crate::error::{Error, Result};
use crate::model::NetworkId;

/// Our names are answered with TTL 0: a container that goes stops resolving at once, even
/// behind a caching stub.
const TTL: u32 = 0;
/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// The host's current [`Directory`], swapped whole on every change.
#[derive(Debug, Default)]
pub(crate) struct Names(RwLock<Arc<Directory>>);

impl Names {
    /// The directory as it is now.
    pub(crate) fn current(&self) -> Arc<Directory> {
        crate::sync::read(&self.0).clone()
    }

    /// Makes `f` of the current directory the current one.
    pub(crate) fn update(&self, f: impl FnOnce(&Directory) -> Directory) {
        let mut cur = crate::sync::write(&self.0);
        let next = f(&cur);
        *cur = Arc::new(next);
    }
}

/// Answers the queries arriving on one network's resolver address.
pub(crate) struct Handler {
    pub(crate) network: NetworkId,
    pub(crate) names: Arc<Names>,
    pub(crate) upstreams: Arc<Upstreams>,
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The address a `PTR` question asks about, when its name is a whole reverse name.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The client's UDP size, for the answer (without one, answers stop at 512 bytes).
fn answer_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|e| {
        let mut ours = Edns::new();
        ours.set_max_payload(e.max_payload().max(512));
        ours
    })
}

impl Handler {
    async fn send<R: ResponseHandler>(
        request: &Request,
        mut rh: R,
        code: ResponseCode,
        answers: &[Record],
    ) -> ResponseInfo {
        let edns = answer_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = code != ResponseCode::Refused && code != ResponseCode::ServFail;
        meta.recursion_available = true;
        meta.response_code = code;
        let response = builder.build(meta, answers, [], [], []);
        rh.send_response(response)
            .await
            .unwrap_or_else(|_| failed(request))
    }

    async fn forward<R: ResponseHandler>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        let tcp = request.protocol() == Protocol::Tcp;
        let up = match self.upstreams.exchange(request.as_slice(), tcp).await {
            Ok(bytes) => Message::from_vec(&bytes).ok(),
            Err(e) => {
                tracing::debug!(error = %e, "no upstream answered");
                None
            }
        };
        let Some(up) = up else {
            return Self::send(request, rh, ResponseCode::ServFail, &[]).await;
        };
        let edns = answer_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = up.metadata;
        meta.id = request.metadata.id;
        meta.authoritative = false;
        let response = builder.build(meta, &up.answers, &up.authorities, [], &up.additionals);
        rh.send_response(response)
            .await
            .unwrap_or_else(|_| failed(request))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        rh: R,
    ) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return Self::send(request, rh, ResponseCode::NotImp, &[]).await;
        }
        let Ok(info) = request.request_info() else {
            return Self::send(request, rh, ResponseCode::FormErr, &[]).await;
        };
        let asked = info.query.original().name().clone();
        let qtype = info.query.query_type();
        if info.query.query_class() != DNSClass::IN {
            return Self::send(request, rh, ResponseCode::Refused, &[]).await;
        }
        let lower = info.query.name().to_ascii();
        let qname = lower.strip_suffix('.').unwrap_or(&lower);
        let reverse = if qtype == RecordType::PTR {
            reverse_address(&asked)
        } else {
            None
        };
        let source = request.src().ip().to_canonical();
        let found = self
            .names
            .current()
            .lookup(&self.network, source, qname, reverse);
        match found {
            Lookup::Refused | Lookup::Elsewhere { forward: false } => {
                Self::send(request, rh, ResponseCode::Refused, &[]).await
            }
            Lookup::NoSuchName => Self::send(request, rh, ResponseCode::NXDomain, &[]).await,
            Lookup::Addresses(ips) => {
                let answers: Vec<Record> = ips
                    .into_iter()
                    .filter_map(|ip| match (ip, qtype) {
                        (IpAddr::V4(a), RecordType::A | RecordType::ANY) => Some(RData::A(A(a))),
                        (IpAddr::V6(a), RecordType::AAAA | RecordType::ANY) => {
                            Some(RData::AAAA(AAAA(a)))
                        }
                        _ => None,
                    })
                    .map(|rdata| Record::from_rdata(asked.clone(), TTL, rdata))
                    .collect();
                Self::send(request, rh, ResponseCode::NoError, &answers).await
            }
            Lookup::Pointer(target) => {
                let answers: Vec<Record> = Name::from_ascii(format!("{target}."))
                    .ok()
                    .map(|n| Record::from_rdata(asked.clone(), TTL, RData::PTR(PTR(n))))
                    .into_iter()
                    .collect();
                Self::send(request, rh, ResponseCode::NoError, &answers).await
            }
            Lookup::Elsewhere { forward: true } => self.forward(request, rh).await,
        }
    }
}

/// The thread every resolver of a host runs on: a single-threaded runtime of its own, so that
/// a query is received, answered and sent on one thread without a hand-off between workers,
/// and the agent's own work (a resync, a heal) never delays an answer. The thread lives in the
/// host's namespace, so that forwarded queries leave from there; the resolvers' own sockets
/// were bound in their sandboxes before they were handed over.
pub(crate) struct ResolverThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResolverThread {
    /// Starts the thread in the namespace `host` (the caller's when `None`).
    pub(crate) fn start(host: Option<&crate::dataplane::Netns>) -> Result<ResolverThread> {
        let op = "start resolver";
        let host = host.map(crate::dataplane::Netns::try_clone).transpose()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(op, "cannot make the resolver's runtime", e))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, entered) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("overlay-dns".into())
            .spawn(move || {
                let inside = host.as_ref().map_or(Ok(()), crate::dataplane::Netns::enter);
                let failed = inside.is_err();
                let _ = ready.send(inside);
                if failed {
                    return;
                }
                // Ends when the owner goes (the sender is sent to or dropped); the runtime's
                // tasks go with it.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| Error::io(op, "cannot start the resolver's thread", e))?;
        entered
            .recv()
            .map_err(|_| Error::internal(op, "the resolver's thread died"))??;
        Ok(ResolverThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ResolverThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A network's resolver: hickory's server over one UDP socket and one TCP listener. Dropping
/// it stops both (the sockets close with the server's tasks).
pub(crate) struct NetworkResolver {
    server: Server<Handler>,
    address: SocketAddr,
}

impl std::fmt::Debug for NetworkResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkResolver")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NetworkResolver {
    /// Serves `handler` on sockets already bound (in the network's sandbox) to one address,
    /// on `thread`.
    pub(crate) fn start(
        thread: &ResolverThread,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        handler: Handler,
    ) -> Result<NetworkResolver> {
        let op = "start resolver";
        let address = udp
            .local_addr()
            .map_err(|e| Error::io(op, "the resolver socket has no address", e))?;
        for r in [udp.set_nonblocking(true), tcp.set_nonblocking(true)] {
            r.map_err(|e| Error::io(op, "cannot make the resolver sockets non-blocking", e))?;
        }
        // The sockets and the server's tasks belong to the resolver's runtime.
        let _runtime = thread.handle.enter();
        let udp = tokio::net::UdpSocket::from_std(udp)
            .map_err(|e| Error::io(op, "cannot register the UDP socket", e))?;
        let tcp = tokio::net::TcpListener::from_std(tcp)
            .map_err(|e| Error::io(op, "cannot register the TCP listener", e))?;
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 32);
        Ok(NetworkResolver { server, address })
    }

    /// The address it answers on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops it and waits until its sockets are closed: they hold the sandbox's namespace,
    /// and with it the VNI a rebuilt sandbox needs.
    pub(crate) async fn stop(mut self) {
        self.server.shutdown_token().cancel();
        if let Err(e) = self.server.block_until_done().await {
            tracing::debug!(error = %e, "the resolver ended with an error");
        }
    }
}

impl Drop for NetworkResolver {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

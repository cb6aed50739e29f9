//! The host agent: one per host, a set of tokio tasks inside the embedding process.
//!
//! It registers the host (an ephemeral record), watches the endpoints of every network that
//! has containers on this host (one watch per such network, deltas only), programs and removes
//! peers in the network's sandbox, resyncs against kernel state after a reconnect or a
//! [`Resync`](crate::store::WatchEvent::Resync), forgets hosts whose record vanished, reclaims
//! their addresses after a grace period, keeps every local container's hosts file current, and
//! answers name lookups for embedders.

mod claim;
pub(crate) mod dns;
mod files;
pub(crate) mod gateway;
mod heal;
pub(crate) mod health;
pub(crate) mod hosts;
mod live;
pub(crate) mod local;
mod network;
mod rewrite;
mod sweep;
pub(crate) mod view;

pub(crate) use dns::DnsSettings;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::dataplane::{Dataplane, GatewaySpec, Peer, SandboxSpec};
use crate::error::Result;
use crate::ipam::Ipam;
use crate::model::{Endpoint, EndpointId, Host, HostId, Network, NetworkId, keys};
use crate::report::{ControllerEvent, Health};
use crate::store::{KvStore, TxnOp};
use local::LocalState;
use view::NetworkView;

/// What an agent needs to know about its host.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    /// This host's record (id and advertise address).
    pub(crate) host: Host,
    /// How long after a host vanished its endpoints are removed and addresses reclaimed.
    pub(crate) reclaim_grace: Duration,
    /// MTU of overlay links when a network sets none; `None`: the underlay's minus 50.
    pub(crate) mtu: Option<u32>,
    /// UDP port of VXLAN traffic.
    pub(crate) vxlan_port: u16,
    /// This host's gateway bridge, for containers on non-internal networks.
    pub(crate) gateway: GatewaySpec,
    /// The embedded resolver at each network's gateway address; `None` turns it off.
    pub(crate) dns: Option<DnsSettings>,
}

impl AgentConfig {
    /// What this host's sandbox of `net` must look like.
    pub(crate) fn sandbox_spec(&self, net: &Network) -> SandboxSpec {
        SandboxSpec {
            network: net.id,
            vni: net.vni,
            mtu: net.mtu.or(self.mtu),
            vxlan_port: self.vxlan_port,
            vtep: self.host.advertise,
            addresses: match self.dns {
                Some(_) => dns::bridge_addresses(net),
                None => Vec::new(),
            },
        }
    }
}

/// The per-network state of networks with containers on this host.
struct NetState {
    network: Network,
    view: NetworkView,
    /// What this agent last programmed into the sandbox.
    programmed: BTreeSet<Peer>,
    /// A programming step failed: the next reconcile diffs against the kernel.
    dirty: bool,
    /// Serialises reconciles of this network (the watch task and join/leave both run them).
    reconciling: Arc<tokio::sync::Mutex<()>>,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    nets: BTreeMap<NetworkId, NetState>,
}

pub(crate) struct Shared {
    store: Arc<dyn KvStore>,
    ipam: Arc<dyn Ipam>,
    dataplane: Arc<dyn Dataplane>,
    cfg: AgentConfig,
    /// What this host made: the only source of paths the agent opens, writes or enters.
    local: Arc<LocalState>,
    /// Every background task's state.
    board: Arc<health::Board>,
    /// One lock per network: connect, disconnect, heal and the collection of dead containers
    /// of a network run one at a time on this host, so none removes what another just made.
    net_locks: Mutex<BTreeMap<NetworkId, Arc<tokio::sync::Mutex<()>>>>,
    state: Mutex<State>,
    live: watch::Sender<BTreeSet<HostId>>,
    events: broadcast::Sender<ControllerEvent>,
    /// Serialises changes to the gateway (its addresses and ports are shared by every network).
    gateway_lock: Arc<tokio::sync::Mutex<()>>,
    /// The networks' resolvers, unless turned off.
    dns: Option<dns::Resolvers>,
    /// The local containers' hosts files and `resolv.conf`s, and their writer's queue.
    files: files::Files,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        crate::sync::lock(&self.state)
    }

    fn me(&self) -> &HostId {
        &self.cfg.host.id
    }

    /// Waits for network `id`'s lock (see `net_locks`).
    async fn lock_network(&self, id: &NetworkId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = crate::sync::lock(&self.net_locks)
            .entry(*id)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Whether `ep` is one of this host's own: a record naming this host is not enough, this
    /// host must have made it (its local state has the entry).
    fn is_local(&self, ep: &Endpoint) -> bool {
        ep.host == *self.me() && self.local.contains(&ep.id)
    }

    /// Lets go of a local endpoint that was removed from the store: [`Agent::leave`].
    async fn leave(&self, network: &NetworkId, endpoint: &EndpointId) {
        let key = keys::endpoint(network, endpoint);
        let mut containers = Vec::new();
        let last = {
            let mut st = self.state();
            let me = self.me().clone();
            let Some(ns) = st.nets.get_mut(network) else {
                return;
            };
            for ep in ns.view.remove_key(&key).down {
                self.emit(ControllerEvent::down(&ep));
                containers.push(ep.container_id);
            }
            let any_local = ns
                .view
                .endpoints()
                .any(|e| e.host == me && self.local.contains(&e.id));
            if any_local {
                None
            } else {
                st.nets.remove(network)
            }
        };
        match last {
            Some(ns) => {
                if let Some(task) = ns.task {
                    task.abort();
                }
                self.board.forget(&format!("network {}", ns.network.name));
                // A heal or reconcile still running on this network finishes first, so it
                // cannot bring the sandbox back after it is removed.
                let _serial = ns.reconciling.lock().await;
                dns::stop(self, network).await;
                if let Err(e) = self.dataplane.remove_sandbox(network).await {
                    tracing::warn!(network = %ns.network.name, error = %e, "sandbox removal failed");
                }
            }
            None => network::reconcile(self, network, false).await,
        }
        // The container's other networks stay in its files; this one leaves them.
        for c in &containers {
            self.files.container_changed(c);
        }
    }

    fn emit(&self, ev: ControllerEvent) {
        // No receiver is not an error: nobody asked for events.
        let _ = self.events.send(ev);
    }
}

/// A running agent. Dropping it stops its tasks; [`Agent::close`] also withdraws the host.
pub(crate) struct Agent {
    shared: Arc<Shared>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", self.shared.me())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Registers the host (refusing an id a live agent holds, with
    /// [`AlreadyExists`](crate::ErrorKind::AlreadyExists)) and starts watching hosts and
    /// networks. Local endpoints are handed over with [`Agent::join`]; this host's own record
    /// of them is kept in `state_dir`, opened only once the host id is held, so a refused
    /// agent never touches the state of the one holding it.
    pub(crate) async fn start(
        store: Arc<dyn KvStore>,
        ipam: Arc<dyn Ipam>,
        dataplane: Arc<dyn Dataplane>,
        mut cfg: AgentConfig,
        state_dir: &std::path::Path,
        events: broadcast::Sender<ControllerEvent>,
    ) -> Result<Agent> {
        if cfg.host.holder.is_none() {
            cfg.host.holder = Some(claim::new_holder());
        }
        claim::claim(store.as_ref(), &cfg.host).await?;
        let opened = async {
            let local = Arc::new(LocalState::open(state_dir)?);
            let hosts = live::list_hosts(store.as_ref()).await?;
            // Listed before start returns: a network created right after is reported.
            let networks = store.list(keys::NETWORKS).await?;
            Ok::<_, crate::Error>((local, hosts, networks))
        };
        let opened = async {
            let (local, hosts, networks) = opened.await?;
            let dns = cfg.dns.as_ref().map(dns::Resolvers::new).transpose()?;
            Ok::<_, crate::Error>((local, hosts, networks, dns))
        };
        let (local, live_now, networks_now, dns) = match opened.await {
            Ok(ok) => ok,
            Err(e) => {
                claim::release(cfg.host.holder.as_ref());
                let _ = store.delete(&keys::host(&cfg.host.id)).await;
                return Err(e);
            }
        };
        let (live, _) = watch::channel(live_now);
        let shared = Arc::new(Shared {
            store,
            ipam,
            dataplane,
            cfg,
            local,
            board: Arc::default(),
            net_locks: Mutex::default(),
            state: Mutex::new(State::default()),
            live,
            events,
            gateway_lock: Arc::default(),
            dns,
            files: files::Files::default(),
        });
        let board = shared.board.clone();
        let task = |name: &str, run: fn(Arc<Shared>) -> _| {
            let s = shared.clone();
            health::supervise(board.clone(), name.to_string(), move || run(s.clone()))
        };
        let background = vec![
            task("hosts", |s| Box::pin(live::watch_hosts(s)) as Background),
            {
                // The listing made before start returned serves the first run only; a
                // restarted task lists again.
                let s = shared.clone();
                let first = Mutex::new(Some(networks_now));
                health::supervise(board.clone(), "networks".into(), move || {
                    let initial = crate::sync::lock(&first).take();
                    live::watch_networks(s.clone(), initial)
                })
            },
            task("sweep", |s| Box::pin(sweep::run(s)) as Background),
            task("files", |s| Box::pin(files::run(s)) as Background),
            task("heal", |s| Box::pin(heal::run(s)) as Background),
        ];
        Ok(Agent {
            shared,
            background: Mutex::new(background),
        })
    }

    /// Takes a local endpoint (just published, or found again after a restart) under care:
    /// starts watching its network if it is the first, and refreshes names.
    ///
    /// For the first local endpoint of a network, the network's endpoints are listed here,
    /// so the sandbox holds every remote peer known to the store when this returns: left to
    /// the watch task's own listing, a container's first packets could miss the peer, and the
    /// kernel retries a failed neighbour lookup only a second later.
    pub(crate) async fn join(&self, network: &Network, ep: Endpoint) {
        let id = network.id;
        let first = !self.shared.state().nets.contains_key(&id);
        let listing = if first {
            match self.shared.store.list(&keys::endpoints(&id)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    // The watch task lists again, with retries.
                    tracing::warn!(network = %network.name, error = %e, "cannot list the network's endpoints yet");
                    None
                }
            }
        } else {
            None
        };
        let start = {
            let mut st = self.shared.state();
            let ns = st.nets.entry(id).or_insert_with(|| NetState {
                network: network.clone(),
                view: NetworkView::default(),
                programmed: BTreeSet::new(),
                dirty: true,
                reconciling: Arc::default(),
                task: None,
            });
            if let Some(l) = &listing {
                let change = ns.view.replace(&id, &l.kvs);
                network::emit_changes(&self.shared, &change);
            }
            if ns.view.insert(&ep) {
                self.shared.emit(ControllerEvent::up(&ep));
            }
            ns.task.is_none()
        };
        self.shared.files.container_changed(&ep.container_id);
        if start {
            let shared = self.shared.clone();
            let name = network::task_name(&shared, &id);
            // The listing above serves the task's first run only; a restarted task lists again.
            let initial = Mutex::new(listing);
            let handle = health::supervise(self.shared.board.clone(), name, move || {
                let listing = crate::sync::lock(&initial).take();
                network::run(shared.clone(), id, listing)
            });
            if let Some(ns) = self.shared.state().nets.get_mut(&id) {
                ns.task = Some(handle);
            }
        }
        network::reconcile(&self.shared, &id, false).await;
        dns::ensure(&self.shared, network).await;
    }

    /// Writes local container `container_id`'s hosts file and `resolv.conf` now, from the
    /// names the last pass laid out: connect calls it before it returns, so a runtime can
    /// bind-mount them at once. The other containers' files follow at the writer's next pass.
    pub(crate) fn write_files_now(&self, container_id: &str) {
        files::write_now(&self.shared, container_id);
    }

    /// Serialises the caller with every other change of network `id` on this host (connect,
    /// disconnect, heal, the collection of dead containers) until the guard is dropped. Calls
    /// of this agent made while holding it ([`Agent::join`], [`Agent::leave`]) do not take it.
    pub(crate) async fn lock_network(&self, id: &NetworkId) -> NetworkGuard {
        NetworkGuard {
            _held: self.shared.lock_network(id).await,
        }
    }

    /// Waits for the gateway's lock: its addresses and ports are shared by every network, so
    /// a connect holds it from choosing them until its entry is in.
    pub(crate) async fn lock_gateway(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.shared.gateway_lock.clone().lock_owned().await
    }

    /// See [`gateway::prepare`]; the caller holds [`Agent::lock_gateway`].
    pub(crate) async fn prepare_gateway(
        &self,
        container_id: &str,
        netns: &std::path::Path,
        ifname: &str,
        ports: &[crate::model::PortMapping],
    ) -> Result<gateway::Prepared> {
        gateway::prepare(&self.shared, container_id, netns, ifname, ports).await
    }

    /// See [`gateway::publish_all`]; the caller holds [`Agent::lock_gateway`].
    pub(crate) async fn publish_gateway(&self) -> Result<()> {
        gateway::publish_all(&self.shared).await
    }

    /// See [`gateway::settle`]; the caller holds [`Agent::lock_gateway`].
    pub(crate) async fn settle_gateway(&self) {
        gateway::settle(&self.shared).await;
    }

    /// See [`gateway::release`]: after `entry` was removed from the host state.
    pub(crate) async fn release_gateway(&self, entry: &local::LocalEndpoint) {
        let _gateway = self.lock_gateway().await;
        gateway::release(&self.shared, entry).await;
    }

    /// See [`gateway::restore`].
    pub(crate) async fn restore_gateway(&self) {
        let _gateway = self.lock_gateway().await;
        gateway::restore(&self.shared).await;
    }

    /// Lets go of a local endpoint that was removed from the store. When it was the last one
    /// of its network on this host, stops watching the network and removes the sandbox.
    pub(crate) async fn leave(&self, network: &NetworkId, endpoint: &EndpointId) {
        self.shared.leave(network, endpoint).await;
    }

    /// The agent's configuration.
    pub(crate) fn config(&self) -> &AgentConfig {
        &self.shared.cfg
    }

    /// This host's endpoints, as the agent holds them (those this host made).
    pub(crate) fn local_endpoints(&self) -> Vec<Endpoint> {
        let st = self.shared.state();
        st.nets
            .values()
            .flat_map(|ns| {
                ns.view
                    .endpoints()
                    .filter(|e| self.shared.is_local(e))
                    .cloned()
            })
            .collect()
    }

    /// This host's own record of its endpoints.
    pub(crate) fn local(&self) -> &Arc<LocalState> {
        &self.shared.local
    }

    /// The addresses `name` resolves to on networks with containers on this host: a container
    /// name or alias, plain or as `name.network`.
    pub(crate) fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let st = self.shared.state();
        let live = self.shared.live.borrow();
        let mut out = BTreeSet::new();
        for ns in st.nets.values() {
            for ep in ns.view.endpoints().filter(|e| live.contains(&e.host)) {
                if names_of(ep, &ns.network.name).any(|n| n == name) {
                    out.extend(ep.addresses());
                }
            }
        }
        out.into_iter().collect()
    }

    /// This host's health: each background task's state, whether the store answers a read
    /// now (bounded by the store's timeout), and when the last sweep succeeded.
    pub(crate) async fn health(&self) -> Health {
        let probe = self.shared.store.get(&keys::host(self.shared.me())).await;
        let (tasks, last_sweep_ms) = self.shared.board.snapshot();
        let store_error = probe.err().map(|e| e.to_string());
        let healthy = store_error.is_none() && tasks.iter().all(|t| t.state == "running");
        Health {
            host: self.shared.me().to_string(),
            store_reachable: store_error.is_none(),
            store_error,
            last_sweep_ms,
            tasks,
            store_requests: self.shared.store.request_counts(),
            healthy,
        }
    }

    /// The hosts currently alive.
    pub(crate) fn live_hosts(&self) -> BTreeSet<HostId> {
        self.shared.live.borrow().clone()
    }

    /// Stops every task. Kernel state and store records stay: containers keep working, and a
    /// restarted agent takes them over again.
    pub(crate) async fn close(&self) {
        self.stop();
        if let Err(e) = claim::withdraw(self.shared.store.as_ref(), &self.shared.cfg.host).await {
            tracing::warn!(host = %self.shared.me(), error = %e, "could not withdraw the host record; it expires with the session");
        }
    }

    fn stop(&self) {
        claim::release(self.shared.cfg.host.holder.as_ref());
        let mut background = crate::sync::lock(&self.background);
        for t in background.drain(..) {
            t.abort();
        }
        for ns in self.shared.state().nets.values_mut() {
            if let Some(t) = ns.task.take() {
                t.abort();
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Held while a caller changes one network on this host ([`Agent::lock_network`]).
#[derive(Debug)]
pub(crate) struct NetworkGuard {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

/// A background task's future, as [`health::supervise`] restarts it.
type Background = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Every name an endpoint answers to on a network: its name and aliases, plain and suffixed.
pub(crate) fn names_of<'a>(
    ep: &'a Endpoint,
    network: &'a str,
) -> impl Iterator<Item = String> + 'a {
    std::iter::once(&ep.name)
        .chain(&ep.aliases)
        .flat_map(move |n| [n.clone(), format!("{n}.{network}")])
}

/// The transaction that removes an endpoint record with its uniqueness keys, each only if it
/// still belongs to this endpoint, so concurrent removers never delete someone else's keys.
pub(crate) async fn endpoint_removal(
    store: &dyn KvStore,
    ep: &Endpoint,
    version: crate::store::Version,
) -> Result<Vec<TxnOp>> {
    let mut ops = vec![TxnOp::DeleteIf {
        key: keys::endpoint(&ep.network, &ep.id),
        version,
    }];
    let own = ep.id.to_string();
    for key in [
        keys::container(&ep.network, &ep.container_id),
        keys::endpoint_name(&ep.network, &ep.name),
    ] {
        if let Some(kv) = store.get(&key).await?
            && kv.value == own.as_bytes()
        {
            ops.push(TxnOp::DeleteIf {
                key,
                version: kv.version,
            });
        }
    }
    Ok(ops)
}

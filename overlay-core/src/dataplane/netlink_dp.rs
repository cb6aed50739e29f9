//! [`NetlinkDataplane`]: the [`Dataplane`] of one host, over rtnetlink.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::conn::NlConn;
use super::damage::{self, Damage, SandboxCheck};
use super::endpoint::{Bridge, Uplink};
use super::netns::Netns;
use super::netns::NetnsId;
use super::netns::run_on_thread;
use super::own::OwnDeletions;
use super::sandbox::{self, Sandbox, blocking};
use super::{
    AttachSpec, AttachedVeth, Dataplane, GatewaySpec, Peer, PublishedPort, SandboxInfo,
    SandboxSockets, SandboxSpec, endpoint, firewall, gateway, peer,
};
use crate::error::{Error, ErrorKind, Result};
use crate::model::NetworkId;

/// The data plane of one host. The host is a network namespace (the caller's own by default)
/// holding the underlay and the VTEP address; its sandboxes are named namespaces
/// `ovl-<tag>-<network short id>`, so several hosts simulated in one machine (a namespace and a
/// tag each) never collide in `/run/netns`.
///
/// One netlink connection per namespace is opened once and reused: one to the host namespace
/// and one to each sandbox; container namespaces get a short-lived one per attach.
#[derive(Debug)]
pub struct NetlinkDataplane {
    tag: String,
    host: NlConn,
    // The host namespace, for what needs a thread inside it (nftables, sysctl); `None`: ours.
    host_ns: Option<Netns>,
    // Deletions on the gateway bridge (the host namespace reports none: kept for the shape).
    gateway_own: OwnDeletions,
    sandboxes: tokio::sync::Mutex<HashMap<NetworkId, Arc<Sandbox>>>,
    // What the sandboxes' namespaces report deleted.
    damage: tokio::sync::broadcast::Sender<Damage>,
    // Serializes sandbox creation and removal; attaches and peers only read the cache.
    lifecycle: tokio::sync::Mutex<()>,
    // The gateway as last made (its spec and bridge index) and the firewall rules last
    // applied: a connect that changes neither costs one link lookup, not a rebuild. Cleared
    // by a check (the heal's way in: what it finds broken is then made again for real) and
    // by removal.
    gateway_made: std::sync::Mutex<Option<(GatewaySpec, u32)>>,
    rules_applied: tokio::sync::Mutex<Option<firewall::GatewayRules>>,
}

impl NetlinkDataplane {
    /// A data plane for the caller's own network namespace as the host.
    pub async fn new(tag: &str) -> Result<NetlinkDataplane> {
        NetlinkDataplane::build(tag, None).await
    }

    /// A data plane whose host is the namespace `host` (one simulated host of several).
    pub async fn in_namespace(tag: &str, host: &Netns) -> Result<NetlinkDataplane> {
        NetlinkDataplane::build(tag, Some(host)).await
    }

    async fn build(tag: &str, host: Option<&Netns>) -> Result<NetlinkDataplane> {
        let ok = !tag.is_empty()
            && tag.len() <= 32
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !ok {
            return Err(
                Error::invalid("create dataplane", format!("invalid host tag {tag:?}")).with_hint(
                    "use 1 to 32 characters from [A-Za-z0-9_.] (no '-': it separates name parts)",
                ),
            );
        }
        let label = host.map_or_else(
            || "the host namespace".to_string(),
            |h| h.path().display().to_string(),
        );
        let host_ns = host.map(Netns::try_clone).transpose()?;
        let host = NlConn::open(host, &label).await?;
        Ok(NetlinkDataplane {
            tag: tag.to_string(),
            host,
            host_ns,
            gateway_own: OwnDeletions::default(),
            sandboxes: tokio::sync::Mutex::new(HashMap::new()),
            damage: tokio::sync::broadcast::channel(damage::BACKLOG).0,
            lifecycle: tokio::sync::Mutex::new(()),
            gateway_made: std::sync::Mutex::new(None),
            rules_applied: tokio::sync::Mutex::new(None),
        })
    }

    fn gateway_made_lock(&self) -> std::sync::MutexGuard<'_, Option<(GatewaySpec, u32)>> {
        crate::sync::lock(&self.gateway_made)
    }

    /// Forgets what the gateway was made to be: the next ensure and publish do their work.
    async fn forget_gateway(&self) {
        *self.gateway_made_lock() = None;
        *self.rules_applied.lock().await = None;
    }

    /// The nftables table (family `ip`) of this host's gateway.
    pub fn firewall_table(&self) -> String {
        format!("overlay-{}", self.tag)
    }

    /// The gateway bridge of `spec`, as containers are attached to it.
    async fn gateway_bridge(&self, spec: &GatewaySpec) -> Result<Bridge<'_>> {
        spec.validate()?;
        let index = gateway::existing(&self.host, &spec.bridge).await?;
        Ok(Bridge {
            conn: &self.host,
            index,
            mtu: 1500,
            label: self.host.label(),
            own: &self.gateway_own,
        })
    }

    /// The host tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The namespace name the sandbox of `network` has (or would have) on this host.
    pub fn sandbox_netns_name(&self, network: &NetworkId) -> String {
        sandbox::sandbox_name(&self.tag, network)
    }

    /// The open sandbox of `network`: cached, or found in the kernel (after a restart).
    async fn sandbox(&self, network: &NetworkId) -> Result<Arc<Sandbox>> {
        if let Some(sb) = self.sandboxes.lock().await.get(network) {
            return Ok(Arc::clone(sb));
        }
        let Some((sb, notes)) = sandbox::open_existing(&self.tag, network).await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                "open sandbox",
                format!(
                    "network {} has no sandbox on host {}",
                    network.short(),
                    self.tag
                ),
            )
            .with_hint("call ensure_sandbox for the network first"));
        };
        damage::forward(notes, *network, &sb, self.damage.clone());
        let sb = Arc::new(sb);
        self.sandboxes
            .lock()
            .await
            .insert(*network, Arc::clone(&sb));
        Ok(sb)
    }

    async fn existing_sandbox(&self, network: &NetworkId) -> Result<Option<Arc<Sandbox>>> {
        match self.sandbox(network).await {
            Ok(sb) => Ok(Some(sb)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Dataplane for NetlinkDataplane {
    async fn ensure_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        let _guard = self.lifecycle.lock().await;
        // Made with this spec by this process, and nothing of it reported deleted since: as
        // it was (the dumps of a full check grow with every container on the host).
        if let Some(sb) = self.sandboxes.lock().await.get(&spec.network)
            && sb.spec.as_ref() == Some(spec)
            && !sb.damaged.load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(sb.info(&spec.network, Some(spec.vni)));
        }
        self.sandboxes.lock().await.remove(&spec.network);
        let (sb, notes) = sandbox::ensure(&self.host, &self.tag, spec).await?;
        damage::forward(notes, spec.network, &sb, self.damage.clone());
        let sb = Arc::new(sb);
        let info = sb.info(&spec.network, Some(spec.vni));
        self.sandboxes.lock().await.insert(spec.network, sb);
        Ok(info)
    }

    async fn remove_sandbox(&self, network: &NetworkId) -> Result<()> {
        let _guard = self.lifecycle.lock().await;
        // Drop the cached connection first so its thread does not pin the namespace.
        self.sandboxes.lock().await.remove(network);
        sandbox::remove(&sandbox::sandbox_name(&self.tag, network)).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>> {
        let prefix = sandbox::prefix(&self.tag);
        let names = blocking(move || Netns::list_named(&prefix)).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(sandbox::describe(&name, &self.tag).await);
        }
        Ok(out)
    }

    async fn attach(&self, network: &NetworkId, spec: &AttachSpec) -> Result<AttachedVeth> {
        let sb = self.sandbox(network).await?;
        endpoint::attach(&sb.bridge(), spec, endpoint::Uplink::default()).await
    }

    async fn detach(&self, network: &NetworkId, netns: &Path, ifname: &str) -> Result<()> {
        let container = match Netns::open_path(netns) {
            Ok(ns) => ns,
            // The container's namespace is gone, and its veth pair with it.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.existing_sandbox(network).await? {
            Some(sb) => endpoint::detach(&sb.bridge(), &container, ifname).await,
            None => Ok(()),
        }
    }

    async fn add_peer(&self, network: &NetworkId, p: &Peer) -> Result<()> {
        let sb = self.sandbox(network).await?;
        peer::add(&sb, p).await
    }

    async fn add_peers(&self, network: &NetworkId, peers: &[Peer]) -> Result<()> {
        let sb = self.sandbox(network).await?;
        peer::add_many(&sb, peers).await
    }

    async fn remove_peer(&self, network: &NetworkId, p: &Peer) -> Result<()> {
        match self.existing_sandbox(network).await? {
            Some(sb) => peer::remove(&sb, p).await,
            None => Ok(()),
        }
    }

    async fn list_peers(&self, network: &NetworkId) -> Result<Vec<Peer>> {
        let sb = self.sandbox(network).await?;
        peer::list(&sb.conn, sb.vxlan).await
    }

    async fn ensure_gateway(&self, spec: &GatewaySpec) -> Result<()> {
        let made = self.gateway_made_lock().clone();
        if let Some((made, index)) = made
            && made == *spec
            && gateway::existing(&self.host, &spec.bridge).await.ok() == Some(index)
        {
            return Ok(());
        }
        let index = gateway::ensure(&self.host, self.host_ns.as_ref(), spec).await?;
        *self.gateway_made_lock() = Some((spec.clone(), index));
        Ok(())
    }

    async fn attach_gateway(
        &self,
        spec: &GatewaySpec,
        attach: &AttachSpec,
    ) -> Result<AttachedVeth> {
        let Some(ip) = attach.ipv4.filter(|ip| spec.pool.contains(&ip.addr())) else {
            return Err(Error::invalid(
                "attach gateway",
                format!(
                    "the gateway interface needs an IPv4 address in {}",
                    spec.pool
                ),
            )
            .with_hint("take the container's address from the gateway pool"));
        };
        if ip.addr() == spec.gateway() {
            return Err(Error::invalid(
                "attach gateway",
                format!("{} is the gateway bridge's own address", ip.addr()),
            ));
        }
        let uplink = Uplink {
            route_via: Some(spec.gateway()),
            isolated: true,
        };
        let bridge = self.gateway_bridge(spec).await?;
        endpoint::attach(&bridge, attach, uplink).await
    }

    async fn detach_gateway(&self, spec: &GatewaySpec, netns: &Path, ifname: &str) -> Result<()> {
        let container = match Netns::open_path(netns) {
            Ok(ns) => ns,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.gateway_bridge(spec).await {
            Ok(bridge) => endpoint::detach(&bridge, &container, ifname).await,
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sandbox_sockets(
        &self,
        network: &NetworkId,
        addr: std::net::SocketAddr,
    ) -> Result<SandboxSockets> {
        let sb = self.sandbox(network).await?;
        let ns = sb.ns.try_clone()?;
        let netns = ns.id();
        let label = sb.name.clone();
        let (udp, tcp) = blocking(move || {
            run_on_thread(move || {
                ns.enter()?;
                sandbox::bind_service(addr).map_err(|e| {
                    Error::io(
                        "bind in sandbox",
                        format!("cannot bind {addr} in {label}"),
                        e,
                    )
                    .with_hint("another process holds the address in the sandbox; stop it")
                })
            })
        })
        .await?;
        Ok(SandboxSockets { udp, tcp, netns })
    }

    async fn sandbox_netns(&self, network: &NetworkId) -> Result<Option<NetnsId>> {
        Ok(self.existing_sandbox(network).await?.map(|sb| sb.ns.id()))
    }

    async fn check_gateway(
        &self,
        spec: &GatewaySpec,
        attached: &[(NetnsId, String)],
    ) -> Result<SandboxCheck> {
        spec.validate()?;
        self.forget_gateway().await;
        gateway::check(&self.host, spec, attached).await
    }

    async fn publish(&self, spec: &GatewaySpec, ports: &[PublishedPort]) -> Result<()> {
        spec.validate()?;
        let rules = firewall::GatewayRules {
            table: self.firewall_table(),
            bridge: spec.bridge.clone(),
            pool: spec.pool,
            ports: ports.to_vec(),
        };
        let mut applied = self.rules_applied.lock().await;
        if applied.as_ref() == Some(&rules) {
            return Ok(());
        }
        *applied = None;
        firewall::apply(self.host_ns.as_ref(), &rules).await?;
        *applied = Some(rules);
        Ok(())
    }

    async fn remove_gateway(&self, spec: &GatewaySpec) -> Result<()> {
        spec.validate()?;
        self.forget_gateway().await;
        let table = firewall::remove(self.host_ns.as_ref(), &self.firewall_table()).await;
        let bridge = gateway::remove(&self.host, spec).await;
        table.and(bridge)
    }

    fn damage(&self) -> Option<tokio::sync::broadcast::Receiver<Damage>> {
        Some(self.damage.subscribe())
    }

    async fn check_sandbox(
        &self,
        network: &NetworkId,
        attached: &[(NetnsId, String)],
    ) -> Result<SandboxCheck> {
        let broken = || SandboxCheck {
            intact: false,
            detached: (0..attached.len()).collect(),
        };
        let Some(sb) = self.existing_sandbox(network).await? else {
            return Ok(broken());
        };
        let check = sandbox::check(&sb, attached).await?;
        if !check.intact {
            // The cached devices are gone: the next use opens what the kernel has.
            self.sandboxes.lock().await.remove(network);
        }
        Ok(check)
    }
}

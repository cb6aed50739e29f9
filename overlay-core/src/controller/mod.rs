//! The facade: networks and endpoints, one [`Controller`] per host. What every face (C,
//! Python, the CLI and its agent socket, the Docker driver, the CNI plugin) wraps.
//!
//! ```no_run
//! # async fn demo() -> overlay_core::Result<()> {
//! use overlay_core::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions};
//! let ctl = Controller::open(ControllerOptions::new("etcd://10.0.0.1:2379").advertise("eth0"))
//!     .await?;
//! ctl.create_network("my-net", &NetworkOptions::default()).await?;
//! let spec = ContainerSpec::new("3cfba8da9b6f", "zookeeper1", NetnsRef::Pid(4242))
//!     .sticky(true)
//!     .publish("2181:2181".parse()?);
//! let link = ctl.connect("my-net", &spec).await?;
//! println!("zookeeper1 is {:?} on {}", link.ipv4(), link.ifname);
//! # Ok(()) }
//! ```

mod advertise;
mod attach;
mod checks;
mod endpoints;
mod handoff;
mod inspect;
mod networks;
mod rollback;
pub mod rpc;
mod spec;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::agent::{Agent, AgentConfig, DnsSettings};
use crate::dataplane::{Dataplane, GatewaySpec, NetlinkDataplane, Netns};
use crate::error::{Error, ErrorKind, Result};
use crate::ipam::{Ipam, StoreIpam};
use crate::model::{Host, HostId, SCHEMA};
use crate::store::{self, KvStore, StoreUrl};

use crate::report::{ControllerEvent, Health};

pub use attach::{AttachedAddress, Attachment, Uplink};
pub use handoff::{AddressWant, Handoff, HandoffSpec, HeldAddress, address_owner};
pub use inspect::{
    ContainerInspect, IpamConfigEntry, IpamInspect, MTU_OPTION, NetworkInspect, NetworkSummary,
    VXLANID_OPTION,
};
pub use networks::Networks;
pub use spec::{
    AddressPool, ContainerSpec, ControllerOptions, DEFAULT_STORE, NetnsRef, NetworkOptions,
    RESERVED_NETWORK_NAMES, SubnetOptions, document, validate_network_name,
};

pub(crate) struct Inner {
    networks: Networks,
    store: Arc<dyn KvStore>,
    ipam: Arc<dyn Ipam>,
    dataplane: Arc<dyn Dataplane>,
    host: Host,
    opts: ControllerOptions,
    /// Where this host keeps what only it may act on.
    state_dir: std::path::PathBuf,
    events: broadcast::Sender<ControllerEvent>,
    agent: Mutex<Option<Arc<Agent>>>,
    /// Held for reading by every connect and disconnect until it is done; `close` takes it
    /// for writing, so that no mutation is cut off half-way by the store closing under it.
    in_flight: Arc<tokio::sync::RwLock<()>>,
}

/// One host's handle on the cluster: cheap to clone, usable from many tasks and threads.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("host", &self.inner.host.id)
            .field("advertise", &self.inner.host.advertise)
            .finish_non_exhaustive()
    }
}

fn default_host_id() -> Result<HostId> {
    let name = nix::unistd::gethostname().map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            "open controller",
            format!("cannot read the hostname: {e}"),
        )
    })?;
    let name = name.to_string_lossy();
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    HostId::new(clean).map_err(|e| e.with_hint("set host_id explicitly"))
}

/// Where a host keeps its local state when the options name no directory: one directory per
/// host id, on a file system that, like the namespaces it names, does not outlive a reboot.
pub const DEFAULT_STATE_ROOT: &str = "/run/overlay";

/// `DEFAULT_STATE_ROOT/<host id>-<hash of the store URL>`: the same host id in two clusters on
/// one machine (test rigs do this) never shares the list of what it made. A host id starts with
/// a letter or digit and holds no '/', so it is safe as a path component.
fn default_state_dir(host: &HostId, url: &StoreUrl) -> std::path::PathBuf {
    // FNV-1a: stable across builds and processes, unlike std's hasher.
    let hash = url
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    std::path::Path::new(DEFAULT_STATE_ROOT).join(format!("{host}-{:08x}", hash as u32))
}

/// The data plane names a host's sandboxes after a tag without '-' (it separates name parts).
fn host_tag(id: &HostId) -> String {
    id.as_str().replace('-', "_")
}

impl Controller {
    /// Opens the cluster store, registers this host and starts its agent. Containers this
    /// host had connected before a restart are taken over again (or cleaned up if their
    /// namespace is gone).
    pub async fn open(opts: ControllerOptions) -> Result<Controller> {
        let op = "open controller";
        if opts.host_ttl.is_zero() || opts.reclaim_grace.is_zero() {
            return Err(Error::invalid(
                op,
                "host_ttl and reclaim_grace must be positive",
            ));
        }
        if let Some(mtu) = opts.mtu {
            crate::model::checked_mtu(op, mtu)?;
        }
        let mut url = StoreUrl::parse(&opts.store)?;
        url.options.ttl = opts.host_ttl;
        let host_id = match &opts.host_id {
            Some(id) => HostId::new(id.clone())?,
            None => default_host_id()?,
        };
        let host_ns = match &opts.host_netns {
            Some(path) => Netns::open_path(path)?,
            None => Netns::current()?,
        };
        let advertise = advertise::resolve(&opts.advertise, &host_ns).await?;
        let gateway = gateway_spec(&opts, advertise)?;
        let store = store::connect(&url).await?;
        let mut ipam_cfg = networks::ipam_config(opts.default_pools.as_deref());
        ipam_cfg.reservation_grace = opts.sticky_grace;
        ipam_cfg.reserved.push(gateway.pool.into());
        let ipam: Arc<dyn Ipam> =
            Arc::new(StoreIpam::new(store.clone(), host_id.clone(), ipam_cfg));
        let dataplane: Arc<dyn Dataplane> =
            Arc::new(NetlinkDataplane::in_namespace(&host_tag(&host_id), &host_ns).await?);
        let state_dir = match &opts.state_dir {
            Some(dir) => dir.clone(),
            None => default_state_dir(&host_id, &url),
        };
        let host = Host {
            schema: SCHEMA,
            id: host_id,
            advertise,
            started_ms: networks::now_ms(),
            holder: None,
        };
        let (events, _) = broadcast::channel(1024);
        let cfg = AgentConfig {
            host: host.clone(),
            reclaim_grace: opts.reclaim_grace,
            mtu: opts.mtu,
            vxlan_port: opts.vxlan_port,
            gateway,
            dns: opts.dns.then(|| DnsSettings {
                upstreams: opts.dns_upstreams.clone().unwrap_or_else(host_upstreams),
                host_netns: opts.host_netns.clone(),
            }),
        };
        let agent = match Agent::start(
            store.clone(),
            ipam.clone(),
            dataplane.clone(),
            cfg,
            &state_dir,
            events.clone(),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                let _ = store.close().await;
                return Err(e.with_op(op));
            }
        };
        let ctl = Controller {
            inner: Arc::new(Inner {
                networks: Networks::new(store.clone(), ipam.clone()),
                store,
                ipam,
                dataplane,
                host,
                opts,
                state_dir,
                events,
                agent: Mutex::new(Some(Arc::new(agent))),
                in_flight: Arc::default(),
            }),
        };
        ctl.recover().await?;
        Ok(ctl)
    }

    /// This host's id.
    pub fn host_id(&self) -> &HostId {
        &self.inner.host.id
    }

    /// This host's VTEP address.
    pub fn advertise(&self) -> IpAddr {
        self.inner.host.advertise
    }

    /// The directory of this host's own state (mode 0700): what only this host may act on,
    /// never in the cluster store. A face that keeps host-local facts of its own (the Docker
    /// driver's network bindings) keeps them here.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.inner.state_dir
    }

    /// The options the controller was opened with.
    pub fn options(&self) -> &ControllerOptions {
        &self.inner.opts
    }

    /// The cluster store, shared with the agent.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.inner.store
    }

    /// Network and endpoint changes as this host sees them. Slow receivers lose the oldest
    /// events (see [`broadcast`]).
    pub fn events(&self) -> broadcast::Receiver<ControllerEvent> {
        self.inner.events.subscribe()
    }

    /// The running agent, or Unavailable once the controller is closed.
    fn agent(&self) -> Result<Arc<Agent>> {
        let guard = crate::sync::lock(&self.inner.agent);
        guard.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "controller",
                "the controller is closed",
            )
            .with_hint("open a new controller")
        })
    }

    /// This host's health: every background task's state (`running`, `failing` while it
    /// retries a store call, `restarting` after a panic), whether the store answers a read now
    /// (within the store's timeout), and when the last sweep succeeded. Unavailable once the
    /// controller is closed.
    pub async fn health(&self) -> Result<Health> {
        Ok(self.agent()?.health().await)
    }

    /// The addresses a name resolves to: a container name or alias, plain or as
    /// `name.network`, on any network. [`ErrorKind::NotFound`] when nothing answers to it.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        let local = self.agent()?.resolve(name);
        if !local.is_empty() {
            return Ok(local);
        }
        self.resolve_from_store(name).await
    }

    /// Stops the agent and closes the store session (withdrawing this host's record). Kernel
    /// state stays: connected containers keep talking, and a controller opened again on this
    /// host takes them over.
    pub async fn close(&self) -> Result<()> {
        let _quiet = self.inner.in_flight.write().await;
        let agent = crate::sync::lock(&self.inner.agent).take();
        match agent {
            Some(agent) => {
                agent.close().await;
                agent.local().remove_if_empty();
                self.inner.store.close().await
            }
            None => Ok(()),
        }
    }
}

/// The nameservers of the machine's `/etc/resolv.conf` (none when it cannot be read: names
/// that are not containers' then get SERVFAIL, which the log explains once).
fn host_upstreams() -> Vec<std::net::SocketAddr> {
    const PATH: &str = "/etc/resolv.conf";
    match std::fs::read_to_string(PATH) {
        Ok(text) => crate::dns::resolv::nameservers(&text),
        Err(e) => {
            tracing::warn!(file = PATH, error = %e, "no upstream resolvers: names that are not containers' will not resolve");
            Vec::new()
        }
    }
}

/// The gateway bridge of `opts`, checked against the underlay: the pool must not hold this
/// host's own advertise address.
fn gateway_spec(opts: &ControllerOptions, advertise: IpAddr) -> Result<GatewaySpec> {
    let pool =
        match opts.gateway_pool {
            Some(p) => p,
            None => crate::dataplane::DEFAULT_GATEWAY_POOL.parse().map_err(
                |e: ipnet::AddrParseError| Error::internal("open controller", e.to_string()),
            )?,
        };
    let mut spec = GatewaySpec::new(pool);
    if let Some(b) = &opts.gateway_bridge {
        spec.bridge = b.clone();
    }
    spec.validate().map_err(|e| e.with_op("open controller"))?;
    if let IpAddr::V4(a) = advertise
        && spec.pool.contains(&a)
    {
        return Err(Error::invalid(
            "open controller",
            format!(
                "the gateway pool {} holds this host's address {a}",
                spec.pool
            ),
        )
        .with_hint("set gateway_pool to a range the underlay does not use"));
    }
    Ok(spec)
}

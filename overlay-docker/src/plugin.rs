//! The driver: each call of the protocol mapped onto the host's [`Controller`].
//!
//! The engine names networks by its own id only. In global scope that id is the same on every
//! engine; in local scope each engine has its own. Either way the driver asks the engine for
//! the network's name (`GET /networks/ID`) and uses the cluster network of that name, so both
//! scopes come to one rule: one name, one overlay network. During `CreateNetwork` the engine
//! does not know the network yet (it answers 404 until the driver has replied), so the
//! cluster network is made (or, in local scope, found and checked) by a task that waits for
//! the name; calls that need the network meanwhile wait for that task.
//!
//! Addresses come from the global IPAM through the plugin's IPAM half, the pool id being the
//! subnet (the same on every host, and subnets of two overlay networks never overlap).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use overlay_core::{AddressWant, Controller, HandoffSpec, NetworkOptions};
use overlay_core::ipam::Family;
use overlay_core::model::MacAddr;
use overlay_core::{Error, ErrorKind};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::{DriverError, DriverResult};
use crate::options::{ADDRESS_SPACE, address, network_options};
use crate::protocol::*;

/// How long a call waits for a network being made to get its name from the engine.
const NAME_WAIT: Duration = Duration::from_secs(10);

/// How often the engine is asked meanwhile.
const NAME_POLL: Duration = Duration::from_millis(10);

/// The owner recorded on this plugin's attachments.
pub const OWNER: &str = "docker";

/// Which engines the driver serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Engines sharing a cluster store (`--cluster-store`, Docker 20.10 and earlier): one
    /// `docker network create` is seen by all of them.
    Global,
    /// Engines without one (Docker 23 and later): each host creates the network, by name.
    Local,
}

impl Scope {
    /// `global` or `local`, as the engine spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Local => "local",
        }
    }
}

/// The scope to declare: fixed, or read off the engine when it first asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeSetting {
    /// Always this one.
    Fixed(Scope),
    /// `global` if the engine runs with a cluster store, else `local`.
    Auto,
}

/// The state of a network being made: `None` while waiting, then its name or why it failed.
type Making = watch::Receiver<Option<Result<String, DriverError>>>;

#[derive(Default)]
struct State {
    /// Engine network id → cluster network name.
    bound: HashMap<String, String>,
    /// Networks being made, by engine id.
    making: HashMap<String, Making>,
    /// Pool id (subnet) → the engine network being made with it, until it is (or that
    /// failed).
    making_pools: HashMap<IpNet, String>,
    /// Engine networks that could not be made, and why, until the engine removes them.
    failed: HashMap<String, DriverError>,
    /// `--ip-range` of each subnet, from `RequestPool` until `CreateNetwork`.
    ranges: BTreeMap<IpNet, IpNet>,
    /// Pool id → cluster network name, once found.
    pools: HashMap<IpNet, String>,
    /// Engine endpoint id → the interface waiting for the engine to move it.
    waiting: HashMap<String, String>,
}

/// The driver of one host: its controller, its engine, its scope.
pub struct Plugin {
    ctl: Controller,
    engine: Engine,
    /// The driver's name on the engine (its socket's name: `ovl`).
    driver: String,
    /// The scope once known.
    detected: Mutex<Option<Scope>>,
    state: Mutex<State>,
    /// Where the engine-id-to-name bindings are kept across restarts.
    bindings_file: Option<PathBuf>,
}

impl Plugin {
    /// The driver `driver` (the engine's name for it) of `ctl`'s host, for `engine` in
    /// `scope`. Which engine network is which cluster network is kept in the controller's
    /// state directory across restarts.
    pub fn new(ctl: Controller, engine: Engine, driver: &str, scope: ScopeSetting) -> Arc<Plugin> {
        let bindings_file = Some(ctl.state_dir().join("docker-networks.json"));
        let mut state = State::default();
        if let Some(f) = &bindings_file
            && let Ok(text) = std::fs::read_to_string(f)
            && let Ok(map) = serde_json::from_str::<HashMap<String, String>>(&text)
        {
            state.bound = map;
        }
        Arc::new(Plugin {
            ctl,
            engine,
            driver: driver.to_string(),
            detected: Mutex::new(match scope {
                ScopeSetting::Fixed(s) => Some(s),
                ScopeSetting::Auto => None,
            }),
            state: Mutex::new(state),
            bindings_file,
        })
    }

    /// The scope the driver declares: fixed, or asked of the engine once.
    pub async fn scope(&self) -> DriverResult<Scope> {
        let known = *self
            .detected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = known {
            return Ok(s);
        }
        let scope = match self.engine.has_cluster_store().await {
            Ok(true) => Scope::Global,
            Ok(false) => Scope::Local,
            Err(e) => {
                return Err(e
                    .with_hint("start the engine first, or pass --docker-scope global|local")
                    .into());
            }
        };
        tracing::info!(scope = scope.as_str(), engine = %self.engine.socket().display(), "docker driver scope");
        *self
            .detected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(scope);
        Ok(scope)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Carries out `method` (`NetworkDriver.Join`) with `body`; the answer's JSON.
    pub async fn call(self: &Arc<Self>, method: &str, body: &[u8]) -> DriverResult<Value> {
        fn decode<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> DriverResult<T> {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body).map_err(|e| DriverError::bad_request(method, &e))
        }
        let v = |r: DriverResult<()>| r.map(|()| json!({}));
        match method {
            "Plugin.Activate" => Ok(json!(Activate {
                implements: vec!["NetworkDriver", "IpamDriver"],
            })),
            "NetworkDriver.GetCapabilities" => Ok(json!(Capabilities {
                scope: self.scope().await?.as_str(),
                connectivity_scope: "global",
            })),
            "NetworkDriver.CreateNetwork" => v(self.create_network(decode(method, body)?).await),
            "NetworkDriver.DeleteNetwork" => v(self.delete_network(decode(method, body)?).await),
            "NetworkDriver.CreateEndpoint" => self
                .create_endpoint(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "NetworkDriver.EndpointOperInfo" => self
                .oper_info(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "NetworkDriver.DeleteEndpoint" => v(self.delete_endpoint(decode(method, body)?).await),
            "NetworkDriver.Join" => self.join(decode(method, body)?).await.map(|r| json!(r)),
            // Docker moves the interface back out and the endpoint's deletion removes it.
            "NetworkDriver.Leave"
            // Hosts come from the cluster store, not from the engine's discovery.
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            // The engine's gateway network (docker_gwbridge) publishes ports: Join names
            // no gateway, so these reach this driver only for no endpoint of its own.
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
            "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
                Err(DriverError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{method}: swarm mode's network allocation is not supported (use the \
                         driver outside swarm, with or without a cluster store)"
                    ),
                ))
            }
            "IpamDriver.GetCapabilities" => Ok(json!(IpamCapabilities {
                requires_mac_address: true,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!(AddressSpaces {
                local_default_address_space: ADDRESS_SPACE,
                global_default_address_space: ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self
                .request_pool(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            // The pools go with the network (DeleteNetwork).
            "IpamDriver.ReleasePool" => decode::<ReleasePool>(method, body).map(|_| json!({})),
            "IpamDriver.RequestAddress" => self
                .request_address(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "IpamDriver.ReleaseAddress" => v(self.release_address(decode(method, body)?).await),
            // 404: how the engine learns that a plugin lacks a call it may do without.
            other => Err(DriverError {
                status: 404,
                ..DriverError::new(
                    ErrorKind::Unsupported,
                    format!("{other}: not a call of Docker's network or IPAM driver protocol"),
                )
            }),
        }
    }

    async fn request_pool(&self, req: RequestPool) -> DriverResult<PoolReply> {
        let op = "request pool";
        let pool: IpNet = match req.pool.as_str() {
            "" if req.v6 => {
                return Err(Error::invalid(op, "the network's IPv6 pool has no subnet")
                    .with_hint("give the IPv6 subnet with --subnet (e.g. --subnet fd00:9::/64)")
                    .into());
            }
            // A free /24 of the default pools (Docker's overlay default, 10.0.0.0/8).
            "" => self.ctl.free_subnet(Family::V4).await?,
            p => p
                .parse()
                .map_err(|_| Error::invalid(op, format!("{p:?} is not a subnet")))?,
        };
        if pool.trunc() != pool {
            return Err(Error::invalid(op, format!("{pool} has host bits set"))
                .with_hint(format!("use {}", pool.trunc()))
                .into());
        }
        if req.v6 != matches!(pool, IpNet::V6(_)) {
            return Err(Error::invalid(op, format!("{pool} is not of the pool's family")).into());
        }
        if !req.sub_pool.is_empty() {
            let range: IpNet = req.sub_pool.parse().map_err(|_| {
                Error::invalid(op, format!("--ip-range {:?} is not a subnet", req.sub_pool))
            })?;
            if !pool.contains(&range) {
                return Err(Error::invalid(
                    op,
                    format!("--ip-range {range} is not inside --subnet {pool}"),
                )
                .into());
            }
            self.state().ranges.insert(pool, range);
        }
        // A subnet another network holds fails here, before the engine records anything;
        // the same subnet again is the same network in local scope (checked by name later).
        let scope = self.scope().await?;
        for (name, subnets) in self.cluster_subnets().await? {
            for s in subnets {
                let same = s == pool;
                if (same && scope == Scope::Global)
                    || (!same && (s.contains(&pool.network()) || pool.contains(&s.network())))
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        op,
                        format!("subnet {pool} overlaps {s} of network {name:?}"),
                    )
                    .with_hint("pick a subnet no other overlay network uses")
                    .into());
                }
            }
        }
        Ok(PoolReply {
            pool_id: pool.to_string(),
            pool: pool.to_string(),
            data: BTreeMap::new(),
        })
    }

    /// Every cluster network's subnets.
    async fn cluster_subnets(&self) -> DriverResult<Vec<(String, Vec<IpNet>)>> {
        let mut out = Vec::new();
        for n in self.ctl.networks().await? {
            let Ok(inspect) = self.ctl.inspect(&n.id).await else {
                continue;
            };
            let subnets = inspect
                .ipam
                .config
                .iter()
                .filter_map(|c| c.subnet.parse().ok())
                .collect();
            out.push((n.name, subnets));
        }
        Ok(out)
    }

    async fn request_address(&self, req: RequestAddress) -> DriverResult<AddressReply> {
        let pool = pool_of(&req.pool_id)?;
        let opts = req.options.unwrap_or_default();
        if opts.get("RequestAddressType").map(String::as_str) == Some("com.docker.network.gateway")
        {
            // The network reserves its gateway when it is made: nothing to hold here.
            let gw = match req.address.as_str() {
                "" => first_host(&pool)?,
                a => address(a)?,
            };
            return Ok(AddressReply {
                address: format!("{gw}/{}", pool.prefix_len()),
                data: BTreeMap::new(),
            });
        }
        let name = self.network_of_pool(pool).await?;
        let want = match req.address.as_str() {
            "" => AddressWant::Any(match pool {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            }),
            a => AddressWant::Specific(address(a)?),
        };
        let mac = opts
            .get("com.docker.network.endpoint.macaddress")
            .and_then(|m| parse_mac(m));
        let held = match self.ctl.request_address(&name, want, mac).await {
            // Removed through another engine (global scope tells only that one), and maybe
            // made again under another name: find the subnet's network afresh, once.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.state().pools.remove(&pool);
                let name = self.network_of_pool(pool).await?;
                self.ctl.request_address(&name, want, mac).await?
            }
            r => r?,
        };
        Ok(AddressReply {
            address: held.address.to_string(),
            data: BTreeMap::new(),
        })
    }

    async fn release_address(&self, req: ReleaseAddress) -> DriverResult<()> {
        let pool = pool_of(&req.pool_id)?;
        let ip = address(&req.address)?;
        let never_made = {
            let st = self.state();
            st.making_pools
                .get(&pool)
                .is_some_and(|id| st.failed.contains_key(id))
        };
        if never_made {
            // Nothing was handed out on a network that could not be made.
            return Ok(());
        }
        let name = match self.network_of_pool(pool).await {
            Ok(n) => n,
            // The network went first (its pools with it): nothing left to release.
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.ctl.release_address(&name, ip).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The cluster network whose subnet is `pool`: one being made on this host waits for its
    /// name first.
    async fn network_of_pool(&self, pool: IpNet) -> DriverResult<String> {
        let (known, making) = {
            let st = self.state();
            (
                st.pools.get(&pool).cloned(),
                st.making_pools.get(&pool).cloned(),
            )
        };
        if let Some(n) = known {
            return Ok(n);
        }
        if let Some(id) = making {
            self.network_of(&id).await?;
        }
        for (name, subnets) in self.cluster_subnets().await? {
            if subnets.contains(&pool) {
                self.state().pools.insert(pool, name.clone());
                return Ok(name);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            "find network",
            format!("no overlay network has subnet {pool}"),
        )
        .with_hint("the network was removed from the cluster: remove it from this engine (docker network rm) and create it again")
        .into())
    }

    async fn create_network(self: &Arc<Self>, req: CreateNetwork) -> DriverResult<()> {
        let ranges = self.state().ranges.clone();
        let opts = network_options(&req, &ranges)?;
        let (tx, rx) = watch::channel(None);
        {
            let mut st = self.state();
            for s in &opts.subnets {
                st.ranges.remove(&s.subnet);
                st.making_pools.insert(s.subnet, req.network_id.clone());
            }
            st.making.insert(req.network_id.clone(), rx);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let id = req.network_id;
            let outcome = this.make_network(&id, &opts).await;
            match &outcome {
                Ok(name) => {
                    tracing::info!(network = %name, engine_id = %id, "docker network bound")
                }
                Err(e) => {
                    tracing::warn!(engine_id = %id, error = %e.err, "docker network could not be made")
                }
            }
            {
                let mut st = this.state();
                st.making.remove(&id);
                match &outcome {
                    Ok(name) => {
                        st.bound.insert(id.clone(), name.clone());
                        st.making_pools.retain(|_, v| *v != id);
                    }
                    // Every later call on it says why, until the engine removes it.
                    Err(e) => {
                        st.failed.insert(id.clone(), e.clone());
                    }
                }
            }
            this.save_bindings();
            let _ = tx.send(Some(outcome));
        });
        Ok(())
    }

    /// Waits for the engine to name network `id`, then makes (or finds and checks) the
    /// cluster network of that name.
    async fn make_network(&self, id: &str, opts: &NetworkOptions) -> Result<String, DriverError> {
        let deadline = tokio::time::Instant::now() + NAME_WAIT;
        let net = loop {
            if let Some(n) = self.engine.network(id).await? {
                break n;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "create network",
                    format!("the engine did not name network {id} within {NAME_WAIT:?}"),
                )
                .into());
            }
            tokio::time::sleep(NAME_POLL).await;
        };
        // The engine passes no labels to drivers; its record of the network has them.
        let mut opts = opts.clone();
        opts.labels = net.labels.unwrap_or_default();
        self.ctl.ensure_network(&net.name, &opts).await?;
        Ok(net.name)
    }

    fn save_bindings(&self) {
        let Some(file) = &self.bindings_file else {
            return;
        };
        let text = serde_json::to_string(&self.state().bound).unwrap_or_default();
        let tmp = file.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file)) {
            tracing::warn!(file = %file.display(), error = %e, "cannot keep the docker network bindings");
        }
    }

    /// The cluster network of engine network `id`.
    async fn network_of(&self, id: &str) -> DriverResult<String> {
        let (bound, making, failed) = {
            let st = self.state();
            (
                st.bound.get(id).cloned(),
                st.making.get(id).cloned(),
                st.failed.get(id).cloned(),
            )
        };
        if let Some(name) = bound {
            return Ok(name);
        }
        if let Some(e) = failed {
            return Err(made_failed(&e));
        }
        if let Some(mut rx) = making {
            let done = tokio::time::timeout(NAME_WAIT * 2, rx.wait_for(Option::is_some)).await;
            if let Ok(Ok(outcome)) = done
                && let Some(result) = outcome.clone()
            {
                return result.map_err(|e| made_failed(&e));
            }
        }
        // Made on another engine (global scope), or before this agent started.
        let Some(net) = self.engine.network(id).await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                "find network",
                format!("the engine has no network {id}"),
            )
            .into());
        };
        match self.ctl.inspect(&net.name).await {
            Ok(_) => {
                self.state().bound.insert(id.to_string(), net.name.clone());
                self.save_bindings();
                Ok(net.name)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
                ErrorKind::NotFound,
                "find network",
                format!("network {:?} is not in the cluster store", net.name),
            )
            .with_hint(format!(
                "remove it from this engine (docker network rm {}) and create it again",
                net.name
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_network(&self, req: NetworkRef) -> DriverResult<()> {
        {
            let mut st = self.state();
            if st.failed.remove(&req.network_id).is_some() {
                st.making_pools.retain(|_, v| *v != req.network_id);
                return Ok(());
            }
        }
        let name = match self.network_of(&req.network_id).await {
            Ok(n) => n,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        {
            let mut st = self.state();
            st.bound.remove(&req.network_id);
            st.pools.retain(|_, n| *n != name);
        }
        self.save_bindings();
        match self.ctl.remove_network(&name).await {
            Ok(()) => Ok(()),
            // Gone already, or (local scope) still used by another host's containers: it
            // stays for them, and goes with the last engine's removal.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                tracing::info!(network = %name, reason = %e, "cluster network kept");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn create_endpoint(&self, req: CreateEndpoint) -> DriverResult<CreateEndpointReply> {
        let name = self.network_of(&req.network_id).await?;
        let iface = req.interface.unwrap_or_default();
        let ip = |text: &str| match text {
            "" => Ok(None),
            t => address(t).map(Some),
        };
        let (ipv4, ipv6) = (ip(&iface.address)?, ip(&iface.address_ipv6)?);
        let mac = match iface.mac_address.as_str() {
            "" => None,
            m => Some(parse_mac(m).ok_or_else(|| {
                DriverError::from(Error::invalid(
                    "create endpoint",
                    format!("{m:?} is not a MAC"),
                ))
            })?),
        };
        // The engine tells no driver the container's name: the endpoint is known by its engine
        // id until `docker network inspect` shows it (see docs/docker.md).
        let ep_name = format!("ep-{}", &req.endpoint_id[..req.endpoint_id.len().min(12)]);
        let spec = HandoffSpec::new(req.endpoint_id.clone(), ep_name)
            .ipv4(ipv4.and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }))
            .ipv6(ipv6.and_then(|a| match a {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }))
            .mac(mac)
            .owner(OWNER);
        let made = self.ctl.connect_handoff(&name, &spec).await?;
        self.state()
            .waiting
            .insert(req.endpoint_id, made.ifname.clone());
        Ok(CreateEndpointReply {
            interface: mac.is_none().then(|| EndpointInterface {
                mac_address: made.mac.to_string(),
                ..Default::default()
            }),
        })
    }

    async fn join(&self, req: Join) -> DriverResult<JoinReply> {
        let known = self.state().waiting.get(&req.endpoint_id).cloned();
        let ifname = match known {
            Some(n) => n,
            None => {
                let name = self.network_of(&req.network_id).await?;
                self.ctl
                    .attachments(Some(&name))
                    .await?
                    .into_iter()
                    .find(|a| a.container_id == req.endpoint_id)
                    .map(|a| a.ifname)
                    .ok_or_else(|| {
                        DriverError::from(Error::new(
                            ErrorKind::NotFound,
                            "join",
                            format!("endpoint {} was not created on this host", req.endpoint_id),
                        ))
                    })?
            }
        };
        Ok(JoinReply {
            interface_name: InterfaceName {
                src_name: ifname,
                dst_prefix: "eth",
            },
            disable_gateway_service: false,
        })
    }

    /// Names this driver's endpoints after their containers, as the engine connects them:
    /// the protocol tells a driver neither the container's name nor its aliases, and the
    /// engine's `network connect` event, right after the join, names the container. Runs
    /// until the task is dropped, following the engine again after it restarts.
    pub fn follow_engine(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match this.engine.connect_events().await {
                    Ok(mut events) => {
                        pause = Duration::from_millis(100);
                        while let Some(ev) = events.next().await {
                            if ev.driver == this.driver {
                                this.name_endpoint(&ev).await;
                            }
                        }
                        tracing::info!(engine = %this.engine.socket().display(), "the engine's event stream ended; following it again");
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot follow the engine's events yet"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// Gives the endpoint of connection `ev` its container's name and aliases.
    async fn name_endpoint(&self, ev: &crate::engine::Connect) {
        let attached = match self.engine.attached(&ev.container_id, &ev.network_id).await {
            Ok(Some(a)) => a,
            // Gone again already.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(container = %ev.container_id, error = %e, "cannot ask the engine for the container's name");
                return;
            }
        };
        let outcome = match self.network_of(&ev.network_id).await {
            Ok(cluster) => self
                .ctl
                .rename(
                    &cluster,
                    &attached.endpoint_id,
                    &attached.name,
                    &attached.aliases,
                )
                .await
                .map_err(DriverError::from),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(container = %attached.name, aliases = ?attached.aliases, "endpoint named")
            }
            Err(e) => {
                tracing::warn!(container = %attached.name, error = %e.err, "the endpoint keeps its engine id as its name")
            }
        }
    }

    async fn oper_info(&self, req: EndpointRef) -> DriverResult<OperInfo> {
        let name = self.network_of(&req.network_id).await?;
        let mut value = BTreeMap::new();
        value.insert("network".to_string(), name.clone());
        if let Some(a) = self
            .ctl
            .attachments(Some(&name))
            .await?
            .into_iter()
            .find(|a| a.container_id == req.endpoint_id)
        {
            value.insert("endpoint_id".into(), a.endpoint_id);
            value.insert("host".into(), self.ctl.host_id().to_string());
            value.insert("vtep".into(), self.ctl.advertise().to_string());
        }
        Ok(OperInfo { value })
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> DriverResult<()> {
        self.state().waiting.remove(&req.endpoint_id);
        let name = match self.network_of(&req.network_id).await {
            Ok(n) => n,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.ctl.disconnect(&name, &req.endpoint_id).await {
            Ok(()) => Ok(()),
            // Never made, or already gone: deleting is idempotent.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The error of a call on a network that could not be made.
fn made_failed(e: &DriverError) -> DriverError {
    DriverError {
        kind: e.kind,
        status: e.status,
        err: format!(
            "the network could not be made (remove it with docker network rm and create it \
             again): {}",
            e.err
        ),
    }
}

/// The subnet a pool id names.
fn pool_of(id: &str) -> DriverResult<IpNet> {
    id.parse().map_err(|_| {
        Error::invalid(
            "find pool",
            format!("pool id {id:?} is not one of this IPAM's (a subnet)"),
        )
        .into()
    })
}

/// The first address after `pool`'s network address: its default gateway (IPv6's first
/// address is the subnet-router anycast address, not a host's).
fn first_host(pool: &IpNet) -> DriverResult<IpAddr> {
    let none = || Error::invalid("request address", format!("{pool} has no host addresses"));
    match pool {
        IpNet::V4(p) => p
            .hosts()
            .next()
            .map(IpAddr::V4)
            .ok_or_else(|| none().into()),
        IpNet::V6(p) if p.prefix_len() < 128 => {
            Ok(IpAddr::V6((u128::from(p.network()) + 1).into()))
        }
        IpNet::V6(_) => Err(none().into()),
    }
}

/// A MAC as the engine writes it: `02:42:0a:00:09:02`, or base64 of its six bytes (the
/// endpoint options' encoding of Go's `net.HardwareAddr`).
fn parse_mac(text: &str) -> Option<MacAddr> {
    if let Ok(m) = text.parse() {
        return Some(m);
    }
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(MacAddr(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_both_spellings() {
        let m = parse_mac("02:42:0a:00:09:99").unwrap();
        assert_eq!(parse_mac("AkIKAAmZ"), Some(m));
        assert_eq!(parse_mac("nope"), None);
    }

    #[test]
    fn pool_ids_are_subnets() {
        assert_eq!(pool_of("10.0.9.0/24").unwrap().to_string(), "10.0.9.0/24");
        let e = pool_of("LocalDefault/10.0.9.0/24").unwrap_err();
        assert!(e.err.contains("not one of this IPAM's"), "{}", e.err);
        assert_eq!(
            first_host(&"10.0.9.0/24".parse().unwrap()).unwrap(),
            "10.0.9.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_host(&"fd00:9::/64".parse().unwrap()).unwrap(),
            "fd00:9::1".parse::<IpAddr>().unwrap()
        );
    }
}

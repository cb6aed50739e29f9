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
//!
//! As libnetwork splits a remote driver: `dispatch.rs` maps each call's name onto a handler,
//! `network.rs` serves the network protocol, `ipam.rs` the IPAM protocol; this file holds what
//! they share: the engine network → cluster network bindings, one map whose value says where
//! each binding is in its life (`Binding`).

mod dispatch;
mod ipam;
mod network;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use overlay_core::model::MacAddr;
use overlay_core::{Controller, Error, ErrorKind, NetworkOptions};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::{DriverError, DriverResult};

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

/// The outcome of a network being made: `None` while waiting, then its name or why it failed.
type Outcome = watch::Receiver<Option<Result<String, DriverError>>>;

/// What the driver knows of one engine network, through its life.
#[derive(Clone)]
enum Binding {
    /// Being made: the cluster network is made (or found and checked) once the engine names
    /// it; calls that need it wait for `done`.
    Making { pools: Vec<IpNet>, done: Outcome },
    /// The cluster network of this name.
    Bound(String),
    /// It could not be made, and why; every call on it says so until the engine removes it.
    Failed {
        pools: Vec<IpNet>,
        error: DriverError,
    },
}

#[derive(Default)]
struct State {
    /// Engine network id → what it is.
    bindings: HashMap<String, Binding>,
    /// `--ip-range` of each subnet, from `RequestPool` until `CreateNetwork`.
    ranges: BTreeMap<IpNet, IpNet>,
    /// Pool id (subnet) → cluster network name, once found.
    pools: HashMap<IpNet, String>,
    /// Engine endpoint id → the interface waiting for the engine to move it.
    waiting: HashMap<String, String>,
}

impl State {
    /// The engine network being made with `pool`, or that failed to be, and its binding.
    fn binding_with_pool(&self, pool: IpNet) -> Option<(&String, &Binding)> {
        self.bindings.iter().find(|(_, b)| match b {
            Binding::Making { pools, .. } | Binding::Failed { pools, .. } => pools.contains(&pool),
            Binding::Bound(_) => false,
        })
    }

    /// The bound networks, engine id → cluster name: what is kept across restarts.
    fn bound(&self) -> HashMap<&str, &str> {
        self.bindings
            .iter()
            .filter_map(|(id, b)| match b {
                Binding::Bound(name) => Some((id.as_str(), name.as_str())),
                _ => None,
            })
            .collect()
    }
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

/// Locks `m`, poisoned or not: the driver's maps stay whole at every step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
            state.bindings = map
                .into_iter()
                .map(|(id, name)| (id, Binding::Bound(name)))
                .collect();
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
        let known = *lock(&self.detected);
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
        *lock(&self.detected) = Some(scope);
        Ok(scope)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
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
        let text = serde_json::to_string(&self.state().bound()).unwrap_or_default();
        let tmp = file.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file)) {
            tracing::warn!(file = %file.display(), error = %e, "cannot keep the docker network bindings");
        }
    }

    /// The cluster network of engine network `id`.
    async fn network_of(&self, id: &str) -> DriverResult<String> {
        let known = self.state().bindings.get(id).cloned();
        match known {
            Some(Binding::Bound(name)) => return Ok(name),
            Some(Binding::Failed { error, .. }) => return Err(made_failed(&error)),
            Some(Binding::Making { mut done, .. }) => {
                let waited =
                    tokio::time::timeout(NAME_WAIT * 2, done.wait_for(Option::is_some)).await;
                if let Ok(Ok(outcome)) = waited
                    && let Some(result) = outcome.clone()
                {
                    return result.map_err(|e| made_failed(&e));
                }
            }
            None => {}
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
                self.state()
                    .bindings
                    .insert(id.to_string(), Binding::Bound(net.name.clone()));
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
}

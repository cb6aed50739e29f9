//! `overlay.Controller`: networks and containers from Python, over the core's facade.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use overlay_core::Controller as Core;
use overlay_core::document::{self, TextValue};
use overlay_core::model::Vni;
use overlay_core::{
    AddressPool, ContainerInspect, ContainerSpec, ControllerOptions, NetnsRef, NetworkOptions,
    SubnetOptions,
};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyType};

use crate::convert::to_python;
use crate::errors;
use crate::events::Events;
use crate::runtime::{DropInRuntime, run, seconds_arg};

const OPEN: &str = "open controller";
const CREATE: &str = "create network";
const CONNECT: &str = "connect container";

// Arguments follow the rule of every face: a wrong type (or shape, for a default pool) is a
// TypeError, as pyo3's own conversions raise it; the right type with a bad value is an
// InvalidArgumentError worded by the core, as the C face words the same value in a document.

/// Parses an address or subnet argument, naming the parameter in the error.
fn parse<T: TextValue>(py: Python<'_>, op: &'static str, param: &str, text: &str) -> PyResult<T> {
    document::parse_text(op, param, text).map_err(|e| errors::to_py(py, &e))
}

fn parse_opt<T: TextValue>(
    py: Python<'_>,
    op: &'static str,
    param: &str,
    text: Option<&str>,
) -> PyResult<Option<T>> {
    text.map(|t| parse(py, op, param, t)).transpose()
}

/// An int argument within `range`. pyo3's own conversion would raise OverflowError for an int
/// the Rust type cannot hold; that is a bad value, so it is an InvalidArgumentError here.
fn whole<T>(
    value: &Bound<'_, PyAny>,
    op: &'static str,
    param: &str,
    range: RangeInclusive<T>,
) -> PyResult<T>
where
    T: TryFrom<i128> + PartialOrd + Display,
{
    let py = value.py();
    let checked = match value.extract::<i128>() {
        Ok(v) => document::whole_number(op, param, v, range),
        Err(e) if e.is_instance_of::<PyOverflowError>(py) => {
            Err(document::out_of_range(op, param, value, &range))
        }
        Err(e) => return Err(e),
    };
    checked.map_err(|e| errors::to_py(py, &e))
}

fn optional<T>(
    value: &Bound<'_, PyAny>,
    check: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Option<T>> {
    if value.is_none() {
        Ok(None)
    } else {
        check(value).map(Some)
    }
}

// One extractor per int parameter, for `#[pyo3(from_py_with = ...)]`.

fn controller_mtu(v: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    optional(v, |v| whole(v, OPEN, "mtu", 0..=u32::MAX))
}

fn vxlan_port(v: &Bound<'_, PyAny>) -> PyResult<u16> {
    whole(v, OPEN, "vxlan_port", 0..=u16::MAX)
}

fn network_vni(v: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    optional(v, |v| whole(v, CREATE, "vni", Vni::MIN..=Vni::MAX))
}

fn network_mtu(v: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    optional(v, |v| whole(v, CREATE, "mtu", 0..=u32::MAX))
}

/// Seconds from Python as a duration; `None` keeps the default.
fn seconds(
    py: Python<'_>,
    param: &str,
    value: Option<f64>,
    default: Duration,
) -> PyResult<Duration> {
    Ok(seconds_arg(py, OPEN, param, value)?.unwrap_or(default))
}

/// Default pool `i`: `(base, size)` or Docker's `{"base": "10.0.0.0/8", "size": 24}`.
fn pool_arg(item: &Bound<'_, PyAny>, i: usize) -> PyResult<AddressPool> {
    let py = item.py();
    let (base, size): (String, Bound<'_, PyAny>) = if let Ok(dict) = item.cast::<PyDict>() {
        let field = |k: &str| {
            dict.get_item(k)?.ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "a default pool dict needs \"base\" and \"size\", missing {k:?}"
                ))
            })
        };
        if dict.len() != 2 {
            return Err(PyTypeError::new_err(
                "a default pool dict has exactly the keys \"base\" and \"size\"",
            ));
        }
        (field("base")?.extract()?, field("size")?)
    } else {
        item.extract().map_err(|_| {
            PyTypeError::new_err(
                "each default pool is a (base, size) tuple such as (\"10.0.0.0/8\", 24) or a dict \
                 {\"base\": ..., \"size\": ...}",
            )
        })?
    };
    Ok(AddressPool::new(
        parse(py, OPEN, &format!("default_pools[{i}].base"), &base)?,
        whole(
            &size,
            OPEN,
            &format!("default_pools[{i}].size"),
            0..=u8::MAX,
        )?,
    ))
}

/// A container's namespace: a path (str or os.PathLike) or a process id (int).
fn netns_arg(netns: &Bound<'_, PyAny>) -> PyResult<NetnsRef> {
    if netns.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "netns must be a path or a process id, not bool",
        ));
    }
    if netns.is_instance_of::<PyInt>() {
        return Ok(NetnsRef::Pid(whole(netns, CONNECT, "netns", 0..=u32::MAX)?));
    }
    match netns.extract::<PathBuf>() {
        Ok(path) => Ok(NetnsRef::Path(path)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "netns must be a path (str or os.PathLike) or a process id (int), not {}",
            netns.get_type().name()?
        ))),
    }
}

/// One host's view of the overlay: create networks, connect containers, resolve names.
///
/// Open one per host (a host may be a network namespace, see `host_netns`). Every method blocks
/// the calling thread only (the GIL is released), answers Ctrl-C, and may be called from several
/// threads at once.
#[pyclass(module = "overlay", frozen)]
pub(crate) struct Controller {
    inner: DropInRuntime<Core>,
}

impl Controller {
    /// A handle on the core controller, unless this is a forked child of its process.
    fn core(&self, py: Python<'_>) -> PyResult<Core> {
        Ok(self.inner.get(py, "use controller")?.clone())
    }
}

#[pymethods]
impl Controller {
    /// Opens the controller of one host. `store` is the cluster store URL, `advertise` the
    /// address other hosts send VXLAN traffic to (an IP or an interface name); the keyword
    /// options are those of the core's ControllerOptions (durations in seconds).
    #[new]
    #[pyo3(signature = (
        store = overlay_core::DEFAULT_STORE.to_string(),
        advertise = String::new(),
        *,
        host_id = None,
        host_netns = None,
        mtu = None,
        vxlan_port = 4789,
        default_pools = None,
        sticky_grace = None,
        host_ttl = None,
        reclaim_grace = None,
        gateway_pool = None,
        gateway_bridge = None,
        dns = true,
        dns_upstreams = None,
        state_dir = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: String,
        advertise: String,
        host_id: Option<String>,
        host_netns: Option<PathBuf>,
        #[pyo3(from_py_with = controller_mtu)] mtu: Option<u32>,
        #[pyo3(from_py_with = vxlan_port)] vxlan_port: u16,
        default_pools: Option<Vec<Bound<'_, PyAny>>>,
        sticky_grace: Option<f64>,
        host_ttl: Option<f64>,
        reclaim_grace: Option<f64>,
        gateway_pool: Option<&str>,
        gateway_bridge: Option<String>,
        dns: bool,
        dns_upstreams: Option<Vec<String>>,
        state_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let defaults = ControllerOptions::default();
        let default_pools = match default_pools {
            None => None,
            Some(pools) => Some(
                pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| pool_arg(p, i))
                    .collect::<PyResult<Vec<_>>>()?,
            ),
        };
        let dns_upstreams = dns_upstreams
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        overlay_core::document::dns_upstream(&format!("dns_upstreams[{i}]"), t)
                            .map_err(|e| errors::to_py(py, &e))
                    })
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let mut opts = ControllerOptions::new(store)
            .advertise(advertise)
            .vxlan_port(vxlan_port)
            .sticky_grace(seconds(
                py,
                "sticky_grace",
                sticky_grace,
                defaults.sticky_grace,
            )?)
            .host_ttl(seconds(py, "host_ttl", host_ttl, defaults.host_ttl)?)
            .reclaim_grace(seconds(
                py,
                "reclaim_grace",
                reclaim_grace,
                defaults.reclaim_grace,
            )?)
            .dns(dns);
        // The options a caller may leave unset stay unset (the controller picks their default).
        opts.host_id = host_id;
        opts.host_netns = host_netns;
        opts.mtu = mtu;
        opts.default_pools = default_pools;
        opts.gateway_pool = parse_opt(py, OPEN, "gateway_pool", gateway_pool)?;
        opts.gateway_bridge = gateway_bridge;
        opts.dns_upstreams = dns_upstreams;
        opts.state_dir = state_dir;
        let core = run(py, async move { Core::open(opts).await })?;
        Ok(Controller {
            inner: DropInRuntime::new(core),
        })
    }

    /// This host's id in the cluster.
    #[getter]
    fn host_id(&self) -> String {
        self.inner.peek().host_id().to_string()
    }

    /// Creates a global overlay network; returns its inspect document (Docker's shape).
    #[pyo3(signature = (
        name,
        *,
        subnet = None,
        gateway = None,
        ip_range = None,
        ipv6 = false,
        vni = None,
        labels = None,
        internal = false,
        subnet6 = None,
        gateway6 = None,
        mtu = None,
        aux_addresses = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn create_network<'py>(
        &self,
        py: Python<'py>,
        name: String,
        subnet: Option<&str>,
        gateway: Option<&str>,
        ip_range: Option<&str>,
        ipv6: bool,
        #[pyo3(from_py_with = network_vni)] vni: Option<u32>,
        labels: Option<BTreeMap<String, String>>,
        internal: bool,
        subnet6: Option<&str>,
        gateway6: Option<&str>,
        #[pyo3(from_py_with = network_mtu)] mtu: Option<u32>,
        aux_addresses: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut subnets = Vec::new();
        match parse_opt::<IpNet>(py, CREATE, "subnet", subnet)? {
            Some(subnet) => {
                let mut aux = BTreeMap::new();
                for (k, v) in aux_addresses.unwrap_or_default() {
                    let address =
                        parse::<IpAddr>(py, CREATE, &format!("aux_addresses[{k:?}]"), &v)?;
                    aux.insert(k, address);
                }
                let mut one = SubnetOptions::new(subnet);
                one.gateway = parse_opt(py, CREATE, "gateway", gateway)?;
                one.ip_range = parse_opt(py, CREATE, "ip_range", ip_range)?;
                one.aux_addresses = aux;
                subnets.push(one);
            }
            None => {
                let stray = [
                    ("gateway", gateway.is_some()),
                    ("ip_range", ip_range.is_some()),
                    (
                        "aux_addresses",
                        aux_addresses.is_some_and(|a| !a.is_empty()),
                    ),
                ];
                if let Some((param, _)) = stray.iter().find(|(_, given)| *given) {
                    return Err(errors::invalid(
                        py,
                        CREATE,
                        format!("{param} was given without subnet; give the subnet it belongs to"),
                    ));
                }
            }
        }
        match parse_opt::<IpNet>(py, CREATE, "subnet6", subnet6)? {
            Some(subnet) => {
                let mut one = SubnetOptions::new(subnet);
                one.gateway = parse_opt(py, CREATE, "gateway6", gateway6)?;
                subnets.push(one);
            }
            None if gateway6.is_some() => {
                return Err(errors::invalid(
                    py,
                    CREATE,
                    "gateway6 was given without subnet6; give the subnet it belongs to".to_string(),
                ));
            }
            None => {}
        }
        let mut opts = NetworkOptions::default().ipv6(ipv6).internal(internal);
        opts.subnets = subnets;
        opts.vni = vni;
        opts.labels = labels.unwrap_or_default();
        opts.mtu = mtu;
        let core = self.core(py)?;
        let doc = run(py, async move { core.create_network(&name, &opts).await })?;
        to_python(py, &doc)
    }

    /// Every network: a list of dicts with ID, Name, Driver and Scope (`docker network ls`).
    fn networks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core(py)?;
        let list = run(py, async move { core.networks().await })?;
        to_python(py, &list)
    }

    /// The inspect document (Docker's shape) of a network by name, id or unique id prefix.
    fn inspect<'py>(&self, py: Python<'py>, name_or_id: String) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core(py)?;
        let doc = run(py, async move { core.inspect(&name_or_id).await })?;
        to_python(py, &doc)
    }

    /// Removes a network; ConflictError while containers are connected to it.
    fn remove_network(&self, py: Python<'_>, name_or_id: String) -> PyResult<()> {
        let core = self.core(py)?;
        run(py, async move { core.remove_network(&name_or_id).await })
    }

    /// Connects a container (its network namespace: a path or a pid) to a network; returns its
    /// entry of the inspect document (Name, EndpointID, MacAddress, IPv4Address, ...).
    /// `publish` takes Docker's `-p` forms: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
    /// `owner` names the tool making the attachment, kept by this host only (what a plugin
    /// later finds its own attachments by).
    #[pyo3(signature = (
        network,
        *,
        netns,
        container_id,
        name,
        aliases = Vec::new(),
        ip = None,
        ip6 = None,
        sticky = false,
        hosts_file = None,
        resolv_conf = None,
        ifname = None,
        publish = Vec::new(),
        owner = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn connect<'py>(
        &self,
        py: Python<'py>,
        network: String,
        netns: &Bound<'py, PyAny>,
        container_id: String,
        name: String,
        aliases: Vec<String>,
        ip: Option<&str>,
        ip6: Option<&str>,
        sticky: bool,
        hosts_file: Option<PathBuf>,
        resolv_conf: Option<PathBuf>,
        ifname: Option<String>,
        publish: Vec<String>,
        owner: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let publish = publish
            .into_iter()
            .map(|p| p.parse().map_err(|e| errors::to_py(py, &e)))
            .collect::<PyResult<_>>()?;
        let mut spec = ContainerSpec::new(container_id, name, netns_arg(netns)?)
            .aliases(aliases)
            .ipv4(parse_opt::<Ipv4Addr>(py, CONNECT, "ip", ip)?)
            .ipv6(parse_opt::<Ipv6Addr>(py, CONNECT, "ip6", ip6)?)
            .sticky(sticky);
        spec.hosts_file = hosts_file;
        spec.resolv_conf = resolv_conf;
        spec.ifname = ifname;
        spec.publish = publish;
        spec.owner = owner;
        let core = self.core(py)?;
        let entry = run(py, async move {
            let made = core.connect(&network, &spec).await?;
            // Docker's shape, as documented for this face.
            Ok::<_, overlay_core::Error>(ContainerInspect::of_attachment(&made, core.host_id()))
        })?;
        to_python(py, &entry)
    }

    /// Disconnects a container from a network.
    fn disconnect(&self, py: Python<'_>, network: String, container_id: String) -> PyResult<()> {
        let core = self.core(py)?;
        run(
            py,
            async move { core.disconnect(&network, &container_id).await },
        )
    }

    /// The addresses of a name (`name`, `name.network` or an alias) as strings; NotFoundError
    /// when no container has it.
    fn resolve(&self, py: Python<'_>, name: String) -> PyResult<Vec<String>> {
        let core = self.core(py)?;
        let addrs = run(py, async move { core.resolve(&name).await })?;
        Ok(addrs.iter().map(ToString::to_string).collect())
    }

    /// This host's health as a dict: "host", "store_reachable", "store_error" (when not),
    /// "last_sweep_ms", "tasks" (each with "name", "state", "restarts", "error"),
    /// "store_requests" (the store client's calls by kind, and "watch_events") and "healthy".
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core(py)?;
        let health = run(py, async move { core.health().await })?;
        to_python(py, &health)
    }

    /// The controller's events from now on, as this host sees them: networks created and
    /// removed anywhere, and containers of other hosts joining and leaving the networks this
    /// host has containers on. An iterator of dicts with a "type" key.
    fn events(&self, py: Python<'_>) -> PyResult<Events> {
        Ok(Events::new(
            self.inner.get(py, "controller events")?.events(),
        ))
    }

    /// Leaves the cluster: stops the agent and closes the store. Containers stay connected.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core(py)?;
        run(py, async move { core.close().await })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "overlay.Controller(host_id={:?})",
            self.inner.peek().host_id().to_string()
        )
    }
}

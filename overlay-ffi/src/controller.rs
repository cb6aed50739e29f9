//! `ovl_controller`: one host's view of the overlay, the C face of
//! [`overlay_core::Controller`]. Arguments and results are the same JSON documents
//! the Rust and Python faces use.

use std::ffi::c_char;

use overlay_core::{
    ContainerInspect, ContainerSpec, Controller, ControllerOptions, NetworkOptions,
};

use crate::boundary::{
    self, Failure, FfiResult, Out, arg_document, arg_ref, arg_str, c_json, c_string,
};
use crate::runtime::block_on;
use crate::status::ovl_status;

/// One host's controller. Opaque: create it with `ovl_controller_open`, free it with
/// `ovl_controller_free`.
///
/// Thread-safe: any number of threads may use one controller at once (two threads creating the
/// same network name get one `OVL_OK` and one `OVL_ERR_ALREADY_EXISTS`). Only
/// `ovl_controller_free` must not race with other calls on the same handle.
pub struct ovl_controller {
    pub(crate) inner: Controller,
}

/// Borrows the controller behind a handle argument.
///
/// # Safety
/// `ptr` is NULL or a live handle.
pub(crate) unsafe fn handle<'a>(ptr: *const ovl_controller) -> FfiResult<&'a Controller> {
    // SAFETY: forwarded from the caller.
    Ok(&unsafe { arg_ref("ctl", ptr) }?.inner)
}

/// Opens this host's controller: connects to the cluster store, registers the host and starts
/// its agent. `config_json` is a JSON object with any of these keys (unknown keys are refused
/// with `OVL_ERR_JSON`; `"{}"` takes every default):
///
/// | key | type | default |
/// | --- | --- | --- |
/// | `store` | store URL: `file:///PATH`, `etcd://H:P/PREFIX`, `zk://…`, `consul://…` | `file:///var/lib/overlay/store.db` |
/// | `advertise` | IP, or interface name whose first IPv4 is used | required |
/// | `host_id` | string | the hostname |
/// | `host_netns` | path of the namespace acting as this host, e.g. `/run/netns/host1` | the caller's |
/// | `mtu` | integer | underlay MTU − 50 |
/// | `vxlan_port` | integer | 4789 |
/// | `default_pools` | array of `{"base": "10.0.0.0/8", "size": 24}` | the /24s of 10.0.0.0/8 |
/// | `sticky_grace`, `host_ttl`, `reclaim_grace` | milliseconds | 86400000, 10000, 30000 |
/// | `gateway_pool` | IPv4 subnet of the host's gateway bridge | `172.18.0.0/16` |
/// | `gateway_bridge` | its name | `ovl_gwbridge` |
/// | `dns` | the resolver at each network's gateway address | `true` |
/// | `dns_upstreams` | where other names are forwarded: `"IP"` or `"IP:PORT"` strings | the nameservers of `/etc/resolv.conf` |
/// | `state_dir` | directory of this host's own state (container namespace and hosts file paths, never stored in the cluster) | `/run/overlay/<host_id>-<hash of the store URL>` |
///
/// On success `*out` holds a new handle. A second controller for a `host_id` that a live one
/// holds (in any process, on any machine) fails with `OVL_ERR_ALREADY_EXISTS`.
///
/// Errors: `OVL_ERR_JSON` when the document is not JSON or not of this shape (an unknown key, a
/// wrong type such as `"mtu": "big"`), `OVL_ERR_INVALID_ARGUMENT` for a bad value (a store URL,
/// an address or pool that does not parse, a number out of range), `OVL_ERR_UNAVAILABLE` when
/// the store cannot be reached, `OVL_ERR_PERMISSION_DENIED` without `CAP_NET_ADMIN`.
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_controller_open(
    config_json: *const c_char,
    out: *mut *mut ovl_controller,
) -> ovl_status {
    boundary::run("ovl_controller_open", || {
        // SAFETY: forwarded from the caller.
        let options: ControllerOptions = unsafe { arg_document("config_json", config_json) }?;
        let out = Out::required("out", out)?;
        let inner = block_on(Controller::open(options))??;
        let handle = Box::into_raw(Box::new(ovl_controller { inner }));
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Closes the controller if it is still open (as `ovl_controller_close`) and frees the handle.
/// NULL is a no-op. No other call may use the handle during or after this one.
///
/// # Safety
/// `ctl` is NULL or a handle from `ovl_controller_open` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_controller_free(ctl: *mut ovl_controller) {
    boundary::run_value((), || {
        if ctl.is_null() {
            return;
        }
        // SAFETY: the caller hands back ownership of a handle made by Box::into_raw.
        let ctl = unsafe { Box::from_raw(ctl) };
        // Best effort: a controller whose store is gone has nothing left to release.
        let _ = block_on(ctl.inner.close());
    });
}

/// Closes the controller: stops its agent and ends its store session, withdrawing this host's
/// record. Kernel state stays: connected containers keep talking, and a controller opened
/// again on this host takes them over. Later calls that need the agent fail with
/// `OVL_ERR_UNAVAILABLE`; the handle must still be freed with `ovl_controller_free`. Closing
/// twice is not an error.
///
/// # Safety
/// `ctl` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_controller_close(ctl: *mut ovl_controller) -> ovl_status {
    boundary::run("ovl_controller_close", || {
        // SAFETY: forwarded from the caller.
        let ctl = unsafe { handle(ctl) }?;
        Ok(block_on(ctl.close())??)
    })
}

/// This host's id in the cluster. On success `*out_id` holds it, freed with `ovl_string_free`.
///
/// # Safety
/// `ctl` is NULL or a live handle; `out_id` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_controller_host_id(
    ctl: *mut ovl_controller,
    out_id: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_controller_host_id", || {
        // SAFETY: forwarded from the caller.
        let ctl = unsafe { handle(ctl) }?;
        let out_id = Out::required("out_id", out_id)?;
        let id = c_string(ctl.host_id().to_string())?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_id.write(id) };
        Ok(())
    })
}

/// Creates the overlay network `name` cluster-wide (Docker's `network create --driver
/// overlay`). `options_json` (NULL for all defaults) is a JSON object with any of:
///
/// ```json
/// {"subnets": [{"subnet": "10.0.9.0/24", "gateway": "10.0.9.1", "ip_range": "10.0.9.128/25",
///               "aux_addresses": {"router": "10.0.9.2"}}],
///  "ipv6": false, "vni": 4097, "labels": {"team": "db"}, "internal": false, "mtu": 1400}
/// ```
///
/// Unknown keys are refused (`OVL_ERR_JSON`). On success `*out_json` (if `out_json` is not
/// NULL) holds the network's inspect document, as `ovl_network_inspect` returns it.
///
/// Errors: `OVL_ERR_JSON` when the document is not JSON or not of this shape (an unknown key, a
/// wrong type such as `"subnets": 5`), `OVL_ERR_INVALID_ARGUMENT` for a reserved or malformed
/// name or a bad value (a subnet or address that does not parse, such as `"10.999.0.0/24"`, a
/// VNI outside 1 to 16777215), `OVL_ERR_ALREADY_EXISTS` when the name (or the VNI) is taken,
/// `OVL_ERR_CONFLICT` when a subnet overlaps another network's.
///
/// # Safety
/// `ctl` is NULL or a live handle; `name` and `options_json` NULL or NUL-terminated strings;
/// `out_json` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_network_create(
    ctl: *mut ovl_controller,
    name: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_network_create", || {
        // SAFETY: forwarded from the caller.
        let (ctl, name) = unsafe { (handle(ctl)?, arg_str("name", name)?) };
        let options: NetworkOptions = if options_json.is_null() {
            NetworkOptions::default()
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { arg_document("options_json", options_json) }?
        };
        let out_json = Out::optional(out_json);
        let network = block_on(ctl.create_network(name, &options))??;
        if out_json.is_wanted() {
            let text = c_json(&network)?;
            // SAFETY: non-NULL; the caller promises it is writable.
            unsafe { out_json.write(text) };
        }
        Ok(())
    })
}

/// Lists every network of the cluster (Docker's `network ls`). On success `*out_json` holds a
/// JSON array, freed with `ovl_string_free`:
///
/// ```json
/// [{"ID": "<64 hex>", "Name": "my-net", "Driver": "overlay", "Scope": "global"}]
/// ```
///
/// # Safety
/// `ctl` is NULL or a live handle; `out_json` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_network_list(
    ctl: *mut ovl_controller,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_network_list", || {
        // SAFETY: forwarded from the caller.
        let ctl = unsafe { handle(ctl) }?;
        let out_json = Out::required("out_json", out_json)?;
        let text = c_json(&block_on(ctl.networks())??)?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_json.write(text) };
        Ok(())
    })
}

/// Describes a network, found by name, full id or unique id prefix (Docker's `network
/// inspect`). On success `*out_json` holds a JSON object, freed with `ovl_string_free`:
///
/// ```json
/// {"Name": "my-net", "Id": "<64 hex>", "Scope": "global", "Driver": "overlay",
///  "EnableIPv6": false, "Internal": false,
///  "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.9.0/24", "Gateway": "10.0.9.1"}]},
///  "Containers": {"<container id>": {"Name": "zookeeper1", "EndpointID": "<64 hex>",
///                 "MacAddress": "02:42:0a:00:09:02", "IPv4Address": "10.0.9.2/24",
///                 "IPv6Address": "", "Host": "host1"}},
///  "Options": {"com.docker.network.driver.overlay.vxlanid_list": "256"},
///  "Labels": {}}
/// ```
///
/// `Containers` lists the containers of every host. Errors: `OVL_ERR_NOT_FOUND`.
///
/// # Safety
/// `ctl` is NULL or a live handle; `name_or_id` NULL or a NUL-terminated string; `out_json`
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_network_inspect(
    ctl: *mut ovl_controller,
    name_or_id: *const c_char,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_network_inspect", || {
        // SAFETY: forwarded from the caller.
        let (ctl, name_or_id) = unsafe { (handle(ctl)?, arg_str("name_or_id", name_or_id)?) };
        let out_json = Out::required("out_json", out_json)?;
        let text = c_json(&block_on(ctl.inspect(name_or_id))??)?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_json.write(text) };
        Ok(())
    })
}

/// Removes a network, found by name, full id or unique id prefix, from the cluster.
///
/// Errors: `OVL_ERR_NOT_FOUND`; `OVL_ERR_CONFLICT` while containers are connected to it on any
/// host (the message lists them; disconnect them first).
///
/// # Safety
/// `ctl` is NULL or a live handle; `name_or_id` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_network_remove(
    ctl: *mut ovl_controller,
    name_or_id: *const c_char,
) -> ovl_status {
    boundary::run("ovl_network_remove", || {
        // SAFETY: forwarded from the caller.
        let (ctl, name_or_id) = unsafe { (handle(ctl)?, arg_str("name_or_id", name_or_id)?) };
        Ok(block_on(ctl.remove_network(name_or_id))??)
    })
}

/// Connects a container on this host to a network (Docker's `run --net`): allocates its
/// address, creates its interface inside the container's namespace and publishes it to the
/// other hosts. `container_json` is a JSON object:
///
/// ```json
/// {"id": "3cfba8da9b6f", "name": "zookeeper1", "netns": {"path": "/run/netns/zk1"},
///  "aliases": ["zk"], "ipv4": "10.0.9.10", "ipv6": null, "sticky": false,
///  "hosts_file": "/run/zk1/hosts", "resolv_conf": "/run/zk1/resolv.conf", "ifname": "eth0",
///  "publish": ["2181:2181"], "owner": "my-plugin"}
/// ```
///
/// `resolv_conf` is kept pointing at the resolvers of the container's networks. `owner` names
/// the tool making the attachment; this host keeps it, and the agent's `attachments` request
/// lists it.
///
/// `publish` takes Docker's `-p` forms (`[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`); a port
/// another container of this host publishes fails with `OVL_ERR_ALREADY_EXISTS`.
///
/// `id`, `name` and `netns` (`{"path": "…"}` or `{"pid": 1234}`) are required; unknown keys are
/// refused (`OVL_ERR_JSON`). On success `*out_json` (if `out_json` is not NULL) holds the
/// container's entry of the network's `Containers`:
///
/// ```json
/// {"Name": "zookeeper1", "EndpointID": "<64 hex>", "MacAddress": "02:42:0a:00:09:0a",
///  "IPv4Address": "10.0.9.10/24", "IPv6Address": "", "Host": "host1"}
/// ```
///
/// Errors: `OVL_ERR_JSON` when the document is not JSON or not of this shape (a missing `id`,
/// `name` or `netns`, an unknown key, a wrong type), `OVL_ERR_NOT_FOUND` for an unknown network
/// or namespace, `OVL_ERR_ALREADY_EXISTS` when the container is already connected or its static
/// address is taken, `OVL_ERR_INVALID_ARGUMENT` for a bad name, an address that does not parse
/// (`"ipv4": "10.0.9.300"`) or one outside the subnet,
/// `OVL_ERR_PERMISSION_DENIED` without `CAP_NET_ADMIN`, `OVL_ERR_KERNEL` when the kernel refuses.
///
/// # Safety
/// `ctl` is NULL or a live handle; `network` and `container_json` NULL or NUL-terminated
/// strings; `out_json` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_connect(
    ctl: *mut ovl_controller,
    network: *const c_char,
    container_json: *const c_char,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_connect", || {
        // SAFETY: forwarded from the caller.
        let (ctl, network) = unsafe { (handle(ctl)?, arg_str("network", network)?) };
        // SAFETY: forwarded from the caller.
        let container: ContainerSpec = unsafe { arg_document("container_json", container_json) }?;
        let out_json = Out::optional(out_json);
        let made = block_on(ctl.connect(network, &container))??;
        if out_json.is_wanted() {
            // Docker's shape, as the header documents.
            let text = c_json(&ContainerInspect::of_attachment(&made, ctl.host_id()))?;
            // SAFETY: non-NULL; the caller promises it is writable.
            unsafe { out_json.write(text) };
        }
        Ok(())
    })
}

/// Disconnects a container of this host from a network: removes its interface, withdraws it
/// from the other hosts and releases its address (unless it was connected `sticky`).
///
/// Errors: `OVL_ERR_NOT_FOUND` when the network does not exist or the container is not
/// connected to it.
///
/// # Safety
/// `ctl` is NULL or a live handle; `network` and `container_id` NULL or NUL-terminated
/// strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_disconnect(
    ctl: *mut ovl_controller,
    network: *const c_char,
    container_id: *const c_char,
) -> ovl_status {
    boundary::run("ovl_disconnect", || {
        // SAFETY: forwarded from the caller.
        let (ctl, network, container_id) = unsafe {
            (
                handle(ctl)?,
                arg_str("network", network)?,
                arg_str("container_id", container_id)?,
            )
        };
        Ok(block_on(ctl.disconnect(network, container_id))??)
    })
}

/// Resolves a container name as the containers see it (`name`, `name.network` or an alias) to
/// its address. On success `*out_ip` holds the first address as text (e.g. `"10.0.9.2"`),
/// freed with `ovl_string_free`; `ovl_resolve_all` returns every address.
///
/// Errors: `OVL_ERR_NOT_FOUND` for a name no container on this host's networks has.
///
/// # Safety
/// `ctl` is NULL or a live handle; `name` NULL or a NUL-terminated string; `out_ip` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_resolve(
    ctl: *mut ovl_controller,
    name: *const c_char,
    out_ip: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_resolve", || {
        // SAFETY: forwarded from the caller.
        let (ctl, name) = unsafe { (handle(ctl)?, arg_str("name", name)?) };
        let out_ip = Out::required("out_ip", out_ip)?;
        let first = resolve(ctl, name)?.swap_remove(0);
        let text = c_string(first)?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_ip.write(text) };
        Ok(())
    })
}

/// Like `ovl_resolve`, but `*out_json` holds every address as a JSON array of strings, e.g.
/// `["10.0.9.2", "fd00:9::2"]`, freed with `ovl_string_free`.
///
/// # Safety
/// As `ovl_resolve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_resolve_all(
    ctl: *mut ovl_controller,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_resolve_all", || {
        // SAFETY: forwarded from the caller.
        let (ctl, name) = unsafe { (handle(ctl)?, arg_str("name", name)?) };
        let out_json = Out::required("out_json", out_json)?;
        let text = c_json(&resolve(ctl, name)?)?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_json.write(text) };
        Ok(())
    })
}

/// This host's health as JSON in `*out_json` (freed with `ovl_string_free`):
/// `{"host": …, "store_reachable": bool, "store_error"?: …, "last_sweep_ms"?: ms since the
/// epoch, "tasks": [{"name", "state": "running"|"failing"|"restarting", "error"?, "restarts"}],
/// "store_requests": {"get", "list", "txn", …, "watch", "watch_events": counts since the store
/// client opened}, "healthy": bool}`. A store that does not answer is reported here, not as an error; the call
/// takes at most the store's timeout.
///
/// # Safety
/// `ctl` is NULL or a live handle; `out_json` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_health(
    ctl: *mut ovl_controller,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_health", || {
        // SAFETY: forwarded from the caller.
        let ctl = unsafe { handle(ctl) }?;
        let out_json = Out::required("out_json", out_json)?;
        let text = c_json(&block_on(ctl.health())??)?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_json.write(text) };
        Ok(())
    })
}

/// The addresses of `name`, never empty.
fn resolve(ctl: &Controller, name: &str) -> FfiResult<Vec<String>> {
    let addresses: Vec<String> = block_on(ctl.resolve(name))??
        .iter()
        .map(ToString::to_string)
        .collect();
    if addresses.is_empty() {
        return Err(Failure::new(
            ovl_status::OVL_ERR_NOT_FOUND,
            format!("no container answers to {name:?} (check the name and its network)"),
        ));
    }
    Ok(addresses)
}

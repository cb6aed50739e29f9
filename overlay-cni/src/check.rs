//! CHECK: an attachment's `prevResult` held against the namespace as the kernel reports it,
//! and against the agent's record of the attachment.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use overlay_core::Attachment;
use overlay_core::dataplane::NamespaceState;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct PrevInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PrevIp {
    address: IpNet,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct PrevRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct PrevResult {
    #[serde(default)]
    interfaces: Vec<PrevInterface>,
    #[serde(default)]
    ips: Vec<PrevIp>,
    #[serde(default)]
    routes: Vec<PrevRoute>,
}

/// Whether the namespace at `netns` (read as `state`) and the agent's `attachment` still are
/// what `prev` (the ADD's result, as the runtime kept it) says of interface `ifname`; the
/// first difference, worded for the user, if not.
pub fn verify(
    prev: &serde_json::Value,
    netns: &Path,
    ifname: &str,
    state: &NamespaceState,
    attachment: &Attachment,
) -> Result<(), String> {
    let prev: PrevResult = serde_json::from_value(prev.clone())
        .map_err(|e| format!("prevResult does not decode as a CNI result: {e}"))?;
    let sandbox = netns.display().to_string();
    let ours: Vec<&PrevInterface> = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.as_deref() == Some(sandbox.as_str()))
        .collect();
    if !ours.iter().any(|i| i.name == ifname) {
        return Err(format!(
            "prevResult lists no interface {ifname} in {sandbox}: it is not this attachment's"
        ));
    }
    if attachment.ifname != ifname {
        return Err(format!(
            "the agent attached the container through {}, not {ifname}",
            attachment.ifname
        ));
    }
    for want in &ours {
        let Some(has) = state.interface(&want.name) else {
            return Err(format!("interface {} is gone from {sandbox}", want.name));
        };
        if let (Some(w), Some(h)) = (&want.mac, &has.mac)
            && !w.eq_ignore_ascii_case(h)
        {
            return Err(format!(
                "interface {} has MAC {h}, and prevResult says {w}",
                want.name
            ));
        }
        if !has.up {
            return Err(format!("interface {} is down", want.name));
        }
    }
    for ip in &prev.ips {
        let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i)) else {
            continue;
        };
        if iface.sandbox.as_deref() != Some(sandbox.as_str()) {
            continue;
        }
        let holds = state
            .interface(&iface.name)
            .is_some_and(|i| i.addresses.contains(&ip.address));
        if !holds {
            return Err(format!(
                "interface {} no longer holds {}",
                iface.name, ip.address
            ));
        }
    }
    for want in &attachment.addresses {
        if !prev.ips.iter().any(|ip| ip.address == want.address) {
            return Err(format!(
                "the agent gave the container {}, which prevResult does not list",
                want.address
            ));
        }
    }
    for r in &prev.routes {
        let present = state
            .routes
            .iter()
            .any(|s| s.destination == r.dst && (r.gw.is_none() || s.gateway == r.gw));
        if !present {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(format!("route {}{via} is gone from {sandbox}", r.dst));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_core::dataplane::{InterfaceState, RouteState};

    fn attachment() -> Attachment {
        serde_json::from_value(serde_json::json!({
            "network": "my-net", "network_id": "a".repeat(64), "container_id": "c1",
            "name": "zookeeper1", "endpoint_id": "b".repeat(64),
            "netns": "/run/netns/c1", "ifname": "eth0", "mac": "02:42:0a:00:09:02",
            "addresses": [{"address": "10.0.9.2/24", "gateway": "10.0.9.1"}],
            "resolver": "10.0.9.1"
        }))
        .unwrap()
    }

    fn state() -> NamespaceState {
        NamespaceState {
            interfaces: vec![InterfaceState {
                name: "eth0".into(),
                mac: Some("02:42:0a:00:09:02".into()),
                up: true,
                addresses: vec!["10.0.9.2/24".parse().unwrap()],
            }],
            routes: vec![RouteState {
                destination: "10.0.9.0/24".parse().unwrap(),
                gateway: None,
                interface: Some("eth0".into()),
            }],
        }
    }

    fn prev() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:42:0A:00:09:02", "sandbox": "/run/netns/c1"}],
            "ips": [{"address": "10.0.9.2/24", "gateway": "10.0.9.1", "interface": 0}],
            "routes": [{"dst": "10.0.9.0/24"}],
            "dns": {}
        })
    }

    #[test]
    fn an_untouched_attachment_passes() {
        let netns = Path::new("/run/netns/c1");
        verify(&prev(), netns, "eth0", &state(), &attachment()).unwrap();
    }

    #[test]
    fn every_difference_is_named() {
        let netns = Path::new("/run/netns/c1");
        let mut s = state();
        s.interfaces[0].addresses.clear();
        let e = verify(&prev(), netns, "eth0", &s, &attachment()).unwrap_err();
        assert!(e.contains("no longer holds 10.0.9.2/24"), "{e}");
        let mut s = state();
        s.interfaces[0].mac = Some("02:00:00:00:00:01".into());
        let e = verify(&prev(), netns, "eth0", &s, &attachment()).unwrap_err();
        assert!(e.contains("MAC"), "{e}");
        let mut s = state();
        s.routes.clear();
        let e = verify(&prev(), netns, "eth0", &s, &attachment()).unwrap_err();
        assert!(e.contains("route 10.0.9.0/24"), "{e}");
        let e = verify(&prev(), netns, "eth1", &state(), &attachment()).unwrap_err();
        assert!(e.contains("no interface eth1"), "{e}");
        let s = NamespaceState::default();
        let e = verify(&prev(), netns, "eth0", &s, &attachment()).unwrap_err();
        assert!(e.contains("gone"), "{e}");
    }
}

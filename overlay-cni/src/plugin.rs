//! One invocation of the plugin, from the runtime's environment and configuration to the
//! document it prints: ADD, DEL, CHECK, STATUS, GC and VERSION as the specification words
//! them, each carried out through the host's agent.

use std::path::Path;

use overlay_core::ErrorKind;
use overlay_core::rpc::Request;
use overlay_core::{Attachment, ContainerSpec, Health, NetnsRef};
use serde_json::Value;

use crate::client::Agent;
use crate::env::{Command, Invocation};
use crate::error::{CniError, Code, code_for};
use crate::netconf::NetConf;

/// The owner this plugin's attachments carry, so that GC finds them and leaves others alone.
pub const OWNER: &str = "overlay-cni";

/// Carries out the invocation that `var` (the environment) and `stdin` (the network
/// configuration) describe. `Ok(Some(doc))` is printed on stdout; `Ok(None)` prints nothing
/// (DEL, CHECK, STATUS and GC succeed silently); an error is printed as the spec's error object.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    // VERSION's configuration holds only a version: answered before the full parse.
    if var("CNI_COMMAND").as_deref() == Some("VERSION") {
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string));
        return Ok(Some(crate::version_reply(asked.as_deref())));
    }
    let conf = NetConf::parse(stdin)?;
    let inv = Invocation::from_vars(&conf.cni_version, &var)?;
    let agent = Agent::new(&conf.socket, &conf.cni_version);
    match inv.command {
        Command::Add => add(&conf, &inv, &agent).map(Some),
        Command::Del => del(&conf, &inv, &agent).map(|()| None),
        Command::Check => check(&conf, &inv, &agent).map(|()| None),
        Command::Status => status(&conf, &agent).map(|()| None),
        Command::Gc => gc(&conf, &agent).map(|()| None),
        Command::Version => Ok(Some(crate::version_reply(Some(&conf.cni_version)))),
    }
}

/// The container's name on the network and its further names. Podman 4.3 passes the
/// container's name as `K8S_POD_NAME` in `CNI_ARGS` and its short id (plus any
/// `--network-alias`) in `runtimeConfig.aliases`; Kubernetes passes the pod's name the same
/// way. So: the pod name if given, else the first alias, else the container id; every alias
/// stays a name too.
fn names(conf: &NetConf, inv: &Invocation, id: &str) -> (String, Vec<String>) {
    let name = inv
        .args
        .get("K8S_POD_NAME")
        .filter(|n| !n.is_empty())
        .or(conf.aliases.first())
        .cloned()
        .unwrap_or_else(|| id.to_string());
    let mut seen = std::collections::BTreeSet::new();
    let aliases = conf
        .aliases
        .iter()
        .filter(|a| **a != name && seen.insert((*a).clone()))
        .cloned()
        .collect();
    (name, aliases)
}

fn add(conf: &NetConf, inv: &Invocation, agent: &Agent) -> Result<Value, CniError> {
    let v = &conf.cni_version;
    let (Some(id), Some(netns), Some(ifname)) = (&inv.container_id, &inv.netns, &inv.ifname) else {
        return unreachable_env(v);
    };
    let (name, aliases) = names(conf, inv, id);
    let mut spec = ContainerSpec::new(id.clone(), name, NetnsRef::Path(netns.clone()));
    spec.aliases = aliases;
    spec.ifname = Some(ifname.clone());
    spec.publish = conf.ports.clone();
    spec.owner = Some(OWNER.to_string());
    let request = Request::Attach {
        network: conf.network.clone(),
        create: conf.create.as_ref().map(|c| c.network_options()),
        container: spec,
    };
    let attachment: Attachment = agent.call_as(&request).map_err(|mut e| {
        // A missing network or namespace is the configuration's or the runtime's doing,
        // not an unknown container.
        if e.code == Code::UnknownContainer as u32 {
            e.code = Code::InvalidConfig as u32;
        }
        e
    })?;
    Ok(crate::result::to_result(&attachment, v))
}

fn del(conf: &NetConf, inv: &Invocation, agent: &Agent) -> Result<(), CniError> {
    let Some(id) = &inv.container_id else {
        return unreachable_env(&conf.cni_version);
    };
    let request = Request::Disconnect {
        network: conf.network.clone(),
        container_id: id.clone(),
    };
    match agent.call(&request) {
        Ok(_) => Ok(()),
        // Already gone, or never made: DEL is idempotent.
        Err(e) if e.code == code_for(ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

fn check(conf: &NetConf, inv: &Invocation, agent: &Agent) -> Result<(), CniError> {
    let v = &conf.cni_version;
    let (Some(id), Some(netns), Some(ifname)) = (&inv.container_id, &inv.netns, &inv.ifname) else {
        return unreachable_env(v);
    };
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            v,
            Code::InvalidConfig,
            "CHECK needs prevResult, and the configuration has none",
            "pass the result of the ADD as prevResult, as the spec asks of runtimes",
        ));
    };
    let list: Vec<Attachment> = agent.call_as(&Request::Attachments {
        network: Some(conf.network.clone()),
    })?;
    let Some(attachment) = list.iter().find(|a| a.container_id == *id) else {
        return Err(CniError::new(
            v,
            Code::UnknownContainer,
            format!(
                "container {id:?} is not attached to network {:?} on this host",
                conf.network
            ),
            "ADD it again (DEL first), or check the container id",
        ));
    };
    let state = read_namespace(v, netns)?;
    crate::check::verify(prev, netns, ifname, &state, attachment).map_err(|msg| CniError {
        cni_version: v.clone(),
        code: code_for(ErrorKind::Conflict),
        msg: format!("container {id:?}: {msg}"),
        details: "DEL and ADD the container again to restore its attachment".into(),
    })
}

/// The namespace's interfaces and routes, read on a runtime of this call's own.
fn read_namespace(
    v: &str,
    netns: &Path,
) -> Result<overlay_core::dataplane::NamespaceState, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                v,
                Code::Io,
                format!("cannot start an I/O runtime: {e}"),
                "check the process limits",
            )
        })?;
    rt.block_on(overlay_core::dataplane::inspect_namespace(netns))
        .map_err(|e| {
            let mut err = CniError::from_core(v, &e);
            if e.kind() == ErrorKind::NotFound {
                err.code = Code::UnknownContainer as u32;
            }
            err
        })
}

fn status(conf: &NetConf, agent: &Agent) -> Result<(), CniError> {
    let v = &conf.cni_version;
    let unavailable =
        |msg: String, details: &str| CniError::new(v, Code::NotAvailable, msg, details.to_string());
    let health: Health = agent.call_as(&Request::Health {}).map_err(|e| {
        unavailable(
            e.msg,
            "start the host's agent and check that it reaches the cluster store",
        )
    })?;
    if !health.store_reachable {
        return Err(unavailable(
            format!(
                "the agent of host {:?} cannot reach the cluster store: {}",
                health.host,
                health.store_error.as_deref().unwrap_or("no answer")
            ),
            "check the store's servers and the agent's --store URL",
        ));
    }
    Ok(())
}

fn gc(conf: &NetConf, agent: &Agent) -> Result<(), CniError> {
    let v = &conf.cni_version;
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            v,
            Code::InvalidConfig,
            "GC needs cni.dev/valid-attachments, and the configuration has none",
            "pass the attachments still in use (an empty list collects every one)",
        ));
    };
    let list: Vec<Attachment> = match agent.call_as(&Request::Attachments {
        network: Some(conf.network.clone()),
    }) {
        Ok(list) => list,
        // No such network: nothing of it to collect.
        Err(e) if e.code == code_for(ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    for a in list.iter().filter(|a| a.owner.as_deref() == Some(OWNER)) {
        let keep = valid
            .iter()
            .any(|(id, ifname)| *id == a.container_id && *ifname == a.ifname);
        if keep {
            continue;
        }
        let request = Request::Disconnect {
            network: conf.network.clone(),
            container_id: a.container_id.clone(),
        };
        match agent.call(&request) {
            Ok(_) => {}
            Err(e) if e.code == code_for(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What `Invocation::from_vars` has already refused: kept as an error, never a panic.
fn unreachable_env<T>(v: &str) -> Result<T, CniError> {
    Err(CniError::new(
        v,
        Code::InvalidEnvironment,
        "CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME is missing",
        "set them, as the runtime does",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn version_needs_no_agent_and_no_full_config() {
        let out = run(
            vars(&[("CNI_COMMAND", "VERSION")]),
            br#"{"cniVersion": "1.0.0"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["supportedVersions"][2], "1.1.0");
    }

    #[test]
    fn without_an_agent_add_is_try_again_later_and_status_not_available() {
        let conf = br#"{"cniVersion": "1.1.0", "name": "my-net", "type": "overlay-cni",
                        "socket": "/nonexistent/agent.sock"}"#;
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
        ];
        let e = run(vars(&add), conf).unwrap_err();
        assert_eq!(e.code, 11, "{e:?}");
        assert!(e.msg.contains("/nonexistent/agent.sock"), "{}", e.msg);
        assert!(e.details.contains("overlayctl agent"), "{}", e.details);
        let e = run(vars(&[("CNI_COMMAND", "STATUS")]), conf).unwrap_err();
        assert_eq!(e.code, 50);
    }

    #[test]
    fn names_come_from_the_pod_then_the_aliases_then_the_id() {
        let conf = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "my-net", "type": "overlay-cni",
                 "runtimeConfig": {"aliases": {"my-net": ["zookeeper1", "3cfba8da9b6f", "zookeeper1"]}}}"#,
        )
        .unwrap();
        let inv = |args: &str| {
            Invocation::from_vars(
                "1.0.0",
                vars(&[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "3cfba8da9b6f00"),
                    ("CNI_NETNS", "/x"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_ARGS", args),
                ]),
            )
            .unwrap()
        };
        let (name, aliases) = names(&conf, &inv(""), "3cfba8da9b6f00");
        assert_eq!(name, "zookeeper1");
        assert_eq!(aliases, ["3cfba8da9b6f"]);
        // What Podman 4.3 passes: the name as the pod's, the short id as the alias.
        let podman = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "my-net", "type": "overlay-cni",
                 "runtimeConfig": {"aliases": {"my-net": ["3cfba8da9b6f"]}}}"#,
        )
        .unwrap();
        let (name, aliases) = names(&podman, &inv("IgnoreUnknown=1;K8S_POD_NAME=zk1"), "x");
        assert_eq!(
            (name.as_str(), aliases),
            ("zk1", vec!["3cfba8da9b6f".to_string()])
        );
        let bare =
            NetConf::parse(br#"{"cniVersion": "1.0.0", "name": "n", "type": "overlay-cni"}"#)
                .unwrap();
        let (name, _) = names(&bare, &inv("K8S_POD_NAME=web-0"), "3cfba8da9b6f00");
        assert_eq!(name, "web-0");
        let (name, aliases) = names(&bare, &inv(""), "3cfba8da9b6f00");
        assert_eq!((name.as_str(), aliases.len()), ("3cfba8da9b6f00", 0));
    }
}

//! The `CNI_*` environment a runtime sets for one invocation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{CniError, Code};

/// The operation asked for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach it; idempotent.
    Del,
    /// Verify an attachment against its `prevResult`.
    Check,
    /// Whether ADDs can be served now.
    Status,
    /// Remove attachments that are not in the valid list.
    Gc,
    /// The versions this plugin speaks.
    Version,
}

/// One invocation's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: the container's namespace path.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: the interface to make inside it.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, parsed.
    pub args: BTreeMap<String, String>,
}

/// The `CNI_ARGS` keys this plugin reads (`K8S_POD_NAME` names a container that has no
/// alias); any other key is refused unless the runtime says `IgnoreUnknown=1` (or `true`), as
/// the spec's conventions ask.
const KNOWN_ARGS: [&str; 2] = ["IgnoreUnknown", "K8S_POD_NAME"];

impl Invocation {
    /// Reads an invocation from `var` (the process environment in the plugin, a map in tests),
    /// checking what `command` needs: ADD and CHECK need the container id, namespace and
    /// interface; DEL needs the container id and interface (a namespace already gone is fine).
    pub fn from_vars(
        version: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Invocation, CniError> {
        let bad = |msg: String, what: &str| {
            CniError::new(version, Code::InvalidEnvironment, msg, what.to_string())
        };
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(bad(
                    format!("CNI_COMMAND {other:?} is not a CNI operation"),
                    "set CNI_COMMAND to ADD, DEL, CHECK, STATUS, GC or VERSION",
                ));
            }
            None => {
                return Err(bad(
                    "CNI_COMMAND is not set".into(),
                    "a CNI plugin is run by a container runtime, which sets CNI_COMMAND",
                ));
            }
        };
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let inv = Invocation {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: nonempty("CNI_IFNAME"),
            args: parse_args(version, var("CNI_ARGS").as_deref().unwrap_or(""))?,
        };
        let needs: &[(&str, bool)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", inv.container_id.is_some()),
                ("CNI_NETNS", inv.netns.is_some()),
                ("CNI_IFNAME", inv.ifname.is_some()),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", inv.container_id.is_some()),
                ("CNI_IFNAME", inv.ifname.is_some()),
            ],
            Command::Status | Command::Gc | Command::Version => &[],
        };
        if let Some((name, _)) = needs.iter().find(|(_, present)| !present) {
            return Err(bad(
                format!("{name} is not set, and {command:?} needs it"),
                "the runtime sets it; when calling by hand, export it",
            ));
        }
        if let Some(ifname) = &inv.ifname
            && (ifname.len() >= 16
                || ifname.contains(['/', ' '])
                || ifname == "."
                || ifname == "..")
        {
            return Err(bad(
                format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
                "use at most 15 characters without '/' or spaces, such as eth0",
            ));
        }
        Ok(inv)
    }
}

/// Parses `K=V;K=V`. Keys other than [`KNOWN_ARGS`] are an error unless `IgnoreUnknown` is
/// `1` or `true`.
fn parse_args(version: &str, text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                version,
                Code::InvalidEnvironment,
                format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                "write CNI_ARGS as KEY=VALUE pairs separated by ';'",
            ));
        };
        args.insert(k.to_string(), v.to_string());
    }
    let ignore = args
        .get("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !ignore && let Some(k) = args.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
        return Err(CniError::new(
            version,
            Code::InvalidEnvironment,
            format!("CNI_ARGS key {k:?} is not one this plugin knows"),
            "drop it, or add IgnoreUnknown=1 to CNI_ARGS",
        ));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn podman_add() {
        let inv = Invocation::from_vars(
            "1.0.0",
            vars(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "3cfba8da9b6f"),
                ("CNI_NETNS", "/run/netns/cni-1234"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=zookeeper1"),
            ]),
        )
        .unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(
            inv.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/cni-1234"))
        );
        assert_eq!(inv.args["K8S_POD_NAME"], "zookeeper1");
    }

    #[test]
    fn what_each_command_needs() {
        let e = Invocation::from_vars(
            "1.0.0",
            vars(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        // DEL works without a namespace (the container may be gone).
        let del = Invocation::from_vars(
            "1.0.0",
            vars(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
            ]),
        )
        .unwrap();
        assert_eq!((del.command, del.netns), (Command::Del, None));
        assert!(Invocation::from_vars("1.1.0", vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert_eq!(
            Invocation::from_vars("1.1.0", vars(&[("CNI_COMMAND", "EXPLODE")]))
                .unwrap_err()
                .code,
            4
        );
        assert_eq!(
            Invocation::from_vars("1.1.0", vars(&[])).unwrap_err().code,
            4
        );
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        let base = [("CNI_COMMAND", "STATUS")];
        let with = |args: &str| {
            let mut v = base.to_vec();
            v.push(("CNI_ARGS", args));
            Invocation::from_vars("1.1.0", vars(&v))
        };
        assert_eq!(with("K8S_POD_NAMESPACE=a").unwrap_err().code, 4);
        assert!(with("K8S_POD_NAME=a").is_ok());
        assert!(with("IgnoreUnknown=true;K8S_POD_NAMESPACE=a").is_ok());
        assert_eq!(with("novalue").unwrap_err().code, 4);
        assert!(with("").is_ok());
    }

    #[test]
    fn interface_names_are_checked() {
        let e = Invocation::from_vars(
            "1.0.0",
            vars(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "a-name-far-too-long"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
    }
}

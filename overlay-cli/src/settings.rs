//! The settings a command runs with, each taken from the first place that has it: flag,
//! `OVERLAY_*` environment variable (clap reads both), config file, default.
//!
//! The config file is TOML with the flags' names:
//!
//! ```toml
//! cluster-store = "etcd://10.0.0.1:2379"
//! cluster-advertise = "eth0"
//! socket = "/run/overlay/agent.sock"
//! host-id = "node1"
//! ```

use std::path::{Path, PathBuf};

use overlay_core::DEFAULT_STORE;
use overlay_core::store::StoreUrl;
use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::failure::{CliResult, Failure};

/// The config file read when `--config` is not given (missing is fine).
pub(crate) const DEFAULT_CONFIG: &str = "/etc/overlay/config.toml";
/// The agent's socket when none is configured.
pub(crate) const DEFAULT_SOCKET: &str = "/run/overlay/agent.sock";

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    cluster_store: Option<String>,
    cluster_advertise: Option<String>,
    socket: Option<PathBuf>,
    host_id: Option<String>,
    host_netns: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Cluster store URL, checked to parse.
    pub(crate) store: String,
    /// `--cluster-advertise`, if set anywhere.
    pub(crate) advertise: Option<String>,
    /// The local agent's socket.
    pub(crate) socket: PathBuf,
    /// This host's id, if set anywhere.
    pub(crate) host_id: Option<String>,
    /// The namespace acting as this host, if set anywhere.
    pub(crate) host_netns: Option<PathBuf>,
}

fn read_file(explicit: Option<&Path>) -> CliResult<FileConfig> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(Failure::usage(format!(
                "config: cannot read {}: {e} (check the --config path)",
                path.display()
            )));
        }
    };
    toml::from_str(&text).map_err(|e| {
        Failure::usage(format!(
            "config: {} is not valid: {} (keys are cluster-store, cluster-advertise, socket, \
             host-id, host-netns)",
            path.display(),
            e.message()
        ))
    })
}

impl Settings {
    /// Merges flags and environment (already in `args`) over the config file and defaults,
    /// and checks the store URL.
    pub(crate) fn resolve(args: &GlobalArgs) -> CliResult<Settings> {
        let file = read_file(args.config.as_deref())?;
        let store = args
            .cluster_store
            .clone()
            .or(file.cluster_store)
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        StoreUrl::parse(&store).map_err(|e| {
            Failure::usage(format!("--cluster-store {store:?} is not a store URL: {e}"))
        })?;
        Ok(Settings {
            store,
            advertise: args.cluster_advertise.clone().or(file.cluster_advertise),
            socket: args
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            host_id: args.host_id.clone().or(file.host_id),
            host_netns: args.host_netns.clone().or(file.host_netns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> GlobalArgs {
        GlobalArgs {
            cluster_store: None,
            cluster_advertise: None,
            config: Some(config.to_path_buf()),
            socket: None,
            host_id: None,
            host_netns: None,
        }
    }

    #[test]
    fn flag_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "cluster-store = \"etcd://10.0.0.1:2379\"\ncluster-advertise = \"eth0\"\n",
        )
        .unwrap();
        let mut a = args(&path);
        let s = Settings::resolve(&a).unwrap();
        assert_eq!(s.store, "etcd://10.0.0.1:2379");
        assert_eq!(s.advertise.as_deref(), Some("eth0"));
        assert_eq!(s.socket, Path::new(DEFAULT_SOCKET));
        a.cluster_store = Some("zk://10.0.0.2:2181".into());
        assert_eq!(Settings::resolve(&a).unwrap().store, "zk://10.0.0.2:2181");
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            Settings::resolve(&args(&path)).unwrap().store,
            DEFAULT_STORE
        );
    }

    /// The example the docs show (`docs/host.md`, checked equal by `scripts/check-docs`) is a
    /// config file this reads, with the values it says.
    #[test]
    fn the_shipped_example_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/config.toml");
        let s = Settings::resolve(&args(&path)).unwrap();
        assert_eq!(s.store, "etcd://10.0.0.1:2379");
        assert_eq!(s.advertise.as_deref(), Some("eth0:2376"));
    }

    #[test]
    fn bad_inputs_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "cluster-stor = \"x\"\n").unwrap();
        let e = Settings::resolve(&args(&path)).unwrap_err();
        assert_eq!(e.code, crate::failure::USAGE);
        assert!(e.to_string().contains("cluster-stor"), "{e}");
        let e = Settings::resolve(&args(&dir.path().join("missing.toml"))).unwrap_err();
        assert_eq!(e.code, crate::failure::USAGE);
        std::fs::write(&path, "").unwrap();
        let mut a = args(&path);
        a.cluster_store = Some("nosuch://x".into());
        assert_eq!(
            Settings::resolve(&a).unwrap_err().code,
            crate::failure::USAGE
        );
    }
}

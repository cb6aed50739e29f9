//! Host-local facts: what only this host may act on as root.
//!
//! A container's namespace file and hosts file come from the local caller of `connect` and are
//! kept here, one file per endpoint under this host's state directory (mode 0700, files 0600),
//! never in the cluster store. A store record is data that any host or embedder able to reach
//! the store can write; it must never name a file for root to replace or a namespace to enter
//! (DESIGN §3, trust boundary). An endpoint record that names this host but has no entry here
//! was not made by this host: it gets no interface and no hosts file.
//!
//! An entry is written before its endpoint record is published and removed after the record
//! is gone, so a crash in between leaves an entry without a record (found and undone at the
//! next start), never a record of this host without an entry.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{EndpointId, NetworkId};

/// Schema of an entry file.
const SCHEMA: u32 = 1;

/// The identity of a namespace file when it was connected: its device and inode. A `pid:N`
/// namespace whose process died and whose pid was reused names another namespace at the same
/// path; the identity tells them apart, so the agent never enters the wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NsIdentity {
    /// `st_dev` of the namespace file.
    pub(crate) dev: u64,
    /// `st_ino` of the namespace file (the namespace's inode in nsfs).
    pub(crate) ino: u64,
}

impl NsIdentity {
    /// The identity of the namespace file at `path` now, or `None` when it is gone.
    pub(crate) fn of(path: &Path) -> Option<NsIdentity> {
        std::fs::metadata(path).ok().map(|m| NsIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// One local endpoint's host-local facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalEndpoint {
    /// Entry schema.
    pub(crate) schema: u32,
    /// The endpoint.
    pub(crate) endpoint: EndpointId,
    /// Its network.
    pub(crate) network: NetworkId,
    /// The embedder's container id.
    pub(crate) container_id: String,
    /// The container's namespace file, as the local caller gave it.
    pub(crate) netns: PathBuf,
    /// What that file was when the container was connected.
    pub(crate) netns_identity: NsIdentity,
    /// Name of the container's interface.
    pub(crate) ifname: String,
    /// The hosts file the agent keeps current for the container, as the local caller gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hosts_file: Option<PathBuf>,
    /// Whether connect made the hosts file's directory (as `/etc/netns/NAME` for a named
    /// namespace), so that it goes with the container.
    #[serde(default)]
    pub(crate) hosts_dir_made: bool,
    /// The `resolv.conf` the agent keeps pointing at the container's resolvers, as the local
    /// caller gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resolv_conf: Option<PathBuf>,
    /// Whether connect made the `resolv.conf`'s directory.
    #[serde(default)]
    pub(crate) resolv_dir_made: bool,
    /// The container's interface on the gateway bridge and the ports this endpoint publishes;
    /// `None` on an internal network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<super::gateway::LocalGateway>,
    /// Who made the attachment ([`ContainerSpec::owner`](crate::controller::ContainerSpec::owner)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
    /// The interface was made in this host's namespace (`netns`, named `ifname` there) for
    /// a runtime that moves it into the container itself
    /// ([`Controller::connect_handoff`](crate::controller::Controller::connect_handoff)): the
    /// runtime owns it from then on, so the agent never makes it again, and the endpoint's
    /// addresses are the runtime's to release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) handoff: bool,
}

impl LocalEndpoint {
    /// Whether the container's namespace is still the one that was connected.
    pub(crate) fn namespace_alive(&self) -> bool {
        NsIdentity::of(&self.netns) == Some(self.netns_identity)
    }

    /// What attaches endpoint `ep` (this entry's) to its container again, as it was made: the
    /// record's addresses and MAC, the namespace from this host's own state.
    pub(crate) fn attach_spec(&self, ep: &crate::model::Endpoint) -> crate::dataplane::AttachSpec {
        crate::dataplane::AttachSpec {
            netns: self.netns.clone(),
            ifname: ep.ifname.clone(),
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            mac: Some(ep.mac),
            mtu: None,
            handoff: self.handoff,
        }
    }
}

/// This host's local endpoints, in memory and in the state directory.
#[derive(Debug)]
pub(crate) struct LocalState {
    dir: PathBuf,
    entries: Mutex<BTreeMap<EndpointId, LocalEndpoint>>,
}

const OP: &str = "host state";

impl LocalState {
    /// Opens (creating, mode 0700) the state directory `dir` and loads its entries. A file
    /// that does not decode is skipped with a warning and left for a person to look at.
    pub(crate) fn open(dir: &Path) -> Result<LocalState> {
        let endpoints = dir.join("endpoints");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&endpoints)
            .map_err(|e| {
                Error::io(
                    OP,
                    format!("cannot create state directory {}", endpoints.display()),
                    e,
                )
                .with_hint("run as root, or set the state directory to one this user may create")
            })?;
        for d in [dir, endpoints.as_path()] {
            let meta = std::fs::symlink_metadata(d)
                .map_err(|e| Error::io(OP, format!("cannot inspect {}", d.display()), e))?;
            // The agent trusts what it reads here: refuse a directory others could write.
            if !meta.is_dir() || meta.permissions().mode() & 0o022 != 0 {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    OP,
                    format!(
                        "state directory {} is not a directory only its owner may write",
                        d.display()
                    ),
                )
                .with_hint(format!(
                    "chmod 0700 {}, or choose another state directory",
                    d.display()
                )));
            }
        }
        let mut entries = BTreeMap::new();
        let listing = std::fs::read_dir(&endpoints)
            .map_err(|e| Error::io(OP, format!("cannot read {}", endpoints.display()), e))?;
        for item in listing.flatten() {
            let path = item.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read_entry(&path) {
                Ok(e) => {
                    entries.insert(e.endpoint, e);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping a host state file")
                }
            }
        }
        Ok(LocalState {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    /// Removes the state directory if it holds no entry (a host that stops with no container
    /// leaves nothing behind); a directory still in use stays.
    pub(crate) fn remove_if_empty(&self) {
        if !self.lock().is_empty() {
            return;
        }
        let endpoints = self.dir.join("endpoints");
        if std::fs::remove_dir(&endpoints).is_ok() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<EndpointId, LocalEndpoint>> {
        crate::sync::lock(&self.entries)
    }

    /// The entry of `endpoint`, if this host made it.
    pub(crate) fn get(&self, endpoint: &EndpointId) -> Option<LocalEndpoint> {
        self.lock().get(endpoint).cloned()
    }

    /// Whether this host made `endpoint`.
    pub(crate) fn contains(&self, endpoint: &EndpointId) -> bool {
        self.lock().contains_key(endpoint)
    }

    /// Every entry.
    pub(crate) fn all(&self) -> Vec<LocalEndpoint> {
        self.lock().values().cloned().collect()
    }

    /// The entries of container `container_id`.
    pub(crate) fn of_container(&self, container_id: &str) -> Vec<LocalEndpoint> {
        self.lock()
            .values()
            .filter(|e| e.container_id == container_id)
            .cloned()
            .collect()
    }

    /// What `f` makes of every entry, read in place: on a full host, copying a thousand
    /// entries to answer one question would cost every connect more than the last.
    pub(crate) fn scan<T>(
        &self,
        f: impl FnOnce(std::collections::btree_map::Values<'_, EndpointId, LocalEndpoint>) -> T,
    ) -> T {
        f(self.lock().values())
    }

    fn path_of(&self, endpoint: &EndpointId) -> PathBuf {
        self.dir.join("endpoints").join(format!("{endpoint}.json"))
    }

    /// Records `entry` (file first, then memory): written to a temporary file, flushed and
    /// renamed, so a crash leaves the old entry or the new one.
    pub(crate) fn insert(&self, entry: LocalEndpoint) -> Result<()> {
        let path = self.path_of(&entry.endpoint);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&entry)
            .map_err(|e| Error::internal(OP, format!("cannot encode a host state entry: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(OP, format!("cannot write {}", path.display()), e)
                .with_hint("check the state directory's file system")
        })?;
        self.lock().insert(entry.endpoint, entry);
        Ok(())
    }

    /// Forgets `endpoint` (memory, then file). Forgetting what is not there is not an error.
    pub(crate) fn remove(&self, endpoint: &EndpointId) -> Result<()> {
        self.lock().remove(endpoint);
        let path = self.path_of(endpoint);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                OP,
                format!("cannot remove {}", path.display()),
                e,
            )),
        }
    }
}

fn read_entry(path: &Path) -> Result<LocalEndpoint> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(OP, format!("cannot read {}", path.display()), e))?;
    let entry: LocalEndpoint = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(
            OP,
            format!("{} is not a host state entry: {e}", path.display()),
        )
    })?;
    if entry.schema > SCHEMA {
        return Err(Error::new(
            ErrorKind::Unsupported,
            OP,
            format!(
                "{} has schema {}, newer than {SCHEMA}",
                path.display(),
                entry.schema
            ),
        )
        .with_hint("run the newer version of overlay that wrote it"));
    }
    let expected = format!("{}.json", entry.endpoint);
    if path.file_name().is_none_or(|n| n != expected.as_str()) {
        return Err(Error::invalid(
            OP,
            format!(
                "{} holds the entry of endpoint {}",
                path.display(),
                entry.endpoint
            ),
        ));
    }
    Ok(entry)
}

/// A new entry for a container connected just now: the identity of its namespace file is
/// read here, so it is what the caller handed over.
pub(crate) fn entry_for(
    endpoint: EndpointId,
    network: NetworkId,
    container_id: &str,
    netns: &Path,
    ifname: &str,
    hosts_file: Option<&Path>,
) -> Result<LocalEndpoint> {
    let identity = NsIdentity::of(netns).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "connect",
            format!("namespace {} does not exist", netns.display()),
        )
        .with_hint("start the container first, or pass the path of its network namespace")
    })?;
    Ok(LocalEndpoint {
        schema: SCHEMA,
        endpoint,
        network,
        container_id: container_id.to_string(),
        netns: netns.to_path_buf(),
        netns_identity: identity,
        ifname: ifname.to_string(),
        hosts_file: hosts_file.map(Path::to_path_buf),
        hosts_dir_made: false,
        resolv_conf: None,
        resolv_dir_made: false,
        gateway: None,
        owner: None,
        handoff: false,
    })
}

/// Makes the directory of `hosts_file` (or of a `resolv.conf`) if it is missing (mode 0755:
/// these files are read by everyone in the container); returns whether it did.
pub(crate) fn make_hosts_dir(hosts_file: &Path) -> Result<bool> {
    let Some(dir) = hosts_file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(false);
    };
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| {
            Error::io(
                "connect",
                format!("cannot create {} for the container's files", dir.display()),
                e,
            )
            .with_hint("run as root, or give paths in a directory that exists")
        })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, id: EndpointId) -> LocalEndpoint {
        let ns = dir.join("ns");
        std::fs::write(&ns, b"").unwrap();
        entry_for(
            id,
            NetworkId::random(),
            "c1",
            &ns,
            "eth0",
            Some(&dir.join("hosts")),
        )
        .unwrap()
    }

    #[test]
    fn entries_survive_a_reopen_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let st = LocalState::open(&state_dir).unwrap();
        let id = EndpointId::random();
        let e = entry(dir.path(), id);
        st.insert(e.clone()).unwrap();
        let mode = std::fs::metadata(st.path_of(&id))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let again = LocalState::open(&state_dir).unwrap();
        assert_eq!(again.get(&id), Some(e.clone()));
        assert!(e.namespace_alive());
        again.remove(&id).unwrap();
        again.remove(&id).unwrap();
        assert!(LocalState::open(&state_dir).unwrap().all().is_empty());
    }

    #[test]
    fn a_replaced_namespace_file_is_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path(), EndpointId::random());
        std::fs::remove_file(&e.netns).unwrap();
        assert!(!e.namespace_alive(), "gone");
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::write(&e.netns, b"").unwrap();
        assert!(!e.namespace_alive(), "another file at the same path");
    }

    #[test]
    fn bad_files_are_skipped_and_open_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let st = LocalState::open(&state_dir).unwrap();
        let id = EndpointId::random();
        st.insert(entry(dir.path(), id)).unwrap();
        std::fs::write(state_dir.join("endpoints/garbage.json"), b"{nope").unwrap();
        // An entry filed under another endpoint's name is not taken.
        let other = EndpointId::random();
        std::fs::copy(st.path_of(&id), st.path_of(&other)).unwrap();
        let again = LocalState::open(&state_dir).unwrap();
        assert_eq!(again.all().len(), 1);
        assert!(again.contains(&id) && !again.contains(&other));
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = LocalState::open(&state_dir).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    }
}

//! Network namespaces: named ones under `/run/netns` (bind mounts, as iproute2 makes them), or
//! any namespace file (`/proc/PID/ns/net`).
//!
//! Entering a namespace changes the calling thread, so every `unshare`/`setns` here runs on a
//! short-lived OS thread of its own, never on a caller's (possibly tokio worker) thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Error, ErrorKind, Result};

/// Where iproute2 and this crate keep named network namespaces.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace: the file it was opened from and a descriptor that keeps it alive.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: OwnedFd,
    id: NetnsId,
}

/// The identity of a namespace (device and inode of its nsfs file): equal for every path that
/// names the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsId {
    /// Device number of the nsfs file.
    pub dev: u64,
    /// Inode number of the namespace.
    pub ino: u64,
}

impl Netns {
    /// Opens the namespace file at `path` (a `/run/netns` entry or `/proc/PID/ns/net`).
    pub fn open_path(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| {
            Error::io(
                "open network namespace",
                format!("cannot open {}", path.display()),
                e,
            )
            .with_hint("check that the namespace (or the process owning it) still exists")
        })?;
        let meta = file.metadata().map_err(|e| {
            Error::io(
                "open network namespace",
                format!("cannot stat {}", path.display()),
                e,
            )
        })?;
        // A network namespace file lives on nsfs; anything else (a plain file left in
        // /run/netns by a crashed `ip netns add`) cannot be entered.
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| {
            Error::new(
                Error::kind_for_errno(e as i32),
                "open network namespace",
                path.display().to_string(),
            )
            .with_errno(e as i32)
        })?;
        if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(Error::invalid(
                "open network namespace",
                format!("{} is not a namespace file (not on nsfs)", path.display()),
            )
            .with_hint("pass /run/netns/NAME or /proc/PID/ns/net; a stale entry can be removed with Netns::delete_named"));
        }
        let id = NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok(Netns {
            path,
            file: file.into(),
            id,
        })
    }

    /// Opens the network namespace of process `pid`.
    pub fn open_pid(pid: u32) -> Result<Netns> {
        Netns::open_path(format!("/proc/{pid}/ns/net"))
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn open_named(name: &str) -> Result<Netns> {
        validate_name(name)?;
        Netns::open_path(named_path(name))
    }

    /// Opens the namespace of the calling thread.
    pub fn current() -> Result<Netns> {
        Netns::open_path("/proc/thread-self/ns/net")
    }

    /// Creates the named namespace `/run/netns/NAME`, or opens it when it already exists.
    /// Returns the namespace and whether it was created by this call.
    pub fn create_named(name: &str) -> Result<(Netns, bool)> {
        validate_name(name)?;
        let path = named_path(name);
        match Netns::open_path(&path) {
            Ok(ns) => return Ok((ns, false)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // A plain file without a namespace mounted on it: a half-made leftover.
            Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(e),
        }
        ensure_run_dir()?;
        let created = path.clone();
        run_on_thread(move || unshare_and_mount(&created))?;
        Ok((Netns::open_path(&path)?, true))
    }

    /// Removes the named namespace: unmounts and deletes `/run/netns/NAME`. The kernel frees the
    /// namespace when its last user is gone. Missing is not an error.
    pub fn delete_named(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = named_path(name);
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::new(
                    Error::kind_for_errno(e as i32),
                    "delete network namespace",
                    format!("cannot unmount {}", path.display()),
                )
                .with_errno(e as i32)
                .with_hint(
                    "run as root (CAP_SYS_ADMIN) and check that nothing is mounted over it",
                ));
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                "delete network namespace",
                format!("cannot remove {}", path.display()),
                e,
            )),
        }
    }

    /// Names of the namespaces under `/run/netns` starting with `prefix`.
    pub fn list_named(prefix: &str) -> Result<Vec<String>> {
        let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    "list network namespaces",
                    NETNS_RUN_DIR.to_string(),
                    e,
                ));
            }
        };
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry
                .map_err(|e| Error::io("list network namespaces", NETNS_RUN_DIR.to_string(), e))?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(prefix)
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity of the namespace.
    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The raw descriptor, valid while `self` lives (for `IFLA_NET_NS_FD`).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Another descriptor for the same namespace.
    pub fn try_clone(&self) -> Result<Netns> {
        let file = self.file.try_clone().map_err(|e| {
            Error::io(
                "open network namespace",
                format!("cannot dup {}", self.path.display()),
                e,
            )
        })?;
        Ok(Netns {
            path: self.path.clone(),
            file,
            id: self.id,
        })
    }

    /// Moves the calling thread into this namespace. Only for threads this crate (or a test)
    /// owns and dedicates to the namespace.
    pub fn enter(&self) -> Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::new(
                Error::kind_for_errno(e as i32),
                "enter network namespace",
                format!("setns into {} failed", self.path.display()),
            )
            .with_errno(e as i32)
            .with_hint("run as root (CAP_SYS_ADMIN)")
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The path of the named namespace `name`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name network namespace",
            format!("invalid namespace name {name:?}"),
        )
        .with_hint("use 1 to 200 characters from [A-Za-z0-9-_.]"))
    }
}

/// Runs `f` on a fresh OS thread (so namespace changes die with it) and returns its result.
pub(crate) fn run_on_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name("overlay-netns".into())
        .spawn(f)
        .map_err(|e| Error::io("spawn namespace thread", "cannot start a thread", e))?
        .join()
        .map_err(|_| Error::internal("namespace thread", "the namespace thread panicked"))?
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so a namespace mounted there is
/// visible to mount namespaces created later (`ip netns exec`).
fn ensure_run_dir() -> Result<()> {
    // Serialized so that two threads finding it unmounted do not stack two bind mounts.
    static READY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut ready = crate::sync::lock(&READY);
    if *ready {
        return Ok(());
    }
    make_run_dir_shared()?;
    *ready = true;
    Ok(())
}

fn make_run_dir_shared() -> Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| {
        Error::io(
            "create network namespace",
            format!("cannot create {NETNS_RUN_DIR}"),
            e,
        )
    })?;
    let none: Option<&str> = None;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match nix::mount::mount(none, NETNS_RUN_DIR, none, shared, none) {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then make it shared.
        Err(nix::errno::Errno::EINVAL) => {
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            nix::mount::mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, Some("none"), bind, none)
                .and_then(|()| nix::mount::mount(none, NETNS_RUN_DIR, none, shared, none))
                .map_err(|e| mount_error(e, NETNS_RUN_DIR))
        }
        Err(e) => Err(mount_error(e, NETNS_RUN_DIR)),
    }
}

fn unshare_and_mount(path: &Path) -> Result<()> {
    // O_EXCL: two creators racing for one name must not both mount.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                "create network namespace",
                format!("cannot create {}", path.display()),
                e,
            ));
        }
    }
    let result = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| {
            Error::new(
                Error::kind_for_errno(e as i32),
                "create network namespace",
                format!("unshare(CLONE_NEWNET) for {} failed", path.display()),
            )
            .with_errno(e as i32)
            .with_hint("run as root (CAP_SYS_ADMIN)")
        })
        .and_then(|()| {
            let none: Option<&str> = None;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path,
                Some("none"),
                MsFlags::MS_BIND,
                none,
            )
            .map_err(|e| mount_error(e, &path.display().to_string()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn mount_error(e: nix::errno::Errno, what: &str) -> Error {
    Error::new(
        Error::kind_for_errno(e as i32),
        "mount network namespace",
        format!("mount on {what} failed"),
    )
    .with_errno(e as i32)
    .with_hint("run as root (CAP_SYS_ADMIN) with /run writable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("ovl-h1-0123456789ab").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn opening_a_missing_namespace_is_not_found() {
        let e = Netns::open_path("/run/netns/overlay-test-does-not-exist").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn opening_a_plain_file_is_rejected() {
        let e = Netns::open_path("/proc/self/status").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
}

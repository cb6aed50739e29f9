//! `overlayctl container run`: a throwaway container for trying overlay networks without a
//! container runtime. The container is a named network namespace; its command runs in it
//! with a private mount namespace where `/etc/netns/NAME/hosts` is bind-mounted over
//! `/etc/hosts` and `/etc/netns/NAME/resolv.conf` (pointing at the network's resolver) over
//! `/etc/resolv.conf`, as `ip netns exec` does.
//!
//! The agent rewrites both files on their own inodes, so the bind mounts made once at the
//! start show every later update.

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use overlay_core::dataplane::Netns;
use overlay_core::rpc::Request;
use overlay_core::{ContainerSpec, NetnsRef};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::client;
use crate::failure::{CliResult, Failure};
use crate::network::{Target, hosts_dir, netns_hosts_file, netns_resolv_conf};
use crate::settings::Settings;

/// How long the command may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Removes the namespace and its hosts directory, also when `run` unwinds.
struct NamespaceGuard {
    name: String,
    hosts_dir: PathBuf,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        if let Err(e) = Netns::delete_named(&self.name) {
            eprintln!("overlayctl: {}", Failure::from(e));
        }
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
    }
}

/// Runs the container; returns the command's exit code.
pub(crate) async fn run(settings: &Settings, args: RunArgs) -> CliResult<u8> {
    let target = Target::parse(&args.name)?;
    let hosts_file = netns_hosts_file(&args.name);
    // Fail before creating anything when no agent runs.
    client::call(&settings.socket, &Request::Hosts {}).await?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| signal_failure(&e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| signal_failure(&e))?;
    if overlay_core::dataplane::named_path(&args.name).exists() {
        return Err(Failure::failed(format!(
            "container run: namespace {:?} already exists (pick another --name, or remove it \
             with `ip netns del {}`)",
            args.name, args.name
        )));
    }
    let (ns, _) = Netns::create_named(&args.name)?;
    let guard = NamespaceGuard {
        name: args.name.clone(),
        hosts_dir: hosts_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    hosts_dir(&hosts_file)?;
    let mut spec = ContainerSpec::new(
        target.id.clone(),
        args.name.clone(),
        NetnsRef::Path(ns.path().to_path_buf()),
    )
    .aliases(args.alias.clone())
    .ipv4(args.ip)
    .hosts_file(hosts_file.clone())
    .resolv_conf(netns_resolv_conf(&args.name));
    spec.publish = args.publish.clone();
    let connect = Request::Connect {
        network: args.net.clone(),
        container: spec,
    };
    // The connect wrote the container's files before it answered: the command starts with
    // its names in place.
    client::call(&settings.socket, &connect).await?;
    let outcome = run_command(&ns, &hosts_file, &args.command, &mut term, &mut int).await;
    let disconnect = Request::Disconnect {
        network: args.net.clone(),
        container_id: target.id,
    };
    let disconnected = client::call(&settings.socket, &disconnect).await;
    drop(guard);
    let code = outcome?;
    disconnected?;
    Ok(code)
}

fn signal_failure(e: &std::io::Error) -> Failure {
    Failure::failed(format!(
        "container run: cannot install signal handlers: {e} (a bug)"
    ))
}

fn cstring(p: &Path) -> CliResult<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Failure::usage(format!("path {} contains a NUL byte", p.display())))
}

/// Runs the command in the container until it exits, forwarding SIGTERM/SIGINT to it.
async fn run_command(
    ns: &Netns,
    hosts_file: &Path,
    argv: &[String],
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> CliResult<u8> {
    let net_fd: RawFd = ns.raw_fd();
    let source = cstring(hosts_file)?;
    let target = CString::from(c"/etc/hosts");
    // Written once by the connect (it changes only with the container's networks).
    let resolv = hosts_file.with_file_name("resolv.conf");
    let resolv = match resolv.exists() {
        true => Some(cstring(&resolv)?),
        false => None,
    };
    // A missing file would fail the bind mount in the child, reported as the command's own
    // failure to start: named here instead.
    if !hosts_file.is_file() {
        return Err(Failure::failed(format!(
            "container run: the agent did not write the container's hosts file {} (see the agent's log)",
            hosts_file.display()
        )));
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (setns, unshare, mount) on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: the namespace file stays open in the parent, so the fd is valid here.
            let fd = BorrowedFd::borrow_raw(net_fd);
            setns(fd, CloneFlags::CLONE_NEWNET)?;
            enter_private_mounts(&source, &target)?;
            if let Some(r) = &resolv {
                bind_hosts(r, c"/etc/resolv.conf")?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Failure::failed(format!(
            "container run: cannot start {:?}: {e} (check the command and that it exists)",
            argv[0]
        ))
    })?;
    let pid = child.id().unwrap_or_default();
    let mut stopping = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(()) = term.recv(), if !stopping => { stopping = true; stop(&mut child, pid).await }
            Some(()) = int.recv(), if !stopping => { stopping = true; stop(&mut child, pid).await }
        }
    };
    let status = status
        .map_err(|e| Failure::failed(format!("container run: cannot wait for the command: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(u8::try_from(code).unwrap_or(1))
}

/// SIGTERM to the command, SIGKILL if it is still there after the grace period.
async fn stop(child: &mut tokio::process::Child, pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
    }
}

/// What `ip netns exec` does to the mounts: a private copy of the mount table, changes not
/// propagating back, the container's hosts file over `/etc/hosts`. Runs in the child.
fn enter_private_mounts(source: &CString, target: &CString) -> std::io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&CStr>,
    )?;
    bind_hosts(source, target)
}

fn bind_hosts(source: &CStr, target: &CStr) -> std::io::Result<()> {
    mount(
        Some(source),
        target,
        None::<&CStr>,
        MsFlags::MS_BIND,
        None::<&CStr>,
    )?;
    Ok(())
}

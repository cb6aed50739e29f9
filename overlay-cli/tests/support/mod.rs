//! Running `overlayctl` processes for the tests: one-shot commands, agents and containers as
//! guards that stop their process (and remove what it made) even when a test fails.
#![allow(dead_code, unreachable_pub)]

pub mod docker;
pub mod rig;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use overlay_core::dataplane::Netns;
pub use overlay_testkit::wait_until;
use tokio::process::{Child, Command};

/// An `overlayctl` command isolated from the machine's settings: no `OVERLAY_*` variables,
/// an empty config file instead of /etc/overlay/config.toml.
pub fn overlayctl(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlayctl"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OVERLAY_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--config").arg(config).kill_on_drop(true);
    cmd
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs a command to completion (at most 60 s).
pub async fn output(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("overlayctl finished within 60 s")
        .expect("run overlayctl");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; returns its stdout.
pub async fn ok(cmd: Command) -> String {
    let what = format!("{:?}", cmd.as_std());
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.code(),
        out.stderr
    );
    out.stdout
}

/// A long-running `overlayctl` process (agent or container run): SIGTERM on drop, SIGKILL if
/// it lingers.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, what: &str) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("running")).unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM, then waits for the exit (at most 20 s).
    pub async fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM).await
    }

    /// Sends `sig`, then waits for the exit (at most 20 s).
    pub async fn stop_with(&mut self, sig: i32) -> ExitStatus {
        self.signal(sig);
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} stopped within 20 s of signal {sig}", self.what))
            .expect("wait")
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.start_kill();
    }
}

/// Removes the named namespaces and `/etc/netns` directories starting with a prefix: what
/// `container run` made, should a test fail before it cleaned up.
pub struct NamespaceSweep(pub String);

impl Drop for NamespaceSweep {
    fn drop(&mut self) {
        for name in Netns::list_named(&self.0).unwrap_or_default() {
            let _ = Netns::delete_named(&name);
        }
        if let Ok(dir) = std::fs::read_dir("/etc/netns") {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&self.0) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// The first child process of `pid` (the command `container run` started).
pub fn child_of(pid: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().ok();
        }
    }
    None
}

/// One simulated host: its namespace and the flags its `overlayctl` commands take.
pub struct Host {
    pub ns: Netns,
    pub socket: PathBuf,
    pub store: String,
    pub config: PathBuf,
}

impl Host {
    pub fn cmd(&self) -> Command {
        let mut c = overlayctl(&self.config);
        c.arg("--cluster-store").arg(&self.store);
        c.arg("--socket").arg(&self.socket);
        c
    }

    pub fn run(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(args);
        c
    }
}

/// Starts `overlayctl agent` for `host` as host id `id` advertising `vtep`, and waits until
/// its socket answers.
pub async fn agent(host: &Host, id: &str, vtep: &str) -> Proc {
    let mut cmd = host.cmd();
    cmd.arg("--cluster-advertise")
        .arg(vtep)
        .arg("--host-id")
        .arg(id)
        .arg("--host-netns")
        .arg(host.ns.path())
        .arg("agent")
        // Beside the host's socket and config, in the test's temp dir.
        .arg("--state-dir")
        .arg(host.config.with_file_name(format!("{id}-state")));
    let mut p = Proc::spawn(cmd, &format!("agent {id}"));
    let socket = host.socket.clone();
    wait_until(
        "agent socket answers",
        Duration::from_secs(30),
        async || {
            assert!(p.running(), "agent {id} exited early (see its stderr)");
            tokio::net::UnixStream::connect(&socket).await.is_ok()
        },
    )
    .await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&host.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket is root-only");
    p
}

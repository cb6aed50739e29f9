//! Child processes that cannot outlive the test process, and the rule for missing prerequisites.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Fails the calling test because `what` cannot be had, saying why and what to do.
///
/// There is one rule for every test, under CI or not: a test that needs a server or root and
/// finds none fails. cargo has no way to report a test as skipped at run time, so an early return
/// would count as a pass; a test that cannot run on a machine at all is `#[ignore = "reason"]`.
pub fn missing(what: &str, why: &str) -> ! {
    panic!(
        "{what} is needed but cannot be had: {why} (install the test dependencies with \
         `scripts/install-deps` as root)"
    );
}

/// Fails the calling test unless this process runs as root, which namespaces, veth and vxlan
/// devices need.
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "{test} needs root: it builds network namespaces, veth and vxlan devices (run the \
             tests as root, as scripts/test does)"
        );
    }
}

/// A key prefix no other test (of this or an earlier run) uses: `test-<pid>-<n>-<nanos>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("test-{}-{n}-{nanos}", std::process::id())
}

/// A loopback TCP port nobody listens on right now.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills it (SIGKILL) when the test process ends, whatever the
/// way it ends: a server never outlives the tests, even after a crash or SIGKILL of the tests.
///
/// The parent-death signal fires when the *thread* that forked exits, and test threads are
/// short-lived, so every spawn happens on one thread that lives as long as the process.
pub(crate) fn spawn_bound(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the testkit spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl, getppid and kill.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?
}

/// Servers shared by all tests of a process: killed and their directories removed at exit,
/// since statics are never dropped.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

pub(crate) fn clean_at_exit(pid: u32, dir: PathBuf) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: `cleanup` is a plain extern "C" function without arguments, as atexit wants.
        unsafe { libc::atexit(cleanup) };
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, dir));
}

extern "C" fn cleanup() {
    let list = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for (pid, dir) in list {
        let pid = pid as libc::pid_t;
        // SAFETY: kill and waitpid on a child of this process; a stale pid only gives ESRCH
        // or ECHILD.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

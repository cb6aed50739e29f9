//! The cross-process checks of the conformance suite: a second process running the
//! `overlay-kv` binary against the same store.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{EVENT_WAIT, cas_increment, expect_put, scratch};
use crate::store::{KvStore, WatchEvent};

/// A second process running `overlay-kv` against the same store URL.
#[derive(Debug, Clone)]
pub struct PeerProcess {
    /// Path of the `overlay-kv` binary.
    pub exe: PathBuf,
    /// The store URL both processes open.
    pub url: String,
}

/// Kills the child when dropped, so a failing check leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

impl PeerProcess {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(&self.url).args(args).kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.expect("run overlay-kv");
        assert!(
            out.status.success(),
            "overlay-kv {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

/// A watch in this process sees a change another process makes, and the other process sees
/// one made here.
pub async fn watch_across_processes(store: &dyn KvStore, peer: &PeerProcess) {
    let p = scratch("cross_watch");
    let mut w = store.watch(&p, None).await.unwrap();
    peer.run(&["put", &format!("{p}/from-peer"), "hello"]).await;
    expect_put(
        &mut w,
        &format!("{p}/from-peer"),
        b"hello",
        "watch of another process's put",
    )
    .await;

    let mut child = peer.command(&["watch", &p, "--count", "1"]);
    let child = child
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn overlay-kv watch");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(EVENT_WAIT, lines.next_line()).await;
    assert_eq!(
        ready.ok().and_then(|r| r.ok()).flatten().as_deref(),
        Some("ready")
    );
    let v = store
        .put(&format!("{p}/from-here"), b"world")
        .await
        .unwrap();
    let line = tokio::time::timeout(EVENT_WAIT, lines.next_line()).await;
    let line = line
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .expect("the peer's watch reports the put");
    assert_eq!(line, format!("put {p}/from-here {v} world"));
}

/// An ephemeral key held by another process disappears within the session TTL after that
/// process is killed with SIGKILL (no chance to clean up), and a watch here sees the delete.
pub async fn ephemeral_removed_when_owner_killed(
    observer: &dyn KvStore,
    peer: &PeerProcess,
    ttl: Duration,
) {
    let p = scratch("ephemeral_kill");
    let key = format!("{p}/host");
    let mut w = observer.watch(&p, None).await.unwrap();
    let mut child = peer.command(&["hold", &key, "alive"]);
    let child = child
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn overlay-kv hold");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(EVENT_WAIT, lines.next_line()).await;
    let ready = ready
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .unwrap_or_default();
    assert!(
        ready.starts_with("ready "),
        "overlay-kv hold did not start: {ready:?}"
    );
    expect_put(&mut w, &key, b"alive", "ephemeral put by the peer").await;

    let pid = child.0.id().expect("child pid") as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "SIGKILL the owner");
    let killed = Instant::now();
    let _ = child.0.wait().await;
    // The key must go within the TTL; allow for the sweeper's period and scheduling.
    let limit = ttl + ttl / 2 + Duration::from_secs(2);
    match tokio::time::timeout(limit, w.next()).await {
        Ok(Some(Ok(WatchEvent::Delete { key: k, .. }))) => assert_eq!(k, key),
        other => panic!("no delete of {key} within {limit:?} of SIGKILL: {other:?}"),
    }
    assert!(killed.elapsed() <= limit);
    assert_eq!(observer.get(&key).await.unwrap(), None);
}

/// This process and another race CAS increments on one key; every increment counts once.
pub async fn cas_race_across_processes(store: &dyn KvStore, peer: &PeerProcess, each: u64) {
    let key = format!("{}/counter", scratch("cross_cas"));
    store.put(&key, b"0").await.unwrap();
    let per = each.to_string();
    let args = ["incr", key.as_str(), per.as_str()];
    let theirs = peer.run(&args);
    let ours = async {
        for _ in 0..each {
            cas_increment(store, &key).await.expect("CAS increment");
        }
    };
    let (out, ()) = tokio::join!(theirs, ours);
    assert_eq!(out.trim(), "done");
    let v = store.get(&key).await.unwrap().unwrap().value;
    assert_eq!(String::from_utf8(v).unwrap(), (2 * each).to_string());
}

//! One live agent per host id: the host record is created, never overwritten.
//!
//! Two agents sharing an id would share sandbox names and write each other's containers'
//! hosts files, and their traffic would never reach the wire (Docker's own overlay refuses the
//! same case). The record is an ephemeral key created only if absent
//! ([`KvStore::create_ephemeral`]); a second agent is refused, naming the holder. The one record
//! that may be taken over is that of this host's own crashed predecessor, still waiting for its
//! session to expire: same machine and boot, and a holding process that is gone.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Holder, Host, Record, keys};
use crate::store::KvStore;

/// Incarnations of the agents alive in this process. Process-wide by nature: it answers "is
/// the agent that wrote this record still running here?" for a record written by this pid.
static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<u64>> {
    crate::sync::lock(&LIVE)
}

/// This machine's boot id, or empty where the kernel does not say.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A holder for an agent starting now in this process.
pub(super) fn new_holder() -> Holder {
    Holder {
        boot_id: boot_id(),
        pid: std::process::id(),
        incarnation: rand::random(),
    }
}

/// Whether `h` is an agent that ran on this machine since its boot and is gone.
fn is_dead_here(h: &Holder) -> bool {
    if h.boot_id.is_empty() || h.boot_id != boot_id() {
        return false;
    }
    if h.pid == std::process::id() {
        return !live().contains(&h.incarnation);
    }
    !std::path::Path::new(&format!("/proc/{}", h.pid)).exists()
}

/// Claims `host.id` for this agent (its record must carry a holder); the claim lasts until
/// [`release`] and the store session.
pub(super) async fn claim(store: &dyn KvStore, host: &Host) -> Result<()> {
    const OP: &str = "register host";
    let key = keys::host(&host.id);
    let value = host.encode();
    for _ in 0..5 {
        match store.create_ephemeral(&key, &value).await {
            Ok(_) => {
                if let Some(h) = &host.holder {
                    live().insert(h.incarnation);
                }
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.with_op(OP)),
        }
        // Gone meanwhile (its session just expired): try again.
        let Some(kv) = store.get(&key).await? else {
            continue;
        };
        let holder = Host::decode(&kv.key, &kv.value).ok();
        if let Some(h) = holder.as_ref().and_then(|h| h.holder.as_ref())
            && is_dead_here(h)
        {
            tracing::info!(host = %host.id, pid = h.pid, "taking over the record of this host's crashed agent");
            match store.compare_and_delete(&key, kv.version).await {
                Ok(()) => continue,
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e.with_op(OP)),
            }
        }
        let by = match &holder {
            Some(h) => format!("a live agent advertising {}", h.advertise),
            None => "a record that does not decode".to_string(),
        };
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            OP,
            format!("host id {:?} is held by {by}", host.id.as_str()),
        )
        .with_hint(
            "give each host its own id (host_id, overlayctl --host-id); an id whose agent died \
             is free again once its record expires (the store TTL)",
        ));
    }
    Err(Error::new(
        ErrorKind::Conflict,
        OP,
        format!("the record of host id {:?} kept changing", host.id.as_str()),
    )
    .with_hint("retry; another agent with this id is starting or stopping"))
}

/// Deletes the host record if it is still this agent's (after a session loss another agent may
/// hold the id now: its record stays).
pub(super) async fn withdraw(store: &dyn KvStore, host: &Host) -> Result<()> {
    let key = keys::host(&host.id);
    let Some(kv) = store.get(&key).await? else {
        return Ok(());
    };
    let ours = Host::decode(&kv.key, &kv.value)
        .ok()
        .is_some_and(|h| h.holder == host.holder);
    if !ours {
        return Ok(());
    }
    match store.compare_and_delete(&key, kv.version).await {
        Err(e) if e.kind() != ErrorKind::Conflict => Err(e),
        _ => Ok(()),
    }
}

/// Ends this process's claim of `holder` (the record goes with the store session, or is
/// deleted by the agent's close).
pub(super) fn release(holder: Option<&Holder>) {
    if let Some(h) = holder {
        live().remove(&h.incarnation);
    }
}

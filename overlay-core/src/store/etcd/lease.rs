//! Ephemeral keys: one lease per client, kept alive in the background.
//!
//! The lease is granted on the first ephemeral put. A background task sends keep-alives every
//! third of the TTL; if the lease expired anyway (the client was cut off longer than the TTL
//! but is alive), the task grants a new lease and puts this client's ephemeral keys again, as
//! the contract asks.

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};

use super::{Inner, raw};
use crate::error::{Error, Result};
use crate::store::Version;
use crate::store::remote::{AbortOnDrop, Backoff, exists_error};

/// This client's lease, if granted.
#[derive(Default)]
pub(super) struct Lease {
    state: tokio::sync::Mutex<Option<State>>,
}

struct State {
    id: i64,
    _keepalive: AbortOnDrop,
}

fn ttl_secs(s: &Inner) -> i64 {
    s.url.options.ttl.as_secs_f64().ceil().max(1.0) as i64
}

/// Whether etcd answered that the lease does not exist (gRPC `NotFound`): it expired.
fn lease_gone(e: &Error) -> bool {
    matches!(
        super::errors::client_error(e),
        Some(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound
    )
}

async fn grant(s: &Inner) -> Result<i64> {
    let ttl = ttl_secs(s);
    let resp = raw(s, "grant etcd lease", |mut c| async move {
        c.lease_grant(ttl, None).await
    })
    .await?;
    Ok(resp.id())
}

/// Writes `key` bound to this client's lease, granting the lease first if needed; when
/// `exclusive`, only if `key` does not exist (AlreadyExists otherwise, nothing written). The
/// checks and the record of owned keys are the caller's ([`Lifecycle::write_ephemeral`]).
///
/// [`Lifecycle::write_ephemeral`]: crate::store::remote::Lifecycle::write_ephemeral
pub(super) async fn put_ephemeral(
    s: &Arc<Inner>,
    key: &str,
    value: &[u8],
    exclusive: bool,
) -> Result<Version> {
    if exclusive {
        return create_ephemeral(s, "store create ephemeral", key, value).await;
    }
    let op = "store put ephemeral";
    let mut retried = false;
    loop {
        let id = current(s).await?;
        let (full, v) = (s.full(key), value.to_vec());
        let put = s
            .call(op, |mut c| async move {
                c.put(full, v, Some(PutOptions::new().with_lease(id))).await
            })
            .await;
        match put {
            Ok(resp) => return Ok(resp.header().map_or(0, |h| h.revision() as Version)),
            Err(e) if lease_gone(&e) && !retried => {
                retried = true;
                let mut state = s.lease.state.lock().await;
                if state.as_ref().is_some_and(|st| st.id == id) {
                    *state = None;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The exclusive case of [`put_ephemeral`]: put under the lease only if the key is absent.
async fn create_ephemeral(
    s: &Arc<Inner>,
    op: &'static str,
    key: &str,
    value: &[u8],
) -> Result<Version> {
    let mut retried = false;
    loop {
        let id = current(s).await?;
        match put_if_absent(s, op, key, value, id).await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => return Err(exists_error(op, key)),
            Err(e) if lease_gone(&e) && !retried => {
                retried = true;
                let mut state = s.lease.state.lock().await;
                if state.as_ref().is_some_and(|st| st.id == id) {
                    *state = None;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Puts `key` under lease `id` if it is absent: the new revision, or `None` when it exists.
async fn put_if_absent(
    s: &Inner,
    op: &'static str,
    key: &str,
    value: &[u8],
    id: i64,
) -> Result<Option<Version>> {
    let full = s.full(key);
    let txn = etcd_client::Txn::new()
        .when(vec![Compare::version(full.clone(), CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(
            full,
            value.to_vec(),
            Some(PutOptions::new().with_lease(id)),
        )]);
    let resp = raw(s, op, |mut c| async move { c.txn(txn).await }).await?;
    Ok(resp
        .succeeded()
        .then(|| resp.header().map_or(0, |h| h.revision() as Version)))
}

/// The current lease id, granting a lease (and starting its keep-alive) if there is none.
async fn current(s: &Arc<Inner>) -> Result<i64> {
    let mut state = s.lease.state.lock().await;
    if let Some(st) = state.as_ref() {
        return Ok(st.id);
    }
    let id = grant(s).await?;
    let task = tokio::spawn(keep_alive(Arc::downgrade(s), id));
    *state = Some(State {
        id,
        _keepalive: AbortOnDrop(task),
    });
    Ok(id)
}

/// Keeps lease `id` alive for as long as the store exists and is open.
async fn keep_alive(weak: Weak<Inner>, mut id: i64) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let Some(s) = weak.upgrade().filter(|s| !s.life.is_closed()) else {
            return;
        };
        let interval = (s.url.options.ttl / 3).max(Duration::from_millis(100));
        let opened = raw(&s, "keep etcd lease alive", |mut c| async move {
            c.lease_keep_alive(id).await
        })
        .await;
        let expired = match opened {
            Ok((mut keeper, mut stream)) => loop {
                if keeper.keep_alive().await.is_err() {
                    break false;
                }
                match tokio::time::timeout(s.url.options.timeout, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        backoff.reset();
                        tokio::time::sleep(interval).await;
                        if s.life.is_closed() {
                            return;
                        }
                    }
                    Ok(Ok(Some(_))) => break true,
                    _ => break false,
                }
            },
            Err(e) => {
                lease_gone(&e)
                    || matches!(
                        super::errors::client_error(&e),
                        Some(etcd_client::Error::LeaseKeepAliveError(_))
                    )
            }
        };
        if expired {
            match renew(&s, id).await {
                Ok(new) => id = new,
                Err(e) => tracing::warn!("etcd lease {id:x} expired and renewing failed: {e}"),
            }
        }
        drop(s);
        backoff.wait().await;
    }
}

/// Grants a new lease in place of the expired `old` and puts this client's ephemeral keys
/// under it again.
async fn renew(s: &Inner, old: i64) -> Result<i64> {
    let id = grant(s).await?;
    tracing::info!("etcd lease {old:x} expired while this client was alive; now {id:x}");
    {
        let mut state = s.lease.state.lock().await;
        if let Some(st) = state.as_mut() {
            st.id = id;
        }
    }
    s.life
        .replay("etcd", |key, value| async move {
            const OP: &str = "put ephemeral key again";
            put_if_absent(s, OP, &key, &value, id)
                .await?
                .ok_or_else(|| exists_error(OP, &key))
        })
        .await;
    Ok(id)
}

/// Revokes the lease (deleting this client's ephemeral keys) and stops its keep-alive.
pub(super) async fn revoke(s: &Inner) -> Result<()> {
    let state = s.lease.state.lock().await.take();
    s.life.disown_all();
    let Some(State { id, .. }) = state else {
        return Ok(());
    };
    match raw(s, "revoke etcd lease", |mut c| async move {
        c.lease_revoke(id).await
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if lease_gone(&e) => Ok(()),
        Err(e) => Err(Error::new(
            e.kind(),
            "close etcd store",
            format!("could not revoke lease {id:x}: {}", e.context()),
        )
        .with_hint("the ephemeral keys go when the lease TTL runs out")),
    }
}

//! Ephemeral keys: one Consul session per client, with a TTL and `Behavior=delete`, renewed
//! in the background; when the session was invalidated while the client lives, a new one is
//! created and the client's ephemeral keys are put again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Inner, bad_reply};
use crate::error::{Error, ErrorKind, Result};
use crate::store::Version;
use crate::store::remote::{AbortOnDrop, bounded, exists_error};

/// Consul refuses session TTLs below 10 s.
const MIN_TTL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Session {
    state: tokio::sync::Mutex<Option<State>>,
    keys: Mutex<HashMap<String, Vec<u8>>>,
}

struct State {
    id: String,
    _renew: AbortOnDrop,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

fn ttl(s: &Inner) -> Duration {
    s.url.options.ttl.max(MIN_TTL)
}

async fn create(s: &Inner) -> Result<String> {
    const OP: &str = "create Consul session";
    let body = json!({
        "Name": "overlay",
        "TTL": format!("{}s", ttl(s).as_secs()),
        "Behavior": "delete",
        "LockDelay": "0s",
    });
    let body = serde_json::to_vec(&body).map_err(|e| Error::internal(OP, e.to_string()))?;
    let reply = bounded(
        OP,
        &s.url,
        s.http
            .call(OP, Method::PUT, "/v1/session/create", Some(body), None),
    )
    .await?;
    let created: Created = serde_json::from_slice(&reply.body).map_err(|e| bad_reply(OP, e))?;
    Ok(created.id)
}

/// Holds `key` with this client's session (the `lock` verb binds it to the session).
async fn acquire(
    s: &Inner,
    id: &str,
    key: &str,
    value: &[u8],
) -> Result<std::result::Result<u64, String>> {
    let mut op = s.op("lock", key, Some(value), None);
    op["KV"]["Session"] = json!(id);
    Ok(s.txn("store put ephemeral", vec![op])
        .await?
        .map_err(|(_, what)| what))
}

pub(super) async fn put_ephemeral(s: &Arc<Inner>, key: &str, value: &[u8]) -> Result<Version> {
    const OP: &str = "store put ephemeral";
    s.check_open(OP)?;
    s.session
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string(), value.to_vec());
    let id = current(s).await?;
    match acquire(s, &id, key, value).await {
        Ok(Ok(index)) => Ok(index),
        Ok(Err(what)) => {
            s.session
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            Err(
                Error::new(ErrorKind::Conflict, OP, format!("key {key:?}: {what}")).with_hint(
                    "another client's session holds this key; it is free once that session ends",
                ),
            )
        }
        Err(e) => {
            s.session
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            Err(e)
        }
    }
}

/// Creates `key` held by this client's session, only if it does not exist; remembered for a
/// session renewal once it is ours.
pub(super) async fn create_ephemeral(s: &Arc<Inner>, key: &str, value: &[u8]) -> Result<Version> {
    const OP: &str = "store create ephemeral";
    s.check_open(OP)?;
    let id = current(s).await?;
    let absent = s.op("check-not-exists", key, None, None);
    let mut lock = s.op("lock", key, Some(value), None);
    lock["KV"]["Session"] = json!(id);
    match s.txn(OP, vec![absent, lock]).await? {
        Ok(index) => {
            s.session
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string(), value.to_vec());
            Ok(index)
        }
        Err((0, _)) => Err(exists_error(OP, key)),
        Err((_, what)) => Err(
            Error::new(ErrorKind::Conflict, OP, format!("key {key:?}: {what}")).with_hint(
                "another client's session holds this key; it is free once that session ends",
            ),
        ),
    }
}

async fn current(s: &Arc<Inner>) -> Result<String> {
    let mut state = s.session.state.lock().await;
    if let Some(st) = state.as_ref() {
        return Ok(st.id.clone());
    }
    let id = create(s).await?;
    let task = tokio::spawn(renew(Arc::downgrade(s), id.clone()));
    *state = Some(State {
        id: id.clone(),
        _renew: AbortOnDrop(task),
    });
    Ok(id)
}

/// Renews session `id` every half TTL; replaces it if Consul invalidated it.
async fn renew(weak: Weak<Inner>, mut id: String) {
    const OP: &str = "renew Consul session";
    loop {
        let Some(s) = weak.upgrade() else { return };
        let period = ttl(&s) / 2;
        drop(s);
        tokio::time::sleep(period).await;
        let Some(s) = weak.upgrade() else { return };
        let path = format!("/v1/session/renew/{id}");
        match bounded(OP, &s.url, s.http.call(OP, Method::PUT, &path, None, None)).await {
            Ok(r) if r.status == StatusCode::NOT_FOUND => match create(&s).await {
                Ok(new) => {
                    tracing::info!("Consul session {id} was invalidated; now {new}");
                    id = new;
                    if let Some(st) = s.session.state.lock().await.as_mut() {
                        st.id = id.clone();
                    }
                    let keys: Vec<(String, Vec<u8>)> = s
                        .session
                        .keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (key, value) in keys {
                        if let Err(e) = acquire(&s, &id, &key, &value).await {
                            tracing::warn!("putting ephemeral key {key} again failed: {e}");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("Consul session {id} was invalidated; renewing failed: {e}")
                }
            },
            Ok(_) => {}
            Err(e) => tracing::debug!("{e}"),
        }
    }
}

/// Destroys the session: Consul deletes the keys it holds.
pub(super) async fn destroy(s: &Inner) -> Result<()> {
    const OP: &str = "close Consul store";
    s.session
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let Some(State { id, .. }) = s.session.state.lock().await.take() else {
        return Ok(());
    };
    let path = format!("/v1/session/destroy/{id}");
    bounded(OP, &s.url, s.http.call(OP, Method::PUT, &path, None, None))
        .await
        .map(|_| ())
}

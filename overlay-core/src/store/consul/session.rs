//! Ephemeral keys: one Consul session per client, with a TTL and `Behavior=delete`, renewed
//! in the background; when the session was invalidated while the client lives, a new one is
//! created and the client's ephemeral keys are put again. Which keys are owned is the
//! [`Lifecycle`](crate::store::remote::Lifecycle)'s to track.

use std::sync::{Arc, Weak};
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

/// The error of a key another client's session holds.
fn held(op: &'static str, key: &str, what: &str) -> Error {
    Error::new(ErrorKind::Conflict, op, format!("key {key:?}: {what}"))
        .with_hint("another client's session holds this key; it is free once that session ends")
}

/// Holds `key` with session `id` (the `lock` verb binds it to the session).
pub(super) async fn put_ephemeral(s: &Arc<Inner>, key: &str, value: &[u8]) -> Result<Version> {
    const OP: &str = "store put ephemeral";
    let id = current(s).await?;
    let mut op = s.op("lock", key, Some(value), None);
    op["KV"]["Session"] = json!(id);
    s.txn(OP, vec![op])
        .await?
        .map_err(|(_, what)| held(OP, key, &what))
}

/// Creates `key` held by this client's session, only if it does not exist.
pub(super) async fn create_ephemeral(s: &Arc<Inner>, key: &str, value: &[u8]) -> Result<Version> {
    let id = current(s).await?;
    claim(s, "store create ephemeral", &id, key, value).await
}

/// Creates `key` held by session `id` if it is absent (AlreadyExists when it is not).
async fn claim(s: &Inner, op: &'static str, id: &str, key: &str, value: &[u8]) -> Result<Version> {
    let absent = s.op("check-not-exists", key, None, None);
    let mut lock = s.op("lock", key, Some(value), None);
    lock["KV"]["Session"] = json!(id);
    match s.txn(op, vec![absent, lock]).await? {
        Ok(index) => Ok(index),
        Err((0, _)) => Err(exists_error(op, key)),
        Err((_, what)) => Err(held(op, key, &what)),
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
                    // Behavior=delete took the keys with the old session.
                    let (s, id) = (&s, id.as_str());
                    s.life
                        .replay("Consul", |key: String, value: Vec<u8>| async move {
                            claim(s, "put ephemeral key again", id, &key, &value).await
                        })
                        .await;
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
    s.life.disown_all();
    let Some(State { id, .. }) = s.session.state.lock().await.take() else {
        return Ok(());
    };
    let path = format!("/v1/session/destroy/{id}");
    bounded(OP, &s.url, s.http.call(OP, Method::PUT, &path, None, None))
        .await
        .map(|_| ())
}

//! The plugin's socket: HTTP/1.1 on a unix socket in the engine's plugin directory
//! (`/run/docker/plugins/NAME.sock`, which the engine finds by the driver's name), every
//! call a `POST /Interface.Method` with a JSON body, every answer JSON.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::error::DriverError;
use crate::plugin::Plugin;

/// The largest request body read: the engine's are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// The content type of the plugin protocol's answers.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Serves `plugin` on `listener` until the task is dropped, one task per connection.
pub async fn serve(plugin: Arc<Plugin>, listener: UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the docker plugin socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(plugin.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "docker plugin connection ended");
            }
        });
    }
}

async fn handle(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.uri().path().trim_start_matches('/').to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = DriverError::new(
                overlay_core::ErrorKind::InvalidArgument,
                format!("{method}: cannot read the request: {e}"),
            );
            return Ok(reply(err.status, &serde_json::json!(err)));
        }
    };
    let started = std::time::Instant::now();
    // A panic in a handler answers as an internal error instead of dropping the
    // connection (the engine would retry the call for half a minute).
    let outcome = tokio::spawn({
        let method = method.clone();
        async move { plugin.call(&method, &body).await }
    })
    .await
    .unwrap_or_else(|e| {
        Err(DriverError::new(
            overlay_core::ErrorKind::Internal,
            format!(
                "{method}: the handler failed: {e} (a bug: please report it with the agent's log)"
            ),
        ))
    });
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(match outcome {
        Ok(v) => {
            tracing::debug!(%method, ms, "docker plugin call");
            reply(200, &v)
        }
        Err(e) => {
            tracing::warn!(%method, ms, error = %e.err, "docker plugin call failed");
            reply(e.status, &serde_json::json!(e))
        }
    })
}

fn reply(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(CONTENT_TYPE) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

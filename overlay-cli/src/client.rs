//! The client side of the agent socket: one request line out, one response line back, one
//! connection per request.

use std::path::Path;
use std::time::Duration;

use overlay_core::ErrorKind;
use overlay_core::rpc::{Request, Response};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::failure::{CliResult, Failure};

/// How long a request may take: a connect can wait for the store and the kernel.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The error for a socket nobody listens on.
pub(crate) fn no_agent(socket: &Path) -> Failure {
    Failure::of_kind(
        ErrorKind::Unavailable,
        format!(
            "no agent at {}: start `overlayctl agent` (with the same --socket) on this host",
            socket.display()
        ),
    )
}

/// Sends `request` to the agent at `socket` and returns its result.
pub(crate) async fn call(socket: &Path, request: &Request) -> CliResult<Value> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                no_agent(socket)
            }
            std::io::ErrorKind::PermissionDenied => Failure::of_kind(
                ErrorKind::PermissionDenied,
                format!(
                    "cannot use the agent socket {}: permission denied (run as root)",
                    socket.display()
                ),
            ),
            _ => Failure::of_kind(
                ErrorKind::Unavailable,
                format!(
                    "cannot reach the agent at {}: {e} (check that `overlayctl agent` runs)",
                    socket.display()
                ),
            ),
        })?;
    let line = serde_json::to_string(request)
        .map_err(|e| Failure::failed(format!("cannot encode request: {e} (a bug)")))?;
    let lost = |e: std::io::Error| {
        Failure::of_kind(
            ErrorKind::Unavailable,
            format!(
                "the agent at {} hung up: {e} (see its log)",
                socket.display()
            ),
        )
    };
    let exchange = async {
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(lost)?;
        let mut reply = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut reply)
            .await
            .map_err(lost)?;
        Ok::<_, Failure>(reply)
    };
    let reply = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Failure::failed(format!(
                "the agent at {} did not answer within {}s (see its log)",
                socket.display(),
                CALL_TIMEOUT.as_secs()
            ))
        })??;
    if reply.is_empty() {
        return Err(Failure::failed(format!(
            "the agent at {} closed the connection without answering (see its log)",
            socket.display()
        )));
    }
    match serde_json::from_str::<Response>(&reply) {
        Ok(Response::Ok(v)) => Ok(v),
        Ok(Response::Error(e)) => Err(e.into()),
        Err(e) => Err(Failure::failed(format!(
            "the agent at {} answered nonsense: {e} (is it an overlayctl agent of this version?)",
            socket.display()
        ))),
    }
}

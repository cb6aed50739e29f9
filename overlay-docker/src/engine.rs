//! The engine's own API, asked for what the remote driver protocol does not carry: a
//! network's name (the protocol passes only the engine's id), its containers' names and
//! aliases, and whether the engine runs with a cluster store (the scope).
//!
//! One `GET` per question, as HTTP/1.0 over the engine's unix socket, so the answer is the
//! body up to the end of the connection (no chunked encoding to undo).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use overlay_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The API version asked for: Docker 20.10's, which later engines still serve.
const API: &str = "v1.41";

/// How long one question may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read (a network with thousands of containers is well under it).
const MAX_BODY: u64 = 64 << 20;

/// An engine's API socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

/// What `GET /networks/ID` says of a network.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EngineNetwork {
    /// The network's name.
    pub name: String,
    /// Its labels (`--label`).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A container connected to a network, as the engine's event stream tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The engine's network id.
    pub network_id: String,
    /// The network's driver (`ovl`).
    pub driver: String,
    /// The container's id.
    pub container_id: String,
}

/// The engine's `network connect` events, in order, until the engine goes away.
#[derive(Debug)]
pub struct ConnectEvents {
    lines: tokio::io::Lines<tokio::io::BufReader<UnixStream>>,
}

impl ConnectEvents {
    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Connect> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            let Ok(ev) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let attrs = &ev["Actor"]["Attributes"];
            let (Some(network_id), Some(container_id)) =
                (ev["Actor"]["ID"].as_str(), attrs["container"].as_str())
            else {
                continue;
            };
            return Some(Connect {
                network_id: network_id.to_string(),
                driver: attrs["type"].as_str().unwrap_or_default().to_string(),
                container_id: container_id.to_string(),
            });
        }
    }
}

/// What `GET /containers/ID/json` says of a container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The container's name, without the engine's leading `/`.
    pub name: String,
    /// Its endpoint's id on the network.
    pub endpoint_id: String,
    /// Its aliases there (`--network-alias`), without its name and short id.
    pub aliases: Vec<String>,
}

impl Engine {
    /// The engine listening at `socket` (`/run/docker.sock`).
    pub fn new(socket: &Path) -> Engine {
        Engine {
            socket: socket.to_path_buf(),
        }
    }

    /// The socket asked.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`: the status and the body as JSON.
    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let op = "ask the Docker engine";
        let at = self.socket.display();
        let unreachable = |e: std::io::Error| {
            Error::new(
                ErrorKind::Unavailable,
                op,
                format!("the engine at {at} does not answer: {e}"),
            )
            .with_hint("start the engine, or pass its API socket with --docker-host")
        };
        let work = async {
            let mut s = UnixStream::connect(&self.socket)
                .await
                .map_err(unreachable)?;
            let request = format!("GET /{API}{path} HTTP/1.0\r\nHost: docker\r\n\r\n");
            s.write_all(request.as_bytes()).await.map_err(unreachable)?;
            let mut raw = Vec::new();
            s.take(MAX_BODY)
                .read_to_end(&mut raw)
                .await
                .map_err(unreachable)?;
            Ok::<_, Error>(raw)
        };
        let raw = tokio::time::timeout(TIMEOUT, work).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                op,
                format!("the engine at {at} did not answer GET {path} within {TIMEOUT:?}"),
            )
        })??;
        parse_response(&raw).ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                op,
                format!("the engine at {at} answered GET {path} with something else than HTTP"),
            )
            .with_hint("check that --docker-host names a Docker engine's API socket")
        })
    }

    /// The engine's network `id`, or `None` while the engine does not know it (during its
    /// own `CreateNetwork` call).
    pub async fn network(&self, id: &str) -> Result<Option<EngineNetwork>> {
        let (status, body) = self.get(&format!("/networks/{id}")).await?;
        match status {
            200 => serde_json::from_value(body).map(Some).map_err(|e| {
                Error::internal("ask the Docker engine", format!("network {id}: {e}"))
            }),
            404 => Ok(None),
            s => Err(Error::new(
                ErrorKind::Unavailable,
                "ask the Docker engine",
                format!("GET /networks/{id} answered {s}: {body}"),
            )),
        }
    }

    /// Container `id` on engine network `network_id`, or `None` when it is not (or no
    /// longer) there.
    pub async fn attached(&self, id: &str, network_id: &str) -> Result<Option<Attached>> {
        let (status, body) = self.get(&format!("/containers/{id}/json")).await?;
        if status != 200 {
            return Ok(None);
        }
        let name = body["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/');
        let nets = body["NetworkSettings"]["Networks"].as_object();
        let Some(net) = nets
            .into_iter()
            .flatten()
            .map(|(_, n)| n)
            .find(|n| n["NetworkID"] == network_id)
        else {
            return Ok(None);
        };
        let aliases = net["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| *a != name && !id.starts_with(a))
            .map(str::to_string)
            .collect();
        Ok(Some(Attached {
            name: name.to_string(),
            endpoint_id: net["EndpointID"].as_str().unwrap_or_default().to_string(),
            aliases,
        }))
    }

    /// Follows the engine's `network connect` events from now on (one long-lived request:
    /// no polling).
    pub async fn connect_events(&self) -> Result<ConnectEvents> {
        let op = "follow the Docker engine's events";
        let fail = |e: std::io::Error| {
            Error::new(
                ErrorKind::Unavailable,
                op,
                format!(
                    "the engine at {} does not answer: {e}",
                    self.socket.display()
                ),
            )
            .with_hint("start the engine, or pass its API socket with --docker-host")
        };
        let mut s = UnixStream::connect(&self.socket).await.map_err(fail)?;
        // filters={"type":["network"],"event":["connect"]}
        let filters = "%7B%22type%22%3A%5B%22network%22%5D%2C%22event%22%3A%5B%22connect%22%5D%7D";
        let request =
            format!("GET /{API}/events?filters={filters} HTTP/1.0\r\nHost: docker\r\n\r\n");
        s.write_all(request.as_bytes()).await.map_err(fail)?;
        let mut lines = tokio::io::BufReader::new(s).lines();
        // The status line, then headers up to the blank line.
        let status = lines.next_line().await.map_err(fail)?.unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(Error::new(
                ErrorKind::Unavailable,
                op,
                format!("GET /events answered {status:?}"),
            ));
        }
        while let Some(h) = lines.next_line().await.map_err(fail)? {
            if h.trim().is_empty() {
                break;
            }
        }
        Ok(ConnectEvents { lines })
    }

    /// Whether the engine runs with a cluster store (`--cluster-store`, Docker 20.10 and
    /// earlier): its networks of global-scope drivers are then shared by every engine.
    pub async fn has_cluster_store(&self) -> Result<bool> {
        let (status, body) = self.get("/info").await?;
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "ask the Docker engine",
                format!("GET /info answered {status}"),
            ));
        }
        Ok(body["ClusterStore"].as_str().is_some_and(|s| !s.is_empty()))
    }
}

/// The status and JSON body of a raw HTTP response; `null` for an empty or non-JSON body.
fn parse_response(raw: &[u8]) -> Option<(u16, Value)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_slice(&raw[end + 4..]).unwrap_or(Value::Null);
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let raw = b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"message\":\"network x not found\"}\n";
        let (status, body) = parse_response(raw).unwrap();
        assert_eq!(status, 404);
        assert_eq!(body["message"], "network x not found");
        assert!(parse_response(b"garbage").is_none());
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!((s, b), (200, Value::Null));
    }
}

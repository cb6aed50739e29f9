//! The controller as JSON requests and responses, one object per line, for processes that
//! drive a host from outside: the `overlay-host` tool, a local agent socket, test rigs in any
//! language.
//!
//! ```text
//! → {"op":"create_network","name":"my-net","options":{"subnets":[{"subnet":"10.0.9.0/24"}]}}
//! ← {"ok":{"Name":"my-net","Id":"…",…}}
//! → {"op":"disconnect","network":"my-net","container_id":"nope"}
//! ← {"error":{"kind":"not found","message":"disconnect: container \"nope\" is not connected …"}}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Controller;
use super::inspect::ContainerInspect;
use super::spec::{ContainerSpec, NetworkOptions};
use crate::error::{Error, Result};

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// [`Controller::create_network`]
    CreateNetwork {
        /// Network name.
        name: String,
        /// Options.
        #[serde(default)]
        options: NetworkOptions,
    },
    /// [`Controller::networks`] (a struct variant, so that unknown fields are refused)
    Networks {},
    /// [`Controller::inspect`]
    Inspect {
        /// Name, id or id prefix.
        network: String,
    },
    /// [`Controller::remove_network`]
    RemoveNetwork {
        /// Name, id or id prefix.
        network: String,
    },
    /// [`Controller::connect`]
    Connect {
        /// Name, id or id prefix.
        network: String,
        /// The container.
        container: ContainerSpec,
    },
    /// [`Controller::attach`]
    Attach {
        /// Name, id or id prefix.
        network: String,
        /// How to create the network if it does not exist.
        #[serde(default)]
        create: Option<NetworkOptions>,
        /// The container.
        container: ContainerSpec,
    },
    /// [`Controller::attachments`]
    Attachments {
        /// Only this network's (name, id or id prefix).
        #[serde(default)]
        network: Option<String>,
    },
    /// [`Controller::disconnect`]
    Disconnect {
        /// Name, id or id prefix.
        network: String,
        /// The container's id.
        container_id: String,
    },
    /// [`Controller::resolve`]
    Resolve {
        /// A container name or alias, plain or as `name.network`.
        name: String,
    },
    /// Which hosts are alive, as this host sees them.
    Hosts {},
    /// [`Controller::health`]
    Health {},
}

/// An error as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// [`ErrorKind::as_str`](crate::ErrorKind::as_str) of the kind.
    pub kind: String,
    /// The full message, hint included.
    pub message: String,
    /// The OS error number, for kernel errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        WireError {
            kind: e.kind().as_str().to_string(),
            message: e.to_string(),
            errno: e.errno(),
        }
    }
}

/// One response: `{"ok": …}` or `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The call's result as JSON (`null` for calls without one).
    Ok(Value),
    /// The call failed.
    Error(WireError),
}

fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal("encode response", e.to_string()))
}

impl Controller {
    /// Carries out one request.
    pub async fn call(&self, request: Request) -> Response {
        let result = match request {
            Request::CreateNetwork { name, options } => self
                .create_network(&name, &options)
                .await
                .and_then(|r| to_value(&r)),
            Request::Networks {} => self.networks().await.and_then(|r| to_value(&r)),
            Request::Inspect { network } => self.inspect(&network).await.and_then(|r| to_value(&r)),
            Request::RemoveNetwork { network } => {
                self.remove_network(&network).await.map(|()| Value::Null)
            }
            // Docker's shape, as the C and Python faces answer a connect.
            Request::Connect { network, container } => self
                .connect(&network, &container)
                .await
                .map(|a| ContainerInspect::of_attachment(&a, self.host_id()))
                .and_then(|r| to_value(&r)),
            Request::Attach {
                network,
                create,
                container,
            } => self
                .attach(&network, create.as_ref(), &container)
                .await
                .and_then(|r| to_value(&r)),
            Request::Attachments { network } => self
                .attachments(network.as_deref())
                .await
                .and_then(|r| to_value(&r)),
            Request::Disconnect {
                network,
                container_id,
            } => self
                .disconnect(&network, &container_id)
                .await
                .map(|()| Value::Null),
            Request::Resolve { name } => self.resolve(&name).await.and_then(|r| to_value(&r)),
            Request::Hosts {} => self
                .agent()
                .map(|a| a.live_hosts())
                .and_then(|h| to_value(&h)),
            Request::Health {} => self.health().await.and_then(|h| to_value(&h)),
        };
        match result {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(WireError::from(&e)),
        }
    }

    /// Parses one request line and carries it out; a malformed line is an InvalidArgument
    /// response, never a failure of the caller.
    pub async fn call_json(&self, line: &str) -> Response {
        match serde_json::from_str::<Request>(line) {
            Ok(req) => self.call(req).await,
            Err(e) => Response::Error(WireError::from(
                &Error::invalid(
                    "parse request",
                    format!("request {line:?} is malformed: {e}"),
                )
                .with_hint("send one JSON object per line with an \"op\" field"),
            )),
        }
    }
}

/// The longest request line [`Controller::serve_lines`] takes; a connect request is well
/// under 4 KiB.
pub const MAX_REQUEST: usize = 1 << 20;

impl Controller {
    /// Answers the request lines of `input` on `output`, one response line each, in order,
    /// until `input` ends or `output` fails. A line longer than [`MAX_REQUEST`] is answered
    /// with an InvalidArgument response and ends the exchange (what follows it cannot be
    /// told apart from its rest); blank lines are skipped.
    pub async fn serve_lines<R, W>(&self, mut input: R, mut output: W) -> std::io::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let mut buf = Vec::new();
            let limit = (MAX_REQUEST + 1) as u64;
            if (&mut input).take(limit).read_until(b'\n', &mut buf).await? == 0 {
                return Ok(());
            }
            let too_long = buf.len() > MAX_REQUEST;
            let line = String::from_utf8_lossy(&buf);
            if !too_long && line.trim().is_empty() {
                continue;
            }
            let response = if too_long {
                Response::Error(WireError::from(
                    &Error::invalid(
                        "parse request",
                        format!("request is longer than {MAX_REQUEST} bytes"),
                    )
                    .with_hint("send one JSON object per line"),
                ))
            } else {
                self.call_json(line.trim_end()).await
            };
            let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
                format!(r#"{{"error":{{"kind":"internal error","message":"cannot encode: {e}"}}}}"#)
            });
            text.push('\n');
            output.write_all(text.as_bytes()).await?;
            output.flush().await?;
            if too_long {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes() {
        let r: Request = serde_json::from_str(r#"{"op":"networks"}"#).unwrap();
        assert_eq!(r, Request::Networks {});
        let r: Request = serde_json::from_str(
            r#"{"op":"connect","network":"n","container":{"id":"c","name":"a","netns":{"pid":1}}}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Connect { .. }));
        assert!(serde_json::from_str::<Request>(r#"{"op":"networks","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"launch"}"#).is_err());
        let resp = serde_json::to_string(&Response::Ok(Value::Null)).unwrap();
        assert_eq!(resp, r#"{"ok":null}"#);
    }
}

//! The host's agent, as the plugin reaches it: one request line over its unix socket, one
//! response line back, on a blocking socket (a plugin process makes one or two calls and
//! exits; it needs no runtime for that).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use overlay_core::ErrorKind;
use overlay_core::rpc::{Request, Response};
use serde_json::Value;

use crate::error::{CniError, Code, code_for};

/// How long one call may take: an ADD can wait for the store and the kernel.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent at one socket, for errors written in one CNI version.
pub struct Agent {
    socket: PathBuf,
    version: String,
}

impl Agent {
    /// The agent listening at `socket`; errors are written in `version`.
    pub fn new(socket: &Path, version: &str) -> Agent {
        Agent {
            socket: socket.to_path_buf(),
            version: version.to_string(),
        }
    }

    /// Sends `request` and returns the agent's result, or its error as CNI words it: an agent
    /// that cannot be reached, or does not answer in time, is "try again later" (11).
    pub fn call(&self, request: &Request) -> Result<Value, CniError> {
        let at = self.socket.display();
        let later = |msg: String| {
            CniError::new(
                &self.version,
                Code::TryAgainLater,
                msg,
                format!("start the host's agent (`overlayctl agent --socket {at}`), then retry"),
            )
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => CniError {
                cni_version: self.version.clone(),
                code: code_for(ErrorKind::PermissionDenied),
                msg: format!("cannot use the agent socket {at}: permission denied"),
                details: "run the plugin as root, as container runtimes do".into(),
            },
            _ => later(format!("no agent answers at {at}: {e}")),
        })?;
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                later(format!(
                    "the agent at {at} did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            } else {
                later(format!("the agent at {at} hung up: {e}"))
            }
        };
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        let mut line = serde_json::to_string(request).map_err(|e| {
            CniError::new(
                &self.version,
                Code::Decode,
                format!("cannot encode the request: {e}"),
                "a bug: please report it",
            )
        })?;
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(io)?;
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
        if reply.is_empty() {
            return Err(later(format!(
                "the agent at {at} closed the connection without answering (see its log)"
            )));
        }
        match serde_json::from_str::<Response>(&reply) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Error(e)) => Err(CniError::from_wire(&self.version, &e)),
            Err(e) => Err(CniError::new(
                &self.version,
                Code::Decode,
                format!("the agent at {at} answered something else than a response: {e}"),
                "check that the socket is an overlayctl agent's, of this plugin's version",
            )),
        }
    }

    /// `call`, with the result decoded as `T`.
    pub fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
    ) -> Result<T, CniError> {
        let v = self.call(request)?;
        serde_json::from_value(v).map_err(|e| {
            CniError::new(
                &self.version,
                Code::Decode,
                format!(
                    "the agent at {} answered a result of another shape: {e}",
                    self.socket.display()
                ),
                "use an agent of this plugin's version",
            )
        })
    }
}

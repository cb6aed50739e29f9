//! etcd client errors mapped onto [`ErrorKind`].

use etcd_client as ec;
use tonic::Code;

use crate::error::{Error, ErrorKind};
use crate::store::StoreUrl;

/// Maps an etcd client error of operation `op` to an [`Error`] naming the servers.
pub(super) fn map_err(op: &'static str, url: &StoreUrl, e: ec::Error) -> Error {
    let servers = url
        .servers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (kind, hint): (ErrorKind, &'static str) = match &e {
        // etcd reports bad credentials as InvalidArgument; they are a permission problem.
        ec::Error::GRpcStatus(status)
            if [
                "authentication failed",
                "user name is empty",
                "permission denied",
            ]
            .iter()
            .any(|m| status.message().contains(m)) =>
        {
            (
                ErrorKind::PermissionDenied,
                "check the username= and password= options and the user's etcd role",
            )
        }
        ec::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown => (
                ErrorKind::Unavailable,
                "check that the etcd servers are running and reachable, then retry",
            ),
            Code::DeadlineExceeded => (
                ErrorKind::Timeout,
                "retry, or raise the timeout= option of the store URL",
            ),
            Code::Unauthenticated | Code::PermissionDenied => (
                ErrorKind::PermissionDenied,
                "check the username= and password= options and the user's etcd role",
            ),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => (
                ErrorKind::InvalidArgument,
                "the request was refused as malformed or too large (etcd's limit is 1.5 MiB)",
            ),
            Code::FailedPrecondition => {
                (ErrorKind::Conflict, "re-read the current state and retry")
            }
            _ => (ErrorKind::Internal, "see the etcd server log"),
        },
        ec::Error::TransportError(_) | ec::Error::IoError(_) => (
            ErrorKind::Unavailable,
            "check that the etcd servers are running and reachable, then retry",
        ),
        ec::Error::InvalidUri(_)
        | ec::Error::InvalidArgs(_)
        | ec::Error::InvalidMetadataValue(_) => (
            ErrorKind::InvalidArgument,
            "check the store URL's servers and credentials",
        ),
        _ => (
            ErrorKind::Unavailable,
            "retry; if it persists, see the etcd server log",
        ),
    };
    Error::new(kind, op, format!("etcd at {servers}: {e}"))
        .with_hint(hint)
        .with_source(e)
}

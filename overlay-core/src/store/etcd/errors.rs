//! etcd client errors mapped onto [`ErrorKind`].

use etcd_client as ec;
use std::error::Error as _;

use tonic::Code;

use crate::error::{Error, ErrorKind};
use crate::store::StoreUrl;
use crate::store::remote::{cause, is_connect_failure, server_error};

/// The error inside etcd-client's, whose own `Error` reports no `source()`: what [`cause`] and
/// [`is_connect_failure`] need to walk.
fn inner(e: &ec::Error) -> &(dyn std::error::Error + 'static) {
    match e {
        ec::Error::GRpcStatus(status) => status,
        ec::Error::TransportError(t) => t,
        ec::Error::IoError(io) => io,
        other => other,
    }
}

/// etcd-client's error as a source with the chain its own type does not report, so that
/// [`Error`]'s display and callers walking `source()` reach the cause ("connection refused").
#[derive(Debug)]
struct Chained(ec::Error);

impl std::fmt::Display for Chained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ec::Error::GRpcStatus(status) => f.write_str(status.message()),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for Chained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            ec::Error::GRpcStatus(status) => status.source(),
            ec::Error::TransportError(t) => Some(t),
            ec::Error::IoError(io) => Some(io),
            _ => None,
        }
    }
}

/// The etcd client's own error behind one of ours, to decide on its type and gRPC status code
/// (never on message text) what a failure means.
pub(super) fn client_error(e: &Error) -> Option<&ec::Error> {
    std::error::Error::source(e)?
        .downcast_ref::<Chained>()
        .map(|c| &c.0)
}

/// Whether the request failed because no connection to a server could be made, so that it
/// never reached one and may be sent again.
pub(super) fn never_sent(e: &ec::Error) -> bool {
    matches!(e, ec::Error::GRpcStatus(s) if s.code() == Code::Unavailable)
        && is_connect_failure(inner(e))
        || matches!(e, ec::Error::TransportError(_)) && is_connect_failure(inner(e))
}

/// Maps an etcd client error of operation `op` to an [`Error`] naming the servers.
pub(super) fn map_err(op: &'static str, url: &StoreUrl, e: ec::Error) -> Error {
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
    let what = match (&e, kind) {
        // A status without a source is the server's own words; with one, the transport's.
        (ec::Error::GRpcStatus(status), ErrorKind::Unavailable) if status.source().is_none() => {
            status.message().to_string()
        }
        (_, ErrorKind::Unavailable) => cause(inner(&e)),
        (ec::Error::GRpcStatus(status), _) => format!("refused the request: {}", status.message()),
        _ => cause(inner(&e)),
    };
    server_error(op, "etcd", url, kind, what)
        .with_hint(hint)
        .with_source(Chained(e))
}

/// A failed connect whose servers accept TCP connections did not fail for want of a server:
/// the TLS or gRPC handshake was refused. Says so, and which options to check, instead of
/// "check that the servers are running".
pub(super) async fn diagnose_connect(e: Error, url: &StoreUrl) -> Error {
    if e.kind() != ErrorKind::Unavailable {
        return e;
    }
    let mut answering = false;
    for server in &url.servers {
        answering |= accepts_tcp(server).await;
    }
    if !answering {
        return e;
    }
    let tls = url.options.tls_ca.is_some() || url.options.tls_cert.is_some();
    let untrusted =
        tls_cause(&e).is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)));
    let hint = if untrusted {
        "the servers' certificate is not signed by the CA given: fix the ca= option (the CA \
         that signed the etcd servers' certificates)"
    } else if tls {
        "the servers answer but refused the TLS handshake: check ca= (the CA that signed the \
         servers' certificates), and cert= and key= (a client certificate that CA signed, \
         which servers started with --client-cert-auth require)"
    } else {
        "the servers answer but not to plain gRPC: if they serve TLS, give the ca= option (and \
         cert= and key= when they require client certificates)"
    };
    e.with_hint(hint)
}

/// Whether `server` accepts a TCP connection within half a second.
async fn accepts_tcp(server: &crate::store::url::ServerAddr) -> bool {
    let connect = tokio::net::TcpStream::connect((server.host.as_str(), server.port));
    matches!(
        tokio::time::timeout(std::time::Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

/// The TLS error somewhere in `e`'s chain of sources.
fn tls_cause(e: &Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        next = err.source();
    }
    None
}

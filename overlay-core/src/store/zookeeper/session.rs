//! ZooKeeper connections: opening a session with the chroot in place, error mapping, and
//! replacing a session that expired.

use std::time::Duration;

use zookeeper_client as zk;
use zookeeper_client::{Acls, Client, CreateMode};

use super::layout::{BARRIER, KV, LOG};
use crate::error::{Error, ErrorKind, Result};
use crate::store::StoreUrl;
use crate::store::remote::{bounded, cause, server_error};

/// The ACLs of nodes this store creates: open, or only the authenticated user's when the URL
/// gives credentials.
pub(super) fn acls(url: &StoreUrl) -> Acls<'static> {
    if url.options.username.is_some() {
        Acls::creator_all()
    } else {
        Acls::anyone_all()
    }
}

/// Opens a session, creates the chroot (the URL prefix) with its `kv`, `log` and `barrier` nodes if
/// missing, and returns a client rooted there.
pub(super) async fn open(url: &StoreUrl) -> Result<Client> {
    const OP: &str = "connect ZooKeeper";
    let hosts = url.server_list();
    let mut connector = Client::connector()
        .with_session_timeout(url.options.ttl)
        .with_connection_timeout(url.options.timeout.min(Duration::from_secs(2)));
    if let (Some(user), Some(pass)) = (&url.options.username, &url.options.password) {
        connector = connector.with_auth("digest", format!("{user}:{pass}").as_bytes());
    }
    let root = bounded(OP, url, async {
        connector
            .connect(&hosts)
            .await
            .map_err(|e| map_err(OP, url, e))
    })
    .await?;
    let base = format!("/{}", url.prefix);
    let dir = CreateMode::Persistent.with_acls(acls(url));
    for sub in [KV, LOG, BARRIER] {
        let path = format!("{base}{sub}");
        bounded(OP, url, async {
            root.mkdir(&path, &dir)
                .await
                .map_err(|e| map_err(OP, url, e))
        })
        .await?;
    }
    root.chroot(base).map_err(|_| {
        Error::invalid(
            OP,
            format!("prefix {:?} is not a valid ZooKeeper path", url.prefix),
        )
    })
}

/// Maps a ZooKeeper client error of operation `op` to an [`Error`].
pub(super) fn map_err(op: &'static str, url: &StoreUrl, e: zk::Error) -> Error {
    let (kind, hint): (ErrorKind, &'static str) = match &e {
        zk::Error::ConnectionLoss
        | zk::Error::SessionExpired
        | zk::Error::SessionMoved
        | zk::Error::ClientClosed
        | zk::Error::NoHosts
        | zk::Error::Throttled
        | zk::Error::NotReadOnly
        // Transport failures (connection reset, refused) arrive as custom errors.
        | zk::Error::Custom(_)
        | zk::Error::UnexpectedError(_) => (
            ErrorKind::Unavailable,
            "check that the ZooKeeper servers are running and reachable, then retry",
        ),
        zk::Error::Timeout => (ErrorKind::Timeout, "retry, or raise the timeout= option of the URL"),
        zk::Error::NoAuth | zk::Error::AuthFailed | zk::Error::InvalidAcl => (
            ErrorKind::PermissionDenied,
            "check the username= and password= options and the ACLs of the prefix",
        ),
        zk::Error::NoNode => (ErrorKind::NotFound, "the node went away meanwhile; retry"),
        zk::Error::NodeExists => (ErrorKind::AlreadyExists, "pick another key"),
        zk::Error::BadVersion => (ErrorKind::Conflict, "re-read the current state and retry"),
        zk::Error::NoChildrenForEphemerals => (
            ErrorKind::InvalidArgument,
            "a key cannot be below an ephemeral key on ZooKeeper: ephemeral nodes have no children",
        ),
        zk::Error::BadArguments(_) | zk::Error::MarshallingError | zk::Error::QuotaExceeded => (
            ErrorKind::InvalidArgument,
            "the request was refused as malformed or too large (see the server's jute.maxbuffer)",
        ),
        zk::Error::Unimplemented => (ErrorKind::Unsupported, "use ZooKeeper 3.6 or newer"),
        _ => (ErrorKind::Internal, "see the ZooKeeper server log"),
    };
    server_error(op, "ZooKeeper", url, kind, cause(&e))
        .with_hint(hint)
        .with_source(e)
}

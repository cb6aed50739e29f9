//! Helpers shared by the server-backed stores (etcd, ZooKeeper, Consul): their life cycle and
//! owned ephemeral keys ([`Lifecycle`]), deadlines, prefix matching, transaction checks and
//! the shape of their errors.

mod lifecycle;

pub(crate) use lifecycle::Lifecycle;

use std::collections::HashSet;
use std::future::Future;

use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{StoreUrl, TxnOp, validate_key, validate_prefix};

/// Runs `fut` with the store's deadline: no operation hangs longer than `timeout`.
pub(crate) async fn bounded<T>(
    op: &'static str,
    url: &StoreUrl,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(url.options.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(timeout_error(op, url)),
    }
}

/// The error of an operation that got no answer within the store's timeout.
pub(crate) fn timeout_error(op: &'static str, url: &StoreUrl) -> Error {
    Error::new(
        ErrorKind::Timeout,
        op,
        format!(
            "no answer from {} at {url} within {:?}",
            url.scheme.server_name(),
            url.options.timeout
        ),
    )
    .with_hint(
        "check that the store servers are running and reachable, or raise the URL's timeout= option",
    )
}

pub(crate) use crate::error::cause;

/// Whether a client error was caused by a connection that could not be made (refused, reset,
/// unreachable): the request never reached a server.
pub(crate) fn is_connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as Io;
    let mut inner = Some(e);
    while let Some(err) = inner {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::NotConnected
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::AddrNotAvailable
            );
        }
        inner = err.source();
    }
    false
}

/// The error of a request to `backend`'s servers: "cannot reach <backend> at <servers>:
/// <cause>" when no server answered (`Unavailable`), "<backend> at <servers>: <cause>" when
/// one did.
pub(crate) fn server_error(
    op: &'static str,
    backend: &str,
    url: &StoreUrl,
    kind: ErrorKind,
    cause: impl std::fmt::Display,
) -> Error {
    let servers = url.server_list();
    let what = match kind {
        ErrorKind::Unavailable => format!("cannot reach {backend} at {servers}: {cause}"),
        _ => format!("{backend} at {servers}: {cause}"),
    };
    Error::new(kind, op, what)
}

/// The error every operation returns after [`close`](crate::store::KvStore::close).
pub(crate) fn closed_error(op: &'static str, url: &StoreUrl) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        op,
        format!("the store {url} was closed"),
    )
    .with_hint("open a new connection with store::connect")
}

/// How much a server-backed store accepts in one request, and what raises it.
pub(crate) struct SizeLimit {
    /// The backend, as messages name it.
    pub(crate) backend: &'static str,
    /// Bytes of values one request may carry, when the URL sets no `max_value=`.
    pub(crate) default: usize,
    /// Why the default is what it is: the server's own limit.
    pub(crate) why: &'static str,
    /// The server option that raises it.
    pub(crate) server_option: &'static str,
}

impl SizeLimit {
    /// The limit in force for `url`.
    pub(crate) fn bytes(&self, url: &StoreUrl) -> usize {
        url.options.max_value.unwrap_or(self.default)
    }

    /// Refuses, before any I/O, a request whose values add up to more than the limit: a
    /// server refusing an oversized request may also drop the connection, and with it the
    /// session that holds this client's ephemeral keys (ZooKeeper does).
    pub(crate) fn check<'a>(
        &self,
        op: &'static str,
        url: &StoreUrl,
        values: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Result<()> {
        let limit = self.bytes(url);
        let mut total = 0usize;
        let mut first = None;
        for (key, len) in values {
            total = total.saturating_add(len);
            first.get_or_insert(key);
        }
        if total <= limit {
            return Ok(());
        }
        let what = match first {
            Some(key) => format!("the value for key {key:?}"),
            None => "the request".to_string(),
        };
        Err(Error::invalid(
            op,
            format!(
                "{what} is {total} bytes, over the limit of {limit} bytes for {} ({})",
                self.backend, self.why
            ),
        )
        .with_hint(format!(
            "store a smaller value, or raise {} on every server and the URL's max_value= option",
            self.server_option
        )))
    }
}

/// The sizes of the values a transaction writes.
pub(crate) fn txn_values(ops: &[TxnOp]) -> impl Iterator<Item = (&str, usize)> {
    ops.iter().filter_map(|op| match op {
        TxnOp::Create { key, value }
        | TxnOp::Put { key, value }
        | TxnOp::Update { key, value, .. } => Some((key.as_str(), value.len())),
        _ => None,
    })
}

/// The prefix as list and watch use it: without a trailing `/`, validated.
pub(crate) fn norm_prefix(prefix: &str) -> Result<&str> {
    validate_prefix(prefix)?;
    Ok(prefix.strip_suffix('/').unwrap_or(prefix))
}

/// Whether `key` is `prefix` itself or below it (`prefix` normalised by [`norm_prefix`]).
pub(crate) fn under(prefix: &str, key: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Checks a transaction before any I/O: valid keys, each key in at most one op, not too many
/// ops.
pub(crate) fn check_txn(ops: &[TxnOp], max_ops: usize) -> Result<()> {
    let mut seen = HashSet::new();
    for op in ops {
        validate_key(op.key())?;
        if !seen.insert(op.key()) {
            return Err(Error::invalid(
                "store txn",
                format!(
                    "key {:?} is written by more than one op of the transaction",
                    op.key()
                ),
            )
            .with_hint("merge the ops on one key into one op"));
        }
    }
    if ops.len() > max_ops {
        return Err(Error::invalid(
            "store txn",
            format!(
                "the transaction has {} ops, over this backend's limit of {max_ops}",
                ops.len()
            ),
        )
        .with_hint("split it into smaller transactions"));
    }
    Ok(())
}

/// The error of a failed create (`AlreadyExists`).
pub(crate) fn exists_error(op: &'static str, key: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        op,
        format!("key {key:?} already exists"),
    )
}

/// The error of a failed version condition (`Conflict`).
pub(crate) fn conflict_error(
    op: &'static str,
    key: &str,
    expected: Option<u64>,
    found: Option<u64>,
) -> Error {
    let want = match expected {
        Some(v) => format!("version {v}"),
        None => "no key".to_string(),
    };
    let have = match found {
        Some(v) => format!("it is at version {v}"),
        None => "it does not exist".to_string(),
    };
    Error::new(
        ErrorKind::Conflict,
        op,
        format!("key {key:?}: expected {want}, but {have}"),
    )
}

/// Aborts a background task when dropped (held by a [`Watch`](crate::store::Watch)).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) use crate::retry::Backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "transport error: ConnectError(\"tcp connect error\", Os {{ code: 111 }})"
            )
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn cause_is_the_innermost_error_in_words() {
        let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(cause(&refused), "connection refused");
        assert!(is_connect_failure(&refused));
        let os = Wrapper(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(cause(&os), "connection refused");
        let plain = std::fmt::Error;
        assert_eq!(
            cause(&plain),
            "an error occurred when formatting an argument"
        );
        assert!(!is_connect_failure(&plain));
    }

    #[test]
    fn under_matches_path_prefixes_only() {
        assert!(under("a/b", "a/b"));
        assert!(under("a/b", "a/b/c"));
        assert!(!under("a/b", "a/bc"));
        assert!(!under("a/b", "a/b-c"));
        assert!(under("", "x"));
    }

    #[test]
    fn txn_checks() {
        let put = |k: &str| TxnOp::Put {
            key: k.into(),
            value: vec![],
        };
        assert!(check_txn(&[put("a"), put("b")], 2).is_ok());
        let check = TxnOp::Check {
            key: "a".into(),
            version: None,
        };
        assert!(check_txn(&[put("a"), check], 2).is_err());
        assert_eq!(
            check_txn(&[put("a"), put("a")], 9).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            check_txn(&[put("a"), put("b")], 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            check_txn(&[put("a//b")], 9).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}

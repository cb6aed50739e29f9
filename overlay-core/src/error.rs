//! The one error type of `overlay-core`.
//!
//! Every failure carries an [`ErrorKind`] a caller can match on, the operation that failed, what
//! was wrong (the context), a hint saying what to do about it, and the underlying error as
//! [`std::error::Error::source`]. The C and Python faces map the kinds one to one onto status
//! codes and exception classes, so a kind is never reused for a different meaning.

use std::borrow::Cow;
use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in a form a caller can branch on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named thing (key, network, endpoint, namespace) does not exist.
    NotFound,
    /// A create found the thing already there.
    AlreadyExists,
    /// A conditional write lost a race or a precondition does not hold; nothing was changed.
    Conflict,
    /// The caller passed something malformed or out of range; nothing was changed.
    InvalidArgument,
    /// The cluster store or another dependency cannot be reached right now.
    Unavailable,
    /// An operation did not complete within its deadline.
    Timeout,
    /// The process lacks a privilege (usually `CAP_NET_ADMIN` or `CAP_SYS_ADMIN`).
    PermissionDenied,
    /// The request is valid but this backend, kernel or build cannot do it.
    Unsupported,
    /// The kernel refused a netlink or namespace operation; see [`Error::errno`].
    Kernel,
    /// A bug or broken invariant inside the library.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of their C status codes.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::InvalidArgument,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::PermissionDenied,
        ErrorKind::Unsupported,
        ErrorKind::Kernel,
        ErrorKind::Internal,
    ];

    /// The kind's number, 1 to 10 in the order of [`ALL`](Self::ALL), the same on every
    /// face: C's `ovl_status`, and 100 more in the CLI's exit codes and the CNI plugin's error
    /// codes (where the spec has no code of its own for the kind).
    pub fn number(self) -> u8 {
        match self {
            ErrorKind::NotFound => 1,
            ErrorKind::AlreadyExists => 2,
            ErrorKind::Conflict => 3,
            ErrorKind::InvalidArgument => 4,
            ErrorKind::Unavailable => 5,
            ErrorKind::Timeout => 6,
            ErrorKind::PermissionDenied => 7,
            ErrorKind::Unsupported => 8,
            ErrorKind::Kernel => 9,
            ErrorKind::Internal => 10,
        }
    }

    /// The kind named `name` by [`as_str`](Self::as_str), as the JSON-lines protocol carries it.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A short lowercase name, stable across releases (used in logs and the Python face).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Kernel => "kernel error",
            ErrorKind::Internal => "internal error",
        }
    }

    /// What a caller can usually do about an error of this kind, used when the site that
    /// raised it knows nothing more specific.
    fn default_hint(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "check the name or id, or list what exists",
            ErrorKind::AlreadyExists => "pick another name, or use the existing one",
            ErrorKind::Conflict => "re-read the current state and retry",
            ErrorKind::InvalidArgument => "fix the argument; nothing was changed",
            ErrorKind::Unavailable => {
                "check that the cluster store is running and reachable, then retry"
            }
            ErrorKind::Timeout => "retry, or raise the timeout option of the store URL",
            ErrorKind::PermissionDenied => "run as root or grant CAP_NET_ADMIN and CAP_SYS_ADMIN",
            ErrorKind::Unsupported => "use a backend or kernel that supports it",
            ErrorKind::Kernel => "see the errno; the kernel state was left as it was",
            ErrorKind::Internal => "this is a bug in overlay; please report it with this message",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of `overlay-core`: kind, operation, context, hint, optional errno and source.
///
/// Displayed as `"<operation>: <context> (<hint>)"`, e.g.
/// `create network: a network named "my-net" already exists (pick another name, or use the
/// existing one)`.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    op: Cow<'static, str>,
    context: String,
    hint: Option<Cow<'static, str>>,
    errno: Option<i32>,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` raised by operation `op` (a verb phrase such as `"store get"`),
    /// with `context` saying what was wrong.
    pub fn new(
        kind: ErrorKind,
        op: impl Into<Cow<'static, str>>,
        context: impl Into<String>,
    ) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                op: op.into(),
                context: context.into(),
                hint: None,
                errno: None,
                source: None,
            }),
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidArgument`] error.
    pub fn invalid(op: impl Into<Cow<'static, str>>, context: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, op, context)
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(op: impl Into<Cow<'static, str>>, context: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, op, context)
    }

    /// Replaces the generic hint of the kind with one specific to this failure.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    /// Attaches the underlying error, reported by [`std::error::Error::source`].
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// Attaches the OS error number of a kernel or system call failure.
    #[must_use]
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.inner.errno = Some(errno);
        self
    }

    /// Replaces the operation, for a caller that wraps a lower layer's error in its own verb.
    #[must_use]
    pub fn with_op(mut self, op: impl Into<Cow<'static, str>>) -> Self {
        self.inner.op = op.into();
        self
    }

    /// The kind, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        &self.inner.op
    }

    /// What was wrong.
    pub fn context(&self) -> &str {
        &self.inner.context
    }

    /// What to do about it: the specific hint if one was given, else the kind's generic one.
    pub fn hint(&self) -> &str {
        self.inner
            .hint
            .as_deref()
            .unwrap_or_else(|| self.inner.kind.default_hint())
    }

    /// The OS error number, for [`ErrorKind::Kernel`] and system call failures.
    pub fn errno(&self) -> Option<i32> {
        self.inner.errno
    }

    /// Maps an OS error number to the kind a caller would expect for it.
    pub fn kind_for_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
            libc::ENOENT | libc::ENODEV | libc::ESRCH => ErrorKind::NotFound,
            libc::EEXIST => ErrorKind::AlreadyExists,
            libc::EINVAL | libc::ERANGE | libc::E2BIG => ErrorKind::InvalidArgument,
            libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => ErrorKind::Unsupported,
            libc::ETIMEDOUT => ErrorKind::Timeout,
            _ => ErrorKind::Kernel,
        }
    }

    /// Wraps an I/O error, keeping its errno and choosing the kind from it.
    pub fn io(
        op: impl Into<Cow<'static, str>>,
        context: impl Into<String>,
        err: std::io::Error,
    ) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Unavailable,
            _ => err
                .raw_os_error()
                .map_or(ErrorKind::Internal, Error::kind_for_errno),
        };
        let mut e = Error::new(kind, op, context);
        if let Some(errno) = err.raw_os_error() {
            e = e.with_errno(errno);
        }
        e.with_source(err)
    }
}

/// The innermost cause of a client library's error, as a few words a person can act on
/// ("connection refused", "deadline has elapsed"), never the library's `Debug` dump.
///
/// Client errors nest (a gRPC status around a transport error around a connect error around
/// an `io::Error`); the outer layers only repeat "request failed". An `io::Error` found on the
/// way is described by its kind, without the "(os error N)" suffix.
pub(crate) fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    loop {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            let text = io.to_string();
            let text = match text.find(" (os error") {
                Some(i) => &text[..i],
                None => &text,
            };
            return lowercase_first(text);
        }
        match inner.source() {
            Some(next) => inner = next,
            None => return lowercase_first(&inner.to_string()),
        }
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.op, self.inner.context)?;
        if let Some(errno) = self.inner.errno {
            write!(
                f,
                " [errno {errno}: {}]",
                std::io::Error::from_raw_os_error(errno)
            )?;
        }
        // The source adds its innermost cause in words, unless the context or the errno
        // already says it: a client library's own Display is often a Debug dump of its layers.
        if let (Some(source), None) = (&self.inner.source, self.inner.errno) {
            let text = cause(source.as_ref());
            if !text.is_empty() && !self.inner.context.contains(&text) {
                write!(f, ": {text}")?;
            }
        }
        write!(f, " ({})", self.hint())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("op", &self.inner.op)
            .field("context", &self.inner.context)
            .field("hint", &self.hint())
            .field("errno", &self.inner.errno)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_order_of_all_and_names_round_trip() {
        for (i, k) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(k.number()), i + 1, "{k:?}");
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::from_name("nope"), None);
    }

    #[test]
    fn display_names_operation_context_and_hint() {
        let e = Error::new(
            ErrorKind::AlreadyExists,
            "create network",
            "\"my-net\" exists",
        );
        assert_eq!(
            e.to_string(),
            "create network: \"my-net\" exists (pick another name, or use the existing one)"
        );
        let e = e.with_hint("remove it first");
        assert!(e.to_string().ends_with("(remove it first)"));
    }

    #[test]
    fn io_errors_keep_errno_and_source() {
        let e = Error::io(
            "open namespace",
            "/run/netns/x",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("errno 1"), "{e}");
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            Error::kind_for_errno(libc::EEXIST),
            ErrorKind::AlreadyExists
        );
        assert_eq!(Error::kind_for_errno(libc::ENOENT), ErrorKind::NotFound);
        assert_eq!(Error::kind_for_errno(libc::EBUSY), ErrorKind::Kernel);
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}

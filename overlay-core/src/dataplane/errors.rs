//! Kernel (netlink) failures mapped onto the crate's [`Error`], with an errno and a hint.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// A failed netlink request: the kernel's errno, or the connection thread is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NlError {
    /// The kernel answered with this (positive) errno.
    Errno(i32),
    /// The connection's serving thread has stopped.
    Closed,
}

impl NlError {
    pub(crate) fn closed() -> NlError {
        NlError::Closed
    }

    /// The errno, if the kernel answered.
    pub fn errno(self) -> Option<i32> {
        match self {
            NlError::Errno(e) => Some(e),
            NlError::Closed => None,
        }
    }

    /// Whether the kernel said "no such thing" (ENOENT, ENODEV, ESRCH).
    pub fn is_missing(self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH)
        )
    }

    /// Whether the kernel said "exists" (EEXIST).
    pub fn is_exists(self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NlError::Errno(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            NlError::Closed => f.write_str("the netlink connection is closed"),
        }
    }
}

impl std::error::Error for NlError {}

impl From<rtnetlink::Error> for NlError {
    /// A request run through one of rtnetlink's request builders: the kernel's errno, or a
    /// closed connection; a reply rtnetlink cannot make sense of counts as a protocol error.
    fn from(e: rtnetlink::Error) -> NlError {
        match e {
            rtnetlink::Error::NetlinkError(m) => match m.code {
                Some(code) => NlError::Errno(code.get().abs()),
                None => NlError::Errno(libc::EPROTO),
            },
            rtnetlink::Error::RequestFailed => NlError::Closed,
            _ => NlError::Errno(libc::EPROTO),
        }
    }
}

/// An [`Error`] for a failed netlink request `op` on `what` in namespace `ns`: the kind from the
/// errno, the errno itself, and a hint for the usual causes.
pub(crate) fn nl_failure(e: NlError, op: &'static str, what: String, ns: &str) -> Error {
    let Some(errno) = e.errno() else {
        let mut context = what;
        context.push_str(&format!(" in {ns}: {e}"));
        return Error::new(ErrorKind::Unavailable, op, context)
            .with_hint("the namespace's netlink connection stopped; recreate the dataplane");
    };
    let hint = match errno {
        libc::EPERM | libc::EACCES => "run as root or grant CAP_NET_ADMIN",
        libc::EEXIST => "the name or entry is already taken; remove the old one or pick another",
        libc::ENOENT | libc::ENODEV => "the device or entry is gone; ensure the sandbox again",
        libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
            "the kernel lacks support; load the module (modprobe vxlan / veth / bridge)"
        }
        libc::EINVAL | libc::ERANGE => "the kernel rejected a parameter (MTU, name, address)",
        libc::EBUSY => "the device is in use; retry after the other user lets go",
        libc::ENOBUFS | libc::ENOMEM => "the kernel is out of memory or buffer space; retry",
        _ => "see the errno; the kernel state was left as it was",
    };
    let mut context = what;
    context.push_str(" in ");
    context.push_str(ns);
    Error::new(Error::kind_for_errno(errno), op, context)
        .with_errno(errno)
        .with_source(e)
        .with_hint(hint)
}

/// Collects failures of a teardown that keeps going, and reports them all at the end.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    errors: Vec<Error>,
}

impl Failures {
    pub(crate) fn record(&mut self, r: crate::error::Result<()>) {
        if let Err(e) = r {
            self.errors.push(e);
        }
    }

    /// `Ok` when nothing failed; otherwise one error of the first failure's kind listing every
    /// failure in order.
    pub(crate) fn finish(self, op: &'static str) -> crate::error::Result<()> {
        let mut errors = self.errors;
        if errors.is_empty() {
            return Ok(());
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        let first = &errors[0];
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let mut e = Error::new(
            first.kind(),
            op,
            format!("{} steps failed: {}", errors.len(), all.join("; ")),
        )
        .with_hint(first.hint().to_string());
        if let Some(errno) = first.errno() {
            e = e.with_errno(errno);
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_kind_with_hint() {
        let e = nl_failure(
            NlError::Errno(libc::EEXIST),
            "add link",
            "vxlan0".into(),
            "ns1",
        );
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(e.to_string().contains("vxlan0 in ns1"), "{e}");
        let e = nl_failure(NlError::Errno(libc::EBUSY), "add link", "x".into(), "ns1");
        assert_eq!(e.kind(), ErrorKind::Kernel);
        let e = nl_failure(NlError::Closed, "add link", "x".into(), "ns1");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn failures_are_all_reported() {
        let mut f = Failures::default();
        f.record(Ok(()));
        assert!(Failures::default().finish("teardown").is_ok());
        f.record(Err(Error::new(ErrorKind::Kernel, "a", "first")));
        f.record(Err(Error::new(ErrorKind::NotFound, "b", "second")));
        let e = f.finish("teardown").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Kernel);
        assert!(
            e.context().contains("first") && e.context().contains("second"),
            "{e}"
        );
    }
}

//! Why a command failed, and the exit code that says so: 2 for bad input (flags, URLs, names,
//! addresses: the library's InvalidArgument), 100 plus the kind's number for the library's
//! other kinds (101 not found, 102 already exists, 103 conflict, 105 unavailable, 106 timeout,
//! 107 permission denied, 108 unsupported, 109 kernel, 110 internal: the CNI plugin's codes
//! too), 1 for a failure of the command itself. Messages are one line with a hint, as the
//! library's are.

use std::fmt;

use overlay_core::rpc::WireError;
use overlay_core::{Error, ErrorKind};

/// Exit code of a failed command whose failure has no kind of the library's.
pub(crate) const FAILED: u8 = 1;
/// Exit code of a usage error.
pub(crate) const USAGE: u8 = 2;

/// A failed command: its exit code and one line for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    /// [`FAILED`], [`USAGE`] or [`for_kind`]'s code.
    pub(crate) code: u8,
    message: String,
}

impl Failure {
    /// Bad input: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A failure of one of the library's kinds, with that kind's exit code.
    pub(crate) fn of_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            code: for_kind(kind),
            message: message.into(),
        }
    }

    /// Anything else: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever a server or a source error put in the text.
        f.write_str(&self.message.replace(['\n', '\r'], " "))
    }
}

/// The exit code of a failure of `kind`.
pub(crate) fn for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument => USAGE,
        other => 100 + other.number(),
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: for_kind(e.kind()),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        Failure {
            // A kind this build does not know (a newer agent) is still a failure.
            code: ErrorKind::from_name(&e.kind).map_or(FAILED, for_kind),
            message: e.message,
        }
    }
}

/// What commands return.
pub(crate) type CliResult<T = ()> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_one_line() {
        let e = Error::invalid("create network", "bad\nname").with_hint("fix it");
        let f = Failure::from(e);
        assert_eq!(f.code, USAGE);
        assert!(!f.to_string().contains('\n'));
        assert!(f.to_string().contains("fix it"));
        let f = Failure::from(WireError {
            kind: "not found".into(),
            message: "gone".into(),
            errno: None,
        });
        assert_eq!(f.code, 101);
        let f = Failure::from(Error::new(ErrorKind::Unavailable, "connect", "no store"));
        assert_eq!(f.code, 105);
        let f = Failure::from(WireError {
            kind: "a kind from the future".into(),
            message: "?".into(),
            errno: None,
        });
        assert_eq!(f.code, FAILED);
    }
}

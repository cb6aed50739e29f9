//! Why a command failed, and the exit code that says so: 1 for a failure, 2 for bad input
//! (flags, URLs, names, addresses). Messages are one line with a hint, as the library's are.

use std::fmt;

use overlay_core::rpc::WireError;
use overlay_core::{Error, ErrorKind};

/// Exit code of a failed command.
pub(crate) const FAILED: u8 = 1;
/// Exit code of a usage error.
pub(crate) const USAGE: u8 = 2;

/// A failed command: its exit code and one line for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    /// [`FAILED`] or [`USAGE`].
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

fn code_for(invalid: bool) -> u8 {
    if invalid { USAGE } else { FAILED }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: code_for(e.kind() == ErrorKind::InvalidArgument),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        Failure {
            code: code_for(e.kind == ErrorKind::InvalidArgument.as_str()),
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
        assert_eq!(f.code, FAILED);
    }
}

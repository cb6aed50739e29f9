//! Errors as the engine reads them: `{"Err": "…"}` with an HTTP status, which the docker CLI
//! prints after "Error response from daemon:".

use overlay_core::{Error, ErrorKind};
use serde::Serialize;

/// The body of a failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverError {
    /// The library's kind of the error.
    #[serde(skip)]
    pub kind: ErrorKind,
    /// The HTTP status the error is answered with.
    #[serde(skip)]
    pub status: u16,
    /// Our message, its hint and its kind, in one line.
    #[serde(rename = "Err")]
    pub err: String,
}

/// The HTTP status of an error of `kind`. Never 404: the engine takes a 404 for "this
/// plugin does not implement the call" and ignores it for some calls, so only a call this
/// plugin does not know is answered with it.
pub fn status_for(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::Unsupported => 400,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::AlreadyExists | ErrorKind::Conflict | ErrorKind::NotFound => 409,
        ErrorKind::Unavailable => 503,
        ErrorKind::Timeout => 504,
        _ => 500,
    }
}

impl DriverError {
    /// An error of `kind` saying `msg`, what to do being part of it.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> DriverError {
        DriverError {
            kind,
            status: status_for(kind),
            err: format!("{} [overlay: {}]", msg.into(), kind.as_str()),
        }
    }

    /// A request that does not decode.
    pub fn bad_request(method: &str, e: &serde_json::Error) -> DriverError {
        DriverError::new(
            ErrorKind::InvalidArgument,
            format!(
                "{method}: the request does not decode: {e} (use a Docker engine that speaks \
                 libnetwork's remote driver protocol, 1.12 or later)"
            ),
        )
    }
}

impl From<Error> for DriverError {
    fn from(e: Error) -> DriverError {
        // The library's message already carries the operation and the hint.
        DriverError::new(e.kind(), e.to_string())
    }
}

/// What a handler returns.
pub type DriverResult<T> = std::result::Result<T, DriverError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_message_hint_and_kind() {
        let e = Error::invalid("create network", "subnet 10.0.9.0/24 overlaps 10.0.0.0/16")
            .with_hint("pick another subnet");
        let d = DriverError::from(e);
        assert_eq!(d.status, 400);
        assert!(d.err.contains("overlaps 10.0.0.0/16"), "{}", d.err);
        assert!(d.err.contains("pick another subnet"), "{}", d.err);
        assert!(d.err.ends_with("[overlay: invalid argument]"), "{}", d.err);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"Err": d.err})
        );
        for k in ErrorKind::ALL.iter() {
            assert_ne!(status_for(*k), 404, "{k}");
        }
    }
}

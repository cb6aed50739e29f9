//! CNI error objects: the spec's codes, and the library's error kinds mapped onto them.

use overlay_core::ErrorKind;
use overlay_core::rpc::WireError;
use serde::Serialize;

/// An error code of the CNI specification (1.1.0, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// 2: a field of the configuration is not supported.
    UnsupportedField = 2,
    /// 3: the container is unknown or does not exist.
    UnknownContainer = 3,
    /// 4: a `CNI_*` variable is missing or malformed.
    InvalidEnvironment = 4,
    /// 5: an I/O failure (reading stdin, the agent's socket).
    Io = 5,
    /// 6: the configuration or a reply could not be decoded.
    Decode = 6,
    /// 7: the network configuration is invalid.
    InvalidConfig = 7,
    /// 11: try again later (the store or the agent cannot be reached now).
    TryAgainLater = 11,
    /// 50: STATUS: the plugin cannot serve ADDs now.
    NotAvailable = 50,
}

/// The code of an error of the library's `kind`: the spec's own where one means the same
/// (bad config 7, unknown container 3, try again later 11, unsupported field 2), else 100
/// plus the kind's C status code (already exists 102, conflict 103, permission denied 107,
/// kernel 109, internal 110), so that every kind stays distinct in CNI too.
pub fn code_for(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidConfig as u32,
        ErrorKind::NotFound => Code::UnknownContainer as u32,
        ErrorKind::Unavailable | ErrorKind::Timeout => Code::TryAgainLater as u32,
        ErrorKind::Unsupported => Code::UnsupportedField as u32,
        other => 100 + u32::from(other.number()),
    }
}

/// The error object a plugin prints on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The version of the configuration that was being handled.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The spec's code.
    pub code: u32,
    /// What went wrong.
    pub msg: String,
    /// What to do about it, and the library's own error kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code`, for a configuration of `version`.
    pub fn new(
        version: &str,
        code: Code,
        msg: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        CniError {
            cni_version: version.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The library's error as CNI reports it: the message, its hint and kind in `details`.
    pub fn from_core(version: &str, e: &overlay_core::Error) -> Self {
        CniError {
            cni_version: version.to_string(),
            code: code_for(e.kind()),
            msg: e.to_string(),
            details: format!("{} (overlay error kind: {})", e.hint(), e.kind().as_str()),
        }
    }

    /// An error the host's agent answered with: its kind (as `ErrorKind::as_str` words it)
    /// decides the code; its message, which carries its hint, is the message.
    pub fn from_wire(version: &str, e: &WireError) -> Self {
        let kind = ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == e.kind)
            .unwrap_or(ErrorKind::Internal);
        CniError {
            cni_version: version.to_string(),
            code: code_for(kind),
            msg: e.message.clone(),
            details: format!("overlay error kind: {}", kind.as_str()),
        }
    }

    /// The exit status a plugin ends with after printing this error: non-zero, as the spec
    /// asks, and the same for every code so that runtimes read the code from the JSON.
    pub fn exit_status(&self) -> u8 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_onto_the_spec_codes() {
        let bad = overlay_core::Error::invalid("connect", "no such thing").with_hint("fix it");
        let e = CniError::from_core("1.0.0", &bad);
        assert_eq!(e.code, 7);
        assert!(e.details.starts_with("fix it "), "{}", e.details);
        assert!(e.details.contains("invalid argument"), "{}", e.details);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["cniVersion"], "1.0.0");
        assert_eq!(json["code"], 7);
        let down = overlay_core::Error::new(ErrorKind::Unavailable, "connect", "store down");
        assert_eq!(CniError::from_core("1.0.0", &down).code, 11);
        let taken = overlay_core::Error::new(ErrorKind::AlreadyExists, "connect", "eth0 exists");
        assert_eq!(CniError::from_core("1.0.0", &taken).code, 102);
        let wire = WireError::from(&taken);
        let e = CniError::from_wire("1.1.0", &wire);
        assert_eq!((e.code, e.msg.as_str()), (102, wire.message.as_str()));
        let odd = WireError {
            kind: "from the future".into(),
            message: "m".into(),
            errno: None,
        };
        assert_eq!(CniError::from_wire("1.1.0", &odd).code, 110);
    }
}

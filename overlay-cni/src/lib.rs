//! `overlay-cni`, the CNI plugin that gives container runtimes (Podman, containerd, CRI-O,
//! Nomad, Kubernetes) overlay networks: what a runtime hands a plugin (the `CNI_*`
//! environment and the network configuration on stdin), what the plugin answers (a result or
//! an error object), as the CNI specification 1.1.0 words them, with configurations of 0.4.0
//! and 1.0.0 accepted too, and each operation carried out through the host's agent over its
//! socket, one request per ADD.
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "my-net", "type": "overlay-cni",
//!  "capabilities": {"aliases": true, "portMappings": true},
//!  "socket": "/run/overlay/agent.sock",
//!  "create": {"subnet": "10.0.9.0/24", "vni": 4242}}
//! ```

pub mod check;
pub mod client;
pub mod env;
pub mod error;
pub mod netconf;
pub mod plugin;
pub mod result;

/// The versions this plugin speaks, oldest first; VERSION answers with all of them.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The version of the results and errors this plugin makes when the configuration names none.
pub const CURRENT_VERSION: &str = "1.1.0";

/// VERSION's answer: the version of the config that asked (or ours) and every supported one.
pub fn version_reply(config_version: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": config_version.unwrap_or(CURRENT_VERSION),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_every_supported_version() {
        let v = version_reply(None);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(version_reply(Some("0.4.0"))["cniVersion"], "0.4.0");
    }
}

//! Each call of the protocol, by name, onto its handler: the network protocol's in
//! `network.rs`, the IPAM protocol's in `ipam.rs`, the answers the driver gives without a
//! handler here.

use std::sync::Arc;

use overlay_core::ErrorKind;
use serde_json::{Value, json};

use super::Plugin;
use crate::error::{DriverError, DriverResult};
use crate::options::ADDRESS_SPACE;
use crate::protocol::*;

impl Plugin {
    /// Carries out `method` (`NetworkDriver.Join`) with `body`; the answer's JSON.
    pub async fn call(self: &Arc<Self>, method: &str, body: &[u8]) -> DriverResult<Value> {
        fn decode<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> DriverResult<T> {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body).map_err(|e| DriverError::bad_request(method, &e))
        }
        let v = |r: DriverResult<()>| r.map(|()| json!({}));
        match method {
            "Plugin.Activate" => Ok(json!(Activate {
                implements: vec!["NetworkDriver", "IpamDriver"],
            })),
            "NetworkDriver.GetCapabilities" => Ok(json!(Capabilities {
                scope: self.scope().await?.as_str(),
                connectivity_scope: "global",
            })),
            "NetworkDriver.CreateNetwork" => v(self.create_network(decode(method, body)?).await),
            "NetworkDriver.DeleteNetwork" => v(self.delete_network(decode(method, body)?).await),
            "NetworkDriver.CreateEndpoint" => self
                .create_endpoint(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "NetworkDriver.EndpointOperInfo" => self
                .oper_info(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "NetworkDriver.DeleteEndpoint" => v(self.delete_endpoint(decode(method, body)?).await),
            "NetworkDriver.Join" => self.join(decode(method, body)?).await.map(|r| json!(r)),
            // Docker moves the interface back out and the endpoint's deletion removes it.
            "NetworkDriver.Leave"
            // Hosts come from the cluster store, not from the engine's discovery.
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            // The engine's gateway network (docker_gwbridge) publishes ports: Join names
            // no gateway, so these reach this driver only for no endpoint of its own.
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
            "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
                Err(DriverError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{method}: swarm mode's network allocation is not supported (use the \
                         driver outside swarm, with or without a cluster store)"
                    ),
                ))
            }
            "IpamDriver.GetCapabilities" => Ok(json!(IpamCapabilities {
                requires_mac_address: true,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!(AddressSpaces {
                local_default_address_space: ADDRESS_SPACE,
                global_default_address_space: ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self
                .request_pool(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            // The pools go with the network (DeleteNetwork).
            "IpamDriver.ReleasePool" => decode::<ReleasePool>(method, body).map(|_| json!({})),
            "IpamDriver.RequestAddress" => self
                .request_address(decode(method, body)?)
                .await
                .map(|r| json!(r)),
            "IpamDriver.ReleaseAddress" => v(self.release_address(decode(method, body)?).await),
            // 404: how the engine learns that a plugin lacks a call it may do without.
            other => Err(DriverError {
                status: 404,
                ..DriverError::new(
                    ErrorKind::Unsupported,
                    format!("{other}: not a call of Docker's network or IPAM driver protocol"),
                )
            }),
        }
    }
}

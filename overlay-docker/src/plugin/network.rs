//! libnetwork's network protocol: networks bound to the cluster network of their name,
//! endpoints handed off to the engine, named after their containers from the engine's events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use overlay_core::{Error, ErrorKind, HandoffSpec};
use tokio::sync::watch;

use super::{Binding, OWNER, Plugin, parse_mac};
use crate::error::{DriverError, DriverResult};
use crate::options::{address, network_options};
use crate::protocol::*;

impl Plugin {
    pub(super) async fn create_network(self: &Arc<Self>, req: CreateNetwork) -> DriverResult<()> {
        let ranges = self.state().ranges.clone();
        let opts = network_options(&req, &ranges)?;
        let (tx, rx) = watch::channel(None);
        let pools: Vec<IpNet> = opts.subnets.iter().map(|s| s.subnet).collect();
        {
            let mut st = self.state();
            for p in &pools {
                st.ranges.remove(p);
            }
            st.bindings.insert(
                req.network_id.clone(),
                Binding::Making {
                    pools: pools.clone(),
                    done: rx,
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            let id = req.network_id;
            let outcome = this.make_network(&id, &opts).await;
            match &outcome {
                Ok(name) => {
                    tracing::info!(network = %name, engine_id = %id, "docker network bound")
                }
                Err(e) => {
                    tracing::warn!(engine_id = %id, error = %e.err, "docker network could not be made")
                }
            }
            let binding = match &outcome {
                Ok(name) => Binding::Bound(name.clone()),
                // Every later call on it says why, until the engine removes it.
                Err(e) => Binding::Failed {
                    pools,
                    error: e.clone(),
                },
            };
            this.state().bindings.insert(id.clone(), binding);
            this.save_bindings();
            let _ = tx.send(Some(outcome));
        });
        Ok(())
    }

    pub(super) async fn delete_network(&self, req: NetworkRef) -> DriverResult<()> {
        {
            let mut st = self.state();
            if let Some(Binding::Failed { .. }) = st.bindings.get(&req.network_id) {
                st.bindings.remove(&req.network_id);
                return Ok(());
            }
        }
        let name = match self.network_of(&req.network_id).await {
            Ok(n) => n,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        {
            let mut st = self.state();
            st.bindings.remove(&req.network_id);
            st.pools.retain(|_, n| *n != name);
        }
        self.save_bindings();
        match self.ctl.remove_network(&name).await {
            Ok(()) => Ok(()),
            // Gone already, or (local scope) still used by another host's containers: it
            // stays for them, and goes with the last engine's removal.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                tracing::info!(network = %name, reason = %e, "cluster network kept");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn create_endpoint(
        &self,
        req: CreateEndpoint,
    ) -> DriverResult<CreateEndpointReply> {
        let name = self.network_of(&req.network_id).await?;
        let iface = req.interface.unwrap_or_default();
        let ip = |text: &str| match text {
            "" => Ok(None),
            t => address(t).map(Some),
        };
        let (ipv4, ipv6) = (ip(&iface.address)?, ip(&iface.address_ipv6)?);
        let mac = match iface.mac_address.as_str() {
            "" => None,
            m => Some(parse_mac(m).ok_or_else(|| {
                DriverError::from(Error::invalid(
                    "create endpoint",
                    format!("{m:?} is not a MAC"),
                ))
            })?),
        };
        // The engine tells no driver the container's name: the endpoint is known by its engine
        // id until `docker network inspect` shows it (see docs/docker.md).
        let ep_name = format!("ep-{}", &req.endpoint_id[..req.endpoint_id.len().min(12)]);
        let spec = HandoffSpec::new(req.endpoint_id.clone(), ep_name)
            .ipv4(ipv4.and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }))
            .ipv6(ipv6.and_then(|a| match a {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }))
            .mac(mac)
            .owner(OWNER);
        let made = self.ctl.connect_handoff(&name, &spec).await?;
        self.state()
            .waiting
            .insert(req.endpoint_id, made.ifname.clone());
        Ok(CreateEndpointReply {
            interface: mac.is_none().then(|| EndpointInterface {
                mac_address: made.mac.to_string(),
                ..Default::default()
            }),
        })
    }

    pub(super) async fn join(&self, req: Join) -> DriverResult<JoinReply> {
        let known = self.state().waiting.get(&req.endpoint_id).cloned();
        let ifname = match known {
            Some(n) => n,
            None => {
                let name = self.network_of(&req.network_id).await?;
                self.ctl
                    .attachments(Some(&name))
                    .await?
                    .into_iter()
                    .find(|a| a.container_id == req.endpoint_id)
                    .map(|a| a.ifname)
                    .ok_or_else(|| {
                        DriverError::from(Error::new(
                            ErrorKind::NotFound,
                            "join",
                            format!("endpoint {} was not created on this host", req.endpoint_id),
                        ))
                    })?
            }
        };
        Ok(JoinReply {
            interface_name: InterfaceName {
                src_name: ifname,
                dst_prefix: "eth",
            },
            disable_gateway_service: false,
        })
    }

    /// Names this driver's endpoints after their containers, as the engine connects them:
    /// the protocol tells a driver neither the container's name nor its aliases, and the
    /// engine's `network connect` event, right after the join, names the container. Runs
    /// until the task is dropped, following the engine again after it restarts.
    pub fn follow_engine(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match this.engine.connect_events().await {
                    Ok(mut events) => {
                        pause = Duration::from_millis(100);
                        while let Some(ev) = events.next().await {
                            if ev.driver == this.driver {
                                this.name_endpoint(&ev).await;
                            }
                        }
                        tracing::info!(engine = %this.engine.socket().display(), "the engine's event stream ended; following it again");
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot follow the engine's events yet"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// Gives the endpoint of connection `ev` its container's name and aliases.
    pub(super) async fn name_endpoint(&self, ev: &crate::engine::Connect) {
        let attached = match self.engine.attached(&ev.container_id, &ev.network_id).await {
            Ok(Some(a)) => a,
            // Gone again already.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(container = %ev.container_id, error = %e, "cannot ask the engine for the container's name");
                return;
            }
        };
        let outcome = match self.network_of(&ev.network_id).await {
            Ok(cluster) => self
                .ctl
                .rename(
                    &cluster,
                    &attached.endpoint_id,
                    &attached.name,
                    &attached.aliases,
                )
                .await
                .map_err(DriverError::from),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(container = %attached.name, aliases = ?attached.aliases, "endpoint named")
            }
            Err(e) => {
                tracing::warn!(container = %attached.name, error = %e.err, "the endpoint keeps its engine id as its name")
            }
        }
    }

    pub(super) async fn oper_info(&self, req: EndpointRef) -> DriverResult<OperInfo> {
        let name = self.network_of(&req.network_id).await?;
        let mut value = BTreeMap::new();
        value.insert("network".to_string(), name.clone());
        if let Some(a) = self
            .ctl
            .attachments(Some(&name))
            .await?
            .into_iter()
            .find(|a| a.container_id == req.endpoint_id)
        {
            value.insert("endpoint_id".into(), a.endpoint_id.to_string());
            value.insert("host".into(), self.ctl.host_id().to_string());
            value.insert("vtep".into(), self.ctl.advertise().to_string());
        }
        Ok(OperInfo { value })
    }

    pub(super) async fn delete_endpoint(&self, req: EndpointRef) -> DriverResult<()> {
        self.state().waiting.remove(&req.endpoint_id);
        let name = match self.network_of(&req.network_id).await {
            Ok(n) => n,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.ctl.disconnect(&name, &req.endpoint_id).await {
            Ok(()) => Ok(()),
            // Never made, or already gone: deleting is idempotent.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

//! The host agent: one per host, a tokio task inside the embedding process. It registers the
//! host, watches the endpoints of networks with local endpoints, programs and removes peers,
//! resyncs against kernel state, forgets dead hosts, and keeps hosts files current.

pub mod hosts;
pub mod view;

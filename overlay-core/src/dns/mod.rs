//! The host's embedded resolver: `name`, `name.network` and aliases of the containers on the
//! networks the asking container joined, answered at each network's gateway address inside its
//! sandbox, and every other name forwarded to the host's own resolvers.
//!
//! Docker 1.10 left the seed's rewritten `/etc/hosts` for a resolver at 127.0.0.11, reached
//! through NAT rules inside every container. Here each network's sandbox bridge holds the
//! network's gateway address and one socket pair listens on it, so a host pays one socket pair
//! per network, not per container, and nothing is programmed inside the containers. The
//! asking container is known by the address a query comes from and the network it arrives on,
//! never by anything in the query; a query from an address no local container holds is
//! refused.
//!
//! Names are served from one immutable directory (`names::Directory`) swapped whole when a view changes:
//! an update never reloads a socket (aardvark-dns#389 dropped queries on each reload), and a
//! container that goes stops resolving with the next query (TTL 0).

pub(crate) mod names;
pub(crate) mod resolv;
pub(crate) mod server;
pub(crate) mod upstream;

/// The port the resolver answers on.
pub(crate) const PORT: u16 = 53;

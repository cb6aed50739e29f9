//! The command line as clap types: the one definition that parsing, `--help`, shell
//! completions and the man pages all come from.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

/// Docker-1.9-style multi-host overlay networks: the host agent and the network commands.
#[derive(Debug, Parser)]
#[command(
    name = "overlayctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Settings come from flags, then OVERLAY_* variables, then the config \
file (/etc/overlay/config.toml), then defaults.\nExit codes: 0 ok, 2 usage error, 100 + the \
error kind's number for the library's errors (101 not found, 102 already exists, 103 conflict, \
105 unavailable, 106 timeout, 107 permission denied, 108 unsupported, 109 kernel, 110 internal), \
1 any other failure (`agent status`: unhealthy)."
)]
pub(crate) struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Settings shared by every command; unset ones come from the config file or the defaults.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Cluster store URL: etcd://HOST:PORT[/PREFIX], zk://…, consul://…, file:///PATH
    /// [default: file:///var/lib/overlay/store.db]
    #[arg(long, global = true, env = "OVERLAY_CLUSTER_STORE", value_name = "URL")]
    pub(crate) cluster_store: Option<String>,
    /// Address other hosts send VXLAN traffic to: an IP or an interface name, optionally
    /// with :PORT (needed by `agent`)
    #[arg(
        long,
        global = true,
        env = "OVERLAY_CLUSTER_ADVERTISE",
        value_name = "IP|IFACE[:PORT]"
    )]
    pub(crate) cluster_advertise: Option<String>,
    /// Config file (TOML) [default: /etc/overlay/config.toml, if present]
    #[arg(long, global = true, env = "OVERLAY_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The local agent's unix socket [default: /run/overlay/agent.sock]
    #[arg(long, global = true, env = "OVERLAY_SOCKET", value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// This host's id in the cluster (agent) [default: the hostname]
    #[arg(long, global = true, env = "OVERLAY_HOST_ID", value_name = "ID")]
    pub(crate) host_id: Option<String>,
    /// Network namespace acting as this host, e.g. /run/netns/host1 (agent; for simulated
    /// hosts) [default: the agent's own]
    #[arg(long, global = true, env = "OVERLAY_HOST_NETNS", value_name = "PATH")]
    pub(crate) host_netns: Option<PathBuf>,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run this host's agent in the foreground, serving the local socket
    Agent(AgentArgs),
    /// Manage overlay networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Run commands in throwaway containers (named network namespaces)
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory
    Man {
        /// Write overlayctl.1, overlayctl-network.1, … into this directory
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `overlayctl agent`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentArgs {
    /// What to do instead of running the agent
    #[command(subcommand)]
    pub(crate) action: Option<AgentAction>,
    /// MTU of overlay links [default: the underlay MTU minus 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
    pub(crate) mtu: Option<u32>,
    /// Directory of this host's own state: its containers' namespace and hosts file paths,
    /// which never go into the cluster store [default: /run/overlay/HOST_ID-STOREHASH]
    #[arg(long, env = "OVERLAY_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Also be Docker's network and IPAM driver on this socket: the engine finds NAME.sock in
    /// /run/docker/plugins as driver NAME (`docker network create -d ovl --ipam-driver ovl`)
    #[arg(long, value_name = "SOCKET", num_args = 0..=1,
          default_missing_value = "/run/docker/plugins/ovl.sock")]
    pub(crate) docker_plugin: Option<PathBuf>,
    /// The Docker engine's API socket, asked for what its driver calls leave out (network
    /// names, the scope)
    #[arg(
        long,
        value_name = "unix://PATH",
        default_value = "unix:///run/docker.sock",
        env = "DOCKER_HOST",
        requires = "docker_plugin"
    )]
    pub(crate) docker_host: String,
    /// The driver's scope: global for engines sharing a cluster store (--cluster-store,
    /// Docker 20.10 and earlier), local for engines without one; auto asks the engine
    #[arg(long, value_enum, default_value_t = DockerScope::Auto, requires = "docker_plugin")]
    pub(crate) docker_scope: DockerScope,
}

/// `--docker-scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DockerScope {
    /// Global if the engine has a cluster store, else local
    Auto,
    /// One `docker network create` is seen by every engine
    Global,
    /// Each engine creates the network; the name is the cluster network's
    Local,
}

/// `overlayctl agent …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AgentAction {
    /// Ask the running agent how it is: each background task, the store, the last sweep
    /// (exit code 1 when anything is unhealthy)
    Status {
        /// Print the health as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `overlayctl network …`.
#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Create a network; prints its id
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail, as a JSON array
    Inspect {
        /// Network names or ids
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Remove networks
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names or ids
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Connect a container to a network (through the local agent)
    Connect(ConnectArgs),
    /// Disconnect a container from a network (through the local agent)
    Disconnect {
        /// Network name or id
        network: String,
        /// Named namespace NAME, or pid:N
        container: String,
    },
}

/// The only network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Driver {
    /// VXLAN overlay across hosts
    Overlay,
}

/// `network create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Network driver
    #[arg(short, long, value_enum, default_value = "overlay")]
    pub(crate) driver: Driver,
    /// Subnet in CIDR form (repeatable)
    #[arg(long, value_name = "CIDR")]
    pub(crate) subnet: Vec<IpNet>,
    /// Gateway of the subnet that contains it (repeatable)
    #[arg(long, value_name = "IP")]
    pub(crate) gateway: Vec<IpAddr>,
    /// Allocate container addresses only from this range of the subnet that contains it
    #[arg(long, value_name = "CIDR")]
    pub(crate) ip_range: Vec<IpNet>,
    /// Address never handed out, as NAME=IP (repeatable)
    #[arg(long, value_name = "NAME=IP", value_parser = parse_key_value)]
    pub(crate) aux_address: Vec<(String, String)>,
    /// Enable IPv6 (give an IPv6 --subnet)
    #[arg(long)]
    pub(crate) ipv6: bool,
    /// No route out of the overlay
    #[arg(long)]
    pub(crate) internal: bool,
    /// Label as KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) label: Vec<(String, String)>,
    /// Driver option: vni=N or mtu=N (Docker's long keys work too)
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) opt: Vec<(String, String)>,
    /// Network name
    pub(crate) name: String,
}

/// How `network ls` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns
    Table,
    /// One JSON object per line
    Json,
}

/// `network ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Print ids only
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Print full ids
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
}

/// `network connect`.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Static IPv4 address
    #[arg(long, value_name = "IP")]
    pub(crate) ip: Option<std::net::Ipv4Addr>,
    /// Static IPv6 address
    #[arg(long, value_name = "IP")]
    pub(crate) ip6: Option<std::net::Ipv6Addr>,
    /// Further name on this network (repeatable)
    #[arg(long, value_name = "NAME")]
    pub(crate) alias: Vec<String>,
    /// Keep the address reserved for the name after disconnect
    #[arg(long)]
    pub(crate) sticky: bool,
    /// Publish a port on this host: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]` (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub(crate) publish: Vec<overlay_core::model::PortMapping>,
    /// Container name [default: the namespace name, or pid-N]
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Network name or id
    pub(crate) network: String,
    /// Named namespace NAME (/run/netns/NAME), or pid:N
    pub(crate) container: String,
}

/// `overlayctl container …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ContainerCommand {
    /// Create namespace NAME, connect it, run CMD inside, then disconnect and remove it
    Run(RunArgs),
}

/// `container run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Network to connect to
    #[arg(long, value_name = "NETWORK")]
    pub(crate) net: String,
    /// Container name, also the namespace name
    #[arg(long)]
    pub(crate) name: String,
    /// Static IPv4 address
    #[arg(long, value_name = "IP")]
    pub(crate) ip: Option<std::net::Ipv4Addr>,
    /// Further name on the network (repeatable)
    #[arg(long, value_name = "NAME")]
    pub(crate) alias: Vec<String>,
    /// Publish a port on this host: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]` (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub(crate) publish: Vec<overlay_core::model::PortMapping>,
    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The systemd unit the project ships (and `docs/host.md` shows) starts a command this
    /// parses as the agent.
    #[test]
    fn the_shipped_unit_starts_the_agent() {
        let unit = include_str!("../dist/overlay-agent.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("the unit has an ExecStart line");
        let mut words: Vec<&str> = exec.split_whitespace().collect();
        assert!(words[0].ends_with("/overlayctl"), "{exec}");
        words[0] = "overlayctl";
        let cli = Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{exec}: {e}"));
        assert!(
            matches!(&cli.command, Command::Agent(a) if a.action.is_none()),
            "{exec}"
        );
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("x").is_err());
    }
}

//! `overlayctl network …`: create, ls, inspect and rm work on the cluster store directly;
//! connect and disconnect go through the local agent, which owns this host's kernel state.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use overlay_core::rpc::Request;
use overlay_core::{
    ContainerSpec, NetnsRef, NetworkInspect, NetworkOptions, NetworkSummary, Networks,
    SubnetOptions,
};
use overlay_core::{MTU_OPTION, VXLANID_OPTION};

use crate::cli::{ConnectArgs, CreateArgs, Format, LsArgs, NetworkCommand};
use crate::client;
use crate::failure::{CliResult, Failure};
use crate::settings::Settings;

/// Runs one `network` subcommand.
pub(crate) async fn run(settings: &Settings, cmd: NetworkCommand) -> CliResult {
    match cmd {
        NetworkCommand::Create(args) => {
            let opts = network_options(&args)?;
            let net = with_store(settings, |n| async move {
                n.create_network(&args.name, &opts).await
            })
            .await?;
            println!("{}", net.id);
        }
        NetworkCommand::Ls(args) => {
            let rows = with_store(settings, |n| async move { n.networks().await }).await?;
            print!("{}", render_ls(&rows, &args));
        }
        NetworkCommand::Inspect { networks } => {
            let (found, missing) = with_store(settings, |n| async move {
                let mut found: Vec<NetworkInspect> = Vec::new();
                let mut missing = Vec::new();
                for name in &networks {
                    match n.inspect(name).await {
                        Ok(i) => found.push(i),
                        Err(e) => missing.push(e),
                    }
                }
                Ok((found, missing))
            })
            .await?;
            // Like Docker: print what was found, then fail for the rest.
            let text = serde_json::to_string_pretty(&found)
                .map_err(|e| Failure::failed(format!("cannot encode: {e} (a bug)")))?;
            println!("{text}");
            first_error(missing)?;
        }
        NetworkCommand::Rm { networks } => {
            let failures = with_store(settings, |n| async move {
                let mut failures = Vec::new();
                for name in &networks {
                    match n.remove_network(name).await {
                        Ok(_) => println!("{name}"),
                        Err(e) => failures.push(e),
                    }
                }
                Ok(failures)
            })
            .await?;
            first_error(failures)?;
        }
        NetworkCommand::Connect(args) => connect(settings, &args).await?,
        NetworkCommand::Disconnect { network, container } => {
            let target = Target::parse(&container)?;
            client::call(
                &settings.socket,
                &Request::Disconnect {
                    network,
                    container_id: target.id,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Prints every error but the last, and fails with the last.
fn first_error(errors: Vec<overlay_core::Error>) -> CliResult {
    let mut errors = errors.into_iter().peekable();
    while let Some(e) = errors.next() {
        if errors.peek().is_none() {
            return Err(e.into());
        }
        eprintln!("overlayctl: {}", Failure::from(e));
    }
    Ok(())
}

/// Opens the store, runs `f`, closes the store.
async fn with_store<T, F, Fut>(settings: &Settings, f: F) -> CliResult<T>
where
    F: FnOnce(Networks) -> Fut,
    Fut: std::future::Future<Output = overlay_core::Result<T>>,
{
    let networks = Networks::open(&settings.store, None).await?;
    let result = f(networks.clone()).await;
    let _ = networks.close().await;
    Ok(result?)
}

/// `network create`'s flags as the library's options; gateways, ranges and auxiliary
/// addresses go to the subnet that contains them.
fn network_options(args: &CreateArgs) -> CliResult<NetworkOptions> {
    let mut subnets: Vec<SubnetOptions> = args
        .subnet
        .iter()
        .map(|s| SubnetOptions::new(s.trunc()))
        .collect();
    let owner = |subnets: &mut Vec<SubnetOptions>, ip: IpAddr, what: &str| {
        subnets
            .iter_mut()
            .position(|s| s.subnet.contains(&ip))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "network create: {what} {ip} is in no --subnet (give the --subnet it \
                     belongs to)"
                ))
            })
    };
    for gw in &args.gateway {
        let i = owner(&mut subnets, *gw, "--gateway")?;
        if subnets[i].gateway.replace(*gw).is_some() {
            return Err(Failure::usage(format!(
                "network create: two gateways for {} (give one --gateway per subnet)",
                subnets[i].subnet
            )));
        }
    }
    for range in &args.ip_range {
        let i = owner(&mut subnets, range.network(), "--ip-range")?;
        if subnets[i].ip_range.replace(range.trunc()).is_some() {
            return Err(Failure::usage(format!(
                "network create: two ranges for {} (give one --ip-range per subnet)",
                subnets[i].subnet
            )));
        }
    }
    for (name, ip) in &args.aux_address {
        let ip: IpAddr = ip.parse().map_err(|_| {
            Failure::usage(format!(
                "network create: --aux-address {name}={ip}: {ip:?} is not an IP address"
            ))
        })?;
        let i = owner(&mut subnets, ip, "--aux-address")?;
        subnets[i].aux_addresses.insert(name.clone(), ip);
    }
    let mut opts = NetworkOptions::default()
        .ipv6(args.ipv6)
        .internal(args.internal);
    opts.subnets = subnets;
    opts.labels = args.label.iter().cloned().collect();
    for (key, value) in &args.opt {
        let number = || {
            value.parse::<u32>().map_err(|_| {
                Failure::usage(format!(
                    "network create: --opt {key}={value}: {value:?} is not a number"
                ))
            })
        };
        match key.as_str() {
            "vni" | VXLANID_OPTION => opts.vni = Some(number()?),
            "mtu" | MTU_OPTION => opts.mtu = Some(number()?),
            _ => {
                return Err(Failure::usage(format!(
                    "network create: unknown driver option {key:?} (the overlay driver knows \
                     vni=N and mtu=N)"
                )));
            }
        }
    }
    Ok(opts)
}

/// `network ls` output: Docker's table, ids only, or JSON lines.
pub(crate) fn render_ls(rows: &[NetworkSummary], args: &LsArgs) -> String {
    let id = |r: &NetworkSummary| {
        if args.no_trunc {
            r.id.clone()
        } else {
            r.id.chars().take(12).collect()
        }
    };
    let mut out = String::new();
    if args.quiet {
        for r in rows {
            out.push_str(&id(r));
            out.push('\n');
        }
        return out;
    }
    if args.format == Format::Json {
        for r in rows {
            let mut r = r.clone();
            r.id = id(&r);
            out.push_str(&serde_json::to_string(&r).unwrap_or_default());
            out.push('\n');
        }
        return out;
    }
    let table: Vec<[String; 4]> =
        std::iter::once(["NETWORK ID", "NAME", "DRIVER", "SCOPE"].map(String::from))
            .chain(
                rows.iter()
                    .map(|r| [id(r), r.name.clone(), r.driver.clone(), r.scope.clone()]),
            )
            .collect();
    let widths: Vec<usize> = (0..4)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// A container as `network connect|disconnect` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The container id given to the controller: the argument as typed.
    pub(crate) id: String,
    /// The default container name.
    pub(crate) name: String,
    /// Its network namespace.
    pub(crate) netns: NetnsRef,
    /// The hosts file `ip netns exec` uses, for named namespaces.
    pub(crate) hosts_file: Option<PathBuf>,
}

/// Where `ip netns exec NAME` finds the hosts file it bind-mounts over `/etc/hosts`.
pub(crate) fn netns_hosts_file(name: &str) -> PathBuf {
    Path::new("/etc/netns").join(name).join("hosts")
}

/// Where `ip netns exec NAME` finds the namespace's `resolv.conf`.
pub(crate) fn netns_resolv_conf(name: &str) -> PathBuf {
    Path::new("/etc/netns").join(name).join("resolv.conf")
}

impl Target {
    /// Parses `NAME` (a namespace under /run/netns) or `pid:N`.
    pub(crate) fn parse(s: &str) -> CliResult<Target> {
        if let Some(pid) = s.strip_prefix("pid:") {
            let pid: u32 = pid.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                Failure::usage(format!(
                    "container {s:?}: {pid:?} is not a process id (use pid:N)"
                ))
            })?;
            return Ok(Target {
                id: s.to_string(),
                name: format!("pid-{pid}"),
                netns: NetnsRef::Pid(pid),
                hosts_file: None,
            });
        }
        let plain = !s.is_empty()
            && s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !plain {
            return Err(Failure::usage(format!(
                "container {s:?} is neither a namespace name nor pid:N (namespace names are \
                 letters, digits, '_', '-' or '.')"
            )));
        }
        Ok(Target {
            id: s.to_string(),
            name: s.to_string(),
            netns: NetnsRef::Path(overlay_core::dataplane::named_path(s)),
            hosts_file: Some(netns_hosts_file(s)),
        })
    }
}

/// Makes the directory of a hosts file the agent will write.
pub(crate) fn hosts_dir(hosts_file: &Path) -> CliResult {
    let Some(dir) = hosts_file.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::failed(format!(
            "cannot create {}: {e} (run as root)",
            dir.display()
        ))
    })
}

async fn connect(settings: &Settings, args: &ConnectArgs) -> CliResult {
    let target = Target::parse(&args.container)?;
    let path = target.netns.path();
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::failed(format!(
                "container {:?}: {} does not exist (create it with `ip netns add NAME`, or \
                 give pid:N of a running process)",
                args.container,
                path.display()
            )));
        }
        Err(e) => {
            return Err(Failure::failed(format!(
                "container {:?}: cannot use {}: {e} (run as root)",
                args.container,
                path.display()
            )));
        }
    }
    // The agent makes the hosts file's directory (/etc/netns/NAME), and removes it with the
    // container when the namespace goes away.
    let mut spec = ContainerSpec::new(
        target.id,
        args.name.clone().unwrap_or(target.name),
        target.netns,
    )
    .aliases(args.alias.clone())
    .ipv4(args.ip)
    .ipv6(args.ip6)
    .sticky(args.sticky);
    spec.resolv_conf = target
        .hosts_file
        .as_ref()
        .map(|h| h.with_file_name("resolv.conf"));
    spec.hosts_file = target.hosts_file;
    spec.publish = args.publish.clone();
    client::call(
        &settings.socket,
        &Request::Connect {
            network: args.network.clone(),
            container: spec,
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create(args: &[&str]) -> CliResult<NetworkOptions> {
        let cli =
            crate::cli::Cli::try_parse_from(["overlayctl", "network", "create"].iter().chain(args))
                .expect("parses");
        match cli.command {
            crate::cli::Command::Network(NetworkCommand::Create(a)) => network_options(&a),
            _ => unreachable!("network create parses as create"),
        }
    }

    #[test]
    fn create_flags() {
        let o = create(&[
            "--subnet=10.0.9.0/24",
            "--gateway=10.0.9.254",
            "--ip-range=10.0.9.128/25",
            "--aux-address=db=10.0.9.5",
            "--label=a=b",
            "-o",
            "vni=4242",
            "--opt=com.docker.network.driver.mtu=1400",
            "my-net",
        ])
        .unwrap();
        assert_eq!(o.subnets.len(), 1);
        assert_eq!(o.subnets[0].gateway, Some("10.0.9.254".parse().unwrap()));
        assert_eq!(
            o.subnets[0].ip_range,
            Some("10.0.9.128/25".parse().unwrap())
        );
        assert_eq!(
            o.subnets[0].aux_addresses["db"],
            "10.0.9.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!((o.vni, o.mtu), (Some(4242), Some(1400)));
        assert_eq!(o.labels["a"], "b");
        for bad in [
            &["--gateway=10.0.0.1", "n"][..],
            &["--subnet=10.0.9.0/24", "--opt=vni=x", "n"],
            &["--opt=color=red", "n"],
        ] {
            assert_eq!(
                create(bad).unwrap_err().code,
                crate::failure::USAGE,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn targets() {
        let t = Target::parse("zookeeper1").unwrap();
        assert_eq!(t.netns, NetnsRef::Path("/run/netns/zookeeper1".into()));
        assert_eq!(t.hosts_file, Some("/etc/netns/zookeeper1/hosts".into()));
        let t = Target::parse("pid:42").unwrap();
        assert_eq!((t.netns, t.name.as_str()), (NetnsRef::Pid(42), "pid-42"));
        for bad in ["pid:x", "pid:0", "../etc", "", "a b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ls_table() {
        let rows = vec![NetworkSummary {
            id: "a".repeat(64),
            name: "my-net".into(),
            driver: "overlay".into(),
            scope: "global".into(),
        }];
        let args = LsArgs {
            quiet: false,
            no_trunc: false,
            format: Format::Table,
        };
        let text = render_ls(&rows, &args);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NETWORK ID     NAME"), "{text}");
        assert_eq!(
            lines[1],
            format!("{}   my-net   overlay   global", "a".repeat(12))
        );
        let q = render_ls(
            &rows,
            &LsArgs {
                quiet: true,
                ..args
            },
        );
        assert_eq!(q, format!("{}\n", "a".repeat(12)));
    }
}

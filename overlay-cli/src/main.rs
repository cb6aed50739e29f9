//! `overlayctl`: Docker-1.9-style commands for overlay networks, and the host agent daemon.
//!
//! ```sh
//! overlayctl --cluster-store etcd://10.0.0.1:2379 --cluster-advertise eth0 agent &
//! overlayctl --cluster-store etcd://10.0.0.1:2379 network create --subnet 10.0.9.0/24 my-net
//! overlayctl container run --net my-net --name zookeeper1 -- sleep infinity
//! ```
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (bad flags, URLs, names or addresses).

mod agent;
mod cli;
mod client;
mod container;
mod docs;
mod failure;
mod network;
mod settings;
mod status;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{AgentAction, Cli, Command, ContainerCommand};
use crate::failure::CliResult;
use crate::settings::Settings;

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> CliResult<u8> {
    match cli.command {
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref())?,
        Command::Agent(args) => {
            let settings = Settings::resolve(&cli.global)?;
            match &args.action {
                Some(AgentAction::Status { json }) => return status::run(&settings, *json).await,
                None => agent::run(&settings, &args).await?,
            }
        }
        Command::Network(cmd) => {
            let settings = Settings::resolve(&cli.global)?;
            network::run(&settings, cmd).await?;
        }
        Command::Container(ContainerCommand::Run(args)) => {
            let settings = Settings::resolve(&cli.global)?;
            return container::run(&settings, args).await;
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version exit 0, usage errors 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(failure::USAGE));
        }
    };
    init_logging(if matches!(cli.command, Command::Agent(_)) {
        // hickory-server logs every query it answers at info.
        "info,hickory_server=warn"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("overlayctl: cannot start the async runtime: {e} (out of resources?)");
            return ExitCode::from(failure::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("overlayctl: {f}");
            ExitCode::from(f.code)
        }
    }
}

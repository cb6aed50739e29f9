//! `overlayctl agent`: this host's controller plus the local API on a unix socket.
//!
//! The socket speaks `overlay_core::rpc`: a client writes one JSON request per
//! line and reads one JSON response line per request, in order; a connection may carry any
//! number of requests. The socket is created with mode 0600 (root only). SIGTERM or SIGINT
//! stops accepting, lets requests in flight finish, removes the socket and closes the
//! controller: kernel state stays, so connected containers keep talking and a restarted agent
//! takes them over.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use overlay_core::{Controller, ControllerOptions};
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use overlay_docker::{Engine, Plugin, Scope, ScopeSetting};

use crate::cli::{AgentArgs, DockerScope};
use crate::failure::{CliResult, Failure};
use crate::settings::Settings;

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT.
pub(crate) async fn run(settings: &Settings, args: &AgentArgs) -> CliResult {
    let Some(advertise) = settings.advertise.clone() else {
        return Err(Failure::usage(
            "agent: no advertise address (pass --cluster-advertise IP|IFACE, set \
             OVERLAY_CLUSTER_ADVERTISE, or put cluster-advertise in the config file)",
        ));
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| signal_failure(&e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| signal_failure(&e))?;
    let socket = settings.socket.clone();
    prepare_socket_path(&socket).await?;
    let mut opts = ControllerOptions::new(settings.store.clone()).advertise(advertise);
    opts.host_id = settings.host_id.clone();
    opts.host_netns = settings.host_netns.clone();
    opts.mtu = args.mtu;
    opts.state_dir = args.state_dir.clone();
    let ctl = Controller::open(opts).await?;
    let listener = match bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = ctl.close().await;
            return Err(e);
        }
    };
    let docker = match docker_plugin(&ctl, args).await {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            let _ = ctl.close().await;
            return Err(e);
        }
    };
    tracing::info!(host = %ctl.host_id(), advertise = %ctl.advertise(),
        socket = %socket.display(), store = %settings.store, "agent ready");
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tasks.spawn(serve(ctl.clone(), stream)); }
                Err(e) => tracing::warn!(error = %e, "accept on the agent socket failed"),
            },
            Some(()) = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            Some(()) = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    if let Some((task, path)) = docker {
        task.abort();
        let _ = std::fs::remove_file(&path);
    }
    if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; abandoning them");
    }
    ctl.close().await?;
    tracing::info!("agent stopped; connected containers keep their network");
    Ok(())
}

/// The Docker driver, if asked for: its socket bound and served by a task of its own.
async fn docker_plugin(
    ctl: &Controller,
    args: &AgentArgs,
) -> CliResult<Option<(tokio::task::JoinHandle<()>, std::path::PathBuf)>> {
    let Some(path) = &args.docker_plugin else {
        return Ok(None);
    };
    let engine_socket = args.docker_host.strip_prefix("unix://").ok_or_else(|| {
        Failure::usage(format!(
            "agent: --docker-host {} is not a unix socket (give unix:///PATH)",
            args.docker_host
        ))
    })?;
    prepare_socket_path(path).await?;
    let listener = bind(path)?;
    let scope = match args.docker_scope {
        DockerScope::Auto => ScopeSetting::Auto,
        DockerScope::Global => ScopeSetting::Fixed(Scope::Global),
        DockerScope::Local => ScopeSetting::Fixed(Scope::Local),
    };
    // The engine knows a plugin by its socket's name.
    let driver = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let plugin = Plugin::new(
        ctl.clone(),
        Engine::new(std::path::Path::new(engine_socket)),
        &driver,
        scope,
    );
    tracing::info!(socket = %path.display(), %driver, engine = engine_socket, "docker driver ready");
    let naming = plugin.follow_engine();
    let serving = overlay_docker::server::serve(plugin, listener);
    let task = tokio::spawn(async move {
        serving.await;
        naming.abort();
    });
    Ok(Some((task, path.clone())))
}

fn signal_failure(e: &std::io::Error) -> Failure {
    Failure::failed(format!(
        "agent: cannot install signal handlers: {e} (a bug)"
    ))
}

/// Makes the socket's directory and clears a stale socket, refusing to start when another
/// agent answers on it.
async fn prepare_socket_path(socket: &Path) -> CliResult {
    if UnixStream::connect(socket).await.is_ok() {
        return Err(Failure::failed(format!(
            "agent: another agent already listens on {} (stop it, or pass another --socket)",
            socket.display()
        )));
    }
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Failure::failed(format!(
                "agent: cannot remove the stale socket {}: {e} (remove it by hand)",
                socket.display()
            )));
        }
    }
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::failed(format!(
                "agent: cannot create {}: {e} (run as root, or pass --socket in a writable \
                 directory)",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Binds the socket with mode 0600 from the start: the umask keeps it private until the
/// explicit chmod, so no one connects in between.
fn bind(socket: &Path) -> CliResult<UnixListener> {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    umask(old);
    let failed = |e: std::io::Error| {
        Failure::failed(format!(
            "agent: cannot listen on {}: {e} (pass --socket in a writable directory)",
            socket.display()
        ))
    };
    let listener = bound.map_err(failed)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}

/// Answers the requests of one connection, in order, until the client hangs up.
async fn serve(ctl: Controller, stream: UnixStream) {
    let (read, write) = stream.into_split();
    if let Err(e) = ctl.serve_lines(BufReader::new(read), write).await {
        tracing::debug!(error = %e, "agent socket client went away");
    }
}

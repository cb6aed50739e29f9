//! The command line's conventions, without root or servers: exit codes (0 ok, 1 failure,
//! 2 usage), one-line errors with a hint, settings precedence, help, version, completions and
//! man pages.

mod support;

use std::path::Path;

use support::{Output, output, overlayctl};

async fn run(config: &Path, args: &[&str]) -> Output {
    let mut cmd = overlayctl(config);
    cmd.args(args);
    output(cmd).await
}

fn one_line(out: &Output) -> &str {
    let text = out.stderr.trim_end();
    assert_eq!(text.lines().count(), 1, "one line on stderr: {text:?}");
    text
}

fn empty_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    (dir, path)
}

#[tokio::test]
async fn bad_flags_are_usage_errors() {
    let (_dir, config) = empty_config();
    for args in [
        &["--bogus", "network", "ls"][..],
        &["network", "frobnicate"],
        &["network", "create", "--driver", "bridge", "x"],
        &["network", "create", "--subnet", "10.0.0.0/33", "x"],
        &["network", "create"],
        &["network", "inspect"],
        &["container", "run", "--net", "my-net", "--name", "x"],
        &["agent", "--mtu", "10"],
    ] {
        let out = run(&config, args).await;
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn bad_urls_and_values_are_usage_errors() {
    let (dir, config) = empty_config();
    for (args, needle) in [
        (
            &["--cluster-store", "bogus://x", "network", "ls"][..],
            "bogus://x",
        ),
        (&["--cluster-store", "etcd://", "network", "ls"], "etcd://"),
        (
            &["--cluster-store", "not a url", "network", "ls"],
            "not a url",
        ),
        (
            &["network", "create", "--gateway", "10.0.0.1", "n"],
            "--gateway",
        ),
        (&["network", "create", "-o", "color=red", "n"], "color"),
        (&["network", "connect", "n", "../x"], "../x"),
        (&["network", "connect", "n", "pid:abc"], "pid:abc"),
    ] {
        let out = run(&config, args).await;
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        let line = one_line(&out);
        assert!(line.starts_with("overlayctl: "), "{line}");
        assert!(line.contains(needle), "{args:?}: {line}");
        assert!(line.ends_with(')'), "a hint in parentheses: {line}");
    }
    // The agent needs an advertise address: usage error before touching anything.
    let store = format!("file://{}/store.db", dir.path().display());
    let out = run(&config, &["--cluster-store", &store, "agent"]).await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--cluster-advertise"), "{}", out.stderr);
    assert!(!dir.path().join("store.db").exists(), "nothing was created");
}

#[tokio::test]
async fn connect_without_agent_says_how_to_start_one() {
    let (dir, config) = empty_config();
    let socket = dir.path().join("agent.sock");
    let socket = socket.to_str().unwrap();
    let me = format!("pid:{}", std::process::id());
    for args in [
        &["--socket", socket, "network", "connect", "my-net", &me][..],
        &["--socket", socket, "network", "disconnect", "my-net", &me],
        &[
            "--socket",
            socket,
            "container",
            "run",
            "--net",
            "my-net",
            "--name",
            "x",
            "--",
            "true",
        ],
    ] {
        let out = run(&config, args).await;
        assert_eq!(
            out.code(),
            Some(105),
            "unavailable: {args:?}: {}",
            out.stderr
        );
        let line = one_line(&out);
        assert!(line.contains(&format!("no agent at {socket}")), "{line}");
        assert!(line.contains("start `overlayctl agent`"), "{line}");
    }
}

#[tokio::test]
async fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    // The file names a broken store: used only when neither flag nor env says otherwise.
    std::fs::write(&config, "cluster-store = \"file-store-from-config://\"\n").unwrap();
    let good = format!("file://{}/store.db", dir.path().display());

    let out = run(&config, &["network", "ls"]).await;
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("file-store-from-config"),
        "{}",
        out.stderr
    );

    let mut cmd = overlayctl(&config);
    cmd.env("OVERLAY_CLUSTER_STORE", "env-store://")
        .args(["network", "ls"]);
    let out = output(cmd).await;
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("env-store://"), "{}", out.stderr);

    let mut cmd = overlayctl(&config);
    cmd.env("OVERLAY_CLUSTER_STORE", "env-store://").args([
        "--cluster-store",
        &good,
        "network",
        "ls",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("NETWORK ID"), "{}", out.stdout);

    // The embedded store is enough for the store-only commands.
    let mut create = overlayctl(&config);
    create.args([
        "--cluster-store",
        &good,
        "network",
        "create",
        "--subnet",
        "10.0.9.0/24",
    ]);
    create.arg("my-net");
    let out = output(create).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let out = run(
        &config,
        &[
            "--cluster-store",
            &good,
            "network",
            "inspect",
            "my-net",
            "nope",
        ],
    )
    .await;
    assert_eq!(out.code(), Some(101), "missing network: not found");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON array");
    assert_eq!(doc[0]["Id"], id.as_str());
    assert_eq!(doc[0]["IPAM"]["Config"][0]["Subnet"], "10.0.9.0/24");
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    let out = run(
        &config,
        &["--cluster-store", &good, "network", "create", "my-net"],
    )
    .await;
    assert_eq!(out.code(), Some(102), "duplicate name: {}", out.stderr);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let out = run(
        &config,
        &["--cluster-store", &good, "network", "rm", "my-net"],
    )
    .await;
    assert_eq!((out.code(), out.stdout.trim()), (Some(0), "my-net"));
}

#[tokio::test]
async fn help_version_completions_man() {
    let (dir, config) = empty_config();
    for args in [
        &["--help"][..],
        &["network", "--help"],
        &["network", "create", "--help"],
        &["network", "connect", "--help"],
        &["container", "run", "--help"],
        &["agent", "--help"],
    ] {
        let out = run(&config, args).await;
        assert_eq!(out.code(), Some(0), "{args:?}");
        assert!(
            out.stdout.contains("Usage: overlayctl"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = run(&config, &["--version"]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("overlayctl {}", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&config, &["completions", shell]).await;
        assert_eq!(out.code(), Some(0));
        assert!(
            out.stdout.contains("overlayctl") && out.stdout.contains("inspect"),
            "{shell}"
        );
    }
    let out = run(&config, &["man"]).await;
    assert!(out.stdout.contains(".TH overlayctl"), "{}", out.stdout);
    let pages = dir.path().join("man");
    let out = run(&config, &["man", "--dir", pages.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(pages.join("overlayctl-network-create.1").exists());
}

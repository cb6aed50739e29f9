//! A CNI runner, in the role of upstream's `cnitool` (which Debian does not ship): runs a
//! plugin binary the way a container runtime does, with the `CNI_*` variables set, the
//! configuration on stdin and the result (or error object) parsed from stdout. Network
//! configuration lists run each plugin in turn with the previous result as `prevResult`, and
//! hand each plugin only the runtime capabilities it declares.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};

/// What one invocation is about: the runtime's side of the `CNI_*` variables.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: none for a DEL of a container whose namespace is gone.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, as the runtime writes it (`IgnoreUnknown=1;K8S_POD_NAME=web-0`).
    pub args: String,
}

impl CniEnv {
    /// An invocation for container `id` in namespace `netns`, interface `ifname`.
    pub fn new(id: &str, netns: &Path, ifname: &str) -> CniEnv {
        CniEnv {
            container_id: id.to_string(),
            netns: Some(netns.to_path_buf()),
            ifname: ifname.to_string(),
            args: String::new(),
        }
    }
}

/// How one plugin run ended.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    /// Whether it exited 0.
    pub success: bool,
    /// What it printed on stdout, parsed (`Null` when it printed nothing).
    pub output: Value,
    /// What it printed on stderr.
    pub stderr: String,
}

impl CniOutcome {
    /// The result of a successful run; panics with the error object otherwise.
    pub fn ok(self) -> Value {
        assert!(
            self.success,
            "the plugin failed: {} (stderr: {})",
            self.output, self.stderr
        );
        self.output
    }

    /// The error object of a failed run; panics if it succeeded.
    pub fn err(self) -> Value {
        assert!(!self.success, "the plugin succeeded: {}", self.output);
        self.output
    }

    /// The error code of a failed run.
    pub fn code(self) -> u64 {
        let e = self.err();
        e["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without a code: {e}"))
    }
}

/// Runs plugins found in a list of directories (`CNI_PATH`).
#[derive(Debug, Clone)]
pub struct CniRunner {
    path: Vec<PathBuf>,
    netns: Option<PathBuf>,
}

impl CniRunner {
    /// A runner looking plugins up in `path`, in order.
    pub fn new(path: impl IntoIterator<Item = PathBuf>) -> CniRunner {
        CniRunner {
            path: path.into_iter().collect(),
            netns: None,
        }
    }

    /// This runner, running plugins inside the network namespace at `netns` (a simulated
    /// host), as a runtime on that host would.
    pub fn in_netns(mut self, netns: &Path) -> CniRunner {
        self.netns = Some(netns.to_path_buf());
        self
    }

    fn binary(&self, kind: &str) -> PathBuf {
        self.path
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no plugin {kind:?} in {:?}", self.path))
    }

    /// Runs plugin `config["type"]` with `command` on `config` (one plugin's configuration,
    /// sent as it is).
    pub fn exec(&self, command: &str, config: &Value, env: &CniEnv) -> CniOutcome {
        let kind = config["type"].as_str().expect("the config names its type");
        self.exec_raw(
            &self.binary(kind),
            command,
            config.to_string().as_bytes(),
            env,
        )
    }

    /// Runs the plugin binary at `plugin` with `command` on `stdin` as it is (for configs
    /// that do not parse).
    pub fn exec_raw(&self, plugin: &Path, command: &str, stdin: &[u8], env: &CniEnv) -> CniOutcome {
        let path = std::env::join_paths(&self.path).expect("CNI_PATH");
        let mut cmd = Command::new(plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("CNI_CONTAINERID", env.container_id.as_str()),
            ("CNI_IFNAME", env.ifname.as_str()),
            ("CNI_ARGS", env.args.as_str()),
        ] {
            if !v.is_empty() {
                cmd.env(k, v);
            }
        }
        if let Some(ns) = &env.netns {
            cmd.env("CNI_NETNS", ns);
        }
        // Opened here and kept open until the child has started: it enters it before exec.
        let host = self.netns.as_ref().map(|p| {
            std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        });
        if let Some(f) = &host {
            let fd = std::os::fd::AsRawFd::as_raw_fd(f);
            // SAFETY: only setns, which is async-signal-safe, runs between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", plugin.display()));
        drop(host);
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits before reading all is judged by what it printed.
            let _ = input.write_all(stdin);
        }
        let out = child.wait_with_output().expect("wait for the plugin");
        let text = String::from_utf8_lossy(&out.stdout);
        let output = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text.trim()).unwrap_or_else(|e| {
                panic!("the plugin printed something else than JSON ({e}): {text}")
            })
        };
        CniOutcome {
            success: out.status.success(),
            output,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Plugin `i` of configuration list `list`, as libcni hands it over: with the list's
    /// name and version, the runtime config of the capabilities it declares, and
    /// `prevResult`.
    fn plugin_config(list: &Value, i: usize, runtime: &Value, prev: Option<&Value>) -> Value {
        let mut conf: Map<String, Value> = list["plugins"][i]
            .as_object()
            .cloned()
            .expect("plugins[i] is an object");
        conf.insert("name".into(), list["name"].clone());
        conf.insert("cniVersion".into(), list["cniVersion"].clone());
        let declared = conf
            .get("capabilities")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let given: Map<String, Value> = runtime
            .as_object()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| declared.get(*k) == Some(&json!(true)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !given.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(given));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        Value::Object(conf)
    }

    /// ADD of configuration list `list`: every plugin in order, each given the previous
    /// one's result; the last result, or the first failure.
    pub fn add_list(&self, list: &Value, runtime: &Value, env: &CniEnv) -> Result<Value, Value> {
        let n = list["plugins"].as_array().map_or(0, Vec::len);
        let mut prev: Option<Value> = None;
        for i in 0..n {
            let conf = Self::plugin_config(list, i, runtime, prev.as_ref());
            let out = self.exec("ADD", &conf, env);
            if !out.success {
                return Err(out.output);
            }
            prev = Some(out.output);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK or DEL of configuration list `list` (DEL in reverse order), each plugin given
    /// `prev`, the list's ADD result; the first failure.
    pub fn run_list(
        &self,
        command: &str,
        list: &Value,
        runtime: &Value,
        prev: Option<&Value>,
        env: &CniEnv,
    ) -> Result<(), Value> {
        let n = list["plugins"].as_array().map_or(0, Vec::len);
        let order: Vec<usize> = if command == "DEL" {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        for i in order {
            let conf = Self::plugin_config(list, i, runtime, prev);
            let out = self.exec(command, &conf, env);
            if !out.success {
                return Err(out.output);
            }
        }
        Ok(())
    }
}

//! Kernel state as the system's own tools print it, for test assertions only (the project
//! itself never shells out to them).
//!
//! Every helper here runs its tool in a namespace given by path (`nsenter --net=PATH`, which
//! works for namespaces named in `/run/netns` and for any other), and panics with the command,
//! its exit status and its stderr when the tool fails: an absence ("no such link", "no rule
//! left") is only ever concluded from a successful answer. Stderr is never mixed into what a
//! caller reads: `ip` prints warnings there ("Peer netns reference is invalid.") while it
//! succeeds, and those are not links.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What `tool args` prints on stdout in the network namespace at `netns`. Panics, saying the
/// command and its stderr, when it cannot run or exits non-zero.
pub fn look(netns: &Path, tool: &str, args: &[&str]) -> String {
    match try_look(netns, tool, args) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`look`], with the failure as an error (the command, its status and stderr) for a
/// caller that expects one.
pub fn try_look(netns: &Path, tool: &str, args: &[&str]) -> Result<String, String> {
    let shown = format!(
        "nsenter --net={} {tool} {}",
        netns.display(),
        args.join(" ")
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(tool)
        .args(args)
        .output()
        .map_err(|e| format!("{shown}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{shown}: output is not UTF-8: {e}"))
}

/// `ip -j ARGS` in `netns`, parsed. Panics when `ip` fails or prints something that is not
/// JSON.
pub fn ip_json(netns: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = look(netns, "ip", &all);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "ip {} in {}: not JSON ({e}): {text}",
            all.join(" "),
            netns.display()
        )
    })
}

/// The names of the links in `netns`, from one successful `ip -j link show`.
pub fn links(netns: &Path) -> Vec<String> {
    let doc = ip_json(netns, &["link", "show"]);
    let Some(list) = doc.as_array() else {
        panic!("ip -j link show in {}: not a list: {doc}", netns.display());
    };
    list.iter()
        .map(|l| {
            l["ifname"]
                .as_str()
                .unwrap_or_else(|| panic!("a link without a name: {l}"))
                .to_string()
        })
        .collect()
}

/// The link `name` in `netns` as `ip -j link show` describes it, or `None` when the
/// namespace's successful listing does not have it.
pub fn link(netns: &Path, name: &str) -> Option<Value> {
    let doc = ip_json(netns, &["link", "show"]);
    doc.as_array()
        .unwrap_or_else(|| panic!("ip -j link show in {}: not a list: {doc}", netns.display()))
        .iter()
        .find(|l| l["ifname"] == name)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tool_is_an_error_naming_the_command_and_its_stderr() {
        let e = try_look(Path::new("/nonexistent/ns"), "true", &[]).unwrap_err();
        assert!(
            e.contains("nsenter --net=/nonexistent/ns true") && e.contains("/nonexistent/ns"),
            "{e}"
        );
    }
}

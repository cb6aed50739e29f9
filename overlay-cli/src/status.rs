//! `overlayctl agent status`: the running agent's health, as a table or JSON.

use overlay_core::rpc::Request;
use serde_json::Value;

use crate::client;
use crate::failure::CliResult;
use crate::settings::Settings;

/// Asks the agent at the configured socket; exit code 0 when it is healthy, 1 when not.
pub(crate) async fn run(settings: &Settings, json: bool) -> CliResult<u8> {
    let health = client::call(&settings.socket, &Request::Health {}).await?;
    if json {
        println!("{health}");
    } else {
        print!("{}", render(&health, now_ms()));
    }
    Ok(if health["healthy"].as_bool() == Some(true) {
        0
    } else {
        1
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The health document as a person reads it.
fn render(h: &Value, now_ms: u64) -> String {
    let mut out = String::new();
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    out.push_str(&format!("host        {}\n", text(&h["host"])));
    let store = if h["store_reachable"].as_bool() == Some(true) {
        "reachable".to_string()
    } else {
        format!("UNREACHABLE: {}", text(&h["store_error"]))
    };
    out.push_str(&format!("store       {store}\n"));
    let sweep = match h["last_sweep_ms"].as_u64() {
        Some(ms) => format!("{:.1} s ago", now_ms.saturating_sub(ms) as f64 / 1000.0),
        None => "none yet".to_string(),
    };
    out.push_str(&format!("last sweep  {sweep}\n"));
    let r = &h["store_requests"];
    if r.is_object() {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let kinds = ["get", "list", "txn", "put", "create", "watch"];
        let sent: u64 = r
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "watch_events")
            .filter_map(|(_, v)| v.as_u64())
            .sum();
        let each: Vec<String> = kinds.iter().map(|k| format!("{k} {}", n(k))).collect();
        out.push_str(&format!(
            "requests    {sent} sent ({}, ...), {} watch events\n",
            each.join(", "),
            n("watch_events")
        ));
    }
    out.push_str(&format!(
        "{:<24} {:<11} {:>8}  ERROR\n",
        "TASK", "STATE", "RESTARTS"
    ));
    for t in h["tasks"].as_array().into_iter().flatten() {
        let error = t["error"].as_str().unwrap_or("");
        out.push_str(
            format!(
                "{:<24} {:<11} {:>8}  {error}",
                text(&t["name"]),
                text(&t["state"]),
                t["restarts"].as_u64().unwrap_or(0)
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table() {
        let h = serde_json::json!({
            "host": "host1", "store_reachable": false, "store_error": "cannot reach etcd",
            "last_sweep_ms": 10_000, "healthy": false,
            "store_requests": {"get": 3, "list": 2, "txn": 1, "watch": 2, "watch_events": 9,
                               "put": 0, "create": 0, "put_ephemeral": 1},
            "tasks": [{"name": "hosts", "state": "failing", "restarts": 0, "error": "x"},
                      {"name": "sweep", "state": "running", "restarts": 1}],
        });
        let t = render(&h, 12_500);
        assert!(t.contains("UNREACHABLE: cannot reach etcd"), "{t}");
        assert!(t.contains("2.5 s ago"), "{t}");
        assert!(
            t.contains("requests    9 sent (get 3, list 2, txn 1, put 0, create 0, watch 2, ...), 9 watch events"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("hosts") && l.contains("failing") && l.ends_with('x')),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("sweep") && l.trim_end().ends_with('1')),
            "{t}"
        );
    }
}

//! `top nodes|tasks`: current CPU and memory use, asked of each node on
//! `voiyd.node.<node>.stats`.

use crate::cli::TopArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::table;
use std::collections::BTreeMap;
use std::time::Duration;
use voiyd_messages::v1::{Node, NodeStats, Task};
use voiyd_messages::Resource;

/// Bytes for people: `512Ki`, `12.5Mi`, `1.2Gi`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 3] = [("Gi", 1073741824.0), ("Mi", 1048576.0), ("Ki", 1024.0)];
    for (u, size) in UNITS {
        if n as f64 >= size {
            let v = n as f64 / size;
            return if v >= 100.0 {
                format!("{v:.0}{u}")
            } else {
                format!("{v:.1}{u}")
            };
        }
    }
    format!("{n}")
}

/// Per-mille of capacity as a percentage.
pub fn percent(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        return "-".into();
    }
    format!(
        "{}%",
        (used as f64 * 100.0 / capacity as f64).round() as u64
    )
}

/// `top`.
pub async fn run(globals: &Globals, args: &TopArgs) -> Result<()> {
    let session = connection::session(globals).await?;
    let nats = session.api.nats().clone();
    let timeout = globals.api_timeout.min(Duration::from_secs(5));
    let nodes: Vec<Node> = session.api.list("").await?;
    let names: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.meta().map(|m| m.name.clone()))
        .collect();
    let mut asks = Vec::new();
    for n in &names {
        let (nats, n) = (nats.clone(), n.clone());
        asks.push(tokio::spawn(async move {
            let s = crate::ops::node_stats(&nats, &n, timeout).await;
            (n, s)
        }));
    }
    let mut stats: BTreeMap<String, Option<NodeStats>> = BTreeMap::new();
    for a in asks {
        if let Ok((n, s)) = a.await {
            stats.insert(n, s);
        }
    }
    match args.kind.as_str() {
        "nodes" | "node" | "no" => {
            let rows: Vec<Vec<String>> = stats
                .iter()
                .map(|(n, s)| match s {
                    Some(s) => {
                        let used = s.used.unwrap_or_default();
                        let cap = s.capacity.unwrap_or_default();
                        vec![
                            n.clone(),
                            format!("{}m", used.cpu_millis),
                            percent(used.cpu_millis, cap.cpu_millis),
                            bytes(used.memory_bytes),
                            percent(used.memory_bytes, cap.memory_bytes),
                            s.tasks.len().to_string(),
                        ]
                    }
                    None => vec![
                        n.clone(),
                        "<unknown>".into(),
                        "-".into(),
                        "<unknown>".into(),
                        "-".into(),
                        "-".into(),
                    ],
                })
                .collect();
            if rows.is_empty() {
                eprintln!("No nodes found.");
                return Ok(());
            }
            out!(
                "{}",
                table::render(
                    &["NAME", "CPU", "CPU%", "MEMORY", "MEMORY%", "RUNNING"],
                    &rows
                )
            );
        }
        "tasks" | "task" | "t" => {
            let tasks: Vec<Task> = session
                .api
                .list(args.selector.as_deref().unwrap_or(""))
                .await?;
            let mut rows = Vec::new();
            for t in &tasks {
                let name = t.meta().map(|m| m.name.clone()).unwrap_or_default();
                let node = t
                    .status
                    .as_ref()
                    .map(|s| s.node.clone())
                    .unwrap_or_default();
                let usage = stats
                    .get(&node)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.tasks.iter().find(|u| u.task == name));
                let Some(u) = usage else { continue };
                rows.push(vec![
                    name,
                    node,
                    format!("{}m", u.cpu_millis),
                    bytes(u.memory_bytes),
                    if u.memory_limit > 0 {
                        bytes(u.memory_limit)
                    } else {
                        "-".into()
                    },
                ]);
            }
            if rows.is_empty() {
                eprintln!("No running tasks found.");
                return Ok(());
            }
            out!(
                "{}",
                table::render(&["NAME", "NODE", "CPU", "MEMORY", "LIMIT"], &rows)
            );
        }
        other => {
            return Err(CtlError::Usage(format!(
                "cannot show usage of `{other}`: use `top nodes` or `top tasks`"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(2048), "2.0Ki");
        assert_eq!(bytes(150 * 1048576), "150Mi");
        assert_eq!(percent(500, 2000), "25%");
        assert_eq!(percent(1, 0), "-");
    }
}

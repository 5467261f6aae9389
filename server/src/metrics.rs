//! The server's Prometheus metrics: API requests and latencies (recorded as they are
//! served), placements and events (recorded as they are published), and at scrape time
//! tasks by phase, nodes by phase, node capacity and allocation, and the NATS connection.

use crate::api::Ctx;
use crate::status;
use std::collections::BTreeMap;
use std::time::Duration;
use voiyd_messages::v1::{Node, NodeStatus, Task, TaskStatus};
use voiyd_nats::metrics::{self, MetricType};

/// Records one API request.
pub fn record_request(kind: &str, verb: &str, code: u16, elapsed: Duration) {
    let r = metrics::global();
    let code = code.to_string();
    r.inc(
        "voiyd_api_requests_total",
        "API requests served, by kind, verb and result code",
        &[("kind", kind), ("verb", verb), ("code", &code)],
        1.0,
    );
    r.observe(
        "voiyd_api_request_duration_seconds",
        "Time to serve an API request",
        &[("kind", kind), ("verb", verb)],
        elapsed.as_secs_f64(),
    );
}

/// Records one published event (placements are the `scheduled` events).
pub fn record_event(kind: &str, event_type: &str) {
    let r = metrics::global();
    r.inc(
        "voiyd_events_published_total",
        "Events this server published, by kind and type",
        &[("kind", kind), ("type", event_type)],
        1.0,
    );
    if kind == "task" && event_type == "scheduled" {
        r.inc(
            "voiyd_placements_total",
            "Tasks this server placed on a node",
            &[],
            1.0,
        );
    }
}

/// Counts by a key, for gauges.
pub fn count_by<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in items {
        let k = if i.is_empty() { "Pending" } else { i };
        *m.entry(k.to_string()).or_insert(0) += 1;
    }
    m
}

/// Refreshes the scrape-time gauges from the status bucket.
pub async fn collect(ctx: &Ctx, client: &async_nats::Client) {
    let r = metrics::global();
    metrics::record_nats_state(client);
    const TASKS: &str = "voiyd_tasks";
    const NODES: &str = "voiyd_nodes";
    const CAP_CPU: &str = "voiyd_node_capacity_cpu_millis";
    const CAP_MEM: &str = "voiyd_node_capacity_memory_bytes";
    const ALLOC_CPU: &str = "voiyd_node_allocated_cpu_millis";
    const ALLOC_MEM: &str = "voiyd_node_allocated_memory_bytes";
    let tasks_help = "Tasks by phase";
    let nodes_help = "Nodes by phase";
    if let Ok(statuses) = status::read_all::<Task>(&ctx.status).await {
        r.clear(TASKS, tasks_help, MetricType::Gauge);
        let st: Vec<&TaskStatus> = statuses.values().collect();
        for (phase, n) in count_by(st.iter().map(|s| s.phase.as_str())) {
            r.set(TASKS, tasks_help, &[("phase", &phase)], n as f64);
        }
    }
    for h in [CAP_CPU, CAP_MEM, ALLOC_CPU, ALLOC_MEM] {
        r.clear(h, "Node resources", MetricType::Gauge);
    }
    if let Ok(statuses) = status::read_all::<Node>(&ctx.status).await {
        r.clear(NODES, nodes_help, MetricType::Gauge);
        let st: Vec<(&String, &NodeStatus)> = statuses.iter().collect();
        for (phase, n) in count_by(st.iter().map(|(_, s)| s.phase.as_str())) {
            r.set(NODES, nodes_help, &[("phase", &phase)], n as f64);
        }
    }
    // Capacity and allocation as the scheduler sees them.
    for n in ctx.view.nodes().iter().filter(|n| n.registered) {
        let c = &n.candidate;
        let l = [("node", c.name.as_str())];
        r.set(CAP_CPU, "Node resources", &l, c.capacity.cpu_millis as f64);
        r.set(
            CAP_MEM,
            "Node resources",
            &l,
            c.capacity.memory_bytes as f64,
        );
        r.set(
            ALLOC_CPU,
            "Node resources",
            &l,
            c.allocated.cpu_millis as f64,
        );
        r.set(
            ALLOC_MEM,
            "Node resources",
            &l,
            c.allocated.memory_bytes as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_phases_with_pending_for_empty() {
        let m = count_by(["Running", "", "Running", "Failed"].into_iter());
        assert_eq!(m.get("Running"), Some(&2));
        assert_eq!(m.get("Pending"), Some(&1));
        assert_eq!(m.get("Failed"), Some(&1));
    }
}

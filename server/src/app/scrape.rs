//! Scrape-time gauges: tasks by phase, nodes by phase, node capacity and allocation,
//! and the NATS connection, read when the metrics endpoint is scraped.

use crate::context::Ctx;
use crate::metrics::count_by;
use crate::store::status;
use voiyd_messages::v1::{Node, NodeStatus, Task, TaskStatus};
use voiyd_metrics::{self as metrics, MetricType};

/// Refreshes the scrape-time gauges from the status bucket.
pub async fn collect(ctx: &Ctx, client: &async_nats::Client) {
    let r = metrics::global();
    voiyd_nats::metrics::record_nats_state(client);
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

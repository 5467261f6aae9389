//! Current CPU and memory use of the node's containers, from containerd's Tasks.Metrics
//! (cgroup v1 statistics), for `voiydctl top` (`voiyd.node.<node>.stats`) and the
//! node's `/metrics`.

use crate::containerd::client::Containerd;
use containerd_client::services::v1::MetricsRequest;
use futures::StreamExt;
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use voiyd_messages::v1::{NodeResources, NodeStats, TaskUsage};
use voiyd_metrics as metrics;
use voiyd_nats::names;

/// The part of `io.containerd.cgroups.v1.Metrics` voiyd reads (field numbers from
/// containerd/cgroups `stats/v1/metrics.proto`; other fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CgroupV1Metrics {
    /// CPU.
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<CpuStat>,
    /// Memory.
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStat>,
    /// OOM control.
    #[prost(message, optional, tag = "9")]
    pub memory_oom_control: Option<MemoryOomControl>,
}

/// CPU statistics.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuStat {
    /// Usage.
    #[prost(message, optional, tag = "1")]
    pub usage: Option<CpuUsage>,
}

/// CPU time, nanoseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuUsage {
    /// Total.
    #[prost(uint64, tag = "1")]
    pub total: u64,
}

/// Memory statistics.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryStat {
    /// Page cache (counted in usage, reclaimable).
    #[prost(uint64, tag = "18")]
    pub total_cache: u64,
    /// Resident anonymous memory.
    #[prost(uint64, tag = "19")]
    pub total_rss: u64,
    /// Usage and limit.
    #[prost(message, optional, tag = "33")]
    pub usage: Option<MemoryEntry>,
}

/// One memory counter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryEntry {
    /// Limit in bytes.
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    /// Usage in bytes.
    #[prost(uint64, tag = "2")]
    pub usage: u64,
}

/// OOM control state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryOomControl {
    /// Times the OOM killer killed in this cgroup.
    #[prost(uint64, tag = "3")]
    pub oom_kill: u64,
}

/// One container's sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// CPU nanoseconds so far.
    pub cpu_nanos: u64,
    /// Memory in use (bytes).
    pub memory: u64,
    /// Memory limit (0 = none).
    pub memory_limit: u64,
    /// OOM kills so far.
    pub oom_kills: u64,
}

/// A limit this large means "none" in cgroup v1.
const NO_LIMIT: u64 = 1 << 62;

/// Decodes one containerd metric payload.
pub fn decode(data: &[u8]) -> Option<Sample> {
    let m = CgroupV1Metrics::decode(data).ok()?;
    let mem = m.memory.unwrap_or_default();
    let usage = mem.usage.unwrap_or_default();
    Some(Sample {
        cpu_nanos: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
        memory: usage.usage,
        memory_limit: if usage.limit >= NO_LIMIT {
            0
        } else {
            usage.limit
        },
        oom_kills: m.memory_oom_control.map(|o| o.oom_kill).unwrap_or(0),
    })
}

/// Samples every running task of the namespace.
pub async fn sample(cd: &Containerd) -> Result<BTreeMap<String, Sample>, String> {
    let resp = cd
        .tasks()
        .metrics(cd.request(MetricsRequest { filters: vec![] }))
        .await
        .map_err(|s| format!("containerd metrics: {}", s.message()))?;
    Ok(resp
        .into_inner()
        .metrics
        .into_iter()
        .filter_map(|m| {
            let data = m.data?;
            Some((m.id, decode(&data.value)?))
        })
        .collect())
}

/// CPU used between two samples, thousandths of a core.
pub fn cpu_millis(before: u64, after: u64, elapsed: Duration) -> u64 {
    let ns = elapsed.as_nanos().max(1) as f64;
    ((after.saturating_sub(before)) as f64 / ns * 1000.0).round() as u64
}

/// Usage of the node now: two samples a moment apart give the CPU rate.
pub async fn stats(cd: &Containerd, node: &str, capacity: NodeResources) -> NodeStats {
    let t0 = Instant::now();
    let first = sample(cd).await.unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = sample(cd).await.unwrap_or_default();
    let elapsed = t0.elapsed();
    let mut used = NodeResources::default();
    let tasks: Vec<TaskUsage> = second
        .iter()
        .map(|(task, s)| {
            let before = first.get(task).map(|f| f.cpu_nanos).unwrap_or(s.cpu_nanos);
            let u = TaskUsage {
                task: task.clone(),
                cpu_nanos: s.cpu_nanos,
                cpu_millis: cpu_millis(before, s.cpu_nanos, elapsed),
                memory_bytes: s.memory,
                memory_limit: s.memory_limit,
            };
            used.cpu_millis += u.cpu_millis;
            used.memory_bytes += u.memory_bytes;
            u
        })
        .collect();
    NodeStats {
        node: node.to_string(),
        capacity: Some(capacity),
        used: Some(used),
        tasks,
    }
}

/// Answers `voiyd.node.<node>.stats` until the connection closes.
pub async fn serve(
    client: async_nats::Client,
    node: String,
    cd: Containerd,
    capacity: NodeResources,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client.subscribe(names::node::stats(&node)).await?;
    while let Some(msg) = requests.next().await {
        let (client, node, cd) = (client.clone(), node.clone(), cd.clone());
        tokio::spawn(async move {
            let st = stats(&cd, &node, capacity).await;
            if let Some(r) = msg.reply {
                let _ = client.publish(r, st.encode_to_vec().into()).await;
            }
        });
    }
    Ok(())
}

/// Refreshes the node's scrape-time gauges: container usage and the NATS connection.
pub async fn collect(cd: &Containerd, client: &async_nats::Client) {
    let r = metrics::global();
    voiyd_nats::metrics::record_nats_state(client);
    let samples = sample(cd).await;
    let up = samples.is_ok();
    r.set(
        "voiyd_node_containerd_up",
        "1 when containerd answered the last scrape",
        &[],
        if up { 1.0 } else { 0.0 },
    );
    const CPU: &str = "voiyd_container_cpu_seconds_total";
    const MEM: &str = "voiyd_container_memory_bytes";
    const LIM: &str = "voiyd_container_memory_limit_bytes";
    const OOM: &str = "voiyd_container_oom_kills_total";
    const RUNNING: &str = "voiyd_node_running_containers";
    let (cpu_help, mem_help, lim_help, oom_help) = (
        "CPU time used by a task's container",
        "Memory used by a task's container",
        "Memory limit of a task's container (0 = none)",
        "OOM kills in a task's container",
    );
    r.clear(CPU, cpu_help, metrics::MetricType::Counter);
    r.clear(MEM, mem_help, metrics::MetricType::Gauge);
    r.clear(LIM, lim_help, metrics::MetricType::Gauge);
    r.clear(OOM, oom_help, metrics::MetricType::Counter);
    let samples = samples.unwrap_or_default();
    for (task, s) in &samples {
        let l = [("task", task.as_str())];
        r.inc(CPU, cpu_help, &l, s.cpu_nanos as f64 / 1e9);
        r.set(MEM, mem_help, &l, s.memory as f64);
        r.set(LIM, lim_help, &l, s.memory_limit as f64);
        r.inc(OOM, oom_help, &l, s.oom_kills as f64);
    }
    r.set(
        RUNNING,
        "Containers with a running process",
        &[],
        samples.len() as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cgroup_v1_metrics() {
        let m = CgroupV1Metrics {
            cpu: Some(CpuStat {
                usage: Some(CpuUsage {
                    total: 1_500_000_000,
                }),
            }),
            memory: Some(MemoryStat {
                total_cache: 1,
                total_rss: 2,
                usage: Some(MemoryEntry {
                    limit: u64::MAX - 4095,
                    usage: 4096,
                }),
            }),
            memory_oom_control: Some(MemoryOomControl { oom_kill: 1 }),
        };
        let s = decode(&m.encode_to_vec()).unwrap();
        assert_eq!(
            s,
            Sample {
                cpu_nanos: 1_500_000_000,
                memory: 4096,
                memory_limit: 0,
                oom_kills: 1
            }
        );
        assert_eq!(decode(&[]).unwrap(), Sample::default());
    }

    #[test]
    fn cpu_rate() {
        assert_eq!(cpu_millis(0, 500_000_000, Duration::from_secs(1)), 500);
        assert_eq!(cpu_millis(10, 5, Duration::from_secs(1)), 0);
    }
}

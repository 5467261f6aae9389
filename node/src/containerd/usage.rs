//! Current CPU and memory use of the node's containers, from containerd's Tasks.Metrics
//! (cgroup v1 or v2 statistics, whichever the host runs), for `voiydctl top`
//! (`voiyd.node.<node>.stats`) and the node's `/metrics`.

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

/// The part of `io.containerd.cgroups.v2.Metrics` voiyd reads (field numbers from
/// containerd/cgroups `cgroup2/stats/metrics.proto`; other fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CgroupV2Metrics {
    /// CPU.
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<CpuStatV2>,
    /// Memory.
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStatV2>,
    /// Memory events (`memory.events`).
    #[prost(message, optional, tag = "8")]
    pub memory_events: Option<MemoryEventsV2>,
}

/// CPU statistics (`cpu.stat`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuStatV2 {
    /// CPU time, microseconds.
    #[prost(uint64, tag = "1")]
    pub usage_usec: u64,
}

/// Memory statistics (`memory.current`, `memory.max`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryStatV2 {
    /// Usage in bytes.
    #[prost(uint64, tag = "32")]
    pub usage: u64,
    /// Limit in bytes (`max` is reported as the largest u64).
    #[prost(uint64, tag = "33")]
    pub usage_limit: u64,
}

/// Memory events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryEventsV2 {
    /// Times the OOM killer killed in this cgroup.
    #[prost(uint64, tag = "5")]
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

/// A limit this large means "none" (cgroup v1 reports a page-rounded 2^63, v2 the
/// largest u64).
const NO_LIMIT: u64 = 1 << 62;

fn limit(bytes: u64) -> u64 {
    if bytes >= NO_LIMIT {
        0
    } else {
        bytes
    }
}

/// Decodes one containerd metric payload by its type: v2 on a unified-hierarchy host,
/// v1 otherwise (also when containerd names no type, as older releases may not).
pub fn decode(type_url: &str, data: &[u8]) -> Option<Sample> {
    if type_url.ends_with("cgroups.v2.Metrics") {
        decode_v2(data)
    } else {
        decode_v1(data)
    }
}

fn decode_v1(data: &[u8]) -> Option<Sample> {
    let m = CgroupV1Metrics::decode(data).ok()?;
    let usage = m.memory.unwrap_or_default().usage.unwrap_or_default();
    Some(Sample {
        cpu_nanos: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
        memory: usage.usage,
        memory_limit: limit(usage.limit),
        oom_kills: m.memory_oom_control.map(|o| o.oom_kill).unwrap_or(0),
    })
}

fn decode_v2(data: &[u8]) -> Option<Sample> {
    let m = CgroupV2Metrics::decode(data).ok()?;
    let mem = m.memory.unwrap_or_default();
    Some(Sample {
        cpu_nanos: m
            .cpu
            .map(|c| c.usage_usec.saturating_mul(1000))
            .unwrap_or(0),
        memory: mem.usage,
        memory_limit: limit(mem.usage_limit),
        oom_kills: m.memory_events.map(|e| e.oom_kill).unwrap_or(0),
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
            Some((m.id, decode(&data.type_url, &data.value)?))
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
        let s = decode("io.containerd.cgroups.v1.Metrics", &m.encode_to_vec()).unwrap();
        assert_eq!(
            s,
            Sample {
                cpu_nanos: 1_500_000_000,
                memory: 4096,
                memory_limit: 0,
                oom_kills: 1
            }
        );
        assert_eq!(decode("", &[]).unwrap(), Sample::default());
    }

    /// Writes a protobuf payload field by field, the way containerd's Go code lays out
    /// `io.containerd.cgroups.v2.Metrics` (field numbers from its .proto), independently
    /// of the structs above, so a wrong tag there fails the test.
    fn field(buf: &mut Vec<u8>, tag: u32, value: u64) {
        prost::encoding::uint64::encode(tag, &value, buf);
    }
    fn nested(buf: &mut Vec<u8>, tag: u32, body: &[u8]) {
        prost::encoding::bytes::encode(tag, &body.to_vec(), buf);
    }

    fn v2_payload(limit: u64) -> Vec<u8> {
        let mut pids = Vec::new();
        field(&mut pids, 1, 3); // current
        let mut cpu = Vec::new();
        field(&mut cpu, 1, 2_345_678); // usage_usec
        field(&mut cpu, 2, 2_000_000); // user_usec
        field(&mut cpu, 3, 345_678); // system_usec
        let mut mem = Vec::new();
        field(&mut mem, 1, 1_000_000); // anon
        field(&mut mem, 2, 2_211_264); // file
        field(&mut mem, 32, 3_211_264); // usage (memory.current)
        field(&mut mem, 33, limit); // usage_limit (memory.max)
        field(&mut mem, 36, 4_000_000); // max_usage
        let mut io = Vec::new();
        let mut entry = Vec::new();
        field(&mut entry, 1, 8); // major
        field(&mut entry, 3, 4096); // rbytes
        nested(&mut io, 1, &entry);
        let mut events = Vec::new();
        field(&mut events, 3, 7); // max
        field(&mut events, 4, 3); // oom
        field(&mut events, 5, 2); // oom_kill
        let mut m = Vec::new();
        nested(&mut m, 1, &pids);
        nested(&mut m, 2, &cpu);
        nested(&mut m, 4, &mem);
        nested(&mut m, 6, &io);
        nested(&mut m, 8, &events);
        m
    }

    #[test]
    fn decodes_cgroup_v2_metrics() {
        let url = "io.containerd.cgroups.v2.Metrics";
        assert_eq!(
            decode(url, &v2_payload(64 << 20)).unwrap(),
            Sample {
                cpu_nanos: 2_345_678_000,
                memory: 3_211_264,
                memory_limit: 64 << 20,
                oom_kills: 2
            }
        );
        // memory.max "max" comes as the largest u64: no limit.
        assert_eq!(decode(url, &v2_payload(u64::MAX)).unwrap().memory_limit, 0);
        // The same bytes read as v1 would give nonsense: the type decides.
        assert_ne!(
            decode("io.containerd.cgroups.v1.Metrics", &v2_payload(64 << 20)),
            decode(url, &v2_payload(64 << 20))
        );
    }

    #[test]
    fn cpu_rate() {
        assert_eq!(cpu_millis(0, 500_000_000, Duration::from_secs(1)), 500);
        assert_eq!(cpu_millis(10, 5, Duration::from_secs(1)), 0);
    }
}

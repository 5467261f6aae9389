//! What the node says about its host: identity labels (os, arch, hostname) and
//! capacity (CPUs, memory), read once from /proc.

use std::collections::BTreeMap;
use voiyd_messages::v1::NodeResources;

/// The node's identity labels and capacity, computed once.
pub fn host_facts(name: &str) -> (BTreeMap<String, String>, NodeResources) {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let labels = BTreeMap::from([
        ("voiyd.io/os".to_string(), std::env::consts::OS.to_string()),
        ("voiyd.io/arch".to_string(), arch.to_string()),
        (
            "voiyd.io/hostname".to_string(),
            if hostname.is_empty() {
                name.to_string()
            } else {
                hostname
            },
        ),
    ]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    (
        labels,
        NodeResources {
            cpu_millis: cpus * 1000,
            memory_bytes: mem_kib * 1024,
        },
    )
}

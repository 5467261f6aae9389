//! What a task asks of a node: CPU, memory and host ports. Shared by the scheduler
//! (which places by it) and the node agent (which reports what it has allocated), so
//! both count a task the same way.

use crate::quantity::{parse_cpu, parse_memory};
use crate::v1::TaskConfig;

/// CPU a task is charged when `resources.cpu` is unset: 100 millicores.
pub const DEFAULT_CPU_MILLIS: u64 = 100;
/// Memory a task is charged when `resources.memory` is unset: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// A task's resource request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requests {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

impl Requests {
    /// What `config` requests, with the defaults for unset (or unparsable, which
    /// validation refuses anyway) quantities.
    pub fn of(config: &TaskConfig) -> Requests {
        let r = config.resources.as_ref();
        let cpu = r
            .map(|r| r.cpu.as_str())
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| parse_cpu(s).ok())
            .unwrap_or(DEFAULT_CPU_MILLIS);
        let memory = r
            .map(|r| r.memory.as_str())
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| parse_memory(s).ok())
            .unwrap_or(DEFAULT_MEMORY_BYTES);
        Requests {
            cpu_millis: cpu,
            memory_bytes: memory,
        }
    }

    /// Sum, saturating.
    pub fn plus(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }

    /// Difference, saturating at zero.
    pub fn minus(self, o: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
        }
    }
}

/// A host port a task binds: (port, protocol), protocol `tcp` when unset.
pub fn host_ports(config: &TaskConfig) -> Vec<(u32, String)> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                "tcp".to_string()
            } else {
                p.protocol.to_ascii_lowercase()
            };
            (p.host_port, proto)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{PortMapping, Resources};

    #[test]
    fn defaults_and_explicit_requests() {
        assert_eq!(
            Requests::of(&TaskConfig::default()),
            Requests {
                cpu_millis: 100,
                memory_bytes: 64 << 20
            }
        );
        let c = TaskConfig {
            resources: Some(Resources {
                cpu: "1.5".into(),
                memory: "".into(),
            }),
            port_mappings: vec![
                PortMapping {
                    host_port: 80,
                    target_port: 8080,
                    ..Default::default()
                },
                PortMapping {
                    host_port: 0,
                    target_port: 9,
                    ..Default::default()
                },
                PortMapping {
                    host_port: 53,
                    protocol: "UDP".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(Requests::of(&c).cpu_millis, 1500);
        assert_eq!(Requests::of(&c).memory_bytes, DEFAULT_MEMORY_BYTES);
        assert_eq!(
            host_ports(&c),
            vec![(80, "tcp".to_string()), (53, "udp".to_string())]
        );
    }
}

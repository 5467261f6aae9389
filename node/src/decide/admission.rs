//! Admission: a node takes on a new task only while what its tasks request fits its
//! capacity and the task's host ports are free. Each server places from its own view
//! of the cluster, so two servers placing at the same instant can both pick a node's
//! last free slot; the node, which sees all of its own work, refuses the task that no
//! longer fits and the servers place it elsewhere. Pure: no I/O.

use std::collections::BTreeSet;
use voiyd_messages::reason::Reason;
use voiyd_messages::requests::{host_ports, Requests};
use voiyd_messages::v1::{NodeResources, TaskConfig};

/// What one task takes from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// CPU and memory requested (defaults filled in as the scheduler does).
    pub requests: Requests,
    /// Host ports bound, as (port, protocol).
    pub ports: Vec<(u32, String)>,
}

impl Load {
    /// The load of a task spec.
    pub fn of(config: &TaskConfig) -> Load {
        Load {
            requests: Requests::of(config),
            ports: host_ports(config),
        }
    }
}

/// Why a node refuses a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough CPU left (millicores).
    Cpu {
        /// What the node has left.
        free: u64,
        /// What the task requests.
        wanted: u64,
    },
    /// Not enough memory left (bytes).
    Memory {
        /// What the node has left.
        free: u64,
        /// What the task requests.
        wanted: u64,
    },
    /// A host port another task of this node binds.
    Port {
        /// The port.
        port: u32,
        /// `tcp` or `udp`.
        protocol: String,
    },
}

impl Refusal {
    /// Short reason, as reported in the task's status.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::Cpu { .. } => Reason::OutOfCpu,
            Refusal::Memory { .. } => Reason::OutOfMemory,
            Refusal::Port { .. } => Reason::HostPortInUse,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Cpu { free, wanted } => {
                write!(
                    f,
                    "the task requests {wanted}m CPU, the node has {free}m free"
                )
            }
            Refusal::Memory { free, wanted } => write!(
                f,
                "the task requests {} MiB of memory, the node has {} MiB free",
                wanted / (1 << 20),
                free / (1 << 20)
            ),
            Refusal::Port { port, protocol } => {
                write!(f, "host port {port}/{protocol} is taken by another task")
            }
        }
    }
}

/// Whether a task with load `new` fits next to the tasks already admitted (`admitted`)
/// on a node offering `capacity`. A zero capacity field is not limited (as placement
/// treats an unreported resource).
pub fn admit<'a>(
    capacity: NodeResources,
    admitted: impl IntoIterator<Item = &'a Load>,
    new: &Load,
) -> Result<(), Refusal> {
    let mut used = Requests::default();
    let mut ports = BTreeSet::new();
    for l in admitted {
        used = used.plus(l.requests);
        ports.extend(l.ports.iter());
    }
    let room = |cap: u64, used: u64| cap.saturating_sub(used);
    if capacity.cpu_millis != 0
        && used.cpu_millis.saturating_add(new.requests.cpu_millis) > capacity.cpu_millis
    {
        return Err(Refusal::Cpu {
            free: room(capacity.cpu_millis, used.cpu_millis),
            wanted: new.requests.cpu_millis,
        });
    }
    if capacity.memory_bytes != 0
        && used.memory_bytes.saturating_add(new.requests.memory_bytes) > capacity.memory_bytes
    {
        return Err(Refusal::Memory {
            free: room(capacity.memory_bytes, used.memory_bytes),
            wanted: new.requests.memory_bytes,
        });
    }
    if let Some((port, protocol)) = new.ports.iter().find(|p| ports.contains(p)) {
        return Err(Refusal::Port {
            port: *port,
            protocol: protocol.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(cpu: u64, mem_mib: u64, ports: &[u32]) -> Load {
        Load {
            requests: Requests {
                cpu_millis: cpu,
                memory_bytes: mem_mib << 20,
            },
            ports: ports.iter().map(|p| (*p, "tcp".to_string())).collect(),
        }
    }

    fn node(cpu: u64, mem_mib: u64) -> NodeResources {
        NodeResources {
            cpu_millis: cpu,
            memory_bytes: mem_mib << 20,
        }
    }

    #[test]
    fn refuses_what_does_not_fit_and_says_why() {
        let cap = node(1000, 1024);
        let have = [load(600, 100, &[80])];
        assert_eq!(admit(cap, &have, &load(400, 100, &[])), Ok(()));
        let cpu = admit(cap, &have, &load(500, 100, &[])).unwrap_err();
        assert_eq!(cpu.reason(), "OutOfCpu");
        assert_eq!(
            cpu.to_string(),
            "the task requests 500m CPU, the node has 400m free"
        );
        let mem = admit(cap, &have, &load(100, 1000, &[])).unwrap_err();
        assert_eq!(mem.reason(), "OutOfMemory");
        assert!(mem.to_string().contains("924 MiB free"), "{mem}");
        let port = admit(cap, &have, &load(10, 10, &[80])).unwrap_err();
        assert_eq!(port.reason(), "HostPortInUse");
        assert_eq!(admit(cap, &have, &load(10, 10, &[81])), Ok(()));
    }

    #[test]
    fn unreported_capacity_is_not_limited() {
        let have = [load(100_000, 100_000, &[])];
        assert_eq!(admit(node(0, 0), &have, &load(1, 1, &[])), Ok(()));
    }

    proptest! {
        /// Admitting tasks one by one never takes a node past its capacity, never binds
        /// a port twice, and refuses only what really does not fit.
        #[test]
        fn admitted_tasks_always_fit(
            cap_cpu in 1u64..4000,
            cap_mem in 1u64..4096,
            tasks in prop::collection::vec((0u64..2000, 0u64..2000, prop::option::of(1u32..5)), 0..40),
        ) {
            let cap = node(cap_cpu, cap_mem);
            let mut admitted: Vec<Load> = Vec::new();
            for (cpu, mem, port) in tasks {
                let l = load(cpu, mem, port.as_slice());
                let used_cpu: u64 = admitted.iter().map(|a| a.requests.cpu_millis).sum();
                let used_mem: u64 = admitted.iter().map(|a| a.requests.memory_bytes).sum();
                let port_taken = l.ports.iter().any(|p| admitted.iter().any(|a| a.ports.contains(p)));
                let fits = used_cpu + cpu <= cap_cpu && used_mem + (mem << 20) <= cap_mem << 20 && !port_taken;
                prop_assert_eq!(admit(cap, &admitted, &l).is_ok(), fits);
                if fits {
                    admitted.push(l);
                }
            }
            let used_cpu: u64 = admitted.iter().map(|a| a.requests.cpu_millis).sum();
            prop_assert!(used_cpu <= cap_cpu);
        }
    }
}

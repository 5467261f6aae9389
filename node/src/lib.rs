//! voiyd-node library: the pieces the node agent is built from, in layers (each uses
//! only those listed before it; `tests/tests/layers.rs` keeps it so):
//! - [`decide`]: pure decisions (reconcile, phase, restart backoff, admission, the
//!   work ledger).
//! - [`identity`], [`logs`], [`containerd`]: who the node is and what its host has;
//!   task log files; the containerd client, its event stream and usage statistics.
//! - [`image`], [`network`]: image pulls into containerd; CNI networking.
//! - [`mesh`]: encrypted tunnels to the other nodes' subnets (userspace WireGuard).
//! - [`traffic`]: sets' virtual IPs, published ports on every node, isolation (iptables).
//! - [`secrets`]: secrets fetched for the node's tasks, opened with its own key.
//! - [`spec`], [`volumes`]: the OCI runtime spec of a task; its volumes on disk.
//! - [`runtime`]: the runtime trait and its implementations (containerd, sim).
//! - [`serve`]: what the node answers on its own subjects (logs, exec, stats).
//! - [`agent`]: the agent's loops (heartbeat, fencing, work, reports), and many
//!   simulated agents in one process.

pub mod agent;
pub mod containerd;
pub mod decide;
pub mod dns;
pub mod identity;
pub mod image;
pub mod logs;
pub mod mesh;
pub mod network;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod spec;
pub mod traffic;
pub mod upgrade;
pub mod volumes;

//! voiyd-node library: the pieces the node agent is built from.

pub mod admission;
pub mod agent;
pub mod containerd;
pub mod exec;
pub mod identity;
pub mod image;
pub mod join;
pub mod logs;
pub mod network;
pub mod node_events;
pub mod phase;
pub mod reconcile;
pub mod restart;
pub mod runtime;
pub mod serve_logs;
pub mod services;
pub mod sim_nodes;
pub mod spec;
pub mod testing;
pub mod usage;
pub mod volumes;
pub mod work_ledger;

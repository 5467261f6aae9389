//! voiyd-node library: the pieces the node agent is built from.

pub mod agent;
pub mod containerd;
pub mod exec;
pub mod identity;
pub mod join;
pub mod image;
pub mod logs;
pub mod node_events;
pub mod network;
pub mod volumes;
pub mod phase;
pub mod reconcile;
pub mod restart;
pub mod runtime;
pub mod sim_nodes;
pub mod serve_logs;
pub mod services;
pub mod spec;
pub mod testing;
pub mod timefmt;
pub mod usage;

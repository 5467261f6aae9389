//! voiyd-server: the stateless control plane. It validates requests, records desired
//! state in NATS JetStream, places tasks on nodes and folds in what nodes report.
//! Any number of servers can run against one NATS: all state lives there.

pub mod api;
pub mod auth;
pub mod backup;
pub mod callout;
pub mod certs;
pub mod conditions;
pub mod events;
pub mod failover;
pub mod leases;
pub mod mailbox;
pub mod managed;
pub mod merge_patch;
pub mod metrics;
pub mod node_events;
pub mod patience;
pub mod placement;
pub mod policy;
pub mod reports;
mod run;
pub mod scheduler;
pub mod security;
pub mod sets;
pub mod status;
pub mod subnets;
pub mod view;
pub mod work;
pub mod work_sweep;

pub use run::{run, Security, ServerConfig};

/// The current time as a protobuf timestamp.
pub fn now() -> voiyd_messages::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    voiyd_messages::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

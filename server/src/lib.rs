//! voiyd-server: the stateless control plane. It validates requests, records desired
//! state in NATS JetStream, places tasks on nodes and folds in what nodes report.
//! Any number of servers can run against one NATS: all state lives there.

pub mod api;
pub mod conditions;
pub mod events;
pub mod leases;
pub mod managed;
pub mod merge_patch;
pub mod placement;
pub mod reports;
mod run;
pub mod scheduler;
pub mod status;

pub use run::{run, ServerConfig};

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

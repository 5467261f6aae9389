//! Typed access to the buckets and streams: status records, desired state per kind,
//! subnet claims, events, and the patience of writes through a leader election.

pub mod events;
pub mod managed;
pub mod patience;
pub mod status;
pub mod subnets;

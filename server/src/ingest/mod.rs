//! What nodes send outside the API: heartbeats and task status reports (batched
//! through a mailbox per node) and node events (exits, OOM kills, failed pulls).

pub mod mailbox;
pub mod node_events;
pub mod reports;

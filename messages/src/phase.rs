//! Task phases that both nodes and servers act on (the protocol between them).

/// A node refuses a task it was given: what the task requests does not fit next to
/// the node's other tasks (or its host ports are taken). Servers place it elsewhere.
pub const REJECTED: &str = "Rejected";

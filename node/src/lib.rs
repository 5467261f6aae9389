//! voiyd-node library: the pieces the node agent is built from.

pub mod containerd;
pub mod image;
pub mod phase;
pub mod reconcile;
pub mod restart;
pub mod spec;
pub mod testing;
pub mod agent;
pub mod logs;
pub mod runtime;
pub mod timefmt;

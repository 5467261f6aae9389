//! voiyd-node library: the pieces the node agent is built from.

pub mod agent;
pub mod containerd;
pub mod identity;
pub mod image;
pub mod logs;
pub mod phase;
pub mod reconcile;
pub mod restart;
pub mod runtime;
pub mod spec;
pub mod testing;
pub mod timefmt;

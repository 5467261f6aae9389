//! voiyd-node library: the pieces the node agent is built from.

pub mod containerd;
pub mod image;
pub mod spec;
pub mod testing;
pub mod phase;
pub mod reconcile;
pub mod restart;

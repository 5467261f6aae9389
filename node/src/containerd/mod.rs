//! containerd, as the node talks to it: the gRPC client, the event stream (exits, OOM
//! kills) and container usage statistics.

pub mod client;
pub mod events;
pub mod usage;

//! The server's in-memory picture of the cluster, kept current from the buckets.

pub mod sets;
pub mod view;

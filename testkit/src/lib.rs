//! Test fixtures for voiyd's crates, a dev-only crate: a real nats-server ([`nats`]),
//! a private containerd and a local registry holding the test images ([`containerd`]).
//! The end-to-end harness (voiyd's own processes) is `voiyd-tests`.

pub mod containerd;
pub mod nats;

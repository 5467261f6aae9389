//! Typed operations, shared by the API and the controllers: create, read, update and
//! delete of every kind, placing a task on its node and keeping the node's work in
//! step, volumes, node deletion, join tokens and leases.

pub mod assign;
pub mod leases;
pub mod merge_patch;
pub mod mounts;
pub mod nodes;
pub mod plan;
pub mod resources;
pub mod secrets;
pub mod sets;
pub mod tasks;
pub mod tokens;
pub mod volumes;
pub mod work;

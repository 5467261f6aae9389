//! One module per command (or family of commands).

pub mod apply;
pub mod config;
pub mod delete;
pub mod edit;
pub mod events;
pub mod get;
pub mod patch;
pub mod tasks;

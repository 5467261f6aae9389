//! One module per command (or family of commands).

pub mod apply;
pub mod config;
pub mod delete;
pub mod edit;
pub mod events;
pub mod exec;
pub mod get;
pub mod logs;
pub mod patch;
pub mod plan;
pub mod rollout;
pub mod secrets;
pub mod tasks;
pub mod token;
pub mod top;
pub mod upgrade;
pub mod volumes;
pub mod watch;

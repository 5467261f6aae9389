//! voiyd-server: the stateless control plane. It validates requests, records desired
//! state in NATS JetStream, places tasks on nodes and folds in what nodes report.
//! Any number of servers can run against one NATS: all state lives there.
//!
//! The modules are layers; each imports only those listed before it (a test,
//! `tests/tests/layers.rs`, keeps it so):
//! - [`error`], [`metrics`]: the error every operation returns, and the counters.
//! - [`schedule`]: pure decisions (placement, liveness, set plans, the work sweep).
//! - [`store`]: typed access to buckets and streams.
//! - [`cache`]: the in-memory view of nodes and tasks, a reflector over the buckets.
//! - [`security`]: identities, the auth callout, certificates, admission policy.
//! - [`context`]: the handles everything above works through.
//! - [`service`]: typed operations on tasks, volumes, nodes, tokens, shared by the API
//!   and the controllers.
//! - [`controllers`]: loops that compare desired with actual and act (placer,
//!   failover, sets, sweep).
//! - [`ingest`]: what nodes send outside the API (status reports, events).
//! - [`api`]: the NATS request/reply endpoints: decode, call a service, encode.
//! - [`http`]: the same API as JSON over HTTP, with events and logs as Server-Sent
//!   Events, and the dashboard.
//! - [`app`]: flags, subcommands and the start-up that wires it all.

pub mod api;
pub mod app;
pub mod cache;
pub mod context;
pub mod controllers;
pub mod error;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod schedule;
pub mod security;
pub mod service;
pub mod store;

pub use app::run::{run, Security, ServerConfig};

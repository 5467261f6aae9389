//! Prometheus metrics for voiyd-server and voiyd-node: a small registry of counters, gauges
//! and histograms ([`registry`]) and the HTTP endpoint that serves it ([`http`], on axum).
//!
//! Counters and histograms are recorded as things happen, through the process-wide
//! [`global`] registry. Gauges that describe current state (tasks by phase, container
//! usage) are refreshed by a [`Collector`] just before each scrape.

pub mod http;
pub mod registry;

pub use http::{router, routes, serve, ListenError};
pub use registry::{global, Collector, Labels, MetricType, Registry};

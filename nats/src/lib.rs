//! voiyd's NATS layer: names of subjects, buckets and streams; the API protocol and
//! client; connection options; the embedded nats-server; bootstrap of buckets and
//! streams; and a typed store over JetStream KV.

pub mod api;
pub mod names;

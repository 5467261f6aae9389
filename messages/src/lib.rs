//! voiyd's resource types: protobuf messages (prost) with their protobuf-JSON
//! mapping (pbjson), manifest parsing for YAML and JSON, and validation.

/// Generated protobuf types of package `voiyd.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/voiyd.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/voiyd.v1.serde.rs"));
}

pub mod capabilities;
pub mod condition;
pub mod diff;
pub mod event;
pub mod fields;
pub mod image;
pub mod labels;
pub mod manifest;
pub mod phase;
pub mod quantity;
pub mod reason;
pub mod requests;
pub mod resource;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod selector;
pub mod time;
pub mod validate;
mod vocabulary;
pub mod volume;

pub use pbjson_types::Timestamp;
pub use resource::{Kind, Resource};

//! voiyd's NATS layer: names of subjects, buckets and streams; the API protocol and
//! client; connection options; the embedded nats-server; bootstrap of buckets and
//! streams; and a typed store over JetStream KV.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod callout;
pub mod chunks;
pub mod connect;
pub mod embedded;
pub mod events;
#[cfg(feature = "clap")]
pub mod flags;
pub mod jwt;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod snapshot;
pub mod store;
pub mod stream;
pub mod watch;

pub use bootstrap::{bootstrap, open, BootstrapError, BootstrapOptions, Cluster};
pub use connect::{connect, connect_linked, install_crypto_provider, ConnectError, ConnectOptions};
pub use embedded::{
    EmbeddedCluster, EmbeddedConfig, EmbeddedError, EmbeddedNats, EmbeddedTls, SyncPolicy,
};
pub use link::{Link, LinkState};
pub use store::{KvChange, RawKv, Store, StoreError, TypedKv};

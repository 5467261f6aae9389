//! The server's shared context: its NATS connection and the handles every service,
//! controller and handler works through. Built once by [`crate::app::run`].

use crate::store::events::Events;
use std::sync::Arc;
use voiyd_nats::bootstrap::Cluster;

/// Everything the services, controllers and handlers need; cheap to clone (one per request).
#[derive(Clone)]
pub struct Ctx(Arc<CtxParts>);

impl Ctx {
    /// Wraps the parts.
    pub fn new(parts: CtxParts) -> Ctx {
        Ctx(Arc::new(parts))
    }
}

impl std::ops::Deref for Ctx {
    type Target = CtxParts;
    fn deref(&self) -> &CtxParts {
        &self.0
    }
}

/// What a [`Ctx`] holds.
pub struct CtxParts {
    /// The server's NATS connection (core messages to nodes).
    pub client: async_nats::Client,
    /// Buckets and streams.
    pub cluster: Cluster,
    /// Event publisher.
    pub events: Events,
    /// The status bucket.
    pub status: crate::store::status::StatusKv,
    /// The per-node work bucket.
    pub work: async_nats::jetstream::kv::Store,
    /// Container subnet allocation.
    pub subnets: crate::store::subnets::Subnets,
    /// Sets' virtual IP allocation.
    pub vips: crate::store::subnets::Subnets,
    /// What the set controller last read of every set's networking (for the services
    /// and names controllers, which read no bucket of sets themselves).
    pub set_networks: crate::cache::sets::SetNetworks,
    /// The scheduler's in-memory view of nodes and tasks.
    pub view: crate::cache::view::View,
    /// Cluster-wide admission policy (privileged, host paths, added capabilities).
    pub policy: crate::security::policy::Policy,
    /// The keys secrets are encrypted with at rest.
    pub keyring: std::sync::Arc<crate::security::keyring::Keyring>,
    /// NATS identities, when this server owns an embedded NATS with `--auth`.
    pub auth: Option<std::sync::Arc<crate::security::identities::AuthManager>>,
}

//! Keeps `voiyd_mesh` listing every node of the mesh
//! ([`crate::schedule::mesh::peers`]) from the nodes' statuses: a node that joins, gets
//! a new key (every agent start) or endpoint, or is deleted shows there within a second.

use crate::context::Ctx;
use crate::controllers::derived::{self, Derived};
use prost::Message;
use std::time::Duration;

/// Runs until the server stops.
pub async fn run(ctx: Ctx, link: voiyd_nats::Link) {
    let kv = ctx.cluster.mesh.clone();
    derived::run(
        ctx,
        link,
        Derived {
            kv,
            kind: "mesh peer",
            every: Duration::from_millis(500),
            // Heartbeats change statuses all the time: compare on every tick (only the
            // nodes that joined the mesh are read).
            version: |_| None,
            wanted: |ctx| {
                crate::schedule::mesh::peers(ctx.view.mesh_members())
                    .into_iter()
                    .map(|(k, p)| (k, p.encode_to_vec().into()))
                    .collect()
            },
        },
    )
    .await
}

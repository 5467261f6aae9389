//! Keeps `voiyd_services` saying how nodes route and filter each set's traffic
//! ([`crate::schedule::services::records`]) whenever a task or a set's networking
//! changes: a replica that stops or becomes ready leaves or joins its set's backends
//! within a tick.

use crate::context::Ctx;
use crate::controllers::derived::{self, Derived};
use prost::Message;
use std::time::Duration;

/// A number that moves whenever tasks or the sets' networking change.
pub fn version(ctx: &Ctx) -> u64 {
    // Both only grow: their sum moves when either does.
    ctx.view
        .task_changes()
        .wrapping_add(ctx.set_networks.version() << 40)
}

/// Runs until the server stops.
pub async fn run(ctx: Ctx, link: voiyd_nats::Link) {
    let kv = ctx.cluster.services.clone();
    derived::run(
        ctx,
        link,
        Derived {
            kv,
            kind: "service",
            every: Duration::from_millis(200),
            version: |ctx| Some(version(ctx)),
            wanted: |ctx| {
                let tasks = ctx.view.addressables();
                crate::schedule::services::records(&ctx.set_networks.get(), &tasks)
                    .into_iter()
                    .map(|(k, r)| (k, r.encode_to_vec().into()))
                    .collect()
            },
        },
    )
    .await
}

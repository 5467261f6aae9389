//! Keeps `voiyd_names` saying what the cluster's names resolve to
//! ([`crate::schedule::names::records`]), whenever a task changes.

use crate::context::Ctx;
use crate::controllers::derived::{self, Derived};
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::NameRecord;

/// Runs until the server stops.
pub async fn run(ctx: Ctx, link: voiyd_nats::Link) {
    let kv = ctx.cluster.names.clone();
    derived::run(
        ctx,
        link,
        Derived {
            kv,
            kind: "name",
            // Names follow within this.
            every: Duration::from_millis(200),
            version: |ctx| Some(ctx.view.task_changes()),
            wanted: |ctx| {
                crate::schedule::names::records(ctx.view.addressables())
                    .into_iter()
                    .map(|(k, ips)| (k, NameRecord { ips }.encode_to_vec().into()))
                    .collect()
            },
        },
    )
    .await
}

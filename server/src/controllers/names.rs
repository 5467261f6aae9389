//! Keeps `voiyd_names` saying what the cluster's names resolve to
//! ([`crate::schedule::names::records`]), whenever a task or a set's virtual IP changes.

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
            version: |ctx| Some(crate::controllers::services::version(ctx)),
            wanted: |ctx| {
                let vips = ctx
                    .set_networks
                    .get()
                    .into_iter()
                    .filter(|(_, n)| !n.vip.is_empty())
                    .map(|(set, n)| (set, n.vip))
                    .collect();
                crate::schedule::names::records(ctx.view.addressables(), &vips)
                    .into_iter()
                    .map(|(k, ips)| (k, NameRecord { ips }.encode_to_vec().into()))
                    .collect()
            },
        },
    )
    .await
}

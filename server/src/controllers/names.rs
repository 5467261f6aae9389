//! Keeps `voiyd_names` saying what the cluster's names resolve to: a watch keeps a copy
//! of the bucket, and whenever a task changes (or the bucket does) the records the view
//! implies ([`crate::schedule::names::records`]) are compared with it and the difference
//! written. Every server runs this; they derive the same records from the same state,
//! and one whose view lagged is corrected by the others as soon as they see its write.

use crate::context::Ctx;
use crate::schedule::names::{changes, records};
use futures::StreamExt;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use voiyd_messages::v1::NameRecord;
use voiyd_nats::watch::{WatchEvent, Watcher};

/// How often the view is checked for task changes: names follow within this.
const EVERY: Duration = Duration::from_millis(200);

/// The copy of the bucket and whether it has been read to the end once.
#[derive(Default)]
struct Stored {
    records: Mutex<BTreeMap<String, Vec<String>>>,
    changed: Notify,
}

/// Runs until the server stops.
pub async fn run(ctx: Ctx, link: voiyd_nats::Link) {
    let stored = Arc::new(Stored::default());
    let (current_tx, current) = watch::channel(false);
    tokio::spawn(follow(
        ctx.clone(),
        link.clone(),
        stored.clone(),
        current_tx,
    ));
    let mut seen = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stored.changed.notified() => { seen = None; }
        }
        let changes_now = ctx.view.task_changes();
        if seen == Some(changes_now) || !*current.borrow() || !link.state().connected {
            continue;
        }
        if !ctx.view.wait_ready(Duration::from_millis(1)).await {
            continue;
        }
        let wanted = records(ctx.view.addressables());
        let todo = changes(&stored.records.lock().expect("names lock"), &wanted);
        let mut ok = true;
        for (key, ips) in todo.put {
            let body = NameRecord { ips }.encode_to_vec().into();
            if let Err(e) = ctx.cluster.names.put(&key, body).await {
                tracing::debug!(%key, error = %e, "cannot write name");
                ok = false;
            }
        }
        for key in todo.delete {
            if let Err(e) = ctx.cluster.names.delete(&key).await {
                tracing::debug!(%key, error = %e, "cannot remove name");
                ok = false;
            }
        }
        // A failed write is tried again on the next tick.
        seen = ok.then_some(changes_now);
    }
}

/// Mirrors the bucket into `stored`.
async fn follow(
    ctx: Ctx,
    link: voiyd_nats::Link,
    stored: Arc<Stored>,
    current: watch::Sender<bool>,
) {
    let mut events = Watcher::of(ctx.cluster.names.clone(), ">", "name")
        .on_reconnect(link)
        .typed::<NameRecord>();
    while let Some(event) = events.next().await {
        {
            let mut records = stored.records.lock().expect("names lock");
            match event {
                WatchEvent::Put { key, value, .. } => {
                    records.insert(key, value.ips);
                }
                WatchEvent::Delete { key, .. } => {
                    records.remove(&key);
                }
                // Rewritten by the next pass: it differs from anything wanted.
                WatchEvent::Invalid { key, .. } => {
                    records.insert(key, Vec::new());
                }
                WatchEvent::Current => {
                    current.send_replace(true);
                }
            }
        }
        stored.changed.notify_one();
    }
}

//! Keeps a bucket the servers derive from their view (`voiyd_names`, `voiyd_mesh`)
//! saying what the view implies: a watch keeps a copy of the bucket, and whenever the
//! source changed (or the bucket did) the wanted records are compared with the copy and
//! only the difference is written. Every server runs each; they derive the same records
//! from the same state, and one whose view lagged is corrected by the others as soon as
//! they see its write.

use crate::context::Ctx;
use crate::schedule::derived::changes;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use voiyd_nats::watch::{WatchEvent, Watcher};

/// One derived bucket.
pub struct Derived {
    /// The bucket.
    pub kv: kv::Store,
    /// What its values are, in logs.
    pub kind: &'static str,
    /// How often the source is looked at: records follow within this.
    pub every: Duration,
    /// A number that changes whenever the source may have (`None`: always recompute).
    pub version: fn(&Ctx) -> Option<u64>,
    /// The records the view implies, encoded (equal records encode equally).
    pub wanted: fn(&Ctx) -> BTreeMap<String, Bytes>,
}

/// The copy of the bucket.
#[derive(Default)]
struct Stored {
    records: Mutex<BTreeMap<String, Bytes>>,
    changed: Notify,
}

/// Runs until the server stops.
pub async fn run(ctx: Ctx, link: voiyd_nats::Link, d: Derived) {
    let stored = Arc::new(Stored::default());
    let (current_tx, current) = watch::channel(false);
    tokio::spawn(follow(
        d.kv.clone(),
        d.kind,
        link.clone(),
        stored.clone(),
        current_tx,
    ));
    let mut seen = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(d.every) => {}
            _ = stored.changed.notified() => { seen = None; }
        }
        let now = (d.version)(&ctx);
        if (now.is_some() && seen == now) || !*current.borrow() || !link.state().connected {
            continue;
        }
        if !ctx.view.wait_ready(Duration::from_millis(1)).await {
            continue;
        }
        let wanted = (d.wanted)(&ctx);
        let todo = changes(&stored.records.lock().expect("derived lock"), &wanted);
        let mut ok = true;
        for (key, value) in todo.put {
            if let Err(e) = d.kv.put(&key, value).await {
                tracing::debug!(kind = d.kind, %key, error = %e, "cannot write");
                ok = false;
            }
        }
        for key in todo.delete {
            if let Err(e) = d.kv.delete(&key).await {
                tracing::debug!(kind = d.kind, %key, error = %e, "cannot remove");
                ok = false;
            }
        }
        // A failed write is tried again on the next tick.
        seen = if ok { now } else { None };
    }
}

/// Mirrors the bucket into `stored`.
async fn follow(
    kv: kv::Store,
    kind: &'static str,
    link: voiyd_nats::Link,
    stored: Arc<Stored>,
    current: watch::Sender<bool>,
) {
    let mut events = Watcher::of(kv, ">", kind).on_reconnect(link).raw();
    while let Some(event) = events.next().await {
        {
            let mut records = stored.records.lock().expect("derived lock");
            match event {
                WatchEvent::Put { key, value, .. } => {
                    records.insert(key, value);
                }
                WatchEvent::Delete { key, .. } => {
                    records.remove(&key);
                }
                // Rewritten by the next pass: it differs from anything wanted.
                WatchEvent::Invalid { key, .. } => {
                    records.insert(key, Bytes::from_static(b"\xff"));
                }
                WatchEvent::Current => {
                    current.send_replace(true);
                }
            }
        }
        stored.changed.notify_one();
    }
}

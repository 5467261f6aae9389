//! The node's copy of `voiyd_names`, kept by a watch.

use futures::StreamExt;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use voiyd_messages::v1::NameRecord;
use voiyd_nats::names::{parse_name_key, NameKind};
use voiyd_nats::watch::{WatchEvent, Watcher};

/// Cluster names and their addresses.
#[derive(Debug, Default, Clone)]
pub struct Names {
    records: HashMap<(NameKind, String), Vec<Ipv4Addr>>,
}

impl Names {
    /// Records what `name` of `kind` resolves to.
    pub fn set(&mut self, kind: NameKind, name: &str, ips: Vec<Ipv4Addr>) {
        self.records.insert((kind, name.to_ascii_lowercase()), ips);
    }

    /// Forgets `name` of `kind`.
    pub fn remove(&mut self, kind: NameKind, name: &str) {
        self.records.remove(&(kind, name.to_ascii_lowercase()));
    }

    /// The addresses of `name` (lower case): a set's, else a task's.
    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        [NameKind::Set, NameKind::Task]
            .iter()
            .find_map(|k| self.records.get(&(*k, name.to_string())).cloned())
    }
}

/// Shared, current names.
pub type SharedNames = Arc<RwLock<Names>>;

/// Keeps `names` equal to the bucket until the connection closes.
pub async fn follow(js: async_nats::jetstream::Context, names: SharedNames) {
    let mut events =
        Watcher::new(js, voiyd_nats::names::BUCKET_NAMES, ">", "name").typed::<NameRecord>();
    while let Some(event) = events.next().await {
        match event {
            WatchEvent::Put { key, value, .. } => {
                if let Some((kind, name)) = parse_name_key(&key) {
                    let ips = value.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
                    names.write().expect("names lock").set(kind, &name, ips);
                }
            }
            WatchEvent::Delete { key, .. } => {
                if let Some((kind, name)) = parse_name_key(&key) {
                    names.write().expect("names lock").remove(kind, &name);
                }
            }
            WatchEvent::Invalid { key, error, .. } => {
                tracing::warn!(%key, error = %error, "undecodable name record ignored");
            }
            WatchEvent::Current => tracing::debug!("cluster names read"),
        }
    }
}

//! Followers of cluster-wide keys: volume purges for this node, and its container subnet.

use super::*;

/// Which tasks of this node use which volume.
pub(super) fn volumes_in_use<R: Runtime>(s: &Shared<R>) -> BTreeMap<String, Vec<String>> {
    let workers = s.workers.lock().expect("workers lock");
    let desired: Vec<Desired> = workers
        .values()
        .filter_map(|w| w.desired.borrow().clone())
        .collect();
    crate::volumes::in_use(desired.iter())
}

/// Removes the data of purged volumes: the server puts `<node>.<volume>` in
/// `voiyd_volume_purges`; once no task of this node uses the volume its data goes and
/// the key is deleted.
pub(super) async fn follow_purges<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let filter = names::work_filter(&s.cfg.name);
    loop {
        let kv = match js.get_key_value(names::BUCKET_VOLUME_PURGES).await {
            Ok(kv) => RawKv::new(kv, "volume purge"),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        // Named consumers, which node permissions can confine (see voiyd_nats::watch).
        let mut watch = Watcher::of(kv.inner().clone(), &filter, "volume purge")
            .on_reconnect(s.link.clone())
            .raw();
        // Purges waiting for the tasks that use the volume to go: key -> revision.
        let mut pending: BTreeMap<String, u64> = BTreeMap::new();
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(WatchEvent::Put { key, revision, .. }) => {
                        pending.insert(key, revision);
                    }
                    Some(WatchEvent::Delete { key, .. }) => {
                        pending.remove(&key);
                    }
                    Some(WatchEvent::Invalid { .. } | WatchEvent::Current) => {}
                    None => break,
                },
                _ = retry.tick(), if !pending.is_empty() => {}
            }
            let in_use = volumes_in_use(&s);
            let keys: Vec<(String, u64)> = pending.iter().map(|(k, r)| (k.clone(), *r)).collect();
            for (key, rev) in keys {
                let Some((_, volume)) = names::parse_work_key(&key) else {
                    pending.remove(&key);
                    continue;
                };
                if in_use.contains_key(&volume) {
                    continue;
                }
                match s.rt.purge_volume(&volume).await {
                    Ok(()) => {
                        pending.remove(&key);
                        let _ = kv.delete(&key, Some(rev)).await;
                    }
                    Err(e) => tracing::warn!(%volume, error = %e, "cannot purge volume"),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Learns the node's container subnet from `voiyd_subnets` key `node.<node>`, which the
/// server writes when the node registers, and hands it to the runtime.
pub(super) async fn follow_subnet<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let key = names::node_subnet_key(&s.cfg.name);
    let mut watch = Watcher::new(js, names::BUCKET_SUBNETS, &key, "subnet")
        .on_reconnect(s.link.clone())
        .raw();
    while let Some(event) = watch.next().await {
        if let WatchEvent::Put { value, .. } = event {
            let subnet = String::from_utf8_lossy(&value).trim().to_string();
            if !subnet.is_empty() {
                s.rt.set_subnet(&subnet);
                wake_all(&s);
            }
        }
    }
}

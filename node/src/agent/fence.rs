//! Fencing: while the link to NATS is down for --node-timeout, stop the tasks that ask for it (`onDisconnect: stop`); re-read the work before unfencing.

use super::*;

/// Fencing: follows the NATS connection's events; once it has been down for longer
/// than the disconnect timeout the node is fenced (workers stop their tasks, but those
/// marked `onDisconnect: keep`); on reconnect it is unfenced after re-reading its work,
/// which tells it what is still its own.
pub(super) async fn fencing<R: Runtime>(s: Arc<Shared<R>>) {
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let link = s.link.state();
        let fenced = *s.fenced.borrow();
        if link.connected {
            down_since = None;
            if fenced {
                // Re-read the work before unfencing: a task moved away meanwhile must
                // not start here again, not even for a moment.
                match read_work(&s).await {
                    Ok(()) => {
                        tracing::info!("NATS is back: work re-read, unfenced");
                        s.fenced.send_replace(false);
                        wake_all(&s);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-read work; still fenced");
                        tokio::select! {
                            _ = s.link.changed_from(link) => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                continue;
            }
            s.link.changed_from(link).await;
        } else {
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if fenced {
                s.link.changed_from(link).await;
                continue;
            }
            tokio::select! {
                _ = s.link.changed_from(link) => {}
                _ = tokio::time::sleep_until(since + s.cfg.disconnect_timeout) => {
                    tracing::warn!(
                        after = ?s.cfg.disconnect_timeout,
                        "NATS lost: fenced, stopping the tasks with onDisconnect: stop"
                    );
                    s.fenced.send_replace(true);
                    wake_all(&s);
                }
            }
        }
    }
}

/// One full read of the node's work.
pub(super) async fn read_work<R: Runtime>(s: &Arc<Shared<R>>) -> Result<(), String> {
    let js = async_nats::jetstream::new(s.client.clone());
    let kv = js
        .get_key_value(names::BUCKET_WORK)
        .await
        .map_err(|e| e.to_string())?;
    let kv = TypedKv::<Assignment>::new(kv, "work");
    full_sync(s, &kv, &names::work_filter(&s.cfg.name)).await
}

/// The desired state while fenced: stopped for a task that asks for at-most-once
/// (`onDisconnect: stop`), unchanged for every other. An outage of the control plane
/// stops nothing by default: a partitioned node's copy runs on until the partition
/// heals, and then the node's re-read of its work stops a copy that was moved.
pub fn fenced_desired(d: Option<Desired>) -> Option<Desired> {
    d.map(|mut d| {
        if d.config.on_disconnect.eq_ignore_ascii_case("stop") {
            d.config.stopped = true;
        }
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_stops_only_what_asks_for_it() {
        let with = |policy: &str| {
            Some(Desired {
                config: voiyd_messages::v1::TaskConfig {
                    on_disconnect: policy.into(),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        let stopped = |d: Option<Desired>| d.unwrap().config.stopped;
        assert!(stopped(fenced_desired(with("stop"))));
        assert!(!stopped(fenced_desired(with(""))));
        assert!(!stopped(fenced_desired(with("keep"))));
        assert!(fenced_desired(None).is_none());
    }
}

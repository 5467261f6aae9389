//! The node's work: follows `voiyd.node.<node>.work` notices and `voiyd_work` reads (full rounds thinned out with the bucket's size), admits what fits, and hands each task's desired state to its worker.

use super::*;

pub(super) async fn resync_ticks<R: Runtime>(s: Arc<Shared<R>>) {
    let mut tick = tokio::time::interval(s.cfg.resync_every);
    tick.tick().await;
    let js = async_nats::jetstream::new(s.client.clone());
    let mut work: Option<RawKv> = None;
    let mut last_round = tokio::time::Instant::now();
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let _ = s.resync.send(n);
        if work.is_none() {
            work = js
                .get_key_value(names::BUCKET_WORK)
                .await
                .ok()
                .map(|kv| RawKv::new(kv, "work"));
        }
        // Whether a full round is due: the bucket's size now says (one stream info).
        let size = match &work {
            Some(kv) => kv.revision_and_size().await.ok().map(|(_, m)| m),
            None => None,
        };
        if size.is_some_and(|m| last_round.elapsed() >= read_interval(m, s.cfg.resync_every)) {
            last_round = tokio::time::Instant::now();
            s.round.send_modify(|r| *r += 1);
        }
    }
}

/// Keeps the desired map equal to the node's work: servers send each change on the
/// node's work subject once it is stored; a full read of `voiyd_work` (at start, after
/// reconnecting and on every resync) heals anything a lost message missed.
pub(super) async fn follow_work<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let filter = names::work_filter(&s.cfg.name);
    let mut round = s.round.subscribe();
    loop {
        let kv = match js.get_key_value(names::BUCKET_WORK).await {
            Ok(kv) => TypedKv::<Assignment>::new(kv, "work"),
            Err(e) => {
                tracing::info!(error = %e, "work bucket not available yet; waiting for voiyd-server");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Reconnections are counted from before the read below: one that happens while
        // it runs costs another read, never a missed change.
        let mut seen = s.link.state();
        // Subscribe before reading, so no change falls between the read and the messages.
        let mut updates = match s.client.subscribe(names::node::work(&s.cfg.name)).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to work updates");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = full_sync(&s, &kv, &filter).await {
            tracing::warn!(error = %e, "cannot read work");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // A re-read after reconnecting that failed is tried again soon, not only at
        // the next periodic resync.
        let mut retry_read: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = updates.next() => match msg {
                    Some(m) => match WorkUpdate::decode(m.payload) {
                        Ok(u) => {
                            if apply_update(&s, u) && retry_read.is_none() {
                                tracing::info!("work update for a task the last read missed: reading again");
                                retry_read = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable work update ignored"),
                    },
                    None => break,
                },
                _ = round.changed() => {
                    if let Err(e) = full_sync(&s, &kv, &filter).await {
                        tracing::warn!(error = %e, "resync failed");
                    }
                }
                // Updates dropped by a subscription that fell behind: re-read.
                _ = s.link.dropped_after(seen) => {
                    seen = s.link.state();
                    tracing::warn!("work updates were dropped: reading the work again");
                    retry_read = Some(tokio::time::Instant::now());
                }
                // Updates sent while the connection was down are lost: re-read (a
                // fenced node's fencing loop re-reads before unfencing, once is enough).
                _ = s.link.reconnected_after(seen) => {
                    seen = s.link.state();
                    if *s.fenced.borrow() {
                        continue;
                    }
                    retry_read = Some(tokio::time::Instant::now());
                }
                _ = sleep_until_some(retry_read) => {
                    retry_read = None;
                    if let Err(e) = full_sync(&s, &kv, &filter).await {
                        tracing::warn!(error = %e, "re-reading work after reconnecting failed; trying again in 1 s");
                        retry_read = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    } else {
                        // Reports sent while the link was going down are lost too (core
                        // NATS): every task worker reports again now, not at the next
                        // periodic resync. This loop has just read everything itself.
                        s.round.send_modify(|n| *n += 1);
                        round.borrow_and_update();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sleeps until `at`; forever when there is none.
pub(super) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies one work update unless a newer change of the task is already applied.
/// Applies one work update; returns whether the work must be read again in full: an
/// assignment older than the last full read for a task this node knows nothing of
/// means that read missed it (it came from a replica still catching up).
pub(super) fn apply_update<R: Runtime>(s: &Arc<Shared<R>>, u: WorkUpdate) -> bool {
    if u.task.is_empty() {
        return false;
    }
    let mut ledger = s.ledger.lock().expect("ledger lock");
    if ledger.accept(&u.task, u.revision) {
        tracing::debug!(task = %u.task, revision = u.revision, "work update applied");
        let desired = u.assignment.as_ref().and_then(Desired::from_assignment);
        if desired.is_none() && u.kill {
            if let Some(w) = s.workers.lock().expect("workers lock").get(&u.task) {
                w.kill.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        set_desired(s, &u.task, desired);
        return false;
    }
    match s.workers.lock().expect("workers lock").get(&u.task) {
        Some(w) => {
            // Work this node has already: a server that has not heard from the task
            // sends it again (the report may have been lost with a connection).
            w.report_again
                .store(true, std::sync::atomic::Ordering::SeqCst);
            w.wake.notify_one();
            false
        }
        None => u.assignment.is_some(),
    }
}

/// One full read of the node's work.
pub(super) async fn full_sync<R: Runtime>(
    s: &Arc<Shared<R>>,
    kv: &TypedKv<Assignment>,
    filter: &str,
) -> Result<(), String> {
    // Everything up to `floor` is in the read that follows.
    let floor = kv.raw().last_revision().await.map_err(|e| e.to_string())?;
    let entries = kv.entries(filter).await.map_err(|e| e.to_string())?;
    let mut desired: HashMap<String, Option<Desired>> = HashMap::new();
    let mut found = Vec::with_capacity(entries.len());
    for (key, a, rev) in entries {
        if let Some((_, task)) = names::parse_work_key(&key) {
            desired.insert(task.clone(), Desired::from_assignment(&a));
            found.push((task, rev));
        }
    }
    // Containers this node runs but has no work for get a worker too, which removes them.
    let existing: std::collections::HashSet<String> =
        s.rt.list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|v| v.task)
            .collect();
    let mut ledger = s.ledger.lock().expect("ledger lock");
    let known: Vec<String> = s
        .workers
        .lock()
        .expect("workers lock")
        .keys()
        .cloned()
        .chain(existing.iter().cloned())
        .collect();
    let mut plan = ledger.full_read(floor, &found, known);
    // Admission goes in order: what already runs here first, then oldest work first.
    let revision: HashMap<&str, u64> = found.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    plan.set.sort_by_key(|t| {
        (
            !existing.contains(t),
            revision.get(t.as_str()).copied().unwrap_or(0),
        )
    });
    tracing::debug!(floor, set = ?plan.set, clear = ?plan.clear, "work read");
    for task in plan.clear {
        set_desired(s, &task, None);
    }
    for task in plan.set {
        let d = desired.remove(&task).flatten();
        set_desired(s, &task, d);
    }
    drop(ledger);
    wake_all(s);
    Ok(())
}

/// Keys of the work bucket a node's periodic re-read may cost nats-server per second:
/// the read is a consumer filtered on the node's keys, and finding them scans the
/// subjects of the whole bucket, so with thousands of nodes a fixed period grows
/// with nodes times tasks.
pub(super) const READ_BUDGET_KEYS_PER_SEC: u64 = 100;

/// Longest time between periodic re-reads.
pub(super) const MAX_READ_INTERVAL: Duration = Duration::from_secs(3600);

/// Time until the next periodic full read of the work, given the bucket's size: at least
/// `min` (`--resync-every`), longer as the bucket grows. The periodic read is a safety
/// net: reconnections, dropped updates and updates naming an unknown task trigger a
/// read at once.
pub fn read_interval(bucket_messages: u64, min: Duration) -> Duration {
    let scaled = Duration::from_secs(bucket_messages / READ_BUDGET_KEYS_PER_SEC);
    scaled.clamp(min, MAX_READ_INTERVAL.max(min))
}

pub(super) fn set_desired<R: Runtime>(s: &Arc<Shared<R>>, task: &str, desired: Option<Desired>) {
    let mut workers = s.workers.lock().expect("workers lock");
    let admitted = workers
        .get(task)
        .filter(|w| !w.desired.is_closed() && w.desired.borrow().is_some())
        .map(|w| w.load.clone());
    let load = desired.as_ref().map(|d| Load::of(&d.config));
    let unchanged = admitted.as_ref().is_some_and(|old| *old == load);
    if let (Some(new), false) = (&load, unchanged) {
        // New to this node, or asking for more of it: it must fit next to the tasks
        // already here (servers then place a refused task elsewhere).
        let others = workers
            .iter()
            .filter(|(name, _)| name.as_str() != task)
            .filter_map(|(_, w)| w.load.as_ref());
        if let Err(why) = admission::admit(s.capacity, others, new) {
            drop(workers);
            if let Some(d) = &desired {
                reject(s, task, d, why);
            }
            return;
        }
    }
    if let Some(w) = workers.get_mut(task) {
        if !w.desired.is_closed() {
            w.load = load.clone();
            w.desired.send_if_modified(|cur| {
                let changed = *cur != desired;
                *cur = desired.clone();
                changed
            });
            return;
        }
    }
    let (tx, rx) = watch::channel(desired);
    let wake = Arc::new(Notify::new());
    let report_again = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kill = Arc::new(std::sync::atomic::AtomicBool::new(false));
    workers.insert(
        task.to_string(),
        Worker {
            desired: tx,
            load,
            wake: wake.clone(),
            report_again: report_again.clone(),
            kill: kill.clone(),
        },
    );
    tokio::spawn(task_worker(
        s.clone(),
        task.to_string(),
        rx,
        wake,
        report_again,
        kill,
    ));
}

/// Tells the servers this node refuses `task`; they place it elsewhere.
pub(super) fn reject<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    d: &Desired,
    why: admission::Refusal,
) {
    tracing::warn!(%task, reason = %why.reason(), "task refused: {why}");
    let status = TaskStatus {
        phase: voiyd_messages::phase::TaskPhase::Rejected.into(),
        reason: why.reason().into(),
        message: why.to_string(),
        node: s.cfg.name.clone(),
        observed_generation: d.generation,
        ..Default::default()
    };
    send(s, task, &d.uid, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_reads_thin_out_as_the_bucket_grows() {
        let min = Duration::from_secs(10);
        assert_eq!(read_interval(0, min), min);
        assert_eq!(read_interval(1_000, min), min);
        assert_eq!(read_interval(20_000, min), Duration::from_secs(200));
        assert_eq!(read_interval(150_000, min), Duration::from_secs(1500));
        assert_eq!(read_interval(10_000_000, min), MAX_READ_INTERVAL);
        // An operator's longer minimum wins.
        let long = Duration::from_secs(7200);
        assert_eq!(read_interval(10, long), long);
    }
}

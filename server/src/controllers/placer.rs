//! The placer: places tasks still waiting for a node, and repairs placements a
//! create or move left half-done (work missing, a notice lost, a spec never placed).

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::assign::sync_task;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use voiyd_nats::names;

/// How often pending tasks are looked at even when the view saw nothing change that
/// could let them be placed.
const RETRY_PENDING_EVERY: Duration = Duration::from_secs(10);

/// Retries placement of every task still waiting for a node. Tasks the view says
/// still cannot be placed, and that already carry that explanation, cost no I/O.
pub async fn place_pending(ctx: &Ctx) -> Result<usize, ServerError> {
    if !ctx.view.wait_ready(Duration::from_millis(1)).await {
        return Ok(0);
    }
    let todo = ctx.view.pending_to_retry(RETRY_PENDING_EVERY);
    let placed = futures::stream::iter(todo)
        .map(|name| async move {
            match sync_task(ctx, &name, false).await {
                Ok(t) => usize::from(t.status.is_some_and(|s| !s.node.is_empty())),
                Err(e) => {
                    tracing::debug!(task = %name, error = %e.message(), "pending task not placed");
                    0
                }
            }
        })
        .buffer_unordered(16)
        .fold(0, |a, b| async move { a + b })
        .await;
    Ok(placed)
}

/// How long a starting task's status may stand still before its work is checked.
pub const SCHEDULED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks the work of starting tasks whose status stood still for [`SCHEDULED_GRACE`]
/// (each at most once per grace, remembered in `checked`): writes it again where it is
/// missing, sends it to the node again where it is there.
/// Returns how many were repaired.
pub async fn repair_scheduled(
    ctx: &Ctx,
    checked: &mut HashMap<String, std::time::Instant>,
) -> usize {
    // Bounded per pass: upkeep must go on placing and failing over.
    let mut stuck = ctx.view.waiting_longer_than(SCHEDULED_GRACE);
    stuck.retain(|(t, _)| !checked.contains_key(t));
    stuck.truncate(512);
    let mut repaired = 0;
    for (task, node) in stuck {
        checked.insert(task.clone(), std::time::Instant::now());
        match ctx.work.entry(names::work_key(&node, &task)).await {
            Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                // The work is there but the node has not said a word: its notice may
                // have been lost with a connection. Tell it again.
                tracing::info!(%task, %node, "no word from the node on a starting task: telling it again");
                crate::service::work::renotify(ctx, &node, &task, e.revision, e.value).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%task, error = %e, "cannot check the work of a scheduled task");
                continue;
            }
        }
        tracing::warn!(%task, %node, "scheduled task has no work: writing it again");
        match sync_task(ctx, &task, false).await {
            Ok(_) => repaired += 1,
            Err(e) => tracing::warn!(%task, error = %e.message(), "cannot write the missing work"),
        }
    }
    // Specs stored without a placement: place them (each once per grace).
    let mut unplaced = ctx.view.without_status_longer_than(SCHEDULED_GRACE);
    unplaced.retain(|t| !checked.contains_key(t));
    unplaced.truncate(512);
    for task in unplaced {
        checked.insert(task.clone(), std::time::Instant::now());
        tracing::warn!(%task, "task stored without a placement: placing it");
        match sync_task(ctx, &task, false).await {
            Ok(_) => repaired += 1,
            Err(e) => tracing::warn!(%task, error = %e.message(), "cannot place the task"),
        }
    }
    checked.retain(|_, at| at.elapsed() < SCHEDULED_GRACE);
    repaired
}

/// Once a second, tasks Scheduled too long get their work checked and re-sent: in a
/// loop of its own, so that upkeep waiting on a store in the middle of a leader
/// election does not hold it up.
pub async fn repair_loop(ctx: Ctx) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked = std::collections::HashMap::new();
    loop {
        tick.tick().await;
        repair_scheduled(&ctx, &mut checked).await;
    }
}

//! Sweeping stale work: a `voiyd_work` entry for a task that now belongs to another
//! node, to no node, or no longer exists.
//!
//! Moving a task writes its status first and then removes the old node's work; a server
//! that dies in between, or a create racing a move in the same instant, can leave the
//! old entry behind, and the old node would keep running the task. Each sweep lists the
//! work keys and asks the view where each task belongs. An entry is removed only when two
//! sweeps in a row found it stale at the same revision: a view a moment behind a fresh
//! placement does not remove good work, and an entry rewritten meanwhile is kept (the
//! removal is also conditional on that revision).
//!
//! The sweep also repairs the opposite: a task whose status places it on a node, in a
//! phase where it should be running there, but whose work entry is missing (removed by
//! a race between servers) would otherwise be reported Running while nothing runs.
//! Missing from two sweeps in a row, its work is written again from its status.
//!
//! That sweep runs every 30 s; the common case of missing work (a create whose server
//! died, or whose work write failed, after the placement was stored) has a fast path,
//! [`repair_scheduled`]: a task on its way to running (Scheduled, Pulling, Starting)
//! whose status has not moved for a few seconds has its work entry checked, and
//! written again if it is absent, or sent to its node again if it is there (a notice or
//! a report was lost with a NATS connection; the node then reports again); a task whose spec
//! has been there that long without any status is placed.

use crate::context::Ctx;
pub use crate::schedule::sweep::{Owner, Sweep};
use voiyd_nats::names;

/// Runs one sweep against the bucket: lists the work keys, removes the confirmed stale
/// ones (and tells their nodes). Returns how many were removed.
pub async fn run_once(ctx: &Ctx, sweep: &mut Sweep) -> usize {
    // A view still reading the cluster would call every task gone.
    if !ctx
        .view
        .wait_ready(std::time::Duration::from_millis(1))
        .await
    {
        return 0;
    }
    let raw = voiyd_nats::store::RawKv::new(ctx.work.clone(), "work");
    let entries = match raw.revisions(">").await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list work for the stale-work sweep");
            return 0;
        }
    };
    for task in sweep.missing(&entries, &ctx.view.running_placements()) {
        tracing::warn!(%task, "work missing for a placed task: writing it again");
        if let Err(e) = crate::service::assign::sync_task(ctx, &task, false).await {
            tracing::warn!(%task, error = %e.message(), "cannot write the missing work");
        }
    }
    let mut removed = 0;
    for (key, revision) in sweep.pass(&entries, |task| ctx.view.task_owner(task)) {
        let Some((node, task)) = names::parse_work_key(&key) else {
            continue;
        };
        if crate::service::work::remove_at(ctx, &node, &task, revision).await {
            tracing::warn!(%node, %task, "stale work removed: the task belongs elsewhere");
            removed += 1;
        }
    }
    removed
}

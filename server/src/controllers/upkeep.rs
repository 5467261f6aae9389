//! The clocks of the controllers: twice a second, while connected, the upkeep marks lost
//! nodes, evacuates them, places pending tasks and, now and then, sweeps stale work; the
//! workload clock runs the set and job controllers, sooner when their tasks change. (The
//! other trigger is the repair loop of [`super::placer`], woken by changes.)

use std::time::Duration;

use super::{failover, jobs, placer, sets, sweep};
use crate::context::Ctx;
use voiyd_messages::time::millis;

/// Periodic level-triggered repairs: nodes whose heartbeats stopped become NotReady,
/// tasks still waiting for a node are placed, and stale work is swept now and then.
pub async fn run(ctx: Ctx, node_timeout: Duration, sweep_every: Duration, link: voiyd_nats::Link) {
    // Twice a second: a lost node's tasks move within node_timeout + 0.5 s.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = sweep::Sweep::default();
    let mut last_sweep = tokio::time::Instant::now();
    let listening_from = || {
        voiyd_messages::time::plus(
            voiyd_messages::time::now(),
            crate::schedule::liveness::RECONNECT_GRACE,
        )
    };
    let mut seen = link.state();
    let mut observed_from = listening_from();
    loop {
        tick.tick().await;
        let state = link.state();
        if state.connects != seen.connects {
            // Back after an outage: nodes get time to come back too before any is lost.
            observed_from = listening_from();
        }
        seen = state;
        if !state.connected {
            continue;
        }
        // Heartbeats that arrived while the store refused writes were not recorded:
        // silence counts only from shortly after the store's last failure.
        let from = match crate::store::patience::last_outage() {
            Some(t) => {
                let after =
                    voiyd_messages::time::plus(t, crate::schedule::liveness::RECONNECT_GRACE);
                if millis(&after) > millis(&observed_from) {
                    after
                } else {
                    observed_from
                }
            }
            None => observed_from,
        };
        if let Err(e) = failover::mark_lost_nodes(&ctx, node_timeout, &from).await {
            tracing::warn!(error = %e.message(), "node check failed");
        }
        failover::evacuate(&ctx).await;
        if let Err(e) = placer::place_pending(&ctx).await {
            tracing::warn!(error = %e.message(), "placing pending tasks failed");
        }
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            sweep::run_once(&ctx, &mut sweep).await;
        }
    }
}

/// Longest time between two passes of the workload controllers.
const WORKLOAD_EVERY: Duration = Duration::from_millis(500);
/// Shortest time between two passes: a burst of status changes costs one pass.
const WORKLOAD_GAP: Duration = Duration::from_millis(200);

/// The clock of the set and job controllers: a pass every half second, and sooner when a
/// set's or a job's task changes status (a replica became ready, a task completed), so a
/// rollout or a job moves at the pace of its tasks rather than of the clock.
pub async fn run_workloads(ctx: Ctx, link: voiyd_nats::Link) {
    loop {
        tokio::select! {
            _ = ctx.view.workload_changed() => {}
            _ = tokio::time::sleep(WORKLOAD_EVERY) => {}
        }
        // Both read the view: not before it has caught up with the buckets.
        let ready = ctx.view.wait_ready(Duration::from_millis(1)).await;
        if ready && link.state().connected {
            sets::reconcile_all(&ctx).await;
            jobs::reconcile_all(&ctx).await;
        }
        tokio::time::sleep(WORKLOAD_GAP).await;
    }
}

//! Riding out short store outages. When a NATS node is lost, each stream it led takes
//! writes again only once its other replicas have elected a new leader (a raft election
//! takes seconds); writes in between fail with "no stream found" or time out. Writes that
//! are safe to repeat (a put, a CAS at a known revision) are retried through that window
//! rather than failing a request or dropping a node's report.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long a write keeps being retried: longer than a JetStream leader election.
pub const BUDGET: Duration = Duration::from_secs(12);

/// When this process last saw the store fail a write for want of a leader (ms since
/// the epoch; 0: never). Node heartbeats are not recorded while the store is away, so
/// the node-loss check counts silence only from after the last such failure.
static LAST_OUTAGE: AtomicI64 = AtomicI64::new(0);

/// Records that the store just failed a write in a way that passes (see [`retry`]).
pub fn note_outage() {
    let now = voiyd_messages::time::millis(&voiyd_messages::time::now());
    LAST_OUTAGE.fetch_max(now, Ordering::Relaxed);
}

/// When the store last failed a write that way, if it ever did.
pub fn last_outage() -> Option<voiyd_messages::Timestamp> {
    match LAST_OUTAGE.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(voiyd_messages::time::from_millis(ms)),
    }
}

/// Runs `op` until it succeeds, fails in a way `transient` does not accept, or
/// [`BUDGET`] has passed; pauses double from 100 ms to 1 s between attempts.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    mut op: F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if transient(&e) && start.elapsed() + pause < BUDGET => {
                note_outage();
                tracing::debug!(what, error = %e, "store write failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_within_the_budget() {
        let mut calls = 0;
        let r: Result<u32, String> = retry(
            "t",
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err("busy".to_string())
                    } else {
                        Ok(n)
                    }
                }
            },
            |e| e == "busy",
        )
        .await;
        assert_eq!(r, Ok(4));
        let mut calls = 0;
        let r: Result<u32, String> = retry(
            "t",
            || {
                calls += 1;
                async { Err("bad".to_string()) }
            },
            |e| e == "busy",
        )
        .await;
        assert_eq!((r, calls), (Err("bad".to_string()), 1));
        let start = tokio::time::Instant::now();
        let r: Result<u32, String> =
            retry("t", || async { Err("busy".to_string()) }, |_| true).await;
        assert!(r.is_err());
        assert!(start.elapsed() <= BUDGET, "{:?}", start.elapsed());
        assert!(start.elapsed() >= BUDGET - Duration::from_secs(2));
    }
}

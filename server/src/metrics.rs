//! The server's Prometheus counters: API requests and latencies (recorded as they are
//! served), placements and events (recorded as they are published). The scrape-time
//! gauges are in [`crate::app::scrape`].

use std::collections::BTreeMap;
use std::time::Duration;
use voiyd_metrics as metrics;

/// Records one API request.
pub fn record_request(kind: &str, verb: &str, code: u16, elapsed: Duration) {
    let r = metrics::global();
    let code = code.to_string();
    r.inc(
        "voiyd_api_requests_total",
        "API requests served, by kind, verb and result code",
        &[("kind", kind), ("verb", verb), ("code", &code)],
        1.0,
    );
    r.observe(
        "voiyd_api_request_duration_seconds",
        "Time to serve an API request",
        &[("kind", kind), ("verb", verb)],
        elapsed.as_secs_f64(),
    );
}

/// Records one published event (placements are the `scheduled` events).
pub fn record_event(kind: &str, event_type: &str) {
    let r = metrics::global();
    r.inc(
        "voiyd_events_published_total",
        "Events this server published, by kind and type",
        &[("kind", kind), ("type", event_type)],
        1.0,
    );
    if kind == "task" && event_type == "scheduled" {
        r.inc(
            "voiyd_placements_total",
            "Tasks this server placed on a node",
            &[],
            1.0,
        );
    }
}

/// Counts by a key, for gauges.
pub fn count_by<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in items {
        let k = if i.is_empty() {
            voiyd_messages::phase::TaskPhase::Pending.as_str()
        } else {
            i
        };
        *m.entry(k.to_string()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_phases_with_pending_for_empty() {
        let m = count_by(["Running", "", "Running", "Failed"].into_iter());
        assert_eq!(m.get("Running"), Some(&2));
        assert_eq!(m.get("Pending"), Some(&1));
        assert_eq!(m.get("Failed"), Some(&1));
    }
}

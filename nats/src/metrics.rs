//! The NATS connection's own metric; the registry and the endpoint are `voiyd_metrics`.

/// Records the state of a NATS connection as `voiyd_nats_connected` (1 or 0).
pub fn record_nats_state(client: &async_nats::Client) {
    let up = matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    voiyd_metrics::global().set(
        "voiyd_nats_connected",
        "1 when the NATS connection is up",
        &[],
        if up { 1.0 } else { 0.0 },
    );
}

//! Following the events stream from a sequence on, across reconnects and lost
//! consumers: `voiydctl events -w` and the HTTP API's Server-Sent Events both use it.

use crate::link::Link;
use crate::names;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::Event;

/// Follows the events matching `filter` (see [`names::event_filter`]) after sequence
/// `last`, forever, calling `emit` with each (its `seq` set) in stream order. The
/// ordered consumer is recreated from the last sequence seen whenever it fails (across
/// a reconnect, or a NATS node lost), and anything at or below that sequence is
/// dropped, so nothing is emitted twice or skipped. `interrupted` hears why, with the
/// sequence it resumes after, once per outage.
pub async fn follow(
    nats: &async_nats::Client,
    link: &Link,
    filter: &str,
    mut last: u64,
    mut emit: impl FnMut(Event),
    mut interrupted: impl FnMut(&str, u64),
) -> std::convert::Infallible {
    let js = jetstream::new(nats.clone());
    let mut failures = 0u32;
    loop {
        let before = last;
        let seen = link.state();
        let Err(e) = tokio::select! {
            r = follow_once(&js, filter, &mut last, &mut emit) => r,
            // The consumer may be gone with the NATS node we were connected to; the
            // ordered consumer would only notice after missed heartbeats (many
            // seconds), so start over from the last sequence at once.
            () = link.reconnected_after(seen) => Err("reconnected to NATS".to_string()),
        };
        if last > before {
            failures = 0;
        }
        failures += 1;
        if failures == 1 && !e.starts_with("reconnected") {
            interrupted(&e, last);
        }
        // Back off between attempts so a long outage does not spin.
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
    }
}

async fn follow_once(
    js: &jetstream::Context,
    filter: &str,
    last: &mut u64,
    emit: &mut impl FnMut(Event),
) -> Result<std::convert::Infallible, String> {
    let stream = js
        .get_stream(names::STREAM_EVENTS)
        .await
        .map_err(|e| format!("cannot open stream {}: {e}", names::STREAM_EVENTS))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *last + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot follow events: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot follow events: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        let seq = msg.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq <= *last {
            continue;
        }
        *last = seq;
        match Event::decode(msg.payload.clone()) {
            Ok(mut e) => {
                e.seq = seq;
                emit(e);
            }
            Err(err) => tracing::warn!(seq, error = %err, "skipping an undecodable event"),
        }
    }
    Err("the consumer ended".to_string())
}

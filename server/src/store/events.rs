//! Publishing and reading the events stream.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::{event, Event, EventList, EventsRequest};
use voiyd_nats::names;

/// Publishes typed events to [`names::STREAM_EVENTS`].
#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    source: String,
}

/// Largest number of events one `events.list` returns.
pub const MAX_EVENTS_PER_LIST: u32 = 10_000;

impl Events {
    /// Events published by `source` (the server's id).
    pub fn new(js: jetstream::Context, source: impl Into<String>) -> Self {
        Self {
            js,
            source: source.into(),
        }
    }

    /// Publishes one event. Events are best-effort records, as in Kubernetes: the KV
    /// write they describe has happened and stays the record, so nothing waits for them.
    pub async fn publish(
        &self,
        kind: &str,
        name: &str,
        event_type: &str,
        reason: &str,
        message: String,
        object: Option<event::Object>,
    ) {
        let ev = Event {
            seq: 0,
            time: Some(voiyd_messages::time::now()),
            kind: kind.to_string(),
            name: name.to_string(),
            r#type: event_type.to_string(),
            reason: reason.to_string(),
            message,
            source: self.source.clone(),
            exit_code: 0,
            object,
        };
        self.publish_event(ev).await;
    }

    /// Publishes a complete event (its `source` is kept when set) without asking for
    /// the stream's ack: acks cost three messages per placed task (15% of the scheduler
    /// benchmark's throughput) and bought only a log line (an event that is not stored
    /// was not retried either way). One
    /// connection's messages are stored in the order it sent them, so a server's events
    /// stay in order; a reader may see one a moment after the API reply it follows.
    pub async fn publish_event(&self, mut ev: Event) {
        if ev.source.is_empty() {
            ev.source = self.source.clone();
        }
        crate::metrics::record_event(&ev.kind, &ev.r#type);
        let subject = names::event_subject(&ev.kind, &ev.name, &ev.r#type);
        if let Err(e) = self
            .js
            .client()
            .publish(subject.clone(), ev.encode_to_vec().into())
            .await
        {
            tracing::warn!(%subject, error = %e, "cannot publish event");
        }
    }

    /// Reads events in stream order from `since_seq` (inclusive; 0 = from the start).
    pub async fn list(&self, req: &EventsRequest) -> Result<EventList, String> {
        let limit = match req.limit {
            0 => MAX_EVENTS_PER_LIST,
            n => n.min(MAX_EVENTS_PER_LIST),
        } as usize;
        let stream = self
            .js
            .get_stream(names::STREAM_EVENTS)
            .await
            .map_err(|e| format!("cannot open stream {}: {e}", names::STREAM_EVENTS))?;
        let filter = names::event_filter(
            (!req.kind.is_empty()).then_some(req.kind.as_str()),
            (!req.name.is_empty()).then_some(req.name.as_str()),
        );
        let deliver_policy = if req.since_seq > 0 {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: req.since_seq,
            }
        } else {
            consumer::DeliverPolicy::All
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot read events: {e}"))?;
        // Nothing matches: an ordered consumer would wait forever for the first message.
        let pending = consumer.cached_info().num_pending;
        let mut items = Vec::new();
        if pending == 0 {
            return Ok(EventList { items });
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("cannot read events: {e}"))?;
        while items.len() < limit {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            let info = msg.info().map_err(|e| format!("bad event metadata: {e}"))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            match Event::decode(msg.payload.clone()) {
                Ok(mut ev) => {
                    ev.seq = seq;
                    items.push(ev);
                }
                Err(e) => tracing::warn!(seq, error = %e, "skipping undecodable event"),
            }
            if left == 0 {
                break;
            }
        }
        Ok(EventList { items })
    }
}

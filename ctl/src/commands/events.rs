//! `events [-w]`: reads the event stream through the API, then follows it directly
//! with an ordered JetStream consumer.

use crate::cli::{EventOutput, EventsArgs};
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::render;
use crate::timefmt::{now_secs, parse_duration};
use std::time::Duration;
use voiyd_messages::v1::{Event, EventsRequest};
use voiyd_messages::Kind;
use voiyd_nats::api::ApiClient;
use voiyd_nats::names;

/// Where `--since` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From the first event.
    Start,
    /// From this stream sequence (inclusive).
    Seq(u64),
    /// Events no older than this.
    Ago(Duration),
}

/// Parses `--since`: a bare number is a sequence, anything with a unit a duration.
pub fn parse_since(text: &str) -> Result<Since, String> {
    let t = text.trim();
    if let Ok(seq) = t.parse::<u64>() {
        return Ok(Since::Seq(seq));
    }
    parse_duration(t).map(Since::Ago).map_err(|_| {
        format!(
            "invalid --since `{text}`: give a sequence number (e.g. 120) or a duration (e.g. 10m)"
        )
    })
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Event kind as the stream spells it (`task`), or empty.
    pub kind: String,
    /// Resource name, or empty.
    pub name: String,
    /// First sequence to read (0 = from the start).
    pub from_seq: u64,
    /// Oldest event time to show, Unix seconds (0 = no limit).
    pub min_time: i64,
}

impl Query {
    fn from_args(args: &EventsArgs) -> Result<Query> {
        let mut q = Query {
            // Kinds are accepted the way `get` takes them, sent the way events spell them.
            kind: args
                .kind
                .as_deref()
                .map(|k| {
                    Kind::parse(k)
                        .map(|k| k.singular().to_string())
                        .unwrap_or_else(|| k.to_string())
                })
                .unwrap_or_default(),
            name: args.name.clone().unwrap_or_default(),
            ..Query::default()
        };
        match args
            .since
            .as_deref()
            .map(parse_since)
            .transpose()
            .map_err(CtlError::Usage)?
        {
            None | Some(Since::Start) => {}
            Some(Since::Seq(s)) => q.from_seq = s,
            Some(Since::Ago(d)) => q.min_time = now_secs() - d.as_secs() as i64,
        }
        Ok(q)
    }

    fn wants(&self, e: &Event) -> bool {
        self.min_time == 0 || e.time.as_ref().is_some_and(|t| t.seconds >= self.min_time)
    }
}

/// Reads all matching events through the API, in pages, calling `emit` for each;
/// returns the last sequence seen (or `from_seq - 1` when none).
async fn read_all(api: &ApiClient, q: &Query, mut emit: impl FnMut(&Event)) -> Result<u64> {
    let mut last = q.from_seq.saturating_sub(1);
    loop {
        let req = EventsRequest {
            since_seq: last + 1,
            limit: 0,
            kind: q.kind.clone(),
            name: q.name.clone(),
        };
        let list = api.events(&req).await?;
        let mut progressed = false;
        for e in &list.items {
            if e.seq <= last {
                continue;
            }
            last = e.seq;
            progressed = true;
            if q.wants(e) {
                emit(e);
            }
        }
        if !progressed {
            return Ok(last);
        }
    }
}

/// Lists events once (`get events`, `events` without -w).
pub async fn list_once(
    globals: &Globals,
    args: Option<&EventsArgs>,
    output: EventOutput,
) -> Result<()> {
    let q = match args {
        Some(a) => Query::from_args(a)?,
        None => Query::default(),
    };
    let session = connection::session(globals).await?;
    let mut events = Vec::new();
    read_all(&session.api, &q, |e| events.push(e.clone())).await?;
    match output {
        EventOutput::Json => events
            .iter()
            .for_each(|e| out!("{}", render::event_json_line(e))),
        EventOutput::Table if events.is_empty() => eprintln!("No events found."),
        EventOutput::Table => out!("{}", render::render_events(&events, now_secs())),
    }
    Ok(())
}

/// `events`.
pub async fn run(globals: &Globals, args: &EventsArgs) -> Result<()> {
    if !args.watch {
        return list_once(globals, Some(args), args.output).await;
    }
    let q = Query::from_args(args)?;
    let session = connection::session(globals).await?;
    let output = args.output;
    let show = |e: &Event| match output {
        EventOutput::Json => out!("{}", render::event_json_line(e)),
        EventOutput::Table => out!("{}", render::event_line(e, now_secs())),
    };
    if output == EventOutput::Table {
        out!("{}", render::event_header_line());
    }
    let last = read_all(&session.api, &q, show).await?;
    tokio::select! {
        r = follow(session.api.nats(), &session.link, &q, last, show) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Follows the stream after `last`, forever (see [`voiyd_nats::events::follow`]).
pub async fn follow(
    nats: &async_nats::Client,
    link: &voiyd_nats::Link,
    q: &Query,
    last: u64,
    show: impl Fn(&Event),
) -> Result<()> {
    let filter = names::event_filter(
        (!q.kind.is_empty()).then_some(q.kind.as_str()),
        (!q.name.is_empty()).then_some(q.name.as_str()),
    );
    let emit = |e: Event| {
        if q.wants(&e) {
            show(&e);
        }
    };
    let interrupted = |why: &str, last: u64| {
        eprintln!("warning: event stream interrupted ({why}); resuming after sequence {last}");
    };
    match voiyd_nats::events::follow(nats, link, &filter, last, emit, interrupted).await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since() {
        assert_eq!(parse_since("120").unwrap(), Since::Seq(120));
        assert_eq!(
            parse_since("10m").unwrap(),
            Since::Ago(Duration::from_secs(600))
        );
        assert_eq!(
            parse_since("yesterday").unwrap_err(),
            "invalid --since `yesterday`: give a sequence number (e.g. 120) or a duration (e.g. 10m)"
        );
    }
}

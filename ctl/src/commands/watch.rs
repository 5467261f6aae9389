//! `get KIND -w`: the list, then every change to the kind as it happens, like
//! `kubectl get -w`.
//!
//! Changes are found on the event stream (every create, update, delete and phase
//! change of a resource is an event), followed from the stream's position *before*
//! the list was read, so nothing between the list and the watch is missed. Each
//! event names a resource that is then read again through the API: the row shown is
//! always the whole current state. Events that arrive in a burst are coalesced per
//! name, and a row identical to the last one shown for that name is not repeated.

use crate::cli::{GetArgs, Output};
use crate::commands::events::{self, Query};
use crate::connection::Session;
use crate::error::{CtlError, Result};
use crate::render::Row;
use crate::table;
use crate::timefmt::now_secs;
use async_nats::jetstream;
use std::collections::HashMap;
use voiyd_messages::fields::FieldSelector;
use voiyd_messages::manifest;
use voiyd_messages::selector::Selector;
use voiyd_messages::v1::{Event, ListRequest};
use voiyd_nats::api::ApiError;
use voiyd_nats::names;

/// What happened to a resource, as `--output-watch-events` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// First seen.
    Added,
    /// Seen before, now different.
    Modified,
    /// Gone (or no longer matches the selectors).
    Deleted,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// Prints a watch: rows in the columns of the first screen, or one document per change.
/// Remembers the last state shown per name. Pure apart from the text it returns.
pub struct Printer<R: Row> {
    output: Output,
    with_events: bool,
    widths: Vec<usize>,
    shown: HashMap<String, R>,
}

impl<R: Row> Printer<R> {
    /// A printer for this output format; `with_events` adds what happened to each line.
    pub fn new(output: Output, with_events: bool) -> Self {
        Printer {
            output,
            with_events,
            widths: Vec::new(),
            shown: HashMap::new(),
        }
    }

    fn wide(&self) -> bool {
        self.output == Output::Wide
    }

    fn headers(&self) -> Vec<&'static str> {
        let mut h = R::headers(self.wide());
        if self.with_events {
            h.insert(0, "EVENT");
        }
        h
    }

    fn cells(&self, change: Change, r: &R, now: i64) -> Vec<String> {
        let mut cells = r.row(now, self.wide());
        if self.with_events {
            cells.insert(0, change.as_str().to_string());
        }
        cells
    }

    /// The first screen: the header (in table form) and every listed resource.
    pub fn start(&mut self, items: Vec<R>, now: i64) -> String {
        let mut out = String::new();
        if matches!(self.output, Output::Table | Output::Wide) {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| self.cells(Change::Added, r, now))
                .collect();
            let headers = self.headers();
            self.widths = table::widths(&headers, &rows);
            // Room for names and phases that arrive later and are longer than the first.
            for (w, h) in self.widths.iter_mut().zip(&headers) {
                match *h {
                    "NAME" | "PHASE" | "NODE" => *w = (*w).max(12),
                    "EVENT" => *w = (*w).max(8),
                    _ => {}
                }
            }
            out.push_str(&table::line(&self.widths, headers.iter().copied()));
            for row in &rows {
                out.push_str(&table::line(&self.widths, row.iter().map(String::as_str)));
            }
            for r in items {
                self.shown.insert(r.name().to_string(), r);
            }
        } else {
            for r in items {
                out.push_str(&self.change(Change::Added, r, now).unwrap_or_default());
            }
        }
        out
    }

    /// The text for a resource's new state: `None` when it is gone (or filtered out)
    /// and was not shown, or when nothing shown changed.
    pub fn update(&mut self, name: &str, now_state: Option<R>, now: i64) -> Option<String> {
        match now_state {
            Some(r) => {
                let change = match self.shown.get(name) {
                    Some(prev) if *prev == r => return None,
                    Some(_) => Change::Modified,
                    None => Change::Added,
                };
                self.change(change, r, now)
            }
            None => {
                let prev = self.shown.get(name)?.clone();
                self.change(Change::Deleted, prev, now)
            }
        }
    }

    fn change(&mut self, change: Change, r: R, now: i64) -> Option<String> {
        let text = match self.output {
            Output::Table | Output::Wide => {
                let cells = self.cells(change, &r, now);
                table::line(&self.widths, cells.iter().map(String::as_str))
            }
            Output::Json => {
                let line = if self.with_events {
                    serde_json::to_string(&serde_json::json!({
                        "type": change.as_str(),
                        "object": r,
                    }))
                } else {
                    serde_json::to_string(&r)
                };
                let mut s = line.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
                s.push('\n');
                s
            }
            Output::Yaml => {
                let mut doc = String::from("---\n");
                if self.with_events {
                    doc.push_str(&format!("# {}\n", change.as_str()));
                }
                doc.push_str(&manifest::to_yaml(&r));
                if !doc.ends_with('\n') {
                    doc.push('\n');
                }
                doc
            }
            Output::Name => match self.with_events {
                true => format!("{} {}/{}\n", change.as_str(), R::KIND.singular(), r.name()),
                false => format!("{}/{}\n", R::KIND.singular(), r.name()),
            },
        };
        let name = r.name().to_string();
        if change == Change::Deleted {
            self.shown.remove(&name);
        } else {
            self.shown.insert(name, r);
        }
        Some(text)
    }
}

/// The names in a burst of events, each once, in order of first appearance.
pub fn coalesce(events: &[Event]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| !e.name.is_empty() && seen.insert(e.name.clone()))
        .map(|e| e.name.clone())
        .collect()
}

/// Runs `get KIND -w` until Ctrl-C. `names`, when given, limits the watch to them.
pub async fn run<R: Row>(session: &Session, args: &GetArgs, req: ListRequest) -> Result<()> {
    let labels = Selector::parse(&req.selector).map_err(|e| CtlError::Usage(e.to_string()))?;
    let fields = FieldSelector::parse(&req.field_selector, R::FIELDS)
        .map_err(|e| CtlError::Usage(e.to_string()))?;
    let api = &session.api;
    let wanted = |r: &R| {
        (args.names.is_empty() || args.names.iter().any(|n| n == r.name()))
            && labels.matches(&r.labels())
            && fields.matches(r)
    };
    let js = jetstream::new(api.nats().clone());
    let unavailable = |e: &dyn std::fmt::Display| {
        CtlError::Other(format!(
            "cannot read the event stream {} to watch: {e}",
            names::STREAM_EVENTS
        ))
    };
    // The stream's position before the list: changes after it are all shown.
    let last = js
        .get_stream(names::STREAM_EVENTS)
        .await
        .map_err(|e| unavailable(&e))?
        .info()
        .await
        .map_err(|e| unavailable(&e))?
        .state
        .last_sequence;
    let mut printer = Printer::<R>::new(args.output, args.output_watch_events);
    let first = if args.watch_only {
        Vec::new()
    } else if args.names.is_empty() {
        api.list_with::<R>(&req).await?
    } else {
        let mut items = Vec::new();
        for name in &args.names {
            match api.get::<R>(name).await {
                Ok(r) => items.push(r),
                Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        items
    };
    out!("{}", printer.start(first, now_secs()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let q = Query {
        kind: R::KIND.singular().to_string(),
        name: match args.names.as_slice() {
            [one] => one.clone(),
            _ => String::new(),
        },
        ..Query::default()
    };
    let follow = events::follow(api.nats(), &session.link, &q, last, move |e| {
        let _ = tx.send(e.clone());
    });
    let apply = async {
        while let Some(e) = rx.recv().await {
            let mut burst = vec![e];
            while let Ok(e) = rx.try_recv() {
                burst.push(e);
            }
            for name in coalesce(&burst) {
                let state = match api.get::<R>(&name).await {
                    Ok(r) => Some(r).filter(&wanted),
                    Err(ApiError::NotFound(_)) => None,
                    Err(e) => {
                        eprintln!("warning: cannot read {} {name}: {e}", R::KIND.singular());
                        continue;
                    }
                };
                if let Some(text) = printer.update(&name, state, now_secs()) {
                    out!("{text}");
                }
            }
        }
        Ok(())
    };
    tokio::select! {
        r = follow => r,
        r = apply => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::{Task, TaskConfig, TaskStatus};

    fn task(name: &str, phase: &str) -> Task {
        Task::new(name, TaskConfig::default()).with_status(TaskStatus {
            phase: phase.into(),
            ..Default::default()
        })
    }

    #[test]
    fn rows_keep_the_first_columns_and_repeat_nothing() {
        let mut p = Printer::<Task>::new(Output::Table, true);
        let first = p.start(vec![task("a", "Running")], 0);
        let lines: Vec<&str> = first.lines().collect();
        assert!(lines[0].starts_with("EVENT"), "{first}");
        assert!(lines[1].starts_with("ADDED") && lines[1].contains("Running"));
        assert_eq!(p.update("a", Some(task("a", "Running")), 0), None);
        let m = p.update("a", Some(task("a", "Stopped")), 0).unwrap();
        assert!(m.starts_with("MODIFIED") && m.contains("Stopped"), "{m}");
        // Columns line up with the header.
        let col = lines[0].find("NAME").unwrap();
        assert_eq!(&m[col..col + 1], "a");
        let d = p.update("a", None, 0).unwrap();
        assert!(d.starts_with("DELETED"), "{d}");
        assert_eq!(p.update("a", None, 0), None);
        let added = p.update("b", Some(task("b", "Pending")), 0).unwrap();
        assert!(added.starts_with("ADDED"), "{added}");
    }

    #[test]
    fn json_lines_and_names() {
        let mut p = Printer::<Task>::new(Output::Json, true);
        let line = p.update("a", Some(task("a", "Running")), 0).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["type"], "ADDED");
        assert_eq!(v["object"]["meta"]["name"], "a");
        let mut n = Printer::<Task>::new(Output::Name, false);
        assert_eq!(n.start(vec![task("a", "")], 0), "task/a\n");
    }

    #[test]
    fn bursts_coalesce_per_name() {
        let ev = |n: &str| Event {
            name: n.into(),
            ..Default::default()
        };
        assert_eq!(
            coalesce(&[ev("b"), ev("a"), ev("b"), ev("")]),
            vec!["b".to_string(), "a".to_string()]
        );
    }
}

//! Rendering resources for `get`: tables, JSON, YAML and names. Everything here is
//! pure: data in, text out.

use crate::checks;
use crate::cli::Output;
use crate::table;
use crate::timefmt::{age_of, relative};
use voiyd_messages::manifest;
use voiyd_messages::v1::{ContainerSet, Event, Job, Lease, Node, Secret, Task, Volume};
use voiyd_messages::Resource;

/// A resource that has a row in a `get` table.
pub trait Row: Resource {
    /// Column headers.
    fn headers(wide: bool) -> Vec<&'static str>;
    /// The cells of this resource; `now` is Unix seconds.
    fn row(&self, now: i64, wide: bool) -> Vec<String>;
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn labels_cell(r: &impl Resource) -> String {
    let l = r.labels();
    if l.is_empty() {
        return "-".to_string();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Row for Task {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "PHASE", "NODE", "RESTARTS", "AGE"];
        if wide {
            h.extend(["IMAGE", "IP", "ID", "REASON"]);
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let st = self.status.clone().unwrap_or_default();
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let phase = if st.phase.is_empty() {
            voiyd_messages::phase::TaskPhase::Pending.to_string()
        } else {
            st.phase.clone()
        };
        // As kubectl shows it: ready containers of the task's one.
        let ready = st.conditions.iter().any(|c| {
            c.r#type == voiyd_messages::condition::ConditionType::Ready
                && c.status == voiyd_messages::condition::status(true)
        });
        let mut r = vec![
            self.name().to_string(),
            if ready { "1/1" } else { "0/1" }.to_string(),
            phase,
            dash(&st.node),
            st.restart_count.to_string(),
            age_of(created, now),
        ];
        if wide {
            let image = self.config.as_ref().map(|c| c.image.as_str()).unwrap_or("");
            let mut id = st.id.clone();
            id.truncate(12);
            r.extend([dash(image), dash(&st.ip), dash(&id), dash(&st.reason)]);
        }
        r
    }
}

impl Row for Node {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "STATE", "CPU", "MEMORY", "VERSION", "AGE"];
        if wide {
            h.extend(["RUNTIME", "OS/ARCH", "ADDRESSES", "AGENT", "LABELS"]);
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let st = self.status.clone().unwrap_or_default();
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let mut state = if st.phase.is_empty() {
            "Unknown".to_string()
        } else {
            st.phase.clone()
        };
        if self.config.as_ref().is_some_and(|c| c.unschedulable) {
            state.push_str(",SchedulingDisabled");
        }
        let (cpu, mem) = match &st.capacity {
            Some(cap) => {
                let alloc = st.allocated.unwrap_or_default();
                (
                    format!(
                        "{}/{}",
                        checks::format_cpu(alloc.cpu_millis),
                        checks::format_cpu(cap.cpu_millis)
                    ),
                    format!(
                        "{}/{}",
                        checks::format_memory(alloc.memory_bytes),
                        checks::format_memory(cap.memory_bytes)
                    ),
                )
            }
            None => ("-".to_string(), "-".to_string()),
        };
        let mut r = vec![
            self.name().to_string(),
            state,
            cpu,
            mem,
            dash(&st.version),
            age_of(created, now),
        ];
        if wide {
            let runtime = format!("{} {}", st.runtime, st.runtime_version);
            let os_arch = if st.os.is_empty() && st.arch.is_empty() {
                String::new()
            } else {
                format!("{}/{}", st.os, st.arch)
            };
            r.extend([
                dash(runtime.trim()),
                dash(&os_arch),
                dash(&st.addresses.join(",")),
                // The agent's binary: its SHA-256, short (what `upgrade nodes` moves).
                dash(&st.agent_digest.chars().take(12).collect::<String>()),
                labels_cell(self),
            ]);
        }
        r
    }
}

impl Row for Volume {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "TYPE", "NODES", "USED BY", "AGE"];
        if wide {
            h.push("LABELS");
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let ty = match &self.config {
            Some(c) if c.host_local.is_some() => "host-local",
            Some(c) if c.template.is_some() => "template",
            _ => "",
        };
        // Where the data lives, and how much of it: `n1 (12.5Mi)`.
        let nodes = self
            .status
            .as_ref()
            .map(|s| {
                s.controllers
                    .iter()
                    .map(|(node, c)| {
                        format!("{node} ({})", crate::commands::top::bytes(c.size_bytes))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mut users: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| s.controllers.values())
            .flat_map(|c| c.in_use_by.iter().cloned())
            .collect();
        users.sort();
        users.dedup();
        let mut r = vec![
            self.name().to_string(),
            dash(ty),
            dash(&nodes),
            dash(&users.join(",")),
            age_of(created, now),
        ];
        if wide {
            r.push(labels_cell(self));
        }
        r
    }
}

impl Row for Secret {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "KEYS", "AGE"];
        if wide {
            h.push("LABELS");
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let mut r = vec![
            self.name().to_string(),
            dash(&self.keys.join(",")),
            age_of(created, now),
        ];
        if wide {
            r.push(labels_cell(self));
        }
        r
    }
}

impl Row for ContainerSet {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "DESIRED", "READY", "UPDATED", "AVAILABLE", "AGE"];
        if wide {
            h.push("IMAGE");
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let st = self.status.clone().unwrap_or_default();
        // Before the controller reports, the spec says what is desired.
        let desired = if self.status.is_some() {
            st.desired
        } else {
            self.replicas.unwrap_or(1)
        };
        let mut r = vec![
            self.name().to_string(),
            desired.to_string(),
            st.ready.to_string(),
            st.updated.to_string(),
            st.available.to_string(),
            age_of(created, now),
        ];
        if wide {
            let image = self
                .template
                .as_ref()
                .map(|t| t.image.as_str())
                .unwrap_or("");
            r.push(dash(image));
        }
        r
    }
}

impl Row for Job {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME",
            "SCHEDULE",
            "COMPLETIONS",
            "ACTIVE",
            "FAILED",
            "STATUS",
            "AGE",
        ];
        if wide {
            h.extend(["LAST SCHEDULE", "IMAGE"]);
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let created = self.meta.as_ref().and_then(|m| m.created.as_ref());
        let st = self.status.clone().unwrap_or_default();
        let cron = !self.schedule.is_empty();
        let finished = st.conditions.iter().find(|c| {
            c.status == voiyd_messages::condition::status(true)
                && (c.r#type == voiyd_messages::condition::ConditionType::Complete
                    || c.r#type == voiyd_messages::condition::ConditionType::Failed)
        });
        let status = match finished {
            Some(c) if c.reason.is_empty() => c.r#type.clone(),
            Some(c) => format!("{} ({})", c.r#type, c.reason),
            None if cron => "Scheduled".to_string(),
            None => "Running".to_string(),
        };
        let mut r = vec![
            self.name().to_string(),
            if cron {
                self.schedule.clone()
            } else {
                "-".into()
            },
            if cron {
                "-".into()
            } else {
                format!("{}/{}", st.succeeded, self.completions.unwrap_or(1))
            },
            st.active.to_string(),
            if cron {
                "-".into()
            } else {
                st.failed.to_string()
            },
            status,
            age_of(created, now),
        ];
        if wide {
            r.push(age_of(st.last_schedule_time.as_ref(), now));
            let image = self
                .template
                .as_ref()
                .map(|t| t.image.as_str())
                .unwrap_or("");
            r.push(dash(image));
        }
        r
    }
}

impl Row for Lease {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "TASK", "HOLDER", "RENEWALS", "EXPIRES"];
        if wide {
            h.extend(["ACQUIRED", "TTL"]);
        }
        h
    }
    fn row(&self, now: i64, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.name().to_string(),
            dash(&self.task),
            dash(&self.holder),
            self.renewals.to_string(),
            relative(self.expires.as_ref(), now),
        ];
        if wide {
            r.push(relative(self.acquired.as_ref(), now));
            r.push(format!("{}s", self.ttl_seconds));
        }
        r
    }
}

/// Renders resources in the chosen format. `single` is true when the user named
/// exactly one resource, so JSON prints an object instead of an array.
pub fn render_resources<R: Row>(items: &[R], output: Output, now: i64, single: bool) -> String {
    match output {
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let rows: Vec<Vec<String>> = items.iter().map(|r| r.row(now, wide)).collect();
            table::render(&R::headers(wide), &rows)
        }
        Output::Json => {
            let mut s = if single && items.len() == 1 {
                manifest::to_json(&items[0])
            } else {
                // An array, which `apply -f` reads back as a list of documents.
                manifest::to_json(&items)
            };
            s.push('\n');
            s
        }
        Output::Yaml => yaml_stream(items),
        Output::Name => items
            .iter()
            .map(|r| format!("{}/{}\n", R::KIND.singular(), r.name()))
            .collect(),
    }
}

/// Renders resources as a YAML stream: one document each, `---` between them.
pub fn yaml_stream<R: Resource>(items: &[R]) -> String {
    items
        .iter()
        .map(|r| {
            let mut doc = manifest::to_yaml(r);
            if !doc.ends_with('\n') {
                doc.push('\n');
            }
            doc
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Column headers of the events table.
pub fn event_headers() -> Vec<&'static str> {
    vec![
        "SEQ", "AGE", "KIND", "NAME", "TYPE", "REASON", "SOURCE", "MESSAGE",
    ]
}

/// One row of the events table.
pub fn event_row(e: &Event, now: i64) -> Vec<String> {
    vec![
        e.seq.to_string(),
        age_of(e.time.as_ref(), now),
        dash(&e.kind),
        dash(&e.name),
        dash(&e.r#type),
        dash(&e.reason),
        dash(&e.source),
        e.message.replace(['\r', '\n'], " "),
    ]
}

/// Renders events as a table.
pub fn render_events(events: &[Event], now: i64) -> String {
    let rows: Vec<Vec<String>> = events.iter().map(|e| event_row(e, now)).collect();
    table::render(&event_headers(), &rows)
}

/// One event as one line of JSON (the form `events -o json` streams).
pub fn event_json_line(e: &Event) -> String {
    let mut s = serde_json::to_string(e).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// A one-line live view of an event, for `events -w` in table form (no header
/// alignment is possible when rows arrive one by one, so fields are tab-free and fixed).
pub fn event_line(e: &Event, now: i64) -> String {
    let cells = event_row(e, now);
    let mut s = format!(
        "{:<8} {:<4} {:<8} {:<20} {:<10} {:<16} {:<12} {}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
    );
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

/// The header of the live event view ([`event_line`]).
pub fn event_header_line() -> String {
    let h = event_headers();
    let mut s = format!(
        "{:<8} {:<4} {:<8} {:<20} {:<10} {:<16} {:<12} {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    );
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

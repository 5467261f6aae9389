//! `logs TASK | set/NAME | -l SELECTOR`: a task's output, streamed from the node that
//! runs (or ran) it through that node's own subject. Several tasks are merged, each
//! line prefixed with its task. When the task is gone or its node does not answer, and
//! with `--previous`, the lines come from the logs stream the nodes ship to.

use crate::cli::LogsArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::timefmt::parse_duration;
use std::time::{SystemTime, UNIX_EPOCH};
use voiyd_messages::v1::{LogChunk, LogLine, LogRequest, Task};
use voiyd_messages::Resource;
use voiyd_nats::api::{ApiClient, ApiError};
use voiyd_nats::stream::{ClientStream, StreamError};

/// Label that marks the tasks of a container set.
pub const SET_LABEL: &str = voiyd_messages::labels::SET;
use voiyd_messages::labels::JOB as JOB_LABEL;

/// Parses `--since`: a duration ago (`10m`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<pbjson_types::Timestamp, String> {
    if let Ok(d) = parse_duration(text) {
        let t = now.checked_sub(d).unwrap_or(UNIX_EPOCH);
        return Ok(voiyd_messages::time::from_system(t));
    }
    serde_json::from_value::<pbjson_types::Timestamp>(serde_json::Value::String(text.into()))
        .map_err(|_| {
            format!("invalid --since `{text}`: give a duration (e.g. 10m) or a time (e.g. 2024-05-01T10:00:00Z)")
        })
}

/// One printed line: `[task] ` when merging, the time with `--timestamps`, the text.
pub fn format_line(task: Option<&str>, line: &LogLine, timestamps: bool) -> String {
    let mut out = String::new();
    if let Some(t) = task {
        out.push_str(&format!("[{t}] "));
    }
    if timestamps {
        if let Some(ts) = &line.time {
            out.push_str(&rfc3339(ts));
            out.push(' ');
        }
    }
    out.push_str(&line.text);
    out.push('\n');
    out
}

fn rfc3339(ts: &pbjson_types::Timestamp) -> String {
    serde_json::to_value(ts)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn key(l: &LogLine) -> (i64, i32) {
    l.time
        .as_ref()
        .map(|t| (t.seconds, t.nanos))
        .unwrap_or((0, 0))
}

/// The tasks a `logs` invocation names.
async fn targets(api: &ApiClient, args: &LogsArgs) -> Result<Vec<Task>> {
    if let Some(sel) = &args.selector {
        if args.target.is_some() {
            return Err(CtlError::Usage(
                "give a task or -l SELECTOR, not both".into(),
            ));
        }
        let tasks: Vec<Task> = api.list(sel).await?;
        if tasks.is_empty() {
            return Err(CtlError::Other(format!("no tasks match `{sel}`")));
        }
        return Ok(tasks);
    }
    let Some(target) = args.target.as_deref() else {
        return Err(CtlError::Usage(
            "name a task (voiydctl logs TASK), a set (set/NAME), a job (job/NAME) or give -l SELECTOR".into(),
        ));
    };
    let (kind, name) = match target.split_once('/') {
        Some((k, n)) => (k, n),
        None => ("task", target),
    };
    match kind {
        "task" | "tasks" => Ok(vec![api.get::<Task>(name).await?]),
        "set" | "sets" | "containerset" => {
            api.get::<voiyd_messages::v1::ContainerSet>(name).await?;
            let tasks: Vec<Task> = api.list(&format!("{SET_LABEL}={name}")).await?;
            if tasks.is_empty() {
                return Err(CtlError::Other(format!("set {name} has no tasks")));
            }
            Ok(tasks)
        }
        "job" | "jobs" => {
            api.get::<voiyd_messages::v1::Job>(name).await?;
            let tasks: Vec<Task> = api.list(&format!("{JOB_LABEL}={name}")).await?;
            if tasks.is_empty() {
                return Err(CtlError::Other(format!(
                    "job {name} has no tasks (a cron job's runs are jobs of their own: `voiydctl get jobs -l voiyd.io/cronjob={name}`)"
                )));
            }
            Ok(tasks)
        }
        other => Err(CtlError::Usage(format!(
            "cannot show logs of `{other}`: use TASK, task/NAME, set/NAME or job/NAME"
        ))),
    }
}

fn node_of(t: &Task) -> Result<String> {
    let name = t.meta().map(|m| m.name.clone()).unwrap_or_default();
    match t.status.as_ref().map(|s| s.node.as_str()) {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(CtlError::Other(format!(
            "task {name} has not run on any node yet, so it has no logs"
        ))),
    }
}

fn stream_err(e: StreamError) -> CtlError {
    CtlError::Other(e.to_string())
}

/// `logs`.
pub async fn run(globals: &Globals, args: &LogsArgs) -> Result<()> {
    if args.stdout && args.stderr {
        return Err(CtlError::Usage(
            "--stdout and --stderr together are the default: give at most one".into(),
        ));
    }
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()
        .map_err(CtlError::Usage)?;
    let req = LogRequest {
        follow: args.follow,
        tail: args.tail,
        since,
        stream: if args.stdout {
            "stdout".into()
        } else if args.stderr {
            "stderr".into()
        } else {
            String::new()
        },
        deliver_to: String::new(),
    };
    let session = connection::session(globals).await?;
    let store = Stored {
        js: async_nats::jetstream::new(session.api.nats().clone()),
        timeout: globals.api_timeout.max(std::time::Duration::from_secs(10)),
        req: req.clone(),
    };
    let tasks = match targets(&session.api, args).await {
        Ok(tasks) => tasks,
        // A deleted task: what the cluster stored of it.
        Err(CtlError::Api(ApiError::NotFound(message))) if single_task(args).is_some() => {
            let name = single_task(args).unwrap_or_default();
            let lines = store.lines(name, args.previous).await?;
            if lines.is_empty() {
                return Err(CtlError::Api(ApiError::NotFound(message)));
            }
            eprintln!("task {name} does not exist any more: showing the output the cluster stored");
            let merged = args.prefix;
            for l in &lines {
                print_line(merged.then_some(name), l, args.timestamps);
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // A set's, a job's or a selector's tasks: prefixed, and (with -f) followed as they come.
    let group = args.selector.is_some()
        || args
            .target
            .as_deref()
            .and_then(|t| t.split_once('/'))
            .is_some_and(|(kind, _)| !matches!(kind, "task" | "tasks"));
    let merged = tasks.len() > 1 || group || args.prefix;
    if args.previous {
        let mut all: Vec<(String, LogLine)> = Vec::new();
        for t in &tasks {
            let name = t.meta().map(|m| m.name.clone()).unwrap_or_default();
            match store.lines(&name, true).await {
                Ok(lines) => all.extend(lines.into_iter().map(|l| (name.clone(), l))),
                Err(e) if merged => eprintln!("warning: {e}"),
                Err(e) => return Err(e),
            }
        }
        all.sort_by_key(|(_, l)| key(l));
        for (task, l) in &all {
            print_line(merged.then_some(task), l, args.timestamps);
        }
        return Ok(());
    }
    let nats = session.api.nats().clone();
    let mut opened = Vec::new();
    // Lines of tasks whose node could not serve them, from the logs stream.
    let mut stored: Vec<(String, LogLine)> = Vec::new();
    // What is being followed, by task name and uid (a replaced replica has a new uid).
    let mut seen: std::collections::HashSet<(String, String)> =
        tasks.iter().map(identity).collect();
    for t in &tasks {
        let name = t.meta().map(|m| m.name.clone()).unwrap_or_default();
        let live = match node_of(t) {
            Ok(node) => ClientStream::open_logs(&nats, &node, &name, &req, globals.api_timeout)
                .await
                .map_err(stream_err),
            Err(e) => Err(e),
        };
        match live {
            Ok(s) => opened.push((name, s)),
            Err(e) => {
                // The node is down, cut off, or no longer has the task: the stream may.
                let lines = store.lines(&name, false).await.unwrap_or_default();
                if !lines.is_empty() {
                    eprintln!("warning: {name}: {e}; showing the output the cluster stored");
                    stored.extend(lines.into_iter().map(|l| (name.clone(), l)));
                } else if merged {
                    eprintln!("warning: logs of {name}: {e}");
                } else {
                    return Err(e);
                }
            }
        }
    }
    if opened.is_empty() && stored.is_empty() {
        return Err(CtlError::Other("no logs could be read".into()));
    }
    let show = |task: &str, l: &LogLine| print_line(merged.then_some(task), l, args.timestamps);
    if !args.follow {
        // History only: read every stream to its end, then print merged by time.
        let mut all: Vec<(String, LogLine)> = stored;
        for (task, mut s) in opened {
            loop {
                let chunk: LogChunk = s.next().await.map_err(stream_err)?;
                all.extend(chunk.lines.into_iter().map(|l| (task.clone(), l)));
                if chunk.end {
                    if !chunk.error.is_empty() {
                        eprintln!("warning: {task}: {}", chunk.error);
                    }
                    break;
                }
            }
        }
        all.sort_by_key(|(_, l)| key(l));
        for (task, l) in &all {
            show(task, l);
        }
        return Ok(());
    }
    // Follow: what was stored of unreachable tasks first, then each live stream's lines
    // as they come, until interrupted.
    stored.sort_by_key(|(_, l)| key(l));
    for (task, l) in &stored {
        show(task, l);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<LogChunk>)>(64);
    for (task, s) in opened {
        relay(task, s, tx.clone());
    }
    // A set's, a job's or a selector's tasks come and go: look for new ones every second
    // and follow them from their first line.
    if group {
        let (api, req, tx) = (session.api.clone(), req.clone(), tx.clone());
        let (args, timeout) = (args.clone(), globals.api_timeout);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(NEW_TASKS_EVERY).await;
                let Ok(now) = targets(&api, &args).await else {
                    continue;
                };
                for t in now {
                    let id = identity(&t);
                    let Ok(node) = node_of(&t) else { continue };
                    if seen.contains(&id) {
                        continue;
                    }
                    let whole = LogRequest {
                        tail: None,
                        since: None,
                        ..req.clone()
                    };
                    if let Ok(s) =
                        ClientStream::open_logs(api.nats(), &node, &id.0, &whole, timeout).await
                    {
                        seen.insert(id.clone());
                        relay(id.0, s, tx.clone());
                    }
                }
            }
        });
    }
    drop(tx);
    let mut failed = None;
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((task, Ok(chunk))) => {
                    for l in &chunk.lines {
                        show(&task, l);
                    }
                    if chunk.end && !chunk.error.is_empty() {
                        eprintln!("{task}: {}", chunk.error);
                    }
                }
                Some((task, Err(e))) => {
                    eprintln!("error: {task}: {e}");
                    failed = Some(e);
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Prints one line: stderr lines to stderr.
fn print_line(task: Option<&str>, l: &LogLine, timestamps: bool) {
    let text = format_line(task, l, timestamps);
    if l.stream == "stderr" {
        use std::io::Write;
        let _ = std::io::stderr().write_all(text.as_bytes());
    } else {
        crate::emit(&text);
    }
}

/// The task a `logs TASK` (or `task/NAME`) invocation names, if it names one task.
fn single_task(args: &LogsArgs) -> Option<&str> {
    if args.selector.is_some() {
        return None;
    }
    match args.target.as_deref()?.split_once('/') {
        None => args.target.as_deref(),
        Some(("task" | "tasks", name)) => Some(name),
        Some(_) => None,
    }
}

/// Reads tasks' output from the logs stream, filtered as the request asks.
struct Stored {
    js: async_nats::jetstream::Context,
    timeout: std::time::Duration,
    req: LogRequest,
}

impl Stored {
    /// The stored lines of `task`: every run, or with `previous` the run before the
    /// latest (an error when there is none).
    async fn lines(&self, task: &str, previous: bool) -> Result<Vec<LogLine>> {
        let batches = voiyd_nats::logs::history(&self.js, task, self.timeout)
            .await
            .map_err(|e| CtlError::Other(e.to_string()))?;
        let mut runs = voiyd_nats::logs::runs(batches);
        let lines = if previous {
            if runs.len() < 2 {
                return Err(CtlError::Other(format!(
                    "task {task} has no previous run in the stored logs: it has not restarted (or its earlier output has expired)"
                )));
            }
            runs.remove(runs.len() - 2).lines
        } else {
            voiyd_nats::logs::all_lines(runs)
        };
        Ok(voiyd_nats::logs::select(lines, &self.req))
    }
}

/// How often a follow of several tasks looks for new ones.
const NEW_TASKS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A task's name and uid.
fn identity(t: &Task) -> (String, String) {
    t.meta()
        .map(|m| (m.name.clone(), m.uid.clone()))
        .unwrap_or_default()
}

/// Sends one stream's chunks to the printer until it ends.
fn relay(
    task: String,
    mut s: ClientStream,
    tx: tokio::sync::mpsc::Sender<(String, Result<LogChunk>)>,
) {
    tokio::spawn(async move {
        loop {
            let r = s.next::<LogChunk>().await.map_err(stream_err);
            let stop = r.as_ref().map(|c| c.end).unwrap_or(true);
            if tx.send((task.clone(), r)).await.is_err() || stop {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn since_takes_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(parse_since("10s", now).unwrap().seconds, 990);
        let t = parse_since("2024-05-01T10:00:00Z", now).unwrap();
        assert_eq!(t.seconds, 1_714_557_600);
        assert!(parse_since("yesterday", now)
            .unwrap_err()
            .contains("--since"));
    }

    #[test]
    fn lines_carry_prefix_and_time() {
        let l = LogLine {
            time: Some(pbjson_types::Timestamp {
                seconds: 1_714_557_600,
                nanos: 0,
            }),
            stream: "stdout".into(),
            text: "hello".into(),
        };
        assert_eq!(format_line(None, &l, false), "hello\n");
        assert_eq!(format_line(Some("web"), &l, false), "[web] hello\n");
        assert_eq!(
            format_line(Some("web"), &l, true),
            "[web] 2024-05-01T10:00:00+00:00 hello\n"
        );
    }
}

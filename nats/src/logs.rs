//! Reading a task's stored output from the logs stream ([`names::STREAM_LOGS`]).
//!
//! Nodes ship every task's output there as batches ([`LogRecord`]), tagged with the
//! run's process id. This reads a task's batches from every node it ran on, and groups
//! them into runs: what `voiydctl logs` shows when the task is gone or its node is
//! down, and what `--previous` picks from.

use crate::names;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::{LogLine, LogRecord, LogRequest};

/// Why stored logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The stream could not be opened or read.
    #[error("cannot read stored logs of {task}: {reason}")]
    Read {
        /// The task.
        task: String,
        /// What NATS said.
        reason: String,
    },
    /// Reading took longer than allowed.
    #[error("reading stored logs of {task} took longer than {0:?}; try again", .timeout)]
    Timeout {
        /// The task.
        task: String,
        /// The limit.
        timeout: Duration,
    },
}

/// One run of a task: what one process wrote on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The node it ran on.
    pub node: String,
    /// Its process id there.
    pub pid: u32,
    /// Its lines, oldest first.
    pub lines: Vec<LogLine>,
}

/// Every stored batch of `task` (from every node), in the order stored, with its node.
pub async fn history(
    js: &jetstream::Context,
    task: &str,
    timeout: Duration,
) -> Result<Vec<(String, LogRecord)>, LogsError> {
    tokio::time::timeout(timeout, read(js, task))
        .await
        .map_err(|_| LogsError::Timeout {
            task: task.to_string(),
            timeout,
        })?
}

async fn read(js: &jetstream::Context, task: &str) -> Result<Vec<(String, LogRecord)>, LogsError> {
    let failed = |e: &dyn std::fmt::Display| LogsError::Read {
        task: task.to_string(),
        reason: e.to_string(),
    };
    let stream = js
        .get_stream(names::STREAM_LOGS)
        .await
        .map_err(|e| failed(&e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names::logs_filter(task),
            deliver_policy: consumer::DeliverPolicy::All,
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| failed(&e))?;
        let pending = msg.info().map_err(|e| failed(&e))?.pending;
        let node = names::node_of_logs_subject(&msg.subject).unwrap_or_default();
        match LogRecord::decode(msg.payload.clone()) {
            Ok(r) => out.push((node, r)),
            Err(e) => tracing::warn!(%task, error = %e, "skipping an undecodable log batch"),
        }
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

fn time_key(l: &LogLine) -> (i64, i32) {
    l.time
        .as_ref()
        .map(|t| (t.seconds, t.nanos))
        .unwrap_or((0, 0))
}

/// Groups batches into runs (by node and process id), each run's lines in time order,
/// the runs ordered by their first line: the last is the latest run.
pub fn runs(batches: Vec<(String, LogRecord)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (node, r) in batches {
        match runs.iter_mut().find(|x| x.node == node && x.pid == r.pid) {
            Some(run) => run.lines.extend(r.lines),
            None => runs.push(Run {
                node,
                pid: r.pid,
                lines: r.lines,
            }),
        }
    }
    for r in &mut runs {
        // Stable: lines of one read share a time and keep their order.
        r.lines.sort_by_key(time_key);
    }
    runs.retain(|r| !r.lines.is_empty());
    runs.sort_by_key(|r| r.lines.first().map(time_key));
    runs
}

/// Every line of every run, in time order.
pub fn all_lines(runs: Vec<Run>) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = runs.into_iter().flat_map(|r| r.lines).collect();
    lines.sort_by_key(time_key);
    lines
}

/// Applies a request's stream, `since` and `tail` to stored lines (oldest first).
pub fn select(lines: Vec<LogLine>, req: &LogRequest) -> Vec<LogLine> {
    let since = req.since.as_ref().map(|t| (t.seconds, t.nanos));
    let mut kept: Vec<LogLine> = lines
        .into_iter()
        .filter(|l| req.stream.is_empty() || l.stream == req.stream)
        .filter(|l| since.is_none_or(|s| time_key(l) >= s))
        .collect();
    if let Some(n) = req.tail {
        let n = n as usize;
        if kept.len() > n {
            kept.drain(..kept.len() - n);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(secs: i64, text: &str) -> LogLine {
        LogLine {
            time: Some(voiyd_messages::time::from_system(
                std::time::UNIX_EPOCH + Duration::from_secs(secs as u64),
            )),
            stream: "stdout".into(),
            text: text.into(),
        }
    }

    fn batch(node: &str, pid: u32, lines: Vec<LogLine>) -> (String, LogRecord) {
        (node.to_string(), LogRecord { pid, lines })
    }

    #[test]
    fn runs_are_told_apart_by_node_and_pid_and_ordered_by_first_line() {
        let got = runs(vec![
            batch("a", 7, vec![line(10, "a7-1")]),
            batch("b", 7, vec![line(30, "b7-1")]),
            batch("a", 9, vec![line(20, "a9-1")]),
            batch("a", 7, vec![line(11, "a7-2")]),
            batch("a", 5, vec![]),
        ]);
        let order: Vec<(&str, u32)> = got.iter().map(|r| (r.node.as_str(), r.pid)).collect();
        assert_eq!(order, [("a", 7), ("a", 9), ("b", 7)]);
        let texts: Vec<&str> = got[0].lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a7-1", "a7-2"]);
        let all: Vec<String> = all_lines(got).into_iter().map(|l| l.text).collect();
        assert_eq!(all, ["a7-1", "a7-2", "a9-1", "b7-1"]);
    }

    #[test]
    fn stored_lines_take_stream_since_and_tail() {
        let l = |secs: i64, stream: &str, text: &str| LogLine {
            time: Some(voiyd_messages::time::from_system(
                std::time::UNIX_EPOCH + Duration::from_secs(secs as u64),
            )),
            stream: stream.into(),
            text: text.into(),
        };
        let lines = vec![
            l(1, "stdout", "a"),
            l(2, "stderr", "b"),
            l(3, "stdout", "c"),
            l(4, "stdout", "d"),
        ];
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.text).collect::<Vec<_>>();
        let mut req = LogRequest {
            stream: "stdout".into(),
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(texts(select(lines.clone(), &req)), ["c", "d"]);
        req.tail = None;
        req.since = Some(voiyd_messages::time::from_system(
            std::time::UNIX_EPOCH + Duration::from_secs(3),
        ));
        req.stream.clear();
        assert_eq!(texts(select(lines, &req)), ["c", "d"]);
    }
}

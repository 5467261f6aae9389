//! Shipping task output to the JetStream logs stream, so logs outlive tasks and nodes.
//!
//! Captures hand lines to a [`Shipper`] without waiting: a full outbox drops lines
//! (counted, warned) rather than slow a task's output or its local log file, which stays
//! the fast path. One [`Outbox`] loop per node batches lines per task and run (at most
//! [`FLUSH_EVERY`] or [`FLUSH_BYTES`] of output per batch), publishes each batch as a
//! [`LogRecord`] on `voiyd.logs.<node>.<task>` and awaits JetStream's acknowledgements
//! off the loop. The outbox exists before NATS is connected, so output captured while
//! the agent starts (or re-attaches) is kept until it is.

use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use voiyd_messages::v1::{LogLine, LogRecord};

/// A batch is published after this long, even if small.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A batch is published once it holds this many bytes of text.
pub const FLUSH_BYTES: usize = 32 * 1024;
/// Batches of lines waiting for the loop; beyond this, lines are dropped.
const OUTBOX: usize = 4096;
/// Publishes awaiting their acknowledgement; beyond this the loop waits for one.
const IN_FLIGHT: usize = 256;
/// How long an acknowledgement may take before the batch counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines one capture read at once.
#[derive(Debug)]
pub struct Lines {
    /// The task.
    pub task: String,
    /// The run's process id (0 before the first start is known).
    pub pid: u32,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// When they were read.
    pub time: SystemTime,
    /// The lines, without newlines.
    pub lines: Vec<Vec<u8>>,
}

/// The sending side, one clone per capture.
#[derive(Debug, Clone)]
pub struct Shipper {
    tx: mpsc::Sender<Lines>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side: run it once NATS is connected.
#[derive(Debug)]
pub struct Outbox {
    node: String,
    rx: mpsc::Receiver<Lines>,
    dropped: Arc<AtomicU64>,
}

/// A shipper and its outbox for one node.
pub fn channel(node: &str) -> (Shipper, Outbox) {
    let (tx, rx) = mpsc::channel(OUTBOX);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Shipper {
            tx,
            dropped: dropped.clone(),
        },
        Outbox {
            node: node.to_string(),
            rx,
            dropped,
        },
    )
}

impl Shipper {
    /// Queues lines for the stream; never waits.
    pub fn send(&self, lines: Lines) {
        if let Err(e) = self.tx.try_send(lines) {
            let n = match &e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => {
                    l.lines.len() as u64
                }
            };
            let before = self.dropped.fetch_add(n, Ordering::Relaxed);
            // Once per ten thousand lines: a stalled stream must not flood the agent's log.
            if before / 10_000 != (before + n) / 10_000 || before == 0 {
                tracing::warn!(
                    dropped = before + n,
                    "task output is not reaching the logs stream fast enough: lines dropped from it (the node's local logs keep them)"
                );
            }
        }
    }
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    record: LogRecord,
    bytes: usize,
}

impl Outbox {
    /// Publishes batches until every [`Shipper`] is gone.
    pub async fn run(mut self, js: async_nats::jetstream::Context) {
        let mut batches: HashMap<(String, u32), Batch> = HashMap::new();
        let mut acks = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = self.rx.recv() => {
                    let Some(l) = got else { break };
                    let key = (l.task.clone(), l.pid);
                    let b = batches.entry(key.clone()).or_default();
                    b.record.pid = l.pid;
                    let time = Some(voiyd_messages::time::from_system(l.time));
                    for text in l.lines {
                        b.bytes += text.len();
                        b.record.lines.push(LogLine {
                            time,
                            stream: l.stream.to_string(),
                            text: String::from_utf8_lossy(&text).into_owned(),
                        });
                    }
                    if b.bytes >= FLUSH_BYTES {
                        if let Some(b) = batches.remove(&key) {
                            self.publish(&js, &key.0, b.record, &mut acks).await;
                        }
                    }
                }
                _ = tick.tick() => {
                    for ((task, _), b) in batches.drain() {
                        self.publish(&js, &task, b.record, &mut acks).await;
                    }
                }
                Some(_) = acks.join_next(), if !acks.is_empty() => {}
            }
        }
        for ((task, _), b) in batches.drain() {
            self.publish(&js, &task, b.record, &mut acks).await;
        }
        while acks.join_next().await.is_some() {}
    }

    async fn publish(
        &self,
        js: &async_nats::jetstream::Context,
        task: &str,
        record: LogRecord,
        acks: &mut tokio::task::JoinSet<()>,
    ) {
        if record.lines.is_empty() {
            return;
        }
        while acks.len() >= IN_FLIGHT {
            acks.join_next().await;
        }
        let lines = record.lines.len() as u64;
        let subject = voiyd_nats::names::logs_subject(&self.node, task);
        let dropped = self.dropped.clone();
        match js.publish(subject, record.encode_to_vec().into()).await {
            Ok(ack) => {
                let task = task.to_string();
                acks.spawn(async move {
                    let failed = match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("no acknowledgement in time".to_string()),
                    };
                    if let Some(error) = failed {
                        dropped.fetch_add(lines, Ordering::Relaxed);
                        tracing::warn!(%task, %error, "lines did not reach the logs stream");
                    }
                });
            }
            Err(e) => {
                dropped.fetch_add(lines, Ordering::Relaxed);
                tracing::warn!(%task, error = %e, "cannot publish lines to the logs stream");
            }
        }
    }
}

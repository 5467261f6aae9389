//! Serves task logs on `voiyd.node.<node>.logs.<task>` from the node's log files.
//!
//! The capture (`logs.rs`) only ever appends to files; every reader here reads those
//! files on its own (history, then polling for new lines), so any number of followers,
//! fast or slow, never slow the task or each other. Lines go out in chunks through the
//! acknowledged stream protocol of `voiyd_nats::stream`.

use crate::logs::{self, LogLine, CURRENT};
use prost::Message;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use voiyd_messages::v1::{LogChunk, LogRequest, StreamStart};
use voiyd_metrics as metrics;
use voiyd_nats::names;
use voiyd_nats::stream::{answer, refuse, send_acked, serve_limited, KEEPALIVE};

/// Most log streams one node serves at once.
const MAX_STREAMS: usize = 256;
/// Most lines in one chunk.
const CHUNK_LINES: usize = 1000;
/// Most text bytes in one chunk (well below NATS' default 1 MiB payload).
const CHUNK_BYTES: usize = 256 * 1024;
/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Which lines a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
    /// Only this stream (`stdout` or `stderr`).
    pub stream: Option<String>,
    /// Only the last N lines of history.
    pub tail: Option<usize>,
}

impl LogFilter {
    /// The filter of a request.
    pub fn from_request(req: &LogRequest) -> Result<LogFilter, String> {
        let stream = match req.stream.as_str() {
            "" => None,
            s @ ("stdout" | "stderr") => Some(s.to_string()),
            other => return Err(format!("unknown stream `{other}`: use stdout or stderr")),
        };
        Ok(LogFilter {
            since: req.since.as_ref().map(|t| {
                UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
            }),
            stream,
            tail: req.tail.map(|t| t as usize),
        })
    }

    /// Whether one line passes the time and stream filters.
    pub fn matches(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|s| line.time >= s)
            && self.stream.as_deref().is_none_or(|s| line.stream == s)
    }

    /// The history to send: matching lines, then only the last `tail` of them.
    pub fn select(&self, lines: Vec<LogLine>) -> Vec<LogLine> {
        let mut kept: Vec<LogLine> = lines.into_iter().filter(|l| self.matches(l)).collect();
        if let Some(n) = self.tail {
            let skip = kept.len().saturating_sub(n);
            kept.drain(..skip);
        }
        kept
    }
}

/// Reads one task's log files: everything so far, then whatever is appended, across
/// rotations (a rotation renames `current.log`; the open handle keeps reading the
/// renamed file to its end before the new `current.log` is opened).
pub struct LogReader {
    dir: PathBuf,
    file: Option<(std::fs::File, u64)>,
    pending: Vec<u8>,
}

impl LogReader {
    /// Starts reading `dir`. Returns the lines stored so far, oldest first.
    pub fn open(dir: &Path) -> io::Result<(LogReader, Vec<LogLine>)> {
        let mut rotated: Vec<(usize, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(i) = name
                .strip_prefix(&format!("{CURRENT}."))
                .and_then(|i| i.parse().ok())
            {
                rotated.push((i, dir.join(&name)));
            }
        }
        rotated.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut lines = Vec::new();
        for (_, f) in rotated {
            // A file rotated away meanwhile is simply skipped.
            if let Ok(text) = std::fs::read_to_string(f) {
                lines.extend(text.lines().filter_map(logs::parse_line));
            }
        }
        let mut reader = LogReader {
            dir: dir.to_path_buf(),
            file: None,
            pending: Vec::new(),
        };
        lines.extend(reader.poll()?);
        Ok((reader, lines))
    }

    /// Lines appended since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut out = Vec::new();
        if self.file.is_none() {
            match std::fs::File::open(self.dir.join(CURRENT)) {
                Ok(f) => {
                    let ino = f.metadata()?.ino();
                    self.file = Some((f, ino));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            }
        }
        loop {
            let (f, ino) = self.file.as_mut().expect("opened above");
            let ino = *ino;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            self.take_lines(&buf, &mut out);
            // Rotated: the current name now points at a new file. Pin the files that
            // came after ours (rotated ones newer than ours, then the new current)
            // by opening them before reading, so a further rotation cannot skip one.
            let current_ino = std::fs::metadata(self.dir.join(CURRENT))
                .map(|m| m.ino())
                .ok();
            if current_ino.is_none_or(|i| i == ino) {
                return Ok(out);
            }
            self.pending.clear();
            let mut rotated: Vec<(usize, std::fs::File, u64)> = Vec::new();
            for entry in std::fs::read_dir(&self.dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some(i) = name
                    .strip_prefix(&format!("{CURRENT}."))
                    .and_then(|i| i.parse::<usize>().ok())
                {
                    if let Ok(f) = std::fs::File::open(self.dir.join(&name)) {
                        let fino = f.metadata()?.ino();
                        rotated.push((i, f, fino));
                    }
                }
            }
            let next_current = std::fs::File::open(self.dir.join(CURRENT)).ok();
            rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
            // Ours is among them unless it was dropped; then every rotated file is newer.
            let newer: Vec<std::fs::File> = match rotated.iter().position(|r| r.2 == ino) {
                Some(p) => rotated.into_iter().skip(p + 1).map(|r| r.1).collect(),
                None => rotated.into_iter().map(|r| r.1).collect(),
            };
            for mut f in newer {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                self.take_lines(&buf, &mut out);
                self.pending.clear();
            }
            match next_current {
                Some(f) => {
                    let fino = f.metadata()?.ino();
                    self.file = Some((f, fino));
                }
                None => {
                    self.file = None;
                    return Ok(out);
                }
            }
        }
    }

    fn take_lines(&mut self, buf: &[u8], out: &mut Vec<LogLine>) {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            if let Some(l) = logs::parse_line(String::from_utf8_lossy(&line[..pos]).as_ref()) {
                out.push(l);
            }
        }
    }

    /// Whether the task's log directory still exists (it goes with the task).
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }
}

fn to_proto(l: &LogLine) -> voiyd_messages::v1::LogLine {
    voiyd_messages::v1::LogLine {
        time: Some(voiyd_messages::time::from_system(l.time)),
        stream: l.stream.clone(),
        text: l.text.clone(),
    }
}

/// Splits lines into chunks of at most [`CHUNK_LINES`] lines and about [`CHUNK_BYTES`].
pub fn chunks(lines: &[LogLine]) -> Vec<LogChunk> {
    let mut out = Vec::new();
    let mut cur = LogChunk::default();
    let mut bytes = 0;
    for l in lines {
        if cur.lines.len() >= CHUNK_LINES || (bytes + l.text.len() > CHUNK_BYTES && bytes > 0) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += l.text.len() + 48;
        cur.lines.push(to_proto(l));
    }
    if !cur.lines.is_empty() {
        out.push(cur);
    }
    out
}

/// Serves log requests for this node's tasks until the connection closes.
pub async fn serve(
    client: async_nats::Client,
    node: String,
    data_dir: PathBuf,
) -> Result<(), async_nats::SubscribeError> {
    let requests = client.subscribe(names::node::all_logs(&node)).await?;
    let busy = format!("node {node} serves {MAX_STREAMS} log streams already; try again later");
    serve_limited(&client, requests, MAX_STREAMS, &busy, |msg| {
        let (client, node, data_dir) = (client.clone(), node.clone(), data_dir.clone());
        async move {
            metrics::global().inc(
                "voiyd_node_log_streams_total",
                "Log streams opened.",
                &[],
                1.0,
            );
            handle(&client, &node, &data_dir, msg).await;
        }
    })
    .await;
    Ok(())
}

async fn handle(
    client: &async_nats::Client,
    node: &str,
    data_dir: &Path,
    msg: async_nats::Message,
) {
    let task = names::node::task_of(&msg.subject).unwrap_or_default();
    let req = match LogRequest::decode(msg.payload.clone()) {
        Ok(r) => r,
        Err(e) => {
            answer(
                client,
                msg.reply.as_ref(),
                refuse(400, format!("undecodable log request: {e}")),
            )
            .await;
            return;
        }
    };
    let filter = match LogFilter::from_request(&req) {
        Ok(f) => f,
        Err(e) => {
            answer(client, msg.reply.as_ref(), refuse(400, e)).await;
            return;
        }
    };
    let dir = logs::TaskPaths::new(data_dir, &task).log_dir;
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || LogReader::open(&dir)).await
    };
    let (mut reader, history) = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            answer(
                client,
                msg.reply.as_ref(),
                refuse(404, format!("node {node} has no logs of task {task}: it never ran there, or was deleted")),
            )
            .await;
            return;
        }
        Ok(Err(e)) => {
            answer(
                client,
                msg.reply.as_ref(),
                refuse(500, format!("cannot read logs of {task} on {node}: {e}")),
            )
            .await;
            return;
        }
        Err(e) => {
            answer(
                client,
                msg.reply.as_ref(),
                refuse(500, format!("log reader failed: {e}")),
            )
            .await;
            return;
        }
    };
    answer(client, msg.reply.as_ref(), StreamStart::default()).await;
    let to = req.deliver_to.as_str();
    for chunk in chunks(&filter.select(history)) {
        if send_acked(client, to, &chunk).await.is_err() {
            return;
        }
    }
    if !req.follow {
        let _ = send_acked(
            client,
            to,
            &LogChunk {
                end: true,
                ..Default::default()
            },
        )
        .await;
        return;
    }
    let mut last_sent = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let new = match reader.poll() {
            Ok(n) => n,
            Err(e) => {
                let _ = send_acked(
                    client,
                    to,
                    &LogChunk {
                        end: true,
                        error: format!("cannot read logs: {e}"),
                        ..Default::default()
                    },
                )
                .await;
                return;
            }
        };
        let new: Vec<LogLine> = new.into_iter().filter(|l| filter.matches(l)).collect();
        if new.is_empty() {
            if !reader.exists() {
                let _ = send_acked(
                    client,
                    to,
                    &LogChunk {
                        end: true,
                        error: format!("task {task} was removed from node {node}"),
                        ..Default::default()
                    },
                )
                .await;
                return;
            }
            if last_sent.elapsed() >= KEEPALIVE {
                if send_acked(client, to, &LogChunk::default()).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            continue;
        }
        for chunk in chunks(&new) {
            if send_acked(client, to, &chunk).await.is_err() {
                return;
            }
        }
        last_sent = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(secs: u64, stream: &str, text: &str) -> LogLine {
        LogLine {
            time: UNIX_EPOCH + Duration::from_secs(secs),
            stream: stream.into(),
            text: text.into(),
        }
    }

    #[test]
    fn since_is_inclusive_and_tail_applies_after_filters() {
        let lines = vec![
            line(10, "stdout", "a"),
            line(20, "stderr", "b"),
            line(30, "stdout", "c"),
            line(40, "stdout", "d"),
        ];
        let f = LogFilter {
            since: Some(UNIX_EPOCH + Duration::from_secs(20)),
            stream: Some("stdout".into()),
            tail: Some(1),
        };
        let got: Vec<String> = f
            .select(lines.clone())
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(got, vec!["d"]);
        let f = LogFilter {
            tail: Some(0),
            ..Default::default()
        };
        assert!(f.select(lines.clone()).is_empty());
        let f = LogFilter {
            since: Some(UNIX_EPOCH + Duration::from_secs(30)),
            ..Default::default()
        };
        assert_eq!(f.select(lines.clone()).len(), 2);
        assert_eq!(LogFilter::default().select(lines).len(), 4);
        assert!(LogFilter::from_request(&LogRequest {
            stream: "both".into(),
            ..Default::default()
        })
        .is_err());
    }

    proptest! {
        #[test]
        fn select_keeps_order_and_at_most_tail(
            times in proptest::collection::vec(0u64..100, 0..50),
            since in proptest::option::of(0u64..100),
            tail in proptest::option::of(0usize..60),
        ) {
            let lines: Vec<LogLine> = times.iter().enumerate()
                .map(|(i, t)| line(*t, if i % 2 == 0 { "stdout" } else { "stderr" }, &i.to_string()))
                .collect();
            let f = LogFilter { since: since.map(|s| UNIX_EPOCH + Duration::from_secs(s)), stream: None, tail };
            let got = f.select(lines.clone());
            let all: Vec<&LogLine> = lines.iter().filter(|l| f.matches(l)).collect();
            if let Some(n) = tail { prop_assert!(got.len() <= n); }
            // What is kept is the newest suffix of the matching lines, in order.
            let suffix: Vec<&LogLine> = all[all.len() - got.len()..].to_vec();
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), suffix);
        }
    }

    #[test]
    fn chunks_split_by_lines() {
        let lines: Vec<LogLine> = (0..2500).map(|i| line(i, "stdout", "x")).collect();
        let c = chunks(&lines);
        assert_eq!(
            c.iter().map(|c| c.lines.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
    }

    #[tokio::test]
    async fn reader_follows_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = logs::TaskPaths::new(dir.path(), "t");
        logs::prepare(&paths).unwrap();
        let cap = logs::Capture::start(
            &paths,
            logs::Rotation {
                max_bytes: 300,
                keep: 5,
            },
            None,
        )
        .await
        .unwrap();
        let mut out = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(paths.stdout())
            .unwrap();
        use tokio::io::AsyncWriteExt;
        out.write_all(b"first\n").await.unwrap();
        let start = Instant::now();
        let (mut reader, history) = loop {
            let (r, h) = LogReader::open(&paths.log_dir).unwrap();
            if !h.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break (r, h);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            history.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            vec!["first"]
        );
        // Enough lines to rotate several times while the reader holds the old file.
        for i in 0..30 {
            out.write_all(format!("line {i}\n").as_bytes())
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let start = Instant::now();
        while seen.len() < 30 && start.elapsed() < Duration::from_secs(10) {
            seen.extend(reader.poll().unwrap().into_iter().map(|l| l.text));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(out);
        cap.finish().await;
        let want: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        assert_eq!(seen, want);
        assert!(paths.log_dir.join("current.log.2").exists());
    }
}

//! Capture of a task's stdout and stderr into per-task log files on the node.
//!
//! The agent creates two FIFOs per task and hands their paths to containerd as the
//! task's stdout and stderr (the `file://` log URI of containerd 1.6 loses output, see
//! NOTES.md). The agent reads them while the task runs and appends each line to
//! `<logs>/<task>/current.log` as `<RFC 3339 time> <stdout|stderr> <line>`, rotating by size.
//! The FIFOs are opened read-write so that a reader never sees end-of-file while the
//! shim is not attached (at start, or across an agent restart), which is also how an
//! agent restart re-attaches to a running task's output. With a [`ship::Shipper`] the
//! lines also go to the cluster's logs stream, tagged with the run's process id.

pub mod ship;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Mutex};
use voiyd_messages::time::rfc3339_nanos;

/// Name of the file being written.
pub const CURRENT: &str = "current.log";
/// Longest line kept whole; longer output is split.
const MAX_LINE: usize = 16 * 1024;

/// Where one task's FIFOs and logs live.
#[derive(Debug, Clone)]
pub struct TaskPaths {
    /// Directory with the `stdout` and `stderr` FIFOs.
    pub fifo_dir: PathBuf,
    /// Directory with `current.log` and its rotations.
    pub log_dir: PathBuf,
}

impl TaskPaths {
    /// Paths under the agent's data directory.
    pub fn new(data_dir: &Path, task: &str) -> Self {
        TaskPaths {
            fifo_dir: data_dir.join("fifo").join(task),
            log_dir: data_dir.join("logs").join(task),
        }
    }
    /// The stdout FIFO.
    pub fn stdout(&self) -> PathBuf {
        self.fifo_dir.join("stdout")
    }
    /// The stderr FIFO.
    pub fn stderr(&self) -> PathBuf {
        self.fifo_dir.join("stderr")
    }
    /// The log file being written.
    pub fn current(&self) -> PathBuf {
        self.log_dir.join(CURRENT)
    }
}

/// Creates the FIFOs (keeping existing ones) and the log directory.
pub fn prepare(paths: &TaskPaths) -> io::Result<()> {
    std::fs::create_dir_all(&paths.fifo_dir)?;
    std::fs::create_dir_all(&paths.log_dir)?;
    for p in [paths.stdout(), paths.stderr()] {
        match std::fs::metadata(&p) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()) => continue,
            Ok(_) => std::fs::remove_file(&p)?,
            Err(_) => {}
        }
        mkfifo(&p)?;
    }
    Ok(())
}

/// Makes a FIFO at `p`, readable and writable by the owner only.
pub fn mkfifo(p: &Path) -> io::Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o600))
        .map_err(io::Error::from)
}

/// Removes the FIFOs and, with `logs`, the log files too.
pub fn remove(paths: &TaskPaths, logs: bool) {
    let _ = std::fs::remove_dir_all(&paths.fifo_dir);
    if logs {
        let _ = std::fs::remove_dir_all(&paths.log_dir);
    }
}

/// Size-based rotation settings.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Rotate when `current.log` reaches this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`current.log.1` is the newest).
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// The appending, rotating log file of one task, shared by its two streams.
struct LogFile {
    dir: PathBuf,
    file: tokio::fs::File,
    size: u64,
    rotation: Rotation,
}

impl LogFile {
    async fn open(dir: &Path, rotation: Rotation) -> io::Result<Self> {
        let path = dir.join(CURRENT);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(LogFile {
            dir: dir.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    async fn write_line(&mut self, time: SystemTime, stream: &str, line: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(rfc3339_nanos(time).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.rotation.max_bytes {
            self.rotate().await?;
        }
        self.file.write_all(&rec).await?;
        self.size += rec.len() as u64;
        Ok(())
    }

    async fn rotate(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        let name = |i: usize| self.dir.join(format!("{CURRENT}.{i}"));
        let _ = tokio::fs::remove_file(name(self.rotation.keep)).await;
        for i in (1..self.rotation.keep).rev() {
            let _ = tokio::fs::rename(name(i), name(i + 1)).await;
        }
        if self.rotation.keep > 0 {
            tokio::fs::rename(self.dir.join(CURRENT), name(1)).await?;
        } else {
            tokio::fs::remove_file(self.dir.join(CURRENT)).await?;
        }
        self.file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CURRENT))
            .await?;
        self.size = 0;
        Ok(())
    }
}

/// A running capture of one task's output. Dropping it stops the readers.
pub struct Capture {
    stop: watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    pid: Arc<AtomicU32>,
}

/// Where captured lines go besides the local file.
#[derive(Debug, Clone)]
pub struct ShipTo {
    /// The node's shipper.
    pub shipper: ship::Shipper,
    /// The task the lines belong to.
    pub task: String,
}

/// What one reader of a FIFO writes to.
struct Sink {
    file: Arc<Mutex<LogFile>>,
    ship: Option<ShipTo>,
    pid: Arc<AtomicU32>,
}

impl Capture {
    /// Starts reading both FIFOs of `paths` (which [`prepare`] created).
    pub async fn start(
        paths: &TaskPaths,
        rotation: Rotation,
        ship: Option<ShipTo>,
    ) -> io::Result<Capture> {
        let file = Arc::new(Mutex::new(LogFile::open(&paths.log_dir, rotation).await?));
        let (stop, stopped) = watch::channel(false);
        let pid = Arc::new(AtomicU32::new(0));
        let mut readers = Vec::new();
        for (stream, path) in [("stdout", paths.stdout()), ("stderr", paths.stderr())] {
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)?;
            let sink = Sink {
                file: file.clone(),
                ship: ship.clone(),
                pid: pid.clone(),
            };
            readers.push(tokio::spawn(read_stream(rx, stream, sink, stopped.clone())));
        }
        Ok(Capture { stop, readers, pid })
    }

    /// Tags the lines read from now on with this run's process id.
    pub fn set_run(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// Drains what the task wrote (until the pipes stay empty briefly), then stops.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

async fn read_stream(
    mut rx: tokio::net::unix::pipe::Receiver,
    stream: &'static str,
    sink: Sink,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = if *stopped.borrow() {
            // Draining: whatever is buffered in the pipe, then done.
            match tokio::time::timeout(Duration::from_millis(100), rx.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            }
        } else {
            tokio::select! {
                r = rx.read(&mut buf) => match r {
                    Ok(n) if n > 0 => n,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "log pipe read failed");
                        break;
                    }
                },
                _ = stopped.changed() => continue,
            }
        };
        pending.extend_from_slice(&buf[..n]);
        let mut lines = Vec::new();
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            lines.push(pending.drain(..=pos).take(pos).collect::<Vec<u8>>());
        }
        while pending.len() >= MAX_LINE {
            lines.push(pending.drain(..MAX_LINE).collect());
        }
        if !lines.is_empty() {
            write_lines(&sink, stream, lines).await;
        }
    }
    // The last line of a task that exits without a newline is still a line.
    if !pending.is_empty() {
        write_lines(&sink, stream, vec![pending]).await;
    }
}

/// Appends lines and flushes them: a tokio file's write only hands the bytes to a
/// blocking thread, so without the flush the last write of a stream may not be in the
/// file yet when the capture reports finished (or when `logs -f` reads it). Then hands
/// them to the shipper.
async fn write_lines(sink: &Sink, stream: &'static str, lines: Vec<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let time = SystemTime::now();
    {
        let mut f = sink.file.lock().await;
        for l in &lines {
            if let Err(e) = f.write_line(time, stream, l).await {
                tracing::warn!(stream, error = %e, "cannot write log line");
            }
        }
        if let Err(e) = f.file.flush().await {
            tracing::warn!(stream, error = %e, "cannot flush log file");
        }
    }
    if let Some(s) = &sink.ship {
        s.shipper.send(ship::Lines {
            task: s.task.clone(),
            pid: sink.pid.load(Ordering::Relaxed),
            stream,
            time,
            lines,
        });
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the agent read it.
    pub time: SystemTime,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text, without newline.
    pub text: String,
}

/// Parses one stored line.
pub fn parse_line(line: &str) -> Option<LogLine> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(LogLine {
        time: voiyd_messages::time::parse_rfc3339(time)?,
        stream: stream.to_string(),
        text: text.to_string(),
    })
}

/// Reads a task's stored lines, oldest first, across rotated files.
pub fn read_all(log_dir: &Path) -> io::Result<Vec<LogLine>> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(log_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == CURRENT {
            files.push((0, log_dir.join(&name)));
        } else if let Some(i) = name
            .strip_prefix(&format!("{CURRENT}."))
            .and_then(|i| i.parse().ok())
        {
            files.push((i, log_dir.join(&name)));
        }
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out = Vec::new();
    for (_, f) in files {
        out.extend(std::fs::read_to_string(f)?.lines().filter_map(parse_line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn captures_both_streams_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TaskPaths::new(dir.path(), "t1");
        prepare(&paths).unwrap();
        prepare(&paths).unwrap(); // idempotent
        let cap = Capture::start(
            &paths,
            Rotation {
                max_bytes: 400,
                keep: 2,
            },
            None,
        )
        .await
        .unwrap();
        let mut out = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(paths.stdout())
            .unwrap();
        let mut err = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(paths.stderr())
            .unwrap();
        for i in 0..20 {
            out.write_all(format!("out {i}\n").as_bytes())
                .await
                .unwrap();
        }
        err.write_all(b"err line\npartial").await.unwrap();
        drop((out, err));
        cap.finish().await;
        let lines = read_all(&paths.log_dir).unwrap();
        let outs: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == "stdout")
            .map(|l| l.text.as_str())
            .collect();
        // Rotation kept the newest lines; whatever is kept is in order and ends with the last one.
        assert_eq!(outs.last(), Some(&"out 19"));
        let nums: Vec<u32> = outs.iter().map(|s| s[4..].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(lines
            .iter()
            .any(|l| l.stream == "stderr" && l.text == "err line"));
        assert!(lines
            .iter()
            .any(|l| l.stream == "stderr" && l.text == "partial"));
        assert!(paths.log_dir.join("current.log.1").exists());
        assert!(!paths.log_dir.join("current.log.3").exists());
        remove(&paths, true);
        assert!(!paths.log_dir.exists());
    }
}

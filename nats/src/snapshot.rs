//! Stream snapshots through the JetStream API (`$JS.API.STREAM.SNAPSHOT` /
//! `$JS.API.STREAM.RESTORE`): a consistent copy of one stream (a KV bucket is one) as
//! nats-server makes it, and its restore into a NATS that does not have the stream.
//!
//! A snapshot is two files in a directory: `<stream>.json` (the stream's config and
//! state at the snapshot) and `<stream>.snapshot` (nats-server's own archive, opaque).
//! async-nats has no client for these two calls; the protocol is small: chunks arrive
//! on an inbox and each is acknowledged (nats-server's flow control), an empty message
//! ends it; a restore sends chunks as requests and an empty one to finish.

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size of the chunks asked for and sent.
const CHUNK: usize = 128 * 1024;
/// Longest wait for one chunk or answer.
const WAIT: Duration = Duration::from_secs(30);

/// Why a snapshot or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// NATS could not be asked, or did not answer in time.
    #[error("NATS request for stream {stream} failed: {reason}")]
    Nats {
        /// The stream.
        stream: String,
        /// What happened.
        reason: String,
    },
    /// JetStream refused (e.g. no such stream, or it exists already).
    #[error("JetStream refused stream {stream}: {reason}")]
    Refused {
        /// The stream.
        stream: String,
        /// JetStream's description.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {reason}", .path.display())]
    Io {
        /// Read or write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
}

fn nats(stream: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Nats {
        stream: stream.to_string(),
        reason: e.to_string(),
    }
}

fn io(action: &'static str, path: &Path, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The JSON answer of a JetStream API call, or its error as [`SnapshotError::Refused`].
fn api_answer(stream: &str, payload: &[u8]) -> Result<Value, SnapshotError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| nats(stream, e))?;
    if let Some(err) = v.get("error") {
        return Err(SnapshotError::Refused {
            stream: stream.to_string(),
            reason: err["description"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
        });
    }
    Ok(v)
}

async fn request(
    client: &Client,
    stream: &str,
    subject: String,
    body: Bytes,
) -> Result<async_nats::Message, SnapshotError> {
    let req = async_nats::Request::new().payload(body).timeout(Some(WAIT));
    client
        .send_request(subject, req)
        .await
        .map_err(|e| nats(stream, e))
}

/// Whether `stream` exists.
pub async fn exists(client: &Client, stream: &str) -> Result<bool, SnapshotError> {
    let m = request(
        client,
        stream,
        format!("$JS.API.STREAM.INFO.{stream}"),
        Bytes::new(),
    )
    .await?;
    match api_answer(stream, &m.payload) {
        Ok(_) => Ok(true),
        Err(SnapshotError::Refused { .. })
            if serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .and_then(|v| v["error"]["code"].as_u64())
                == Some(404) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Snapshots `stream` into `dir`; returns the bytes of the archive.
pub async fn save(client: &Client, stream: &str, dir: &Path) -> Result<u64, SnapshotError> {
    let inbox = client.new_inbox();
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| nats(stream, e))?;
    let body = json!({ "deliver_subject": inbox, "chunk_size": CHUNK });
    let m = request(
        client,
        stream,
        format!("$JS.API.STREAM.SNAPSHOT.{stream}"),
        body.to_string().into(),
    )
    .await?;
    let meta = api_answer(stream, &m.payload)?;
    let mut data = Vec::new();
    loop {
        let msg = match tokio::time::timeout(WAIT, chunks.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(nats(stream, "the subscription closed")),
            Err(_) => return Err(nats(stream, "no snapshot chunk within 30 s")),
        };
        if let Some(status) = msg.status {
            if !status.is_success() {
                let why = msg
                    .description
                    .clone()
                    .unwrap_or_else(|| status.to_string());
                return Err(SnapshotError::Refused {
                    stream: stream.to_string(),
                    reason: why,
                });
            }
        }
        if msg.payload.is_empty() {
            break;
        }
        data.extend_from_slice(&msg.payload);
        if let Some(reply) = msg.reply {
            client
                .publish(reply, Bytes::new())
                .await
                .map_err(|e| nats(stream, e))?;
        }
    }
    let meta_path = dir.join(format!("{stream}.json"));
    let data_path = dir.join(format!("{stream}.snapshot"));
    let kept = json!({ "config": meta["config"], "state": meta["state"] });
    std::fs::write(&data_path, &data).map_err(|e| io("write", &data_path, e))?;
    // The metadata last: a directory with it has the archive whole.
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&kept).unwrap_or_default(),
    )
    .map_err(|e| io("write", &meta_path, e))?;
    Ok(data.len() as u64)
}

/// The streams a directory holds snapshots of (by their `.json` files), sorted.
pub fn saved_streams(dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io("read", dir, e))? {
        let e = e.map_err(|e| io("read", dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stream) = name.strip_suffix(".json") {
            out.push(stream.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Restores `stream` from its snapshot in `dir`; the stream must not exist.
pub async fn load(client: &Client, stream: &str, dir: &Path) -> Result<(), SnapshotError> {
    let meta_path = dir.join(format!("{stream}.json"));
    let data_path = dir.join(format!("{stream}.snapshot"));
    let meta = std::fs::read(&meta_path).map_err(|e| io("read", &meta_path, e))?;
    let data = std::fs::read(&data_path).map_err(|e| io("read", &data_path, e))?;
    let m = request(
        client,
        stream,
        format!("$JS.API.STREAM.RESTORE.{stream}"),
        meta.into(),
    )
    .await?;
    let answer = api_answer(stream, &m.payload)?;
    let Some(deliver) = answer["deliver_subject"].as_str().map(str::to_string) else {
        return Err(nats(stream, "no deliver_subject in the restore answer"));
    };
    for chunk in data.chunks(CHUNK) {
        let m = request(
            client,
            stream,
            deliver.clone(),
            Bytes::copy_from_slice(chunk),
        )
        .await?;
        if !m.payload.is_empty() {
            api_answer(stream, &m.payload)?;
        }
    }
    let done = request(client, stream, deliver, Bytes::new()).await?;
    api_answer(stream, &done.payload)?;
    Ok(())
}

//! Backup and restore of a cluster's state: a JetStream snapshot of every voiyd bucket
//! and of the events stream (`voiyd-server backup --to DIR`), restored into a NATS that
//! holds no voiyd state yet (`voiyd-server --restore-from DIR`, before the server
//! creates its buckets). Snapshots keep every key's revision, so compare-and-set
//! tokens and the nodes' view of their work stay valid across a restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use voiyd_nats::names;
use voiyd_nats::snapshot::{self, SnapshotError};

/// The streams a backup holds: every bucket, then the events.
pub fn streams() -> Vec<String> {
    let mut out: Vec<String> = names::ALL_BUCKETS
        .iter()
        .map(|b| names::kv_stream(b))
        .collect();
    out.push(names::STREAM_EVENTS.to_string());
    out
}

/// Snapshots every voiyd stream that exists into `dir` (new or empty); returns
/// (stream, bytes) of each.
pub async fn backup(client: &async_nats::Client, dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty: back up into a new directory, so that no two backups mix",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut done = Vec::new();
    for stream in streams() {
        if !snapshot::exists(client, &stream).await? {
            continue;
        }
        let bytes = snapshot::save(client, &stream, dir).await?;
        done.push((stream, bytes));
    }
    if done.is_empty() {
        anyhow::bail!("this NATS holds no voiyd state: is it the cluster's NATS?");
    }
    Ok(done)
}

/// Restores the backup in `dir`. Refused, before anything is written, when the
/// directory is not a voiyd backup or the NATS already holds any of its streams.
pub async fn restore(client: &async_nats::Client, dir: &Path) -> anyhow::Result<usize> {
    let saved = snapshot::saved_streams(dir)?;
    let tasks = names::kv_stream(names::BUCKET_TASKS);
    if !saved.contains(&tasks) {
        anyhow::bail!(
            "{} is not a voiyd backup (no {tasks}.json): give the directory `voiyd-server backup --to` wrote",
            dir.display()
        );
    }
    let known = streams();
    if let Some(odd) = saved.iter().find(|s| !known.contains(s)) {
        anyhow::bail!("{} holds {odd}, which is not a voiyd stream: give a directory `voiyd-server backup --to` wrote", dir.display());
    }
    wait_for_jetstream(client).await?;
    for s in &saved {
        if snapshot::exists(client, s).await? {
            anyhow::bail!("this NATS already holds {s}: --restore-from restores into a cluster without voiyd state (a new --data-dir, or an empty NATS); drop the flag to start with the state it has");
        }
    }
    for s in &saved {
        snapshot::load(client, s, dir).await?;
        tracing::info!(stream = %s, "restored");
    }
    Ok(saved.len())
}

/// A new NATS cluster answers JetStream requests only once it has a leader.
async fn wait_for_jetstream(client: &async_nats::Client) -> Result<(), SnapshotError> {
    let start = Instant::now();
    loop {
        let info = client.request("$JS.API.INFO", "".into()).await;
        let ready = info.as_ref().is_ok_and(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v.get("error").is_none())
        });
        if ready {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(SnapshotError::Nats {
                stream: "(any)".into(),
                reason: "JetStream did not answer within 60 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `voiyd-server backup`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// Directory to write (new or empty).
    #[arg(long)]
    pub to: PathBuf,
    /// NATS to read from (comma-separated URLs).
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "VOIYD_NATS_URL")]
    pub server: String,
    /// Credentials and TLS. Without --nats-nkey or --nats-creds, the servers' identity
    /// `<data-dir>/auth/server.nk` is used when it exists (it can read every bucket).
    #[command(flatten)]
    pub nats: voiyd_nats::flags::NatsFlags,
}

/// Runs `voiyd-server backup`; returns the exit code.
pub async fn run_backup(args: BackupArgs, data_dir: &Path) -> i32 {
    voiyd_nats::connect::install_crypto_provider();
    let mut o = args.nats.options(&args.server);
    o.name = "voiyd-server backup".into();
    if o.nkey_seed.is_none() && o.creds_file.is_none() {
        let seed = data_dir
            .join("auth")
            .join(crate::security::identities::SERVER_SEED);
        o.nkey_seed = seed.exists().then(|| seed.to_string_lossy().into_owned());
    }
    let result = async {
        let client = voiyd_nats::connect(&o).await?;
        backup(&client, &args.to).await
    }
    .await;
    match result {
        Ok(done) => {
            let bytes: u64 = done.iter().map(|(_, b)| b).sum();
            println!(
                "backed up {} streams ({bytes} bytes) to {}; restore with: voiyd-server --restore-from {}",
                done.len(),
                args.to.display(),
                args.to.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

//! Upgrading the agent in place (`voiydctl upgrade nodes`): on a request, the agent
//! fetches the new binary from the `voiyd_agents` object store, checks its SHA-256 and
//! that it runs (`--version`), keeps the running binary as `<exe>.prev`, moves the new
//! one into place and re-execs itself with the same arguments. The process id stays,
//! and containers never notice: their shims do not depend on the agent.
//!
//! A marker file in the data directory records an upgrade until the new agent has run
//! for [`SETTLE`]; an agent that starts with the marker present more than
//! [`MAX_STARTS`] times (a supervisor restarting a binary that keeps failing) puts the
//! previous binary back and runs it.

use futures::StreamExt;
use prost::Message;
use sha2::Digest;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use voiyd_messages::v1::{UpgradeReply, UpgradeRequest};
use voiyd_nats::names;

/// How long a new agent must run before its upgrade counts as done.
pub const SETTLE: Duration = Duration::from_secs(15);
/// Starts with an unsettled upgrade after which the previous binary comes back.
pub const MAX_STARTS: u32 = 3;
/// How long the new binary gets to answer `--version`.
const TRIAL: Duration = Duration::from_secs(10);

/// The running agent: its binary and how it was started.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Node name.
    pub node: String,
    /// Path of the running binary.
    pub exe: PathBuf,
    /// Arguments it was started with (without the program).
    pub args: Vec<OsString>,
    /// Data directory (holds the marker).
    pub data_dir: PathBuf,
    /// SHA-256 (hex) of the running binary.
    pub digest: String,
}

impl Agent {
    /// The running process: its binary, arguments and digest.
    pub fn current(node: &str, data_dir: &Path) -> std::io::Result<Agent> {
        let exe = std::env::current_exe()?;
        let digest = file_digest(&exe)?;
        Ok(Agent {
            node: node.to_string(),
            exe,
            args: std::env::args_os().skip(1).collect(),
            data_dir: data_dir.to_path_buf(),
            digest,
        })
    }

    fn prev(&self) -> PathBuf {
        with_suffix(&self.exe, ".prev")
    }

    fn staged(&self) -> PathBuf {
        with_suffix(&self.exe, ".new")
    }

    fn marker(&self) -> PathBuf {
        marker_path(&self.data_dir)
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join("upgrade-pending")
}

/// SHA-256 of a file, lower-case hex.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a start with an upgrade marker present should do.
#[derive(Debug, PartialEq, Eq)]
pub enum OnStart {
    /// No upgrade under way.
    Normal,
    /// Run on, counting this start.
    Count(u32),
    /// Too many starts without settling: put the previous binary back.
    RollBack,
}

/// Decides from the marker's start count (`None`: no marker).
pub fn on_start(starts: Option<u32>) -> OnStart {
    match starts {
        None => OnStart::Normal,
        Some(n) if n + 1 > MAX_STARTS => OnStart::RollBack,
        Some(n) => OnStart::Count(n + 1),
    }
}

/// Called first thing at start: counts this start of an unsettled upgrade, or, after
/// too many, restores the previous binary and execs it (returns only if that fails).
pub fn check_at_start(agent: &Agent) {
    let marker = agent.marker();
    let starts = std::fs::read_to_string(&marker)
        .ok()
        .map(|s| s.trim().parse::<u32>().unwrap_or(0));
    match on_start(starts) {
        OnStart::Normal => {}
        OnStart::Count(n) => {
            let _ = std::fs::write(&marker, n.to_string());
        }
        OnStart::RollBack => {
            tracing::error!("the upgraded agent keeps failing: going back to the previous binary");
            let _ = std::fs::remove_file(&marker);
            if std::fs::rename(agent.prev(), &agent.exe).is_ok() {
                let e = std::process::Command::new(&agent.exe)
                    .args(&agent.args)
                    .exec();
                tracing::error!(error = %e, "cannot run the previous binary");
            }
        }
    }
}

/// Marks an upgrade done once this agent has run for [`SETTLE`].
pub async fn settle(agent: Agent) {
    tokio::time::sleep(SETTLE).await;
    if std::fs::remove_file(agent.marker()).is_ok() {
        tracing::info!(digest = %agent.digest, "agent upgrade settled");
    }
}

/// Why an upgrade was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The object store or the object could not be read.
    #[error("cannot fetch the binary: {0}")]
    Fetch(String),
    /// The fetched bytes are not what was asked for.
    #[error("the binary's SHA-256 is {got}, not {want}: upload it again")]
    Digest {
        /// What the bytes hash to.
        got: String,
        /// What the request said.
        want: String,
    },
    /// The new binary does not run here.
    #[error("the new binary does not run on this node ({0}); the old one stays")]
    Trial(String),
    /// No previous binary to go back to.
    #[error("no previous binary to roll back to")]
    NoPrevious,
    /// A file could not be written or moved.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Answers upgrade requests until the connection closes. A request that succeeds does
/// not return: the process becomes the new agent.
pub async fn serve(client: async_nats::Client, agent: Agent) -> anyhow::Result<()> {
    let mut requests = client.subscribe(names::node::upgrade(&agent.node)).await?;
    while let Some(msg) = requests.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let outcome = match UpgradeRequest::decode(msg.payload.clone()) {
            Ok(req) if req.rollback => restore_previous(&agent),
            Ok(req) => stage(&client, &agent, &req)
                .await
                .and_then(|()| swap(&agent)),
            Err(e) => Err(UpgradeError::Fetch(format!("undecodable request: {e}"))),
        };
        let reply = UpgradeReply {
            error: outcome
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            from_digest: agent.digest.clone(),
        };
        let _ = client.publish(reply_to, reply.encode_to_vec().into()).await;
        let _ = client.flush().await;
        match outcome {
            Ok(()) => {
                tracing::info!("re-executing as the new agent; containers keep running");
                let e = std::process::Command::new(&agent.exe)
                    .args(&agent.args)
                    .exec();
                // Still here: put the running binary back where it was.
                tracing::error!(error = %e, "cannot run the new binary; restoring the old one");
                let _ = std::fs::remove_file(agent.marker());
                let _ = std::fs::rename(agent.prev(), &agent.exe);
            }
            Err(e) => tracing::warn!(error = %e, "upgrade refused"),
        }
    }
    Ok(())
}

/// Fetches the binary to `<exe>.new`, checks its digest and that it runs.
async fn stage(
    client: &async_nats::Client,
    agent: &Agent,
    req: &UpgradeRequest,
) -> Result<(), UpgradeError> {
    let fetch = |e: &dyn std::fmt::Display| UpgradeError::Fetch(e.to_string());
    let js = async_nats::jetstream::new(client.clone());
    let store = js
        .get_object_store(names::OBJECT_STORE_AGENTS)
        .await
        .map_err(|e| fetch(&e))?;
    let mut object = store.get(&req.object).await.map_err(|e| fetch(&e))?;
    let staged = agent.staged();
    let mut file = tokio::fs::File::create(&staged).await?;
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(|e| fetch(&e))?;
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    let got = {
        let path = staged.clone();
        tokio::task::spawn_blocking(move || file_digest(&path))
            .await
            .map_err(std::io::Error::other)??
    };
    if got != req.digest {
        let _ = std::fs::remove_file(&staged);
        return Err(UpgradeError::Digest {
            got,
            want: req.digest.clone(),
        });
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    if let Err(e) = trial(&staged).await {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    Ok(())
}

/// Runs `<binary> --version`: it must exit 0 and name itself.
async fn trial(binary: &Path) -> Result<(), UpgradeError> {
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TRIAL, run)
        .await
        .map_err(|_| UpgradeError::Trial(format!("--version took over {TRIAL:?}")))?
        .map_err(|e| UpgradeError::Trial(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.starts_with("voiyd-node ") {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().next().unwrap_or("").trim();
        return Err(UpgradeError::Trial(format!(
            "`--version` exited with {}{}",
            out.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )));
    }
    Ok(())
}

/// Keeps the running binary as `<exe>.prev` and moves the staged one into place, with
/// the marker written first.
fn swap(agent: &Agent) -> Result<(), UpgradeError> {
    std::fs::write(agent.marker(), "0")?;
    std::fs::rename(&agent.exe, agent.prev())?;
    if let Err(e) = std::fs::rename(agent.staged(), &agent.exe) {
        let _ = std::fs::rename(agent.prev(), &agent.exe);
        let _ = std::fs::remove_file(agent.marker());
        return Err(e.into());
    }
    Ok(())
}

/// Puts `<exe>.prev` back in place (the request to roll back).
fn restore_previous(agent: &Agent) -> Result<(), UpgradeError> {
    if !agent.prev().exists() {
        return Err(UpgradeError::NoPrevious);
    }
    let _ = std::fs::remove_file(agent.marker());
    std::fs::rename(agent.prev(), &agent.exe)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_counted_then_rolled_back() {
        assert_eq!(on_start(None), OnStart::Normal);
        assert_eq!(on_start(Some(0)), OnStart::Count(1));
        assert_eq!(on_start(Some(MAX_STARTS - 1)), OnStart::Count(MAX_STARTS));
        assert_eq!(on_start(Some(MAX_STARTS)), OnStart::RollBack);
    }

    #[tokio::test]
    async fn a_binary_that_does_not_run_fails_the_trial() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad");
        std::fs::write(&bad, "#!/bin/sh\necho broken >&2\nexit 3\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = trial(&bad).await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("broken"), "{e}");
        let good = d.path().join("good");
        std::fs::write(&good, "#!/bin/sh\necho voiyd-node 9.9.9\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
        trial(&good).await.unwrap();
        assert_eq!(file_digest(&good).unwrap().len(), 64, "hex SHA-256");
    }
}

//! Joining a cluster with a one-time token: the node makes its own NATS identity (a
//! user nkey; the seed never leaves the data dir), sends the public key with the token
//! through the restricted join identity, and from then on connects as itself.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use voiyd_messages::v1::{JoinReply, JoinRequest};
use voiyd_nats::api::ApiClient;
use voiyd_nats::auth;
use voiyd_nats::connect::{connect, ConnectOptions};
use voiyd_nats::names;

/// The node's NATS seed in its data dir (mode 0600).
pub const SEED_FILE: &str = "nats.nk";

/// Why joining failed. One line each, saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The seed file could not be read or written.
    #[error("cannot {action} {}: {reason}", .path.display())]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// NATS could not be reached with the join identity.
    #[error("cannot join: {0}")]
    Connect(#[from] voiyd_nats::ConnectError),
    /// The server refused the token or the name.
    #[error("cannot join: {0}")]
    Refused(#[from] voiyd_nats::api::ApiError),
}

/// Where the node's seed lives.
pub fn seed_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SEED_FILE)
}

/// The seed file to connect with: the one kept from an earlier join, else (with a
/// token) a new one obtained by joining now, else none (a cluster without auth, or
/// credentials given by flags).
pub async fn credentials(
    data_dir: &Path,
    node: &str,
    token: Option<&str>,
    base: &ConnectOptions,
) -> Result<Option<PathBuf>, JoinError> {
    let path = seed_path(data_dir);
    if path.exists() {
        if token.is_some() {
            tracing::info!(seed = %path.display(), "already joined: ignoring --join-token");
        }
        return Ok(Some(path));
    }
    let Some(token) = token else {
        return Ok(None);
    };
    std::fs::create_dir_all(data_dir).map_err(|e| JoinError::Io {
        action: "create",
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (seed, public_key) = auth::new_user_key();
    // Written aside first: the seed must exist on disk before the cluster trusts it,
    // or a crash in between would leave a registered key nobody holds.
    let pending = path.with_extension("nk.pending");
    let _ = std::fs::remove_file(&pending);
    write_private(&pending, &format!("{seed}\n"))?;

    let opts = ConnectOptions {
        name: format!("voiyd-node {node} (joining)"),
        user: Some(auth::JOIN_USER.to_string()),
        password: Some(auth::JOIN_PASSWORD.to_string()),
        nkey_seed: None,
        creds_file: None,
        token: None,
        inbox_prefix: Some(names::JOIN_INBOX_PREFIX.to_string()),
        retry_on_initial_connect: false,
        ..base.clone()
    };
    let client = connect(&opts).await?;
    let api = ApiClient::new(client.clone()).with_timeout(Duration::from_secs(15));
    let req = JoinRequest {
        token: token.to_string(),
        node: node.to_string(),
        public_key,
    };
    let result: Result<JoinReply, _> = api.call(auth::JOIN_KIND, auth::JOIN_VERB, &req).await;
    let _ = client.drain().await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&pending);
        return Err(e.into());
    }
    std::fs::rename(&pending, &path).map_err(|e| JoinError::Io {
        action: "keep",
        path: path.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(seed = %path.display(), "joined the cluster; connecting with the node's own identity");
    Ok(Some(path))
}

fn write_private(path: &Path, text: &str) -> Result<(), JoinError> {
    let io = |action, e: std::io::Error| JoinError::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))
}

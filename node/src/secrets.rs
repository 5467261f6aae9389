//! Secrets on the node: fetched for one task at a time, opened with the agent's own
//! xkey, kept only in memory (a tmpfs) and in the task's container.
//!
//! The agent makes a new xkey pair at every start and registers the public half in its
//! heartbeat; servers seal a secret's values to it ([`voiyd_messages::v1::SecretReply`]).
//! A secret mount is a directory `<data>/secrets/<task>/<secret>/` on a tmpfs, one file
//! per key, bind-mounted read-only; files are replaced by rename, so a running container
//! sees an update at once. Environment variables take a value at container creation.

use crate::decide::reconcile::Desired;
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use voiyd_messages::v1::{SecretReply, SecretRequest, SecretValues};
use voiyd_nats::names;

/// How long a fetch waits for the NATS connection and then for an answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The values of one secret, by key.
pub type Values = BTreeMap<String, Vec<u8>>;

/// The node's side of secrets.
pub struct Secrets {
    node: String,
    dir: PathBuf,
    xkey: nkeys::XKey,
    client: watch::Receiver<Option<async_nats::Client>>,
    connect: watch::Sender<Option<async_nats::Client>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("node", &self.node)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Where a task's secret mount lives on the node.
pub fn mount_dir(data_dir: &Path, task: &str, secret: &str) -> PathBuf {
    data_dir.join("secrets").join(task).join(secret)
}

impl Secrets {
    /// A fresh key pair for this agent run; secrets live under `<data_dir>/secrets`.
    pub fn new(node: &str, data_dir: &Path) -> Secrets {
        let (connect, client) = watch::channel(None);
        Secrets {
            node: node.to_string(),
            dir: data_dir.join("secrets"),
            xkey: nkeys::XKey::new(),
            client,
            connect,
        }
    }

    /// The public xkey the heartbeat registers.
    pub fn public_key(&self) -> String {
        self.xkey.public_key()
    }

    /// Hands over the NATS connection fetches use (set once it exists).
    pub fn connected(&self, client: async_nats::Client) {
        let _ = self.connect.send(Some(client));
    }

    /// The values of `secret` for `task`, as the servers hand them to this node.
    pub async fn fetch(&self, task: &str, secret: &str) -> Result<(Values, u64), String> {
        let mut rx = self.client.clone();
        let client = tokio::time::timeout(FETCH_TIMEOUT, rx.wait_for(Option::is_some))
            .await
            .map_err(|_| "not connected to NATS yet".to_string())?
            .map_err(|_| "the agent is stopping".to_string())?
            .clone()
            .expect("waited for a client");
        let req = SecretRequest {
            task: task.to_string(),
            secret: secret.to_string(),
        };
        let msg = tokio::time::timeout(
            FETCH_TIMEOUT,
            client.request(names::node::secrets(&self.node), req.encode_to_vec().into()),
        )
        .await
        .map_err(|_| format!("no server answered for secret {secret} in {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot ask for secret {secret}: {e}"))?;
        let reply = SecretReply::decode(msg.payload).map_err(|e| e.to_string())?;
        if !reply.error.is_empty() {
            return Err(reply.error);
        }
        let sender = nkeys::XKey::from_public_key(&reply.sender)
            .map_err(|e| format!("secret {secret}: bad sender key: {e}"))?;
        let plain = self
            .xkey
            .open(&reply.sealed, &sender)
            .map_err(|e| format!("secret {secret} cannot be opened with this node's key: {e}"))?;
        let values = SecretValues::decode(plain.as_slice()).map_err(|e| e.to_string())?;
        Ok((values.values.into_iter().collect(), reply.revision))
    }

    /// The task as it runs here: environment values taken from its secrets, secret
    /// mounts written. Tasks that use no secret come back unchanged.
    pub async fn materialize(&self, desired: &Desired) -> Result<Desired, String> {
        // What the container itself reads (the pull secret was used by the pull).
        let mut used: Vec<&str> = desired
            .config
            .envvars
            .iter()
            .filter_map(|e| e.value_from.as_ref().map(|f| f.secret.as_str()))
            .chain(
                desired
                    .config
                    .mounts
                    .iter()
                    .filter(|m| {
                        voiyd_messages::validate::mount_type(m).as_deref() == Some("secret")
                    })
                    .map(|m| m.secret.as_str()),
            )
            .collect();
        used.sort_unstable();
        used.dedup();
        if used.is_empty() {
            return Ok(desired.clone());
        }
        let mut fetched: BTreeMap<String, Values> = BTreeMap::new();
        for name in used {
            let (values, _) = self.fetch(&desired.task, name).await?;
            fetched.insert(name.to_string(), values);
        }
        let mut out = desired.clone();
        for e in &mut out.config.envvars {
            if let Some(from) = e.value_from.take() {
                let v = fetched
                    .get(&from.secret)
                    .and_then(|vals| vals.get(&from.key))
                    .ok_or_else(|| format!("secret {} has no key {}", from.secret, from.key))?;
                e.value = String::from_utf8(v.clone()).map_err(|_| {
                    format!(
                        "key {} of secret {} is not UTF-8 text, which an environment variable needs: mount the secret as a file instead",
                        from.key, from.secret
                    )
                })?;
            }
        }
        for m in &desired.config.mounts {
            if voiyd_messages::validate::mount_type(m).as_deref() == Some("secret") {
                if let Some(values) = fetched.get(&m.secret) {
                    self.write(&desired.task, &m.secret, values)?;
                }
            }
        }
        Ok(out)
    }

    /// The credentials of the task's image pull secret, if it names one: (registry or
    /// "" for the image's, username, password).
    pub async fn pull_credentials(
        &self,
        desired: &Desired,
    ) -> Result<Option<(String, String, String)>, String> {
        let name = &desired.config.image_pull_secret;
        if name.is_empty() {
            return Ok(None);
        }
        let (values, _) = self.fetch(&desired.task, name).await?;
        let text = |k: &str| {
            values
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        Ok(Some((
            text(voiyd_messages::secret::PULL_SECRET_REGISTRY),
            text("username"),
            text("password"),
        )))
    }

    /// Writes a secret's files for a task: each key a file, replaced by rename; keys
    /// no longer in the secret are removed.
    fn write(&self, task: &str, secret: &str, values: &Values) -> Result<(), String> {
        self.ensure_tmpfs()?;
        let dir = self.dir.join(task).join(secret);
        let failed = |e: std::io::Error| format!("secret {secret}: {}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(failed)?;
        for (key, value) in values {
            let tmp = dir.join(format!("..{key}.new"));
            std::fs::write(&tmp, value).map_err(failed)?;
            set_mode(&tmp, 0o444).map_err(failed)?;
            std::fs::rename(&tmp, dir.join(key)).map_err(failed)?;
        }
        for entry in std::fs::read_dir(&dir).map_err(failed)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !values.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Mounts a tmpfs on the secrets directory unless one is there: secret values never
    /// touch the node's disk.
    fn ensure_tmpfs(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        // `f_type`'s width differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = rustix::fs::statfs(&self.dir)
            .map(|s| s.f_type as i64 == TMPFS_MAGIC)
            .unwrap_or(false);
        if on_tmpfs {
            return Ok(());
        }
        use rustix::mount::{mount, MountFlags};
        mount(
            "voiyd-secrets",
            &self.dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            c"mode=0711,size=64m",
        )
        .map_err(|e| {
            format!(
                "cannot mount a tmpfs on {} for secrets: {e} (the agent runs as root?)",
                self.dir.display()
            )
        })
    }

    /// Removes a task's secret files.
    pub fn remove(&self, task: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(task));
    }

    /// Rewrites the mounts of `secret` in every task that has one here (after the
    /// secret changed). Returns the tasks brought up to date.
    pub async fn refresh(&self, secret: &str) -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for t in tasks.flatten() {
            let task = t.file_name().to_string_lossy().into_owned();
            if !t.path().join(secret).is_dir() {
                continue;
            }
            match self.fetch(&task, secret).await {
                Ok((values, _)) => match self.write(&task, secret, &values) {
                    Ok(()) => done.push(task),
                    Err(e) => {
                        tracing::warn!(%task, %secret, error = %e, "cannot update secret files")
                    }
                },
                Err(e) => {
                    tracing::warn!(%task, %secret, error = %e, "cannot fetch an updated secret")
                }
            }
        }
        done
    }

    /// Follows `voiyd_secrets` and refreshes mounts whose secret changed, until the
    /// connection closes.
    pub async fn follow(self: std::sync::Arc<Self>, js: async_nats::jetstream::Context) {
        use futures::StreamExt;
        let mut changes =
            voiyd_nats::watch::Watcher::new(js, names::BUCKET_SECRETS, ">", "secret").raw();
        while let Some(change) = changes.next().await {
            if let voiyd_nats::watch::WatchEvent::Put { key, .. } = change {
                let secret = names::untoken(&key);
                let updated = self.refresh(&secret).await;
                if !updated.is_empty() {
                    tracing::info!(%secret, tasks = ?updated, "secret files updated");
                }
            }
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

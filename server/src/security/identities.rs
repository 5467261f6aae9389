//! NATS identities: the servers', the administrators', the nodes'; join tokens, node
//! credentials and their revocation.
//!
//! The source of truth is bucket `voiyd_credentials` (public keys only; every seed stays
//! with its holder). nats-server asks the voiyd-servers about every connecting client
//! (auth callout, [`crate::security::callout`]); the servers themselves connect with an identity
//! derived from the cluster's auth secret, which nats-server knows by its public key.
//! Revoking a node deletes its key and disconnects its connections through the system
//! account, on whichever nats-server they are.

use crate::error::ServerError;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use voiyd_messages::v1::{Credential, JoinToken};
use voiyd_nats::auth as nauth;
use voiyd_nats::callout::AuthKeys;
use voiyd_nats::names;

/// Seed file of the servers' identity (derived from the auth secret), under `<data_dir>/auth`.
pub const SERVER_SEED: &str = "server.nk";
/// Seed file of the local administrator identity (give it to voiydctl), under `<data_dir>/auth`.
pub const ADMIN_SEED: &str = "admin.nk";
/// The auth secret of a server that was given none (one server on its own).
pub const SECRET_FILE: &str = "secret";
/// A full re-read of the credentials for an unknown key happens at most this often, so
/// that clients with made-up keys cannot make a server read the bucket in a loop.
const RELOAD_EVERY: Duration = Duration::from_millis(500);
/// How long the answers of every nats-server to a system request are gathered.
const GATHER: Duration = Duration::from_millis(750);

/// Who a connection is, as the credentials say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// An administrator (voiydctl).
    Admin(String),
    /// A node agent.
    Node(String),
}

impl Holder {
    /// The user name NATS shows for the connection (and revocation looks for).
    pub fn user_name(&self) -> String {
        match self {
            Holder::Admin(n) => format!("admin:{n}"),
            Holder::Node(n) => format!("node:{n}"),
        }
    }
    fn key(&self) -> String {
        match self {
            Holder::Admin(n) => names::admin_credential_key(n),
            Holder::Node(n) => names::node_credential_key(n),
        }
    }
}

/// The identities of one server and what it knows of everyone else's.
pub struct AuthManager {
    keys: AuthKeys,
    /// `<data_dir>/auth/server.nk`: the derived server seed, for tools and tests.
    pub server_seed: PathBuf,
    /// `<data_dir>/auth/admin.nk`.
    pub admin_seed: PathBuf,
    admin_key: String,
    creds: tokio::sync::OnceCell<voiyd_nats::TypedKv<Credential>>,
    index: tokio::sync::Mutex<Index>,
    system: tokio::sync::OnceCell<async_nats::Client>,
}

#[derive(Default)]
struct Index {
    by_key: HashMap<String, Holder>,
    loaded: Option<Instant>,
}

impl std::fmt::Debug for AuthManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthManager")
            .field("keys", &self.keys)
            .field("admin_key", &self.admin_key)
            .finish()
    }
}

impl AuthManager {
    /// Derives the cluster keys from `secret` (or, for a server on its own, from a
    /// secret it made once under `<data_dir>/auth`) and creates the local admin seed.
    pub fn prepare(data_dir: &Path, secret: Option<&str>) -> anyhow::Result<AuthManager> {
        let dir = data_dir.join("auth");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let secret = match secret {
            Some(s) => s.to_string(),
            None => {
                let path = dir.join(SECRET_FILE);
                if !path.exists() {
                    write_private(&path, &format!("{}\n", random_hex(32)?))?;
                }
                std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            }
        };
        let keys = AuthKeys::derive(&secret)?;
        let server_seed = dir.join(SERVER_SEED);
        let seed = keys.server.seed().map_err(|e| anyhow::anyhow!("{e}"))?;
        if std::fs::read_to_string(&server_seed)
            .ok()
            .as_deref()
            .map(str::trim)
            != Some(&seed)
        {
            replace_private(&server_seed, &format!("{seed}\n"))?;
        }
        let admin_seed = dir.join(ADMIN_SEED);
        if !admin_seed.exists() {
            let (seed, _) = nauth::new_user_key();
            write_private(&admin_seed, &format!("{seed}\n"))?;
        }
        let text = std::fs::read_to_string(&admin_seed)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", admin_seed.display()))?;
        let admin_key = nauth::public_key_of_seed(&text).ok_or_else(|| {
            anyhow::anyhow!(
                "{} does not hold a user nkey seed: remove it to make a new one",
                admin_seed.display()
            )
        })?;
        Ok(AuthManager {
            keys,
            server_seed,
            admin_seed,
            admin_key,
            creds: tokio::sync::OnceCell::new(),
            index: tokio::sync::Mutex::new(Index::default()),
            system: tokio::sync::OnceCell::new(),
        })
    }

    /// The cluster's key pairs.
    pub fn keys(&self) -> &AuthKeys {
        &self.keys
    }

    /// The servers' identity seed (to connect with).
    pub fn server_seed_text(&self) -> String {
        self.keys.server.seed().unwrap_or_default()
    }

    /// The system identity's seed (to connect to the system account with).
    pub fn system_seed_text(&self) -> String {
        self.keys.system.seed().unwrap_or_default()
    }

    /// Hands over the system-account connection revocations use.
    pub fn attach_system(&self, client: async_nats::Client) {
        let _ = self.system.set(client);
    }

    /// Name under which this server's local admin key is registered.
    fn local_admin_name(&self) -> String {
        format!("local-{}", self.admin_key[1..11].to_ascii_lowercase())
    }

    pub(crate) async fn creds(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<&voiyd_nats::TypedKv<Credential>, ServerError> {
        self.creds.get_or_try_init(|| creds_kv(js)).await
    }

    /// Records this server's local admin key, so that every server admits it.
    pub async fn register_local_admin(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<(), ServerError> {
        let creds = self.creds(js).await?;
        let key = names::admin_credential_key(&self.local_admin_name());
        if let Some((c, _)) = creds.get(&key).await? {
            if c.public_key == self.admin_key {
                return Ok(());
            }
        }
        creds
            .put(
                &key,
                &Credential {
                    public_key: self.admin_key.clone(),
                    created_at: Some(voiyd_messages::time::now()),
                },
            )
            .await?;
        Ok(())
    }

    /// Who holds `nkey`, as the bucket says now. `hint` (a node name from the
    /// connection name) lets most lookups be one read; otherwise the index of every
    /// key answers, re-read (at most every [`RELOAD_EVERY`]) when it does not know the key.
    pub async fn holder(
        &self,
        js: &async_nats::jetstream::Context,
        nkey: &str,
        hint: Option<Holder>,
    ) -> Result<Option<Holder>, ServerError> {
        let creds = self.creds(js).await?;
        let confirm = |h: Holder| async move {
            let found = creds.get(&h.key()).await?;
            Ok::<_, ServerError>(found.filter(|(c, _)| c.public_key == nkey).map(|_| h))
        };
        if let Some(h) = hint {
            if let Some(h) = confirm(h).await? {
                return Ok(Some(h));
            }
        }
        let asked = Instant::now();
        let mut index = loop {
            let index = self.index.lock().await;
            if let Some(h) = index.by_key.get(nkey).cloned() {
                drop(index);
                return confirm(h).await;
            }
            match index.loaded {
                // Read after this request came: the key is not there.
                Some(t) if t >= asked => return Ok(None),
                // Read too recently to read again: wait for the next read.
                Some(t) if t.elapsed() < RELOAD_EVERY => {
                    let wait = RELOAD_EVERY - t.elapsed();
                    drop(index);
                    tokio::time::sleep(wait).await;
                }
                _ => break index,
            }
        };
        let started = Instant::now();
        let mut by_key = HashMap::new();
        for (key, cred, _) in creds.entries(">").await? {
            let holder = match key.split_once('.') {
                Some(("node", n)) => Holder::Node(names::untoken(n)),
                Some(("admin", n)) => Holder::Admin(names::untoken(n)),
                _ => continue,
            };
            by_key.insert(cred.public_key, holder);
        }
        index.by_key = by_key;
        index.loaded = Some(started);
        Ok(index.by_key.get(nkey).cloned())
    }

    /// Disconnects every connection of `holder`, on every nats-server of the cluster;
    /// returns how many were closed. Without a system connection there is nothing to do.
    pub async fn disconnect(&self, holder: &Holder) -> Result<usize, ServerError> {
        let Some(sys) = self.system.get() else {
            return Ok(0);
        };
        let user = holder.user_name();
        let query = serde_json::json!({ "user": user, "auth": true, "limit": 10000 });
        let answers = gather(sys, "$SYS.REQ.SERVER.PING.CONNZ", query.to_string()).await?;
        let mut kicked = 0;
        for a in answers {
            let Some(server) = a["server"]["id"].as_str() else {
                continue;
            };
            let conns = a["data"]["connections"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in conns {
                if c["authorized_user"].as_str() != Some(user.as_str()) {
                    continue;
                }
                let Some(cid) = c["cid"].as_u64() else {
                    continue;
                };
                let body = serde_json::json!({ "cid": cid }).to_string();
                let subject = format!("$SYS.REQ.SERVER.{server}.KICK");
                match sys.request(subject, body.into()).await {
                    Ok(_) => kicked += 1,
                    Err(e) => {
                        tracing::warn!(%user, cid, error = %e, "cannot disconnect a revoked connection")
                    }
                }
            }
        }
        Ok(kicked)
    }
}

/// Sends a system request to every nats-server and gathers the answers that arrive
/// within [`GATHER`].
async fn gather(
    sys: &async_nats::Client,
    subject: &str,
    body: String,
) -> Result<Vec<serde_json::Value>, ServerError> {
    let inbox = sys.new_inbox();
    let mut sub = sys
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ServerError::failed("cannot ask the NATS servers", e))?;
    sys.publish_with_reply(subject.to_string(), inbox, body.into())
        .await
        .map_err(|e| ServerError::failed("cannot ask the NATS servers", e))?;
    let deadline = tokio::time::Instant::now() + GATHER;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(v) = serde_json::from_slice(&m.payload) {
            out.push(v);
        }
    }
    Ok(out)
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) async fn creds_kv(
    js: &async_nats::jetstream::Context,
) -> Result<voiyd_nats::TypedKv<Credential>, ServerError> {
    typed_kv(js, names::BUCKET_CREDENTIALS, "credential").await
}

pub(crate) async fn tokens_kv(
    js: &async_nats::jetstream::Context,
) -> Result<voiyd_nats::TypedKv<JoinToken>, ServerError> {
    typed_kv(js, names::BUCKET_JOIN_TOKENS, "join token").await
}

/// Bucket `bucket` holding messages `M` (`what` names one in errors).
pub(crate) async fn typed_kv<M: prost::Message + Default + 'static>(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    what: &'static str,
) -> Result<voiyd_nats::TypedKv<M>, ServerError> {
    let kv = js
        .get_key_value(bucket)
        .await
        .map_err(|e| ServerError::failed(format!("cannot open bucket {bucket}"), e))?;
    Ok(voiyd_nats::TypedKv::new(kv, what))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Replaces a file atomically (write aside, rename), mode 0600.
fn replace_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, text)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot replace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_derives_keys_and_keeps_seeds_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let m = AuthManager::prepare(dir.path(), None).unwrap();
        // Stable across restarts: the made secret and the admin seed are kept.
        let again = AuthManager::prepare(dir.path(), None).unwrap();
        assert_eq!(
            again.keys().server.public_key(),
            m.keys().server.public_key()
        );
        assert_eq!(again.admin_key, m.admin_key);
        // The same secret gives every server the same cluster keys, its own admin key.
        let other = tempfile::tempdir().unwrap();
        let a = AuthManager::prepare(dir.path(), Some("shared-secret-0123456789")).unwrap();
        let b = AuthManager::prepare(other.path(), Some("shared-secret-0123456789")).unwrap();
        assert_eq!(a.keys().issuer.public_key(), b.keys().issuer.public_key());
        assert_ne!(a.admin_key, b.admin_key);
        assert_ne!(a.local_admin_name(), b.local_admin_name());
        assert!(AuthManager::prepare(other.path(), Some("short")).is_err());
        // The server seed file follows the secret in use.
        let seed = std::fs::read_to_string(&a.server_seed).unwrap();
        assert_eq!(seed.trim(), a.server_seed_text());
        for f in [
            &a.server_seed,
            &a.admin_seed,
            &dir.path().join("auth").join(SECRET_FILE),
        ] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}

//! NATS identities in embedded mode: the server's and the local admin's keys, join
//! tokens, node credentials and their revocation.
//!
//! The source of truth is bucket `voiyd_credentials` (public keys only; every seed stays
//! with its holder). The server that owns the embedded nats-server renders the
//! `authorization {}` block from it into `<data_dir>/nats/auth.conf` (included by the
//! generated config) and reloads nats-server with SIGHUP: adding or revoking a node
//! keeps every other connection up, and a revoked node's connection is closed by NATS.
//! A copy of the last rendered identities (`auth.json`) lets a restart start NATS with
//! the same identities before it can read the bucket.

use crate::api::{Ctx, Failure};
use bytes::Bytes;
use prost::Message;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use voiyd_messages::v1::{
    Credential, DeleteRequest, JoinReply, JoinRequest, JoinToken, TokenCreateReply,
    TokenCreateRequest,
};
use voiyd_nats::auth::{self as nauth, AuthSpec};
use voiyd_nats::embedded::EmbeddedNats;
use voiyd_nats::names;

/// Seed file of the server's own identity, under `<data_dir>/auth`.
pub const SERVER_SEED: &str = "server.nk";
/// Seed file of the local administrator identity (give it to voiydctl), under `<data_dir>/auth`.
pub const ADMIN_SEED: &str = "admin.nk";
/// Default lifetime of a join token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of a join token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest join token accepted (ours are 52 characters).
const MAX_TOKEN_LEN: usize = 128;
/// Prefix of every join token, so that one pasted in the wrong place is recognisable.
const TOKEN_PREFIX: &str = "voiyd-join-";

/// The server's and the local admin's key files.
#[derive(Debug, Clone)]
pub struct LocalIdentities {
    /// The server's seed file.
    pub server_seed: PathBuf,
    /// The server's public key.
    pub server_key: String,
    /// The local admin's seed file.
    pub admin_seed: PathBuf,
    /// The local admin's public key.
    pub admin_key: String,
}

/// Creates (once) and reads the server and admin seeds under `<data_dir>/auth`.
pub fn local_identities(data_dir: &Path) -> anyhow::Result<LocalIdentities> {
    let dir = data_dir.join("auth");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let load = |file: &str| -> anyhow::Result<(PathBuf, String)> {
        let path = dir.join(file);
        if !path.exists() {
            let (seed, _) = nauth::new_user_key();
            write_private(&path, &format!("{seed}\n"))?;
        }
        let seed = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let key = nauth::public_key_of_seed(&seed).ok_or_else(|| {
            anyhow::anyhow!(
                "{} does not hold a user nkey seed: remove it to make a new one",
                path.display()
            )
        })?;
        Ok((path, key))
    };
    let (server_seed, server_key) = load(SERVER_SEED)?;
    let (admin_seed, admin_key) = load(ADMIN_SEED)?;
    Ok(LocalIdentities {
        server_seed,
        server_key,
        admin_seed,
        admin_key,
    })
}

/// Keeps the embedded nats-server's authorization in step with bucket `voiyd_credentials`.
pub struct AuthManager {
    ids: LocalIdentities,
    auth_file: PathBuf,
    cache_file: PathBuf,
    nats: tokio::sync::OnceCell<Arc<EmbeddedNats>>,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AuthManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthManager")
            .field("auth_file", &self.auth_file)
            .finish()
    }
}

impl AuthManager {
    /// Prepares `<nats_dir>/auth.conf` from the last known identities, before NATS
    /// starts. The generated NATS config must `include "auth.conf"` ([`Self::include`]).
    pub fn prepare(ids: LocalIdentities, nats_dir: &Path) -> anyhow::Result<AuthManager> {
        std::fs::create_dir_all(nats_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", nats_dir.display()))?;
        let m = AuthManager {
            ids,
            auth_file: nats_dir.join("auth.conf"),
            cache_file: nats_dir.join("auth.json"),
            nats: tokio::sync::OnceCell::new(),
            lock: tokio::sync::Mutex::new(()),
        };
        let cached: AuthSpec = std::fs::read(&m.cache_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let spec = m.spec(cached.admins.into_iter(), cached.nodes.into_iter());
        m.write(&spec)?;
        Ok(m)
    }

    /// The line the generated NATS config needs.
    pub fn include() -> &'static str {
        "include \"auth.conf\"\n"
    }

    /// Hands over the running server, for reloads.
    pub fn attach(&self, nats: Arc<EmbeddedNats>) {
        let _ = self.nats.set(nats);
    }

    fn spec(
        &self,
        admins: impl Iterator<Item = (String, String)>,
        nodes: impl Iterator<Item = (String, String)>,
    ) -> AuthSpec {
        let mut spec = AuthSpec {
            server: self.ids.server_key.clone(),
            admins: admins.collect(),
            nodes: nodes.collect(),
        };
        spec.admins
            .insert("local".to_string(), self.ids.admin_key.clone());
        spec
    }

    /// Writes both files; returns whether the rendered config changed.
    fn write(&self, spec: &AuthSpec) -> anyhow::Result<bool> {
        let text = nauth::render_authorization(spec)?;
        if std::fs::read_to_string(&self.auth_file).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        replace_private(&self.cache_file, &serde_json::to_string_pretty(spec)?)?;
        replace_private(&self.auth_file, &text)?;
        Ok(true)
    }

    /// Re-reads the bucket, rewrites the authorization and reloads NATS if it changed.
    pub async fn apply(&self, js: &async_nats::jetstream::Context) -> Result<(), Failure> {
        let _guard = self.lock.lock().await;
        let kv = creds_kv(js).await?;
        let mut admins = Vec::new();
        let mut nodes = Vec::new();
        for (key, cred, _) in kv.entries(">").await? {
            match key.split_once('.') {
                Some(("node", n)) => nodes.push((names::untoken(n), cred.public_key)),
                Some(("admin", n)) => admins.push((names::untoken(n), cred.public_key)),
                _ => tracing::warn!(%key, "ignoring unknown key in voiyd_credentials"),
            }
        }
        let spec = self.spec(admins.into_iter(), nodes.into_iter());
        let changed = self
            .write(&spec)
            .map_err(|e| Failure::internal(format!("cannot write NATS authorization: {e}")))?;
        if changed {
            if let Some(nats) = self.nats.get() {
                nats.reload()
                    .await
                    .map_err(|e| Failure::internal(format!("cannot reload NATS: {e}")))?;
            }
        }
        Ok(())
    }
}

async fn creds_kv(
    js: &async_nats::jetstream::Context,
) -> Result<voiyd_nats::TypedKv<Credential>, Failure> {
    let kv = js
        .get_key_value(names::BUCKET_CREDENTIALS)
        .await
        .map_err(|e| Failure::internal(format!("cannot open bucket voiyd_credentials: {e}")))?;
    Ok(voiyd_nats::TypedKv::new(kv, "credential"))
}

async fn tokens_kv(
    js: &async_nats::jetstream::Context,
) -> Result<voiyd_nats::TypedKv<JoinToken>, Failure> {
    let kv = js
        .get_key_value(names::BUCKET_JOIN_TOKENS)
        .await
        .map_err(|e| Failure::internal(format!("cannot open bucket voiyd_join_tokens: {e}")))?;
    Ok(voiyd_nats::TypedKv::new(kv, "join token"))
}

fn manager(ctx: &Ctx) -> Result<&AuthManager, Failure> {
    ctx.auth.as_deref().ok_or_else(|| {
        Failure::invalid(
            "this cluster does not issue node credentials: start voiyd-server with --auth (embedded NATS), or configure the node's NATS credentials yourself (docs/security.md)",
        )
    })
}

/// SHA-256 of a token, hex: the key under which it is stored.
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random token.
fn new_token() -> Result<String, Failure> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Failure::internal("no randomness available for a join token"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// The lifetime a request asks for, bounded.
pub fn token_ttl(ttl_seconds: u64) -> Result<Duration, Failure> {
    let ttl = match ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        s => Duration::from_secs(s),
    };
    if ttl > MAX_TOKEN_TTL {
        return Err(Failure::invalid(format!(
            "a join token may live at most {} days: pass a shorter --ttl",
            MAX_TOKEN_TTL.as_secs() / 86400
        )));
    }
    Ok(ttl)
}

/// `tokens.create`: a one-time join token; only its hash is stored.
pub async fn create_token(ctx: &Ctx, body: Bytes) -> Result<TokenCreateReply, Failure> {
    let req = TokenCreateRequest::decode(body)?;
    manager(ctx)?;
    let ttl = token_ttl(req.ttl_seconds)?;
    let token = new_token()?;
    let now = crate::now();
    let expires_at = voiyd_messages::Timestamp {
        seconds: now.seconds + ttl.as_secs() as i64,
        nanos: 0,
    };
    let record = JoinToken {
        created_at: Some(now),
        expires_at: Some(expires_at),
    };
    tokens_kv(&ctx.cluster.js)
        .await?
        .create(&token_hash(&token), &record)
        .await?;
    Ok(TokenCreateReply {
        token,
        expires_at: Some(expires_at),
    })
}

/// Checks a join request's fields before any lookup.
pub fn check_join_request(req: &JoinRequest) -> Result<(), Failure> {
    if req.token.is_empty() || req.token.len() > MAX_TOKEN_LEN {
        return Err(Failure::invalid(
            "the join token is missing or malformed: create one with `voiydctl token create`",
        ));
    }
    voiyd_messages::validate::validate_name("node", &req.node)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    if !nauth::is_user_public_key(&req.public_key) {
        return Err(Failure::invalid(
            "public_key is not a user nkey: the node generates it (voiyd-node --join-token)",
        ));
    }
    Ok(())
}

/// `nodes.join`: spends a join token (once, by CAS) and records the node's public key.
pub async fn join(ctx: &Ctx, body: Bytes) -> Result<JoinReply, Failure> {
    let req = JoinRequest::decode(body)?;
    check_join_request(&req)?;
    let auth = manager(ctx)?;
    let refused = || {
        Failure::invalid(
            "join token is unknown, already used or expired: create a new one with `voiydctl token create`",
        )
    };
    let tokens = tokens_kv(&ctx.cluster.js).await?;
    let key = token_hash(&req.token);
    let Some((record, revision)) = tokens.get(&key).await? else {
        return Err(refused());
    };
    let creds = creds_kv(&ctx.cluster.js).await?;
    let cred_key = names::node_credential_key(&req.node);
    if creds.get(&cred_key).await.ok().flatten().is_some() {
        return Err(Failure::conflict(format!(
            "node {} already has credentials: pick another --name, or `voiydctl delete node {}` first",
            req.node, req.node
        )));
    }
    // One use: the delete succeeds for exactly one request at this revision.
    tokens
        .delete(&key, Some(revision))
        .await
        .map_err(|_| refused())?;
    let expires = record.expires_at.map(|t| t.seconds).unwrap_or(0);
    if expires <= crate::now().seconds {
        return Err(refused());
    }
    creds
        .create(
            &cred_key,
            &Credential {
                public_key: req.public_key.clone(),
                created_at: Some(crate::now()),
            },
        )
        .await
        .map_err(|e| match e {
            voiyd_nats::StoreError::AlreadyExists { .. } => Failure::conflict(format!(
                "node {} already has credentials: pick another --name",
                req.node
            )),
            e => e.into(),
        })?;
    auth.apply(&ctx.cluster.js).await?;
    tracing::info!(node = %req.node, "node joined with its own NATS identity");
    Ok(JoinReply { node: req.node })
}

/// Revokes a node's credentials (part of `nodes.delete`): returns whether it had any.
/// NATS closes the node's connection when it reloads the authorization.
pub async fn revoke(ctx: &Ctx, body: &Bytes) -> Result<bool, Failure> {
    let req = DeleteRequest::decode(body.clone())?;
    let creds = creds_kv(&ctx.cluster.js).await?;
    let key = names::node_credential_key(&req.name);
    let had = creds.get(&key).await.ok().flatten().is_some();
    if had {
        creds.delete(&key, None).await?;
        tracing::info!(node = %req.name, "node credentials revoked");
    }
    if let Some(auth) = ctx.auth.as_deref() {
        auth.apply(&ctx.cluster.js).await?;
    }
    Ok(had)
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
    fn tokens_are_hashed_and_bounded() {
        let t = new_token().unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() <= MAX_TOKEN_LEN);
        assert_ne!(t, new_token().unwrap());
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(token_ttl(0).unwrap(), DEFAULT_TOKEN_TTL);
        assert!(token_ttl(MAX_TOKEN_TTL.as_secs() + 1).is_err());
    }

    #[test]
    fn join_requests_are_checked_first() {
        let (_, key) = nauth::new_user_key();
        let ok = JoinRequest {
            token: "voiyd-join-abc".into(),
            node: "n1".into(),
            public_key: key.clone(),
        };
        assert!(check_join_request(&ok).is_ok());
        for bad in [
            JoinRequest {
                token: String::new(),
                ..ok.clone()
            },
            JoinRequest {
                token: "x".repeat(MAX_TOKEN_LEN + 1),
                ..ok.clone()
            },
            JoinRequest {
                node: "Bad Name!".into(),
                ..ok.clone()
            },
            JoinRequest {
                public_key: "SUABC".into(),
                ..ok.clone()
            },
        ] {
            assert!(check_join_request(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prepare_writes_private_config_with_local_identities() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ids = local_identities(dir.path()).unwrap();
        // Stable across calls: the seeds are kept.
        assert_eq!(
            local_identities(dir.path()).unwrap().server_key,
            ids.server_key
        );
        let m = AuthManager::prepare(ids.clone(), &dir.path().join("nats")).unwrap();
        let text = std::fs::read_to_string(&m.auth_file).unwrap();
        assert!(text.contains(&ids.server_key) && text.contains(&ids.admin_key));
        for f in [&m.auth_file, &ids.server_seed, &ids.admin_seed] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}

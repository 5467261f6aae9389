//! Secrets: stored encrypted, shown without values, handed to a node only for a task
//! assigned to it and only sealed to that node's key.
//!
//! `voiyd_secrets` holds a [`SealedSecret`] per name: the keys in clear (so `get` can
//! list them and nodes can see revisions) and the values AES-256-GCM encrypted with the
//! servers' key ([`crate::security::keyring`]). A node asks on
//! `voiyd.node.<node>.secrets` (a subject only it may publish on under `--auth`); the
//! answer is sealed with NATS xkeys to the public key the node registered in its
//! heartbeat, so neither another node nor anyone reading the reply can open it.

use crate::context::Ctx;
use crate::error::ServerError;
use futures::StreamExt;
use prost::Message;
use std::collections::BTreeMap;
use voiyd_messages::secret::used_by;
use voiyd_messages::v1::{
    DeleteReply, DeleteRequest, GetRequest, ListRequest, Meta, SealedSecret, Secret, SecretReply,
    SecretRequest, SecretValues, TaskConfig,
};
use voiyd_messages::{Kind, Resource};
use voiyd_nats::names;
use voiyd_nats::store::StoreError;

/// Refuses a config that names a secret that does not exist, or a key it lacks.
pub async fn require_used(ctx: &Ctx, config: &TaskConfig) -> Result<(), ServerError> {
    for (name, keys) in used_by(config) {
        let Some((sealed, _)) = read(ctx, &name).await? else {
            return Err(ServerError::invalid(format!(
                "secret {name} not found: create it with voiydctl create secret {name} --from-literal KEY=VALUE"
            )));
        };
        for k in keys {
            if !sealed.keys.contains(&k) {
                return Err(ServerError::invalid(format!(
                    "secret {name} has no key {k} (it has {}): add it with voiydctl apply, or name another key",
                    sealed.keys.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The stored record and its revision.
async fn read(ctx: &Ctx, name: &str) -> Result<Option<(SealedSecret, u64)>, ServerError> {
    Ok(ctx.cluster.secrets.get(&names::spec_key(name)).await?)
}

/// What answers show of a stored secret: its meta and keys, never its values.
fn shown(sealed: SealedSecret, revision: u64) -> Secret {
    let mut meta = sealed.meta.unwrap_or_default();
    meta.resource_version = revision;
    Secret {
        version: Kind::Secret.manifest_version().to_string(),
        meta: Some(meta),
        keys: sealed.keys,
        ..Default::default()
    }
}

/// Validates and encrypts an incoming secret under `meta`.
fn seal(ctx: &Ctx, mut incoming: Secret, meta: Meta) -> Result<SealedSecret, ServerError> {
    if incoming.version.is_empty() {
        incoming.version = Kind::Secret.manifest_version().to_string();
    }
    voiyd_messages::validate::validate_secret(&incoming)
        .map_err(|e| ServerError::invalid(e.to_string()))?;
    let mut values: BTreeMap<String, Vec<u8>> = incoming.data;
    values.extend(
        incoming
            .string_data
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    let keys: Vec<String> = values.keys().cloned().collect();
    let plain = SecretValues {
        values: values.into_iter().collect(),
    }
    .encode_to_vec();
    let (key_id, nonce, ciphertext) = ctx.keyring.encrypt(&meta.name, &plain);
    Ok(SealedSecret {
        meta: Some(meta),
        keys,
        key_id,
        nonce,
        ciphertext,
    })
}

/// `secrets.create`.
pub async fn create(ctx: &Ctx, incoming: Secret) -> Result<Secret, ServerError> {
    let name = incoming.name().to_string();
    let now = voiyd_messages::time::now();
    let meta = Meta {
        name: name.clone(),
        labels: incoming.labels().into_iter().collect(),
        created: Some(now),
        updated: Some(now),
        generation: 1,
        resource_version: 0,
        uid: uuid::Uuid::new_v4().to_string(),
    };
    let sealed = seal(ctx, incoming, meta)?;
    match ctx
        .cluster
        .secrets
        .create(&names::spec_key(&name), &sealed)
        .await
    {
        Ok(revision) => Ok(shown(sealed, revision)),
        Err(StoreError::AlreadyExists { .. }) => Err(ServerError::conflict(format!(
            "secret {name} already exists: change it with voiydctl apply, or delete it first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `secrets.update`: replaces every value. A non-zero `meta.resource_version` must be
/// the stored one.
pub async fn update(ctx: &Ctx, incoming: Secret) -> Result<Secret, ServerError> {
    let name = incoming.name().to_string();
    let Some((old, revision)) = read(ctx, &name).await? else {
        return Err(not_found(&name));
    };
    let expected = incoming.meta().map(|m| m.resource_version).unwrap_or(0);
    if expected != 0 && expected != revision {
        return Err(changed(&name));
    }
    let old_meta = old.meta.unwrap_or_default();
    let meta = Meta {
        labels: incoming.labels().into_iter().collect(),
        updated: Some(voiyd_messages::time::now()),
        generation: old_meta.generation + 1,
        resource_version: 0,
        ..old_meta
    };
    let sealed = seal(ctx, incoming, meta)?;
    write(ctx, &name, sealed, revision).await
}

async fn write(
    ctx: &Ctx,
    name: &str,
    sealed: SealedSecret,
    revision: u64,
) -> Result<Secret, ServerError> {
    match ctx
        .cluster
        .secrets
        .update(&names::spec_key(name), &sealed, revision)
        .await
    {
        Ok(revision) => Ok(shown(sealed, revision)),
        Err(StoreError::Conflict { .. }) => Err(changed(name)),
        Err(e) => Err(e.into()),
    }
}

fn not_found(name: &str) -> ServerError {
    ServerError::not_found(format!(
        "secret {name} not found: voiydctl get secrets lists them"
    ))
}

fn changed(name: &str) -> ServerError {
    ServerError::conflict(format!(
        "secret {name} changed since it was read: read it again and retry"
    ))
}

/// `secrets.get`: meta and keys.
pub async fn get(ctx: &Ctx, req: &GetRequest) -> Result<Secret, ServerError> {
    match read(ctx, &req.name).await? {
        Some((sealed, revision)) => Ok(shown(sealed, revision)),
        None => Err(not_found(&req.name)),
    }
}

/// `secrets.list`: every secret matching the selectors, by name.
pub async fn list(ctx: &Ctx, req: &ListRequest) -> Result<Vec<Secret>, ServerError> {
    let (labels, fields) =
        voiyd_messages::fields::list_selectors::<Secret>(req).map_err(ServerError::invalid)?;
    let mut out = Vec::new();
    for (_, sealed, revision) in ctx.cluster.secrets.entries(">").await? {
        let s = shown(sealed, revision);
        if labels.matches(&s.labels()) && fields.matches(&s) {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(out)
}

/// `secrets.delete`: refused while a task or set uses the secret.
pub async fn delete(ctx: &Ctx, req: &DeleteRequest) -> Result<DeleteReply, ServerError> {
    let Some((_, revision)) = read(ctx, &req.name).await? else {
        return Err(not_found(&req.name));
    };
    if req.resource_version != 0 && req.resource_version != revision {
        return Err(changed(&req.name));
    }
    let users = users(ctx, &req.name).await?;
    if !users.is_empty() {
        return Err(ServerError::conflict(format!(
            "secret {} is used by {}: delete or change them first",
            req.name,
            users.join(", ")
        )));
    }
    match ctx
        .cluster
        .secrets
        .delete(&names::spec_key(&req.name), Some(revision))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(changed(&req.name)),
        Err(e) => return Err(e.into()),
    }
    Ok(DeleteReply {
        name: req.name.clone(),
    })
}

/// The tasks and sets (`task/NAME`, `set/NAME`) whose config uses `secret`.
async fn users(ctx: &Ctx, secret: &str) -> Result<Vec<String>, ServerError> {
    use voiyd_messages::v1::{ContainerSet, Task};
    let mut out = Vec::new();
    for t in Task::store_list(ctx).await? {
        if t.config
            .as_ref()
            .is_some_and(|c| used_by(c).contains_key(secret))
        {
            out.push(format!("task/{}", t.name()));
        }
    }
    for s in ContainerSet::store_list(ctx).await? {
        if s.template
            .as_ref()
            .is_some_and(|c| used_by(c).contains_key(secret))
        {
            out.push(format!("set/{}", s.name()));
        }
    }
    Ok(out)
}

/// Reading every stored spec of a kind, for [`users`].
trait StoreList: Sized {
    async fn store_list(ctx: &Ctx) -> Result<Vec<Self>, ServerError>;
}

impl<R: crate::store::managed::Managed> StoreList for R {
    async fn store_list(ctx: &Ctx) -> Result<Vec<R>, ServerError> {
        Ok(R::store(&ctx.cluster).list().await?)
    }
}

/// Answers nodes' secret requests until the connection closes. Every server answers
/// (queue group): any of them can decrypt.
pub async fn serve_nodes(ctx: Ctx) -> Result<(), async_nats::Error> {
    let mut requests = ctx
        .client
        .queue_subscribe(names::node::ALL_SECRETS, names::SERVER_QUEUE.to_string())
        .await?;
    while let Some(msg) = requests.next().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Some(reply) = msg.reply.clone() else {
                return;
            };
            let node = names::node::node_of(&msg.subject).unwrap_or_default();
            let answer = match SecretRequest::decode(msg.payload.clone()) {
                Ok(req) => match for_node(&ctx, &node, &req).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%node, task = %req.task, secret = %req.secret, error = %e.message(), "secret request refused");
                        SecretReply {
                            error: e.message(),
                            ..Default::default()
                        }
                    }
                },
                Err(e) => SecretReply {
                    error: format!("cannot decode the request: {e}"),
                    ..Default::default()
                },
            };
            if let Err(e) = ctx
                .client
                .publish(reply, answer.encode_to_vec().into())
                .await
            {
                tracing::warn!(%node, error = %e, "cannot answer a secret request");
            }
        });
    }
    Ok(())
}

/// The values of `req.secret` sealed for `node`, if `node` holds `req.task` and that
/// task uses the secret.
async fn for_node(ctx: &Ctx, node: &str, req: &SecretRequest) -> Result<SecretReply, ServerError> {
    let work = ctx
        .cluster
        .work
        .get(&names::work_key(node, &req.task))
        .await?;
    let Some((bytes, _)) = work else {
        return Err(ServerError::not_found(format!(
            "task {} is not assigned to node {node}",
            req.task
        )));
    };
    let assignment = voiyd_messages::v1::Assignment::decode(bytes)?;
    let uses = assignment
        .task
        .as_ref()
        .and_then(|t| t.config.as_ref())
        .is_some_and(|c| used_by(c).contains_key(&req.secret));
    if !uses {
        return Err(ServerError::invalid(format!(
            "task {} does not use secret {}",
            req.task, req.secret
        )));
    }
    let Some((sealed, revision)) = read(ctx, &req.secret).await? else {
        return Err(not_found(&req.secret));
    };
    let xkey = ctx
        .view
        .node_status(node)
        .map(|(s, _)| s.xkey)
        .unwrap_or_default();
    let recipient = nkeys::XKey::from_public_key(&xkey).map_err(|_| {
        ServerError::unavailable(format!(
            "node {node} has not registered a key for secrets yet (its heartbeat carries it): retry"
        ))
    })?;
    let plain = ctx
        .keyring
        .decrypt(
            &req.secret,
            &sealed.key_id,
            &sealed.nonce,
            &sealed.ciphertext,
        )
        .map_err(|e| ServerError::internal(e.to_string()))?;
    let sender = nkeys::XKey::new();
    let sealed_for_node = sender
        .seal(&plain, &recipient)
        .map_err(|e| ServerError::internal(format!("cannot seal secret {}: {e}", req.secret)))?;
    Ok(SecretReply {
        error: String::new(),
        sealed: sealed_for_node,
        sender: sender.public_key(),
        revision,
    })
}

/// Re-encrypts every secret not under the active key (after a key rotation). Servers
/// racing on one record: the loser's CAS fails and the winner's write stands.
pub async fn reencrypt(ctx: &Ctx) -> Result<usize, ServerError> {
    let mut done = 0;
    for (key, sealed, revision) in ctx.cluster.secrets.entries(">").await? {
        let name = names::untoken(&key);
        if sealed.key_id == ctx.keyring.active_id() {
            continue;
        }
        let plain = ctx
            .keyring
            .decrypt(&name, &sealed.key_id, &sealed.nonce, &sealed.ciphertext)
            .map_err(|e| ServerError::internal(e.to_string()))?;
        let (key_id, nonce, ciphertext) = ctx.keyring.encrypt(&name, &plain);
        let again = SealedSecret {
            key_id,
            nonce,
            ciphertext,
            ..sealed
        };
        if write(ctx, &name, again, revision).await.is_ok() {
            done += 1;
        }
    }
    Ok(done)
}

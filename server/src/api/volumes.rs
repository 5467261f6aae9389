//! Volume verbs beyond plain CRUD: an update reaches the nodes of the tasks that mount
//! the volume (template content travels in their work); a delete is refused while tasks
//! use the volume unless forced, and `purge` asks nodes to remove the data.

use super::{resources, Ctx, Failure};
use crate::managed::Managed;
use crate::scheduler;
use crate::status;
use bytes::Bytes;
use prost::Message;
use std::any::Any;
use voiyd_messages::v1::{
    ContainerSet, DeleteReply, DeleteRequest, Node, Task, TaskConfig, Volume, VolumeNodeStatus,
    VolumePurge, VolumeStatus,
};
use voiyd_messages::Resource;
use voiyd_nats::names;

/// The names of the volumes a task mounts.
pub fn mounted(task: &Task) -> Vec<String> {
    task.config.as_ref().map(volumes_in).unwrap_or_default()
}

/// The names of the volumes a task config mounts (bind and tmpfs mounts name none),
/// sorted, without duplicates.
pub fn volumes_in(config: &TaskConfig) -> Vec<String> {
    let mut out: Vec<String> = config
        .mounts
        .iter()
        .filter(|m| voiyd_messages::validate::mount_type(m).as_deref() == Some("volume"))
        .map(|m| m.volume.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Refuses a task or container set whose config mounts a volume that does not exist:
/// the node would otherwise create an empty host-local directory nobody asked for.
/// Other kinds pass.
pub async fn require_mounted(ctx: &Ctx, resource: &(dyn Any + Send + Sync)) -> Result<(), Failure> {
    let config = if let Some(t) = resource.downcast_ref::<Task>() {
        t.config.as_ref()
    } else if let Some(s) = resource.downcast_ref::<ContainerSet>() {
        s.template.as_ref()
    } else {
        None
    };
    let Some(config) = config else {
        return Ok(());
    };
    let store = Volume::store(&ctx.cluster);
    for name in volumes_in(config) {
        if store.get(&name).await?.is_none() {
            return Err(Failure::invalid(missing_volume(&name)));
        }
    }
    Ok(())
}

/// The one-line error for a mount of a volume that does not exist.
pub fn missing_volume(name: &str) -> String {
    format!(
        "volume {name} not found: create it with voiydctl create volume host-local {name} \
         (or template {name} FILE), or mount a host path with type bind"
    )
}

/// The stored volumes a task mounts (those that exist), for its assignment.
pub async fn for_task(ctx: &Ctx, task: &Task) -> Result<Vec<Volume>, Failure> {
    let store = Volume::store(&ctx.cluster);
    let mut out = Vec::new();
    for name in mounted(task) {
        if let Some(mut v) = store.get(&name).await? {
            v.status = None;
            out.push(v);
        }
    }
    Ok(out)
}

async fn users(ctx: &Ctx, volume: &str) -> Result<Vec<String>, Failure> {
    Ok(Task::store(&ctx.cluster)
        .list()
        .await?
        .into_iter()
        .filter(|t| mounted(t).iter().any(|v| v == volume))
        .map(|t| t.name().to_string())
        .collect())
}

/// Updates (or patches) a volume, then rewrites the work of every task that mounts it.
pub async fn update(ctx: &Ctx, verb: &str, body: Bytes) -> Result<Volume, Failure> {
    let v = match verb {
        "patch" => resources::patch::<Volume>(ctx, body).await?,
        _ => resources::update::<Volume>(ctx, body).await?,
    };
    for task in users(ctx, v.name()).await? {
        if let Err(e) = scheduler::sync_task(ctx, &task, false).await {
            tracing::warn!(%task, volume = v.name(), error = %e.message, "cannot hand the volume update to the task's node");
        }
    }
    Ok(v)
}

/// Deletes a volume: refused while tasks mount it unless `force`; with `purge`, every
/// node removes the volume's data once none of its tasks uses it.
pub async fn delete(ctx: &Ctx, body: Bytes) -> Result<DeleteReply, Failure> {
    let req = DeleteRequest::decode(body)?;
    resources::fetch::<Volume>(ctx, &req.name).await?;
    let users = users(ctx, &req.name).await?;
    if !users.is_empty() && !req.force {
        return Err(Failure::conflict(format!(
            "volume {} is used by task{} {}: delete those tasks first, or pass --force",
            req.name,
            if users.len() == 1 { "" } else { "s" },
            users.join(", ")
        )));
    }
    resources::delete::<Volume>(ctx, &req).await?;
    if req.purge {
        let purges = ctx
            .cluster
            .js
            .get_key_value(names::BUCKET_VOLUME_PURGES)
            .await
            .map_err(|e| Failure::internal(format!("volume purges: {e}")))?;
        let msg = VolumePurge {
            volume: req.name.clone(),
        };
        for node in Node::store(&ctx.cluster).list().await? {
            let key = names::purge_key(node.name(), &req.name);
            purges
                .put(&key, msg.encode_to_vec().into())
                .await
                .map_err(|e| Failure::internal(format!("cannot write {key}: {e}")))?;
        }
    }
    Ok(resources::deleted(&req.name))
}

/// Folds a node's volume list into each volume's status (`controllers[node]`), only
/// where it changed.
pub async fn fold_node_report(
    ctx: &Ctx,
    node: &str,
    before: &[voiyd_messages::v1::NodeVolume],
    now: &[voiyd_messages::v1::NodeVolume],
) -> Result<(), Failure> {
    let mut names: Vec<&str> = before
        .iter()
        .chain(now.iter())
        .map(|v| v.name.as_str())
        .collect();
    names.sort();
    names.dedup();
    let store = Volume::store(&ctx.cluster);
    for name in names {
        if store.get(name).await?.is_none() {
            continue; // data of a deleted volume: nothing to show it on
        }
        let want = now
            .iter()
            .find(|v| v.name == name)
            .map(|v| VolumeNodeStatus {
                phase: "Provisioned".into(),
                location: v.path.clone(),
                ready: true,
                in_use_by: v.in_use_by.clone(),
            });
        for _ in 0..5 {
            let cur = status::read_versioned::<VolumeStatus>(&ctx.status.0, "volume", name).await?;
            let (mut st, rev) = match cur {
                Some(v) => (v.status, v.revision),
                None => (VolumeStatus::default(), 0),
            };
            if st.controllers.get(node) == want.as_ref() {
                break;
            }
            match &want {
                Some(w) => st.controllers.insert(node.to_string(), w.clone()),
                None => st.controllers.remove(node),
            };
            if status::write(&ctx.status.0, "volume", name, &st, rev)
                .await?
                .is_some()
            {
                break;
            }
        }
    }
    Ok(())
}

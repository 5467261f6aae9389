//! The volumes tasks mount: which a task names, that they exist before a task or set
//! is stored, and the stored volumes that travel in a task's work.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::store::managed::Managed;
use std::any::Any;
use voiyd_messages::v1::{ContainerSet, Task, TaskConfig, Volume};
use voiyd_messages::Resource;

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

/// Refuses a task or container set whose config mounts a volume that does not exist
/// (the node would otherwise create an empty host-local directory nobody asked for) or
/// uses a secret or key that does not exist, and a volume whose node selector matches
/// no node. Other kinds pass.
pub async fn require_mounted(
    ctx: &Ctx,
    resource: &(dyn Any + Send + Sync),
) -> Result<(), ServerError> {
    if let Some(v) = resource.downcast_ref::<Volume>() {
        return require_selectable(ctx, v).await;
    }
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
    crate::service::secrets::require_used(ctx, config).await?;
    let store = Volume::store(&ctx.cluster);
    for name in volumes_in(config) {
        if store.get(&name).await?.is_none() {
            return Err(ServerError::invalid(missing_volume(&name)));
        }
    }
    Ok(())
}

/// Refuses a volume whose node selector matches no node: its tasks could never run.
async fn require_selectable(ctx: &Ctx, volume: &Volume) -> Result<(), ServerError> {
    let Some(selector) = volume
        .config
        .as_ref()
        .map(|c| &c.node_selector)
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let nodes = voiyd_messages::v1::Node::store(&ctx.cluster).list().await?;
    let matches = |n: &voiyd_messages::v1::Node| {
        let labels = n.labels();
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    if nodes.iter().any(matches) {
        return Ok(());
    }
    let wanted: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Err(ServerError::invalid(format!(
        "volume {}: no node matches its nodeSelector {}: label a node first (voiydctl label node NAME {}) or change the selector",
        volume.name(),
        wanted.join(","),
        wanted.join(" ")
    )))
}

/// The one-line error for a mount of a volume that does not exist.
pub fn missing_volume(name: &str) -> String {
    format!(
        "volume {name} not found: create it with voiydctl create volume host-local {name} \
         (or template {name} FILE), or mount a host path with type bind"
    )
}

/// The stored volumes a task mounts (those that exist), for its assignment.
pub async fn for_task(ctx: &Ctx, task: &Task) -> Result<Vec<Volume>, ServerError> {
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

/// The names of the tasks that mount `volume`.
pub async fn users(ctx: &Ctx, volume: &str) -> Result<Vec<String>, ServerError> {
    Ok(Task::store(&ctx.cluster)
        .list()
        .await?
        .into_iter()
        .filter(|t| mounted(t).iter().any(|v| v == volume))
        .map(|t| t.name().to_string())
        .collect())
}

//! Volume verbs beyond plain CRUD: an update reaches the nodes of the tasks that mount
//! the volume (template content travels in their work); a delete is refused while tasks
//! use the volume unless forced, and `purge` asks nodes to remove the data.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::assign;
use crate::service::mounts::users;
use crate::service::resources::{self, Change};
use crate::store::managed::Managed;
use crate::store::status;
use prost::Message;
use voiyd_messages::v1::{
    DeleteReply, DeleteRequest, Node, Volume, VolumeNodeStatus, VolumePurge, VolumeStatus,
};
use voiyd_messages::Resource;
use voiyd_nats::names;

/// Updates (or patches) a volume, then rewrites the work of every task that mounts it.
pub async fn update(ctx: &Ctx, change: Change<Volume>) -> Result<Volume, ServerError> {
    let v = match change {
        Change::Patch(p) => resources::patch::<Volume>(ctx, &p).await?,
        Change::Replace(v) => resources::update::<Volume>(ctx, v).await?,
    };
    for task in users(ctx, v.name()).await? {
        if let Err(e) = assign::sync_task(ctx, &task, false).await {
            tracing::warn!(%task, volume = v.name(), error = %e.message(), "cannot hand the volume update to the task's node");
        }
    }
    Ok(v)
}

/// Deletes a volume: refused while tasks mount it unless `force`; with `purge`, every
/// node removes the volume's data once none of its tasks uses it.
pub async fn delete(ctx: &Ctx, req: &DeleteRequest) -> Result<DeleteReply, ServerError> {
    resources::fetch::<Volume>(ctx, &req.name).await?;
    let users = users(ctx, &req.name).await?;
    if !users.is_empty() && !req.force {
        return Err(ServerError::conflict(format!(
            "volume {} is used by task{} {}: delete those tasks first, or pass --force",
            req.name,
            if users.len() == 1 { "" } else { "s" },
            users.join(", ")
        )));
    }
    resources::delete::<Volume>(ctx, req).await?;
    if req.purge {
        let purges = ctx
            .cluster
            .js
            .get_key_value(names::BUCKET_VOLUME_PURGES)
            .await
            .map_err(|e| ServerError::failed("volume purges", e))?;
        let msg = VolumePurge {
            volume: req.name.clone(),
        };
        for node in Node::store(&ctx.cluster).list().await? {
            let key = names::purge_key(node.name(), &req.name);
            purges
                .put(&key, msg.encode_to_vec().into())
                .await
                .map_err(|e| ServerError::failed(format!("cannot write {key}"), e))?;
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
) -> Result<(), ServerError> {
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
                kind: v.kind.clone(),
                size_bytes: v.size_bytes,
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

//! Read-only API over the lease bucket (`get leases`): node liveness leases
//! (`node.<node>`, renewed by every heartbeat, see [`crate::controllers::failover`]) and task
//! leases (`task.<task>`).

use crate::context::Ctx;
use crate::error::ServerError;
use prost::Message;
use voiyd_messages::v1::{GetRequest, Lease};
use voiyd_nats::{names, RawKv};

/// Reads one lease by key.
async fn read(ctx: &Ctx, key: String) -> Result<Option<Lease>, ServerError> {
    match ctx.cluster.leases.get(&key).await {
        Ok(Some(v)) => Ok(Lease::decode(v).ok()),
        Ok(None) => Ok(None),
        Err(e) => Err(ServerError::failed(format!("cannot read lease {key}"), e)),
    }
}

/// Answers `leases.get`: `NAME` is a task lease; `node.NAME` (as listed) or a node name
/// a node's.
pub async fn get(ctx: &Ctx, req: &GetRequest) -> Result<Lease, ServerError> {
    let mut lease = read(ctx, names::task_lease_key(&req.name)).await?;
    if lease.is_none() {
        let key = match req.name.strip_prefix("node.") {
            Some(n) => names::node_lease_key(n),
            None => names::node_lease_key(&req.name),
        };
        lease = read(ctx, key).await?;
    }
    let lease = lease.ok_or_else(|| {
        ServerError::not_found(format!(
            "lease {} not found: `voiydctl get leases` lists them",
            req.name
        ))
    })?;
    Ok(lease)
}

/// Answers `leases.list`: every node and task lease, in one snapshot read of the bucket,
/// sorted by task then name.
pub async fn list(ctx: &Ctx) -> Result<Vec<Lease>, ServerError> {
    let raw = RawKv::new(ctx.cluster.leases.clone(), "leases");
    let entries = raw
        .entries(">")
        .await
        .map_err(|e| ServerError::failed("cannot list leases", e))?;
    let mut items: Vec<Lease> = entries
        .into_iter()
        .filter(|(k, _, _)| k.starts_with("task.") || k.starts_with("node."))
        .filter_map(|(_, v, _)| Lease::decode(v).ok())
        .collect();
    items.sort_by(|a, b| {
        let name = |l: &Lease| l.meta.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        (a.task.clone(), name(a)).cmp(&(b.task.clone(), name(b)))
    });
    Ok(items)
}

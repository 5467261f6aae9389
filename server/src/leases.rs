//! Read-only API over the lease bucket (`get leases`): node liveness leases
//! (`node.<node>`, renewed by every heartbeat, see [`crate::failover`]) and task
//! leases (`task.<task>`).

use crate::api::{Ctx, Failure};
use bytes::Bytes;
use futures::TryStreamExt;
use prost::Message;
use voiyd_messages::v1::{GetRequest, Lease, LeaseList};
use voiyd_nats::names;

/// Answers `leases.get` and `leases.list`.
pub async fn handle(ctx: &Ctx, verb: &str, body: Bytes) -> Result<Bytes, Failure> {
    let kv = &ctx.cluster.leases;
    let read = |key: String| async move {
        match kv.get(&key).await {
            Ok(Some(v)) => Ok(Lease::decode(v).ok()),
            Ok(None) => Ok(None),
            Err(e) => Err(Failure::internal(format!("cannot read lease {key}: {e}"))),
        }
    };
    match verb {
        "get" => {
            let req = GetRequest::decode(body)?;
            // `NAME` is a task lease; `node.NAME` (as listed) or a node name a node's.
            let mut lease = read(names::task_lease_key(&req.name)).await?;
            if lease.is_none() {
                let key = match req.name.strip_prefix("node.") {
                    Some(n) => names::node_lease_key(n),
                    None => names::node_lease_key(&req.name),
                };
                lease = read(key).await?;
            }
            let lease = lease.ok_or_else(|| {
                Failure::not_found(format!(
                    "lease {} not found: `voiydctl get leases` lists them",
                    req.name
                ))
            })?;
            Ok(lease.encode_to_vec().into())
        }
        "list" => {
            let keys: Vec<String> = match kv.keys().await {
                Ok(k) => k.try_collect().await.unwrap_or_default(),
                Err(e) => return Err(Failure::internal(format!("cannot list leases: {e}"))),
            };
            let mut items = Vec::new();
            for key in keys
                .into_iter()
                .filter(|k| k.starts_with("task.") || k.starts_with("node."))
            {
                if let Some(l) = read(key).await? {
                    items.push(l);
                }
            }
            items.sort_by(|a, b| {
                let name = |l: &Lease| l.meta.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                (a.task.clone(), name(a)).cmp(&(b.task.clone(), name(b)))
            });
            Ok(LeaseList { items }.encode_to_vec().into())
        }
        _ => Err(Failure::invalid(format!(
            "unknown verb `{verb}` for leases"
        ))),
    }
}

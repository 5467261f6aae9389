//! Read-only API over the lease bucket (`get leases`).

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
            let lease = read(names::task_lease_key(&req.name))
                .await?
                .ok_or_else(|| {
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
            for key in keys.into_iter().filter(|k| k.starts_with("task.")) {
                if let Some(l) = read(key).await? {
                    items.push(l);
                }
            }
            items.sort_by(|a, b| a.task.cmp(&b.task));
            Ok(LeaseList { items }.encode_to_vec().into())
        }
        _ => Err(Failure::invalid(format!(
            "unknown verb `{verb}` for leases"
        ))),
    }
}

//! `list` requests of every kind: filtered on the server, answered in chunks (see
//! [`voiyd_nats::chunks`]) so that a list of any size fits through NATS.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::resources;
use crate::store::managed::Managed;
use bytes::Bytes;
use prost::Message;
use voiyd_messages::v1::{ContainerSet, EventsRequest, Job, ListRequest, Node, Task, Volume};
use voiyd_nats::chunks;

/// The reply chunks of a list of `kind`.
pub async fn list(ctx: &Ctx, kind: &str, body: Bytes) -> Result<Vec<Bytes>, ServerError> {
    let limit = chunks::chunk_limit(ctx.client.server_info().max_payload);
    match kind {
        "tasks" => managed::<Task>(ctx, body, limit).await,
        "nodes" => managed::<Node>(ctx, body, limit).await,
        "volumes" => managed::<Volume>(ctx, body, limit).await,
        "sets" => managed::<ContainerSet>(ctx, body, limit).await,
        "jobs" => managed::<Job>(ctx, body, limit).await,
        "secrets" => {
            let req = ListRequest::decode(body)?;
            let items = crate::service::secrets::list(ctx, &req).await?;
            Ok(chunks::split(&items, limit))
        }
        "leases" => {
            let req = ListRequest::decode(body)?;
            let (labels, fields) = resources::selectors::<voiyd_messages::v1::Lease>(&req)?;
            let mut items = crate::service::leases::list(ctx).await?;
            items.retain(|l| {
                use voiyd_messages::Resource;
                labels.matches(&l.labels()) && fields.matches(l)
            });
            Ok(chunks::split(&items, limit))
        }
        "events" => {
            let req = EventsRequest::decode(body)?;
            let list = ctx.events.list(&req).await.map_err(ServerError::internal)?;
            Ok(chunks::split(&list.items, limit))
        }
        _ => Err(ServerError::invalid(format!("unknown API kind `{kind}`"))),
    }
}

async fn managed<R: Managed>(
    ctx: &Ctx,
    body: Bytes,
    limit: usize,
) -> Result<Vec<Bytes>, ServerError> {
    let req = ListRequest::decode(body)?;
    let items = resources::list::<R>(ctx, &req).await?;
    Ok(chunks::split(&items, limit))
}

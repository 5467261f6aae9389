//! `delete node`: forgetting a node so that its still-running agent cannot bring it back.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::resources;
use crate::store::status;
use prost::Message;
use voiyd_messages::v1::{DeleteReply, DeleteRequest, Node, NodeStatus};
use voiyd_nats::api::ErrorCode;
use voiyd_nats::names;

/// Deletes a node: revokes its NATS identity (NATS then drops its connection; a node
/// with credentials but no record is revoked all the same), removes its record, and
/// returns its subnet to the pool. The view then moves its tasks.
///
/// An agent still running must not register the node again: its session is recorded
/// as deleted *before* the record goes, so a heartbeat landing at any point of the
/// deletion is shut out (a restarted agent has a new session and joins again).
pub async fn delete(ctx: &Ctx, req: &DeleteRequest) -> Result<DeleteReply, ServerError> {
    let revoked = crate::service::tokens::revoke(ctx, req).await?;
    let session = status::read::<Node>(&ctx.status, &req.name)
        .await?
        .filter(|s| s.phase != voiyd_messages::phase::NodePhase::Deleted)
        .map(|s| s.session)
        .filter(|s| !s.is_empty());
    let deleted = match &session {
        Some(session) => {
            remember_deleted(ctx, &req.name, session.clone()).await;
            let r = resources::delete_keeping_status::<Node>(ctx, req).await;
            if r.as_ref().is_err_and(|f| f.code() != ErrorCode::NotFound) {
                // Not deleted after all (a conflict): let its heartbeats in again.
                status::remove::<Node>(&ctx.status, &req.name).await;
            }
            r
        }
        None => resources::delete::<Node>(ctx, req).await,
    };
    match deleted {
        Err(f) if f.code() == ErrorCode::NotFound && (revoked || session.is_some()) => {}
        other => {
            other?;
        }
    }
    // The node's subnet goes back to the pool (a node that returns gets one anew).
    ctx.subnets.release(&req.name).await?;
    Ok(resources::deleted(&req.name))
}

/// Writes a deleted node's status record ([`voiyd_messages::phase::NodePhase::Deleted`] with the agent session).
async fn remember_deleted(ctx: &Ctx, node: &str, session: String) {
    let st = NodeStatus {
        phase: voiyd_messages::phase::NodePhase::Deleted.into(),
        session,
        ..Default::default()
    };
    let key = names::status_key("node", node);
    if let Err(e) = ctx.status.0.put(&key, st.encode_to_vec().into()).await {
        tracing::warn!(%node, error = %e, "cannot record the deleted node's session");
    }
}

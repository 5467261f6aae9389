//! A node's work: writing it to `voiyd_work` and telling the node.
//!
//! The bucket is the record. After each change is stored, the node hears of it on
//! `voiyd.node.<node>.work` (a [`WorkUpdate`] carrying the change's revision), so a
//! node needs no JetStream consumer of its own: a thousand nodes each holding a
//! filtered consumer on one stream make nats-server scan past every other node's
//! messages on each delivery. A node that misses an update (disconnected, or a server
//! that died between the write and the message) finds the change when it re-reads
//! the bucket: on start, after reconnecting, and periodically.

use crate::context::Ctx;
use crate::error::ServerError;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::HeaderMap;
use prost::Message;
use voiyd_messages::v1::{Assignment, WorkUpdate};
use voiyd_nats::names;

/// Stores `assignment` as `task`'s work on `node`, then tells the node. Returns the
/// entry's revision.
pub async fn put(
    ctx: &Ctx,
    node: &str,
    task: &str,
    assignment: Assignment,
) -> Result<u64, ServerError> {
    let key = names::work_key(node, task);
    let body: bytes::Bytes = assignment.encode_to_vec().into();
    // A put is idempotent: ride out a short store outage rather than leave a placed
    // task without work.
    let revision =
        crate::store::patience::retry("work", || ctx.work.put(&key, body.clone()), |_| true)
            .await
            .map_err(|e| ServerError::failed(format!("cannot write work {key}"), e))?;
    notify(ctx, node, task, revision, Some(assignment)).await;
    Ok(revision)
}

/// Removes `task`'s work from `node`, then tells the node (`kill`: to stop it by SIGKILL
/// at once rather than with its grace period). Best effort: a node also drops work that
/// is gone from the bucket when it re-reads it.
pub async fn remove(ctx: &Ctx, node: &str, task: &str, kill: bool) {
    if let Err(e) = purge(ctx, node, task, None, kill).await {
        tracing::warn!(%node, %task, error = %e, "cannot remove work");
    }
}

/// Removes `task`'s work from `node` only if the entry is still at `revision` (nobody
/// rewrote it since), then tells the node. Returns whether it was removed.
pub async fn remove_at(ctx: &Ctx, node: &str, task: &str, revision: u64) -> bool {
    match purge(ctx, node, task, Some(revision), false).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(%node, %task, error = %e, "work not removed (rewritten since it was read?)");
            false
        }
    }
}

/// Purges the work key like `kv::Store::purge` (refused by the stream unless the key's
/// last revision is `expected`, when given), then tells the node with the purge's
/// revision, which it needs to order the removal against other updates.
///
/// A purge is safe to repeat (a repeat of a landed conditional purge is refused as a
/// wrong sequence), so it rides out a store outage: left in the bucket, the work would
/// keep running on its old node until the sweep, next to the task's new placement.
async fn purge(
    ctx: &Ctx,
    node: &str,
    task: &str,
    expected: Option<u64>,
    kill: bool,
) -> Result<(), PublishError> {
    let sequence = crate::store::patience::retry(
        "work removal",
        || purge_once(ctx, node, task, expected),
        |e: &PublishError| e.kind() != PublishErrorKind::WrongLastSequence,
    )
    .await?;
    send(ctx, node, task, sequence, None, kill).await;
    Ok(())
}

/// One attempt of [`purge`]; returns the purge's stream sequence.
async fn purge_once(
    ctx: &Ctx,
    node: &str,
    task: &str,
    expected: Option<u64>,
) -> Result<u64, PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert("KV-Operation", "PURGE");
    headers.insert("Nats-Rollup", "sub");
    if let Some(rev) = expected {
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            rev.to_string().as_str(),
        );
    }
    let subject = names::kv_subject(names::BUCKET_WORK, &names::work_key(node, task));
    let ack = ctx
        .cluster
        .js
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Sends the node its work entry again, as stored at `revision` (its first message may
/// have been lost with a NATS connection: core messages are not replayed).
pub async fn renotify(ctx: &Ctx, node: &str, task: &str, revision: u64, stored: bytes::Bytes) {
    match Assignment::decode(stored) {
        Ok(a) => notify(ctx, node, task, revision, Some(a)).await,
        Err(e) => tracing::warn!(%node, %task, error = %e, "undecodable work entry"),
    }
}

async fn notify(ctx: &Ctx, node: &str, task: &str, revision: u64, assignment: Option<Assignment>) {
    send(ctx, node, task, revision, assignment, false).await
}

async fn send(
    ctx: &Ctx,
    node: &str,
    task: &str,
    revision: u64,
    assignment: Option<Assignment>,
    kill: bool,
) {
    let update = WorkUpdate {
        task: task.to_string(),
        revision,
        assignment,
        kill,
    };
    let subject = names::node::work(node);
    if let Err(e) = ctx
        .client
        .publish(subject, update.encode_to_vec().into())
        .await
    {
        tracing::debug!(%node, %task, error = %e, "work update not sent; the node's re-read will find it");
    }
}

//! Observed status, kept apart from specs in [`names::BUCKET_STATUS`] under
//! `<kind>.<name>`, so status reports never conflict with users' spec writes.

use crate::error::{BoxError, ServerError, WithCode};
use crate::store::managed::Managed;
use async_nats::jetstream::kv;
use prost::Message;
use std::collections::HashMap;
use voiyd_nats::names;
use voiyd_nats::store::RawKv;

/// A status with the KV revision it was read at.
pub struct Versioned<S> {
    /// The status.
    pub status: S,
    /// Its revision (the CAS token for the next write).
    pub revision: u64,
}

fn unavailable(op: &'static str, e: impl Into<BoxError>) -> ServerError {
    ServerError::StatusStore {
        op,
        source: e.into(),
    }
}

/// Reads a status with its revision.
pub async fn read_versioned<S: Message + Default>(
    kv: &kv::Store,
    kind: &str,
    name: &str,
) -> Result<Option<Versioned<S>>, ServerError> {
    let key = names::status_key(kind, name);
    let entry = kv.entry(&key).await.map_err(|e| unavailable("get", e))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let status = S::decode(e.value)
                .map_err(|e| ServerError::failed(format!("corrupt status {key}"), e))?;
            Ok(Some(Versioned {
                status,
                revision: e.revision,
            }))
        }
        _ => Ok(None),
    }
}

/// Reads the status of one resource.
pub async fn read<R: Managed>(
    cluster: &StatusKv,
    name: &str,
) -> Result<Option<R::Status>, ServerError> {
    Ok(
        read_versioned::<R::Status>(&cluster.0, R::KIND.singular(), name)
            .await?
            .map(|v| v.status),
    )
}

/// Reads every status of one kind, keyed by resource name.
pub async fn read_all<R: Managed>(
    cluster: &StatusKv,
) -> Result<HashMap<String, R::Status>, ServerError> {
    // One snapshot read of the kind's keys, not a get per key: lists and metrics
    // scrapes read every status of a kind.
    let kind = R::KIND.singular();
    let prefix = format!("{kind}.");
    let raw = RawKv::new(cluster.0.clone(), "status");
    let entries = raw
        .entries(&format!("{kind}.>"))
        .await
        .map_err(|e| unavailable("read", e))?;
    let mut out = HashMap::with_capacity(entries.len());
    for (key, value, _) in entries {
        let Some(token) = key.strip_prefix(&prefix) else {
            continue;
        };
        let status = R::Status::decode(value)
            .map_err(|e| ServerError::failed(format!("corrupt status {key}"), e))?;
        out.insert(names::untoken(token), status);
    }
    Ok(out)
}

/// Writes a status: `revision` 0 creates it (fails if it exists), otherwise CAS.
/// Returns the new revision, or `None` when someone else wrote first.
pub async fn write<S: Message>(
    kv: &kv::Store,
    kind: &str,
    name: &str,
    status: &S,
    revision: u64,
) -> Result<Option<u64>, ServerError> {
    let key = names::status_key(kind, name);
    let body = status.encode_to_vec().into();
    if revision == 0 {
        match kv.create(&key, body).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(unavailable("create", e)),
        }
    } else {
        match kv.update(&key, body, revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable("update", e)),
        }
    }
}

/// [`write`] that rides out a short store outage (see [`crate::store::patience`]). A lost
/// CAS race is returned at once, as `None`.
pub async fn write_patiently<S: Message>(
    kv: &kv::Store,
    kind: &str,
    name: &str,
    status: &S,
    revision: u64,
) -> Result<Option<u64>, ServerError> {
    use futures::TryFutureExt;
    // Through `WithCode`, the retry's log line shows the code after the message.
    crate::store::patience::retry(
        "status",
        || write(kv, kind, name, status, revision).map_err(WithCode),
        |f: &WithCode| f.0.code() == voiyd_nats::api::ErrorCode::Unavailable,
    )
    .await
    .map_err(|f| f.0)
}

/// Removes a status (best effort: a stale status of a deleted resource is harmless).
pub async fn remove<R: Managed>(cluster: &StatusKv, name: &str) {
    let key = names::status_key(R::KIND.singular(), name);
    if let Err(e) = cluster.0.purge(&key).await {
        tracing::warn!(%key, error = %e, "cannot remove status");
    }
}

/// The status bucket.
#[derive(Clone)]
pub struct StatusKv(pub kv::Store);

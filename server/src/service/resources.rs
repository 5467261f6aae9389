//! Create, get, list, update, patch and delete, the same for every managed kind.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::merge_patch;
use crate::store::managed::Managed;
use crate::store::status;
use voiyd_messages::event::EventType;
use voiyd_messages::fields::FieldSelector;
use voiyd_messages::reason::Reason;
use voiyd_messages::selector::Selector;
use voiyd_messages::v1::{DeleteReply, DeleteRequest, GetRequest, ListRequest, PatchRequest};
use voiyd_messages::Resource;
use voiyd_nats::store::StoreError;

/// An update as asked for: a whole new spec, or a JSON merge patch of the stored one.
pub enum Change<R> {
    /// `update`: the new resource.
    Replace(R),
    /// `patch`: a merge patch by name.
    Patch(PatchRequest),
}

fn label(kind: &str, name: &str) -> String {
    format!("{kind} {name}")
}

/// Fills the version a manifest may leave out and refuses one of another kind.
fn check_version<R: Managed>(r: &mut R) -> Result<(), ServerError> {
    let want = R::KIND.manifest_version();
    let v = r.version_mut();
    if v.is_empty() {
        *v = want.to_string();
    } else if v != want {
        return Err(ServerError::invalid(format!(
            "{} has version `{v}`, but this request is for {want}",
            R::KIND
        )));
    }
    Ok(())
}

/// Validates the resource of a create or update request.
pub(crate) fn admit_resource<R: Managed>(ctx: &Ctx, mut r: R) -> Result<R, ServerError> {
    let _span = tracing::info_span!("validate").entered();
    check_version(&mut r)?;
    r.validate().map_err(ServerError::invalid)?;
    admit(ctx, &r)?;
    r.clear_status();
    Ok(r)
}

/// The cluster policy (`--allow-privileged` and co.), after validation, before writing.
fn admit<R: Managed>(ctx: &Ctx, r: &R) -> Result<(), ServerError> {
    ctx.policy.admit(r).map_err(ServerError::invalid)
}

/// Creates a resource with server-assigned uid, timestamps and generation 1.
pub async fn create<R: Managed>(ctx: &Ctx, r: R) -> Result<R, ServerError> {
    let mut r: R = admit_resource(ctx, r)?;
    crate::service::mounts::require_mounted(ctx, &r).await?;
    let now = voiyd_messages::time::now();
    let meta = r.meta_mut();
    meta.uid = uuid::Uuid::new_v4().to_string();
    meta.created = Some(now);
    meta.updated = Some(now);
    meta.generation = 1;
    meta.resource_version = 0;
    let stored = tracing::Instrument::instrument(
        R::store(&ctx.cluster).create(&r),
        tracing::info_span!("store"),
    )
    .await
    .map_err(|e| match e {
        StoreError::AlreadyExists { .. } => ServerError::conflict(format!(
            "{} already exists: use `voiydctl apply` to change it, or delete it first",
            label(R::KIND.singular(), r.name())
        )),
        e => e.into(),
    })?;
    ctx.events
        .publish(
            R::KIND.singular(),
            stored.name(),
            EventType::Created.as_str(),
            Reason::Created.as_str(),
            String::new(),
            Some(stored.event_object()),
        )
        .await;
    Ok(stored)
}

/// Reads one resource with its status.
pub async fn get<R: Managed>(ctx: &Ctx, req: &GetRequest) -> Result<R, ServerError> {
    let mut r = fetch::<R>(ctx, &req.name).await?;
    r.set_status(status::read::<R>(&ctx.status, &req.name).await?);
    Ok(r)
}

/// Reads one stored spec, or a 404 that says how to list what exists.
pub async fn fetch<R: Managed>(ctx: &Ctx, name: &str) -> Result<R, ServerError> {
    if name.is_empty() {
        return Err(ServerError::invalid(format!(
            "a {} name is required",
            R::KIND
        )));
    }
    R::store(&ctx.cluster).get(name).await?.ok_or_else(|| {
        ServerError::not_found(format!(
            "{} not found: `voiydctl get {}` lists what exists",
            label(R::KIND.singular(), name),
            R::KIND.plural()
        ))
    })
}

/// Lists resources matching the request's label and field selectors, sorted by name,
/// with their status.
pub async fn list<R: Managed>(ctx: &Ctx, req: &ListRequest) -> Result<Vec<R>, ServerError> {
    let (labels, fields) = selectors::<R>(req)?;
    let mut items: Vec<R> = R::store(&ctx.cluster)
        .list()
        .await?
        .into_iter()
        .filter(|r| labels.matches(&r.labels()))
        .collect();
    let mut statuses = status::read_all::<R>(&ctx.status).await?;
    for r in &mut items {
        let s = statuses.remove(r.name());
        r.set_status(s);
    }
    if !fields.is_empty() {
        items.retain(|r| fields.matches(r));
    }
    Ok(items)
}

/// The label and field selectors of a list request, or why they do not parse.
pub fn selectors<R: Resource>(req: &ListRequest) -> Result<(Selector, FieldSelector), ServerError> {
    voiyd_messages::fields::list_selectors::<R>(req).map_err(ServerError::invalid)
}

/// Replaces the spec. A non-zero `meta.resource_version` must be the stored one.
pub async fn update<R: Managed>(ctx: &Ctx, incoming: R) -> Result<R, ServerError> {
    let incoming: R = admit_resource(ctx, incoming)?;
    crate::service::mounts::require_mounted(ctx, &incoming).await?;
    let expected = incoming.meta().map(|m| m.resource_version).unwrap_or(0);
    write_update(ctx, incoming, expected).await
}

/// Applies a JSON merge patch to the stored resource's JSON form.
pub async fn patch<R: Managed>(ctx: &Ctx, req: &PatchRequest) -> Result<R, ServerError> {
    let current = fetch::<R>(ctx, &req.name).await?;
    let patch: serde_json::Value = serde_json::from_str(&req.merge_patch)
        .map_err(|e| ServerError::invalid(format!("the patch is not valid JSON: {e}")))?;
    let mut doc = serde_json::to_value(&current)
        .map_err(|e| ServerError::failed(format!("cannot render {}", R::KIND), e))?;
    merge_patch::apply(&mut doc, &patch);
    let mut patched: R = serde_json::from_value(doc)
        .map_err(|e| ServerError::invalid(format!("the patched {} is invalid: {e}", R::KIND)))?;
    check_version(&mut patched)?;
    if patched.name() != current.name() {
        return Err(ServerError::invalid(format!(
            "a patch cannot rename {}",
            label(R::KIND.singular(), current.name())
        )));
    }
    patched.validate().map_err(ServerError::invalid)?;
    admit(ctx, &patched)?;
    crate::service::mounts::require_mounted(ctx, &patched).await?;
    patched.clear_status();
    let expected = match req.resource_version {
        0 => current.meta().map(|m| m.resource_version).unwrap_or(0),
        rv => rv,
    };
    write_update(ctx, patched, expected).await
}

/// Writes a new spec over the stored one, keeping server-owned metadata, bumping the
/// generation when the spec changed. `expected` 0 means "whatever is stored now".
pub async fn write_update<R: Managed>(
    ctx: &Ctx,
    mut incoming: R,
    expected: u64,
) -> Result<R, ServerError> {
    let name = incoming.name().to_string();
    let current = fetch::<R>(ctx, &name).await?;
    let current_rv = current.meta().map(|m| m.resource_version).unwrap_or(0);
    if expected != 0 && expected != current_rv {
        return Err(conflict::<R>(&name, expected));
    }
    let spec_changed = incoming.spec() != current.spec();
    let cur_meta = current.meta().cloned().unwrap_or_default();
    if !spec_changed && incoming.labels() == cur_meta.labels {
        let mut r = current;
        r.set_status(status::read::<R>(&ctx.status, &name).await?);
        return Ok(r);
    }
    let meta = incoming.meta_mut();
    meta.uid = cur_meta.uid;
    meta.created = cur_meta.created;
    meta.updated = Some(voiyd_messages::time::now());
    meta.generation = cur_meta.generation + u64::from(spec_changed);
    meta.resource_version = 0;
    let stored = R::store(&ctx.cluster)
        .update(&incoming, current_rv)
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => conflict::<R>(&name, expected.max(current_rv)),
            e => e.into(),
        })?;
    ctx.events
        .publish(
            R::KIND.singular(),
            &name,
            EventType::Updated.as_str(),
            Reason::Updated.as_str(),
            String::new(),
            Some(stored.event_object()),
        )
        .await;
    let mut r = stored;
    r.set_status(status::read::<R>(&ctx.status, &name).await?);
    Ok(r)
}

fn conflict<R: Managed>(name: &str, expected: u64) -> ServerError {
    ServerError::conflict(format!(
        "{} was changed by someone else (you had version {expected}): get it again and retry",
        label(R::KIND.singular(), name)
    ))
}

/// Deletes the spec and its status. Kind-specific clean-up is done by the caller.
pub async fn delete<R: Managed>(ctx: &Ctx, req: &DeleteRequest) -> Result<R, ServerError> {
    let current = delete_keeping_status::<R>(ctx, req).await?;
    status::remove::<R>(&ctx.status, &req.name).await;
    Ok(current)
}

/// [`delete`] that leaves the status record to the caller (a deleted node's status
/// keeps the agent session it shuts out).
pub async fn delete_keeping_status<R: Managed>(
    ctx: &Ctx,
    req: &DeleteRequest,
) -> Result<R, ServerError> {
    let current = fetch::<R>(ctx, &req.name).await?;
    let current_rv = current.meta().map(|m| m.resource_version).unwrap_or(0);
    if req.resource_version != 0 && req.resource_version != current_rv {
        return Err(conflict::<R>(&req.name, req.resource_version));
    }
    R::store(&ctx.cluster)
        .delete(&req.name, Some(current_rv))
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => conflict::<R>(&req.name, current_rv),
            e => e.into(),
        })?;
    ctx.events
        .publish(
            R::KIND.singular(),
            &req.name,
            EventType::Deleted.as_str(),
            Reason::Deleted.as_str(),
            String::new(),
            Some(current.event_object()),
        )
        .await;
    Ok(current)
}

/// The reply of a delete.
pub fn deleted(name: &str) -> DeleteReply {
    DeleteReply {
        name: name.to_string(),
    }
}

//! API operations on resources whose kind is only known at run time.

use crate::error::{CtlError, Result};
use voiyd_messages::manifest::AnyResource;
use voiyd_messages::v1::{ContainerSet, DeleteRequest, Job, Lease, Node, Secret, Task, Volume};
use voiyd_messages::Kind;
use voiyd_nats::api::{ApiClient, ApiError};

/// Parses a kind as users type it, with a one-line error listing the kinds.
pub fn parse_kind(text: &str) -> Result<Kind> {
    Kind::parse(text).ok_or_else(|| {
        CtlError::Usage(format!(
            "unknown kind `{text}`: use task, node, volume, set, job, secret or lease (singular or plural)"
        ))
    })
}

/// Asks `node` for its usage now (`voiyd.node.<node>.stats`): its running containers
/// among them. None when it does not answer within `timeout`.
pub async fn node_stats(
    nats: &async_nats::Client,
    node: &str,
    timeout: std::time::Duration,
) -> Option<voiyd_messages::v1::NodeStats> {
    use prost::Message;
    let req = voiyd_messages::v1::StatsRequest {};
    let fut = nats.request(
        voiyd_nats::names::node::stats(node),
        req.encode_to_vec().into(),
    );
    let msg = tokio::time::timeout(timeout, fut).await.ok()?.ok()?;
    voiyd_messages::v1::NodeStats::decode(msg.payload).ok()
}

/// Reads one resource of any kind; `Ok(None)` when it does not exist.
pub async fn get_any(api: &ApiClient, kind: Kind, name: &str) -> Result<Option<AnyResource>> {
    let r = match kind {
        Kind::Task => api.get::<Task>(name).await.map(AnyResource::Task),
        Kind::Node => api.get::<Node>(name).await.map(AnyResource::Node),
        Kind::Volume => api.get::<Volume>(name).await.map(AnyResource::Volume),
        Kind::ContainerSet => api
            .get::<ContainerSet>(name)
            .await
            .map(AnyResource::ContainerSet),
        Kind::Lease => api.get::<Lease>(name).await.map(AnyResource::Lease),
        Kind::Job => api.get::<Job>(name).await.map(AnyResource::Job),
        Kind::Secret => api.get::<Secret>(name).await.map(AnyResource::Secret),
    };
    match r {
        Ok(r) => Ok(Some(r)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_only(kind: Kind) -> CtlError {
    CtlError::Usage(format!(
        "{} resources are managed by voiyd-server and cannot be written: leave them out of the manifest",
        kind.singular()
    ))
}

/// Creates a resource of any kind.
pub async fn create_any(api: &ApiClient, r: &AnyResource) -> Result<AnyResource, ApiError> {
    Ok(match r {
        AnyResource::Task(x) => AnyResource::Task(api.create(x).await?),
        AnyResource::Node(x) => AnyResource::Node(api.create(x).await?),
        AnyResource::Volume(x) => AnyResource::Volume(api.create(x).await?),
        AnyResource::ContainerSet(x) => AnyResource::ContainerSet(api.create(x).await?),
        AnyResource::Job(x) => AnyResource::Job(api.create(x).await?),
        AnyResource::Secret(x) => AnyResource::Secret(api.create(x).await?),
        AnyResource::Lease(_) => return Err(ApiError::Invalid(read_only(Kind::Lease).to_string())),
    })
}

/// Updates a resource of any kind (CAS on a non-zero `meta.resource_version`).
pub async fn update_any(api: &ApiClient, r: &AnyResource) -> Result<AnyResource, ApiError> {
    Ok(match r {
        AnyResource::Task(x) => AnyResource::Task(api.update(x).await?),
        AnyResource::Node(x) => AnyResource::Node(api.update(x).await?),
        AnyResource::Volume(x) => AnyResource::Volume(api.update(x).await?),
        AnyResource::ContainerSet(x) => AnyResource::ContainerSet(api.update(x).await?),
        AnyResource::Job(x) => AnyResource::Job(api.update(x).await?),
        AnyResource::Secret(x) => AnyResource::Secret(api.update(x).await?),
        AnyResource::Lease(_) => return Err(ApiError::Invalid(read_only(Kind::Lease).to_string())),
    })
}

/// Fails for kinds that cannot be written through the API.
pub fn ensure_writable(kind: Kind) -> Result<()> {
    if kind == Kind::Lease {
        return Err(read_only(kind));
    }
    Ok(())
}

/// Deletes a resource; `Ok(false)` when it did not exist.
pub async fn delete(
    api: &ApiClient,
    kind: Kind,
    name: &str,
    purge: bool,
    force: bool,
) -> Result<bool> {
    let req = DeleteRequest {
        name: name.to_string(),
        resource_version: 0,
        purge,
        force,
    };
    match api.delete(kind, &req).await {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The `resource_version` stored in a resource's meta.
pub fn resource_version(r: &AnyResource) -> u64 {
    fn rv<R: voiyd_messages::Resource>(x: &R) -> u64 {
        x.meta().map(|m| m.resource_version).unwrap_or(0)
    }
    match r {
        AnyResource::Task(x) => rv(x),
        AnyResource::Node(x) => rv(x),
        AnyResource::Volume(x) => rv(x),
        AnyResource::ContainerSet(x) => rv(x),
        AnyResource::Lease(x) => rv(x),
        AnyResource::Job(x) => rv(x),
        AnyResource::Secret(x) => rv(x),
    }
}

/// Sets the `resource_version` in a resource's meta.
pub fn set_resource_version(r: &mut AnyResource, v: u64) {
    use voiyd_messages::Resource;
    match r {
        AnyResource::Task(x) => x.meta_mut().resource_version = v,
        AnyResource::Node(x) => x.meta_mut().resource_version = v,
        AnyResource::Volume(x) => x.meta_mut().resource_version = v,
        AnyResource::ContainerSet(x) => x.meta_mut().resource_version = v,
        AnyResource::Lease(x) => x.meta_mut().resource_version = v,
        AnyResource::Job(x) => x.meta_mut().resource_version = v,
        AnyResource::Secret(x) => x.meta_mut().resource_version = v,
    }
}

/// `kind/name`, as messages show a resource.
pub fn ref_of(r: &AnyResource) -> String {
    format!("{}/{}", r.kind().singular(), r.name())
}

//! What the server needs to know about each stored kind: where it lives, how it is
//! validated, and how its status is kept apart from its spec.

use voiyd_messages::v1::{
    event, ContainerSet, ContainerSetStatus, Job, JobStatus, Node, NodeStatus, Task, TaskStatus,
    Volume, VolumeStatus,
};
use voiyd_messages::{validate, Resource};
use voiyd_nats::bootstrap::Cluster;
use voiyd_nats::store::Store;

/// A kind the API stores in its own bucket, with a status kept in the status bucket.
pub trait Managed: Resource {
    /// The status message stored under `<kind>.<name>` in the status bucket.
    type Status: prost::Message + Default + Clone + PartialEq;

    /// The spec store of this kind.
    fn store(cluster: &Cluster) -> &Store<Self>;
    /// Checks the resource; the message names every bad field on one line.
    fn validate(&self) -> Result<(), String>;
    /// Removes and returns the status.
    fn take_status(&mut self) -> Option<Self::Status>;
    /// Sets the status.
    fn set_status(&mut self, status: Option<Self::Status>);
    /// The resource as the object of an event.
    fn event_object(&self) -> event::Object;

    /// The part of the resource that, when it changes, bumps `meta.generation`:
    /// everything but meta and status.
    fn spec(&self) -> Self {
        let mut r = self.clone();
        r.clear_status();
        *r.meta_mut() = Default::default();
        *r.version_mut() = String::new();
        r
    }
}

macro_rules! managed {
    ($ty:ty, $status:ty, $field:ident, $validate:path, $variant:ident) => {
        impl Managed for $ty {
            type Status = $status;
            fn store(cluster: &Cluster) -> &Store<Self> {
                &cluster.$field
            }
            fn validate(&self) -> Result<(), String> {
                $validate(self).map_err(|e| e.to_string())
            }
            fn take_status(&mut self) -> Option<Self::Status> {
                self.status.take()
            }
            fn set_status(&mut self, status: Option<Self::Status>) {
                self.status = status;
            }
            fn event_object(&self) -> event::Object {
                event::Object::$variant(self.clone())
            }
        }
    };
}

managed!(Task, TaskStatus, tasks, validate::validate_task, Task);
managed!(Node, NodeStatus, nodes, validate::validate_node, Node);
managed!(
    Volume,
    VolumeStatus,
    volumes,
    validate::validate_volume,
    Volume
);
managed!(
    ContainerSet,
    ContainerSetStatus,
    sets,
    validate::validate_container_set,
    Set
);
managed!(Job, JobStatus, jobs, validate::validate_job, Job);

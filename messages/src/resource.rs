//! The [`Resource`] trait: what every stored kind (task, node, volume, set, lease) shares.

use crate::v1::{
    ContainerSet, Job, Lease, Meta, Node, Secret, Task, TaskConfig, TaskStatus, Volume,
};
use serde::{de::DeserializeOwned, Serialize};

/// The kinds of resource voiyd stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A container on one node.
    Task,
    /// A host running voiyd-node.
    Node,
    /// Storage that tasks mount.
    Volume,
    /// Replicas of a task template.
    ContainerSet,
    /// Which node holds a task.
    Lease,
    /// Tasks run to completion, once or on a schedule.
    Job,
    /// Confidential values tasks read.
    Secret,
}

impl Kind {
    /// Every kind, in display order.
    pub const ALL: [Kind; 7] = [
        Kind::Task,
        Kind::Node,
        Kind::Volume,
        Kind::ContainerSet,
        Kind::Lease,
        Kind::Job,
        Kind::Secret,
    ];

    /// Singular lower-case name, used in event subjects and status keys (`task`).
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Node => "node",
            Kind::Volume => "volume",
            Kind::ContainerSet => "set",
            Kind::Lease => "lease",
            Kind::Job => "job",
            Kind::Secret => "secret",
        }
    }

    /// Plural name, used in API subjects (`tasks`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Task => "tasks",
            Kind::Node => "nodes",
            Kind::Volume => "volumes",
            Kind::ContainerSet => "sets",
            Kind::Lease => "leases",
            Kind::Job => "jobs",
            Kind::Secret => "secrets",
        }
    }

    /// The `version` a manifest of this kind carries (`task/v1`).
    pub fn manifest_version(self) -> &'static str {
        match self {
            Kind::Task => "task/v1",
            Kind::Node => "node/v1",
            Kind::Volume => "volume/v1",
            Kind::ContainerSet => "containerset/v1",
            Kind::Lease => "lease/v1",
            Kind::Job => "job/v1",
            Kind::Secret => "secret/v1",
        }
    }

    /// Parses a kind as users type it: singular, plural or a short alias.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "task" | "tasks" | "t" => Kind::Task,
            "node" | "nodes" | "no" => Kind::Node,
            "volume" | "volumes" | "vol" | "vols" => Kind::Volume,
            "set" | "sets" | "containerset" | "containersets" | "cs" => Kind::ContainerSet,
            "lease" | "leases" => Kind::Lease,
            "job" | "jobs" | "cronjob" | "cronjobs" | "cj" => Kind::Job,
            "secret" | "secrets" => Kind::Secret,
            _ => return None,
        })
    }

    /// The kind a manifest `version` names, e.g. `task/v1`.
    pub fn from_manifest_version(v: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.manifest_version() == v)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.singular())
    }
}

/// A stored resource: a prost message with a [`Meta`] and a protobuf-JSON mapping.
pub trait Resource:
    prost::Message
    + Default
    + Clone
    + PartialEq
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + crate::fields::Fields
    + 'static
{
    /// This resource's kind.
    const KIND: Kind;

    /// The metadata, if set.
    fn meta(&self) -> Option<&Meta>;
    /// The metadata, created empty when missing.
    fn meta_mut(&mut self) -> &mut Meta;
    /// The `version` field (`task/v1`).
    fn version_mut(&mut self) -> &mut String;
    /// Drops the observed status, leaving the spec.
    fn clear_status(&mut self);

    /// The resource's name, or "" when it has no meta.
    fn name(&self) -> &str {
        self.meta().map(|m| m.name.as_str()).unwrap_or("")
    }
    /// The labels, empty when unset.
    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        self.meta().map(|m| m.labels.clone()).unwrap_or_default()
    }
}

// `|r| body` is what clearing the status does for the kind (nothing for leases).
macro_rules! resource {
    ($ty:ty, $kind:expr, |$r:ident| $clear:block) => {
        impl Resource for $ty {
            const KIND: Kind = $kind;
            fn meta(&self) -> Option<&Meta> {
                self.meta.as_ref()
            }
            fn meta_mut(&mut self) -> &mut Meta {
                self.meta.get_or_insert_with(Meta::default)
            }
            fn version_mut(&mut self) -> &mut String {
                &mut self.version
            }
            fn clear_status(&mut self) {
                let $r = self;
                $clear
            }
        }
    };
}

resource!(Task, Kind::Task, |r| { r.status = None });
resource!(Node, Kind::Node, |r| { r.status = None });
resource!(Volume, Kind::Volume, |r| { r.status = None });
resource!(ContainerSet, Kind::ContainerSet, |r| { r.status = None });
resource!(Lease, Kind::Lease, |_r| {});
resource!(Job, Kind::Job, |r| { r.status = None });
resource!(Secret, Kind::Secret, |_r| {});

impl Task {
    /// A task named `name` that runs `config` (version `task/v1`, no labels, no status):
    /// what `voiydctl run`, the set controller and tests start from.
    pub fn new(name: &str, config: TaskConfig) -> Task {
        Task {
            version: Kind::Task.manifest_version().to_string(),
            meta: Some(Meta {
                name: name.to_string(),
                ..Meta::default()
            }),
            config: Some(config),
            status: None,
        }
    }

    /// The same task with these labels (replacing any it had).
    pub fn with_labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Task {
        self.meta.get_or_insert_with(Meta::default).labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The same task with this status.
    pub fn with_status(mut self, status: TaskStatus) -> Task {
        self.status = Some(status);
        self
    }
}

impl TaskConfig {
    /// A config that runs `image` with its own defaults.
    pub fn image(image: &str) -> TaskConfig {
        TaskConfig {
            image: image.to_string(),
            ..TaskConfig::default()
        }
    }
}

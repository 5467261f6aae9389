//! Volume kinds as nodes report them (`NodeVolume.kind`, `VolumeNodeStatus.kind`).

/// A directory on one node: its data stays on that node.
pub const HOST_LOCAL: &str = "host-local";
/// A file whose content travels with the task's work.
pub const TEMPLATE: &str = "template";

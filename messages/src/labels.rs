//! Label keys voiyd sets and reads itself: one list, for the server, the node and voiydctl.

/// The set a task belongs to.
pub const SET: &str = "voiyd.io/set";
/// The hash of the template a set's task was made from.
pub const TEMPLATE_HASH: &str = "voiyd.io/template-hash";
/// The job a task belongs to.
pub const JOB: &str = "voiyd.io/job";
/// The cron job a run (a job) belongs to.
pub const CRONJOB: &str = "voiyd.io/cronjob";
/// Every node has it in placement, with its own name as the value: a node selector on it
/// pins a task to one node (global sets pin each of their tasks so).
pub const NODE: &str = "voiyd.io/node";
/// A task's placement strategy (spread or binpack), set from its set's `placement`.
pub const PLACEMENT: &str = "voiyd.io/placement";
/// Set on a node being drained.
pub const DRAIN: &str = "voiyd.io/drain";

//! Normalization before storing: what a manifest may leave out, filled in.

use super::*;

/// Brings a task to its canonical form without changing its meaning: fills `version`, and
/// normalizes its configuration (see [`normalize_task_config`]). Idempotent; a valid task
/// stays valid.
pub fn normalize_task(task: &mut Task) {
    if task.version.is_empty() {
        task.version = Kind::Task.manifest_version().to_string();
    }
    if let Some(c) = task.config.as_mut() {
        normalize_task_config(c);
    }
}

/// Canonical spellings in a task configuration: protocols lower-case (empty = `tcp`), mount
/// types lower-case and filled in when implied, restart policy and disconnect policy
/// lower-case, pull policy as `Always`/`IfNotPresent`/`Never`, capabilities as `CAP_X` or
/// `ALL`. Unknown values are left alone for validation to report.
pub fn normalize_task_config(c: &mut TaskConfig) {
    for p in &mut c.port_mappings {
        p.protocol = if p.protocol.is_empty() {
            "tcp".into()
        } else {
            p.protocol.to_ascii_lowercase()
        };
    }
    for m in &mut c.mounts {
        if let Some(t) = mount_type(m) {
            m.r#type = t;
        }
    }
    c.restart_policy = c.restart_policy.to_ascii_lowercase();
    c.on_disconnect = c.on_disconnect.to_ascii_lowercase();
    if let Some(canon) = ["Always", "IfNotPresent", "Never"]
        .into_iter()
        .find(|v| v.eq_ignore_ascii_case(&c.pull_policy))
    {
        c.pull_policy = canon.to_string();
    }
    if let Some(caps) = c.capabilities.as_mut() {
        for name in caps.add.iter_mut().chain(caps.drop.iter_mut()) {
            if let Some(canon) = canonical_capability(name) {
                *name = canon;
            }
        }
    }
}

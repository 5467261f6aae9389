//! Helpers the set controller and the dry run share: a set's tasks as the rollout
//! plan sees them, and the task a set makes from its template.

use crate::cache::view::{TaskEntry, NODE_NAME_LABEL, PLACEMENT_LABEL};
use crate::context::Ctx;
use crate::schedule::placement::{wants_global_task, Demand, Strategy};
use crate::schedule::sets::{
    index_of, secs_since, Member, CRASH_LOOP_RESTARTS, HASH_LABEL, SET_LABEL,
};
use std::collections::BTreeSet;
use voiyd_messages::v1::{ContainerSet, Task, TaskConfig};
use voiyd_messages::{Resource, Timestamp};

/// The tasks of set `set` as members of its rollout plan.
pub fn members(
    set: &str,
    tasks: &[(String, TaskEntry)],
    min_ready: u32,
    now: &Timestamp,
) -> Vec<Member> {
    tasks
        .iter()
        .map(|(name, t)| {
            use voiyd_messages::phase::TaskPhase;
            // Ready: running and, with a readiness probe, passing it.
            let ready_since = t.ready_since();
            let ready = ready_since.is_some();
            let st = t.status.as_ref().map(|(s, _)| s);
            let restarts = st.map_or(0, |s| s.restart_count);
            let exited = st.is_some_and(|s| s.exited);
            let phase = t.phase();
            Member {
                name: name.clone(),
                index: index_of(set, name),
                hash: t.labels.get(HASH_LABEL).cloned().unwrap_or_default(),
                ready,
                available: ready && secs_since(ready_since.as_ref(), now) >= i64::from(min_ready),
                failed: phase == TaskPhase::Failed || restarts >= CRASH_LOOP_RESTARTS,
                finished: exited && (phase == TaskPhase::Failed || phase == TaskPhase::Succeeded),
                node: t
                    .demand
                    .selector
                    .get(NODE_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Task `name` of the set's template (of hash `hash`), labelled as the set's; `pin`
/// confines it to one node (global sets).
pub fn set_task(set: &ContainerSet, hash: &str, name: &str, pin: Option<&str>) -> Task {
    let mut labels = set
        .meta
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(SET_LABEL.into(), set.name().into());
    labels.insert(HASH_LABEL.into(), hash.into());
    if !set.placement.is_empty() {
        labels.insert(PLACEMENT_LABEL.into(), set.placement.clone());
    }
    let mut template = set.template.clone().unwrap_or_default();
    if let Some(node) = pin {
        template
            .node_selector
            .insert(NODE_NAME_LABEL.into(), node.into());
    }
    Task::new(name, template).with_labels(labels)
}

/// The nodes a global set of `template` runs a task on: every registered node that
/// wants one (ready, uncordoned, matching the template's selector and affinity).
pub fn global_nodes(ctx: &Ctx, template: &TaskConfig) -> BTreeSet<String> {
    let demand = Demand::of(template, Strategy::default());
    ctx.view
        .nodes()
        .into_iter()
        .filter(|n| n.registered && wants_global_task(&demand, &n.candidate))
        .map(|n| n.candidate.name)
        .collect()
}

//! The container set controller: keeps `replicas` tasks of a set's template running,
//! replaces them in a rolling update when the template changes, and rolls back
//! automatically when an update does not progress.
//!
//! A set's tasks are named `<set>-<n>` (the lowest free `n`) and labelled
//! `voiyd.io/set=<set>` and `voiyd.io/template-hash=<hash of the template>`. Tasks of
//! all templates are interchangeable members: a rolling update creates tasks of the new
//! template (up to `replicas + maxSurge` in all) and deletes tasks of old templates
//! while at least `replicas - maxUnavailable` stay available (Running for
//! `minReadySeconds`). Deleting a set deletes its tasks.
//!
//! Every server runs the controller; creates fail when the name is taken and deletes and
//! status writes are CAS, so they never fight. The decision itself ([`plan`]) is pure.

use crate::api::{resources, Ctx, Failure};
use crate::managed::Managed;
use crate::status;
use crate::view::{TaskEntry, PLACEMENT_LABEL};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeSet;
use voiyd_messages::v1::{
    Condition, ContainerSet, ContainerSetStatus, DeleteRequest, Meta, SetRevision, Task, TaskConfig,
};
use voiyd_messages::{Resource, Timestamp};

/// Label naming the set a task belongs to.
pub const SET_LABEL: &str = "voiyd.io/set";
/// Label carrying the hash of the template a task was made from.
pub const HASH_LABEL: &str = "voiyd.io/template-hash";
/// Revisions kept in a set's history.
pub const HISTORY: usize = 10;
/// Progress deadline when the strategy sets none.
pub const DEFAULT_PROGRESS_DEADLINE_SECS: u32 = 600;

/// The hash of a template: 16 hex digits of FNV-1a over its protobuf encoding (maps are
/// ordered, so equal templates hash alike on every server).
pub fn template_hash(t: &TaskConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.encode_to_vec() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One task of a set, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Task name.
    pub name: String,
    /// `n` of `<set>-<n>` (tasks of other shapes get `u32::MAX`).
    pub index: u32,
    /// Its template hash.
    pub hash: String,
    /// Running.
    pub ready: bool,
    /// Running for at least minReadySeconds.
    pub available: bool,
    /// Failed (counts against the rollout).
    pub failed: bool,
}

/// Surge and unavailability limits, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extra tasks allowed above replicas during an update.
    pub max_surge: u32,
    /// Tasks allowed below replicas-available during an update.
    pub max_unavailable: u32,
}

impl Limits {
    /// From a strategy; both zero (unset) means surge 1, unavailable 0.
    pub fn of(surge: u32, unavailable: u32) -> Limits {
        if surge == 0 && unavailable == 0 {
            Limits {
                max_surge: 1,
                max_unavailable: 0,
            }
        } else {
            Limits {
                max_surge: surge,
                max_unavailable: unavailable,
            }
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Indices of tasks to create from the current template.
    pub create: Vec<u32>,
    /// Tasks to delete.
    pub delete: Vec<String>,
    /// Every task is of the current template, and `replicas` of them are available.
    pub complete: bool,
}

/// Decides which tasks to create and delete for `replicas` tasks of template `hash`.
pub fn plan(replicas: u32, hash: &str, members: &[Member], limits: Limits) -> Plan {
    let replicas = replicas as usize;
    let (new, old): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| m.hash == hash);
    let mut p = Plan::default();
    let total = members.len();
    let ceiling = replicas + limits.max_surge as usize;
    let n_create = replicas
        .saturating_sub(new.len())
        .min(ceiling.saturating_sub(total));
    let used: BTreeSet<u32> = members.iter().map(|m| m.index).collect();
    p.create = (0u32..)
        .filter(|i| !used.contains(i))
        .take(n_create)
        .collect();

    // Too many of the current template (scale down): unavailable first, then the
    // highest indices.
    if new.len() > replicas {
        let mut surplus = new.clone();
        surplus.sort_by_key(|m| (m.available, std::cmp::Reverse(m.index)));
        p.delete.extend(
            surplus
                .iter()
                .take(new.len() - replicas)
                .map(|m| m.name.clone()),
        );
    }
    // Old templates: those not available cost nothing to remove; available ones go
    // while enough others stay available.
    let min_available = replicas.saturating_sub(limits.max_unavailable as usize);
    let mut available = members.iter().filter(|m| m.available).count();
    let mut old = old.clone();
    old.sort_by_key(|m| (m.available, std::cmp::Reverse(m.index)));
    for m in old {
        if !m.available {
            p.delete.push(m.name.clone());
        } else if available > min_available {
            p.delete.push(m.name.clone());
            available -= 1;
        }
    }
    p.complete = members.iter().all(|m| m.hash == hash)
        && new.len() == replicas
        && new.iter().filter(|m| m.available).count() == replicas;
    p
}

fn index_of(set: &str, task: &str) -> u32 {
    task.strip_prefix(set)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

fn secs_since(t: Option<&Timestamp>, now: &Timestamp) -> i64 {
    t.map(|t| now.seconds - t.seconds).unwrap_or(0)
}

fn members(
    set: &str,
    tasks: &[(String, TaskEntry)],
    min_ready: u32,
    now: &Timestamp,
) -> Vec<Member> {
    tasks
        .iter()
        .map(|(name, t)| {
            let ready = t.phase() == "Running";
            let ready_since = t.ready_since();
            Member {
                name: name.clone(),
                index: index_of(set, name),
                hash: t.labels.get(HASH_LABEL).cloned().unwrap_or_default(),
                ready,
                available: ready
                    && ready_since.is_some()
                    && secs_since(ready_since.as_ref(), now) >= i64::from(min_ready),
                failed: t.phase() == "Failed",
            }
        })
        .collect()
}

/// Reconciles every set once; also deletes tasks of sets that no longer exist.
pub async fn reconcile_all(ctx: &Ctx) {
    if !ctx
        .view
        .wait_ready(std::time::Duration::from_millis(1))
        .await
    {
        return;
    }
    let sets = match ContainerSet::store(&ctx.cluster).list().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list sets");
            return;
        }
    };
    let mut by_set = ctx.view.tasks_by_label(SET_LABEL);
    for set in sets {
        let tasks = by_set.remove(set.name()).unwrap_or_default();
        if let Err(e) = reconcile(ctx, &set, &tasks).await {
            tracing::warn!(set = set.name(), error = %e.message, "set not reconciled");
        }
    }
    // What is left belongs to deleted sets.
    for (set, tasks) in by_set {
        for (task, _) in tasks {
            tracing::info!(%set, %task, "set deleted: deleting its task");
            delete_task(ctx, &task).await;
        }
    }
}

async fn delete_task(ctx: &Ctx, task: &str) {
    let req = DeleteRequest {
        name: task.to_string(),
        ..Default::default()
    };
    if let Err(e) =
        crate::api::handle(ctx, "tasks", "delete", Bytes::from(req.encode_to_vec())).await
    {
        tracing::debug!(%task, error = %e.message, "task not deleted");
    }
}

async fn create_task(ctx: &Ctx, set: &ContainerSet, hash: &str, index: u32) {
    let name = format!("{}-{index}", set.name());
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
    let task = Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: name.clone(),
            labels,
            ..Default::default()
        }),
        config: set.template.clone(),
        status: None,
    };
    if let Err(e) =
        crate::api::handle(ctx, "tasks", "create", Bytes::from(task.encode_to_vec())).await
    {
        tracing::debug!(task = %name, error = %e.message, "set task not created");
    }
}

fn condition(
    ty: &str,
    ok: bool,
    reason: &str,
    msg: String,
    prev: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.r#type == ty && c.status == status)
        .and_then(|c| c.last_transition_time)
        .unwrap_or(now);
    Condition {
        r#type: ty.into(),
        status: status.into(),
        reason: reason.into(),
        msg,
        last_transition_time: Some(since),
    }
}

/// Records a template in the history (moving it to the end if it ran before).
pub fn remember(history: &mut Vec<SetRevision>, rev: SetRevision) {
    history.retain(|r| r.template_hash != rev.template_hash);
    history.push(rev);
    if history.len() > HISTORY {
        let extra = history.len() - HISTORY;
        history.drain(..extra);
    }
}

async fn reconcile(
    ctx: &Ctx,
    set: &ContainerSet,
    tasks: &[(String, TaskEntry)],
) -> Result<(), Failure> {
    let now = crate::now();
    let template = set.template.clone().unwrap_or_default();
    let hash = template_hash(&template);
    let replicas = set.replicas.unwrap_or(1);
    let strategy = set.strategy.unwrap_or_default();
    let limits = Limits::of(strategy.max_surge, strategy.max_unavailable);
    let deadline = match strategy.progress_deadline_seconds {
        0 => DEFAULT_PROGRESS_DEADLINE_SECS,
        d => d,
    };
    let generation = set.meta.as_ref().map(|m| m.generation).unwrap_or(0);
    let current =
        status::read_versioned::<ContainerSetStatus>(&ctx.status.0, "set", set.name()).await?;
    let (prev, rev) = match current {
        Some(v) => (v.status, v.revision),
        None => (ContainerSetStatus::default(), 0),
    };
    let mut st = prev.clone();
    if st.template_hash != hash {
        st.template_hash = hash.clone();
        st.rollout_started = Some(now);
        let rolled_back = st
            .conditions
            .iter()
            .any(|c| c.r#type == "Progressing" && c.reason == "RolledBack" && c.status == "False");
        remember(
            &mut st.history,
            SetRevision {
                revision: generation,
                template_hash: hash.clone(),
                template: Some(template.clone()),
                created: Some(now),
                cause: if rolled_back {
                    "rollback".into()
                } else {
                    "update".into()
                },
            },
        );
    }
    let members = members(set.name(), tasks, strategy.min_ready_seconds, &now);
    let p = plan(replicas, &hash, &members, limits);
    for i in &p.create {
        create_task(ctx, set, &hash, *i).await;
    }
    for t in &p.delete {
        delete_task(ctx, t).await;
    }

    // A rollout that fails or stalls goes back to the previous template.
    let new_failed = members.iter().any(|m| m.hash == hash && m.failed);
    let stalled =
        !p.complete && secs_since(st.rollout_started.as_ref(), &now) > i64::from(deadline);
    let previous = st
        .history
        .iter()
        .rev()
        .find(|r| r.template_hash != hash)
        .cloned();
    let mut rolled_back_now = false;
    if let Some(prev_rev) = previous.filter(|_| (new_failed || stalled) && st.history.len() > 1) {
        let why = if new_failed {
            "a task of the new template failed"
        } else {
            "the progress deadline passed"
        };
        let mut spec = set.clone();
        spec.template = prev_rev.template.clone();
        spec.status = None;
        let rv = set.meta.as_ref().map(|m| m.resource_version).unwrap_or(0);
        if resources::write_update(ctx, spec, rv).await.is_ok() {
            tracing::warn!(set = set.name(), %why, "rolling back");
            ctx.events
                .publish(
                    "set",
                    set.name(),
                    "rolledback",
                    "RolledBack",
                    format!("rolled back to revision {}: {why}", prev_rev.revision),
                    None,
                )
                .await;
            st.conditions = vec![condition(
                "Progressing",
                false,
                "RolledBack",
                format!("rolled back to revision {}: {why}", prev_rev.revision),
                &st.conditions,
                now,
            )];
            rolled_back_now = true;
        }
    }

    let mine: Vec<&Member> = members
        .iter()
        .filter(|m| !p.delete.contains(&m.name))
        .collect();
    st.desired = replicas;
    st.ready = mine.iter().filter(|m| m.ready).count() as u32;
    st.updated = mine.iter().filter(|m| m.hash == hash).count() as u32;
    st.available = mine.iter().filter(|m| m.available).count() as u32;
    st.observed_generation = generation;
    if !rolled_back_now {
        let keep_rollback = st.conditions.iter().any(|c| c.reason == "RolledBack") && !p.complete;
        let progressing = if p.complete {
            condition(
                "Progressing",
                true,
                "RolloutComplete",
                format!("{replicas} tasks of revision {generation} available"),
                &st.conditions,
                now,
            )
        } else if stalled {
            condition(
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("no progress for {deadline}s"),
                &st.conditions,
                now,
            )
        } else if keep_rollback {
            st.conditions
                .iter()
                .find(|c| c.reason == "RolledBack")
                .cloned()
                .expect("found")
        } else {
            condition(
                "Progressing",
                true,
                "RolloutInProgress",
                format!(
                    "{} of {replicas} updated, {} available",
                    st.updated, st.available
                ),
                &st.conditions,
                now,
            )
        };
        let available = condition(
            "Available",
            st.available >= replicas.saturating_sub(limits.max_unavailable),
            "MinimumAvailable",
            String::new(),
            &st.conditions,
            now,
        );
        st.conditions = vec![progressing, available];
    }
    if st != prev {
        // A lost race means another server just wrote it: the next pass catches up.
        status::write(&ctx.status.0, "set", set.name(), &st, rev).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(i: u32, hash: &str, available: bool) -> Member {
        Member {
            name: format!("s-{i}"),
            index: i,
            hash: hash.into(),
            ready: available,
            available,
            failed: false,
        }
    }

    #[test]
    fn scales_up_and_down_by_index() {
        let p = plan(3, "h", &[m(1, "h", true)], Limits::of(0, 0));
        assert_eq!(p.create, vec![0, 2]);
        assert!(p.delete.is_empty() && !p.complete);
        let p = plan(
            1,
            "h",
            &[m(0, "h", true), m(1, "h", false), m(2, "h", true)],
            Limits::of(0, 0),
        );
        assert_eq!(p.delete, vec!["s-1".to_string(), "s-2".to_string()]);
        let p = plan(
            2,
            "h",
            &[m(0, "h", true), m(1, "h", true)],
            Limits::of(0, 0),
        );
        assert_eq!(
            p,
            Plan {
                create: vec![],
                delete: vec![],
                complete: true
            }
        );
    }

    #[test]
    fn rolling_update_with_surge_waits_for_availability() {
        let old = [m(0, "a", true), m(1, "a", true)];
        // surge 1, unavailable 0: one new task first, no delete yet.
        let p = plan(2, "b", &old, Limits::of(1, 0));
        assert_eq!((p.create.clone(), p.delete.clone()), (vec![2], vec![]));
        // The new one is not available yet: nothing more happens.
        let mid = [m(0, "a", true), m(1, "a", true), m(2, "b", false)];
        let p = plan(2, "b", &mid, Limits::of(1, 0));
        assert!(p.create.is_empty() && p.delete.is_empty());
        // Available: one old one goes.
        let mid = [m(0, "a", true), m(1, "a", true), m(2, "b", true)];
        assert_eq!(
            plan(2, "b", &mid, Limits::of(1, 0)).delete,
            vec!["s-1".to_string()]
        );
    }

    #[test]
    fn rolling_update_without_surge_takes_one_down_first() {
        let old = [m(0, "a", true), m(1, "a", true), m(2, "a", true)];
        let p = plan(3, "b", &old, Limits::of(0, 1));
        assert_eq!((p.create, p.delete), (vec![], vec!["s-2".to_string()]));
        let p = plan(3, "b", &old[..2], Limits::of(0, 1));
        assert_eq!(p.create, vec![2]);
    }

    #[test]
    fn history_keeps_the_last_ten_and_moves_repeats() {
        let mut h = Vec::new();
        for i in 0..12u64 {
            remember(
                &mut h,
                SetRevision {
                    revision: i,
                    template_hash: format!("h{i}"),
                    ..Default::default()
                },
            );
        }
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].revision, 2);
        remember(
            &mut h,
            SetRevision {
                revision: 20,
                template_hash: "h5".into(),
                ..Default::default()
            },
        );
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last().unwrap().revision, 20);
        assert_eq!(index_of("web", "web-12"), 12);
        assert_eq!(index_of("web", "webx-1"), u32::MAX);
        assert_ne!(
            template_hash(&TaskConfig::default()),
            template_hash(&TaskConfig {
                image: "x".into(),
                ..Default::default()
            })
        );
    }

    fn arb_members() -> impl Strategy<Value = Vec<Member>> {
        proptest::collection::vec((any::<bool>(), any::<bool>()), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (new, avail))| m(i as u32, if new { "new" } else { "old" }, avail))
                .collect()
        })
    }

    proptest! {
        /// Never more than replicas + surge tasks, never fewer available than
        /// replicas - maxUnavailable through deletes of available tasks, never a name twice.
        #[test]
        fn plan_keeps_its_limits(replicas in 0u32..8, surge in 0u32..3, unavail in 0u32..3, ms in arb_members()) {
            let limits = Limits::of(surge, unavail);
            let p = plan(replicas, "new", &ms, limits);
            let after = ms.len() + p.create.len() - p.delete.len();
            prop_assert!(p.create.is_empty() || ms.len() + p.create.len() <= (replicas + limits.max_surge) as usize);
            let avail_before = ms.iter().filter(|m| m.available).count();
            let avail_deleted = ms.iter().filter(|m| m.available && p.delete.contains(&m.name)).count();
            let floor = (replicas.saturating_sub(limits.max_unavailable)) as usize;
            let surplus_new = ms.iter().filter(|m| m.hash == "new").count().saturating_sub(replicas as usize);
            if surplus_new == 0 && avail_deleted > 0 {
                prop_assert!(avail_before - avail_deleted >= floor.min(avail_before));
            }
            let names: BTreeSet<String> = ms.iter().map(|m| m.name.clone()).collect();
            for i in &p.create {
                let n = format!("s-{}", i);
                prop_assert!(!names.contains(&n));
            }
            let del: BTreeSet<&String> = p.delete.iter().collect();
            prop_assert_eq!(del.len(), p.delete.len());
            let _ = after;
        }

        /// Repeating the plan (tasks becoming available at once) converges to exactly
        /// `replicas` tasks of the new template.
        #[test]
        fn rollout_converges(replicas in 0u32..6, surge in 0u32..3, unavail in 0u32..3, ms in arb_members()) {
            let limits = Limits::of(surge, unavail);
            let mut cur = ms;
            for _ in 0..50 {
                let p = plan(replicas, "new", &cur, limits);
                if p.complete { break; }
                cur.retain(|m| !p.delete.contains(&m.name));
                for m in &mut cur { m.available = true; m.ready = true; }
                for i in p.create { cur.push(m(i, "new", false)); }
            }
            let p = plan(replicas, "new", &cur, limits);
            let mut cur2 = cur.clone();
            for m in &mut cur2 { m.available = true; }
            let p2 = plan(replicas, "new", &cur2, limits);
            prop_assert!(p.complete || p2.complete, "not converged: {:?}", cur);
        }
    }
}

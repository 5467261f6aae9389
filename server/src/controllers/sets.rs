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

use crate::cache::sets::SetNetwork;
use crate::cache::view::TaskEntry;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::schedule::sets::{
    condition, global_task_name, plan, plan_global, remember, rollback_cause, secs_since,
    template_hash, Limits, Member, Plan, Rollout, DEFAULT_PROGRESS_DEADLINE_SECS, SET_LABEL,
};
use crate::service::sets::{global_nodes, members, set_task};
use crate::service::{resources, tasks};
use crate::store::managed::Managed;
use crate::store::status;
use crate::store::subnets::Subnets;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use voiyd_messages::condition::ConditionType;
use voiyd_messages::event::EventType;
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{ContainerSet, ContainerSetStatus, SetRevision};
use voiyd_messages::Resource;

/// Reconciles every set once (the view must be ready); also deletes tasks of sets that
/// no longer exist.
pub async fn reconcile_all(ctx: &Ctx) {
    let sets = match ContainerSet::store(&ctx.cluster).list().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list sets");
            return;
        }
    };
    let mut by_set = ctx.view.tasks_by_label(SET_LABEL);
    let mut networks = BTreeMap::new();
    for set in sets {
        let tasks = by_set.remove(set.name()).unwrap_or_default();
        let vip = match reconcile(ctx, &set, &tasks).await {
            Ok(vip) => vip,
            Err(e) => {
                tracing::warn!(set = set.name(), error = %e.message(), "set not reconciled");
                // Keep what was known: a failed pass must not take the set's VIP away.
                ctx.set_networks
                    .get()
                    .remove(set.name())
                    .map(|n| n.vip)
                    .unwrap_or_default()
            }
        };
        networks.insert(set.name().to_string(), network_of(&set, vip));
    }
    release_vips(ctx, &networks).await;
    ctx.set_networks.replace(networks);
    // What is left belongs to deleted sets.
    for (set, tasks) in by_set {
        for (task, _) in tasks {
            tracing::info!(%set, %task, "set deleted: deleting its task");
            tasks::delete_quietly(ctx, &task).await;
        }
    }
}

/// Creates task `name` of the set's template; `pin` confines it to one node (global sets).
async fn create_task(ctx: &Ctx, set: &ContainerSet, hash: &str, name: String, pin: Option<&str>) {
    let task = set_task(set, hash, &name, pin);
    if let Err(e) = tasks::create(ctx, task).await {
        tracing::debug!(task = %name, error = %e.message(), "set task not created");
    }
}

async fn reconcile(
    ctx: &Ctx,
    set: &ContainerSet,
    tasks: &[(String, TaskEntry)],
) -> Result<String, ServerError> {
    let now = voiyd_messages::time::now();
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
        // A template this controller did not write itself (a rollback records its own).
        st.template_hash = hash.clone();
        st.rollout_started = Some(now);
        remember(
            &mut st.history,
            SetRevision {
                revision: generation,
                template_hash: hash.clone(),
                template: Some(template.clone()),
                created: Some(now),
                cause: "update".into(),
            },
        );
    }
    let members = members(set.name(), tasks, strategy.min_ready_seconds, &now);
    let (p, replicas) = if set.mode.eq_ignore_ascii_case("global") {
        // One task on every node that wants one.
        let wanted = global_nodes(ctx, &template);
        let g = plan_global(&hash, &wanted, &members, strategy.max_unavailable);
        for node in &g.create {
            let name = global_task_name(set.name(), node);
            create_task(ctx, set, &hash, name, Some(node)).await;
        }
        let p = Plan {
            create: Vec::new(),
            delete: g.delete,
            complete: g.complete,
        };
        (p, wanted.len() as u32)
    } else {
        let p = plan(replicas, &hash, &members, limits);
        for i in &p.create {
            let name = format!("{}-{i}", set.name());
            create_task(ctx, set, &hash, name, None).await;
        }
        (p, replicas)
    };
    for t in &p.delete {
        tasks::delete_quietly(ctx, t).await;
    }

    // A rollout that fails or stalls goes back to the previous template; a rollout
    // is in progress from a template change until it completes.
    let in_progress = st.rollout_started.is_some();
    let elapsed = secs_since(st.rollout_started.as_ref(), &now);
    let stalled = in_progress && !p.complete && elapsed > i64::from(deadline);
    let previous = st
        .history
        .iter()
        .rev()
        .find(|r| r.template_hash != hash)
        .cloned();
    let rollout = Rollout {
        in_progress,
        is_rollback: st
            .history
            .last()
            .is_some_and(|r| r.template_hash == hash && r.cause.starts_with("rollback")),
        has_previous: previous.is_some(),
        elapsed_secs: elapsed,
        deadline_secs: deadline,
    };
    let cause = rollback_cause(rollout, &hash, &members, p.complete);
    let mut rolled_back_now = false;
    if let (Some(prev_rev), Some(why)) = (previous, cause) {
        let mut spec = set.clone();
        spec.template = prev_rev.template.clone();
        spec.status = None;
        let rv = set.meta.as_ref().map(|m| m.resource_version).unwrap_or(0);
        if let Ok(written) = resources::write_update(ctx, spec, rv).await {
            tracing::warn!(set = set.name(), %why, "rolling back");
            // The rollback is a rollout of its own, recorded as such: it is never rolled
            // back in turn, and its RolledBack condition lasts until it completes.
            let new_generation = written.meta.as_ref().map_or(generation, |m| m.generation);
            st.template_hash = prev_rev.template_hash.clone();
            st.rollout_started = Some(now);
            st.observed_generation = new_generation;
            remember(
                &mut st.history,
                SetRevision {
                    revision: new_generation,
                    created: Some(now),
                    cause: format!("rollback: {why}"),
                    ..prev_rev.clone()
                },
            );
            ctx.events
                .publish(
                    "set",
                    set.name(),
                    EventType::RolledBack.as_str(),
                    Reason::RolledBack.as_str(),
                    format!("rolled back to revision {}: {why}", prev_rev.revision),
                    None,
                )
                .await;
            st.conditions = vec![condition(
                ConditionType::Progressing,
                false,
                Reason::RolledBack,
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
    if !rolled_back_now {
        st.observed_generation = generation;
        let keep_rollback = rollout.is_rollback
            && st.conditions.iter().any(|c| c.reason == Reason::RolledBack)
            && !p.complete;
        let progressing = if p.complete {
            condition(
                ConditionType::Progressing,
                true,
                Reason::RolloutComplete,
                format!("{replicas} tasks of revision {generation} available"),
                &st.conditions,
                now,
            )
        } else if stalled {
            condition(
                ConditionType::Progressing,
                false,
                Reason::ProgressDeadlineExceeded,
                format!("no progress for {deadline}s"),
                &st.conditions,
                now,
            )
        } else if keep_rollback {
            st.conditions
                .iter()
                .find(|c| c.reason == Reason::RolledBack)
                .cloned()
                .expect("found")
        } else {
            condition(
                ConditionType::Progressing,
                true,
                Reason::RolloutInProgress,
                format!(
                    "{} of {replicas} updated, {} available",
                    st.updated, st.available
                ),
                &st.conditions,
                now,
            )
        };
        let available = condition(
            ConditionType::Available,
            st.available >= replicas.saturating_sub(limits.max_unavailable),
            Reason::MinimumAvailable,
            String::new(),
            &st.conditions,
            now,
        );
        st.conditions = vec![progressing, available];
    }
    if p.complete && !rolled_back_now {
        // The rollout is over: later failures are the replicas' own, never a rollback.
        st.rollout_started = None;
    }
    let owner = Subnets::vip_owner(set.name());
    if set.vip && st.vip.is_empty() {
        // Allocation is idempotent per owner: a retry after a lost race finds the claim.
        let block = ctx.vips.ensure(&owner).await?;
        st.vip = Subnets::address(&block).to_string();
    } else if !set.vip && !st.vip.is_empty() {
        ctx.vips.release(&owner).await?;
        st.vip.clear();
    }
    let vip = st.vip.clone();
    if st != prev {
        // A lost race means another server just wrote it: the next pass catches up.
        status::write(&ctx.status.0, "set", set.name(), &st, rev).await?;
    }
    Ok(vip)
}

/// A set's networking as the services and names controllers see it.
fn network_of(set: &ContainerSet, vip: String) -> SetNetwork {
    SetNetwork {
        vip,
        ports: set
            .template
            .as_ref()
            .map(|t| t.port_mappings.clone())
            .unwrap_or_default(),
        isolated: set.network.eq_ignore_ascii_case("isolated"),
        allow_from: set.allow_from.clone(),
    }
}

/// How many passes go between two sweeps of virtual IP claims whose set is gone
/// (a server that stopped between deleting a set and releasing its address).
const VIP_SWEEP_PASSES: u64 = 120;

/// Releases the virtual IPs of sets that left since the last pass, and every
/// [`VIP_SWEEP_PASSES`] passes those of any set that no longer exists.
async fn release_vips(ctx: &Ctx, now: &BTreeMap<String, SetNetwork>) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let mut gone: Vec<String> = ctx
        .set_networks
        .get()
        .into_iter()
        .filter(|(name, n)| !n.vip.is_empty() && !now.contains_key(name))
        .map(|(name, _)| Subnets::vip_owner(&name))
        .collect();
    if PASSES
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(VIP_SWEEP_PASSES)
    {
        match ctx.vips.owners().await {
            Ok(owners) => gone.extend(owners.into_iter().filter(|o| {
                o.strip_prefix("vip=")
                    .is_some_and(|set| !now.contains_key(set))
            })),
            Err(e) => tracing::debug!(error = %e.message(), "cannot list virtual IPs"),
        }
    }
    gone.sort();
    gone.dedup();
    for owner in gone {
        match ctx.vips.release(&owner).await {
            Ok(()) => tracing::info!(%owner, "virtual IP released"),
            Err(e) => tracing::warn!(%owner, error = %e.message(), "cannot release a virtual IP"),
        }
    }
}

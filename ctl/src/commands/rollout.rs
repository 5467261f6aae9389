//! `drain NODE` and `rollout status|history|undo set NAME`.

use crate::cli::{DrainArgs, RolloutArgs, RolloutCommand};
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use voiyd_messages::condition::ConditionType;
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{ContainerSet, Node, Task};
use voiyd_nats::api::{ApiClient, ApiError};

/// Label the server moves tasks away from (with `config.unschedulable`); see
/// voiyd-server's failover.
pub const DRAIN_LABEL: &str = voiyd_messages::labels::DRAIN;

/// The merge patch of `drain`: cordon and mark for evacuation.
pub fn drain_patch() -> serde_json::Value {
    json!({ "config": { "unschedulable": true }, "meta": { "labels": { DRAIN_LABEL: "true" } } })
}

fn not_found(kind: &str, name: &str) -> impl Fn(ApiError) -> CtlError {
    let (kind, name) = (kind.to_string(), name.to_string());
    move |e| match e {
        ApiError::NotFound(_) => CtlError::Other(format!(
            "{kind} {name} not found: see `voiydctl get {kind}s`"
        )),
        e => e.into(),
    }
}

/// Tasks (not finished) whose status still names `node`.
async fn tasks_on(api: &ApiClient, node: &str) -> Result<Vec<Task>> {
    Ok(api
        .list::<Task>("")
        .await?
        .into_iter()
        .filter(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.node == node && s.phase != voiyd_messages::phase::TaskPhase::Succeeded
            })
        })
        .collect())
}

/// `drain NODE`: cordons the node and has the servers move its tasks, then waits until
/// none is left on it and the moved ones run elsewhere, or the deadline passes.
pub async fn drain(globals: &Globals, args: &DrainArgs) -> Result<()> {
    let deadline = match &args.deadline {
        Some(d) => voiyd_messages::quantity::parse_duration(d)
            .map_err(|e| CtlError::Usage(format!("--deadline: {e}")))?,
        None => globals.wait_timeout,
    };
    let session = connection::session(globals).await?;
    let api = &session.api;
    let moving: Vec<String> = tasks_on(api, &args.node)
        .await?
        .into_iter()
        .map(|t| t.meta.unwrap_or_default().name)
        .collect();
    api.patch::<Node>(&args.node, &drain_patch().to_string(), 0)
        .await
        .map_err(not_found("node", &args.node))?;
    outln!(
        "node/{} cordoned; moving {} task(s)",
        args.node,
        moving.len()
    );
    let start = Instant::now();
    loop {
        let left = tasks_on(api, &args.node).await?;
        let mut waiting: Vec<String> = left
            .iter()
            .map(|t| t.meta.clone().unwrap_or_default().name)
            .collect();
        if waiting.is_empty() {
            for name in &moving {
                match api.get::<Task>(name).await {
                    Ok(t) => {
                        let st = t.status.unwrap_or_default();
                        if st.phase != voiyd_messages::phase::TaskPhase::Running
                            && st.phase != voiyd_messages::phase::TaskPhase::Succeeded
                        {
                            waiting.push(format!("{name} ({})", st.phase));
                        }
                    }
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if waiting.is_empty() {
            outln!("node/{} drained", args.node);
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(CtlError::Other(format!(
                "node {} not drained within {}: still waiting for {}; check `voiydctl get tasks -o wide`",
                args.node,
                voiyd_messages::quantity::format_duration(deadline),
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition(set: &ContainerSet, ty: ConditionType) -> Option<&voiyd_messages::v1::Condition> {
    set.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == ty))
}

/// What `rollout status` says about a set: Ok(Some(line)) when finished, Ok(None)
/// while in progress, Err when the rollout failed.
pub fn rollout_state(set: &ContainerSet) -> std::result::Result<Option<String>, String> {
    let name = set.meta.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    let generation = set.meta.as_ref().map(|m| m.generation).unwrap_or(0);
    let Some(st) = set.status.as_ref() else {
        return Ok(None);
    };
    if st.observed_generation < generation {
        return Ok(None);
    }
    match condition(set, ConditionType::Progressing) {
        Some(c) if c.status == voiyd_messages::condition::status(false) => {
            Err(format!("set {name}: {} ({})", c.msg, c.reason))
        }
        Some(c) if c.reason == Reason::RolloutComplete => Ok(Some(format!(
            "set/{name} rolled out: {} of {} tasks updated and available",
            st.available, st.desired
        ))),
        _ => Ok(None),
    }
}

/// `rollout status|history|undo set NAME`.
pub async fn rollout(globals: &Globals, args: &RolloutArgs) -> Result<()> {
    let (kind, name) = match &args.command {
        RolloutCommand::Status { kind, name }
        | RolloutCommand::History { kind, name }
        | RolloutCommand::Undo { kind, name, .. } => (kind, name),
    };
    if crate::ops::parse_kind(kind)? != voiyd_messages::Kind::ContainerSet {
        return Err(CtlError::Usage(format!(
            "only sets roll out, not {kind}: use `voiydctl rollout status set NAME`"
        )));
    }
    let session = connection::session(globals).await?;
    let api = &session.api;
    let get = || async {
        api.get::<ContainerSet>(name)
            .await
            .map_err(not_found("set", name))
    };
    match &args.command {
        RolloutCommand::Status { .. } => {
            let start = Instant::now();
            let mut last = String::new();
            loop {
                let set = get().await?;
                match rollout_state(&set) {
                    Ok(Some(done)) => {
                        outln!("{done}");
                        return Ok(());
                    }
                    Err(failed) => return Err(CtlError::Other(failed)),
                    Ok(None) => {
                        let st = set.status.clone().unwrap_or_default();
                        let line = format!(
                            "waiting for set/{name}: {} of {} updated, {} available",
                            st.updated, st.desired, st.available
                        );
                        if line != last {
                            outln!("{line}");
                            last = line;
                        }
                    }
                }
                if start.elapsed() >= globals.wait_timeout {
                    return Err(CtlError::Other(format!(
                        "set {name} did not finish rolling out in time: see `voiydctl get set {name}` and its tasks"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        RolloutCommand::History { .. } => {
            let set = get().await?;
            let history = set.status.map(|s| s.history).unwrap_or_default();
            let rows: Vec<Vec<String>> = history
                .iter()
                .map(|r| {
                    vec![
                        r.revision.to_string(),
                        r.template_hash.clone(),
                        r.template
                            .as_ref()
                            .map(|t| t.image.clone())
                            .unwrap_or_default(),
                        r.cause.clone(),
                    ]
                })
                .collect();
            crate::emit(&crate::table::render(
                &["REVISION", "HASH", "IMAGE", "CAUSE"],
                &rows,
            ));
            Ok(())
        }
        RolloutCommand::Undo { to_revision, .. } => {
            let set = get().await?;
            let st = set.status.clone().unwrap_or_default();
            let target = match to_revision {
                Some(r) => st.history.iter().find(|h| h.revision == *r),
                None => st
                    .history
                    .iter()
                    .rev()
                    .find(|h| h.template_hash != st.template_hash),
            }
            .ok_or_else(|| {
                CtlError::Other(format!(
                    "set {name} has no earlier revision to go back to: see `voiydctl rollout history set {name}`"
                ))
            })?;
            let mut spec = set.clone();
            spec.template = target.template.clone();
            spec.status = None;
            api.update(&spec).await?;
            outln!("set/{name} rolled back to revision {}", target.revision);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::{Condition, ContainerSetStatus, Meta};

    #[test]
    fn drain_cordons_and_marks() {
        assert_eq!(
            drain_patch(),
            json!({"config": {"unschedulable": true}, "meta": {"labels": {"voiyd.io/drain": "true"}}})
        );
    }

    #[test]
    fn rollout_state_reads_conditions() {
        let mut set = ContainerSet {
            meta: Some(Meta {
                name: "web".into(),
                generation: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(rollout_state(&set), Ok(None));
        set.status = Some(ContainerSetStatus {
            observed_generation: 2,
            desired: 3,
            available: 3,
            conditions: vec![Condition {
                r#type: "Progressing".into(),
                status: "True".into(),
                reason: "RolloutComplete".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(rollout_state(&set).unwrap().unwrap().contains("rolled out"));
        set.status.as_mut().unwrap().conditions[0].status = "False".into();
        set.status.as_mut().unwrap().conditions[0].reason = "RolledBack".into();
        assert!(rollout_state(&set).is_err());
    }
}

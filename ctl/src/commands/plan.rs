//! `diff -f` (field by field, what `apply -f` would change) and `apply -f --dry-run`
//! (the servers' `plan`: validation and placement decided, nothing written).

use crate::checks;
use crate::cli::DiffArgs;
use crate::compare;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::manifests;
use crate::ops;
use voiyd_messages::diff::{changes, Change};
use voiyd_messages::manifest::AnyResource;
use voiyd_messages::v1::PlanReply;
use voiyd_nats::api::ApiClient;

/// A resource as the JSON a user writes: status and server-managed fields gone,
/// defaults filled as the server fills them.
fn user_json(r: &AnyResource) -> serde_json::Value {
    let mut r = r.clone();
    compare::strip_any(&mut r);
    checks::normalize(&mut r);
    let v = match &r {
        AnyResource::Task(x) => serde_json::to_value(x),
        AnyResource::Node(x) => serde_json::to_value(x),
        AnyResource::Volume(x) => serde_json::to_value(x),
        AnyResource::ContainerSet(x) => serde_json::to_value(x),
        AnyResource::Lease(x) => serde_json::to_value(x),
        AnyResource::Job(x) => serde_json::to_value(x),
        AnyResource::Secret(x) => serde_json::to_value(x),
    };
    v.unwrap_or(serde_json::Value::Null)
}

/// The lines of one resource's diff: `-` the stored value, `+` the new one.
pub fn diff_lines(changes: &[Change], colour: bool) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes {
        if let Some(old) = &c.old {
            out.push(crate::colour::diff_line(
                '-',
                &format!("{}: {old}", c.path),
                colour,
            ));
        }
        if let Some(new) = &c.new {
            out.push(crate::colour::diff_line(
                '+',
                &format!("{}: {new}", c.path),
                colour,
            ));
        }
    }
    out
}

/// `diff -f FILE...`: what `apply` would change, field by field. Exit 0 when nothing,
/// 1 when something would change.
pub async fn diff(globals: &Globals, args: &DiffArgs) -> Result<()> {
    let docs = manifests::parse_all(&manifests::read_sources(&args.files)?, true)?;
    let session = connection::session(globals).await?;
    let colour = crate::colour::on();
    let mut differ = 0;
    for doc in &docs {
        let stored = ops::get_any(&session.api, doc.kind(), doc.name()).await?;
        let (old, verdict) = match &stored {
            Some(s) => (user_json(s), "configured"),
            None => (serde_json::json!({}), "created"),
        };
        let found = changes(&old, &user_json(doc));
        if found.is_empty() {
            continue;
        }
        differ += 1;
        outln!("{} (would be {verdict})", ops::ref_of(doc));
        for line in diff_lines(&found, colour) {
            outln!("{line}");
        }
    }
    if differ > 0 {
        return Err(CtlError::Differs(differ));
    }
    Ok(())
}

/// `apply -f FILE... --dry-run`: asks the servers what applying would do.
pub async fn dry_run(globals: &Globals, files: &[String]) -> Result<()> {
    let mut docs = manifests::parse_all(&manifests::read_sources(files)?, true)?;
    crate::commands::apply::volumes_first(&mut docs);
    let session = connection::session(globals).await?;
    for doc in &docs {
        let reply = plan_one(&session.api, doc)
            .await
            .map_err(|e| CtlError::Other(format!("{} would fail: {e}", ops::ref_of(doc))))?;
        outln!("{}", describe(&ops::ref_of(doc), &reply));
    }
    Ok(())
}

async fn plan_one(api: &ApiClient, doc: &AnyResource) -> Result<PlanReply> {
    let mut d = doc.clone();
    compare::strip_any(&mut d);
    checks::normalize(&mut d);
    let kind = d.kind();
    ops::ensure_writable(kind)?;
    let reply = match &d {
        AnyResource::Task(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::Node(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::Volume(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::ContainerSet(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::Job(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::Lease(x) => api.call(kind.plural(), "plan", x).await,
        AnyResource::Secret(x) => {
            // Values are never read back: applying a secret always replaces them.
            let exists = api
                .get::<voiyd_messages::v1::Secret>(voiyd_messages::Resource::name(x))
                .await
                .is_ok();
            Ok(PlanReply {
                action: if exists { "update" } else { "create" }.into(),
                ..Default::default()
            })
        }
    };
    Ok(reply?)
}

/// One line saying what applying a resource would do.
pub fn describe(what: &str, p: &PlanReply) -> String {
    let verb = match p.action.as_str() {
        "create" => "created",
        "update" => "configured",
        other => other,
    };
    let mut parts: Vec<String> = Vec::new();
    if !p.changed.is_empty() {
        parts.push(format!("changes {}", p.changed.join(", ")));
    }
    if !p.replaced.is_empty() {
        parts.push(format!("replaces {}", p.replaced.join(", ")));
    }
    if !p.removed.is_empty() {
        parts.push(format!("removes {}", p.removed.join(", ")));
    }
    let placed: Vec<String> = p
        .tasks
        .iter()
        .map(|t| match (t.node.as_str(), t.current_node.as_str()) {
            ("", _) => format!("{} would wait: {}", t.name, t.reason),
            (n, c) if n == c => format!("{} stays on {n}", t.name),
            (n, "") => format!("{} on {n}", t.name),
            (n, c) => format!("{} moves from {c} to {n}: {}", t.name, t.reason),
        })
        .collect();
    if !placed.is_empty() {
        parts.push(placed.join(", "));
    }
    let mut line = format!("{what} {verb} (dry run)");
    if !parts.is_empty() {
        line.push_str(": ");
        line.push_str(&parts.join("; "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::PlannedTask;

    #[test]
    fn dry_run_lines() {
        let p = PlanReply {
            action: "update".into(),
            changed: vec!["template.image".into()],
            replaced: vec!["api-0".into()],
            removed: vec!["api-2".into()],
            tasks: vec![
                PlannedTask {
                    name: "api-3".into(),
                    node: "n1".into(),
                    ..Default::default()
                },
                PlannedTask {
                    name: "api-4".into(),
                    reason: "no node has 8 CPU free".into(),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            describe("set/api", &p),
            "set/api configured (dry run): changes template.image; replaces api-0; removes api-2; api-3 on n1, api-4 would wait: no node has 8 CPU free"
        );
        let unchanged = PlanReply {
            action: "unchanged".into(),
            ..Default::default()
        };
        assert_eq!(
            describe("node/n1", &unchanged),
            "node/n1 unchanged (dry run)"
        );
    }

    #[test]
    fn diff_lines_mark_old_and_new() {
        let c = changes(
            &serde_json::json!({"config": {"image": "a:1", "user": "x"}}),
            &serde_json::json!({"config": {"image": "a:2", "workingDir": "/w"}}),
        );
        assert_eq!(
            diff_lines(&c, false),
            [
                "- config.image: \"a:1\"",
                "+ config.image: \"a:2\"",
                "- config.user: \"x\"",
                "+ config.workingDir: \"/w\"",
            ]
        );
        assert!(diff_lines(&c, true)[0].starts_with("\x1b[31m-"));
    }
}

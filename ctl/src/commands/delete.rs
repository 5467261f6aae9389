//! `delete KIND NAME...` and `delete -f FILE`.

use crate::cli::DeleteArgs;
use crate::commands::tasks::wait_timeout;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::manifests;
use crate::ops;
use crate::wait::{container_gone, wait_task_showing, Goal};
use voiyd_messages::v1::Task;
use voiyd_messages::Kind;

/// `delete`.
pub async fn run(globals: &Globals, args: &DeleteArgs) -> Result<()> {
    let targets: Vec<(Kind, String)> = if !args.files.is_empty() {
        if args.kind.is_some() {
            return Err(CtlError::Usage(
                "give either -f FILE or KIND NAME..., not both".to_string(),
            ));
        }
        manifests::parse_all(&manifests::read_sources(&args.files)?, false)?
            .into_iter()
            .map(|r| (r.kind(), r.name().to_string()))
            .collect()
    } else {
        let Some(kind) = &args.kind else {
            return Err(CtlError::Usage(
                "say what to delete: `voiydctl delete KIND NAME...` or `voiydctl delete -f FILE`"
                    .to_string(),
            ));
        };
        let kind = ops::parse_kind(kind)?;
        if args.names.is_empty() {
            return Err(CtlError::Usage(format!(
                "name the {} to delete: `voiydctl delete {} NAME...`",
                kind.plural(),
                kind.singular()
            )));
        }
        args.names.iter().map(|n| (kind, n.clone())).collect()
    };
    for (kind, _) in &targets {
        ops::ensure_writable(*kind)?;
    }
    let timeout = wait_timeout(globals, &args.wait);
    let session = connection::session(globals).await?;
    let mut missing = Vec::new();
    for (kind, name) in &targets {
        // Where a task runs, read before its status goes with it.
        let node = match (kind, timeout) {
            (Kind::Task, Some(_)) => session
                .api
                .get::<Task>(name)
                .await
                .ok()
                .and_then(|t| t.status)
                .map(|s| s.node)
                .filter(|n| !n.is_empty()),
            _ => None,
        };
        if !ops::delete(&session.api, *kind, name, args.purge, args.force).await? {
            missing.push(format!("{}/{name}", kind.singular()));
            continue;
        }
        // Tasks go away only once their node has stopped them: wait for that.
        match (kind, timeout) {
            (Kind::Task, Some(t)) => {
                outln!("task/{name} deleting");
                let started = std::time::Instant::now();
                wait_task_showing(&session.api, name, Goal::Gone, 0, t, false).await?;
                if let Some(node) = node {
                    let left = t.saturating_sub(started.elapsed());
                    container_gone(session.api.nats(), &node, name, left).await?;
                }
                outln!("task/{name} deleted");
            }
            _ => outln!("{}/{name} deleted", kind.singular()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Other(format!(
            "not found: {} (nothing to delete)",
            missing.join(", ")
        )))
    }
}

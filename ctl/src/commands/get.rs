//! `get KIND [NAME...]`.

use crate::checks;
use crate::cli::{EventOutput, GetArgs, Output};
use crate::commands::{events, watch};
use crate::connection::{self, Globals, Session};
use crate::error::{CtlError, Result};
use crate::render::{render_resources, Row};
use crate::timefmt::now_secs;
use voiyd_messages::fields::FieldSelector;
use voiyd_messages::v1::{ContainerSet, Job, Lease, ListRequest, Node, Secret, Task, Volume};
use voiyd_messages::Kind;
use voiyd_nats::api::ApiError;

/// Whether a kind argument means the event stream.
pub fn is_events(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "event" | "events" | "ev"
    )
}

/// `get`.
pub async fn run(globals: &Globals, args: &GetArgs) -> Result<()> {
    if is_events(&args.kind) {
        let output = match args.output {
            Output::Json => EventOutput::Json,
            Output::Table | Output::Wide => EventOutput::Table,
            other => {
                return Err(CtlError::Usage(format!(
                    "events can be shown as table or json, not {other:?}: use -o table or -o json"
                )))
            }
        };
        if args.watch || args.watch_only {
            // `get events -w` is `events -w`.
            let follow = crate::cli::EventsArgs {
                watch: true,
                since: None,
                kind: None,
                name: None,
                output,
            };
            return events::run(globals, &follow).await;
        }
        return events::list_once(globals, None, output).await;
    }
    let kind = voiyd_messages::Kind::parse(&args.kind).ok_or_else(|| {
        CtlError::Usage(format!(
            "unknown kind `{}`: use tasks, nodes, volumes, sets, leases or events",
            args.kind
        ))
    })?;
    let watching = args.watch || args.watch_only;
    if !args.names.is_empty() && (args.selector.is_some() || args.field_selector.is_some()) {
        return Err(CtlError::Usage(
            "give names or selectors (-l, --field-selector), not both".to_string(),
        ));
    }
    if args.output_watch_events && !watching {
        return Err(CtlError::Usage(
            "--output-watch-events goes with --watch (-w) or --watch-only".to_string(),
        ));
    }
    if watching && kind == Kind::Lease {
        return Err(CtlError::Usage(
            "leases cannot be watched (they change with every heartbeat): run `voiydctl get leases` again"
                .to_string(),
        ));
    }
    let selector = args.selector.clone().unwrap_or_default();
    if !selector.is_empty() {
        checks::selector(&selector)
            .map_err(|e| CtlError::Usage(format!("invalid selector `{selector}`: {e}")))?;
    }
    let req = ListRequest {
        selector,
        field_selector: args.field_selector.clone().unwrap_or_default(),
    };
    let session = connection::session(globals).await?;
    match kind {
        Kind::Task => show::<Task>(&session, args, &req, watching).await,
        Kind::Node => show::<Node>(&session, args, &req, watching).await,
        Kind::Volume => show::<Volume>(&session, args, &req, watching).await,
        Kind::ContainerSet => show::<ContainerSet>(&session, args, &req, watching).await,
        Kind::Lease => show::<Lease>(&session, args, &req, watching).await,
        Kind::Job => show::<Job>(&session, args, &req, watching).await,
        Kind::Secret => show::<Secret>(&session, args, &req, watching).await,
    }
}

async fn show<R: Row>(
    session: &Session,
    args: &GetArgs,
    req: &ListRequest,
    watching: bool,
) -> Result<()> {
    // Refused here, before any request, with the kind's fields named.
    FieldSelector::parse(&req.field_selector, R::FIELDS)
        .map_err(|e| CtlError::Usage(e.to_string()))?;
    if watching {
        return watch::run::<R>(session, args, req.clone()).await;
    }
    let api = &session.api;
    let mut missing = Vec::new();
    let items: Vec<R> = if args.names.is_empty() {
        api.list_with::<R>(req).await?
    } else {
        let mut items = Vec::new();
        for name in &args.names {
            match api.get::<R>(name).await {
                Ok(r) => items.push(r),
                Err(ApiError::NotFound(_)) => missing.push(name.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        items
    };
    let single = args.names.len() == 1;
    if items.is_empty() && matches!(args.output, Output::Table | Output::Wide) {
        if missing.is_empty() {
            eprintln!("No {} found.", R::KIND.plural());
        }
    } else if !(items.is_empty() && single) {
        out!(
            "{}",
            render_resources(&items, args.output, now_secs(), single)
        );
    }
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(CtlError::Other(format!(
            "{} {one} not found: see `voiydctl get {}`",
            R::KIND.singular(),
            R::KIND.plural()
        ))),
        many => Err(CtlError::Other(format!(
            "{} {} not found: see `voiydctl get {}`",
            R::KIND.plural(),
            many.join(", "),
            R::KIND.plural()
        ))),
    }
}

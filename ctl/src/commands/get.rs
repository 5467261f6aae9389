//! `get KIND [NAME...]`.

use crate::checks;
use crate::cli::{EventOutput, GetArgs, Output};
use crate::commands::events;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::render::{render_resources, Row};
use crate::timefmt::now_secs;
use voiyd_messages::v1::{ContainerSet, Lease, Node, Task, Volume};
use voiyd_messages::Kind;
use voiyd_nats::api::{ApiClient, ApiError};

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
        return events::list_once(globals, None, output).await;
    }
    let kind = voiyd_messages::Kind::parse(&args.kind).ok_or_else(|| {
        CtlError::Usage(format!(
            "unknown kind `{}`: use tasks, nodes, volumes, sets, leases or events",
            args.kind
        ))
    })?;
    if !args.names.is_empty() && args.selector.is_some() {
        return Err(CtlError::Usage(
            "give names or a selector (-l), not both".to_string(),
        ));
    }
    let selector = args.selector.clone().unwrap_or_default();
    if !selector.is_empty() {
        checks::selector(&selector)
            .map_err(|e| CtlError::Usage(format!("invalid selector `{selector}`: {e}")))?;
    }
    let session = connection::session(globals).await?;
    let api = &session.api;
    match kind {
        Kind::Task => show::<Task>(api, args, &selector).await,
        Kind::Node => show::<Node>(api, args, &selector).await,
        Kind::Volume => show::<Volume>(api, args, &selector).await,
        Kind::ContainerSet => show::<ContainerSet>(api, args, &selector).await,
        Kind::Lease => show::<Lease>(api, args, &selector).await,
    }
}

async fn show<R: Row>(api: &ApiClient, args: &GetArgs, selector: &str) -> Result<()> {
    let mut missing = Vec::new();
    let items: Vec<R> = if args.names.is_empty() {
        api.list::<R>(selector).await?
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

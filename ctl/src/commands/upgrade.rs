//! `upgrade nodes`: stores a voiyd-node binary once in the `voiyd_agents` object store,
//! then asks each node agent (`voiyd.node.<node>.upgrade`) to move to it and waits until
//! the node is Ready on it, one node (or `--parallel N`) at a time, stopping at the first
//! that refuses or does not come back.

use crate::cli::UpgradeNodesArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use prost::Message;
use sha2::Digest;
use std::time::{Duration, Instant};
use voiyd_messages::v1::{Node, UpgradeReply, UpgradeRequest};
use voiyd_messages::Resource;
use voiyd_nats::api::ApiClient;
use voiyd_nats::names;

/// How long a node gets to fetch, check and swap the binary before it answers.
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// What to move nodes to.
#[derive(Clone)]
struct Target {
    digest: String,
    object: String,
    rollback: bool,
}

/// `upgrade nodes`.
pub async fn run(globals: &Globals, args: &UpgradeNodesArgs) -> Result<()> {
    let timeout = crate::timefmt::parse_duration(&args.timeout)
        .map_err(|e| CtlError::Usage(format!("--timeout: {e}")))?;
    if args.parallel == 0 {
        return Err(CtlError::Usage("--parallel must be at least 1".into()));
    }
    let session = connection::session(globals).await?;
    let api = session.api.clone();
    let nodes = chosen(&api, args).await?;
    let target = match &args.binary {
        Some(path) => {
            let (digest, object) = upload(api.nats(), path).await?;
            Target {
                digest,
                object,
                rollback: false,
            }
        }
        None => Target {
            digest: String::new(),
            object: String::new(),
            rollback: true,
        },
    };
    for batch in nodes.chunks(args.parallel) {
        let runs = batch.iter().map(|n| upgrade_one(&api, n, &target, timeout));
        for outcome in futures::future::join_all(runs).await {
            println!("{}", outcome?);
        }
    }
    Ok(())
}

/// The nodes named (all, or those matching the selector when none is), by name.
async fn chosen(api: &ApiClient, args: &UpgradeNodesArgs) -> Result<Vec<Node>> {
    let all: Vec<Node> = api.list(args.selector.as_deref().unwrap_or("")).await?;
    let mut out = Vec::new();
    if args.names.is_empty() {
        out = all;
    } else {
        for name in &args.names {
            match all.iter().find(|n| n.name() == name) {
                Some(n) => out.push(n.clone()),
                None => {
                    return Err(CtlError::Other(format!(
                        "node {name} not found: `voiydctl get nodes` lists them"
                    )))
                }
            }
        }
    }
    out.retain(|n| {
        let sim = n.status.as_ref().is_some_and(|s| s.runtime == "sim");
        if sim {
            eprintln!("{}: simulated node, skipped", n.name());
        }
        !sim
    });
    out.sort_by(|a, b| a.name().cmp(b.name()));
    if out.is_empty() {
        return Err(CtlError::Other("no node to upgrade".into()));
    }
    Ok(out)
}

/// Stores the binary (once: the object is named by its SHA-256); returns its digest and
/// object name.
async fn upload(nats: &async_nats::Client, path: &std::path::Path) -> Result<(String, String)> {
    let bytes = std::fs::read(path).map_err(|e| CtlError::io("cannot read", path, e))?;
    if bytes.is_empty() {
        return Err(CtlError::Usage(format!("{} is empty", path.display())));
    }
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let object = names::agent_object(&digest);
    let js = async_nats::jetstream::new(nats.clone());
    let store = js
        .get_object_store(names::OBJECT_STORE_AGENTS)
        .await
        .map_err(|e| {
            CtlError::Other(format!(
                "cannot open the agent store {}: {e} (a voiyd-server of this version creates it)",
                names::OBJECT_STORE_AGENTS
            ))
        })?;
    if store.info(&object).await.is_ok_and(|i| !i.deleted) {
        eprintln!("{} already stored as {object}", path.display());
    } else {
        let mut reader = bytes.as_slice();
        store
            .put(object.as_str(), &mut reader)
            .await
            .map_err(|e| CtlError::Other(format!("cannot store {}: {e}", path.display())))?;
        eprintln!(
            "stored {} ({}) as {object}",
            path.display(),
            crate::commands::top::bytes(bytes.len() as u64)
        );
    }
    Ok((digest, object))
}

/// Moves one node and waits until it is Ready on its new binary. Ok: a line for people.
async fn upgrade_one(
    api: &ApiClient,
    node: &Node,
    t: &Target,
    timeout: Duration,
) -> Result<String> {
    let name = node.name().to_string();
    let before = node
        .status
        .as_ref()
        .map(|s| s.agent_digest.clone())
        .unwrap_or_default();
    if !t.rollback && before == t.digest {
        return Ok(format!("{name}: already on {}", short(&t.digest)));
    }
    let asked = Instant::now();
    let asked_at = voiyd_messages::time::millis(&voiyd_messages::time::now());
    let reply = ask(api, &name, t).await?;
    if !reply.error.is_empty() {
        return Err(CtlError::Other(format!(
            "node {name}: {}; stopping here",
            reply.error
        )));
    }
    let from = reply.from_digest;
    let deadline = asked + timeout;
    loop {
        if let Ok(n) = api.get::<Node>(&name).await {
            let st = n.status.unwrap_or_default();
            let fresh = st
                .last_heartbeat
                .as_ref()
                .is_some_and(|h| voiyd_messages::time::millis(h) > asked_at);
            let moved = if t.rollback {
                !st.agent_digest.is_empty() && st.agent_digest != from
            } else {
                st.agent_digest == t.digest
            };
            if fresh && moved && st.phase == voiyd_messages::phase::NodePhase::Ready {
                return Ok(format!(
                    "{name}: {} -> {} in {:.1}s",
                    short(&from),
                    short(&st.agent_digest),
                    asked.elapsed().as_secs_f64()
                ));
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Not back in time: ask for the old binary back (answered only if an agent runs).
    let mut message = format!(
        "node {name} was not Ready on the new binary within {}",
        crate::timefmt::format_duration(timeout)
    );
    if !t.rollback {
        let back = Target {
            digest: String::new(),
            object: String::new(),
            rollback: true,
        };
        match ask(api, &name, &back).await {
            Ok(r) if r.error.is_empty() => message.push_str("; it was put back on its old binary"),
            _ => message.push_str(&format!(
                "; it did not answer a rollback: run `voiydctl upgrade nodes {name} --rollback` once it is reachable"
            )),
        }
    }
    Err(CtlError::Other(format!("{message}; stopping here")))
}

async fn ask(api: &ApiClient, node: &str, t: &Target) -> Result<UpgradeReply> {
    let req = UpgradeRequest {
        digest: t.digest.clone(),
        object: t.object.clone(),
        rollback: t.rollback,
    };
    let call = api
        .nats()
        .request(names::node::upgrade(node), req.encode_to_vec().into());
    let msg = tokio::time::timeout(ANSWER_WITHIN, call)
        .await
        .map_err(|_| CtlError::Other(format!("node {node} did not answer within {ANSWER_WITHIN:?}")))?
        .map_err(|e| {
            CtlError::Other(format!(
                "node {node} did not answer the upgrade request ({e}): is it connected, and is its agent new enough to upgrade?"
            ))
        })?;
    UpgradeReply::decode(msg.payload)
        .map_err(|e| CtlError::Other(format!("node {node} sent an undecodable reply: {e}")))
}

/// The first 12 hex digits of a digest, or `-`.
fn short(digest: &str) -> String {
    if digest.is_empty() {
        "-".into()
    } else {
        digest.chars().take(12).collect()
    }
}

//! Start-up and shutdown of one server process.

use crate::api::{self, Ctx};
use crate::events::Events;
use crate::status::{self, StatusKv};
use crate::{reports, scheduler};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use voiyd_messages::v1::{Node, NodeStatus};
use voiyd_nats::bootstrap::{self, BootstrapOptions};
use voiyd_nats::connect::{self, ConnectOptions};
use voiyd_nats::embedded::{self, EmbeddedConfig, EmbeddedNats};
use voiyd_nats::names;

/// Everything a server process is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the embedded NATS keeps its config and JetStream store.
    pub data_dir: PathBuf,
    /// Client address of the embedded NATS.
    pub nats_listen: SocketAddr,
    /// External NATS: when set, no embedded server is started.
    pub nats: Option<ConnectOptions>,
    /// nats-server binary for embedded mode.
    pub nats_server_bin: Option<PathBuf>,
    /// Bucket and stream options.
    pub bootstrap: BootstrapOptions,
    /// A node missing heartbeats this long is NotReady.
    pub node_timeout: Duration,
    /// This server's id in events.
    pub id: String,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    connect::install_crypto_provider();
    let mut embedded: Option<EmbeddedNats> = None;
    let opts = match &cfg.nats {
        Some(o) => o.clone(),
        None => {
            let binary = embedded::find_binary(cfg.nats_server_bin.as_deref())?;
            let server = EmbeddedNats::start(EmbeddedConfig {
                binary,
                data_dir: cfg.data_dir.clone(),
                listen: cfg.nats_listen,
                monitor: None,
                server_name: format!(
                    "voiyd-{}",
                    cfg.id.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                ),
                extra_config: String::new(),
            })
            .await?;
            tracing::info!(url = %server.client_url(), pid = ?server.pid(), "embedded NATS ready");
            let mut o = ConnectOptions::from_urls(&server.client_url());
            o.retry_on_initial_connect = true;
            embedded = Some(server);
            o
        }
    };
    let mut opts = opts;
    opts.name = format!("voiyd-server {}", cfg.id);
    let client = connect::connect(&opts).await?;
    let js = async_nats::jetstream::new(client.clone());
    let cluster = bootstrap::bootstrap(&js, &cfg.bootstrap).await?;
    let status_kv = js.get_key_value(names::BUCKET_STATUS).await?;
    let work = js.get_key_value(names::BUCKET_WORK).await?;
    let ctx = Ctx {
        cluster,
        events: Events::new(js.clone(), cfg.id.clone()),
        status: StatusKv(status_kv),
        work,
    };
    tracing::info!(id = %cfg.id, "voiyd-server started");

    let api_task = tokio::spawn(api::serve(client.clone(), ctx.clone()));
    let reports_task = tokio::spawn(reports::run(client.clone(), ctx.clone()));
    let upkeep_task = tokio::spawn(upkeep(ctx.clone(), cfg.node_timeout));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        r = api_task => Err(anyhow::anyhow!("API stopped: {r:?}")),
        r = reports_task => Err(anyhow::anyhow!("report handling stopped: {r:?}")),
    };
    upkeep_task.abort();
    tracing::info!("shutting down");
    let _ = client.drain().await;
    if let Some(server) = embedded {
        server.stop().await;
    }
    outcome
}

/// Periodic level-triggered repairs: nodes whose heartbeats stopped become NotReady,
/// and tasks still waiting for a node are placed.
async fn upkeep(ctx: Ctx, node_timeout: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = mark_lost_nodes(&ctx, node_timeout).await {
            tracing::warn!(error = %e.message, "node check failed");
        }
        if let Err(e) = scheduler::place_pending(&ctx).await {
            tracing::warn!(error = %e.message, "placing pending tasks failed");
        }
    }
}

async fn mark_lost_nodes(ctx: &Ctx, timeout: Duration) -> Result<(), api::Failure> {
    let now = crate::now().seconds;
    for node in status::read_all::<Node>(&ctx.status).await?.into_keys() {
        let Some(v) = status::read_versioned::<NodeStatus>(&ctx.status.0, "node", &node).await?
        else {
            continue;
        };
        let last = v
            .status
            .last_heartbeat
            .as_ref()
            .map(|t| t.seconds)
            .unwrap_or(0);
        if v.status.phase == "Ready" && now - last > timeout.as_secs() as i64 {
            let mut st = v.status.clone();
            st.phase = "NotReady".into();
            if status::write(&ctx.status.0, "node", &node, &st, v.revision)
                .await?
                .is_some()
            {
                tracing::warn!(%node, "node missed its heartbeats: NotReady");
                ctx.events
                    .publish(
                        "node",
                        &node,
                        "notready",
                        "NodeLost",
                        format!("no heartbeat for {}s", now - last),
                        None,
                    )
                    .await;
            }
        }
    }
    Ok(())
}

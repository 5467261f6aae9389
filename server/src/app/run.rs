//! Start-up and shutdown of one server process.

use crate::api;
use crate::context::{Ctx, CtxParts};
use crate::controllers::{failover, placer, upkeep};
use crate::ingest::reports;
use crate::store::events::Events;
use crate::store::status::StatusKv;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
    /// Embedded mode: this server's NATS is one node of a cluster of voiyd-servers.
    pub nats_cluster: Option<voiyd_nats::EmbeddedCluster>,
    /// Embedded mode: when JetStream fsyncs.
    pub nats_sync: voiyd_nats::SyncPolicy,
    /// Embedded mode: the nats-server's name (stable across restarts).
    pub nats_server_name: String,
    /// Bucket and stream options.
    pub bootstrap: BootstrapOptions,
    /// A node missing heartbeats this long is NotReady.
    pub node_timeout: Duration,
    /// Time between stale-work sweeps ([`crate::controllers::sweep`]).
    pub work_sweep_interval: Duration,
    /// This server's id in events.
    pub id: String,
    /// Network node container subnets are taken from, e.g. `10.69.0.0/16`.
    pub cluster_cidr: String,
    /// Prefix length of each node's subnet (24: 254 tasks per node).
    pub node_subnet_prefix: u8,
    /// Network sets' virtual IPs are taken from, e.g. `10.68.0.0/16`.
    pub vip_cidr: String,
    /// Placement strategy for tasks that do not choose one.
    pub placement: crate::schedule::placement::Strategy,
    /// TLS, NATS identities and admission policy.
    pub security: Security,
    /// The secret every server of the cluster derives its NATS identities from (`--auth`).
    pub auth_secret: Option<String>,
    /// Restore this backup before creating the buckets.
    pub restore_from: Option<PathBuf>,
    /// Address of Prometheus `/metrics`; none = off.
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the HTTP API; none = off.
    pub http_addr: Option<SocketAddr>,
    /// The keys secrets are encrypted with (created with one key when missing).
    pub secrets_key_file: PathBuf,
}

/// Security settings of a server (see docs/security.md).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Embedded NATS serves TLS with this certificate (and the server verifies it).
    pub tls: Option<voiyd_nats::EmbeddedTls>,
    /// Embedded NATS enforces per-identity authorization (server, admins, nodes, join).
    pub auth: bool,
    /// Cluster-wide admission policy.
    pub policy: crate::security::policy::Policy,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    connect::install_crypto_provider();
    // Address ranges are checked before anything connects: a bad flag fails at once.
    let cluster_cidr: crate::store::subnets::Cidr = cfg
        .cluster_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    let vip_cidr: crate::store::subnets::Cidr = cfg
        .vip_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--vip-cidr: {e}"))?;
    crate::store::subnets::check_node_prefix(cluster_cidr, cfg.node_subnet_prefix)
        .map_err(anyhow::Error::msg)?;
    crate::store::subnets::check_vip_range(vip_cidr, cluster_cidr).map_err(anyhow::Error::msg)?;
    let mut embedded: Option<EmbeddedNats> = None;
    let auth: Option<Arc<crate::security::identities::AuthManager>> = if cfg.security.auth {
        let secret = cfg
            .auth_secret
            .clone()
            .or_else(|| cfg.nats_cluster.as_ref().and_then(|c| c.secret.clone()));
        if secret.is_none() && (cfg.nats_cluster.is_some() || cfg.nats.is_some()) {
            anyhow::bail!("--auth with several servers needs the same --auth-secret on each (or --nats-cluster-secret): every server derives the cluster's NATS identities from it");
        }
        let manager =
            crate::security::identities::AuthManager::prepare(&cfg.data_dir, secret.as_deref())?;
        tracing::info!(admin_seed = %manager.admin_seed.display(), "NATS authorization on: give voiydctl the admin seed (--nkey)");
        Some(Arc::new(manager))
    } else {
        None
    };
    let opts = match &cfg.nats {
        Some(o) => {
            if cfg.security.tls.is_some() {
                anyhow::bail!("--tls-cert configures the embedded NATS: with --nats-url, configure TLS on that NATS and pass --nats-ca (and --nats-cert/--nats-key)");
            }
            let mut o = o.clone();
            if let Some(a) = &auth {
                if o.creds_file.is_none() && o.nkey_seed.is_none() && o.user.is_none() {
                    o.nkey_seed = Some(a.server_seed_text());
                }
            }
            o
        }
        None => {
            let binary = embedded::find_binary(cfg.nats_server_bin.as_deref())?;
            let mut extra_config = String::new();
            if let Some(cluster) = &cfg.nats_cluster {
                extra_config.push_str(&cluster.render());
            }
            if let Some(tls) = &cfg.security.tls {
                extra_config.push_str(&tls.render());
            }
            if let Some(a) = &auth {
                extra_config.push_str(&a.keys().render_nats_config());
            }
            let server_name = cfg.nats_server_name.clone();
            let server = EmbeddedNats::start(EmbeddedConfig {
                extra_config,
                sync: cfg.nats_sync,
                ..EmbeddedConfig::new(binary, cfg.data_dir.clone(), cfg.nats_listen, server_name)
            })
            .await?;
            tracing::info!(url = %server.client_url(), pid = ?server.pid(), "embedded NATS ready");
            let mut o = ConnectOptions::from_urls(&server.client_url());
            o.retry_on_initial_connect = true;
            if let Some(tls) = &cfg.security.tls {
                // Verify our own server like any client does: against the CA that
                // signed it, or (self-signed) the certificate itself.
                o.tls_ca = Some(tls.ca.clone().unwrap_or_else(|| tls.cert.clone()));
                o.tls_required = true;
                if tls.verify_clients {
                    o.tls_cert = Some(tls.cert.clone());
                    o.tls_key = Some(tls.key.clone());
                }
            }
            o.nkey_seed = auth.as_ref().map(|a| a.server_seed_text());
            embedded = Some(server);
            o
        }
    };
    let mut opts = opts;
    opts.name = format!("voiyd-server {}", cfg.id);
    let (client, link) = connect::connect_linked(&opts).await?;
    let js = async_nats::jetstream::new(client.clone());
    if let Some(dir) = &cfg.restore_from {
        let n = crate::app::backup::restore(&client, dir).await?;
        tracing::info!(streams = n, from = %dir.display(), "backup restored");
    }
    let cluster = bootstrap::bootstrap(&js, &cfg.bootstrap).await?;
    if let (Some(nats), Some(_)) = (&embedded, &cfg.nats_cluster) {
        catch_up(nats, &js).await;
    }
    // Bootstrap opened every bucket (riding out a cluster still electing its leader).
    let status_kv = cluster.status.inner().clone();
    let work = cluster.work.inner().clone();
    let subnets = crate::store::subnets::Subnets::new(
        cluster.subnets.clone(),
        cluster_cidr,
        cfg.node_subnet_prefix,
    )
    .map_err(anyhow::Error::msg)?;
    let vips =
        crate::store::subnets::Subnets::addresses(cluster.subnets.clone(), vip_cidr, cluster_cidr)
            .map_err(anyhow::Error::msg)?;
    failover::set_lease_ttl(cfg.bootstrap.lease_ttl);
    let view = crate::cache::view::View::start(
        crate::cache::view::Buckets {
            tasks: cluster.tasks.kv().raw().inner().clone(),
            nodes: cluster.nodes.kv().raw().inner().clone(),
            status: status_kv.clone(),
            volumes: cluster.volumes.kv().raw().inner().clone(),
        },
        cfg.placement,
        link.clone(),
    );
    let ctx = Ctx::new(CtxParts {
        client: client.clone(),
        subnets,
        vips,
        set_networks: Default::default(),
        view,
        cluster,
        events: Events::new(js.clone(), cfg.id.clone()),
        status: StatusKv(status_kv),
        work,
        policy: cfg.security.policy,
        keyring: Arc::new(
            crate::security::keyring::Keyring::load_or_create(&cfg.secrets_key_file)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        auth: auth.clone(),
    });
    let callout_task = match &auth {
        Some(a) => {
            // Answer authorization requests first: every other client waits on them.
            let task = tokio::spawn(crate::security::callout::serve(
                client.clone(),
                js.clone(),
                a.clone(),
            ));
            a.register_local_admin(&js).await.map_err(|f| {
                anyhow::anyhow!("cannot register the local admin key: {}", f.message())
            })?;
            let mut sys = opts.clone();
            sys.name = format!("voiyd-server {} system", cfg.id);
            sys.creds_file = None;
            sys.user = None;
            sys.password = None;
            sys.nkey_seed = Some(a.system_seed_text());
            match connect::connect(&sys).await {
                Ok(c) => a.attach_system(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no system-account connection: revoked nodes are not disconnected until their grant expires (configure the system account, docs/security.md)")
                }
            }
            Some(task)
        }
        None => None,
    };
    tracing::info!(id = %cfg.id, "voiyd-server started");

    let api_task = tokio::spawn(api::serve(client.clone(), ctx.clone(), cfg.id.clone()));
    let reports_task = tokio::spawn(reports::run(client.clone(), ctx.clone()));
    let upkeep_task = tokio::spawn(upkeep::run(
        ctx.clone(),
        cfg.node_timeout,
        cfg.work_sweep_interval,
        link.clone(),
    ));
    let node_events_task =
        tokio::spawn(crate::ingest::node_events::run(client.clone(), ctx.clone()));
    let repair_task = tokio::spawn(placer::repair_loop(ctx.clone()));
    let workloads_task = tokio::spawn(upkeep::run_workloads(ctx.clone(), link.clone()));
    let names_task = tokio::spawn(crate::controllers::names::run(ctx.clone(), link.clone()));
    let mesh_task = tokio::spawn(crate::controllers::mesh::run(ctx.clone(), link.clone()));
    let services_task = tokio::spawn(crate::controllers::services::run(ctx.clone(), link.clone()));
    let secrets_task = tokio::spawn(crate::service::secrets::serve_nodes(ctx.clone()));
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match crate::service::secrets::reencrypt(&ctx).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(secrets = n, "re-encrypted secrets under the newest key"),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "cannot re-encrypt secrets under the newest key")
                }
            }
        });
    }
    let collect: voiyd_metrics::Collector = {
        let (c, x) = (client.clone(), ctx.clone());
        Arc::new(move || {
            let (c, x) = (c.clone(), x.clone());
            Box::pin(async move { crate::app::scrape::collect(&x, &c).await })
        })
    };
    let _metrics = match cfg.metrics_addr {
        Some(addr) => Some(voiyd_metrics::serve(addr, collect.clone()).await?.1),
        None => None,
    };
    let _http = match cfg.http_addr {
        Some(addr) => {
            let state = crate::http::HttpState {
                ctx: ctx.clone(),
                link: link.clone(),
            };
            // With TLS for NATS, HTTPS with the same certificate.
            let tls = cfg.security.tls.as_ref().map(|t| crate::http::HttpsFiles {
                cert: t.cert.as_path(),
                key: t.key.as_path(),
                ca: t.ca.as_deref(),
            });
            Some(crate::http::serve(addr, state, collect, tls).await?.1)
        }
        None => None,
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        r = api_task => Err(anyhow::anyhow!("API stopped: {r:?}")),
        r = reports_task => Err(anyhow::anyhow!("report handling stopped: {r:?}")),
    };
    upkeep_task.abort();
    node_events_task.abort();
    if let Some(t) = &callout_task {
        t.abort();
    }
    repair_task.abort();
    workloads_task.abort();
    names_task.abort();
    mesh_task.abort();
    services_task.abort();
    secrets_task.abort();
    for t in [&_metrics, &_http].into_iter().flatten() {
        t.abort();
    }
    tracing::info!("shutting down");
    let _ = client.drain().await;
    drop(ctx);
    drop(auth);
    if let Some(server) = embedded {
        server.stop().await;
    }
    outcome
}

/// Waits until this server's NATS node holds everything every stream's leader held
/// when the wait began. A node that (re)joins a cluster would otherwise answer reads
/// from replicas still behind (a restarted server listed the tasks of before its
/// restart), and nats-server's `/healthz` calls such replicas current too early.
async fn catch_up(nats: &EmbeddedNats, js: &async_nats::jetstream::Context) {
    let mut streams: Vec<String> = names::ALL_BUCKETS
        .iter()
        .map(|b| format!("KV_{b}"))
        .collect();
    streams.push(names::STREAM_EVENTS.to_string());
    let mut target = std::collections::HashMap::new();
    for name in &streams {
        let last = match js.get_stream(name).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        target.insert(name.clone(), last);
    }
    let mut said = false;
    loop {
        let local = nats.local_stream_seqs().await.unwrap_or_default();
        let behind: Vec<&String> = target
            .iter()
            .filter(|(name, last)| local.get(*name).copied().unwrap_or(0) < **last)
            .map(|(name, _)| name)
            .collect();
        if behind.is_empty() && nats.caught_up().await {
            break;
        }
        if !said {
            tracing::warn!(
                ?behind,
                "waiting for this NATS node to catch up with the cluster"
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if said {
        tracing::info!("NATS node caught up");
    }
}

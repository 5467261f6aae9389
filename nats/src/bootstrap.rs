//! Creating (or binding to) every bucket and stream voiyd uses.
//!
//! `bootstrap` is idempotent and safe to run from several servers at once: each bucket
//! and stream is created or updated to the wanted config. `open` only binds, for
//! programs (nodes, voiydctl) that must never create shared state.

use crate::names;
use crate::store::{RawKv, Store};
use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;
use voiyd_messages::v1::{ContainerSet, Job, Node, SealedSecret, Task, Volume};

/// Attempts per bucket or stream: a concurrent creator can make one attempt fail.
const ATTEMPTS: usize = 3;

/// Sizes and limits of what bootstrap creates.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Replicas of every bucket and stream (1 on a single server; 3 or 5 in a cluster).
    pub replicas: usize,
    /// How long events are kept.
    pub events_max_age: Duration,
    /// Most events kept.
    pub events_max_msgs: i64,
    /// Most bytes of events kept.
    pub events_max_bytes: i64,
    /// How long stored task output is kept.
    pub logs_max_age: Duration,
    /// Most bytes of stored task output, all tasks together (the oldest goes first).
    pub logs_max_bytes: i64,
    /// Most batches kept per task and node (a batch is at most 32 KiB of lines, see
    /// `docs/logs.md`); older batches of that task go first.
    pub logs_per_task: i64,
    /// Lifetime of a lease that is not renewed.
    pub lease_ttl: Duration,
    /// Most consumers on each bucket's and the events stream. Every node keeps a
    /// consumer on its work, so this bounds the cluster size; nats-server 2.15 would
    /// otherwise cap each stream at 1,000 (and treats 0 or -1 as "use that default").
    pub max_consumers: i32,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            events_max_msgs: 1_000_000,
            events_max_bytes: 1 << 30,
            logs_max_age: Duration::from_secs(7 * 24 * 3600),
            logs_max_bytes: 1 << 30,
            logs_per_task: 1_000,
            lease_ttl: Duration::from_secs(10),
            max_consumers: 100_000,
        }
    }
}

/// Why the buckets or streams could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Creating or updating failed.
    #[error("cannot create or update {what} {name}: {reason}: check that NATS has JetStream enabled and that these credentials may manage streams")]
    Create {
        /// "bucket" or "stream".
        what: &'static str,
        /// Its name.
        name: String,
        /// What NATS said.
        reason: String,
    },
    /// A bucket or stream that `open` needs does not exist.
    #[error("{what} {name} does not exist: start voiyd-server against this NATS first (it creates the buckets)")]
    Missing {
        /// "bucket" or "stream".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Binding failed for another reason.
    #[error("cannot open {what} {name}: {reason}: check the NATS connection and these credentials' permissions")]
    Open {
        /// "bucket" or "stream".
        what: &'static str,
        /// Its name.
        name: String,
        /// What NATS said.
        reason: String,
    },
}

/// Handles on everything voiyd keeps in JetStream.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The JetStream context.
    pub js: jetstream::Context,
    /// Task specs.
    pub tasks: Store<Task>,
    /// Node records.
    pub nodes: Store<Node>,
    /// Volume specs.
    pub volumes: Store<Volume>,
    /// Container set specs.
    pub sets: Store<ContainerSet>,
    /// Job and cron job specs.
    pub jobs: Store<Job>,
    /// Observed status, keyed `<kind>.<name>`; values are the kind's status message.
    pub status: RawKv,
    /// Per-node work, keyed `<node>.<task>`.
    pub work: RawKv,
    /// The TTL bucket of leases (create = acquire, update = renew).
    pub leases: kv::Store,
    /// Container subnet claims.
    pub subnets: kv::Store,
    /// Cluster names (what nodes answer DNS from).
    pub names: kv::Store,
    /// The node mesh (peers by node).
    pub mesh: kv::Store,
    /// Set services (virtual IPs, published ports, isolation), by set.
    pub services: kv::Store,
    /// Secrets, encrypted by the servers ([`SealedSecret`] records).
    pub secrets: crate::store::TypedKv<SealedSecret>,
    /// The events stream.
    pub events: stream::Stream,
}

fn bucket_config(name: &str, opts: &BootstrapOptions) -> kv::Config {
    let mut config = kv::Config {
        bucket: name.to_string(),
        description: format!("voiyd {name}"),
        history: 1,
        num_replicas: opts.replicas.max(1),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    if name == names::BUCKET_LEASES {
        // A lease is alive while it is renewed: every write resets its age. Limit
        // markers make expiry visible to watchers as a purge (needs nats-server 2.11).
        let ttl = opts.lease_ttl.max(Duration::from_secs(1));
        config.max_age = ttl;
        config.limit_markers = Some(ttl);
    }
    config
}

fn events_config(opts: &BootstrapOptions) -> stream::Config {
    stream::Config {
        name: names::STREAM_EVENTS.to_string(),
        description: Some("voiyd events".to_string()),
        subjects: vec![names::EVENTS_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: opts.events_max_age,
        max_messages: opts.events_max_msgs,
        max_bytes: opts.events_max_bytes,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas.max(1),
        max_consumers: opts.max_consumers,
        ..Default::default()
    }
}

fn logs_config(opts: &BootstrapOptions) -> stream::Config {
    stream::Config {
        name: names::STREAM_LOGS.to_string(),
        description: Some("voiyd task output".to_string()),
        subjects: vec![names::LOGS_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: opts.logs_max_age,
        max_bytes: opts.logs_max_bytes,
        max_messages_per_subject: opts.logs_per_task,
        // A batch is at most 32 KiB of lines plus one 16 KiB line and framing.
        max_message_size: 256 * 1024,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas.max(1),
        max_consumers: opts.max_consumers,
        ..Default::default()
    }
}

/// Creates or updates every bucket and the events and logs streams, then opens them.
pub async fn bootstrap(
    js: &jetstream::Context,
    opts: &BootstrapOptions,
) -> Result<Cluster, BootstrapError> {
    // On the heap: the state of every create and open is large, and callers (tests
    // join several) keep it on their stack otherwise.
    Box::pin(bootstrap_all(js, opts)).await
}

async fn bootstrap_all(
    js: &jetstream::Context,
    opts: &BootstrapOptions,
) -> Result<Cluster, BootstrapError> {
    // Servers of a new cluster create the same streams at once; JetStream may then
    // answer only one of the identical creates, so the others must retry soon (and
    // find the stream) rather than wait out the default 10 s.
    let mut fast = js.clone();
    fast.set_timeout(Duration::from_secs(2));
    let outer = js;
    let js = &fast;
    for &bucket in names::ALL_BUCKETS {
        let config = bucket_config(bucket, opts);
        retry("bucket", bucket, || {
            js.create_or_update_key_value(config.clone())
        })
        .await?;
        let stream = format!("KV_{bucket}");
        retry("bucket", bucket, || {
            raise_consumer_limit(js, &stream, opts.max_consumers)
        })
        .await?;
    }
    retry("object store", names::OBJECT_STORE_AGENTS, || {
        agents_store(js, opts.replicas.max(1))
    })
    .await?;
    let config = events_config(opts);
    retry("stream", names::STREAM_EVENTS, || {
        js.create_or_update_stream(config.clone())
    })
    .await?;
    let config = logs_config(opts);
    retry("stream", names::STREAM_LOGS, || {
        js.create_or_update_stream(config.clone())
    })
    .await?;
    retry("bucket", "every bucket", || open(outer)).await
}

/// Creates the object store of agent binaries unless it exists.
async fn agents_store(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    if js
        .get_object_store(names::OBJECT_STORE_AGENTS)
        .await
        .is_ok()
    {
        return Ok(());
    }
    js.create_object_store(jetstream::object_store::Config {
        bucket: names::OBJECT_STORE_AGENTS.to_string(),
        description: Some("voiyd node agent binaries".to_string()),
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// KV bucket configs cannot carry a consumer limit, so it is set on the bucket's
/// stream afterwards (only when it differs: an update is a JetStream API write).
async fn raise_consumer_limit(
    js: &jetstream::Context,
    stream: &str,
    max_consumers: i32,
) -> Result<(), String> {
    let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let mut config = s.info().await.map_err(|e| e.to_string())?.config.clone();
    if config.max_consumers == max_consumers {
        return Ok(());
    }
    config.max_consumers = max_consumers;
    js.update_stream(config).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Two creators racing can both see "not found" and one of the creates can then fail;
/// the next attempt sees the bucket and updates it instead.
async fn retry<T, E, F, Fut>(what: &'static str, name: &str, mut op: F) -> Result<T, BootstrapError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => {
                if attempt > ATTEMPTS {
                    tracing::info!(what, name, "JetStream is available: bootstrap goes on");
                }
                return Ok(v);
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::debug!(what, name, attempt, error = %e, "create or update failed; retrying");
                attempt += 1;
            }
            Err(e) if is_transient(&e.to_string()) => {
                // A cluster that has not elected a JetStream leader yet (its other
                // servers are still starting), or lacks the peers for the replicas: wait,
                // saying why once rather than on every attempt.
                if attempt == ATTEMPTS {
                    tracing::warn!(what, name, error = %e, "JetStream is not ready (a NATS cluster needs a majority of its servers up, and as many as --replicas): waiting");
                } else {
                    tracing::debug!(what, name, error = %e, "JetStream still not ready");
                }
                attempt += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(BootstrapError::Create {
                    what,
                    name: name.to_string(),
                    reason: e.to_string().replace(['\r', '\n'], " "),
                })
            }
        }
    }
}

/// Whether a JetStream API error means "not yet" rather than "never": no leader, no
/// quorum, not enough peers up for the replicas, or no answer in time.
fn is_transient(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "temporarily unavailable",
        "insufficient resources",
        "no suitable peers",
        "timed out",
        "timeout",
        "no responders",
        "not available",
        "no jetstream",
    ]
    .iter()
    .any(|needle| e.contains(needle))
}

/// Binds to the existing buckets and stream; fails with [`BootstrapError::Missing`]
/// if bootstrap has not run against this NATS.
pub async fn open(js: &jetstream::Context) -> Result<Cluster, BootstrapError> {
    Box::pin(open_all(js)).await
}

async fn open_all(js: &jetstream::Context) -> Result<Cluster, BootstrapError> {
    let bucket = |name: &'static str| async move {
        match js.get_key_value(name).await {
            Ok(kv) => Ok(kv),
            Err(e) => Err(open_error("bucket", name, &e, stream_missing(&e))),
        }
    };
    let events = match js.get_stream(names::STREAM_EVENTS).await {
        Ok(s) => s,
        Err(e) => {
            let missing = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            return Err(open_error("stream", names::STREAM_EVENTS, &e, missing));
        }
    };
    Ok(Cluster {
        js: js.clone(),
        tasks: Store::new(bucket(names::BUCKET_TASKS).await?),
        nodes: Store::new(bucket(names::BUCKET_NODES).await?),
        volumes: Store::new(bucket(names::BUCKET_VOLUMES).await?),
        sets: Store::new(bucket(names::BUCKET_SETS).await?),
        jobs: Store::new(bucket(names::BUCKET_JOBS).await?),
        status: RawKv::new(bucket(names::BUCKET_STATUS).await?, "status"),
        work: RawKv::new(bucket(names::BUCKET_WORK).await?, "work item"),
        leases: bucket(names::BUCKET_LEASES).await?,
        subnets: bucket(names::BUCKET_SUBNETS).await?,
        names: bucket(names::BUCKET_NAMES).await?,
        mesh: bucket(names::BUCKET_MESH).await?,
        services: bucket(names::BUCKET_SERVICES).await?,
        secrets: RawKv::new(bucket(names::BUCKET_SECRETS).await?, "secret").typed(),
        events,
    })
}

/// `get_key_value` wraps the stream lookup error; dig for "stream not found".
fn stream_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(get) = err.downcast_ref::<jetstream::context::GetStreamError>() {
            if let jetstream::context::GetStreamErrorKind::JetStream(j) = get.kind() {
                return j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND;
            }
        }
        cur = err.source();
    }
    false
}

fn open_error(
    what: &'static str,
    name: &str,
    e: &dyn std::fmt::Display,
    missing: bool,
) -> BootstrapError {
    if missing {
        BootstrapError::Missing {
            what,
            name: name.to_string(),
        }
    } else {
        BootstrapError::Open {
            what,
            name: name.to_string(),
            reason: e.to_string().replace(['\r', '\n'], " "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_start_up_errors_are_waited_out() {
        assert!(is_transient(
            "JetStream system temporarily unavailable (10008)"
        ));
        assert!(is_transient("insufficient resources (10023)"));
        assert!(is_transient("request timed out"));
        assert!(!is_transient("bucket name is invalid"));
    }
}

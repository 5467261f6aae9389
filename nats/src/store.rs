//! Stores over JetStream KV: raw bytes ([`RawKv`]), one protobuf message type
//! ([`TypedKv`]) and one resource kind keyed by name ([`Store`]).
//!
//! Values are prost-encoded protobuf, the documented wire format. Every write returns
//! the KV revision, the optimistic-concurrency token: `update` and `delete` with an
//! expected revision fail with [`StoreError::Conflict`] when someone wrote in between.

use crate::api::ErrorCode;
use crate::names;
use async_nats::jetstream::consumer::{pull, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::marker::PhantomData;
use voiyd_messages::Resource;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Nothing is stored under the name.
    #[error("{kind} {name} does not exist: check the name")]
    NotFound {
        /// What was looked for ("task", or a bucket's label).
        kind: String,
        /// Its name (or key).
        name: String,
    },
    /// A create found the name taken.
    #[error("{kind} {name} already exists: choose another name or update the existing one")]
    AlreadyExists {
        /// What was created.
        kind: String,
        /// Its name (or key).
        name: String,
    },
    /// A write carried a revision that is no longer current.
    #[error("{kind} {name} was changed by someone else (expected version {expected}): get it again and retry")]
    Conflict {
        /// What was written.
        kind: String,
        /// Its name (or key).
        name: String,
        /// The revision the writer expected.
        expected: u64,
    },
    /// A stored value is not a valid message of the expected type.
    #[error("stored value at {key} cannot be decoded ({reason}): it was written by an incompatible voiyd version")]
    Decode {
        /// The KV key.
        key: String,
        /// The decoder's message.
        reason: String,
    },
    /// NATS failed (unreachable, timed out, invalid key, …).
    #[error("NATS {op} failed: {reason}")]
    Nats {
        /// The operation ("get", "update", "watch", …).
        op: &'static str,
        /// What NATS said.
        reason: String,
    },
}

impl StoreError {
    /// The API error code this error maps to.
    pub fn api_code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::Decode { .. } => ErrorCode::Internal,
            StoreError::Nats { .. } => ErrorCode::Unavailable,
        }
    }

    pub(crate) fn nats(op: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Nats {
            op,
            reason: e.to_string().replace(['\r', '\n'], " "),
        }
    }

    /// Replaces the name in NotFound / AlreadyExists / Conflict (keys become names).
    fn with_name(self, new: &str) -> StoreError {
        match self {
            StoreError::NotFound { kind, .. } => StoreError::NotFound {
                kind,
                name: new.to_string(),
            },
            StoreError::AlreadyExists { kind, .. } => StoreError::AlreadyExists {
                kind,
                name: new.to_string(),
            },
            StoreError::Conflict { kind, expected, .. } => StoreError::Conflict {
                kind,
                name: new.to_string(),
                expected,
            },
            other => other,
        }
    }
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct KvChange<V> {
    /// The KV key.
    pub key: String,
    /// The new value; `None` when the key was deleted, purged or expired.
    pub value: Option<V>,
    /// The KV revision of the change.
    pub revision: u64,
}

/// A KV bucket holding raw bytes. `Cluster.status` and `Cluster.work` are `RawKv`
/// because the status bucket holds a different message type per kind; use
/// [`RawKv::typed`] for a typed view of keys holding one type.
#[derive(Clone, Debug)]
pub struct RawKv {
    kv: kv::Store,
    kind: String,
}

impl RawKv {
    /// Wraps a bucket. `kind` names its values in errors ("status", "work item").
    pub fn new(kv: kv::Store, kind: impl Into<String>) -> Self {
        Self {
            kv,
            kind: kind.into(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    /// The async-nats bucket handle, for operations not wrapped here.
    pub fn inner(&self) -> &kv::Store {
        &self.kv
    }

    /// A typed view of this bucket.
    pub fn typed<M: prost::Message + Default + 'static>(&self) -> TypedKv<M> {
        TypedKv {
            raw: self.clone(),
            _m: PhantomData,
        }
    }

    /// The value and revision under `key`; `None` if absent or deleted.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| StoreError::nats("get", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    /// Writes `value` whatever is there; returns the new revision.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.kv
            .put(key, value)
            .await
            .map_err(|e| StoreError::nats("put", e))
    }

    /// Writes `value` only if `key` is absent (or deleted).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.kv
            .create(key, value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    kind: self.kind.clone(),
                    name: key.to_string(),
                },
                _ => StoreError::nats("create", e),
            })
    }

    /// Writes `value` only if the current revision is `expected`.
    pub async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, StoreError> {
        match self.kv.update(key, value, expected).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(self.stale(key, expected).await)
            }
            Err(e) => Err(StoreError::nats("update", e)),
        }
    }

    /// Deletes `key`: only at revision `expected` if given. Absent keys are NotFound.
    pub async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), StoreError> {
        let Some(expected) = expected else {
            if self.get(key).await?.is_none() {
                return Err(self.not_found(key));
            }
            return self
                .kv
                .delete(key)
                .await
                .map_err(|e| StoreError::nats("delete", e));
        };
        match self.kv.delete_expect_revision(key, Some(expected)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                Err(self.stale(key, expected).await)
            }
            Err(e) => Err(StoreError::nats("delete", e)),
        }
    }

    /// After a wrong-revision refusal: NotFound if the key is gone, else Conflict.
    async fn stale(&self, key: &str, expected: u64) -> StoreError {
        match self.get(key).await {
            Ok(None) => self.not_found(key),
            Ok(Some(_)) => StoreError::Conflict {
                kind: self.kind.clone(),
                name: key.to_string(),
                expected,
            },
            Err(e) => e,
        }
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            kind: self.kind.clone(),
            name: key.to_string(),
        }
    }

    /// The bucket's latest revision (its stream's last sequence): every change at or
    /// below it is visible to reads that start afterwards.
    pub async fn last_revision(&self) -> Result<u64, StoreError> {
        Ok(self.revision_and_size().await?.0)
    }

    /// The bucket's last revision and how many messages it holds (one per live key,
    /// plus delete markers): one stream info.
    pub async fn revision_and_size(&self) -> Result<(u64, u64), StoreError> {
        let mut stream = self.kv.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| StoreError::nats("stream info", e))?;
        Ok((info.state.last_sequence, info.state.messages))
    }

    /// Keys matching a filter (`>` for all, `n1.>` for one node's work), sorted.
    pub async fn keys(&self, filter: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = self
            .snapshot(filter, true)
            .await?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// (key, revision) of every live key matching a filter, sorted by key; values are
    /// not transferred.
    pub async fn revisions(&self, filter: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out: Vec<(String, u64)> = self
            .snapshot(filter, true)
            .await?
            .into_iter()
            .map(|(k, _, rev)| (k, rev))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Current (key, value, revision) of every live key matching a filter, sorted by key.
    pub async fn entries(&self, filter: &str) -> Result<Vec<(String, Bytes, u64)>, StoreError> {
        let mut entries = self.snapshot(filter, false).await?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Reads the last message per key through an ordered consumer: one round of
    /// deliveries instead of one request per key.
    async fn snapshot(
        &self,
        filter: &str,
        headers_only: bool,
    ) -> Result<Vec<(String, Bytes, u64)>, StoreError> {
        let name = consumer_name();
        let consumer = self
            .kv
            .stream
            .create_consumer(pull::OrderedConfig {
                // A named consumer is created on the subject that carries its filter,
                // which NATS permissions can confine (a node to its own work keys).
                name: Some(name.clone()),
                filter_subject: format!("{}{filter}", self.kv.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                replay_policy: ReplayPolicy::Instant,
                headers_only,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::nats("list", e))?;
        // Consumers count against the stream's limit until deleted; an idle one would
        // only go after its inactivity threshold, so a read removes its own.
        let stream = self.kv.stream.clone();
        let _delete = DeleteOnDrop(Some(Box::new(move || {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = stream.delete_consumer(&name).await;
                });
            }
        })));
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| StoreError::nats("list", e))?;
        // Writes made while the snapshot is read arrive after the last value of each
        // key: a key may come twice (keep the newer) or be removed after it came.
        let mut latest: std::collections::HashMap<String, (Bytes, u64)> =
            std::collections::HashMap::new();
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| StoreError::nats("list", e))?;
            let info = msg.info().map_err(|e| StoreError::nats("list", e))?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            let key = msg
                .subject
                .strip_prefix(self.kv.prefix.as_str())
                .unwrap_or(&msg.subject)
                .to_string();
            if is_removal(msg.headers.as_ref()) {
                latest.remove(&key);
            } else {
                latest.insert(key, (msg.payload.clone(), revision));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(latest
            .into_iter()
            .map(|(key, (value, revision))| (key, value, revision))
            .collect())
    }

    /// Current values of keys matching `filter`, then every later change. Deleted keys
    /// may appear once in the initial part as removals.
    pub async fn watch(
        &self,
        filter: &str,
    ) -> Result<BoxStream<'static, Result<KvChange<Bytes>, StoreError>>, StoreError> {
        let (changes, _) = self.watch_after(filter, 0).await?;
        Ok(changes.map(|c| c.map(|(change, _)| change)).boxed())
    }

    /// Changes of keys matching `filter` after revision `after`: with `after` 0 the
    /// current value of every key first. Each change comes with the number of changes
    /// still pending behind it (0: caught up); the second value is that number at the
    /// start. [`crate::watch::Watcher`] builds on this.
    pub async fn watch_after(
        &self,
        filter: &str,
        after: u64,
    ) -> Result<
        (
            BoxStream<'static, Result<(KvChange<Bytes>, u64), StoreError>>,
            u64,
        ),
        StoreError,
    > {
        // An ordered pull consumer with a name rather than `kv.watch`: the latter
        // creates an unnamed consumer on `$JS.API.CONSUMER.CREATE.<stream>`, a subject
        // that cannot be confined by filter; this one is created on
        // `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>` (see `auth`).
        let deliver_policy = match after {
            0 => DeliverPolicy::LastPerSubject,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        };
        let consumer = self
            .kv
            .stream
            .create_consumer(pull::OrderedConfig {
                name: Some(consumer_name()),
                filter_subject: format!("{}{filter}", self.kv.prefix),
                deliver_policy,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::nats("watch", e))?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| StoreError::nats("watch", e))?;
        let prefix = self.kv.prefix.clone();
        let changes = messages
            .map(move |msg| {
                let msg = msg.map_err(|e| StoreError::nats("watch", e))?;
                let info = msg.info().map_err(|e| StoreError::nats("watch", e))?;
                let revision = info.stream_sequence;
                let behind = info.pending;
                let key = msg
                    .subject
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&msg.subject)
                    .to_string();
                Ok((
                    KvChange {
                        value: (!is_removal(msg.headers.as_ref())).then(|| msg.payload.clone()),
                        key,
                        revision,
                    },
                    behind,
                ))
            })
            .boxed();
        Ok((changes, pending))
    }
}

/// Runs its action when dropped: clean-up that must happen on every return path.
struct DeleteOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// A consumer name unique to this process and call (names must not contain dots).
fn consumer_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "voiyd_{}_{:x}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Delete and purge markers (written by clients, or by the server when a TTL expires).
fn is_removal(headers: Option<&async_nats::HeaderMap>) -> bool {
    let Some(headers) = headers else {
        return false;
    };
    if let Some(op) = headers.get("KV-Operation") {
        return matches!(op.as_str(), "DEL" | "PURGE");
    }
    headers.get("Nats-Marker-Reason").is_some()
}

/// A KV bucket whose values are one protobuf message type.
pub struct TypedKv<M> {
    raw: RawKv,
    _m: PhantomData<fn() -> M>,
}

impl<M> Clone for TypedKv<M> {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            _m: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for TypedKv<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedKv").field(&self.raw).finish()
    }
}

impl<M: prost::Message + Default + 'static> TypedKv<M> {
    /// Wraps a bucket. `kind` names its values in errors.
    pub fn new(kv: kv::Store, kind: impl Into<String>) -> Self {
        RawKv::new(kv, kind).typed()
    }

    /// The untyped view.
    pub fn raw(&self) -> &RawKv {
        &self.raw
    }

    fn decode(key: &str, bytes: Bytes) -> Result<M, StoreError> {
        M::decode(bytes).map_err(|e| StoreError::Decode {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// The message and revision under `key`; `None` if absent or deleted.
    pub async fn get(&self, key: &str) -> Result<Option<(M, u64)>, StoreError> {
        match self.raw.get(key).await? {
            Some((bytes, rev)) => Ok(Some((Self::decode(key, bytes)?, rev))),
            None => Ok(None),
        }
    }

    /// Writes unconditionally; returns the new revision.
    pub async fn put(&self, key: &str, value: &M) -> Result<u64, StoreError> {
        self.raw.put(key, value.encode_to_vec().into()).await
    }

    /// Writes only if absent; [`StoreError::AlreadyExists`] otherwise.
    pub async fn create(&self, key: &str, value: &M) -> Result<u64, StoreError> {
        self.raw.create(key, value.encode_to_vec().into()).await
    }

    /// Writes only at revision `expected`; [`StoreError::Conflict`] otherwise.
    pub async fn update(&self, key: &str, value: &M, expected: u64) -> Result<u64, StoreError> {
        self.raw
            .update(key, value.encode_to_vec().into(), expected)
            .await
    }

    /// Deletes, at revision `expected` if given.
    pub async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), StoreError> {
        self.raw.delete(key, expected).await
    }

    /// Keys matching a filter, sorted.
    pub async fn keys(&self, filter: &str) -> Result<Vec<String>, StoreError> {
        self.raw.keys(filter).await
    }

    /// Live (key, message, revision) matching a filter, sorted by key.
    pub async fn entries(&self, filter: &str) -> Result<Vec<(String, M, u64)>, StoreError> {
        self.raw
            .entries(filter)
            .await?
            .into_iter()
            .map(|(k, bytes, rev)| Ok((k.clone(), Self::decode(&k, bytes)?, rev)))
            .collect()
    }
}

/// The spec bucket of one resource kind, keyed by [`names::spec_key`] of the name.
///
/// Reads set `meta.resource_version` to the KV revision; writes store it as 0 (the
/// revision is the stored truth, not a field of the value).
pub struct Store<R> {
    kv: TypedKv<R>,
}

impl<R> Clone for Store<R> {
    fn clone(&self) -> Self {
        Self {
            kv: self.kv.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Store<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.kv).finish()
    }
}

impl<R: Resource> Store<R> {
    /// Wraps the kind's bucket.
    pub fn new(kv: kv::Store) -> Self {
        Self {
            kv: TypedKv::new(kv, R::KIND.singular()),
        }
    }

    /// The typed bucket underneath.
    pub fn kv(&self) -> &TypedKv<R> {
        &self.kv
    }

    fn versioned(mut r: R, revision: u64) -> R {
        r.meta_mut().resource_version = revision;
        r
    }

    fn stored(r: &R) -> R {
        let mut r = r.clone();
        r.meta_mut().resource_version = 0;
        r
    }

    /// The resource called `name`, if any.
    pub async fn get(&self, name: &str) -> Result<Option<R>, StoreError> {
        Ok(self
            .kv
            .get(&names::spec_key(name))
            .await?
            .map(|(r, rev)| Self::versioned(r, rev)))
    }

    /// Every resource, sorted by name.
    pub async fn list(&self) -> Result<Vec<R>, StoreError> {
        let mut all: Vec<R> = self
            .kv
            .entries(">")
            .await?
            .into_iter()
            .map(|(_, r, rev)| Self::versioned(r, rev))
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(all)
    }

    /// Stores a new resource; [`StoreError::AlreadyExists`] if the name is taken.
    pub async fn create(&self, r: &R) -> Result<R, StoreError> {
        let name = r.name();
        let rev = self
            .kv
            .create(&names::spec_key(name), &Self::stored(r))
            .await
            .map_err(|e| e.with_name(name))?;
        Ok(Self::versioned(r.clone(), rev))
    }

    /// Replaces a resource stored at revision `expected_revision`.
    pub async fn update(&self, r: &R, expected_revision: u64) -> Result<R, StoreError> {
        let name = r.name();
        let rev = self
            .kv
            .update(&names::spec_key(name), &Self::stored(r), expected_revision)
            .await
            .map_err(|e| e.with_name(name))?;
        Ok(Self::versioned(r.clone(), rev))
    }

    /// Deletes a resource, at revision `expected_revision` if given.
    pub async fn delete(
        &self,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), StoreError> {
        self.kv
            .delete(&names::spec_key(name), expected_revision)
            .await
            .map_err(|e| e.with_name(name))
    }
}

//! One watcher for KV buckets, the one every program uses: the current values, then
//! every change, as typed events. It opens the bucket when it exists, re-watches after
//! an error, a closed stream or a reconnection to NATS (the consumer may be gone with
//! the server it lived on), resuming after the last revision it delivered, and backs
//! off between attempts. A value that does not decode is an [`WatchEvent::Invalid`]
//! event: never taken for a delete, which would make a reader forget a task that still
//! exists.
//!
//! Watches are ordered pull consumers with a name (see [`RawKv::watch_after`]), so a
//! node's permissions can confine them to its own keys.

use crate::link::{Link, LinkState};
use crate::store::{KvChange, RawKv, StoreError};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;

/// What a watch says.
#[derive(Debug)]
pub enum WatchEvent<V> {
    /// `key` was created or updated.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: V,
        /// The KV revision of the change.
        revision: u64,
    },
    /// `key` was deleted, purged or expired.
    Delete {
        /// The key.
        key: String,
        /// The revision of the removal.
        revision: u64,
    },
    /// `key` holds a value that does not decode; what a reader knew of it stands.
    Invalid {
        /// The key.
        key: String,
        /// The revision of the bad value.
        revision: u64,
        /// Why it does not decode.
        error: StoreError,
    },
    /// Everything the bucket held when this watch (re)started has been delivered.
    Current,
}

impl<V> WatchEvent<V> {
    /// The revision of a change (none for [`WatchEvent::Current`]).
    pub fn revision(&self) -> Option<u64> {
        match self {
            WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Invalid { revision, .. } => Some(*revision),
            WatchEvent::Current => None,
        }
    }
}

/// Longest wait between two attempts to open a watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// A watch to start: which bucket, which keys, and the link whose reconnections
/// restart it.
#[derive(Clone)]
pub struct Watcher {
    js: Option<async_nats::jetstream::Context>,
    bucket: String,
    filter: String,
    link: Option<Link>,
    kind: String,
    opened: Option<async_nats::jetstream::kv::Store>,
}

impl Watcher {
    /// Watches keys of `bucket` matching `filter` (`>` for all); `kind` names the
    /// values in logs and errors.
    pub fn new(
        js: async_nats::jetstream::Context,
        bucket: &str,
        filter: &str,
        kind: &str,
    ) -> Watcher {
        Watcher {
            js: Some(js),
            bucket: bucket.to_string(),
            filter: filter.to_string(),
            link: None,
            kind: kind.to_string(),
            opened: None,
        }
    }

    /// Watches keys of an open bucket.
    pub fn of(kv: async_nats::jetstream::kv::Store, filter: &str, kind: &str) -> Watcher {
        Watcher {
            js: None,
            bucket: kv.name.clone(),
            filter: filter.to_string(),
            link: None,
            kind: kind.to_string(),
            opened: Some(kv),
        }
    }

    /// Re-watches whenever this link reconnects.
    pub fn on_reconnect(mut self, link: Link) -> Watcher {
        self.link = Some(link);
        self
    }

    /// The raw values.
    pub fn raw(self) -> BoxStream<'static, WatchEvent<Bytes>> {
        let kv = self
            .opened
            .clone()
            .map(|kv| RawKv::new(kv, self.kind.clone()));
        let state = State {
            w: self,
            kv,
            open: None,
            last: 0,
            backoff: FIRST_BACKOFF,
            current_due: false,
            said_current: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            let event = s.next().await;
            Some((event, s))
        })
        .boxed()
    }

    /// The values decoded as one protobuf message type.
    pub fn typed<M: prost::Message + Default + 'static>(self) -> BoxStream<'static, WatchEvent<M>> {
        let kind = self.kind.clone();
        self.raw()
            .map(move |e| match e {
                WatchEvent::Put {
                    key,
                    value,
                    revision,
                } => match M::decode(value) {
                    Ok(value) => WatchEvent::Put {
                        key,
                        value,
                        revision,
                    },
                    Err(e) => WatchEvent::Invalid {
                        error: StoreError::Decode {
                            key: key.clone(),
                            reason: format!("{kind}: {e}"),
                        },
                        key,
                        revision,
                    },
                },
                WatchEvent::Delete { key, revision } => WatchEvent::Delete { key, revision },
                WatchEvent::Invalid {
                    key,
                    revision,
                    error,
                } => WatchEvent::Invalid {
                    key,
                    revision,
                    error,
                },
                WatchEvent::Current => WatchEvent::Current,
            })
            .boxed()
    }
}

struct Open {
    changes: BoxStream<'static, Result<(KvChange<Bytes>, u64), StoreError>>,
    seen: Option<LinkState>,
}

struct State {
    w: Watcher,
    kv: Option<RawKv>,
    open: Option<Open>,
    last: u64,
    backoff: Duration,
    /// [`WatchEvent::Current`] is to be said next.
    current_due: bool,
    /// It was said for the open watch.
    said_current: bool,
}

impl State {
    async fn next(&mut self) -> WatchEvent<Bytes> {
        loop {
            if std::mem::take(&mut self.current_due) {
                self.said_current = true;
                return WatchEvent::Current;
            }
            let Some(open) = self.open.as_mut() else {
                match self.start().await {
                    Ok(()) => self.backoff = FIRST_BACKOFF,
                    Err(e) => {
                        tracing::warn!(bucket = %self.w.bucket, kind = %self.w.kind, error = %e, "cannot watch; retrying");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            let item = match (&self.w.link, open.seen) {
                (Some(link), Some(seen)) => tokio::select! {
                    item = open.changes.next() => item,
                    () = link.reconnected_after(seen) => {
                        tracing::debug!(bucket = %self.w.bucket, after = self.last, "reconnected to NATS; re-watching");
                        self.open = None;
                        continue;
                    }
                },
                _ => open.changes.next().await,
            };
            match item {
                Some(Ok((change, pending))) => {
                    self.last = self.last.max(change.revision);
                    if pending == 0 && !self.said_current {
                        self.current_due = true;
                    }
                    return match change.value {
                        Some(value) => WatchEvent::Put {
                            key: change.key,
                            value,
                            revision: change.revision,
                        },
                        None => WatchEvent::Delete {
                            key: change.key,
                            revision: change.revision,
                        },
                    };
                }
                Some(Err(e)) => {
                    tracing::warn!(bucket = %self.w.bucket, error = %e, "watch failed; re-watching");
                    self.open = None;
                    tokio::time::sleep(FIRST_BACKOFF).await;
                }
                None => {
                    self.open = None;
                    tokio::time::sleep(FIRST_BACKOFF).await;
                }
            }
        }
    }

    async fn start(&mut self) -> Result<(), StoreError> {
        let seen = self.w.link.as_ref().map(|l| l.state());
        let kv = match (&self.kv, &self.w.js) {
            (Some(kv), _) => kv,
            (None, Some(js)) => {
                let kv = js
                    .get_key_value(&self.w.bucket)
                    .await
                    .map_err(|e| StoreError::nats("open bucket", e))?;
                self.kv.insert(RawKv::new(kv, self.w.kind.clone()))
            }
            (None, None) => unreachable!("a watcher has a bucket or a way to open it"),
        };
        let (changes, pending) = kv.watch_after(&self.w.filter, self.last).await?;
        self.open = Some(Open { changes, seen });
        self.said_current = false;
        if pending == 0 {
            self.current_due = true;
        }
        Ok(())
    }
}

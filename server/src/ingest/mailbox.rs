//! A latest-wins mailbox: one slot per key, drained by a fixed set of workers. Node
//! reports go through it, so a burst is read off NATS at once (no slow-consumer drops)
//! and only the newest report per (node, task) or per node is folded in: the ones in
//! between say nothing the newest does not.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Keys waiting, each with its newest value.
pub struct Mailbox<K, V> {
    slots: Mutex<(HashMap<K, V>, VecDeque<K>)>,
    ready: Notify,
}

impl<K: Eq + Hash + Clone, V> Default for Mailbox<K, V> {
    fn default() -> Self {
        Mailbox {
            slots: Mutex::new((HashMap::new(), VecDeque::new())),
            ready: Notify::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Mailbox<K, V> {
    /// Puts `v` under `k`, replacing a value not taken yet.
    pub fn put(&self, k: K, v: V) {
        let mut s = self.slots.lock().expect("mailbox lock");
        if s.0.insert(k.clone(), v).is_none() {
            s.1.push_back(k);
        }
        drop(s);
        self.ready.notify_one();
    }

    fn try_take(&self) -> Option<(K, V)> {
        let mut s = self.slots.lock().expect("mailbox lock");
        let k = s.1.pop_front()?;
        let v = s.0.remove(&k).expect("queued keys have a slot");
        Some((k, v))
    }

    /// Takes the oldest waiting key with its newest value, waiting for one.
    pub async fn take(&self) -> (K, V) {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(kv) = self.try_take() {
                // Others may be waiting for the rest.
                if !self.is_empty() {
                    self.ready.notify_one();
                }
                return kv;
            }
            notified.await;
        }
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.slots.lock().expect("mailbox lock").1.is_empty()
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("mailbox lock").1.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn newest_value_wins_and_order_is_first_come() {
        let m: Mailbox<&str, u32> = Mailbox::default();
        m.put("a", 1);
        m.put("b", 1);
        m.put("a", 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m.take().await, ("a", 2));
        assert_eq!(m.take().await, ("b", 1));
        assert!(m.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_workers_drain_everything() {
        let m: Arc<Mailbox<u32, u32>> = Arc::new(Mailbox::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let (m, tx) = (m.clone(), tx.clone());
            tokio::spawn(async move {
                loop {
                    let (k, _) = m.take().await;
                    tx.send(k).unwrap();
                }
            });
        }
        for k in 0..1000 {
            m.put(k, k);
        }
        let mut got = std::collections::BTreeSet::new();
        while got.len() < 1000 {
            got.insert(
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                    .await
                    .expect("drained")
                    .unwrap(),
            );
        }
    }
}

//! The state of a client's link to NATS, as the client's own connection events report it.
//!
//! Polling `Client::connection_state()` misses a restart of nats-server that completes
//! between two polls (a disconnect and a reconnect within milliseconds), and then
//! nothing re-reads what was lost meanwhile: core NATS messages are not replayed and
//! an ordered consumer on a restarted server only notices after missed heartbeats.
//! The events are delivered in order and each one counts, so a [`Link`] never misses a
//! reconnection. Every voiyd program (CLI, node, server) watches its connection here.

use tokio::sync::watch;

/// What the connection events said so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Connected now (after the latest event).
    pub connected: bool,
    /// Successful connections so far, the first one included.
    pub connects: u64,
    /// Connections lost so far.
    pub disconnects: u64,
    /// Times a subscription fell behind and the client dropped messages (slow consumer).
    pub drops: u64,
}

impl LinkState {
    /// Whether this state follows a new connection made after `earlier`.
    pub fn reconnected_since(&self, earlier: &LinkState) -> bool {
        self.connected && self.connects > earlier.connects
    }
}

/// A handle on a client's link state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    rx: watch::Receiver<LinkState>,
}

/// The writing end, fed by the client's event callback.
#[derive(Debug, Clone)]
pub(crate) struct LinkEvents {
    tx: std::sync::Arc<watch::Sender<LinkState>>,
}

impl LinkEvents {
    pub(crate) fn new() -> (LinkEvents, Link) {
        let (tx, rx) = watch::channel(LinkState::default());
        (LinkEvents { tx: tx.into() }, Link { rx })
    }

    pub(crate) fn connected(&self) {
        self.tx.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
    }

    pub(crate) fn dropped(&self) {
        self.tx.send_modify(|s| s.drops += 1);
    }

    pub(crate) fn disconnected(&self) {
        self.tx.send_modify(|s| {
            s.connected = false;
            s.disconnects += 1;
        });
    }
}

impl Link {
    /// The state now.
    pub fn state(&self) -> LinkState {
        *self.rx.borrow()
    }

    /// Returns once the client is connected through a connection made after `since`
    /// (at once if that already happened). Never returns once the client is gone.
    pub async fn reconnected_after(&self, since: LinkState) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|s| s.reconnected_since(&since)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once messages were dropped after `since` (a subscription fell behind):
    /// what they said must be read again. Never returns once the client is gone.
    pub async fn dropped_after(&self, since: LinkState) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|s| s.drops > since.drops).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once the state differs from `seen`, with the new state. Never returns
    /// once the client is gone.
    pub async fn changed_from(&self, seen: LinkState) -> LinkState {
        let mut rx = self.rx.clone();
        let now = rx.wait_for(|s| *s != seen).await.map(|s| *s);
        match now {
            Ok(s) => s,
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits (up to `limit`) for the first connection; true once connected.
    pub async fn wait_connected(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.rx.clone();
        let connected = tokio::time::timeout(limit, rx.wait_for(|s| s.connected))
            .await
            .map(|r| r.is_ok());
        connected.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drops_after_a_look_are_reported_once() {
        let (events, link) = LinkEvents::new();
        events.connected();
        let seen = link.state();
        events.dropped();
        tokio::time::timeout(Duration::from_secs(1), link.dropped_after(seen))
            .await
            .expect("a drop after the look");
        let now = link.state();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), link.dropped_after(now))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_blip_between_two_looks_still_counts_as_a_reconnection() {
        let (events, link) = LinkEvents::new();
        events.connected();
        let seen = link.state();
        // Down and up again before anyone looks: the state is "connected", as before.
        events.disconnected();
        events.connected();
        assert!(link.state().connected);
        tokio::time::timeout(Duration::from_secs(1), link.reconnected_after(seen))
            .await
            .expect("the reconnection is seen");
        assert_eq!(link.state().disconnects, 1);
    }

    #[tokio::test]
    async fn waits_for_the_next_connection() {
        let (events, link) = LinkEvents::new();
        events.connected();
        let seen = link.state();
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.reconnected_after(seen).await }
        });
        events.disconnected();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "still down: not reconnected");
        events.connected();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("reconnected")
            .unwrap();
    }
}

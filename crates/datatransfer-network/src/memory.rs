//! An in-memory data-transfer network for fast tests, with injectable faults.
//!
//! Every node joins a [`MemoryHub`]. Messages are encoded and decoded on the way (1.2.0), so
//! tests exercise the codec too. The hub can cut and restore links, delay every message, or
//! drop the next messages on a link (lost in flight: the sender believes they went out).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer_types::PeerId;
use datatransfer_types::message::{Message, WireVersion};
use tokio::sync::mpsc;

use crate::{DataTransferNetwork, NetworkError, NetworkEvent, RetryConfig};

#[derive(Debug, Default)]
struct Hub {
    nodes: HashMap<PeerId, mpsc::Sender<NetworkEvent>>,
    down: HashSet<(PeerId, PeerId)>,
    drop_next: HashMap<(PeerId, PeerId), usize>,
    delay: Duration,
    protected: HashMap<PeerId, HashSet<(PeerId, String)>>,
}

fn link(a: PeerId, b: PeerId) -> (PeerId, PeerId) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The shared medium of in-memory nodes.
#[derive(Debug, Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Mutex<Hub>>,
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Hub) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut h| f(&mut h))
    }

    /// Adds a node; returns its network and the receiver of what it is sent.
    pub fn join(
        &self,
        peer: PeerId,
        retry: RetryConfig,
        buffer: usize,
    ) -> (MemoryNetwork, mpsc::Receiver<NetworkEvent>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        self.with(|h| h.nodes.insert(peer, tx));
        let net = MemoryNetwork {
            me: peer,
            hub: self.clone(),
            retry,
        };
        (net, rx)
    }

    /// Cuts the link between `a` and `b`: sends fail until [`MemoryHub::reconnect`].
    pub fn disconnect(&self, a: PeerId, b: PeerId) {
        self.with(|h| h.down.insert(link(a, b)));
    }

    /// Restores the link between `a` and `b`.
    pub fn reconnect(&self, a: PeerId, b: PeerId) {
        self.with(|h| h.down.remove(&link(a, b)));
    }

    /// Delays every message by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.with(|h| h.delay = d);
    }

    /// Loses the next `n` messages from `from` to `to` without telling the sender.
    pub fn drop_next(&self, from: PeerId, to: PeerId, n: usize) {
        self.with(|h| h.drop_next.insert((from, to), n));
    }

    /// Whether `peer` holds protection from `by` (any tag).
    pub fn is_protected(&self, by: PeerId, peer: PeerId) -> bool {
        self.with(|h| {
            h.protected
                .get(&by)
                .is_some_and(|s| s.iter().any(|(p, _)| *p == peer))
        })
        .unwrap_or(false)
    }
}

/// One node on a [`MemoryHub`].
#[derive(Debug, Clone)]
pub struct MemoryNetwork {
    me: PeerId,
    hub: MemoryHub,
    retry: RetryConfig,
}

enum Route {
    Deliver(mpsc::Sender<NetworkEvent>, Duration),
    Lost,
    Unreachable(&'static str),
}

#[async_trait]
impl DataTransferNetwork for MemoryNetwork {
    fn peer_id(&self) -> PeerId {
        self.me
    }

    async fn send_message(&self, to: PeerId, message: Message) -> Result<(), NetworkError> {
        let attempts = self.retry.attempts.max(1);
        let mut last = "";
        for attempt in 1..=attempts {
            let route = self
                .hub
                .with(|h| {
                    if h.down.contains(&link(self.me, to)) {
                        return Route::Unreachable("link is down");
                    }
                    let Some(tx) = h.nodes.get(&to).cloned() else {
                        return Route::Unreachable("no such peer");
                    };
                    if let Some(n) = h.drop_next.get_mut(&(self.me, to)).filter(|n| **n > 0) {
                        *n -= 1;
                        return Route::Lost;
                    }
                    Route::Deliver(tx, h.delay)
                })
                .unwrap_or(Route::Unreachable("hub is gone"));
            match route {
                Route::Lost => return Ok(()),
                Route::Deliver(tx, delay) => {
                    // Through the wire format, as a real network would.
                    let bytes = message.to_cbor(WireVersion::V1_2);
                    let message = Message::from_cbor(WireVersion::V1_2, &bytes)
                        .map_err(|_| NetworkError::Closed)?;
                    let event = NetworkEvent::Message {
                        from: self.me,
                        message,
                        version: WireVersion::V1_2,
                    };
                    if delay.is_zero() {
                        return tx.send(event).await.map_err(|_| NetworkError::Closed);
                    }
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(event).await;
                    });
                    return Ok(());
                }
                Route::Unreachable(why) => last = why,
            }
            if attempt < attempts {
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
        }
        Err(NetworkError::Unreachable {
            peer: to,
            attempts,
            last: last.to_owned(),
        })
    }

    fn protect(&self, peer: PeerId, tag: &str) {
        self.hub.with(|h| {
            h.protected
                .entry(self.me)
                .or_default()
                .insert((peer, tag.to_owned()))
        });
    }

    fn unprotect(&self, peer: PeerId, tag: &str) -> bool {
        self.hub
            .with(|h| {
                let set = h.protected.entry(self.me).or_default();
                set.remove(&(peer, tag.to_owned()));
                set.iter().any(|(p, _)| *p == peer)
            })
            .unwrap_or(false)
    }
}

//! Connection protection: a peer with open channels keeps its connections open. The same
//! behaviour remembers the addresses given with `Swarm::add_peer_address`, so that streams
//! (and restarts after a disconnect) can reach a peer by its id alone.
//!
//! rust-libp2p closes a connection once no behaviour's handler wants it kept alive (after
//! the swarm's idle timeout). [`ProtectBehaviour`]'s handlers want it kept alive exactly while
//! the peer holds at least one protection tag (a channel), as go-data-transfer protects peers
//! in the connection manager. Tags are set through a cloneable [`ProtectHandle`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, PeerAddresses, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// What the handle tells the behaviour.
#[derive(Debug, Default)]
struct Shared {
    tags: HashMap<PeerId, HashSet<String>>,
    /// Peers whose protection changed since the behaviour last looked.
    changed: Vec<PeerId>,
    waker: Option<Waker>,
    /// Senders waiting for a connection to a peer (to retry at once rather than after
    /// their backoff).
    connect_waiters: HashMap<PeerId, Arc<Notify>>,
}

/// Sets and clears protection tags; clone it freely.
#[derive(Debug, Clone, Default)]
pub struct ProtectHandle {
    shared: Arc<Mutex<Shared>>,
}

impl ProtectHandle {
    fn update(&self, f: impl FnOnce(&mut Shared) -> bool) -> bool {
        let Ok(mut s) = self.shared.lock() else {
            return false;
        };
        let out = f(&mut s);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        out
    }

    /// Protects `peer` for `tag`.
    pub fn protect(&self, peer: PeerId, tag: &str) {
        self.update(|s| {
            if s.tags.entry(peer).or_default().insert(tag.to_owned()) {
                s.changed.push(peer);
            }
            true
        });
    }

    /// Drops `tag` from `peer`; returns whether other tags still protect it.
    pub fn unprotect(&self, peer: PeerId, tag: &str) -> bool {
        self.update(|s| {
            let Some(tags) = s.tags.get_mut(&peer) else {
                return false;
            };
            if tags.remove(tag) {
                s.changed.push(peer);
            }
            let still = !tags.is_empty();
            if !still {
                s.tags.remove(&peer);
            }
            still
        })
    }

    /// Waits until a new connection to `peer` is established or `max` has passed, whichever
    /// comes first; returns whether a connection came. A sender backing off after a failed
    /// attempt waits here, so a peer that dials back is answered at once.
    pub async fn wait_for_connection(&self, peer: PeerId, max: std::time::Duration) -> bool {
        let Some(signal) = self
            .shared
            .lock()
            .ok()
            .map(|mut s| s.connect_waiters.entry(peer).or_default().clone())
        else {
            tokio::time::sleep(max).await;
            return false;
        };
        let connected = tokio::time::timeout(max, signal.notified()).await.is_ok();
        // The last waiter removes the entry (the behaviour removes it when it fires).
        if let Ok(mut s) = self.shared.lock()
            && let Some(current) = s.connect_waiters.get(&peer)
            && Arc::ptr_eq(current, &signal)
            && Arc::strong_count(&signal) == 2
        {
            s.connect_waiters.remove(&peer);
        }
        connected
    }

    /// Whether `peer` is protected.
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.shared
            .lock()
            .map(|s| s.tags.contains_key(peer))
            .unwrap_or(false)
    }
}

/// Peers whose addresses are remembered by default (10 addresses each, least recently used
/// dropped first).
pub const DEFAULT_ADDRESS_BOOK_PEERS: usize = 10_000;

/// A behaviour that keeps connections to protected peers alive and remembers peers'
/// addresses. Put it in the same `Swarm` as the data-transfer and graphsync behaviours.
#[derive(Debug)]
pub struct ProtectBehaviour {
    handle: ProtectHandle,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    pending: Vec<(PeerId, ConnectionId, bool)>,
    addresses: PeerAddresses,
}

impl Default for ProtectBehaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl ProtectBehaviour {
    /// A behaviour with no protected peers, remembering addresses of up to
    /// [`DEFAULT_ADDRESS_BOOK_PEERS`] peers.
    pub fn new() -> Self {
        Self::with_address_book(DEFAULT_ADDRESS_BOOK_PEERS)
    }

    /// A behaviour remembering addresses of up to `peers` peers.
    pub fn with_address_book(peers: usize) -> Self {
        let cap = std::num::NonZeroUsize::new(peers.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            handle: ProtectHandle::default(),
            connections: HashMap::new(),
            pending: Vec::new(),
            addresses: PeerAddresses::new(cap),
        }
    }

    /// The handle that sets protection tags.
    pub fn handle(&self) -> ProtectHandle {
        self.handle.clone()
    }

    fn handler_for(&self, peer: &PeerId) -> Handler {
        Handler {
            keep_alive: self.handle.is_protected(peer),
        }
    }
}

impl NetworkBehaviour for ProtectBehaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connections.entry(peer).or_default().insert(id);
        Ok(self.handler_for(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connections.entry(peer).or_default().insert(id);
        Ok(self.handler_for(&peer))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .map(|p| self.addresses.get(&p).collect())
            .unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        // Addresses are kept even when a dial fails: the peer may come back at the same one.
        if let FromSwarm::NewExternalAddrOfPeer(e) = &event {
            self.addresses.add(e.peer_id, e.addr.clone());
        }
        if let FromSwarm::ConnectionEstablished(c) = &event
            && let Ok(mut s) = self.handle.shared.lock()
            && let Some(signal) = s.connect_waiters.remove(&c.peer_id)
        {
            signal.notify_waiters();
        }
        if let FromSwarm::ConnectionClosed(c) = event
            && let Some(set) = self.connections.get_mut(&c.peer_id)
        {
            set.remove(&c.connection_id);
            if set.is_empty() {
                self.connections.remove(&c.peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if self.pending.is_empty()
            && let Ok(mut s) = self.handle.shared.lock()
        {
            let changed = std::mem::take(&mut s.changed);
            for peer in changed {
                let keep = s.tags.contains_key(&peer);
                for conn in self.connections.get(&peer).into_iter().flatten() {
                    self.pending.push((peer, *conn, keep));
                }
            }
            if self.pending.is_empty() {
                s.waker = Some(cx.waker().clone());
            }
        }
        match self.pending.pop() {
            Some((peer_id, conn, keep)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(conn),
                event: keep,
            }),
            None => Poll::Pending,
        }
    }
}

/// Per-connection half of [`ProtectBehaviour`]: wants the connection alive while protected.
#[derive(Debug)]
pub struct Handler {
    keep_alive: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

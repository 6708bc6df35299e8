//! Connection protection: a peer with open channels keeps its connections open. The same
//! behaviour remembers the addresses given with `Swarm::add_peer_address` (or
//! [`ProtectHandle::add_address`]), so that streams (and restarts after a disconnect) can reach
//! a peer by its id alone, and it is how a data-transfer node steers peers in a swarm it does
//! not drive itself (an application's): dial, disconnect, whether a peer is connected, the
//! swarm's listen addresses, and a feed of peers whose last connection closed.
//!
//! rust-libp2p closes a connection once no behaviour's handler wants it kept alive (after
//! the swarm's idle timeout). [`ProtectBehaviour`]'s handlers want it kept alive exactly while
//! the peer holds at least one protection tag (a channel), as go-data-transfer protects peers
//! in the connection manager. Tags are set through a cloneable [`ProtectHandle`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Notify, mpsc, oneshot};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, PeerAddresses, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
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
    /// Peers with at least one connection.
    connected: HashSet<PeerId>,
    /// The swarm's listen addresses.
    listen: Vec<Multiaddr>,
    /// Addresses to add to the address book.
    new_addresses: Vec<(PeerId, Multiaddr)>,
    /// Dials asked for.
    dials: Vec<(PeerId, Multiaddr, DialReply)>,
    /// Peers to disconnect.
    closes: Vec<PeerId>,
    /// Who hears of peers whose last connection closed.
    disconnect_feeds: Vec<mpsc::UnboundedSender<PeerId>>,
    /// The behaviour was dropped (its swarm stopped).
    stopped: bool,
}

/// Where the outcome of a dial goes.
type DialReply = oneshot::Sender<Result<(), DialError>>;

/// Dialing a peer through a [`ProtectHandle`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address does not name the peer (`.../p2p/<peer id>`).
    #[error("{0} does not end in /p2p/<peer id>")]
    NoPeerId(Multiaddr),
    /// The swarm could not connect.
    #[error("{0}")]
    Failed(String),
    /// The swarm stopped.
    #[error("the swarm stopped")]
    Stopped,
}

/// The peer id at the end of a multiaddr (`.../p2p/<id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
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

    /// Remembers an address of `peer`, so streams to it can be opened by its id.
    pub fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        self.update(|s| {
            s.new_addresses.push((peer, addr));
            true
        });
    }

    /// Connects to `addr` (which must end in `/p2p/<peer id>`), unless a connection to the
    /// peer is open already; returns the peer's id once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, DialError> {
        let peer = peer_of(&addr).ok_or_else(|| DialError::NoPeerId(addr.clone()))?;
        let (tx, rx) = oneshot::channel();
        let queued = self.update(|s| {
            if s.stopped {
                return false;
            }
            s.dials.push((peer, addr, tx));
            true
        });
        if !queued {
            return Err(DialError::Stopped);
        }
        rx.await.map_err(|_| DialError::Stopped)??;
        Ok(peer)
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.shared
            .lock()
            .map(|s| s.connected.contains(peer))
            .unwrap_or(false)
    }

    /// Closes every connection to `peer`; returns whether there was one.
    pub fn disconnect(&self, peer: PeerId) -> bool {
        self.update(|s| {
            let connected = s.connected.contains(&peer);
            if connected {
                s.closes.push(peer);
            }
            connected
        })
    }

    /// The addresses the swarm listens on (as it reported them to the behaviour).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .lock()
            .map(|s| s.listen.clone())
            .unwrap_or_default()
    }

    /// A feed of peers whose last connection closed, from now on. It ends when the
    /// behaviour is dropped.
    pub fn disconnections(&self) -> mpsc::UnboundedReceiver<PeerId> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut s) = self.shared.lock()
            && !s.stopped
        {
            s.disconnect_feeds.push(tx);
        }
        rx
    }
}

/// Peers whose addresses are remembered by default (10 addresses each, least recently used
/// dropped first).
pub const DEFAULT_ADDRESS_BOOK_PEERS: usize = 10_000;

/// A behaviour that keeps connections to protected peers alive, remembers peers' addresses,
/// and carries out the dials and disconnects asked for through its [`ProtectHandle`]. Put it
/// in the same `Swarm` as the data-transfer and graphsync behaviours.
#[derive(Debug)]
pub struct ProtectBehaviour {
    handle: ProtectHandle,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    events: std::collections::VecDeque<ToSwarm<Infallible, bool>>,
    addresses: PeerAddresses,
    /// Dials under way, by the connection they will make.
    dialing: HashMap<ConnectionId, (PeerId, DialReply)>,
}

impl Drop for ProtectBehaviour {
    /// Fails the dials still waiting and ends the disconnect feeds: the swarm is gone.
    fn drop(&mut self) {
        if let Ok(mut s) = self.handle.shared.lock() {
            s.stopped = true;
            s.dials.clear();
            s.disconnect_feeds.clear();
            s.connected.clear();
        }
    }
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
            events: std::collections::VecDeque::new(),
            addresses: PeerAddresses::new(cap),
            dialing: HashMap::new(),
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
        let Ok(mut s) = self.handle.shared.lock() else {
            return;
        };
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                s.connected.insert(c.peer_id);
                if let Some(signal) = s.connect_waiters.remove(&c.peer_id) {
                    signal.notify_waiters();
                }
                // Every dial to the peer is answered: it is connected.
                let done: Vec<ConnectionId> = self
                    .dialing
                    .iter()
                    .filter(|(_, (p, _))| *p == c.peer_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in done {
                    if let Some((_, reply)) = self.dialing.remove(&id) {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            FromSwarm::DialFailure(f) => {
                if let Some((peer, reply)) = self.dialing.remove(&f.connection_id) {
                    let result = if s.connected.contains(&peer) {
                        Ok(())
                    } else {
                        Err(DialError::Failed(f.error.to_string()))
                    };
                    let _ = reply.send(result);
                }
            }
            FromSwarm::ConnectionClosed(c) => {
                if let Some(set) = self.connections.get_mut(&c.peer_id) {
                    set.remove(&c.connection_id);
                    if set.is_empty() {
                        self.connections.remove(&c.peer_id);
                    }
                }
                if c.remaining_established == 0 {
                    s.connected.remove(&c.peer_id);
                    s.disconnect_feeds.retain(|f| f.send(c.peer_id).is_ok());
                }
            }
            FromSwarm::NewListenAddr(l) if !s.listen.contains(l.addr) => {
                s.listen.push(l.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(l) => s.listen.retain(|a| a != l.addr),
            _ => {}
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
        if self.events.is_empty()
            && let Ok(mut s) = self.handle.shared.lock()
        {
            for (peer, addr) in std::mem::take(&mut s.new_addresses) {
                self.addresses.add(peer, addr);
            }
            for (peer, addr, reply) in std::mem::take(&mut s.dials) {
                if self.connections.contains_key(&peer) {
                    let _ = reply.send(Ok(()));
                    continue;
                }
                self.addresses.add(peer, addr.clone());
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::Always)
                    .build();
                self.dialing.insert(opts.connection_id(), (peer, reply));
                self.events.push_back(ToSwarm::Dial { opts });
            }
            for peer_id in std::mem::take(&mut s.closes) {
                self.events.push_back(ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::All,
                });
            }
            for peer_id in std::mem::take(&mut s.changed) {
                let keep = s.tags.contains_key(&peer_id);
                for conn in self.connections.get(&peer_id).into_iter().flatten() {
                    self.events.push_back(ToSwarm::NotifyHandler {
                        peer_id,
                        handler: NotifyHandler::One(*conn),
                        event: keep,
                    });
                }
            }
            if self.events.is_empty() {
                s.waker = Some(cx.waker().clone());
            }
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
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

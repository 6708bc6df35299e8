//! Plain libp2p streams by protocol name, for protocols that frame their own messages
//! (data transfer, graphsync): a [`Behaviour`] with its own connection handler, and a
//! [`Control`] to open streams to peers and accept streams from them.
//!
//! Why not `libp2p-stream`: it hands inbound streams to the acceptor through a channel of
//! capacity zero and drops a stream that arrives while the acceptor has not yet taken the
//! previous one. Under load that silently lost data-transfer messages. Here inbound streams
//! queue until the acceptor takes them, up to a configurable number per protocol
//! ([`Behaviour::with_max_queued_inbound`]; beyond it a stream is reset, so the opener sees an
//! error), and outbound opens carry their reply in the substream request, so several can be
//! negotiated at once on one connection.
//!
//! The [`Stream`]s it hands out fail their pending and later reads and writes as soon as
//! their connection is gone. A yamux connection dropped while it closes (a forced
//! disconnect) leaves its own streams pending for ever, and with them every task that reads
//! one: one such reader was left behind per disconnect.
//!
//! The swarm must be driven by its owner. Opening a stream to a peer that is not connected
//! dials it, with the addresses the swarm knows for it (for example from
//! `Swarm::add_peer_address`).

#![deny(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::channel::{mpsc, oneshot};
use futures::future::{Ready, ready};
use futures::task::AtomicWaker;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, StreamUpgradeError, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};

type RawStream = libp2p::Stream;

/// Opening a stream failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The peer does not speak the protocol.
    UnsupportedProtocol(StreamProtocol),
    /// The peer could not be reached, or negotiation failed.
    Io(io::Error),
    /// The swarm stopped (its behaviour was dropped): no stream will open again.
    Stopped,
}

impl std::fmt::Display for OpenStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsupportedProtocol(p) => write!(f, "the peer does not support {p}"),
            Self::Io(e) => write!(f, "opening the stream failed: {e}"),
            Self::Stopped => f.write_str("the swarm stopped"),
        }
    }
}

impl std::error::Error for OpenStreamError {}

/// The protocol already has an acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyRegistered;

impl std::fmt::Display for AlreadyRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the protocol is already registered")
    }
}

impl std::error::Error for AlreadyRegistered {}

/// A request to open a stream, with where the answer goes.
#[derive(Debug)]
pub struct Open {
    protocol: StreamProtocol,
    reply: oneshot::Sender<Result<Stream, OpenStreamError>>,
}

/// Inbound streams queued per protocol by default.
pub const DEFAULT_MAX_QUEUED_INBOUND: usize = 1024;

/// One accepted protocol: where its streams go, and how many wait there.
struct Acceptor {
    tx: mpsc::UnboundedSender<(PeerId, Stream)>,
    queued: Arc<AtomicUsize>,
}

struct Shared {
    /// Where the inbound streams of each accepted protocol go.
    inbound: HashMap<StreamProtocol, Acceptor>,
    /// Most inbound streams waiting per protocol.
    max_queued: usize,
    /// Opens asked for by controls, not yet seen by the behaviour.
    requests: VecDeque<(PeerId, Open)>,
    /// The behaviour's task, woken when a request arrives.
    waker: Option<Waker>,
    /// The behaviour is gone (its swarm stopped): no stream opens or arrives any more.
    closed: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The maps stay consistent even if a holder panicked: carry on with them.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn protocols(&mut self) -> Vec<StreamProtocol> {
        self.inbound.retain(|_, a| !a.tx.is_closed());
        self.inbound.keys().cloned().collect()
    }
}

/// Opens and accepts streams through a [`Behaviour`]. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Control {
    /// Accepts inbound streams of `protocol` from now on; they arrive, in order, on the
    /// returned stream. Dropping it stops accepting.
    pub fn accept(
        &mut self,
        protocol: StreamProtocol,
    ) -> Result<IncomingStreams, AlreadyRegistered> {
        let mut shared = lock(&self.shared);
        shared.inbound.retain(|_, a| !a.tx.is_closed());
        if shared.inbound.contains_key(&protocol) {
            return Err(AlreadyRegistered);
        }
        let (tx, rx) = mpsc::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        if shared.closed {
            // No stream will come: the returned stream ends at once.
            return Ok(IncomingStreams { rx, queued });
        }
        shared.inbound.insert(
            protocol,
            Acceptor {
                tx,
                queued: queued.clone(),
            },
        );
        Ok(IncomingStreams { rx, queued })
    }

    /// Opens a stream of `protocol` to `peer`, dialing it if needed.
    pub async fn open_stream(
        &mut self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, OpenStreamError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return Err(OpenStreamError::Stopped);
            }
            shared.requests.push_back((peer, Open { protocol, reply }));
            if let Some(w) = shared.waker.take() {
                w.wake();
            }
        }
        answer.await.unwrap_or_else(|_| {
            if lock(&self.shared).closed {
                Err(OpenStreamError::Stopped)
            } else {
                Err(OpenStreamError::Io(io::Error::other(
                    "the stream's connection closed before it opened",
                )))
            }
        })
    }
}

/// Inbound streams of one protocol, with the peer that opened each.
#[derive(Debug)]
pub struct IncomingStreams {
    rx: mpsc::UnboundedReceiver<(PeerId, Stream)>,
    queued: Arc<AtomicUsize>,
}

impl futures::Stream for IncomingStreams {
    type Item = (PeerId, Stream);

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.rx).poll_next(cx);
        if let Poll::Ready(Some(_)) = &next {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        next
    }
}

/// The behaviour: put it in the swarm, take [`Control`]s from it.
pub struct Behaviour {
    shared: Arc<Mutex<Shared>>,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Opens waiting for a connection to their peer.
    dialing: HashMap<PeerId, Vec<Open>>,
    events: VecDeque<ToSwarm<Infallible, Open>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("connected_peers", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour accepting no protocol yet, queueing up to
    /// [`DEFAULT_MAX_QUEUED_INBOUND`] inbound streams per protocol.
    pub fn new() -> Self {
        Self::with_max_queued_inbound(DEFAULT_MAX_QUEUED_INBOUND)
    }

    /// A behaviour that queues at most `max` inbound streams per protocol for its acceptor;
    /// more are reset.
    pub fn with_max_queued_inbound(max: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                inbound: HashMap::new(),
                max_queued: max.max(1),
                requests: VecDeque::new(),
                waker: None,
                closed: false,
            })),
            connections: HashMap::new(),
            dialing: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// A control over this behaviour's streams.
    ///
    /// Once the behaviour is dropped (its swarm stopped), opens fail and the acceptors'
    /// streams of inbound streams end.
    pub fn new_control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
        }
    }

    fn route(&mut self, peer: PeerId, open: Open) {
        match self.connections.get(&peer).and_then(|c| c.last()) {
            Some(conn) => self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*conn),
                event: open,
            }),
            None => {
                let waiting = self.dialing.entry(peer).or_default();
                if waiting.is_empty() {
                    self.events.push_back(ToSwarm::Dial {
                        opts: DialOpts::peer_id(peer).build(),
                    });
                }
                waiting.push(open);
            }
        }
    }
}

impl Drop for Behaviour {
    /// Ends the acceptors' streams and fails the opens still waiting, so the tasks that
    /// accept or open streams through a control learn the swarm is gone.
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.closed = true;
        shared.inbound.clear();
        shared.requests.clear();
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(peer, self.shared.clone()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(peer, self.shared.clone()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .push(e.connection_id);
                for open in self.dialing.remove(&e.peer_id).unwrap_or_default() {
                    self.route(e.peer_id, open);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(conns) = self.connections.get_mut(&e.peer_id) {
                    conns.retain(|c| *c != e.connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            FromSwarm::DialFailure(e) => {
                let Some(peer) = e.peer_id else { return };
                // Another dial to the peer is under way: its connection will take the opens.
                if self.connections.contains_key(&peer)
                    || matches!(e.error, DialError::DialPeerConditionFalse(_))
                {
                    return;
                }
                for open in self.dialing.remove(&peer).unwrap_or_default() {
                    let _ = open
                        .reply
                        .send(Err(OpenStreamError::Io(io::Error::other(format!(
                            "cannot reach {peer}: {}",
                            e.error
                        )))));
                }
            }
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
        let requests: Vec<(PeerId, Open)> = {
            let mut shared = lock(&self.shared);
            shared.waker = Some(cx.waker().clone());
            shared.requests.drain(..).collect()
        };
        for (peer, open) in requests {
            self.route(peer, open);
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

/// The protocols a stream may be negotiated for.
#[derive(Debug, Clone)]
pub struct Protocols(Vec<StreamProtocol>);

impl UpgradeInfo for Protocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<RawStream> for Protocols {
    type Output = (RawStream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: RawStream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<RawStream> for Protocols {
    type Output = (RawStream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: RawStream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

/// The connection handler: negotiates the streams of one connection.
pub struct Handler {
    peer: PeerId,
    shared: Arc<Mutex<Shared>>,
    pending: VecDeque<Open>,
    waker: Option<Waker>,
    /// The signals of the streams of this connection, told when it goes.
    streams: Vec<std::sync::Weak<Signal>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Handler {
    fn new(peer: PeerId, shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            peer,
            shared,
            pending: VecDeque::new(),
            waker: None,
            streams: Vec::new(),
        }
    }

    /// Wraps a stream of this connection.
    fn wrap(&mut self, inner: RawStream) -> Stream {
        let signal = Arc::new(Signal::default());
        // Forget the streams that ended, now and then, so the list stays as long as the
        // connection's live streams.
        if self.streams.len() >= 64 && self.streams.len().is_power_of_two() {
            self.streams.retain(|w| w.strong_count() > 0);
        }
        self.streams.push(Arc::downgrade(&signal));
        Stream { inner, signal }
    }
}

impl Drop for Handler {
    /// The connection is gone: its streams' readers and writers learn it now. (A yamux
    /// connection dropped while it closes leaves its streams pending for ever.)
    fn drop(&mut self) {
        for s in self.streams.drain(..).filter_map(|w| w.upgrade()) {
            s.gone.store(true, Ordering::SeqCst);
            s.reader.wake();
            s.writer.wake();
        }
    }
}

/// Whether a stream's connection is gone, and who to wake when it goes.
#[derive(Default)]
struct Signal {
    gone: std::sync::atomic::AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// Tells whether a stream's connection has closed; it outlives the stream
/// ([`Stream::connection`]).
#[derive(Clone)]
pub struct ConnectionWatch(Arc<Signal>);

impl ConnectionWatch {
    /// Whether the connection has closed. Set when libp2p lets go of the connection's
    /// handler, a moment after the muxer failed the connection's streams.
    pub fn is_closed(&self) -> bool {
        self.0.gone.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for ConnectionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionWatch")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A stream to a peer, negotiated for one protocol.
///
/// It reads and writes like the libp2p stream it wraps, and more: once its connection is
/// gone, pending and later reads and writes fail with `ConnectionAborted`, whatever the
/// multiplexer did with the stream.
pub struct Stream {
    inner: RawStream,
    signal: Arc<Signal>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("gone", &self.signal.gone.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Stream {
    fn gone(&self) -> bool {
        self.signal.gone.load(Ordering::SeqCst)
    }

    /// A watch on the connection this stream runs on, to tell a stream that failed alone
    /// (reset by the peer, its connection still up) from one whose connection closed.
    pub fn connection(&self) -> ConnectionWatch {
        ConnectionWatch(self.signal.clone())
    }

    fn aborted<T>() -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the connection closed",
        )))
    }

    /// Runs a poll of the inner stream, failing once the connection is gone; `read` says
    /// which side's waker the connection's end wakes.
    fn guarded<T>(
        &mut self,
        read: bool,
        cx: &mut Context<'_>,
        poll: impl FnOnce(std::pin::Pin<&mut RawStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let waker = if read {
            &self.signal.reader
        } else {
            &self.signal.writer
        };
        waker.register(cx.waker());
        if self.gone() {
            return Self::aborted();
        }
        match poll(std::pin::Pin::new(&mut self.inner), cx) {
            Poll::Pending if self.gone() => Self::aborted(),
            other => other,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guarded(true, cx, |s, cx| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guarded(false, cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guarded(false, cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_close(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guarded(false, cx, |s, cx| s.poll_close(cx))
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Open;
    type ToBehaviour = Infallible;
    type InboundProtocol = Protocols;
    type OutboundProtocol = Protocols;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Open;

    fn listen_protocol(&self) -> SubstreamProtocol<Protocols, ()> {
        SubstreamProtocol::new(Protocols(lock(&self.shared).protocols()), ())
    }

    fn on_behaviour_event(&mut self, open: Open) {
        self.pending.push_back(open);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Protocols, Open, Infallible>> {
        match self.pending.pop_front() {
            Some(open) => Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(Protocols(vec![open.protocol.clone()]), open),
            }),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<'_, Protocols, Protocols, (), Open>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => {
                let stream = self.wrap(stream);
                let mut shared = lock(&self.shared);
                let max = shared.max_queued;
                let Some(acceptor) = shared.inbound.get(&protocol) else {
                    return;
                };
                // Past the bound the stream is dropped, which resets it.
                if acceptor.queued.load(Ordering::SeqCst) >= max {
                    return;
                }
                acceptor.queued.fetch_add(1, Ordering::SeqCst);
                if acceptor.tx.unbounded_send((self.peer, stream)).is_err() {
                    // Nobody accepts it any more.
                    shared.inbound.remove(&protocol);
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info,
            }) => {
                let stream = self.wrap(stream);
                let _ = info.reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => {
                        OpenStreamError::UnsupportedProtocol(info.protocol.clone())
                    }
                    StreamUpgradeError::Timeout => {
                        OpenStreamError::Io(io::Error::from(io::ErrorKind::TimedOut))
                    }
                    StreamUpgradeError::Io(e) => OpenStreamError::Io(e),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = info.reply.send(Err(error));
            }
            _ => {}
        }
    }
}

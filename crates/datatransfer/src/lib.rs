//! The data-transfer protocol of Filecoin and IPFS (go-data-transfer's `Manager`), in Rust.
//!
//! Two libp2p peers open a *channel* to move an IPLD DAG (a root CID and a selector) from one
//! to the other, by push or pull. The side that receives the request checks its *voucher*
//! with a [`RequestValidator`]; a [`Revalidator`] can pause a running transfer until a new
//! voucher arrives and settle at the end. Channels can be paused, resumed, cancelled and
//! restarted; their state is kept in a [`ChannelStore`] and channels left in progress are
//! restarted by [`Manager::start`]. Every state change reaches subscribers as an [`Event`]
//! with the channel's state.
//!
//! A [`Manager`] composes the crates of this workspace: the sans-IO engine
//! (`datatransfer-fsm`), the libp2p data-transfer network (`datatransfer-network`), the
//! graphsync transport (`datatransfer-transport-graphsync`) and a channel store (in memory, or
//! SQLite with `ManagerBuilder::sqlite_store`). It runs the engine in one tokio task.
//!
//! By default it builds and drives a libp2p swarm of its own (TCP, TLS or noise, yamux). A node
//! with a swarm of its own nests [`DataTransferBehaviour`] in its behaviour and builds the
//! manager on it with [`ManagerBuilder::behaviour`] (see `examples/embed.rs`); any
//! [`ChannelStore`], [`DataTransferNetwork`] or [`Transport`] can replace the default one
//! (see `examples/custom_store.rs`).
//!
//! Feature flags:
//! - `sqlite` (default): the SQLite channel store, `ManagerBuilder::sqlite_store`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), datatransfer::ManagerError> {
//! use datatransfer::{Manager, all_selector};
//! let manager = Manager::builder().build().await?;
//! manager.start().await?;
//! println!("listening on {:?} as {}", manager.listen_addrs().await, manager.peer_id());
//! # Ok(()) }
//! ```
//!
//! See `examples/retrieval.rs` for vouchers, a validator, a revalidator and a pull.

#![deny(missing_docs)]

mod senders;
mod store_queue;
mod subscription;
mod swarm;
mod task;
pub mod tls;
pub mod validation;

use std::sync::Arc;
use std::time::Duration;

use datatransfer_fsm::{Engine, EngineConfig, MonitorConfig, UsageError};
pub use datatransfer_fsm::{Transport, TransportCommand, TransportEvent, TransportEventSink};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
pub use datatransfer_network::{DataTransferNetwork, Libp2pNetwork, NetworkConfig, NetworkEvent};
use datatransfer_network::{DialError, ProtectHandle};
use datatransfer_streams::Control;
pub use datatransfer_transport_graphsync::{GraphsyncTransport, GraphsyncTransportConfig};
use tokio::sync::{mpsc, oneshot};

pub use datatransfer_fsm::MonitorConfig as ChannelMonitorConfig;
pub use datatransfer_network::peer_of;
pub use datatransfer_types::store::{
    ChannelFilter, ChannelStore, ChannelUpdate, MemoryChannelStore, PurgeFinished, StoreError,
};
pub use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Event, EventCode, PeerId, Registerable, Status,
    TypeIdentifier, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher,
    VoucherResult,
};
pub use libp2p::{Multiaddr, identity};
pub use subscription::{Subscription, SubscriptionItem};
pub use swarm::{DataTransferBehaviour, SecureChannels};
pub use validation::{AcceptAll, RequestValidator, Revalidator, TransportConfigurer};

use crate::task::{Api, EngineTask, Inputs, Sink};

/// What can go wrong using a [`Manager`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The call does not fit the channel's state (unknown channel, not the initiator, limits).
    #[error(transparent)]
    Usage(UsageError),
    /// The channel store failed.
    #[error("channel store: {0}")]
    Store(#[from] StoreError),
    /// Building the libp2p swarm failed.
    #[error("libp2p: {0}")]
    Swarm(String),
    /// Listening on an address failed.
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
    /// Dialing a peer failed.
    #[error("cannot reach {0}: {1}")]
    Dial(Multiaddr, String),
    /// A protocol is already registered on the swarm.
    #[error("protocol already registered: {0}")]
    AlreadyRegistered(String),
    /// A voucher could not be encoded.
    #[error("voucher: {0}")]
    Voucher(String),
    /// The manager was stopped.
    #[error("the manager is stopped")]
    Stopped,
    /// The call needs a libp2p swarm, and the manager has none (it was built with another
    /// network and transport).
    #[error("the manager runs on no libp2p swarm")]
    NoSwarm,
    /// The builder was given parts that do not fit together.
    #[error("manager configuration: {0}")]
    Config(String),
}

/// Settings of a [`Manager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Limits of the engine and the channel monitor.
    pub engine: EngineConfig,
    /// The data-transfer network (protocol versions, retries, message limits).
    pub network: NetworkConfig,
    /// The graphsync transport (protocol versions, message sizes, response limits).
    pub transport: GraphsyncTransportConfig,
    /// Restart channels found in progress in the store on [`Manager::start`].
    pub restart_on_start: bool,
    /// How long a connection with no open channel stays up.
    pub idle_connection_timeout: Duration,
    /// The secure channels of the manager's own swarm and their order (TLS, then noise, by
    /// default). Not used with a swarm of the application's ([`ManagerBuilder::behaviour`]).
    pub secure_channels: SecureChannels,
    /// How long finished channels stay in the store; `None` (the default): for ever, as in
    /// go-data-transfer. A library does not delete its user's records unasked; a node that
    /// runs for months should set it (the CLI's `serve` keeps a week / 10,000). The memory
    /// of recently finished channels that answers a late restart is loaded from the store at
    /// start and is not affected.
    pub retention: Option<Retention>,
    /// How many events each [`Subscription`] holds unread (4,096 by default). Progress events
    /// of a channel merge while unread; past the bound the oldest are dropped and the
    /// subscriber is told ([`SubscriptionItem::Lagged`]).
    pub subscriber_queue: usize,
}

/// How long finished channels (Completed, Failed, Cancelled) stay in the channel store: a
/// node that finishes channels for months keeps a bounded store. Swept every `sweep_every`;
/// [`Manager::purge_finished`] removes them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Remove channels finished longer ago than this.
    pub keep_for: Option<Duration>,
    /// Keep at most this many finished channels, the most recently finished.
    pub keep_at_most: Option<usize>,
    /// How often to sweep.
    pub sweep_every: Duration,
}

impl Default for Retention {
    /// A week, 10,000 channels at most, swept every minute.
    fn default() -> Self {
        Self {
            keep_for: Some(Duration::from_secs(7 * 24 * 3600)),
            keep_at_most: Some(10_000),
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// What [`Manager::cancel_channel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReport {
    /// The channel's status on our side afterwards (Cancelling or Cancelled; it never runs
    /// again, also after a restart of the node).
    pub status: Status,
    /// Whether the other peer heard of it.
    pub peer: PeerNotice,
}

/// Whether the other peer was told of a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerNotice {
    /// The cancel message went out.
    Told,
    /// Sending it failed (the peer is gone or unreachable); the reason.
    NotTold(String),
    /// Still trying when the wait ran out; the node keeps trying in the background.
    NoAnswerWithin(Duration),
    /// The node stopped before the message could go out.
    NodeStopped,
}

impl std::fmt::Display for PeerNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Told => f.write_str("the peer was told"),
            Self::NotTold(why) => write!(f, "the peer could not be told: {why}"),
            Self::NoAnswerWithin(d) => write!(
                f,
                "the peer was not reached within {:.1} s (still trying)",
                d.as_secs_f64()
            ),
            Self::NodeStopped => f.write_str("the node stopped before the peer was told"),
        }
    }
}

impl Default for ManagerConfig {
    /// The channel monitor on with go-data-transfer's usual settings; restarts on start.
    fn default() -> Self {
        Self {
            engine: EngineConfig {
                monitor: Some(MonitorConfig::default()),
                ..EngineConfig::default()
            },
            network: NetworkConfig::default(),
            transport: GraphsyncTransportConfig::default(),
            restart_on_start: true,
            idle_connection_timeout: Duration::from_secs(60),
            secure_channels: SecureChannels::default(),
            retention: None,
            subscriber_queue: 4096,
        }
    }
}

/// Builds a [`Manager`].
///
/// By default the manager builds and drives a swarm of its own (TCP, TLS or noise, yamux, a new
/// identity unless [`ManagerBuilder::keypair`] gives one), runs the data-transfer protocols
/// over it ([`Libp2pNetwork`]) and moves bytes with graphsync ([`GraphsyncTransport`]), keeping
/// channels in memory. Each part can be swapped:
/// - [`ManagerBuilder::behaviour`]: run on an application's own swarm instead;
/// - [`ManagerBuilder::network`], [`ManagerBuilder::transport`],
///   [`ManagerBuilder::channel_store`]: any implementation of the traits.
///
/// The type parameter is the transport's type, so that transport configurers get it typed.
pub struct ManagerBuilder<T: Transport = GraphsyncTransport> {
    keypair: Option<identity::Keypair>,
    listen: Vec<Multiaddr>,
    store: Option<Arc<dyn ChannelStore>>,
    #[cfg(feature = "sqlite")]
    sqlite: Option<std::path::PathBuf>,
    blockstore: Option<Arc<dyn Blockstore>>,
    config: ManagerConfig,
    embedded: Option<(PeerId, Control, ProtectHandle)>,
    network: Option<(Arc<dyn DataTransferNetwork>, mpsc::Receiver<NetworkEvent>)>,
    transport: TransportChoice<T>,
}

/// The transport a builder will use.
enum TransportChoice<T> {
    /// Graphsync over the swarm's streams, made at build.
    Graphsync(fn(Arc<GraphsyncTransport>) -> Arc<T>),
    /// The caller's.
    Given(Arc<T>),
}

impl<T: Transport> std::fmt::Debug for ManagerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("listen", &self.listen)
            .field("config", &self.config)
            .field("embedded", &self.embedded.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ManagerBuilder<T> {
    /// The node's identity, for the swarm the manager builds; a new Ed25519 key if not
    /// given. (On an application's swarm, the swarm has the identity.)
    pub fn keypair(mut self, keypair: identity::Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Adds an address for the swarm the manager builds to listen on;
    /// `/ip4/127.0.0.1/tcp/0` if none is given. (An application listens on its own swarm.)
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Runs on an application's swarm, whose local peer id is `local_peer_id` and which
    /// holds `behaviour` (nested in the application's own behaviour). The manager builds no
    /// swarm: the application drives its swarm, listens and dials with it as it likes;
    /// [`Manager::connect`] and the other peer methods work through the behaviour.
    pub fn behaviour(mut self, local_peer_id: PeerId, behaviour: &DataTransferBehaviour) -> Self {
        self.embedded = Some((local_peer_id, behaviour.control(), behaviour.peers()));
        self
    }

    /// Sends and receives data-transfer messages with this network instead of
    /// [`Libp2pNetwork`] on the swarm's streams: `incoming` yields what peers send.
    pub fn network(
        mut self,
        network: Arc<dyn DataTransferNetwork>,
        incoming: mpsc::Receiver<NetworkEvent>,
    ) -> Self {
        self.network = Some((network, incoming));
        self
    }

    /// Moves the bytes of channels with this transport instead of graphsync. Transport
    /// configurers then get this transport's type.
    pub fn transport<U: Transport>(self, transport: Arc<U>) -> ManagerBuilder<U> {
        ManagerBuilder {
            keypair: self.keypair,
            listen: self.listen,
            store: self.store,
            #[cfg(feature = "sqlite")]
            sqlite: self.sqlite,
            blockstore: self.blockstore,
            config: self.config,
            embedded: self.embedded,
            network: self.network,
            transport: TransportChoice::Given(transport),
        }
    }

    /// Keeps channel state in this store; in memory if not given.
    pub fn channel_store(mut self, store: Arc<dyn ChannelStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps channel state in a SQLite file (created if missing).
    #[cfg(feature = "sqlite")]
    pub fn sqlite_store(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.sqlite = Some(path.as_ref().to_path_buf());
        self
    }

    /// Serves and stores blocks in this store (with the graphsync transport); in memory if
    /// not given.
    pub fn blockstore(mut self, store: Arc<dyn Blockstore>) -> Self {
        self.blockstore = Some(store);
        self
    }

    /// Settings.
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    fn channel_store_to_use(&mut self) -> Result<Arc<dyn ChannelStore>, ManagerError> {
        if let Some(s) = self.store.take() {
            return Ok(s);
        }
        #[cfg(feature = "sqlite")]
        if let Some(path) = self.sqlite.take() {
            return Ok(Arc::new(
                datatransfer_store_sqlite::SqliteChannelStore::open(path)?,
            ));
        }
        Ok(Arc::new(MemoryChannelStore::new(1_000)))
    }

    /// Builds what was not given (the swarm, the network, the transport, the stores) and
    /// starts the engine. Register voucher types next, then call [`Manager::start`].
    pub async fn build(mut self) -> Result<Manager<T>, ManagerError> {
        if self.embedded.is_some() && (self.keypair.is_some() || !self.listen.is_empty()) {
            return Err(ManagerError::Config(
                "keypair and listen_on are for the swarm the manager builds; on an \
                 application's swarm (behaviour), the application sets them"
                    .into(),
            ));
        }
        let store = self.channel_store_to_use()?;
        let blockstore = self
            .blockstore
            .take()
            .unwrap_or_else(|| Arc::new(MemoryBlockstore::new()));
        let needs_swarm =
            self.network.is_none() || matches!(self.transport, TransportChoice::Graphsync(_));
        let mut own_swarm = None;
        let libp2p = match self.embedded.take() {
            Some(parts) => Some(parts),
            None if needs_swarm => {
                let keypair = self
                    .keypair
                    .take()
                    .unwrap_or_else(identity::Keypair::generate_ed25519);
                let me = keypair.public().to_peer_id();
                let listen = if self.listen.is_empty() {
                    vec![
                        Multiaddr::empty()
                            .with(libp2p::multiaddr::Protocol::Ip4([127, 0, 0, 1].into()))
                            .with(libp2p::multiaddr::Protocol::Tcp(0)),
                    ]
                } else {
                    std::mem::take(&mut self.listen)
                };
                let swarm = swarm::build(
                    keypair,
                    &listen,
                    self.config.idle_connection_timeout,
                    self.config.secure_channels,
                )
                .await?;
                let parts = (me, swarm.behaviour().control(), swarm.behaviour().peers());
                own_swarm = Some(swarm);
                Some(parts)
            }
            None => None,
        };
        let me = match (&libp2p, &self.network) {
            (Some((me, _, _)), _) => *me,
            (None, Some((net, _))) => net.peer_id(),
            (None, None) => return Err(ManagerError::Config("no network and no swarm".into())),
        };
        let (net, net_rx): (Arc<dyn DataTransferNetwork>, _) = match self.network.take() {
            Some((net, rx)) => (net, rx),
            None => {
                let Some((_, control, peers)) = &libp2p else {
                    return Err(ManagerError::Config("no network and no swarm".into()));
                };
                let (net, rx) = Libp2pNetwork::new(
                    me,
                    control.clone(),
                    peers.clone(),
                    self.config.network.clone(),
                )
                .map_err(|e| ManagerError::AlreadyRegistered(e.to_string()))?;
                (Arc::new(net), rx)
            }
        };
        let transport: Arc<T> = match self.transport {
            TransportChoice::Given(t) => t,
            TransportChoice::Graphsync(wrap) => {
                let Some((_, control, _)) = &libp2p else {
                    return Err(ManagerError::Config(
                        "the graphsync transport needs a swarm".into(),
                    ));
                };
                let gs = GraphsyncTransport::start(
                    me,
                    control.clone(),
                    blockstore.clone(),
                    self.config.transport.clone(),
                )
                .map_err(|e| ManagerError::AlreadyRegistered(e.to_string()))?;
                wrap(Arc::new(gs))
            }
        };
        let (tr_tx, tr_rx) = mpsc::unbounded_channel();
        transport.attach(Arc::new(Sink(tr_tx)));
        let peers = libp2p.map(|(_, _, peers)| peers);
        let disconnected = match &peers {
            Some(p) => p.disconnections(),
            None => mpsc::unbounded_channel().1,
        };
        let swarm_stop = own_swarm.map(|swarm| {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(swarm::run(swarm, rx));
            tx
        });
        let first_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 & (u64::MAX >> 1));
        let engine = Engine::new(me, self.config.engine.clone(), first_id);
        let (api_tx, api_rx) = mpsc::channel(1024);
        let task = EngineTask::new(
            engine,
            net,
            transport.clone(),
            store.clone(),
            self.config.restart_on_start,
            self.config.retention,
            self.config.subscriber_queue,
        );
        let store_queue = task.store_queue.clone();
        let engine_busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let run = task.run(Inputs {
            api: api_rx,
            network: net_rx,
            transport: tr_rx,
            disconnected,
        });
        tokio::spawn(task::Timed::new(run, engine_busy.clone()));
        Ok(Manager {
            me,
            api: api_tx,
            swarm_stop,
            peers,
            store,
            blockstore,
            transport,
            store_queue,
            engine_busy,
        })
    }
}

/// A data-transfer node: open, watch and steer channels. Cheap to clone; all clones talk to
/// the same engine task. `T` is its transport's type ([`GraphsyncTransport`] unless the
/// builder was given another).
pub struct Manager<T: Transport = GraphsyncTransport> {
    me: PeerId,
    api: mpsc::Sender<Api>,
    /// Stops the swarm the manager built (none on an application's swarm).
    swarm_stop: Option<mpsc::Sender<()>>,
    /// Peers of the swarm (none with neither a swarm nor the libp2p network).
    peers: Option<ProtectHandle>,
    store: Arc<dyn ChannelStore>,
    blockstore: Arc<dyn Blockstore>,
    transport: Arc<T>,
    /// Channel updates waiting for the store writer.
    store_queue: Arc<std::sync::atomic::AtomicUsize>,
    /// Nanoseconds the engine task has spent working.
    engine_busy: Arc<std::sync::atomic::AtomicU64>,
}

/// How much work waits in a [`Manager`]'s queues at one moment (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// API calls waiting for the engine task.
    pub api: usize,
    /// Channel updates waiting to be written to the store.
    pub store: usize,
}

impl<T: Transport> Clone for Manager<T> {
    fn clone(&self) -> Self {
        Self {
            me: self.me,
            api: self.api.clone(),
            swarm_stop: self.swarm_stop.clone(),
            peers: self.peers.clone(),
            store: self.store.clone(),
            blockstore: self.blockstore.clone(),
            transport: self.transport.clone(),
            store_queue: self.store_queue.clone(),
            engine_busy: self.engine_busy.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for Manager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("peer_id", &self.me)
            .field("own_swarm", &self.swarm_stop.is_some())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A builder with defaults: its own swarm with a new identity on 127.0.0.1 and an
    /// ephemeral port, graphsync, in-memory stores, the channel monitor on.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder {
            keypair: None,
            listen: Vec::new(),
            store: None,
            #[cfg(feature = "sqlite")]
            sqlite: None,
            blockstore: None,
            config: ManagerConfig::default(),
            embedded: None,
            network: None,
            transport: TransportChoice::Graphsync(|gs| gs),
        }
    }
}

impl<T: Transport> Manager<T> {
    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peers(&self) -> Result<&ProtectHandle, ManagerError> {
        self.peers.as_ref().ok_or(ManagerError::NoSwarm)
    }

    /// The addresses the swarm listens on (empty without a swarm).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.peers
            .as_ref()
            .map(ProtectHandle::listen_addrs)
            .unwrap_or_default()
    }

    /// The swarm's first listen address with `/p2p/<peer id>` appended: what another node
    /// dials.
    pub fn multiaddr(&self) -> Option<Multiaddr> {
        let first = self.peers.as_ref()?.listen_addrs().into_iter().next()?;
        Some(first.with(libp2p::multiaddr::Protocol::P2p(self.me)))
    }

    /// The block store channels read from and write to by default.
    pub fn blockstore(&self) -> &Arc<dyn Blockstore> {
        &self.blockstore
    }

    /// The channel store.
    pub fn channel_store(&self) -> &Arc<dyn ChannelStore> {
        &self.store
    }

    /// The transport (to give a channel its own block store, say).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Remembers an address of `peer`, so channels with it can be opened by peer id.
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) {
        if let Some(p) = &self.peers {
            p.add_address(peer, addr);
        }
    }

    /// Connects to `addr` (which must end in `/p2p/<peer id>`) and returns the peer's id.
    pub async fn connect(&self, addr: &Multiaddr) -> Result<PeerId, ManagerError> {
        self.peers()?.dial(addr.clone()).await.map_err(|e| match e {
            DialError::Stopped => ManagerError::Stopped,
            e => ManagerError::Dial(addr.clone(), e.to_string()),
        })
    }

    /// Whether a connection to `peer` is open.
    pub async fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.as_ref().is_some_and(|p| p.is_connected(&peer))
    }

    /// Closes every connection to `peer` (channels with it see a disconnect); returns
    /// whether there was one.
    pub async fn disconnect(&self, peer: PeerId) -> bool {
        self.peers.as_ref().is_some_and(|p| p.disconnect(peer))
    }

    async fn call<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<R, ManagerError>>) -> Api,
    ) -> Result<R, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.api
            .send(make(tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await.map_err(|_| ManagerError::Stopped)?
    }

    /// Loads the channels left in progress in the store and restarts them (unless
    /// [`ManagerConfig::restart_on_start`] is off); returns how many there were. Register
    /// voucher types first. Until it is called, what peers send (data-transfer messages,
    /// graphsync requests) and what the transport reports wait, as go-data-transfer hears
    /// nothing before its `Start`: a message about a channel of before a restart of this
    /// node finds the channel loaded, and a request finds its voucher type registered.
    pub async fn start(&self) -> Result<usize, ManagerError> {
        self.call(Api::Start).await
    }

    /// Stops the manager: the transport stops, every state change so far is written to the
    /// store, and the swarm closes its connections and listeners. Channels in progress stay
    /// in the store, to be restarted by the next manager's [`Manager::start`]. Other clones of
    /// this manager stop working too.
    pub async fn stop(&self) -> Result<(), ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.api
            .send(Api::Stop(tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await.map_err(|_| ManagerError::Stopped)?;
        if let Some(stop) = &self.swarm_stop {
            let _ = stop.send(()).await;
        }
        Ok(())
    }

    /// Accepts vouchers of type `type_id`, checked by `validator`.
    pub async fn register_voucher_type(
        &self,
        type_id: impl Into<TypeIdentifier>,
        validator: Arc<dyn RequestValidator>,
    ) -> Result<(), ManagerError> {
        let ty = type_id.into();
        self.call(|tx| Api::RegisterVoucherType(ty, validator, tx))
            .await
    }

    /// Revalidates channels whose voucher has type `type_id` with `revalidator`.
    pub async fn register_revalidator(
        &self,
        type_id: impl Into<TypeIdentifier>,
        revalidator: Arc<dyn Revalidator>,
    ) -> Result<(), ManagerError> {
        let ty = type_id.into();
        self.call(|tx| Api::RegisterRevalidator(ty, revalidator, tx))
            .await
    }

    /// Accepts voucher results of type `type_id` from responders.
    pub async fn register_voucher_result_type(
        &self,
        type_id: impl Into<TypeIdentifier>,
    ) -> Result<(), ManagerError> {
        let ty = type_id.into();
        self.call(|tx| Api::RegisterResultType(ty, tx)).await
    }

    /// Runs `configurer` for every channel whose voucher has type `type_id`, before the
    /// transport opens it; it gets this manager's transport, typed.
    pub async fn register_transport_configurer(
        &self,
        type_id: impl Into<TypeIdentifier>,
        configurer: Arc<dyn TransportConfigurer<T>>,
    ) -> Result<(), ManagerError> {
        let ty = type_id.into();
        let transport = self.transport.clone();
        let configure: task::Configure = Arc::new(move |channel, voucher| {
            configurer.configure(channel, voucher, &transport);
        });
        self.call(|tx| Api::RegisterConfigurer(ty, configure, tx))
            .await
    }

    /// Opens a channel that pushes the DAG under `root` chosen by `selector` to `to`.
    ///
    /// Returns once the channel's first state is stored: a crash after it does not lose it.
    pub async fn open_push_channel(
        &self,
        to: PeerId,
        voucher: Voucher,
        root: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, ManagerError> {
        self.call(|reply| Api::Open {
            pull: false,
            to,
            voucher,
            root,
            selector,
            reply,
        })
        .await
    }

    /// Opens a channel that pulls the DAG under `root` chosen by `selector` from `from`.
    ///
    /// Returns once the channel's first state is stored: a crash after it does not lose it.
    pub async fn open_pull_channel(
        &self,
        from: PeerId,
        voucher: Voucher,
        root: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, ManagerError> {
        self.call(|reply| Api::Open {
            pull: true,
            to: from,
            voucher,
            root,
            selector,
            reply,
        })
        .await
    }

    /// Sends a new voucher on a channel we initiated (to answer a payment request, say).
    pub async fn send_voucher(&self, id: ChannelId, voucher: Voucher) -> Result<(), ManagerError> {
        self.call(|tx| Api::SendVoucher(id, voucher, tx)).await
    }

    /// Cancels a channel, telling the other peer.
    ///
    /// Returns once the cancel is stored: a crash after it does not bring the channel back.
    /// The message to the peer goes out meanwhile; [`Manager::cancel_channel`] says whether
    /// it did.
    pub async fn close_channel(&self, id: ChannelId) -> Result<(), ManagerError> {
        self.call(|tx| Api::Close(id, tx)).await
    }

    /// Cancels a channel at once on our side and tells the other peer, waiting at most
    /// `peer_wait` to hear whether the message went out. Works whatever state the peer is in
    /// (gone, unreachable, unknown): the local cancel never waits for it, and a cancelled
    /// channel is never restarted.
    pub async fn cancel_channel(
        &self,
        id: ChannelId,
        peer_wait: Duration,
    ) -> Result<CancelReport, ManagerError> {
        let (status, told) = self.call(|tx| Api::Cancel(id, tx)).await?;
        let peer = match tokio::time::timeout(peer_wait, told).await {
            Ok(Ok(Ok(()))) => PeerNotice::Told,
            Ok(Ok(Err(why))) => PeerNotice::NotTold(why),
            Ok(Err(_)) => PeerNotice::NodeStopped,
            Err(_) => PeerNotice::NoAnswerWithin(peer_wait),
        };
        Ok(CancelReport { status, peer })
    }

    /// The channels passing `filter`: the engine's live state of running ones, the store's
    /// record of the rest (finished channels stay there as [`ManagerConfig::retention`] says).
    pub async fn channels(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, ManagerError> {
        self.call(|tx| Api::Channels(filter, tx)).await
    }

    /// How much work waits in the manager's queues now.
    pub fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            api: self.api.max_capacity() - self.api.capacity(),
            store: self.store_queue.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// How long the engine task has spent working since the manager was built (the time
    /// inside its polls: the state machine, the dispatch of its outputs to the network, the
    /// transport, the store writer's queue and the subscribers). Against the process's CPU
    /// time, it is the engine's share (for metrics and benchmarks).
    pub fn engine_busy(&self) -> Duration {
        Duration::from_nanos(self.engine_busy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Removes the finished channels `purge` names from the store now; returns how many.
    pub async fn purge_finished(&self, purge: PurgeFinished) -> Result<u64, ManagerError> {
        self.call(|tx| Api::Purge(purge, tx)).await
    }

    /// Pauses our side of a channel.
    pub async fn pause_channel(&self, id: ChannelId) -> Result<(), ManagerError> {
        self.call(|tx| Api::Pause(id, tx)).await
    }

    /// Resumes our side of a channel.
    pub async fn resume_channel(&self, id: ChannelId) -> Result<(), ManagerError> {
        self.call(|tx| Api::Resume(id, tx)).await
    }

    /// Restarts a channel after a disconnect: the initiator opens it again, skipping the
    /// blocks already received; a responder asks the initiator to.
    pub async fn restart_channel(&self, id: ChannelId) -> Result<(), ManagerError> {
        self.call(|tx| Api::Restart(id, tx)).await
    }

    /// The channel's state: from the engine while it runs, from the store after.
    pub async fn channel_state(&self, id: ChannelId) -> Result<Option<ChannelState>, ManagerError> {
        self.call(|tx| Api::State(id, tx)).await
    }

    /// The channel's status, if the channel is known.
    pub async fn channel_status(&self, id: ChannelId) -> Result<Option<Status>, ManagerError> {
        Ok(self.channel_state(id).await?.map(|c| c.status))
    }

    /// The channels in progress.
    pub async fn in_progress_channels(&self) -> Result<Vec<ChannelState>, ManagerError> {
        self.call(Api::InProgress).await
    }

    /// A stream of every event on every channel, with the channel's state after it. Dropping
    /// the subscription unsubscribes. Its queue holds up to
    /// [`ManagerConfig::subscriber_queue`] events: a subscriber that falls behind reads merged
    /// progress events and, past that, is told how many events it missed
    /// ([`SubscriptionItem::Lagged`]); it never slows the Manager down.
    pub async fn subscribe(&self) -> Result<Subscription, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.api
            .send(Api::Subscribe(tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await.map_err(|_| ManagerError::Stopped)
    }
}

/// The selector of the whole DAG: `ExploreRecursive { limit: none, sequence: ExploreAll {
/// next: ExploreRecursiveEdge } }`, as go-data-transfer's tests use it.
pub fn all_selector() -> DagCbor {
    let bytes = datatransfer_ipld::selector::Selector::explore_all_recursively().to_dag_cbor();
    DagCbor::from_bytes(bytes).unwrap_or_else(|_| DagCbor::null())
}

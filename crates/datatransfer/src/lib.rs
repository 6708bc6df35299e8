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
//! SQLite with [`ManagerBuilder::sqlite_store`]). It owns a libp2p swarm (TCP + noise + yamux)
//! and runs the engine in one tokio task.
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

mod swarm;
mod task;
pub mod validation;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datatransfer_fsm::{Engine, EngineConfig, MonitorConfig, Transport, UsageError};
use datatransfer_network::{Libp2pNetwork, NetworkConfig};
use datatransfer_store_sqlite::SqliteChannelStore;
pub use datatransfer_transport_graphsync::{GraphsyncTransport, GraphsyncTransportConfig};
use dt_ipld::blockstore::{Blockstore, MemoryBlockstore};
use tokio::sync::{mpsc, oneshot};

pub use datatransfer_fsm::MonitorConfig as ChannelMonitorConfig;
pub use datatransfer_types::store::{ChannelStore, MemoryChannelStore, StoreError};
pub use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Event, EventCode, PeerId, Registerable, Status,
    TypeIdentifier, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher,
    VoucherResult,
};
pub use libp2p::{Multiaddr, identity};
pub use swarm::peer_of;
pub use validation::{AcceptAll, RequestValidator, Revalidator, TransportConfigurer};

use crate::task::{Api, EngineTask, Inputs, Sink};

/// What can go wrong using a [`Manager`].
#[derive(Debug, thiserror::Error)]
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
        }
    }
}

/// Builds a [`Manager`].
pub struct ManagerBuilder {
    keypair: Option<identity::Keypair>,
    listen: Vec<Multiaddr>,
    store: Option<Arc<dyn ChannelStore>>,
    sqlite: Option<std::path::PathBuf>,
    blockstore: Option<Arc<dyn Blockstore>>,
    config: ManagerConfig,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("listen", &self.listen)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// The node's identity; a new Ed25519 key if not given.
    pub fn keypair(mut self, keypair: identity::Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Adds an address to listen on; `/ip4/127.0.0.1/tcp/0` if none is given.
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Keeps channel state in this store; in memory if not given.
    pub fn channel_store(mut self, store: Arc<dyn ChannelStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps channel state in a SQLite file (created if missing).
    pub fn sqlite_store(mut self, path: impl AsRef<Path>) -> Self {
        self.sqlite = Some(path.as_ref().to_path_buf());
        self
    }

    /// Serves and stores blocks in this store; in memory if not given.
    pub fn blockstore(mut self, store: Arc<dyn Blockstore>) -> Self {
        self.blockstore = Some(store);
        self
    }

    /// Settings.
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the swarm, the network, the transport and the engine, and starts listening.
    /// Register voucher types next, then call [`Manager::start`].
    pub async fn build(self) -> Result<Manager, ManagerError> {
        let keypair = self
            .keypair
            .unwrap_or_else(identity::Keypair::generate_ed25519);
        let me = keypair.public().to_peer_id();
        let listen = if self.listen.is_empty() {
            vec!["/ip4/127.0.0.1/tcp/0".parse().map_err(|_| {
                ManagerError::Swarm("the default listen address does not parse".into())
            })?]
        } else {
            self.listen
        };
        let store: Arc<dyn ChannelStore> = match (self.store, self.sqlite) {
            (Some(s), _) => s,
            (None, Some(path)) => Arc::new(SqliteChannelStore::open(path)?),
            (None, None) => Arc::new(MemoryChannelStore::new(1_000)),
        };
        let blockstore = self
            .blockstore
            .unwrap_or_else(|| Arc::new(MemoryBlockstore::new()));
        let (swarm, addrs) =
            swarm::build(keypair, &listen, self.config.idle_connection_timeout).await?;
        let control = swarm.behaviour().stream.new_control();
        let protect = swarm.behaviour().protect.handle();
        let (net, net_rx) =
            Libp2pNetwork::new(me, control.clone(), protect, self.config.network.clone())
                .map_err(|e| ManagerError::AlreadyRegistered(e.to_string()))?;
        let transport = GraphsyncTransport::start(
            me,
            control,
            blockstore.clone(),
            self.config.transport.clone(),
        )
        .map_err(|e| ManagerError::AlreadyRegistered(e.to_string()))?;
        let (tr_tx, tr_rx) = mpsc::unbounded_channel();
        transport.attach(Arc::new(Sink(tr_tx)));
        let (swarm_tx, swarm_rx) = mpsc::channel(64);
        let (disc_tx, disc_rx) = mpsc::unbounded_channel();
        tokio::spawn(swarm::run(swarm, swarm_rx, disc_tx));
        let first_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 & (u64::MAX >> 1));
        let engine = Engine::new(me, self.config.engine.clone(), first_id);
        let (api_tx, api_rx) = mpsc::channel(1024);
        let task = EngineTask::new(
            engine,
            Arc::new(net),
            Arc::new(transport.clone()),
            store.clone(),
            self.config.restart_on_start,
        );
        tokio::spawn(task.run(Inputs {
            api: api_rx,
            network: net_rx,
            transport: tr_rx,
            disconnected: disc_rx,
        }));
        Ok(Manager {
            me,
            api: api_tx,
            swarm: swarm_tx,
            addrs,
            store,
            blockstore,
            transport,
        })
    }
}

/// A data-transfer node: open, watch and steer channels. Cheap to clone; all clones talk to
/// the same engine task.
#[derive(Clone)]
pub struct Manager {
    me: PeerId,
    api: mpsc::Sender<Api>,
    swarm: mpsc::Sender<swarm::SwarmCmd>,
    addrs: Vec<Multiaddr>,
    store: Arc<dyn ChannelStore>,
    blockstore: Arc<dyn Blockstore>,
    transport: GraphsyncTransport,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("peer_id", &self.me)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A builder with defaults: new identity, 127.0.0.1 on an ephemeral port, in-memory
    /// stores, the channel monitor on.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder {
            keypair: None,
            listen: Vec::new(),
            store: None,
            sqlite: None,
            blockstore: None,
            config: ManagerConfig::default(),
        }
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// The addresses we listen on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self
            .swarm
            .send(swarm::SwarmCmd::ListenAddrs(tx))
            .await
            .is_err()
        {
            return self.addrs.clone();
        }
        rx.await.unwrap_or_else(|_| self.addrs.clone())
    }

    /// Our first listen address with `/p2p/<peer id>` appended: what another node dials.
    pub fn multiaddr(&self) -> Option<Multiaddr> {
        self.addrs
            .first()
            .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(self.me)))
    }

    /// The block store channels read from and write to by default.
    pub fn blockstore(&self) -> &Arc<dyn Blockstore> {
        &self.blockstore
    }

    /// The channel store.
    pub fn channel_store(&self) -> &Arc<dyn ChannelStore> {
        &self.store
    }

    /// The graphsync transport (to give a channel its own block store, say).
    pub fn transport(&self) -> &GraphsyncTransport {
        &self.transport
    }

    /// Remembers an address of `peer`, so channels with it can be opened by peer id.
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self
            .swarm
            .send(swarm::SwarmCmd::AddAddress(peer, addr))
            .await;
    }

    /// Connects to `addr` (which must end in `/p2p/<peer id>`) and returns the peer's id.
    pub async fn connect(&self, addr: &Multiaddr) -> Result<PeerId, ManagerError> {
        let peer = peer_of(addr).ok_or_else(|| {
            ManagerError::Dial(addr.clone(), "no /p2p/<peer id> at the end".into())
        })?;
        let (tx, rx) = oneshot::channel();
        self.swarm
            .send(swarm::SwarmCmd::Dial(addr.clone(), tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await
            .map_err(|_| ManagerError::Stopped)?
            .map_err(|e| ManagerError::Dial(addr.clone(), e))?;
        Ok(peer)
    }

    /// Whether a connection to `peer` is open.
    pub async fn is_connected(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .swarm
            .send(swarm::SwarmCmd::IsConnected(peer, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Closes every connection to `peer` (channels with it see a disconnect).
    pub async fn disconnect(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .swarm
            .send(swarm::SwarmCmd::Disconnect(peer, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ManagerError>>) -> Api,
    ) -> Result<T, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.api
            .send(make(tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await.map_err(|_| ManagerError::Stopped)?
    }

    /// Loads the channels left in progress in the store and restarts them (unless
    /// [`ManagerConfig::restart_on_start`] is off); returns how many there were. Register
    /// voucher types first.
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
        let _ = self.swarm.send(swarm::SwarmCmd::Shutdown).await;
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
    /// transport opens it.
    pub async fn register_transport_configurer(
        &self,
        type_id: impl Into<TypeIdentifier>,
        configurer: Arc<dyn TransportConfigurer>,
    ) -> Result<(), ManagerError> {
        let ty = type_id.into();
        self.call(|tx| Api::RegisterConfigurer(ty, configurer, tx))
            .await
    }

    /// Opens a channel that pushes the DAG under `root` chosen by `selector` to `to`.
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
    pub async fn close_channel(&self, id: ChannelId) -> Result<(), ManagerError> {
        self.call(|tx| Api::Close(id, tx)).await
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
    /// the subscription unsubscribes. Events queue without bound: keep reading.
    pub async fn subscribe(&self) -> Result<Subscription, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.api
            .send(Api::Subscribe(tx))
            .await
            .map_err(|_| ManagerError::Stopped)?;
        rx.await.map_err(|_| ManagerError::Stopped)
    }
}

/// Events of a [`Manager`], in the order they happened (a [`futures::Stream`]).
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<(Event, ChannelState)>,
}

impl Subscription {
    /// The next event; `None` once the manager stopped.
    pub async fn next(&mut self) -> Option<(Event, ChannelState)> {
        self.rx.recv().await
    }
}

impl futures::Stream for Subscription {
    type Item = (Event, ChannelState);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The selector of the whole DAG: `ExploreRecursive { limit: none, sequence: ExploreAll {
/// next: ExploreRecursiveEdge } }`, as go-data-transfer's tests use it.
pub fn all_selector() -> DagCbor {
    let mut out = Vec::new();
    let n = |out: &mut Vec<u8>, major: u8, len: u64| {
        datatransfer_types::cbor::write_header(out, major, len)
    };
    let text = |out: &mut Vec<u8>, s: &str| {
        datatransfer_types::cbor::write_header(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    };
    // {"R": {"l": {"none": {}}, ":>": {"a": {">": {"@": {}}}}}}
    n(&mut out, 5, 1);
    text(&mut out, "R");
    n(&mut out, 5, 2);
    text(&mut out, "l");
    n(&mut out, 5, 1);
    text(&mut out, "none");
    n(&mut out, 5, 0);
    text(&mut out, ":>");
    n(&mut out, 5, 1);
    text(&mut out, "a");
    n(&mut out, 5, 1);
    text(&mut out, ">");
    n(&mut out, 5, 1);
    text(&mut out, "@");
    n(&mut out, 5, 0);
    DagCbor::from_bytes(out).unwrap_or_else(|_| DagCbor::null())
}

//! A deterministic simulator of the data-transfer protocol engine: many [`Engine`]s on an
//! in-memory network, each with the graphsync transport's own decision-making
//! ([`datatransfer_transport_graphsync::adapter::Adapter`]) over a simulated graphsync that
//! moves byte counts instead of blocks, and simple voucher policies.
//!
//! Everything is driven by a seeded random generator and a virtual clock, so a run is a pure
//! function of its seed: a failing seed replays exactly. The network delivers data-transfer
//! messages with random delays (optionally out of order, as separate libp2p streams may) and
//! graphsync traffic in order per pair of peers (one stream), and drops everything in flight
//! between two peers on [`Sim::disconnect`].
//!
//! The simulated graphsync speaks the protocol as our graphsync node does (see the
//! `transport` module): requests with extensions and a count of blocks not to send, the
//! incoming-request, outgoing-block, block-sent, incoming-block and completed-response hooks,
//! pauses as cancels and resumes as fresh requests. What the transport decides on each hook
//! is the real adapter's, so the scenarios test the engine and the adapter together.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use datatransfer_ipld::selector::Selector;
use datatransfer_types::message::Message;
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Event, EventCode, PeerId, Status, Timestamp, Validation,
    ValidationOutcome, Voucher,
};
use serde_like::PaymentNode;

use datatransfer_fsm::{
    Engine, EngineConfig, OnSendFailure, Output, TransportCommand, ValidationAnswer, ValidationCall,
};
use datatransfer_graphsync::node::{GraphSyncError, IncomingBlock, RequestDecision};
use datatransfer_graphsync::requester::VerifyError;
use datatransfer_graphsync::responder::{BlockDecision, OutgoingBlock};
use datatransfer_graphsync::{Extensions, RawNode, Request, RequestId, Response, ResponseStatus};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_transport_graphsync::adapter::{
    Action, Adapter, AdapterConfig, HookAnswer, HookId, SendRequest,
};
use transport::{GsNode, GsWire};

mod scenario;
mod transport;

/// Minimal voucher payloads the simulator's policies exchange, encoded as plain DAG-CBOR
/// integers so the simulator needs no serde derive of its own.
mod serde_like {
    use datatransfer_types::{DagCbor, TypedNode};

    /// A voucher or result whose node is one unsigned integer.
    pub(super) struct PaymentNode;

    impl PaymentNode {
        pub(super) fn make(type_id: &str, n: u64) -> TypedNode {
            let mut bytes = Vec::new();
            datatransfer_types::cbor::write_header(&mut bytes, 0, n);
            TypedNode::new(
                type_id.into(),
                DagCbor::from_bytes(bytes).expect("one integer"),
            )
        }

        pub(super) fn read(node: &TypedNode) -> Option<u64> {
            datatransfer_types::cbor::Reader::new(node.node.as_bytes())
                .read_uint()
                .ok()
        }
    }
}

/// The voucher type every simulated node registers.
pub const VOUCHER_TYPE: &str = "SimVoucher";
/// The voucher-result type of a responder's acknowledgement.
pub const RESULT_TYPE: &str = "SimResult";
/// The voucher-result type of a responder's payment request (carries the bytes owed).
pub const PAYMENT_REQUEST_TYPE: &str = "SimPaymentRequest";

/// A small deterministic generator (SplitMix64); no dependency, same numbers everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 99) < percent
    }
}

/// How a simulated node answers validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Reject every new request.
    pub reject_all: bool,
    /// As a responder, ask for a new voucher every this many bytes (pay-as-you-go).
    pub pay_interval: Option<u64>,
    /// As a responder, ask for a final voucher before completing.
    pub finalize: bool,
    /// As an initiator, answer every payment request with a voucher.
    pub auto_pay: bool,
    /// As a responder, take a restart of a channel awaiting payment as settling what is owed
    /// (a restart voucher that pays, say): its validation answers Resume.
    pub restart_settles: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            reject_all: false,
            pay_interval: None,
            finalize: false,
            auto_pay: true,
            restart_settles: false,
        }
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Network latency range, in virtual nanoseconds.
    pub delay: (u64, u64),
    /// Whether data-transfer messages between the same two peers may overtake each other.
    pub reorder: bool,
    /// Virtual time the sender spends per block.
    pub block_interval: u64,
    /// Engine limits for every node.
    pub engine: EngineConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 2,
            delay: (1_000, 50_000),
            reorder: false,
            block_interval: 100_000,
            engine: EngineConfig::default(),
        }
    }
}

// A data-transfer message is a few hundred bytes inline; deliveries live in one map until
// due, and boxing would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Delivery {
    Net {
        from: usize,
        to: usize,
        channel: ChannelId,
        message: Message,
        on_failure: OnSendFailure,
    },
    Transport {
        from: usize,
        to: usize,
        wire: GsWire,
    },
    /// The next block of node's response to `to`'s request `wire` is due.
    Tick {
        node: usize,
        to: usize,
        wire: RequestId,
    },
    /// A busy responder's wait is over: node asks again.
    Reopen {
        node: usize,
        channel: ChannelId,
        attempt: u64,
    },
}

/// Per-channel revalidation bookkeeping of a responder's policy.
#[derive(Debug, Clone, Default)]
struct Owed {
    unpaid: u64,
    awaiting: bool,
}

/// One simulated node.
#[derive(Debug)]
pub struct Node {
    /// Its peer id.
    pub peer: PeerId,
    /// Its engine.
    pub engine: Engine,
    /// How it validates.
    pub policy: Policy,
    /// Every event it emitted, in order, with the channel state after it.
    pub events: Vec<(Event, ChannelState)>,
    /// The last state persisted per channel (what a store would hold).
    pub store: BTreeMap<ChannelId, ChannelState>,
    /// Connections currently protected, per channel.
    pub protected: HashSet<ChannelId>,
    /// Its transport's decisions (the graphsync transport's adapter).
    adapter: Adapter,
    /// Its simulated graphsync.
    gs: GsNode,
    owed: HashMap<ChannelId, Owed>,
    /// Revalidations requested of this node as a responder.
    pub revalidations: u64,
    /// Every block index this node sent, per channel, in order (to show what went twice).
    pub sent_blocks: HashMap<ChannelId, Vec<u64>>,
}

/// The simulation: nodes, a virtual clock and the messages in flight.
#[derive(Debug)]
pub struct Sim {
    /// The nodes, indexed from 0.
    pub nodes: Vec<Node>,
    now: u64,
    seq: u64,
    rng: Rng,
    config: SimConfig,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    deliveries: HashMap<u64, Delivery>,
    /// Last delivery time per ordered pair, to keep streams in order.
    last: HashMap<(usize, usize, bool), u64>,
    down: HashSet<(usize, usize)>,
    dags: HashMap<Cid, (u64, u64)>,
    index: HashMap<PeerId, usize>,
    /// Number of deliveries processed.
    pub steps: u64,
    /// Channels closed through [`Sim::close`]: a cancel may race the other side's completion,
    /// so the two sides may legitimately end Cancelled and Completed.
    closed: HashSet<ChannelId>,
}

/// A peer id for node `i` (an identity multihash over a made-up key).
pub fn peer_id(i: usize) -> PeerId {
    datatransfer_test_support::peer_id(i as u64)
}

/// A CID naming DAG number `n` (the simulator only needs distinct roots).
pub fn dag_cid(n: u64) -> Cid {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    let mh = datatransfer_types::cid::multihash::Multihash::wrap(0x12, &digest)
        .expect("32-byte digest fits");
    Cid::new_v1(0x71, mh)
}

/// The "all" selector, as DAG-CBOR.
pub fn all_selector() -> DagCbor {
    DagCbor::from_bytes(Selector::explore_all_recursively().to_dag_cbor())
        .expect("well-formed selector")
}

/// A voucher of the simulator's type carrying `n`.
pub fn voucher(n: u64) -> Voucher {
    PaymentNode::make(VOUCHER_TYPE, n)
}

/// A voucher of a type no simulated node registers.
pub fn unknown_voucher() -> Voucher {
    PaymentNode::make("NobodyKnowsThis", 0)
}

impl Sim {
    /// A simulation with `config.nodes` nodes, all with the default policy.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let nodes: Vec<Node> = (0..config.nodes)
            .map(|i| {
                let peer = peer_id(i);
                let mut engine = Engine::new(peer, config.engine.clone(), rng.range(1, 1 << 40));
                for r in [
                    engine.register_voucher_type(VOUCHER_TYPE.into()),
                    engine.register_revalidator(VOUCHER_TYPE.into()),
                    engine.register_voucher_result_type(RESULT_TYPE.into()),
                    engine.register_voucher_result_type(PAYMENT_REQUEST_TYPE.into()),
                ] {
                    r.expect("fresh registry");
                }
                Node {
                    peer,
                    engine,
                    policy: Policy::default(),
                    events: Vec::new(),
                    store: BTreeMap::new(),
                    protected: HashSet::new(),
                    adapter: Adapter::new(
                        peer,
                        std::sync::Arc::new(MemoryBlockstore::new()),
                        AdapterConfig::default(),
                    ),
                    gs: GsNode::default(),
                    owed: HashMap::new(),
                    revalidations: 0,
                    sent_blocks: HashMap::new(),
                }
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.peer, i)).collect();
        Self {
            nodes,
            now: 0,
            seq: 0,
            rng,
            config,
            queue: BinaryHeap::new(),
            deliveries: HashMap::new(),
            last: HashMap::new(),
            down: HashSet::new(),
            dags: HashMap::new(),
            index,
            steps: 0,
            closed: HashSet::new(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    /// Makes a DAG of `blocks` blocks of `block_size` bytes available under `root` on every
    /// node.
    pub fn add_dag(&mut self, root: Cid, blocks: u64, block_size: u64) {
        self.dags.insert(root, (blocks, block_size));
    }

    /// Node `i`'s peer id.
    pub fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].peer
    }

    fn node_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    fn schedule(&mut self, at: u64, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.deliveries.insert(self.seq, d);
    }

    fn delay(&mut self, from: usize, to: usize, ordered: bool) -> u64 {
        let (lo, hi) = self.config.delay;
        let mut at = self.now + self.rng.range(lo, hi);
        if ordered {
            let key = (from, to, true);
            at = at.max(self.last.get(&key).copied().unwrap_or(0) + 1);
            self.last.insert(key, at);
        }
        at
    }

    fn is_down(&self, a: usize, b: usize) -> bool {
        self.down.contains(&(a.min(b), a.max(b)))
    }

    /// Cuts the connection between nodes `a` and `b`: everything in flight between them is
    /// lost and both transports report the disconnect on their channels.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.down.insert((a.min(b), a.max(b)));
        let lost: Vec<u64> = self
            .deliveries
            .iter()
            .filter(|(_, d)| match d {
                Delivery::Net { from, to, .. } | Delivery::Transport { from, to, .. } => {
                    (*from == a && *to == b) || (*from == b && *to == a)
                }
                Delivery::Tick { .. } | Delivery::Reopen { .. } => false,
            })
            .map(|(k, _)| *k)
            .collect();
        let now = Timestamp(self.now);
        let mut failed_senders = Vec::new();
        for k in lost {
            // A message on a broken stream fails at its sender, as libp2p reports it.
            if let Some(Delivery::Net {
                from,
                channel,
                on_failure,
                ..
            }) = self.deliveries.remove(&k)
            {
                self.nodes[from].engine.handle_send_failure(
                    now,
                    channel,
                    on_failure,
                    "stream reset",
                );
                failed_senders.push(from);
            }
        }
        for from in failed_senders {
            self.drain(from);
        }
        for (me, other) in [(a, b), (b, a)] {
            self.transport_disconnected(me, other);
            self.drain(me);
        }
    }

    /// Restores the connection between `a` and `b`.
    pub fn reconnect(&mut self, a: usize, b: usize) {
        self.down.remove(&(a.min(b), a.max(b)));
    }

    /// Runs until nothing is in flight or `max_steps` deliveries were processed; returns
    /// whether it went quiet.
    pub fn run(&mut self, max_steps: u64) -> bool {
        self.run_until(max_steps, |_| false)
    }

    /// Runs until `stop` holds, nothing is in flight, or `max_steps` deliveries; returns
    /// whether `stop` held or the network went quiet.
    pub fn run_until(&mut self, max_steps: u64, mut stop: impl FnMut(&Self) -> bool) -> bool {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
        for _ in 0..max_steps {
            if stop(self) {
                return true;
            }
            // Engine timers (the channel monitor) fire when they come before the next delivery.
            let next_delivery = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = (0..self.nodes.len())
                .filter_map(|i| self.nodes[i].engine.poll_timeout().map(|t| (t.0, i)))
                .min();
            if let Some((t, i)) = next_timer
                && next_delivery.is_none_or(|d| t <= d)
            {
                self.now = self.now.max(t);
                self.steps += 1;
                self.nodes[i].engine.handle_timeout(Timestamp(self.now));
                self.drain(i);
                continue;
            }
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                return true;
            };
            let Some(d) = self.deliveries.remove(&seq) else {
                continue;
            };
            self.now = self.now.max(at);
            self.steps += 1;
            self.deliver(d);
        }
        stop(self) || self.deliveries.is_empty()
    }

    fn deliver(&mut self, d: Delivery) {
        let now = Timestamp(self.now);
        match d {
            Delivery::Net {
                from, to, message, ..
            } => {
                // (`channel` and `on_failure` matter only if the message is lost.)
                let peer = self.nodes[from].peer;
                self.nodes[to].engine.handle_message(now, peer, message);
                self.drain(to);
            }
            Delivery::Transport { from, to, wire } => self.on_wire(from, to, wire),
            Delivery::Tick { node, to, wire } => self.tick(node, to, wire),
            Delivery::Reopen {
                node,
                channel,
                attempt,
            } => {
                self.nodes[node].adapter.reopen(channel, attempt);
                self.run_adapter(node);
            }
        }
    }

    /// Carries out every output node `i` has queued, until it has none.
    pub fn drain(&mut self, i: usize) {
        while let Some(o) = self.nodes[i].engine.poll_output() {
            self.carry_out(i, o);
        }
    }

    fn carry_out(&mut self, i: usize, o: Output) {
        let now = Timestamp(self.now);
        match o {
            Output::SendMessage {
                to,
                channel,
                message,
                on_failure,
            } => match self.node_of(&to) {
                Some(t) if !self.is_down(i, t) => {
                    let ordered = !self.config.reorder;
                    let at = self.delay(i, t, ordered);
                    self.schedule(
                        at,
                        Delivery::Net {
                            from: i,
                            to: t,
                            channel,
                            message,
                            on_failure,
                        },
                    );
                }
                _ => self.nodes[i].engine.handle_send_failure(
                    now,
                    channel,
                    on_failure,
                    "peer unreachable",
                ),
            },
            Output::Transport(cmd) => self.transport_command(i, cmd),
            Output::Validate { token, call } => {
                let answer = self.validate(i, &call);
                self.nodes[i].engine.handle_validation(now, token, answer);
            }
            Output::Event { event, state } => {
                // A client pays whenever the provider asks for payment.
                let auto_pay = self.nodes[i].policy.auto_pay
                    && event.code == EventCode::NewVoucherResult
                    && state.is_initiator()
                    && state
                        .last_voucher_result()
                        .is_some_and(|r| r.type_id.as_str() == PAYMENT_REQUEST_TYPE);
                let node = &mut self.nodes[i];
                node.store.insert(state.channel_id, (*state).clone());
                node.events.push((event, *state.clone()));
                if auto_pay {
                    let n = state.vouchers.len() as u64;
                    let _ = node.engine.send_voucher(now, state.channel_id, voucher(n));
                }
            }
            Output::Protect { channel, .. } => {
                self.nodes[i].protected.insert(channel);
            }
            Output::Unprotect { channel, .. } => {
                self.nodes[i].protected.remove(&channel);
            }
            Output::ConfigureTransport { .. } => {}
        }
    }

    /// The simulated validators and revalidators.
    fn validate(&mut self, i: usize, call: &ValidationCall) -> ValidationAnswer {
        let node = &mut self.nodes[i];
        let policy = node.policy.clone();
        let result = |n: u64| PaymentNode::make(RESULT_TYPE, n);
        let request = |n: u64| PaymentNode::make(PAYMENT_REQUEST_TYPE, n);
        match call {
            ValidationCall::ValidatePush {
                is_restart: true,
                channel,
                ..
            }
            | ValidationCall::ValidatePull {
                is_restart: true,
                channel,
                ..
            } if policy.restart_settles && node.owed.get(channel).is_some_and(|o| o.awaiting) => {
                let owed = node.owed.entry(*channel).or_default();
                owed.awaiting = false;
                owed.unpaid = 0;
                Ok(Some(Validation::new(ValidationOutcome::Resume)))
            }
            ValidationCall::ValidatePush { .. } | ValidationCall::ValidatePull { .. } => {
                if policy.reject_all {
                    Ok(Some(Validation::new(ValidationOutcome::rejected(
                        "policy rejects all",
                    ))))
                } else {
                    Ok(Some(Validation::accept()))
                }
            }
            ValidationCall::Revalidate { channel, voucher } => {
                let owed = node.owed.entry(*channel).or_default();
                let paid = PaymentNode::read(voucher).unwrap_or(0);
                if owed.awaiting {
                    owed.awaiting = false;
                    owed.unpaid = 0;
                    Ok(Some(
                        Validation::new(ValidationOutcome::Resume).with_result(result(paid)),
                    ))
                } else {
                    Ok(Some(Validation::accept()))
                }
            }
            ValidationCall::OnPullDataSent { channel, bytes }
            | ValidationCall::OnPushDataReceived { channel, bytes } => {
                let Some(interval) = policy.pay_interval else {
                    return Ok(None);
                };
                let owed = node.owed.entry(*channel).or_default();
                owed.unpaid += bytes;
                if owed.unpaid >= interval && !owed.awaiting {
                    owed.awaiting = true;
                    node.revalidations += 1;
                    Ok(Some(
                        Validation::new(ValidationOutcome::Pause).with_result(request(owed.unpaid)),
                    ))
                } else {
                    Ok(None)
                }
            }
            ValidationCall::OnComplete { channel } => {
                if !policy.finalize {
                    return Ok(None);
                }
                let owed = node.owed.entry(*channel).or_default();
                owed.awaiting = true;
                node.revalidations += 1;
                Ok(Some(
                    Validation::new(ValidationOutcome::Pause).with_result(request(owed.unpaid)),
                ))
            }
        }
    }
}

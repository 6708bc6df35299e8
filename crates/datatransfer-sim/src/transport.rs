//! The transport: each node's real graphsync [`Adapter`] (the one the graphsync transport
//! runs) over a simulated graphsync that moves byte counts instead of blocks, over the
//! simulated network.
//!
//! The simulated graphsync keeps go-graphsync's protocol as our node speaks it: a request
//! carries its extensions and a count of leading blocks not to send; the responder asks the
//! incoming-request hook, then sends one block per tick through the outgoing-block hook and
//! the block-sent hook, and ends with a terminal status; the requester reports each response
//! and each block to its hooks. A requester pauses by cancelling the request on the wire and
//! resumes by asking again under a fresh wire id, skipping what it already traversed; an
//! update of a running request carries extensions.

use crate::*;

/// graphsync traffic between two nodes.
#[derive(Debug, Clone)]
pub(crate) enum GsWire {
    Request {
        wire: RequestId,
        root: Cid,
        selector: DagCbor,
        extensions: Extensions,
        skip: u64,
    },
    Cancel {
        wire: RequestId,
    },
    Update {
        wire: RequestId,
        extensions: Extensions,
    },
    Response {
        wire: RequestId,
        status: ResponseStatus,
        extensions: Extensions,
        /// The block this message carries, by walk index and size.
        block: Option<(u64, u64)>,
    },
}

/// One of a node's graphsync requests (it receives the data).
#[derive(Debug, Clone)]
pub(crate) struct GsRequest {
    channel: ChannelId,
    attempt: u64,
    to: usize,
    wire: RequestId,
    root: Cid,
    selector: DagCbor,
    extensions: Extensions,
    /// Blocks of the walk done (received, or skipped as held).
    traversed: u64,
    paused: bool,
}

/// A response a node serves (it sends the data).
#[derive(Debug, Clone)]
pub(crate) struct GsResponse {
    /// The channel whose data it carries, as the adapter admitted it.
    channel: Option<ChannelId>,
    root: Cid,
    total: u64,
    size: u64,
    next: u64,
    paused: bool,
    /// The outgoing-block hook waiting for the adapter's answer, if any.
    awaiting: Option<HookId>,
    ticking: bool,
}

/// What a node's hook that waits for its adapter's answer was about.
#[derive(Debug, Clone)]
pub(crate) enum Waiting {
    /// A request from node `from` asking for the DAG under `root`; `cancelled` once its
    /// requester cancelled it (the answer then serves nothing).
    Admission {
        from: usize,
        wire: RequestId,
        root: Cid,
        skip: u64,
        cancelled: bool,
    },
    /// Block `index` of the response to `from`'s request `wire`.
    Block {
        from: usize,
        wire: RequestId,
        index: u64,
    },
}

/// A node's simulated graphsync.
#[derive(Debug, Default)]
pub(crate) struct GsNode {
    requests: HashMap<RequestId, GsRequest>,
    wire_ids: HashMap<RequestId, RequestId>,
    responses: HashMap<(usize, RequestId), GsResponse>,
    waiting: HashMap<HookId, Waiting>,
    next_id: u64,
    next_hook: u64,
    /// Blocks at the start of each channel's walk this node holds (as of its last request
    /// that ended).
    held: HashMap<ChannelId, u64>,
}

impl GsNode {
    /// Forgets request `id`, keeping what it traversed as held.
    fn remove_request(&mut self, id: RequestId) -> Option<GsRequest> {
        let r = self.requests.remove(&id)?;
        self.wire_ids.remove(&r.wire);
        let held = self.held.entry(r.channel).or_default();
        *held = (*held).max(r.traversed);
        Some(r)
    }
}

/// A CID for block `index` of the DAG under `root` (distinct per block).
fn block_cid(root: &Cid, index: u64) -> Cid {
    let mut digest = [0u8; 32];
    let d = root.hash().digest();
    let n = d.len().min(24);
    digest[..n].copy_from_slice(&d[..n]);
    digest[24..].copy_from_slice(&index.to_be_bytes());
    let mh = datatransfer_types::cid::multihash::Multihash::wrap(0x12, &digest)
        .expect("32-byte digest fits");
    Cid::new_v1(0x55, mh)
}

impl Sim {
    pub(crate) fn wire(&mut self, from: usize, to: usize, wire: GsWire) {
        if self.is_down(from, to) {
            return;
        }
        let at = self.delay(from, to, true);
        self.schedule(at, Delivery::Transport { from, to, wire });
    }

    /// Carries out what node `i`'s adapter decided, until it has nothing more.
    pub(crate) fn run_adapter(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].adapter.poll_action() {
            self.adapter_action(i, action);
        }
    }

    /// Feeds node `i`'s adapter and carries out what follows.
    fn adapter(&mut self, i: usize, input: impl FnOnce(&mut Adapter)) {
        input(&mut self.nodes[i].adapter);
        self.run_adapter(i);
    }

    pub(crate) fn transport_command(&mut self, i: usize, cmd: TransportCommand) {
        self.adapter(i, |a| a.command(cmd));
    }

    fn new_hook(&mut self, i: usize, w: Waiting) -> HookId {
        let gs = &mut self.nodes[i].gs;
        gs.next_hook += 1;
        let hook = HookId(gs.next_hook);
        gs.waiting.insert(hook, w);
        hook
    }

    fn new_id(&mut self, i: usize) -> RequestId {
        let gs = &mut self.nodes[i].gs;
        gs.next_id += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        id[8..].copy_from_slice(&gs.next_id.to_be_bytes());
        RequestId(id)
    }

    /// The request of the channel's attempt, by its handle id.
    fn request_of(&self, i: usize, channel: ChannelId, attempt: u64) -> Option<RequestId> {
        self.nodes[i]
            .gs
            .requests
            .iter()
            .find(|(_, r)| r.channel == channel && r.attempt == attempt)
            .map(|(id, _)| *id)
    }

    fn adapter_action(&mut self, i: usize, action: Action) {
        let now = Timestamp(self.now);
        match action {
            Action::Deliver(ev) => {
                self.nodes[i].engine.handle_transport_event(now, ev);
                self.drain(i);
            }
            Action::Answer { hook, answer } => self.answered(i, hook, answer),
            Action::SendRequest(r) => self.send_request(i, r),
            Action::CancelRequest { channel, attempt } => {
                let Some(id) = self.request_of(i, channel, attempt) else {
                    return;
                };
                let Some(r) = self.nodes[i].gs.remove_request(id) else {
                    return;
                };
                self.wire(i, r.to, GsWire::Cancel { wire: r.wire });
                let result = Err(GraphSyncError::Cancelled);
                self.adapter(i, |a| a.request_finished(channel, attempt, id, result));
            }
            Action::PauseRequest { channel, attempt } => {
                let Some(id) = self.request_of(i, channel, attempt) else {
                    return;
                };
                let Some(r) = self.nodes[i].gs.requests.get_mut(&id) else {
                    return;
                };
                if !r.paused {
                    r.paused = true;
                    let (to, wire) = (r.to, r.wire);
                    self.wire(i, to, GsWire::Cancel { wire });
                }
            }
            Action::UnpauseRequest {
                channel,
                attempt,
                extensions,
            } => {
                let Some(id) = self.request_of(i, channel, attempt) else {
                    return;
                };
                self.unpause_request(i, id, extensions);
            }
            Action::PauseResponse { peer, id } => {
                if let Some(r) = self.response(i, peer, id) {
                    r.paused = true;
                }
            }
            Action::UnpauseResponse {
                peer,
                id,
                extensions,
            } => {
                let Some(to) = self.node_of(&peer) else {
                    return;
                };
                let Some(r) = self.response(i, peer, id) else {
                    return;
                };
                r.paused = false;
                if !extensions.is_empty() {
                    self.respond(i, to, id, ResponseStatus::PartialResponse, extensions, None);
                }
                self.pump(i, to, id);
            }
            Action::CancelResponse { peer, id } => {
                let Some(to) = self.node_of(&peer) else {
                    return;
                };
                if self.nodes[i].gs.responses.remove(&(to, id)).is_some() {
                    let status = ResponseStatus::RequestCancelled;
                    self.respond(i, to, id, status, Extensions::new(), None);
                    self.adapter(i, |a| a.completed_response(peer, id, status));
                }
            }
            Action::SendExtensions {
                peer,
                id,
                extensions,
            } => {
                if let Some(to) = self.node_of(&peer)
                    && self.nodes[i].gs.responses.contains_key(&(to, id))
                {
                    self.respond(i, to, id, ResponseStatus::PartialResponse, extensions, None);
                }
            }
            Action::ReopenAfter {
                channel,
                attempt,
                wait,
            } => {
                let at = self.now + wait.as_nanos() as u64;
                self.schedule(
                    at,
                    Delivery::Reopen {
                        node: i,
                        channel,
                        attempt,
                    },
                );
            }
            Action::Flush { channel, .. } => self.adapter(i, |a| a.flushed(channel, Ok(()))),
            other => unreachable!("an action the simulator does not know: {other:?}"),
        }
    }

    fn response(&mut self, i: usize, peer: PeerId, id: RequestId) -> Option<&mut GsResponse> {
        let to = self.node_of(&peer)?;
        self.nodes[i].gs.responses.get_mut(&(to, id))
    }

    /// Node `i` sends a graphsync request for a channel's data.
    fn send_request(&mut self, i: usize, r: SendRequest) {
        let (channel, attempt) = (r.channel, r.attempt);
        let Some(to) = self.node_of(&r.to).filter(|t| !self.is_down(i, *t)) else {
            let error = "peer unreachable".to_owned();
            return self.adapter(i, |a| a.request_failed(channel, attempt, error));
        };
        let id = self.new_id(i);
        let skip = if r.skip_held {
            self.nodes[i].gs.held.get(&channel).copied().unwrap_or(0)
        } else {
            0
        };
        let selector = RawNode::new(r.selector.as_bytes().to_vec()).expect("a valid selector");
        let request = Request::new(id, r.root, selector, 0, r.extensions.clone());
        let peer = r.to;
        self.adapter(i, |a| a.outgoing_request(peer, &request));
        if !self.nodes[i].adapter.request_started(channel, attempt, id) {
            return;
        }
        let gs = &mut self.nodes[i].gs;
        gs.wire_ids.insert(id, id);
        gs.requests.insert(
            id,
            GsRequest {
                channel,
                attempt,
                to,
                wire: id,
                root: r.root,
                selector: r.selector.clone(),
                extensions: r.extensions.clone(),
                traversed: skip,
                paused: false,
            },
        );
        let wire = GsWire::Request {
            wire: id,
            root: r.root,
            selector: r.selector,
            extensions: r.extensions,
            skip,
        };
        self.wire(i, to, wire);
    }

    /// Resumes request `id`: an update if it runs, a new request under a fresh wire id
    /// (skipping what it traversed) if it was paused.
    fn unpause_request(&mut self, i: usize, id: RequestId, extensions: Extensions) {
        let Some(r) = self.nodes[i].gs.requests.get(&id) else {
            return;
        };
        if !r.paused {
            let (to, wire) = (r.to, r.wire);
            return self.wire(i, to, GsWire::Update { wire, extensions });
        }
        let fresh = self.new_id(i);
        let gs = &mut self.nodes[i].gs;
        let Some(r) = gs.requests.get_mut(&id) else {
            return;
        };
        r.paused = false;
        let old = std::mem::replace(&mut r.wire, fresh);
        let mut ext = r.extensions.clone();
        for (k, v) in extensions.iter() {
            ext.set(k, v.clone());
        }
        let wire = GsWire::Request {
            wire: fresh,
            root: r.root,
            selector: r.selector.clone(),
            extensions: ext,
            skip: r.traversed,
        };
        let to = r.to;
        gs.wire_ids.remove(&old);
        gs.wire_ids.insert(fresh, id);
        self.wire(i, to, wire);
    }

    fn respond(
        &mut self,
        i: usize,
        to: usize,
        wire: RequestId,
        status: ResponseStatus,
        extensions: Extensions,
        block: Option<(u64, u64)>,
    ) {
        let msg = GsWire::Response {
            wire,
            status,
            extensions,
            block,
        };
        self.wire(i, to, msg);
    }

    /// The adapter of node `i` answered one of its graphsync's hooks.
    fn answered(&mut self, i: usize, hook: HookId, answer: HookAnswer) {
        let Some(w) = self.nodes[i].gs.waiting.remove(&hook) else {
            return;
        };
        match (w, answer) {
            (
                Waiting::Admission {
                    from,
                    wire,
                    root,
                    skip,
                    cancelled,
                },
                HookAnswer::Request(decision),
            ) => {
                // Cancelled while its hook ran: graphsync drops it, whatever the answer.
                if cancelled {
                    return;
                }
                let peer = self.nodes[from].peer;
                let (paused, ext) = match decision {
                    RequestDecision::Accept(ext) => (false, ext),
                    RequestDecision::Pause(ext) => (true, ext),
                    RequestDecision::Reject(status, ext) => {
                        self.respond(i, from, wire, status, ext, None);
                        return self.adapter(i, |a| a.completed_response(peer, wire, status));
                    }
                };
                let (total, size) = self.dags.get(&root).copied().unwrap_or((0, 0));
                let channel = self.nodes[i].adapter.serving_channel(peer, wire);
                self.nodes[i].gs.responses.insert(
                    (from, wire),
                    GsResponse {
                        channel,
                        root,
                        total,
                        size,
                        next: skip + 1,
                        paused,
                        awaiting: None,
                        ticking: false,
                    },
                );
                if !ext.is_empty() {
                    self.respond(i, from, wire, ResponseStatus::PartialResponse, ext, None);
                }
                if skip >= total {
                    // Nothing left to send: graphsync still completes the response.
                    self.finish_response(i, from, wire);
                } else {
                    self.pump(i, from, wire);
                }
            }
            (Waiting::Block { from, wire, index }, HookAnswer::Block(decision, ext)) => {
                let Some(r) = self.nodes[i].gs.responses.get_mut(&(from, wire)) else {
                    return;
                };
                r.awaiting = None;
                if decision == BlockDecision::Pause {
                    r.paused = true;
                }
                r.next = index + 1;
                let (cid, size, finished) = (block_cid(&r.root, index), r.size, r.next > r.total);
                let channel = r.channel;
                let status = ResponseStatus::PartialResponse;
                self.respond(i, from, wire, status, ext, Some((index, size)));
                let peer = self.nodes[from].peer;
                if let Some(channel) = channel {
                    self.nodes[i]
                        .sent_blocks
                        .entry(channel)
                        .or_default()
                        .push(index);
                }
                self.adapter(i, |a| a.block_sent(peer, wire, cid, size));
                if finished {
                    self.finish_response(i, from, wire);
                } else {
                    self.pump(i, from, wire);
                }
            }
            (w, answer) => unreachable!("answer {answer:?} to {w:?}"),
        }
    }

    fn finish_response(&mut self, i: usize, to: usize, wire: RequestId) {
        if self.nodes[i].gs.responses.remove(&(to, wire)).is_none() {
            return;
        }
        let status = ResponseStatus::RequestCompletedFull;
        self.respond(i, to, wire, status, Extensions::new(), None);
        let peer = self.nodes[to].peer;
        self.adapter(i, |a| a.completed_response(peer, wire, status));
    }

    /// Schedules the response's next block if it may go.
    pub(crate) fn pump(&mut self, i: usize, to: usize, wire: RequestId) {
        let interval = self.config.block_interval;
        let Some(r) = self.nodes[i].gs.responses.get_mut(&(to, wire)) else {
            return;
        };
        if r.paused || r.awaiting.is_some() || r.ticking || r.next > r.total {
            return;
        }
        r.ticking = true;
        let at = self.now + interval;
        self.schedule(at, Delivery::Tick { node: i, to, wire });
    }

    /// The response's next block is due: the outgoing-block hook decides on it.
    pub(crate) fn tick(&mut self, i: usize, to: usize, wire: RequestId) {
        let Some(r) = self.nodes[i].gs.responses.get_mut(&(to, wire)) else {
            return;
        };
        r.ticking = false;
        if r.paused || r.awaiting.is_some() || r.next > r.total {
            return;
        }
        let index = r.next;
        let block = OutgoingBlock {
            cid: block_cid(&r.root, index),
            size: r.size,
            sent: true,
            index,
        };
        let hook = self.new_hook(
            i,
            Waiting::Block {
                from: to,
                wire,
                index,
            },
        );
        if let Some(r) = self.nodes[i].gs.responses.get_mut(&(to, wire)) {
            r.awaiting = Some(hook);
        }
        let peer = self.nodes[to].peer;
        self.adapter(i, |a| a.outgoing_block(hook, peer, wire, &block));
    }

    /// graphsync traffic from `from` reaches `to`.
    pub(crate) fn on_wire(&mut self, from: usize, to: usize, wire: GsWire) {
        let peer = self.nodes[from].peer;
        match wire {
            GsWire::Request {
                wire,
                root,
                selector,
                extensions,
                skip,
            } => {
                let hook = self.new_hook(
                    to,
                    Waiting::Admission {
                        from,
                        wire,
                        root,
                        skip,
                        cancelled: false,
                    },
                );
                let selector = RawNode::new(selector.into_bytes()).expect("a valid selector");
                let request = Request::new(wire, root, selector, 0, extensions);
                self.adapter(to, |a| a.incoming_request(hook, peer, &request));
            }
            GsWire::Cancel { wire } => {
                let gs = &mut self.nodes[to].gs;
                let mut known = gs.responses.remove(&(from, wire)).is_some();
                // A request still in its incoming-request hook is cancelled too.
                for w in gs.waiting.values_mut() {
                    if let Waiting::Admission {
                        from: f,
                        wire: r,
                        cancelled,
                        ..
                    } = w
                        && (*f, *r) == (from, wire)
                    {
                        *cancelled = true;
                        known = true;
                    }
                }
                if known {
                    self.adapter(to, |a| a.requestor_cancelled(peer, wire));
                }
            }
            GsWire::Update { wire, extensions } => {
                let update = Request::update(wire, extensions);
                self.adapter(to, |a| a.request_updated(peer, &update));
            }
            GsWire::Response {
                wire,
                status,
                extensions,
                block,
            } => {
                let Some(id) = self.nodes[to].gs.wire_ids.get(&wire).copied() else {
                    return;
                };
                let response = Response {
                    id,
                    status,
                    metadata: Vec::new(),
                    extensions,
                };
                self.adapter(to, |a| a.incoming_response(peer, &response));
                if let Some((index, size)) = block {
                    let Some(r) = self.nodes[to].gs.requests.get_mut(&id) else {
                        return;
                    };
                    r.traversed = r.traversed.max(index);
                    let root = r.root;
                    let block = IncomingBlock {
                        cid: block_cid(&root, index),
                        size,
                        present: true,
                        on_wire: true,
                        index,
                    };
                    self.adapter(to, |a| a.incoming_block(id, &block));
                }
                // The end of the response a pause cancelled: the request stays, paused (as
                // our node keeps it).
                let paused = self.nodes[to]
                    .gs
                    .requests
                    .get(&id)
                    .is_some_and(|r| r.paused);
                if status.is_terminal() && !(paused && status == ResponseStatus::RequestCancelled) {
                    let Some(r) = self.nodes[to].gs.remove_request(id) else {
                        return;
                    };
                    let result = match status {
                        ResponseStatus::RequestCompletedFull
                        | ResponseStatus::RequestCompletedPartial => Ok(status),
                        failed => Err(GraphSyncError::Verify(VerifyError::Failed(failed))),
                    };
                    let (channel, attempt) = (r.channel, r.attempt);
                    self.adapter(to, |a| a.request_finished(channel, attempt, id, result));
                }
            }
        }
    }

    /// The connection between `me` and `other` broke: graphsync reports the network error,
    /// drops its responses to the peer and fails its requests to it.
    pub(crate) fn transport_disconnected(&mut self, me: usize, other: usize) {
        let peer = self.nodes[other].peer;
        self.adapter(me, |a| a.network_error(peer, "connection closed"));
        let gs = &mut self.nodes[me].gs;
        gs.responses.retain(|(to, _), _| *to != other);
        gs.waiting.retain(|_, w| match w {
            Waiting::Admission { from, .. } | Waiting::Block { from, .. } => *from != other,
        });
        let mut broken: Vec<(RequestId, GsRequest)> = gs
            .requests
            .iter()
            .filter(|(_, r)| r.to == other)
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        broken.sort_by_key(|(id, _)| *id);
        for (id, r) in broken {
            self.nodes[me].gs.remove_request(id);
            let result = Err(GraphSyncError::Network("connection closed".into()));
            self.adapter(me, |a| a.request_finished(r.channel, r.attempt, id, result));
        }
    }
}

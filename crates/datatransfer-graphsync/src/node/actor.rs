//! The node task: owns every request of ours and every response being served, and acts on
//! commands and inbound messages one at a time.

use super::*;

/// A request of ours: running, or paused the way go-graphsync pauses (cancel the response,
/// then re-request it skipping the blocks already traversed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pause {
    Running,
    /// Cancel sent. Blocks of the cancelled response still on their way are taken as usual
    /// (the re-request skips them too).
    Paused,
}

pub(super) struct Outgoing {
    pub(super) peer: PeerId,
    /// The id on the wire: the handle's id, until an unpause re-requests under a fresh one.
    /// go-graphsync pauses a requester by re-sending the same id, but its responder races a
    /// re-request against the end of the cancelled response of that id (the new one can be
    /// dropped, or mixed with the old one's last blocks); a fresh id has no such race, and
    /// messages of the old one are simply stale.
    pub(super) wire: RequestId,
    pub(super) store: Arc<dyn Blockstore>,
    pub(super) request: Request,
    pub(super) verifier: Verifier,
    pub(super) events: mpsc::UnboundedSender<RequestEvent>,
    /// Links the walk has passed (sent, skipped or missing): what a restart skips.
    pub(super) traversed: u64,
    pub(super) pause: Pause,
}

/// A response being served: its command channel and the token its messages carry.
pub(super) struct Served {
    pub(super) ctl: mpsc::UnboundedSender<ResponseCmd>,
    pub(super) token: u64,
    pub(super) root: Option<Cid>,
    /// `SERVED_QUEUED`, `SERVED_RUNNING` or `SERVED_PAUSED`, kept by the response's task.
    pub(super) state: Arc<AtomicU8>,
}

/// The responses being served (or waiting for their turn), by peer: a peer's count is one
/// lookup, whatever the number of peers and responses (it is asked for every request).
#[derive(Default)]
pub(super) struct Responses {
    by_peer: HashMap<PeerId, HashMap<RequestId, Served>>,
    len: usize,
}

impl Responses {
    pub(super) fn get(&self, peer: PeerId, id: RequestId) -> Option<&Served> {
        self.by_peer.get(&peer)?.get(&id)
    }

    /// Adds a response; returns the one it replaces (same peer and id), if any.
    pub(super) fn insert(&mut self, peer: PeerId, id: RequestId, served: Served) -> Option<Served> {
        let old = self.by_peer.entry(peer).or_default().insert(id, served);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, peer: PeerId, id: RequestId) -> Option<Served> {
        let of_peer = self.by_peer.get_mut(&peer)?;
        let served = of_peer.remove(&id)?;
        if of_peer.is_empty() {
            self.by_peer.remove(&peer);
        }
        self.len -= 1;
        Some(served)
    }

    /// Removes every response to `peer`.
    pub(super) fn remove_peer(&mut self, peer: PeerId) -> Vec<Served> {
        let gone: Vec<Served> = self
            .by_peer
            .remove(&peer)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        self.len -= gone.len();
        gone
    }

    /// How many responses `peer` has.
    pub(super) fn held_by(&self, peer: PeerId) -> usize {
        self.by_peer.get(&peer).map_or(0, HashMap::len)
    }

    pub(super) fn of_peer(&self, peer: PeerId) -> impl Iterator<Item = (&RequestId, &Served)> {
        self.by_peer.get(&peer).into_iter().flatten()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Served> {
        self.by_peer.values().flat_map(HashMap::values)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// How many unknown responses [`Node::stopped`] remembers.
pub(super) const MAX_STOPPED: usize = 4096;

/// How many of the node's own messages may wait for a peer's writer before the node stops
/// queuing advice to it (cancels of responses it sends under ids we no longer use).
const MAX_OWN_BACKLOG_FOR_ADVICE: usize = 64;

pub(super) struct Peer {
    pub(super) writer: PeerWriter,
    /// Tokens whose queued messages the writer drops.
    pub(super) dead: SharedDead,
    pub(super) ids: Arc<Mutex<V1Ids>>,
    pub(super) responses: Arc<Semaphore>,
    /// "Busy" refusals on their way out, sent in batches by one task at a time.
    pub(super) busy: Arc<std::sync::Mutex<BusyAnswers>>,
}

pub(super) struct Node {
    pub(super) control: Control,
    pub(super) store: Arc<dyn Blockstore>,
    pub(super) hooks: Arc<dyn Hooks>,
    pub(super) config: Arc<GraphSyncConfig>,
    pub(super) tx: NodeRef,
    pub(super) peers: HashMap<PeerId, Peer>,
    pub(super) outgoing: HashMap<RequestId, Outgoing>,
    /// The wire id of each request of ours in `outgoing` to its handle's id.
    pub(super) wire_ids: HashMap<RequestId, RequestId>,
    /// Makes the fresh ids of re-requests.
    pub(super) ids: IdGen,
    /// Responses to requests we do not know (any more) that we asked the peer to stop; a
    /// bounded memory, so a cancel goes out once per such response.
    pub(super) stopped: HashSet<(PeerId, RequestId)>,
    pub(super) responses: Responses,
    pub(super) all_responses: Arc<Semaphore>,
    /// The outbound rate limit shared by all peer writers, if any.
    pub(super) outbound_rate: Option<Arc<RateLimit>>,
}

impl Node {
    pub(super) fn peer(&mut self, peer: PeerId) -> &Peer {
        let per_peer = self.config.max_responses_per_peer.max(1);
        let control = self.control.clone();
        let config = self.config.clone();
        let hooks = self.hooks.clone();
        let tx = self.tx.clone();
        let rate = self.outbound_rate.clone();
        self.peers.entry(peer).or_insert_with(|| {
            let (writer, queues) = peer_writer();
            let ids = Arc::new(Mutex::new(V1Ids::default()));
            let dead = SharedDead::default();
            tokio::spawn(write_stream(
                peer,
                control,
                config,
                ids.clone(),
                hooks,
                queues,
                tx,
                rate,
                dead.clone(),
            ));
            Peer {
                writer,
                dead,
                ids,
                responses: Arc::new(Semaphore::new(per_peer)),
                busy: Arc::default(),
            }
        })
    }

    /// Queues one of the node's own messages (a request, a cancel, an update) for the peer's
    /// writer; never waits, so a slow peer holds up no other.
    pub(super) fn send(&mut self, peer: PeerId, msg: Message) {
        self.peer(peer).writer.send_own(msg);
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Request {
                    peer,
                    request,
                    selector,
                    events,
                    store,
                } => {
                    let mut request = request;
                    for (k, v) in self.hooks.outgoing_request(peer, &request).iter() {
                        request.extensions.set(k, v.clone());
                    }
                    let root = request.root.unwrap_or_default();
                    // Our decoders build every received block's CID from its bytes.
                    let verifier = Verifier::new(
                        root,
                        selector,
                        self.config
                            .traversal_with(self.config.max_links_per_outgoing_request),
                        self.config.max_buffered_blocks,
                    )
                    .with_cids_from_bytes();
                    let id = request.id;
                    self.wire_ids.insert(id, id);
                    self.outgoing.insert(
                        id,
                        Outgoing {
                            peer,
                            wire: id,
                            store: store.unwrap_or_else(|| self.store.clone()),
                            request: request.clone(),
                            verifier,
                            events,
                            traversed: 0,
                            pause: Pause::Running,
                        },
                    );
                    self.send(
                        peer,
                        Message {
                            requests: vec![request],
                            ..Message::default()
                        },
                    );
                }
                Cmd::CancelRequest(id) => {
                    if let Some(o) = self.remove_outgoing(id) {
                        self.send(
                            o.peer,
                            Message {
                                requests: vec![Request::cancel(o.wire)],
                                ..Message::default()
                            },
                        );
                        let _ = o
                            .events
                            .send(RequestEvent::Completed(Err(GraphSyncError::Cancelled)));
                    }
                }
                Cmd::PauseRequest(id) => self.pause_request(id),
                Cmd::UnpauseRequest(id, ext) => self.unpause_request(id, ext),
                Cmd::Response(peer, id, cmd) => {
                    if let Some(served) = self.responses.get(peer, id) {
                        let _ = served.ctl.send(cmd);
                    }
                }
                Cmd::ResponseDone(peer, id, token) => {
                    if self
                        .responses
                        .get(peer, id)
                        .is_some_and(|s| s.token == token)
                    {
                        self.responses.remove(peer, id);
                    }
                }
                Cmd::WriteFailed(peer, error) => {
                    self.hooks.network_error(peer, &error);
                    // Messages to the peer were lost: the responses they belonged to have
                    // gaps the requester cannot get past, so they end here.
                    for served in self.responses.remove_peer(peer) {
                        // Their messages still queued are dropped, not sent with a gap.
                        self.forget(peer, served.token);
                        let _ = served.ctl.send(ResponseCmd::Drop);
                    }
                    self.fail_requests_to(peer, &error);
                }
                Cmd::StreamBroken(peer, error, broken) => {
                    self.hooks.network_error(peer, &error);
                    for (id, token) in broken {
                        // Only the response that wrote on the broken stream: a later one
                        // may have the same id (a requester resuming after its pause).
                        if self
                            .responses
                            .get(peer, id)
                            .is_some_and(|s| s.token == token)
                            && let Some(served) = self.responses.remove(peer, id)
                        {
                            let _ = served.ctl.send(ResponseCmd::Drop);
                        }
                    }
                }
                Cmd::InboundClosed(peer) => {
                    let error = format!("the stream from {peer} closed");
                    self.fail_requests_to(peer, &error);
                }
                Cmd::PeerIdle(peer) => self.forget_idle_peer(peer),
                Cmd::PeerRequests(peer, reply) => {
                    let outgoing = self
                        .outgoing
                        .values()
                        .filter(|o| o.peer == peer)
                        .map(|o| RequestInfo {
                            id: o.wire,
                            root: o.request.root,
                            state: match o.pause {
                                Pause::Running => RequestState::Running,
                                Pause::Paused => RequestState::Paused,
                            },
                            traversed: Some(o.traversed),
                        })
                        .collect();
                    let incoming = self
                        .responses
                        .of_peer(peer)
                        .map(|(id, served)| RequestInfo {
                            id: *id,
                            root: served.root,
                            state: match served.state.load(Ordering::Relaxed) {
                                SERVED_QUEUED => RequestState::Queued,
                                SERVED_PAUSED => RequestState::Paused,
                                _ => RequestState::Running,
                            },
                            traversed: None,
                        })
                        .collect();
                    let _ = reply.send(PeerRequests { outgoing, incoming });
                }
                Cmd::Stats(reply) => {
                    let state = |want: u8| {
                        self.responses
                            .values()
                            .filter(|s| s.state.load(Ordering::Relaxed) == want)
                            .count()
                    };
                    let _ = reply.send(GraphSyncStats {
                        peers: self.peers.len(),
                        requests: self.outgoing.len(),
                        responses: self.responses.len(),
                        responses_queued: state(SERVED_QUEUED),
                        responses_paused: state(SERVED_PAUSED),
                        own_messages_queued: self
                            .peers
                            .values()
                            .map(|p| p.writer.own_backlog())
                            .sum(),
                    });
                }
                // The permit is held until the message is handled (its blocks stored).
                Cmd::Inbound(peer, version, body, _permit) => {
                    let ids = self.peer(peer).ids.clone();
                    let decoded = match ids.lock() {
                        Ok(ids) => decode_body(&body, version, &ids),
                        Err(_) => continue,
                    };
                    match decoded {
                        Ok(msg) => self.on_message(peer, msg, body.len()),
                        Err(e) => self.hooks.network_error(peer, &format!("bad message: {e}")),
                    }
                }
                Cmd::Decoded(peer, decoded, body_len, _permit) => match decoded {
                    Ok(msg) => self.on_message(peer, msg, body_len),
                    Err(e) => self.hooks.network_error(peer, &format!("bad message: {e}")),
                },
            }
        }
    }

    /// Forgets a peer whose writer went idle, if nothing of the peer's is in flight: no
    /// request to it, no response to it (running or waiting for its turn), no busy refusal
    /// on its way and nothing queued for its writer.
    pub(super) fn forget_idle_peer(&mut self, peer: PeerId) {
        if self.outgoing.values().any(|o| o.peer == peer) || self.responses.held_by(peer) > 0 {
            return;
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let quiet_busy = p
            .busy
            .lock()
            .map(|b| b.ids.is_empty() && !b.flushing)
            .unwrap_or(false);
        if quiet_busy
            && Arc::strong_count(&p.responses) == 1
            && p.writer.tx.capacity() == p.writer.tx.max_capacity()
            && p.writer.own_queued.load(Ordering::Relaxed) == 0
        {
            self.peers.remove(&peer);
        }
    }

    /// Ends our requests to `peer` with a network error; later responses to them are ignored.
    pub(super) fn fail_requests_to(&mut self, peer: PeerId, error: &str) {
        let failed: Vec<RequestId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(o) = self.remove_outgoing(id) {
                let _ = o
                    .events
                    .send(RequestEvent::Completed(Err(GraphSyncError::Network(
                        error.to_owned(),
                    ))));
            }
        }
    }

    /// Drops the messages of a response that wait for the peer's writer.
    pub(super) fn forget(&mut self, peer: PeerId, token: u64) {
        if let Some(p) = self.peers.get(&peer)
            && let Ok(mut d) = p.dead.lock()
        {
            d.insert(token);
        }
    }

    /// Forgets a request of ours, and its wire id.
    pub(super) fn remove_outgoing(&mut self, id: RequestId) -> Option<Outgoing> {
        let o = self.outgoing.remove(&id)?;
        self.wire_ids.remove(&o.wire);
        Some(o)
    }

    pub(super) fn pause_request(&mut self, id: RequestId) {
        if let Some(o) = self.outgoing.get_mut(&id)
            && o.pause == Pause::Running
        {
            o.pause = Pause::Paused;
            let (peer, wire) = (o.peer, o.wire);
            self.send(
                peer,
                Message {
                    requests: vec![Request::cancel(wire)],
                    ..Message::default()
                },
            );
        }
    }

    pub(super) fn unpause_request(&mut self, id: RequestId, ext: Extensions) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        match o.pause {
            Pause::Running => {
                let (peer, wire) = (o.peer, o.wire);
                self.send(
                    peer,
                    Message {
                        requests: vec![Request::update(wire, ext)],
                        ..Message::default()
                    },
                );
            }
            Pause::Paused => self.rerequest(id, ext),
        }
    }

    pub(super) fn rerequest(&mut self, id: RequestId, ext: Extensions) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        o.pause = Pause::Running;
        o.verifier.restart(o.traversed);
        let wire = self.ids.next();
        self.wire_ids.remove(&o.wire);
        self.wire_ids.insert(wire, id);
        o.wire = wire;
        let mut again = o.request.clone();
        again.id = wire;
        for (k, v) in ext.iter() {
            again.extensions.set(k, v.clone());
        }
        again.extensions.set(
            crate::responder::DO_NOT_SEND_FIRST_BLOCKS,
            crate::responder::encode_skip_count(o.traversed),
        );
        let peer = o.peer;
        self.send(
            peer,
            Message {
                requests: vec![again],
                ..Message::default()
            },
        );
    }

    /// Handles a message that came in a body of `body_len` bytes (its blocks are parts of
    /// that body).
    pub(super) fn on_message(&mut self, peer: PeerId, msg: Message, body_len: usize) {
        for req in msg.requests {
            match req.kind {
                RequestType::New => self.serve(peer, req),
                RequestType::Cancel => {
                    if let Some(served) = self.responses.remove(peer, req.id) {
                        self.forget(peer, served.token);
                        let _ = served.ctl.send(ResponseCmd::Drop);
                        self.hooks.requestor_cancelled(peer, req.id);
                    }
                }
                RequestType::Update => self.hooks.request_updated(peer, &req),
            }
        }
        let mut blocks: HashMap<Cid, crate::Bytes> =
            msg.blocks.into_iter().map(|b| (b.cid, b.data)).collect();
        for resp in msg.responses {
            let mine: Vec<Block> = resp
                .metadata
                .iter()
                .filter_map(|(cid, _)| {
                    blocks.remove(cid).map(|data| Block {
                        cid: *cid,
                        data: compact(data, body_len),
                    })
                })
                .collect();
            self.on_response(peer, resp, mine);
        }
    }

    pub(super) fn on_response(&mut self, peer: PeerId, mut resp: Response, blocks: Vec<Block>) {
        // Responses under an id we no longer use (before a re-request, or of a process of
        // ours that was restarted) are stale. The peer is told to stop sending them: a
        // go-graphsync responder withholds from our new requests every block such a response
        // is still sending us, and go-data-transfer completes the channel when it ends.
        let Some(&id) = self.wire_ids.get(&resp.id) else {
            if !resp.status.is_terminal() {
                if self.stopped.len() >= MAX_STOPPED {
                    self.stopped.clear();
                }
                // Advice only, so none is queued for a peer that is not taking our messages
                // (else a peer sending many stale ids and reading nothing grows the queue).
                let backlog = self.peer(peer).writer.own_backlog();
                if backlog < MAX_OWN_BACKLOG_FOR_ADVICE && self.stopped.insert((peer, resp.id)) {
                    self.send(
                        peer,
                        Message {
                            requests: vec![Request::cancel(resp.id)],
                            ..Message::default()
                        },
                    );
                }
            }
            return;
        };
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        if o.peer != peer {
            return;
        }
        if o.pause == Pause::Paused && resp.status == ResponseStatus::RequestCancelled {
            // The cancelled response is over; the request stays paused.
            return;
        }
        // Our hooks and the request's events know the request by its handle's id.
        resp.id = id;
        self.hooks.incoming_response(peer, &resp);
        let _ = o.events.send(RequestEvent::Response(resp.clone()));
        let store = o.store.clone();
        let hooks = self.hooks.clone();
        let mut got: Vec<(Cid, u64)> = Vec::new();
        let mut pause = false;
        let mut store_err = None;
        let mut traversed = 0u64;
        let before = o.traversed;
        let result = o
            .verifier
            .on_response(&resp, blocks, &*store, &mut |visit, data| {
                // The walk checked `d` against its CID (a verifier always does): the store
                // need not hash it again.
                if let Some(d) = data
                    && let Err(e) = store.put_verified_owned(&visit.cid, d.clone())
                {
                    store_err = Some(e.to_string());
                }
                traversed += 1;
                if visit.present {
                    got.push((visit.cid, visit.size as u64));
                }
                let block = IncomingBlock {
                    cid: visit.cid,
                    size: visit.size as u64,
                    present: visit.present,
                    on_wire: data.is_some(),
                    index: before + traversed,
                };
                if hooks.incoming_block(peer, id, &block) == BlockDecision::Pause {
                    pause = true;
                }
            });
        o.traversed += traversed;
        for (cid, size) in got {
            let _ = o.events.send(RequestEvent::Block { cid, size });
        }
        let done = match (result, store_err) {
            (_, Some(e)) => Some(Err(GraphSyncError::LocalStore(e))),
            (Ok(Progress::Complete), None) => Some(Ok(resp.status)),
            (Ok(Progress::InProgress), None) => None,
            (Err(VerifyError::Traversal(t)), None) if matches!(*t, TraversalError::Store(_)) => {
                Some(Err(GraphSyncError::LocalStore(t.to_string())))
            }
            (Err(e), None) => Some(Err(e.into())),
        };
        if let Some(r) = done {
            let failed = r.is_err();
            if let Some(o) = self.remove_outgoing(id) {
                if failed && !resp.status.is_terminal() {
                    self.send(
                        peer,
                        Message {
                            requests: vec![Request::cancel(o.wire)],
                            ..Message::default()
                        },
                    );
                }
                let _ = o.events.send(RequestEvent::Completed(r));
            }
        } else if pause {
            self.pause_request(id);
        }
    }

    pub(super) fn serve(&mut self, peer: PeerId, request: Request) {
        let held = self.responses.held_by(peer);
        if held >= self.config.max_requests_per_peer
            && self.responses.get(peer, request.id).is_none()
        {
            let p = self.peer(peer);
            let (writer, busy) = (p.writer.clone(), p.busy.clone());
            // Answered from a task, so the node never waits on this peer; refusals that pile
            // up meanwhile go out together.
            let flush = match busy.lock() {
                Ok(mut b) => b.push(request.id),
                Err(_) => false,
            };
            if flush {
                tokio::spawn(answer_busy(writer, busy));
            }
            return;
        }
        let (ctl_tx, ctl) = mpsc::unbounded_channel();
        let token = SERVE_TOKENS.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(AtomicU8::new(SERVED_QUEUED));
        let served = Served {
            ctl: ctl_tx,
            token,
            root: request.root,
            state: state.clone(),
        };
        // A repeated request (an unpause after a requester-side pause) replaces the old one.
        if let Some(old) = self.responses.insert(peer, request.id, served) {
            self.forget(peer, old.token);
            let _ = old.ctl.send(ResponseCmd::Drop);
        }
        let per_peer = self.peer(peer).responses.clone();
        let writer = self.peer(peer).writer.clone();
        let store = self
            .hooks
            .store_for_request(peer, &request)
            .unwrap_or_else(|| self.store.clone());
        let ctx = ServeCtx {
            peer,
            store,
            hooks: self.hooks.clone(),
            config: self.config.clone(),
            writer,
            token,
            done: self.tx.clone(),
            all: self.all_responses.clone(),
            per_peer,
            state,
        };
        tokio::spawn(ctx.serve(request, ctl));
    }
}

/// A received block keeps the body it came in alive (a store may keep it for good) only if
/// it is at least this part of that body: a smaller one is copied out. What stores hold of a
/// peer's messages is then at most this many times the blocks they keep, whatever the peer
/// packs beside them (a small block in a large message, say, among blocks we never keep).
const SHARED_BLOCK_MIN_PART: usize = 4;

/// `data` as it lies in a body of `body_len` bytes, or a copy of it if it is too small a
/// part of that body to hold all of it in memory ([`SHARED_BLOCK_MIN_PART`]).
fn compact(data: crate::Bytes, body_len: usize) -> crate::Bytes {
    if data.len().saturating_mul(SHARED_BLOCK_MIN_PART) >= body_len {
        data
    } else {
        crate::Bytes::copy_from_slice(&data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_block_is_copied_out_of_its_body_and_a_large_one_shares_it() {
        let body = crate::Bytes::from(vec![7u8; 1000]);
        // A quarter of the body: kept as it lies, holding the body.
        let large = compact(body.slice(0..250), body.len());
        assert_eq!(large.as_ptr(), body.as_ptr());
        assert!(!body.is_unique());
        drop(large);
        // Less: a copy, and the body is held by nothing else.
        let small = compact(body.slice(10..259), body.len());
        assert_eq!(&small[..], &body[10..259]);
        assert_ne!(small.as_ptr(), body[10..].as_ptr());
        assert!(body.is_unique());
    }
}

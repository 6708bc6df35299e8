//! Serving one response: waits for a slot, walks the DAG, asks the hooks block by block,
//! and pauses, resumes or cancels on the node's word.

use super::*;

/// Room to serve one response: a permit of the peer's and one of the node's.
pub(super) type Slot = (OwnedSemaphorePermit, OwnedSemaphorePermit);

pub(super) struct ServeCtx {
    pub(super) peer: PeerId,
    pub(super) store: Arc<dyn Blockstore>,
    pub(super) hooks: Arc<dyn Hooks>,
    pub(super) config: Arc<GraphSyncConfig>,
    pub(super) writer: PeerWriter,
    /// Tags this response's messages (see [`PeerWriter`]).
    pub(super) token: u64,
    pub(super) done: NodeRef,
    pub(super) all: Arc<Semaphore>,
    pub(super) per_peer: Arc<Semaphore>,
    /// Where the response stands, for [`GraphSync::peer_requests`].
    pub(super) state: Arc<AtomicU8>,
}

impl ServeCtx {
    pub(super) fn set_paused(&self, paused: bool) {
        let state = if paused {
            SERVED_PAUSED
        } else {
            SERVED_RUNNING
        };
        self.state.store(state, Ordering::Relaxed);
    }

    pub(super) async fn respond(&self, response: Response, blocks: Vec<Block>) -> bool {
        let msg = Message {
            responses: vec![response],
            blocks,
            ..Message::default()
        };
        self.writer.send_as(self.token, msg).await
    }

    pub(super) async fn serve(
        self,
        request: Request,
        mut ctl: mpsc::UnboundedReceiver<ResponseCmd>,
    ) {
        let id = request.id;
        // Commands that came while the request waited, for `run`.
        let mut early = VecDeque::new();
        let slot = match self.try_slot() {
            Some(slot) => Some(slot),
            None => {
                self.hooks.request_queued(self.peer, &request);
                // The requester learns it waits in our queue (so its wait for an answer can
                // wait too); go-graphsync requesters take the status as a plain update.
                let queued = Response {
                    id,
                    status: ResponseStatus::RequestAcknowledged,
                    metadata: Vec::new(),
                    extensions: Extensions::new(),
                };
                self.respond(queued, Vec::new()).await;
                self.wait_for_slot(id, &mut ctl, &mut early).await
            }
        };
        if let Some(slot) = slot {
            self.set_paused(false);
            // The writer reports completion once the final response is written.
            let _ = self.run(request, &mut ctl, early, slot).await;
        }
        let _ = self
            .done
            .send(Cmd::ResponseDone(self.peer, id, self.token))
            .await;
    }

    /// Room to serve now (per peer, then in total), if there is some.
    pub(super) fn try_slot(&self) -> Option<Slot> {
        match (
            self.per_peer.clone().try_acquire_owned(),
            self.all.clone().try_acquire_owned(),
        ) {
            (Ok(p), Ok(a)) => Some((p, a)),
            _ => None,
        }
    }

    /// Waits in the queue for room to serve, keeping the commands that come meanwhile in
    /// `early`; `None` if the request was cancelled (the requester is told) or dropped.
    pub(super) async fn wait_for_slot(
        &self,
        id: RequestId,
        ctl: &mut mpsc::UnboundedReceiver<ResponseCmd>,
        early: &mut VecDeque<ResponseCmd>,
    ) -> Option<Slot> {
        self.state.store(SERVED_QUEUED, Ordering::Relaxed);
        let (per_peer, all) = (self.per_peer.clone(), self.all.clone());
        let acquire = async { (per_peer.acquire_owned().await, all.acquire_owned().await) };
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                (p, a) = &mut acquire => return p.ok().zip(a.ok()),
                cmd = ctl.recv() => match cmd {
                    // Cancelled while waiting: it never starts (again).
                    Some(ResponseCmd::Cancel) => {
                        let cancelled = Response {
                            id,
                            status: ResponseStatus::RequestCancelled,
                            metadata: Vec::new(),
                            extensions: Extensions::new(),
                        };
                        self.respond(cancelled, Vec::new()).await;
                        return None;
                    }
                    Some(ResponseCmd::Drop) | None => return None,
                    Some(other) => early.push_back(other),
                },
            }
        }
    }

    /// Serves the request; returns the final status sent, or `None` if cancelled.
    ///
    /// A paused response gives its room back (`slot`), as go-graphsync's does (a paused
    /// response is no task in its queue): requests that wait for a payment or for their
    /// requester never keep others from being served. Resumed, it waits in the queue again.
    pub(super) async fn run(
        &self,
        request: Request,
        ctl: &mut mpsc::UnboundedReceiver<ResponseCmd>,
        mut early: VecDeque<ResponseCmd>,
        slot: Slot,
    ) -> Option<ResponseStatus> {
        let mut slot = Some(slot);
        let id = request.id;
        let reply = |status, extensions| Response {
            id,
            status,
            metadata: Vec::new(),
            extensions,
        };
        // A request its requester cancelled before we looked at it (a pause right after
        // the request, in the same message, say) is not looked at: its hook could otherwise
        // run after the hook of a later request that supersedes it, and undo that one.
        loop {
            match ctl.try_recv() {
                Ok(ResponseCmd::Drop) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    return None;
                }
                Ok(other) => early.push_back(other),
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        let (mut paused, mut pending) = match self.hooks.incoming_request(self.peer, &request).await
        {
            RequestDecision::Accept(e) => (false, e),
            RequestDecision::Pause(e) => (true, e),
            RequestDecision::Reject(status, e) => {
                self.respond(reply(status, e), Vec::new()).await;
                return Some(status);
            }
        };
        let mut traversal = self
            .config
            .traversal_with(self.config.max_links_per_incoming_request);
        // A store whose blocks were checked on their way in is not hashed again here (as
        // go-graphsync's responder trusts its store); the requester checks every block.
        if self.config.trust_local_stores && self.store.trusted() {
            traversal.verify = false;
        }
        let mut responder = match Responder::new(&request, traversal, self.config.message_target) {
            Ok(r) => r,
            Err(_) => {
                let status = ResponseStatus::RequestFailedUnknown;
                self.respond(reply(status, pending), Vec::new()).await;
                return Some(status);
            }
        };
        if paused {
            self.set_paused(true);
            slot = None;
            self.respond(
                reply(ResponseStatus::RequestPaused, std::mem::take(&mut pending)),
                Vec::new(),
            )
            .await;
        }
        loop {
            // Commands first; while paused, wait for one.
            loop {
                let cmd = if let Some(cmd) = early.pop_front() {
                    Some(cmd)
                } else if paused {
                    ctl.recv().await
                } else {
                    match ctl.try_recv() {
                        Ok(cmd) => Some(cmd),
                        Err(mpsc::error::TryRecvError::Empty) => None,
                        // Replaced by a newer response under the same id, or the node is gone.
                        Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    }
                };
                match cmd {
                    None if paused => return None,
                    None => break,
                    Some(ResponseCmd::Cancel) => {
                        self.respond(
                            reply(ResponseStatus::RequestCancelled, Extensions::new()),
                            Vec::new(),
                        )
                        .await;
                        return None;
                    }
                    Some(ResponseCmd::Drop) => return None,
                    Some(ResponseCmd::Pause) => {
                        paused = true;
                        self.set_paused(true);
                        slot = None;
                        self.respond(
                            reply(ResponseStatus::RequestPaused, std::mem::take(&mut pending)),
                            Vec::new(),
                        )
                        .await;
                    }
                    Some(ResponseCmd::Unpause(e)) => {
                        paused = false;
                        self.set_paused(false);
                        merge(&mut pending, e);
                    }
                    Some(ResponseCmd::Extensions(e)) => merge(&mut pending, e),
                }
                if !paused {
                    break;
                }
            }
            if slot.is_none() {
                // Resumed: room again, in turn. Commands meanwhile are handled first after.
                slot = Some(self.wait_for_slot(id, ctl, &mut early).await?);
                self.set_paused(false);
                if !early.is_empty() {
                    continue;
                }
            }
            let mut metadata = Vec::new();
            let mut blocks = Vec::new();
            let mut bytes = 0;
            let mut status = ResponseStatus::PartialResponse;
            let mut finished = false;
            while bytes < self.config.message_target {
                match responder.step(&*self.store) {
                    Err(_) => {
                        status = ResponseStatus::RequestFailedUnknown;
                        finished = true;
                        break;
                    }
                    Ok(StepItem::Finished(s)) => {
                        status = s;
                        finished = true;
                        break;
                    }
                    Ok(StepItem::Link {
                        event,
                        action,
                        block,
                    }) => {
                        metadata.push((event.cid, action));
                        // Metadata counts: a walk past many skipped blocks sends no block
                        // bytes, but its entries must not make one huge message.
                        bytes += crate::responder::METADATA_ENTRY_BYTES;
                        if let Some(b) = block {
                            bytes += b.data.len();
                            blocks.push(b);
                        }
                        let (decision, ext) =
                            self.hooks.outgoing_block(self.peer, id, &event).await;
                        merge(&mut pending, ext);
                        if decision == BlockDecision::Pause {
                            paused = true;
                            self.set_paused(true);
                            slot = None;
                            status = ResponseStatus::RequestPaused;
                            break;
                        }
                    }
                }
            }
            let response = Response {
                id,
                status,
                metadata,
                extensions: std::mem::take(&mut pending),
            };
            if !self.respond(response, blocks).await || finished {
                return finished.then_some(status);
            }
        }
    }
}

pub(super) fn merge(into: &mut Extensions, from: Extensions) {
    for (k, v) in from.iter() {
        into.set(k, v.clone());
    }
}

//! Our own requests (we receive a channel's data): opened, re-opened when a responder is
//! busy, steered by the engine's answers to each block, and reported when they end.

use super::*;

impl Adapter {
    /// Sends the channel's request, replacing the one in flight; `busy` is how many busy
    /// refusals came before it.
    pub(super) fn open(&mut self, open: Open, busy: u32) {
        let channel = open.channel;
        let store = self
            .stores
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| self.default_store.clone());
        // A re-open replaces the request in flight.
        if let Some(old) = self.outgoing.remove(&channel) {
            self.push(Action::CancelRequest {
                channel,
                attempt: old.attempt,
            });
        }
        let extensions = extensions_for(&open.message, &[EXTENSION_DATA_TRANSFER]);
        let error = if extensions.get(EXTENSION_DATA_TRANSFER).is_none() {
            Some("the data-transfer message could not be encoded")
        } else if RawNode::new(open.selector.as_bytes().to_vec()).is_err() {
            Some("the selector is not valid DAG-CBOR")
        } else {
            None
        };
        if let Some(error) = error {
            let error = error.to_owned();
            return self.deliver(TransportEvent::OpenFailed { channel, error });
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let request = SendRequest {
            channel,
            attempt,
            to: open.data_sender,
            root: open.root,
            selector: open.selector.clone(),
            extensions,
            store: store.clone(),
            skip_held: open.restart || self.config.skip_held_blocks_on_open,
        };
        // Registered before the request leaves, so its first blocks find it.
        self.outgoing.insert(
            channel,
            Outgoing {
                attempt,
                started: false,
                closed: false,
                busy,
                open,
                store,
                deferred: Vec::new(),
                resumed: false,
            },
        );
        self.push(Action::SendRequest(request));
    }

    /// graphsync took request `attempt` of the channel, as `id`. Returns whether it is still
    /// wanted: if not (the channel was closed or re-opened meanwhile), cancel it and report
    /// nothing more of it. Pauses and resumes asked for meanwhile follow.
    pub fn request_started(&mut self, channel: ChannelId, attempt: u64, id: RequestId) -> bool {
        let deferred = match self.outgoing.get_mut(&channel) {
            Some(o) if o.attempt == attempt && !o.closed => {
                o.started = true;
                std::mem::take(&mut o.deferred)
            }
            _ => {
                self.outgoing_ids.remove(&id);
                return false;
            }
        };
        for d in deferred {
            self.push(match d {
                Deferred::Pause => Action::PauseRequest { channel, attempt },
                Deferred::Resume(extensions) => Action::UnpauseRequest {
                    channel,
                    attempt,
                    extensions,
                },
            });
        }
        true
    }

    /// graphsync could not send request `attempt` of the channel.
    pub fn request_failed(&mut self, channel: ChannelId, attempt: u64, error: String) {
        if self
            .outgoing
            .get(&channel)
            .is_some_and(|o| o.attempt == attempt)
        {
            self.outgoing.remove(&channel);
            self.deliver(TransportEvent::OpenFailed { channel, error });
        }
    }

    /// Request `attempt` of the channel (graphsync's `id`) ended with `result`.
    pub fn request_finished(
        &mut self,
        channel: ChannelId,
        attempt: u64,
        id: RequestId,
        result: Result<ResponseStatus, GraphSyncError>,
    ) {
        self.outgoing_ids.remove(&id);
        let Some(o) = self
            .outgoing
            .get_mut(&channel)
            .filter(|o| o.attempt == attempt)
        else {
            return;
        };
        // A busy responder (its queue for us is full) is asked again later; the channel stays
        // registered meanwhile, so closing it stops the retry.
        let busy = matches!(
            result,
            Err(GraphSyncError::Verify(VerifyError::Failed(
                ResponseStatus::RequestFailedBusy
            )))
        );
        let retry = busy && o.busy < self.config.max_busy_retries;
        let (closed, store, tries, resumed) = (o.closed, o.store.clone(), o.busy, o.resumed);
        if retry {
            o.started = false;
        } else {
            self.outgoing.remove(&channel);
        }
        if closed || self.shut_down {
            return;
        }
        if retry {
            self.deliver(TransportEvent::TransferQueued { channel });
            let wait = self.config.busy_retry_backoff * 2u32.saturating_pow(tries.min(5));
            return self.push(Action::ReopenAfter {
                channel,
                attempt,
                wait,
            });
        }
        let event = match result {
            Ok(ResponseStatus::RequestCompletedFull) => {
                let store = StoreRef(store);
                return self.push(Action::Flush { channel, store });
            }
            // Go leaves a responder's cancel to the data-transfer message that comes with it.
            Err(GraphSyncError::Verify(VerifyError::Failed(ResponseStatus::RequestCancelled))) => {
                return;
            }
            Ok(status) => TransportEvent::ChannelCompleted {
                channel,
                result: Err(Fault::PeerFailed(format!(
                    "graphsync request failed to complete: the responder lacked blocks ({status:?})"
                ))),
            },
            // Resuming after a pause asks again under a fresh request id, which the responder
            // takes as continuing the channel's validated request. One that no longer serves
            // that (it restarted, or the channel ended there while our restart's request was
            // on its way, the chaos soak found) refuses it: a restart asks anew, with the
            // channel's voucher, and the responder's answer to that decides.
            Err(GraphSyncError::Verify(VerifyError::Failed(ResponseStatus::RequestRejected)))
                if resumed =>
            {
                TransportEvent::Disconnected {
                    channel,
                    error: "graphsync request failed: the responder refused the request resuming \
                            the channel (it no longer serves it); restarting the channel"
                        .into(),
                }
            }
            Err(GraphSyncError::Network(e)) => TransportEvent::Disconnected {
                channel,
                error: format!("graphsync request failed: {e}"),
            },
            // go-graphsync sends a block only once to a peer among the responses it is serving
            // that peer: while the response to a request we replaced (a restart, a reconnect)
            // still runs there, the new one says "present" for the blocks the old one sent,
            // which never reached us. A restart after the monitor's backoff asks again, by then
            // alone; the monitor's restart limit bounds a responder that keeps doing it.
            Err(GraphSyncError::Verify(VerifyError::BlockNotSent(cid))) => {
                TransportEvent::Disconnected {
                    channel,
                    error: format!(
                        "graphsync request failed: the responder did not send block {cid}, which \
                         go-graphsync withholds while an earlier response to us still holds it"
                    ),
                }
            }
            Err(e) => TransportEvent::ChannelCompleted {
                channel,
                result: Err(fault_of(&e)
                    .map_message(|m| format!("graphsync request failed to complete: {m}"))),
            },
        };
        self.deliver(event);
    }

    /// The wait of an [`Action::ReopenAfter`] is over: ask the busy responder again, unless
    /// the channel was closed or re-opened meanwhile.
    pub fn reopen(&mut self, channel: ChannelId, attempt: u64) {
        let waiting = self
            .outgoing
            .get(&channel)
            .is_some_and(|o| o.attempt == attempt && !o.closed && !o.started);
        if !waiting || self.shut_down {
            return;
        }
        // The refused request is over: nothing of it to cancel. Pauses and resumes asked
        // for meanwhile go to the next one.
        if let Some(o) = self.outgoing.remove(&channel) {
            self.open(o.open, o.busy + 1);
            if let Some(next) = self.outgoing.get_mut(&channel) {
                next.deferred = o.deferred;
            }
        }
    }

    /// The [`Action::Flush`] of the channel's completed request is done: the channel's data
    /// is all here (or could not be stored).
    pub fn flushed(&mut self, channel: ChannelId, result: Result<(), String>) {
        let result = result
            .map_err(|e| Fault::local(format!("the received blocks could not be stored: {e}")));
        self.deliver(TransportEvent::ChannelCompleted { channel, result });
    }

    /// graphsync's outgoing-request hook: our request to `peer` is leaving; the channel is
    /// open (as Go's hook says).
    pub fn outgoing_request(&mut self, peer: PeerId, request: &Request) {
        if let Some(Ok(msg)) = self.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            let channel = if msg.is_request() {
                ChannelId::new(self.me, peer, msg.transfer_id())
            } else {
                ChannelId::new(peer, self.me, msg.transfer_id())
            };
            self.outgoing_ids.insert(request.id, channel);
            self.deliver(TransportEvent::ChannelOpened { channel });
        }
    }

    /// graphsync's request-queued hook: a request from `peer` waits for a free slot.
    pub fn request_queued(&mut self, peer: PeerId, request: &Request) {
        let Some(Ok(msg)) = self.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        if msg.message_type() == MessageType::New {
            let channel = self.channel_of(peer, &msg);
            self.deliver(TransportEvent::TransferQueued { channel });
        }
    }

    /// graphsync's incoming-block hook: a block of our request `id` arrived. The request
    /// goes on; the engine's answer may pause or cancel it later.
    pub fn incoming_block(&mut self, id: RequestId, block: &IncomingBlock) {
        if !block.present || self.shut_down {
            return;
        }
        let Some(channel) = self.outgoing_ids.get(&id).copied() else {
            return;
        };
        let token = self.token();
        self.pending.insert(token, Pending::Received(channel));
        self.deliver(TransportEvent::DataReceived {
            token,
            channel,
            size: block.size,
            index: block.index,
            unique: block.on_wire,
        });
    }

    /// graphsync's incoming-response hook: `peer` answered our request.
    pub fn incoming_response(&mut self, peer: PeerId, response: &Response) {
        let Some(channel) = self.outgoing_ids.get(&response.id).copied() else {
            return;
        };
        // The responder queued our request behind others: the channel waits, it is not lost.
        if response.status == ResponseStatus::RequestAcknowledged {
            self.deliver(TransportEvent::TransferQueued { channel });
        }
        let first = self.message_in(
            &response.extensions,
            &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER],
        );
        let block = self.message_in(&response.extensions, &[EXTENSION_OUTGOING_BLOCK]);
        let mut seen: Option<Message> = None;
        for m in [first, block].into_iter().flatten().flatten() {
            if seen.as_ref() == Some(&m) || self.channel_of(peer, &m) != channel {
                continue;
            }
            seen = Some(m.clone());
            match m {
                Message::Response(response) => self.deliver(TransportEvent::ResponseReceived {
                    from: peer,
                    response,
                    data_request: None,
                }),
                Message::Request(request) => {
                    let token = self.token();
                    self.pending.insert(token, Pending::InResponse(channel));
                    self.deliver(TransportEvent::RequestReceived {
                        token,
                        from: peer,
                        request,
                    });
                }
            }
        }
    }

    /// graphsync's network-error hook: talking to `peer` failed; every channel with it
    /// hears of it.
    pub fn network_error(&mut self, peer: PeerId, error: &str) {
        let mut sending: Vec<ChannelId> = self
            .serving_channels
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .map(|(c, _)| *c)
            .collect();
        let mut receiving: Vec<ChannelId> = self
            .outgoing
            .keys()
            .filter(|c| c.initiator == peer || c.responder == peer)
            .copied()
            .collect();
        sending.sort();
        receiving.sort();
        for channel in sending {
            let error = error.to_owned();
            self.deliver(TransportEvent::SendDataError { channel, error });
        }
        for channel in receiving {
            let error = error.to_owned();
            self.deliver(TransportEvent::ReceiveDataError { channel, error });
        }
    }

    /// The engine answered a hook about one of our requests: pass its message on, pause or
    /// cancel the request if told to.
    pub(super) fn steer_request(
        &mut self,
        channel: ChannelId,
        message: Option<Message>,
        result: HookResult,
    ) {
        let Some(o) = self.outgoing.get_mut(&channel).filter(|o| o.started) else {
            return;
        };
        let attempt = o.attempt;
        if matches!(result, HookResult::Fail(_)) {
            o.closed = true;
        }
        if let Some(m) = message {
            let extensions = extensions_for(&m, &[EXTENSION_DATA_TRANSFER]);
            self.push(Action::UnpauseRequest {
                channel,
                attempt,
                extensions,
            });
        }
        match result {
            HookResult::Pause => self.push(Action::PauseRequest { channel, attempt }),
            HookResult::Fail(_) => self.push(Action::CancelRequest { channel, attempt }),
            HookResult::Continue | HookResult::Resume => {}
        }
    }
}

/// Whose fault a failed request of ours is: our store's, one of our limits', or the
/// responder's (its data failed verification, or it failed the request).
pub(crate) fn fault_of(e: &GraphSyncError) -> Fault {
    use datatransfer_ipld::traversal::TraversalError as T;
    let m = e.to_string();
    match e {
        GraphSyncError::LocalStore(_) | GraphSyncError::Closed | GraphSyncError::Cancelled => {
            Fault::LocalFailure(m)
        }
        GraphSyncError::Selector(_) => Fault::LocalLimit(m),
        GraphSyncError::Verify(VerifyError::Failed(_)) => Fault::PeerFailed(m),
        GraphSyncError::Verify(VerifyError::Traversal(t)) => match **t {
            T::TooDeep(_) | T::TooManyLinks(_) | T::Selector(_) => Fault::LocalLimit(m),
            T::Store(_) => Fault::LocalFailure(m),
            _ => Fault::PeerMisbehaved(m),
        },
        _ => Fault::PeerMisbehaved(m),
    }
}

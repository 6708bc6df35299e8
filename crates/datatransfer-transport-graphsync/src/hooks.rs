//! Graphsync hooks: requests, blocks and responses of data-transfer channels, handed to the
//! engine and answered with its decisions.

use crate::*;

/// graphsync's hooks, turned into transport events.
pub(super) struct DtHooks(pub(super) Arc<Shared>);

#[async_trait]
impl Hooks for DtHooks {
    fn store_for_request(&self, peer: PeerId, request: &Request) -> Option<Arc<dyn Blockstore>> {
        let s = &self.0;
        let msg = s
            .message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER])?
            .ok()?;
        let channel = s.channel_of(peer, &msg);
        s.lock().stores.get(&channel).cloned()
    }

    fn outgoing_request(&self, peer: PeerId, request: &Request) -> Extensions {
        // Go's outgoing-request hook: the channel is open once its request leaves.
        let s = &self.0;
        if let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            let channel = if msg.is_request() {
                ChannelId::new(s.me, peer, msg.transfer_id())
            } else {
                ChannelId::new(peer, s.me, msg.transfer_id())
            };
            s.lock().outgoing_ids.insert(request.id, channel);
            s.deliver(TransportEvent::ChannelOpened { channel });
        }
        Extensions::new()
    }

    fn request_queued(&self, peer: PeerId, request: &Request) {
        let s = &self.0;
        let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        if msg.message_type() == MessageType::New {
            let channel = s.channel_of(peer, &msg);
            s.deliver(TransportEvent::TransferQueued { channel });
        }
    }

    async fn incoming_request(&self, peer: PeerId, request: &Request) -> RequestDecision {
        let s = &self.0;
        let msg = match s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            None => {
                return RequestDecision::Reject(ResponseStatus::RequestRejected, Extensions::new());
            }
            Some(Err(_)) => {
                return RequestDecision::Reject(
                    ResponseStatus::RequestFailedUnknown,
                    Extensions::new(),
                );
            }
            Some(Ok(m)) => m,
        };
        let channel = s.channel_of(peer, &msg);
        let key = (peer, request.id);
        let opening = matches!(msg.message_type(), MessageType::New | MessageType::Restart);
        // What the graphsync request asks for. A pull's opening request names it too, and
        // must name the same: the validator approved that root and selector, not another.
        let wanted = request.root.zip(
            request
                .selector
                .as_ref()
                .and_then(|n| DagCbor::from_bytes(n.as_bytes().to_vec()).ok()),
        );
        let Some((root, selector)) = wanted else {
            return RequestDecision::Reject(
                ResponseStatus::RequestFailedUnknown,
                Extensions::new(),
            );
        };
        let same_data = |sv: &Serving| {
            sv.accepted && sv.channel == channel && sv.root == root && sv.selector == selector.cid()
        };
        // The same request again (same id, same root and selector) is a requester resuming
        // after its own pause: its original opening message is not news to the engine.
        let repeat = s.lock().serving.get(&key).is_some_and(same_data);
        // A requester may also resume under a fresh id (ours does, since go-graphsync's
        // responder races a same-id re-request against the end of the cancelled response):
        // a request for the data of a channel we serve, validated already.
        // Whether the channel's request we serve is validated (`Some(true)`), still being
        // validated (`None`), or not ours to continue (`Some(false)`).
        let validated = || {
            let st = s.lock();
            match st
                .serving_channels
                .get(&channel)
                .and_then(|k| st.serving.get(k))
            {
                Some(sv) if !sv.accepted && sv.channel == channel => None,
                Some(sv) => Some(same_data(sv)),
                None => Some(false),
            }
        };
        let mut continuing = repeat || validated() == Some(true);
        if !opening && !continuing {
            // A requester that paused and resumed at once resumes (under a fresh id) while
            // its opening request is still being validated: wait for the answer, not refuse.
            let wait = async {
                loop {
                    let answered = s.answered.notified();
                    match validated() {
                        Some(ok) => return ok,
                        None => answered.await,
                    }
                }
            };
            continuing = tokio::time::timeout(Duration::from_secs(60), wait)
                .await
                .unwrap_or(false);
        }
        if let Message::Request(r) = &msg {
            // Anything but an opening request may only ride in a request already validated.
            let allowed = if opening {
                r.base_cid == Some(root)
                    && r.selector
                        .as_ref()
                        .is_some_and(|sel| sel.same_node(&selector))
            } else {
                continuing
            };
            if !allowed {
                return RequestDecision::Reject(ResponseStatus::RequestRejected, Extensions::new());
            }
        }
        let mut pending = Extensions::new();
        {
            let mut st = s.lock();
            if let Some(old) = st.serving_channels.insert(channel, key)
                && old != key
            {
                // The old response is cancelled but kept until it ends: the blocks it still
                // writes were sent, and count as sent.
                if let Some(gs) = s.gs() {
                    tokio::spawn(async move { gs.cancel_response(old.0, old.1).await });
                }
            }
            st.serving.entry(key).or_insert_with(|| Serving {
                channel,
                root,
                selector: selector.cid(),
                accepted: false,
                queued: VecDeque::new(),
            });
            for m in st.stashed.remove(&channel).unwrap_or_default() {
                merge_into(&mut pending, extensions_for(&m, &[EXTENSION_DATA_TRANSFER]));
            }
        }
        if repeat && opening {
            return RequestDecision::Accept(pending);
        }
        let (reply, result) = match msg {
            // A push's responder asking for the data it accepted.
            Message::Response(response) => {
                s.ask(|token| TransportEvent::ResponseReceived {
                    from: peer,
                    response,
                    data_request: Some(DataRequest {
                        token,
                        root,
                        selector,
                    }),
                })
                .await
            }
            // A pull's initiator opening (or re-opening) its channel.
            Message::Request(request) => {
                s.ask(|token| TransportEvent::RequestReceived {
                    token,
                    from: peer,
                    request,
                })
                .await
            }
        };
        if let Some(m) = reply {
            merge_into(
                &mut pending,
                extensions_for(&m, &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER]),
            );
        }
        if !matches!(result, HookResult::Fail(_))
            && let Some(sv) = s.lock().serving.get_mut(&key)
            && sv.channel == channel
        {
            sv.accepted = true;
        }
        let decision = match result {
            HookResult::Continue | HookResult::Resume => RequestDecision::Accept(pending),
            HookResult::Pause => RequestDecision::Pause(pending),
            HookResult::Fail(_) => {
                let mut st = s.lock();
                st.serving.remove(&key);
                if st.serving_channels.get(&channel) == Some(&key) {
                    st.serving_channels.remove(&channel);
                }
                RequestDecision::Reject(ResponseStatus::RequestRejected, pending)
            }
        };
        s.answered.notify_waiters();
        decision
    }

    async fn outgoing_block(
        &self,
        peer: PeerId,
        id: RequestId,
        block: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        let s = &self.0;
        // Blocks the requester already has are not news: Go only reports blocks that go out.
        if !block.sent {
            return (BlockDecision::Continue, Extensions::new());
        }
        let Some(channel) = s.lock().serving.get(&(peer, id)).map(|sv| sv.channel) else {
            return (BlockDecision::Continue, Extensions::new());
        };
        let (reply, result) = s
            .ask(|token| TransportEvent::DataQueued {
                token,
                channel,
                size: block.size,
                index: block.index,
                unique: true,
            })
            .await;
        // Under outgoing-block/1.1 only, though Go's responders also copy it under 1.1: every
        // Go requester that knows 1.1 (v1.15, v2) reads both names as two messages, so a
        // voucher result under both was a payment request taken twice, and a Go client paid
        // twice (found by the interop suite).
        let ext = reply.map_or_else(Extensions::new, |m| {
            extensions_for(&m, &[EXTENSION_OUTGOING_BLOCK])
        });
        if let Some(sv) = s.lock().serving.get_mut(&(peer, id)) {
            sv.queued.push_back((block.cid, block.index));
        }
        match result {
            HookResult::Continue | HookResult::Resume => (BlockDecision::Continue, ext),
            HookResult::Pause => (BlockDecision::Pause, ext),
            HookResult::Fail(_) => {
                if let Some(gs) = s.gs() {
                    tokio::spawn(async move { gs.cancel_response(peer, id).await });
                }
                (BlockDecision::Pause, ext)
            }
        }
    }

    fn block_sent(&self, peer: PeerId, id: RequestId, cid: Cid, size: u64) {
        let s = &self.0;
        let found = {
            let mut st = s.lock();
            st.serving.get_mut(&(peer, id)).and_then(|sv| {
                let at = sv.queued.iter().position(|(c, _)| *c == cid)?;
                let (_, index) = sv.queued.remove(at)?;
                Some((sv.channel, index))
            })
        };
        if let Some((channel, index)) = found {
            s.deliver(TransportEvent::DataSent {
                channel,
                size,
                index,
                unique: true,
            });
        }
    }

    fn incoming_block(&self, _peer: PeerId, id: RequestId, block: &IncomingBlock) -> BlockDecision {
        let s = &self.0;
        if !block.present {
            return BlockDecision::Continue;
        }
        let token = s.token();
        let channel = {
            let mut st = s.lock();
            let Some(channel) = st.outgoing_ids.get(&id).copied() else {
                return BlockDecision::Continue;
            };
            if st.shut_down {
                return BlockDecision::Continue;
            }
            st.pending.insert(token, Pending::Received(channel));
            channel
        };
        s.deliver(TransportEvent::DataReceived {
            token,
            channel,
            size: block.size,
            index: block.index,
            unique: block.on_wire,
        });
        // The engine answers asynchronously; a pause or cancel is applied when it does.
        BlockDecision::Continue
    }

    fn incoming_response(&self, peer: PeerId, response: &Response) {
        let s = &self.0;
        let Some(channel) = s.lock().outgoing_ids.get(&response.id).copied() else {
            return;
        };
        // The responder queued our request behind others: the channel waits, it is not lost.
        if response.status == ResponseStatus::RequestAcknowledged {
            s.deliver(TransportEvent::TransferQueued { channel });
        }
        let first = s.message_in(
            &response.extensions,
            &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER],
        );
        let block = s.message_in(&response.extensions, &[EXTENSION_OUTGOING_BLOCK]);
        let mut seen: Option<Message> = None;
        for m in [first, block].into_iter().flatten().flatten() {
            if seen.as_ref() == Some(&m) || s.channel_of(peer, &m) != channel {
                continue;
            }
            seen = Some(m.clone());
            match m {
                Message::Response(response) => s.deliver(TransportEvent::ResponseReceived {
                    from: peer,
                    response,
                    data_request: None,
                }),
                Message::Request(request) => {
                    let token = s.token();
                    s.lock().pending.insert(token, Pending::InResponse(channel));
                    s.deliver(TransportEvent::RequestReceived {
                        token,
                        from: peer,
                        request,
                    });
                }
            }
        }
    }

    fn request_updated(&self, peer: PeerId, request: &Request) {
        let s = &self.0;
        let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        // An update can overtake the incoming-request hook of its own request (that hook runs
        // on the response's task), so the channel comes from the message when the request is
        // not registered yet; the engine checks the channel exists.
        let channel = s.channel_of(peer, &msg);
        let registered = s
            .lock()
            .serving
            .get(&(peer, request.id))
            .map(|sv| sv.channel);
        if registered.is_some_and(|c| c != channel) {
            return;
        }
        match msg {
            Message::Response(response) => s.deliver(TransportEvent::ResponseReceived {
                from: peer,
                response,
                data_request: None,
            }),
            Message::Request(req) => {
                let token = s.token();
                s.lock()
                    .pending
                    .insert(token, Pending::Updated(peer, request.id));
                s.deliver(TransportEvent::RequestReceived {
                    token,
                    from: peer,
                    request: req,
                });
            }
        }
    }

    fn completed_response(&self, peer: PeerId, id: RequestId, status: ResponseStatus) {
        let s = &self.0;
        let channel = {
            let mut st = s.lock();
            let Some(channel) = st.serving.get(&(peer, id)).map(|sv| sv.channel) else {
                return;
            };
            // A response a newer request of the channel replaced says nothing of the
            // channel (go-data-transfer completes the channel here; we do not).
            if st.serving_channels.get(&channel) != Some(&(peer, id)) {
                st.serving.remove(&(peer, id));
                return;
            }
            // A cancelled response is either a requester's pause or a cancel the engine
            // hears of through the data-transfer network.
            if status == ResponseStatus::RequestCancelled {
                return;
            }
            st.serving.remove(&(peer, id));
            st.serving_channels.remove(&channel);
            channel
        };
        // Our walk of our own DAG stopped short (blocks we lack, a store that failed, a
        // limit): the fault is ours, not the requester's.
        let result = if status == ResponseStatus::RequestCompletedFull {
            Ok(())
        } else {
            Err(Fault::local(format!(
                "graphsync response to peer {peer} did not complete: response status code {status:?}"
            )))
        };
        s.deliver(TransportEvent::ChannelCompleted { channel, result });
    }

    fn requestor_cancelled(&self, peer: PeerId, id: RequestId) {
        // A replaced response the requester cancelled is over; the current one may resume.
        let mut st = self.0.lock();
        if let Some(channel) = st.serving.get(&(peer, id)).map(|sv| sv.channel)
            && st.serving_channels.get(&channel) != Some(&(peer, id))
        {
            st.serving.remove(&(peer, id));
        }
    }

    fn network_error(&self, peer: PeerId, error: &str) {
        let s = &self.0;
        let (sending, receiving): (Vec<ChannelId>, Vec<ChannelId>) = {
            let st = s.lock();
            (
                st.serving_channels
                    .iter()
                    .filter(|(_, (p, _))| *p == peer)
                    .map(|(c, _)| *c)
                    .collect(),
                st.outgoing
                    .keys()
                    .filter(|c| c.initiator == peer || c.responder == peer)
                    .copied()
                    .collect(),
            )
        };
        for channel in sending {
            s.deliver(TransportEvent::SendDataError {
                channel,
                error: error.to_owned(),
            });
        }
        for channel in receiving {
            s.deliver(TransportEvent::ReceiveDataError {
                channel,
                error: error.to_owned(),
            });
        }
    }
}

/// Counts the blocks at the start of the walk that `store` already holds: what a restarted
/// request asks the sender to skip.
pub(super) fn held_prefix(
    store: &dyn Blockstore,
    root: Cid,
    selector: &DagCbor,
    config: &TraversalConfig,
) -> u64 {
    let Ok(selector) = Selector::from_dag_cbor(selector.as_bytes()) else {
        return 0;
    };
    // Our own store's blocks were checked when they arrived: no need to hash them again.
    let config = TraversalConfig {
        verify: false,
        ..config.clone()
    };
    let mut walk = Traversal::new(root, selector, config);
    let mut held = 0;
    loop {
        match walk.advance(&mut NoVisitor) {
            Ok(Step::NeedBlock(cid)) => match store.get(&cid) {
                Ok(Some(data)) => {
                    if walk.provide(Some(&data), &mut NoVisitor).is_err() {
                        return held;
                    }
                    held += 1;
                }
                _ => return held,
            },
            Ok(Step::Done) | Err(_) => return held,
        }
    }
}

//! Responses we serve (we send a channel's data): graphsync requests admitted by the engine,
//! blocks counted on their way out, updates and the end of each response.

use super::*;

/// An incoming request on its way to the engine.
pub(super) struct Admission {
    pub(super) hook: HookId,
    peer: PeerId,
    id: RequestId,
    message: Message,
    channel: ChannelId,
    root: Cid,
    selector: DagCbor,
    opening: bool,
    repeat: bool,
}

impl Adapter {
    /// The store a request from `peer` is to be served from, if its channel has its own.
    pub fn store_for_request(
        &self,
        peer: PeerId,
        request: &Request,
    ) -> Option<Arc<dyn Blockstore>> {
        let msg = self
            .message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER])?
            .ok()?;
        let channel = self.channel_of(peer, &msg);
        self.stores.get(&channel).cloned()
    }

    /// graphsync's incoming-request hook: `peer` asks for data. The hook waits for the
    /// [`Action::Answer`] under `hook`; if none came after a while, [`Adapter::give_up`].
    pub fn incoming_request(&mut self, hook: HookId, peer: PeerId, request: &Request) {
        if self.shut_down {
            return self.refuse(hook, ResponseStatus::RequestRejected);
        }
        let message = match self.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            None => return self.refuse(hook, ResponseStatus::RequestRejected),
            Some(Err(_)) => return self.refuse(hook, ResponseStatus::RequestFailedUnknown),
            Some(Ok(m)) => m,
        };
        // What the graphsync request asks for. A pull's opening request names it too, and
        // must name the same: the validator approved that root and selector, not another.
        let wanted = request.root.zip(
            request
                .selector
                .as_ref()
                .and_then(|n| DagCbor::from_bytes(n.as_bytes().to_vec()).ok()),
        );
        let Some((root, selector)) = wanted else {
            return self.refuse(hook, ResponseStatus::RequestFailedUnknown);
        };
        let channel = self.channel_of(peer, &message);
        let opening = matches!(
            message.message_type(),
            MessageType::New | MessageType::Restart
        );
        // The same request again (same id, same root and selector) is a requester resuming
        // after its own pause: its original opening message is not news to the engine.
        let repeat = self
            .serving
            .get(&(peer, request.id))
            .is_some_and(|sv| sv.asks(channel, root, &selector));
        let admission = Admission {
            hook,
            peer,
            id: request.id,
            message,
            channel,
            root,
            selector,
            opening,
            repeat,
        };
        // A requester may also resume under a fresh id (ours does, since go-graphsync's
        // responder races a same-id re-request against the end of the cancelled response):
        // a request for the data of a channel we serve, validated already.
        match self.validated(&admission) {
            Some(true) => self.admit(admission, true),
            _ if repeat || opening => self.admit(admission, repeat),
            Some(false) => self.admit(admission, false),
            // A requester that paused and resumed at once resumes (under a fresh id) while
            // its opening request is still being validated: wait for the answer, not refuse.
            None => self.waiting.push(admission),
        }
    }

    /// Answers the incoming-request hook under `hook` with a refusal of `status`.
    pub(super) fn refuse(&mut self, hook: HookId, status: ResponseStatus) {
        let answer = HookAnswer::Request(RequestDecision::Reject(status, Extensions::new()));
        self.push(Action::Answer { hook, answer });
    }

    /// Gives up waiting, for the request under `hook`, for the validation of the channel it
    /// resumes: it is refused. Nothing happens if the hook does not wait for that.
    pub fn give_up(&mut self, hook: HookId) {
        if let Some(at) = self.waiting.iter().position(|a| a.hook == hook) {
            let admission = self.waiting.remove(at);
            self.admit(admission, false);
        }
    }

    /// Whether the channel's request we serve is validated and asks for the same data
    /// (`Some(true)`), is still being validated (`None`), or is not there to continue
    /// (`Some(false)`).
    fn validated(&self, a: &Admission) -> Option<bool> {
        let sv = self
            .serving_channels
            .get(&a.channel)
            .and_then(|k| self.serving.get(k));
        match sv {
            Some(sv) if !sv.accepted && sv.channel == a.channel => None,
            Some(sv) => Some(sv.asks(a.channel, a.root, &a.selector)),
            None => Some(false),
        }
    }

    /// Admits a request (or refuses it): `continuing` says whether it continues a channel
    /// validated already.
    fn admit(&mut self, a: Admission, continuing: bool) {
        let hook = a.hook;
        if self.shut_down {
            return self.refuse(hook, ResponseStatus::RequestRejected);
        }
        if let Message::Request(r) = &a.message {
            // Anything but an opening request may only ride in a request already validated.
            let allowed = if a.opening {
                r.base_cid == Some(a.root)
                    && r.selector
                        .as_ref()
                        .is_some_and(|sel| sel.same_node(&a.selector))
            } else {
                continuing
            };
            if !allowed {
                return self.refuse(hook, ResponseStatus::RequestRejected);
            }
        }
        let key = (a.peer, a.id);
        let channel = a.channel;
        if let Some(old) = self.serving_channels.insert(channel, key)
            && old != key
        {
            // The old response is cancelled but kept until it ends: the blocks it still
            // writes were sent, and count as sent.
            self.push(Action::CancelResponse {
                peer: old.0,
                id: old.1,
            });
        }
        self.serving.entry(key).or_insert_with(|| Serving {
            channel,
            root: a.root,
            selector: a.selector.cid(),
            accepted: false,
            queued: VecDeque::new(),
        });
        let mut extensions = Extensions::new();
        for m in self.stashed.remove(&channel).unwrap_or_default() {
            merge_into(
                &mut extensions,
                extensions_for(&m, &[EXTENSION_DATA_TRANSFER]),
            );
        }
        if a.repeat && a.opening {
            let answer = HookAnswer::Request(RequestDecision::Accept(extensions));
            return self.push(Action::Answer { hook, answer });
        }
        let token = self.token();
        self.pending.insert(
            token,
            Pending::Admit {
                hook,
                key,
                channel,
                extensions,
            },
        );
        let event = match a.message {
            // A push's responder asking for the data it accepted.
            Message::Response(response) => TransportEvent::ResponseReceived {
                from: a.peer,
                response,
                data_request: Some(DataRequest {
                    token,
                    root: a.root,
                    selector: a.selector,
                }),
            },
            // A pull's initiator opening (or re-opening) its channel.
            Message::Request(request) => TransportEvent::RequestReceived {
                token,
                from: a.peer,
                request,
            },
        };
        self.deliver(event);
    }

    /// The engine answered a request we were asked to serve.
    pub(super) fn admitted(
        &mut self,
        hook: HookId,
        key: (PeerId, RequestId),
        channel: ChannelId,
        mut extensions: Extensions,
        reply: Option<Message>,
        result: HookResult,
    ) {
        if let Some(m) = reply {
            merge_into(
                &mut extensions,
                extensions_for(&m, &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER]),
            );
        }
        if !matches!(result, HookResult::Fail(_))
            && let Some(sv) = self.serving.get_mut(&key)
            && sv.channel == channel
        {
            sv.accepted = true;
        }
        let decision = match result {
            HookResult::Continue | HookResult::Resume => RequestDecision::Accept(extensions),
            HookResult::Pause => RequestDecision::Pause(extensions),
            HookResult::Fail(_) => {
                self.serving.remove(&key);
                if self.serving_channels.get(&channel) == Some(&key) {
                    self.serving_channels.remove(&channel);
                }
                RequestDecision::Reject(ResponseStatus::RequestRejected, extensions)
            }
        };
        let answer = HookAnswer::Request(decision);
        self.push(Action::Answer { hook, answer });
        // Requests resuming a channel that waited for this validation go on.
        let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|a| self.validated(a).is_some());
        self.waiting = still;
        for a in ready {
            let continuing = self.validated(&a) == Some(true);
            self.admit(a, continuing);
        }
    }

    /// graphsync's outgoing-block hook: a block of response `id` to `peer` is about to go out
    /// (or is skipped). The hook waits for the [`Action::Answer`] under `hook`.
    pub fn outgoing_block(
        &mut self,
        hook: HookId,
        peer: PeerId,
        id: RequestId,
        block: &OutgoingBlock,
    ) {
        let go_on = HookAnswer::Block(BlockDecision::Continue, Extensions::new());
        // Blocks the requester already has are not news: Go only reports blocks that go out.
        // Nor are those of a response a newer request of its channel replaced (a restart):
        // it was cancelled and says nothing of the channel. Counted, one could reach the
        // revalidator, whose pause (and its request for payment) would go to that dying
        // response while the current one went on unpaid (found by the chaos soak).
        let channel = self.serving.get(&(peer, id)).map(|sv| sv.channel);
        let current =
            |c: &ChannelId| self.serving_channels.get(c) == Some(&(peer, id)) && block.sent;
        let Some(channel) = channel.filter(current) else {
            return self.push(Action::Answer {
                hook,
                answer: go_on,
            });
        };
        if self.shut_down {
            let answer = HookAnswer::Block(BlockDecision::Pause, Extensions::new());
            return self.push(Action::Answer { hook, answer });
        }
        let token = self.token();
        self.pending.insert(
            token,
            Pending::Block {
                hook,
                key: (peer, id),
                cid: block.cid,
                index: block.index,
            },
        );
        self.deliver(TransportEvent::DataQueued {
            token,
            channel,
            size: block.size,
            index: block.index,
            unique: true,
        });
    }

    /// The engine answered an outgoing block.
    pub(super) fn block_decided(
        &mut self,
        hook: HookId,
        (peer, id): (PeerId, RequestId),
        cid: Cid,
        index: u64,
        reply: Option<Message>,
        result: HookResult,
    ) {
        // The engine paused the channel on a block of a response that a newer request of the
        // channel replaced meanwhile (a restart, a resume under a fresh id): that response is
        // cancelled, so the pause, and its message (a request for payment, say), go to the
        // current one, or it would go on unpaused (found by the chaos soak).
        if matches!(result, HookResult::Pause)
            && let Some(channel) = self.serving.get(&(peer, id)).map(|sv| sv.channel)
            && let Some(&(now_peer, now_id)) = self.serving_channels.get(&channel)
            && (now_peer, now_id) != (peer, id)
        {
            if let Some(m) = &reply {
                self.push(Action::SendExtensions {
                    peer: now_peer,
                    id: now_id,
                    extensions: extensions_for(m, &[EXTENSION_DATA_TRANSFER]),
                });
            }
            self.push(Action::PauseResponse {
                peer: now_peer,
                id: now_id,
            });
        }
        // Under outgoing-block/1.1 only, though Go's responders also copy it under 1.1: every
        // Go requester that knows 1.1 (v1.15, v2) reads both names as two messages, so a
        // voucher result under both was a payment request taken twice, and a Go client paid
        // twice (found by the interop suite).
        let ext = reply.map_or_else(Extensions::new, |m| {
            extensions_for(&m, &[EXTENSION_OUTGOING_BLOCK])
        });
        if let Some(sv) = self.serving.get_mut(&(peer, id)) {
            sv.queued.push_back((cid, index));
        }
        let decision = match result {
            HookResult::Continue | HookResult::Resume => BlockDecision::Continue,
            HookResult::Pause => BlockDecision::Pause,
            HookResult::Fail(_) => {
                self.push(Action::CancelResponse { peer, id });
                BlockDecision::Pause
            }
        };
        let answer = HookAnswer::Block(decision, ext);
        self.push(Action::Answer { hook, answer });
    }

    /// graphsync's block-sent hook: block `cid` of response `id` went out on the wire.
    pub fn block_sent(&mut self, peer: PeerId, id: RequestId, cid: Cid, size: u64) {
        let found = self.serving.get_mut(&(peer, id)).and_then(|sv| {
            let at = sv.queued.iter().position(|(c, _)| *c == cid)?;
            let (_, index) = sv.queued.remove(at)?;
            Some((sv.channel, index))
        });
        if let Some((channel, index)) = found {
            self.deliver(TransportEvent::DataSent {
                channel,
                size,
                index,
                unique: true,
            });
        }
    }

    /// graphsync's request-updated hook: `peer` sent extensions on a request we serve.
    pub fn request_updated(&mut self, peer: PeerId, request: &Request) {
        let Some(Ok(msg)) = self.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        // An update can overtake the incoming-request hook of its own request (that hook runs
        // on the response's task), so the channel comes from the message when the request is
        // not registered yet; the engine checks the channel exists.
        let channel = self.channel_of(peer, &msg);
        let registered = self.serving.get(&(peer, request.id)).map(|sv| sv.channel);
        if registered.is_some_and(|c| c != channel) {
            return;
        }
        match msg {
            Message::Response(response) => self.deliver(TransportEvent::ResponseReceived {
                from: peer,
                response,
                data_request: None,
            }),
            Message::Request(req) => {
                let token = self.token();
                self.pending
                    .insert(token, Pending::Updated(peer, request.id));
                self.deliver(TransportEvent::RequestReceived {
                    token,
                    from: peer,
                    request: req,
                });
            }
        }
    }

    /// graphsync's completed-response hook: our last response to request `id` of `peer`
    /// went out with `status`.
    pub fn completed_response(&mut self, peer: PeerId, id: RequestId, status: ResponseStatus) {
        let Some(channel) = self.serving.get(&(peer, id)).map(|sv| sv.channel) else {
            return;
        };
        // A response a newer request of the channel replaced says nothing of the channel
        // (go-data-transfer completes the channel here; we do not).
        if self.serving_channels.get(&channel) != Some(&(peer, id)) {
            self.serving.remove(&(peer, id));
            return;
        }
        // A cancelled response is either a requester's pause or a cancel the engine hears of
        // through the data-transfer network.
        if status == ResponseStatus::RequestCancelled {
            return;
        }
        self.serving.remove(&(peer, id));
        self.serving_channels.remove(&channel);
        // Our walk of our own DAG stopped short (blocks we lack, a store that failed, a
        // limit): the fault is ours, not the requester's.
        let result = if status == ResponseStatus::RequestCompletedFull {
            Ok(())
        } else {
            Err(Fault::local(format!(
                "graphsync response to peer {peer} did not complete: response status code {status:?}"
            )))
        };
        self.deliver(TransportEvent::ChannelCompleted { channel, result });
    }

    /// graphsync's requestor-cancelled hook: `peer` cancelled request `id` we served.
    pub fn requestor_cancelled(&mut self, peer: PeerId, id: RequestId) {
        // A replaced response the requester cancelled is over; the current one may resume.
        if let Some(channel) = self.serving.get(&(peer, id)).map(|sv| sv.channel)
            && self.serving_channels.get(&channel) != Some(&(peer, id))
        {
            self.serving.remove(&(peer, id));
        }
    }
}

impl Serving {
    /// Whether this validated response serves the channel the data asked for.
    fn asks(&self, channel: ChannelId, root: Cid, selector: &DagCbor) -> bool {
        self.accepted
            && self.channel == channel
            && self.root == root
            && self.selector == selector.cid()
    }
}

//! Requests from the network or inside the transport: new channels, restarts, vouchers,
//! pauses, resumes and cancels, validated and answered.

use super::*;

impl Engine {
    // ----- network input -------------------------------------------------------------------

    /// A message arrived from `from` over the data-transfer network.
    pub fn handle_message(&mut self, now: Timestamp, from: PeerId, message: Message) {
        match message {
            // Answered by re-opening the channel, never by a response.
            Message::Request(r) if r.message_type == MessageType::RestartExistingChannelRequest => {
                if let Some(channel) = r.restart_channel {
                    self.on_restart_existing(from, channel);
                }
            }
            Message::Request(r) => self.on_request(now, from, r, Via::Network),
            Message::Response(r) => self.on_response(now, from, r, None),
        }
    }

    /// A message the shell could not deliver.
    pub fn handle_send_failure(
        &mut self,
        now: Timestamp,
        channel: ChannelId,
        on_failure: OnSendFailure,
        error: &str,
    ) {
        match on_failure {
            OnSendFailure::Fail => self.fire_quiet(
                channel,
                ChannelEvent::error(format!("Unable to send request: {error}")),
                now,
            ),
            OnSendFailure::Disconnect => self.fire_quiet(
                channel,
                ChannelEvent::Disconnected {
                    message: format!("Unable to send message: {error}"),
                },
                now,
            ),
            OnSendFailure::Ignore => {}
        }
    }

    /// Go's `ReceiveRestartExistingChannelRequest`: the responder asks us, the initiator, to
    /// re-open a channel.
    ///
    /// Go ignores the request for a channel it no longer has. We answer with a cancel instead,
    /// so a responder that missed the end of the channel (a cancel lost in a disconnect) does
    /// not keep it open forever; a Go responder cancels on it as well.
    pub(super) fn on_restart_existing(&mut self, from: PeerId, id: ChannelId) {
        let Some(ch) = self.channels.get(&id) else {
            let completed = self.completed_earlier(&id).is_some();
            if id.initiator == self.me && id.responder == from && !completed {
                self.send(
                    from,
                    id,
                    TransferRequest::cancel(id.id),
                    OnSendFailure::Ignore,
                );
            }
            return;
        };
        if id.initiator != self.me || ch.other_peer() != from {
            return;
        }
        match self.role(ch) {
            Role::CreatePull | Role::CreatePush => {
                let ch = ch.clone();
                self.reopen_as_initiator(ch);
            }
            Role::ReceivePull | Role::ReceivePush => {}
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: Timestamp,
        from: PeerId,
        req: TransferRequest,
        via: Via,
    ) {
        let id = ChannelId::new(from, self.me, req.transfer_id);
        // Parsed once: each kind carries what it needs (Go takes any other type for an
        // update; a request typed as a response is refused here).
        let kind = match req.kind() {
            Ok(kind) => kind,
            Err(e) => {
                let why = Fault::peer(e.to_string());
                return self.reject(now, id, req.message_type, via, why);
            }
        };
        match kind {
            RequestKind::Open(open) if open.restart => self.on_restart_request(now, id, open, via),
            RequestKind::Open(open) => self.on_new_request(now, id, open, via),
            RequestKind::Cancel => {
                self.transport(TransportCommand::CleanupChannel { channel: id });
                self.fire_quiet(id, ChannelEvent::Cancel, now);
                self.finish_request(now, id, None, via, None, Verdict::Ok);
            }
            RequestKind::Voucher(voucher) => self.on_voucher_update(now, id, voucher, via),
            RequestKind::RestartExisting(channel) => self.on_restart_existing(from, channel),
            RequestKind::Update { paused } => {
                if !self.channels.contains_key(&id) {
                    // A pause or resume sent right after the opening request overtook it
                    // while it is being validated: nothing to do yet (the initiator's own
                    // side holds its pause: its graphsync request is cancelled, and asked
                    // again on resume). Refused, it would close the channel's transport
                    // under the validation, and the accept after it would serve blocks no
                    // one counts (found by the chaos soak: a pull served whole, unpaid).
                    if self.opening_validated(id) {
                        return;
                    }
                    let err = Verdict::Err(Fault::peer(format!("channel not found: {id}")));
                    return self.finish_request(now, id, None, via, None, err);
                }
                let (verdict, response) = if paused {
                    self.set_paused(id, false, true, now);
                    (Verdict::Ok, None)
                } else {
                    self.set_paused(id, false, false, now);
                    match self.channels.get(&id) {
                        Some(c)
                            if matches!(
                                c.status,
                                Status::ResponderPaused | Status::ResponderFinalizing
                            ) =>
                        {
                            // Still paused by us: the answer says so, with what the
                            // initiator owes again (its pause may have dropped the response
                            // that asked, as our requester's does, found by the chaos soak).
                            let owed = c.last_voucher_result().cloned();
                            let again = owed.map(|r| {
                                TransferResponse::voucher_result(id.id, true, true, Some(r))
                            });
                            (Verdict::Pause, again)
                        }
                        _ => (Verdict::Ok, None),
                    }
                };
                self.finish_request(now, id, None, via, response, verdict);
            }
        }
    }

    /// Refuses a request of type `asked`, answered in kind.
    pub(super) fn reject(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        asked: MessageType,
        via: Via,
        why: Fault,
    ) {
        let response = match asked {
            MessageType::Restart => TransferResponse::restart(id.id, false, false, None),
            MessageType::New => TransferResponse::new_channel(id.id, false, false, None),
            _ => TransferResponse::voucher_result(id.id, false, false, None),
        };
        self.finish_request(now, id, None, via, Some(response), Verdict::Err(why));
    }

    pub(super) fn on_new_request(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        open: OpenRequest,
        via: Via,
    ) {
        // The request that opened a channel we have, sent again: the network resends a
        // message whose connection failed under it, and it may have arrived the first time
        // (our answer lost with that connection). It is news to no one; refusing it failed
        // the initiator's channel while ours went on (found by the chaos soak once it
        // pushed). Go refuses it ("channel already exists"). A copy held up until the
        // channel ended is let be too: made anew, the channel would wait for data no one
        // sends. Over the network only: one in a graphsync request waits for an answer, and
        // gets the refusal below.
        if matches!(via, Via::Network)
            && (self.opened_by(id, &open) || self.finished.contains_key(&id))
        {
            return;
        }
        let checked = (|| {
            if self.channels.contains_key(&id) {
                return Err(Fault::peer(format!("channel {id} already exists")));
            }
            if self.channels.len() >= self.config.max_channels {
                return Err(Fault::limit(format!(
                    "too many open channels (limit {})",
                    self.config.max_channels
                )));
            }
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            self.validated
                .lookup(&open.voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            Ok(())
        })();
        if let Err(why) = checked {
            // An existing channel is left alone (Go would close its transport).
            return self.reject(now, id, open.message_type(), via, why);
        }
        let (is_restart, voucher, base_cid, selector) = (
            open.restart,
            open.voucher.clone(),
            open.root,
            open.selector.clone(),
        );
        let call = if open.pull {
            ValidationCall::ValidatePull {
                is_restart,
                channel: id,
                receiver: id.initiator,
                voucher,
                base_cid,
                selector,
            }
        } else {
            ValidationCall::ValidatePush {
                is_restart,
                channel: id,
                sender: id.initiator,
                voucher,
                base_cid,
                selector,
            }
        };
        let open = Box::new(open);
        self.ask(
            call,
            Pending::NewRequest {
                via,
                channel: id,
                open,
            },
        );
    }

    /// Whether channel `id` exists and is the one `open` asks for (its direction, root,
    /// selector and voucher).
    /// Whether the opening (or restarting) request of channel `id` is being validated.
    fn opening_validated(&self, id: ChannelId) -> bool {
        self.pending.values().any(|p| {
            matches!(p,
                Pending::NewRequest { channel, .. } | Pending::RestartRequest { channel, .. }
                    if *channel == id)
        })
    }

    fn opened_by(&self, id: ChannelId, open: &OpenRequest) -> bool {
        self.channels.get(&id).is_some_and(|ch| {
            ch.is_pull() == open.pull
                && ch.base_cid == open.root
                && ch.selector.same_node(&open.selector)
                && ch.voucher() == Some(&open.voucher)
        })
    }

    pub(super) fn accept_new(
        &mut self,
        now: Timestamp,
        via: Via,
        id: ChannelId,
        open: OpenRequest,
        answer: ValidationAnswer,
    ) {
        let (verdict, result) = Verdict::from_answer(&answer);
        // A restart of a channel we did not know is answered as a restart.
        let restart = open.restart;
        let response = |accepted: bool, paused: bool| {
            if restart {
                TransferResponse::restart(id.id, accepted, paused, result.clone())
            } else {
                TransferResponse::new_channel(id.id, accepted, paused, result.clone())
            }
        };
        // A restart of a channel we did not know, sent again while we validated it (a
        // monitor's restart after a transport's): the first copy made the channel, and
        // this one restarts it.
        if restart && self.channels.contains_key(&id) {
            return self.accept_restart(now, via, id, open, answer);
        }
        // Re-check: another request for the same id may have been accepted meanwhile.
        let limit_hit = self.channels.len() >= self.config.max_channels;
        if let Verdict::Err(_) = verdict {
            return self.finish_request(now, id, None, via, Some(response(false, false)), verdict);
        }
        // A copy of the request that made the channel meanwhile (sent again by the network,
        // or the New a restart of ours overtook): let be, as above.
        if matches!(via, Via::Network) && self.opened_by(id, &open) {
            return;
        }
        if self.channels.contains_key(&id) || limit_hit {
            let why = Verdict::Err(Fault::limit(format!("channel {id} cannot be created")));
            return self.finish_request(now, id, None, via, Some(response(false, false)), why);
        }
        let voucher = open.voucher.clone();
        let state = ChannelState::new(
            id,
            self.me,
            open.root,
            open.selector.clone(),
            voucher.clone(),
            open.pull,
            0,
        );
        self.channels.insert(id, state);
        self.fire_quiet(id, ChannelEvent::Open, now);
        if let Some(r) = result.clone() {
            self.record_result(id, r, now);
        }
        self.fire_quiet(id, ChannelEvent::Accept, now);
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher,
        });
        self.emit(Output::Protect {
            peer: id.initiator,
            channel: id,
        });
        let paused = verdict == Verdict::Pause;
        if paused {
            self.fire_quiet(id, ChannelEvent::PauseResponder, now);
        }
        let response = Some(response(true, paused));
        self.finish_request(now, id, Some(&open), via, response, verdict);
    }

    pub(super) fn on_restart_request(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        open: OpenRequest,
        via: Via,
    ) {
        if !self.channels.contains_key(&id)
            && let Some(f) = self.completed_earlier(&id)
        {
            // We completed but the initiator did not hear it (the message was lost): tell it
            // again, and let the transport re-send whatever it is still missing; only what
            // the channel was for.
            let same = open.root == f.base_cid
                && open.selector.cid() == f.selector
                && Some(voucher_print(&open.voucher)) == f.voucher;
            if !same {
                let why = Fault::peer(format!(
                    "restart request for channel {id} failed validation: it does not match \
                     the channel's root, selector and voucher"
                ));
                return self.reject(now, id, MessageType::Restart, via, why);
            }
            let done = TransferResponse::complete(id.id, true, false, None);
            return self.finish_request(now, id, None, via, Some(done), Verdict::Ok);
        }
        if !self.channels.contains_key(&id)
            && let Some(ended) = self
                .finished
                .get(&id)
                .map(|f| f.status)
                .filter(|s| matches!(s, Status::Cancelled | Status::Failed))
        {
            // It ended here, cancelled (by our operator, say, while the initiator was out of
            // reach) or failed: it does not come back as a new channel.
            let why = Fault::peer(format!(
                "channel {id} has ended ({ended:?}) and cannot be restarted"
            ));
            return self.reject(now, id, MessageType::Restart, via, why);
        }
        if !self.channels.contains_key(&id) && self.me != id.initiator {
            // We do not know the channel: we crashed before it was stored (or lost our
            // store). The request carries all a new one does (root, selector, voucher), so
            // it is validated as one, told it is a restart, rather than leave the
            // initiator's transfer stranded; go-data-transfer refuses it ("channel not
            // found"), and its initiator retries until it gives up.
            return self.on_new_request(now, id, open, via);
        }
        let checked = (|| {
            if self.me == id.initiator {
                return Err(Fault::peer(
                    "initiator cannot be manager peer for a restart request",
                ));
            }
            let ch = self
                .channels
                .get(&id)
                .ok_or_else(|| Fault::peer(format!("channel not found: {id}")))?;
            if open.root != ch.base_cid {
                return Err(Fault::peer("base cid does not match"));
            }
            // Go does not compare selectors; a restart could then ask for more than the
            // channel was validated for.
            if !open.selector.same_node(&ch.selector) {
                return Err(Fault::peer("selector does not match"));
            }
            self.validated
                .lookup(&open.voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            if ch.voucher() != Some(&open.voucher) {
                return Err(Fault::peer("channel and request vouchers do not match"));
            }
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            Ok(validate_call(true, ch, id.initiator))
        })();
        match checked {
            Ok(call) => {
                self.ask(
                    call,
                    Pending::RestartRequest {
                        via,
                        channel: id,
                        open: Box::new(open),
                    },
                );
            }
            Err(why) => self.reject(
                now,
                id,
                MessageType::Restart,
                via,
                why.map_message(|m| {
                    format!("restart request for channel {id} failed validation: {m}")
                }),
            ),
        }
    }

    pub(super) fn accept_restart(
        &mut self,
        now: Timestamp,
        via: Via,
        id: ChannelId,
        open: OpenRequest,
        answer: ValidationAnswer,
    ) {
        let (mut verdict, result) = Verdict::from_answer(&answer);
        // A restart does not lift our own pause: the voucher we wait for (a payment, say)
        // is still owed, and a validator that merely accepts the restart says nothing about
        // it (go-data-transfer v2 keeps such a restart paused too: `LeaveRequestPaused`).
        // Only a validator that answers Resume, or a voucher, resumes it. Before this, a
        // client whose streams closed while it owed a payment restarted the channel and got
        // the rest of the data unpaid.
        let held = self
            .channels
            .get(&id)
            .is_some_and(|c| matches!(c.status, Status::ResponderPaused | Status::BothPaused));
        if held && verdict == Verdict::Ok {
            verdict = Verdict::Pause;
        }
        let paused = verdict == Verdict::Pause;
        // What the initiator owes rides the answer again (our last voucher result, typically
        // the payment request), unless the validator gave a result of its own: the message
        // that asked may be what the broken connection lost.
        let told = match (&result, held && paused) {
            (None, true) => self
                .channels
                .get(&id)
                .and_then(|c| c.last_voucher_result().cloned()),
            _ => result.clone(),
        };
        let response = TransferResponse::restart(id.id, verdict.accepted(), paused, told);
        if verdict.accepted() && self.channels.contains_key(&id) {
            if let Some(r) = result {
                self.record_result(id, r, now);
            }
            self.fire_quiet(id, ChannelEvent::Restart, now);
            if let Some(v) = self.channels.get(&id).and_then(|c| c.voucher().cloned()) {
                self.emit(Output::ConfigureTransport {
                    channel: id,
                    voucher: v,
                });
            }
            self.emit(Output::Protect {
                peer: id.initiator,
                channel: id,
            });
            match verdict {
                Verdict::Pause if !held => self.fire_quiet(id, ChannelEvent::PauseResponder, now),
                Verdict::Resume if held => self.set_paused(id, true, false, now),
                _ => {}
            }
        }
        self.finish_request(now, id, Some(&open), via, Some(response), verdict);
    }

    pub(super) fn on_voucher_update(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        voucher: Voucher,
        via: Via,
    ) {
        let checked = (|| {
            if !self.channels.contains_key(&id) {
                return Err(Fault::peer(format!("channel not found: {id}")));
            }
            self.revalidators
                .lookup(&voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            Ok(())
        })();
        match checked {
            Ok(()) => {
                self.ask(
                    ValidationCall::Revalidate {
                        channel: id,
                        voucher: voucher.clone(),
                    },
                    Pending::VoucherUpdate {
                        via,
                        channel: id,
                        voucher,
                    },
                );
            }
            Err(why) => {
                if self.channels.contains_key(&id) {
                    let (resp, verdict) =
                        self.revalidation_result(now, id, None, Verdict::Err(why));
                    self.finish_request(now, id, None, via, Some(resp), verdict);
                } else {
                    self.finish_request(now, id, None, via, None, Verdict::Err(why));
                }
            }
        }
    }

    /// Go's `processRevalidationResult`: the response to send, after recording the result and
    /// pausing or resuming as the verdict says.
    pub(super) fn revalidation_result(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        result: Option<VoucherResult>,
        verdict: Verdict,
    ) -> (TransferResponse, Verdict) {
        let finalizing = self
            .channels
            .get(&id)
            .is_some_and(|c| c.status == Status::Finalizing);
        let accepted = verdict.accepted();
        let paused = verdict == Verdict::Pause;
        let response = if finalizing {
            TransferResponse::complete(id.id, accepted, paused, result.clone())
        } else {
            TransferResponse::voucher_result(id.id, accepted, paused, result.clone())
        };
        if let Some(r) = result {
            self.record_result(id, r, now);
        }
        match verdict {
            Verdict::Pause => self.set_paused(id, true, true, now),
            Verdict::Resume => self.set_paused(id, true, false, now),
            _ => {}
        }
        (response, verdict)
    }

    /// Go's `receiver.receiveRequest` (network) or the transport hook's reply. `open` is the
    /// request answered, if it opened the channel: an accepted push is answered by asking for
    /// its data.
    pub(super) fn finish_request(
        &mut self,
        _now: Timestamp,
        id: ChannelId,
        open: Option<&OpenRequest>,
        via: Via,
        response: Option<TransferResponse>,
        mut verdict: Verdict,
    ) {
        if let Via::Transport(token) = via {
            let message = response.map(Message::Response);
            return self.hook(token, id, message, verdict.hook_result());
        }
        // An accepted push (new or restarted) is answered by opening the transport request
        // that asks for its data: a resume has no request to resume then (a restart's old one
        // died with its connection), and resuming instead left the pusher waiting for ever.
        // Departure from Go: go-data-transfer v2's `receiveRequest` resumes there too (its
        // `ErrResume` path returns before `OpenChannel`), and hangs the same way.
        let opens_push = response.as_ref().is_some_and(|r| {
            matches!(r.message_type, MessageType::New | MessageType::Restart) && r.accepted
        }) && open.is_some_and(|o| !o.pull);
        if verdict == Verdict::Resume {
            let status = self.channels.get(&id).map(|c| c.status);
            if !opens_push
                && matches!(
                    status,
                    Some(Status::Requested | Status::Ongoing | Status::InitiatorPaused)
                )
            {
                return self.transport(TransportCommand::ResumeChannel {
                    channel: id,
                    message: response.map(Message::Response),
                });
            }
            verdict = Verdict::Ok;
        }
        if let Some(response) = response {
            match open.filter(|_| opens_push) {
                Some(push) => {
                    let (root, selector) = (push.root, push.selector.clone());
                    let restart = (response.message_type == MessageType::Restart)
                        .then(|| self.channels.get(&id).cloned().map(Box::new))
                        .flatten();
                    self.transport(TransportCommand::OpenChannel {
                        data_sender: id.initiator,
                        channel: id,
                        root,
                        selector,
                        message: response.into(),
                        restart,
                    });
                }
                _ => self.send(id.initiator, id, response, OnSendFailure::Ignore),
            }
        }
        match verdict {
            Verdict::Pause => self.transport(TransportCommand::PauseChannel { channel: id }),
            Verdict::Err(_) => self.transport(TransportCommand::CloseChannel { channel: id }),
            _ => {}
        }
    }
}

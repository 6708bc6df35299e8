//! API calls: open, pause, resume, restart, close a channel, send a voucher.

use super::*;

impl Engine {
    // ----- API calls -----------------------------------------------------------------------

    pub(super) fn open(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
        pull: bool,
    ) -> Result<ChannelId, UsageError> {
        if self.channels.len() >= self.config.max_channels {
            return Err(UsageError::TooManyChannels(self.config.max_channels));
        }
        let mut id = ChannelId::new(self.me, to, TransferId(self.next_transfer_id));
        while self.channels.contains_key(&id) {
            id.id.0 = (id.id.0 + 1) & (u64::MAX >> 1);
        }
        self.next_transfer_id = (id.id.0 + 1) & (u64::MAX >> 1);
        let state = ChannelState::new(
            id,
            self.me,
            base_cid,
            selector.clone(),
            voucher.clone(),
            pull,
            0,
        );
        self.channels.insert(id, state);
        self.fire(id, ChannelEvent::Open, now)?;
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher: voucher.clone(),
        });
        self.emit(Output::Protect {
            peer: to,
            channel: id,
        });
        let request =
            TransferRequest::new_channel(id.id, pull, voucher, base_cid, selector.clone());
        if pull {
            self.transport(TransportCommand::OpenChannel {
                data_sender: to,
                channel: id,
                root: base_cid,
                selector,
                message: request.into(),
                restart: None,
            });
        } else {
            self.send(to, id, request, OnSendFailure::Fail);
        }
        Ok(id)
    }

    /// Opens a channel that pushes the DAG under `base_cid` chosen by `selector` to `to`.
    pub fn open_push(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, UsageError> {
        self.open(now, to, voucher, base_cid, selector, false)
    }

    /// Opens a channel that pulls the DAG under `base_cid` chosen by `selector` from `to`.
    pub fn open_pull(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, UsageError> {
        self.open(now, to, voucher, base_cid, selector, true)
    }

    /// Sends a new voucher on a channel we initiated (to answer a revalidation request).
    pub fn send_voucher(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        voucher: Voucher,
    ) -> Result<(), UsageError> {
        let other = self.existing(&id)?.other_peer();
        if id.initiator != self.me {
            return Err(UsageError::NotInitiator(Box::new(id)));
        }
        if self.voucher_count(&id) >= self.config.max_vouchers_per_channel {
            return Err(UsageError::TooManyVouchers(
                self.config.max_vouchers_per_channel,
            ));
        }
        self.send(
            other,
            id,
            TransferRequest::voucher(id.id, voucher.clone()),
            OnSendFailure::Disconnect,
        );
        self.fire(id, ChannelEvent::NewVoucher(voucher), now)?;
        // A voucher for a finalizing responder is sent again if its Complete does not come.
        if let Some(w) = self.watches.get_mut(&id)
            && awaits_settlement(w.status)
        {
            w.final_voucher = Some((now, 0));
            self.reindex(id);
        }
        Ok(())
    }

    /// Closes (cancels) a channel: stops the transport, tells the other side, and cancels.
    pub fn close(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let other = self.existing(&id)?.other_peer();
        self.transport(TransportCommand::CloseChannel { channel: id });
        let msg = self.cancel_message(id);
        self.send(other, id, msg, OnSendFailure::Disconnect);
        match self.fire(id, ChannelEvent::Cancel, now) {
            Ok(()) | Err(FsmError::Terminated { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pauses our side of a channel.
    pub fn pause(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let ch = self.existing(&id)?;
        let other = ch.other_peer();
        // Re-opened on an earlier resume, a pull stays in the set until accepted.
        if ch.status == Status::Requested && ch.is_pull() && id.initiator == self.me {
            self.paused_unaccepted.insert(id);
        }
        self.transport(TransportCommand::PauseChannel { channel: id });
        let msg = self.update_message(id, true);
        self.send(other, id, msg, OnSendFailure::Disconnect);
        self.set_paused(id, true, true, now);
        Ok(())
    }

    /// Resumes our side of a channel.
    pub fn resume(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        self.existing(&id)?;
        if self.paused_unaccepted.contains(&id)
            && let Some(ch) = self.channels.get(&id)
            && ch.status == Status::InitiatorPaused
        {
            // Paused before the responder accepted: the pause may have cancelled the opening
            // graphsync request before it left, so the responder may never have seen the
            // channel. Re-open it as a restart, which a responder that did see it takes as
            // one, and one that did not validates as new. Paused again before the responder
            // accepts, it is re-opened again.
            let ch = ch.clone();
            self.set_paused(id, true, false, now);
            self.reopen_as_initiator(ch);
            return Ok(());
        }
        let msg = self.update_message(id, false);
        self.transport(TransportCommand::ResumeChannel {
            channel: id,
            message: Some(msg),
        });
        self.set_paused(id, true, false, now);
        Ok(())
    }

    /// Restarts a channel after a disconnect or a restart of this node, as Go's
    /// `RestartDataTransferChannel`: the initiator re-opens it; the responder re-validates the
    /// voucher and asks the initiator to re-open it.
    pub fn restart(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let ch = self.existing(&id)?;
        if self.config.monitor.is_some() && id.initiator == self.me && !ch.status.is_cleaning_up() {
            // Channels loaded from a store start being watched when they are restarted; the
            // responder's answer is awaited from now on.
            let status = ch.status;
            let w = self
                .watches
                .entry(id)
                .or_insert_with(|| Watch::new(status, now));
            w.restart_sent = Some(now);
            w.queued_since = None;
            self.reindex(id);
        }
        let ch = self.existing(&id)?;
        if ch.status.is_cleaning_up() {
            return Ok(self.fire(id, ChannelEvent::CompleteCleanupOnRestart, now)?);
        }
        match self.role(ch) {
            Role::CreatePull | Role::CreatePush => {
                let ch = ch.clone();
                self.reopen_as_initiator(ch);
            }
            Role::ReceivePull | Role::ReceivePush => {
                let call = validate_call(true, &ch.clone(), ch.other_peer());
                self.ask(call, Pending::RestartAsResponder { channel: id });
            }
        }
        Ok(())
    }

    pub(super) fn reopen_as_initiator(&mut self, ch: ChannelState) {
        let id = ch.channel_id;
        let voucher = ch
            .voucher()
            .cloned()
            .unwrap_or_else(|| TypedNode::new(TypeIdentifier::EMPTY, DagCbor::null()));
        let other = ch.other_peer();
        let request = TransferRequest::restart(
            id.id,
            ch.is_pull(),
            voucher.clone(),
            ch.base_cid,
            ch.selector.clone(),
        );
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher,
        });
        self.emit(Output::Protect {
            peer: other,
            channel: id,
        });
        if ch.is_pull() {
            self.reopening.insert(id);
            self.transport(TransportCommand::OpenChannel {
                data_sender: other,
                channel: id,
                root: ch.base_cid,
                selector: ch.selector.clone(),
                message: request.into(),
                restart: Some(Box::new(ch)),
            });
        } else {
            self.restarted_pushes.insert(id);
            self.send(other, id, request, OnSendFailure::Disconnect);
        }
    }
}

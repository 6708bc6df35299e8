//! Responses from the other side: accepts, rejections, voucher results, completions.

use super::*;

impl Engine {
    /// Go's `OnResponseReceived` plus `receiver.receiveResponse`. A response riding in a
    /// request for data (`data_request`) is answered: served only for a push of ours to that
    /// peer, for the channel's own root and selector (Go checks neither; we do, so a peer
    /// cannot take more than the channel it accepted).
    pub(super) fn on_response(
        &mut self,
        now: Timestamp,
        from: PeerId,
        resp: TransferResponse,
        data_request: Option<DataRequest>,
    ) {
        let id = ChannelId::new(self.me, from, resp.transfer_id);
        let refusal = match (self.channels.get(&id), &data_request) {
            (None, _) => Some("no such channel"),
            (Some(ch), Some(_)) if ch.is_pull() => Some("the channel is a pull, not a push"),
            (Some(ch), Some(r)) if ch.base_cid != r.root || !ch.selector.same_node(&r.selector) => {
                Some("the request is not for the channel's root and selector")
            }
            _ => None,
        };
        if let Some(why) = refusal {
            if let Some(r) = data_request {
                self.hook(r.token, id, None, HookResult::Fail(Fault::peer(why)));
            }
            return;
        }
        let verdict = self.response_verdict(now, id, &resp);
        match (data_request, verdict) {
            // The request waiting for the answer is the transfer itself: answering it pauses
            // or refuses it.
            (Some(r), verdict) => {
                let answer = match verdict {
                    Verdict::Pause => HookResult::Pause,
                    Verdict::Resume => HookResult::Resume,
                    Verdict::Err(e) => HookResult::Fail(e),
                    Verdict::Ok => HookResult::Continue,
                };
                self.hook(r.token, id, None, answer);
            }
            (None, Verdict::Pause) => {
                self.transport(TransportCommand::PauseChannel { channel: id })
            }
            (None, Verdict::Err(_)) => {
                self.transport(TransportCommand::CloseChannel { channel: id })
            }
            (None, _) => {}
        }
    }

    pub(super) fn response_verdict(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        resp: &TransferResponse,
    ) -> Verdict {
        use MessageType as T;
        let answers_push_restart = self.restarted_pushes.remove(&id);
        // The responder answers: a restart's wait, or a wait in its queue, is over.
        if let Some(w) = self.watches.get_mut(&id) {
            w.restart_sent = None;
            w.queued_since = None;
            self.reindex(id);
        }
        if resp.message_type == T::Cancel {
            self.fire_quiet(id, ChannelEvent::Cancel, now);
            return Verdict::Ok;
        }
        if matches!(
            resp.message_type,
            T::VoucherResult | T::New | T::Complete | T::Restart
        ) {
            if let Some(result) = resp
                .typed_voucher_result()
                .filter(|r| !r.type_id.is_empty())
            {
                if let Err(e) = self.results.lookup(&result) {
                    return Verdict::Err(Fault::peer(e.to_string()));
                }
                self.record_result(id, result, now);
            }
            if !resp.accepted {
                self.fire_quiet(id, ChannelEvent::error("response rejected"), now);
                return Verdict::Err(Fault::rejected(""));
            }
            if matches!(resp.message_type, T::New | T::Restart) {
                self.paused_unaccepted.remove(&id);
            }
            if resp.message_type == T::New {
                self.fire_quiet(id, ChannelEvent::Accept, now);
            }
            if resp.message_type == T::Restart {
                self.fire_quiet(id, ChannelEvent::Restart, now);
            }
        }
        if resp.message_type == T::Complete && resp.accepted {
            if !resp.paused {
                // Departure from Go: a responder that completes without pausing is not
                // paused. Its last resume (sent with the data, on the transport) can arrive
                // after this message (sent on the data-transfer network); Go then moves
                // ResponderPaused -> ResponderFinalizing and waits for a finalization that
                // never comes. Take the resume as given first.
                if matches!(
                    self.channels.get(&id).map(|c| c.status),
                    Some(Status::ResponderPaused | Status::BothPaused)
                ) {
                    self.set_paused(id, false, false, now);
                }
                self.fire_quiet(id, ChannelEvent::ResponderCompletes, now);
                // The receiver of a push we restarted answers that it completed: it holds the
                // whole DAG, and our transport, which sends only what the receiver asks for
                // after a restart, has nothing left to send (the response of before the
                // restart may have died with our process). Without this the push waited in
                // ResponderCompleted for the end of a response that no longer existed,
                // restarted again and again, and failed as stalled. Go never gets here: its
                // responder refuses to restart a channel it completed.
                if answers_push_restart
                    && self
                        .channels
                        .get(&id)
                        .is_some_and(|c| c.status == Status::ResponderCompleted)
                {
                    self.fire_quiet(id, ChannelEvent::FinishTransfer, now);
                }
                return Verdict::Ok;
            }
            // Departure from Go: go-data-transfer v2 sends the paused Complete (all data
            // sent, finalize now) and, once finalized, the final one on two streams of their
            // own, and they can be read in either order. A paused Complete after the final
            // one is the older of the two; Go goes back to ResponderFinalizing and waits for
            // a finalization that already came. It is only recorded.
            if matches!(
                self.channels.get(&id).map(|c| c.status),
                Some(Status::ResponderCompleted | Status::Completing)
            ) {
                return Verdict::Ok;
            }
            self.fire_quiet(id, ChannelEvent::ResponderBeginsFinalization, now);
        }
        if resp.paused {
            self.set_paused(id, false, true, now);
        } else {
            self.set_paused(id, false, false, now);
        }
        Verdict::Ok
    }
}

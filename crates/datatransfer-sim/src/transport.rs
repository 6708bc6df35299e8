//! The fake transport: moves byte counts the way go-graphsync moves blocks under
//! go-data-transfer (hooks on the sending and receiving side, pause, resume, cancel, restarts
//! that skip what arrived), over the simulated network.

use crate::*;

impl Sim {
    pub(crate) fn wire(&mut self, from: usize, to: usize, wire: Wire) {
        if self.is_down(from, to) {
            return;
        }
        let at = self.delay(from, to, true);
        self.schedule(at, Delivery::Transport { from, to, wire });
    }

    pub(crate) fn feed(&mut self, i: usize, ev: TransportEvent) {
        let now = Timestamp(self.now);
        self.nodes[i].engine.handle_transport_event(now, ev);
        self.drain(i);
    }

    pub(crate) fn new_hook(&mut self, i: usize, hook: Hook) -> HookToken {
        let node = &mut self.nodes[i];
        let token = HookToken(node.next_hook);
        node.next_hook += 1;
        node.hooks.insert(token, hook);
        token
    }

    pub(crate) fn deliver_message(&mut self, i: usize, from: usize, message: Message, hook: Hook) {
        let peer = self.nodes[from].peer;
        match message {
            Message::Request(request) => {
                let token = self.new_hook(i, hook);
                self.feed(
                    i,
                    TransportEvent::RequestReceived {
                        token,
                        from: peer,
                        request,
                    },
                );
            }
            Message::Response(response) => match &hook {
                // A push's responder asking for the data: the engine decides whether to serve.
                Hook::Open { root, selector, .. } => {
                    let (root, selector) = (*root, selector.clone());
                    let token = self.new_hook(i, hook);
                    self.feed(
                        i,
                        TransportEvent::ResponseReceived {
                            from: peer,
                            response,
                            data_request: Some(DataRequest {
                                token,
                                root,
                                selector,
                            }),
                        },
                    );
                }
                _ => {
                    self.feed(
                        i,
                        TransportEvent::ResponseReceived {
                            from: peer,
                            response,
                            data_request: None,
                        },
                    );
                    // Nothing waits for an answer: apply what the hook would continue with.
                    self.hook_done(i, hook, None, HookResult::Continue);
                }
            },
        }
    }

    pub(crate) fn transport_command(&mut self, i: usize, cmd: TransportCommand) {
        match cmd {
            TransportCommand::OpenChannel {
                data_sender,
                channel,
                root,
                selector,
                message,
                restart,
            } => {
                let Some(s) = self.node_of(&data_sender) else {
                    return;
                };
                let (total, _) = self.dags.get(&root).copied().unwrap_or((0, 0));
                let skip = restart.map_or(0, |st| st.received_blocks_total);
                self.nodes[i].receiving.insert(
                    channel,
                    Receiving {
                        from: s,
                        total,
                        received: skip,
                        done_seen: false,
                        awaiting: false,
                        buffered: VecDeque::new(),
                    },
                );
                if self.is_down(i, s) {
                    let now = Timestamp(self.now);
                    let ev = TransportEvent::OpenFailed {
                        channel,
                        error: "peer unreachable".into(),
                    };
                    self.nodes[i].receiving.remove(&channel);
                    self.nodes[i].engine.handle_transport_event(now, ev);
                    return;
                }
                self.wire(
                    i,
                    s,
                    Wire::Open {
                        channel,
                        root,
                        selector,
                        message,
                        skip,
                    },
                );
                self.feed(i, TransportEvent::ChannelOpened { channel });
            }
            TransportCommand::CloseChannel { channel } => {
                let other = self.other_end(i, &channel);
                self.nodes[i].sending.remove(&channel);
                self.nodes[i].receiving.remove(&channel);
                if let Some(o) = other {
                    self.wire(i, o, Wire::Cancel { channel });
                }
            }
            TransportCommand::CleanupChannel { channel } => {
                self.nodes[i].sending.remove(&channel);
                self.nodes[i].receiving.remove(&channel);
            }
            TransportCommand::PauseChannel { channel } => {
                if let Some(s) = self.nodes[i].sending.get_mut(&channel) {
                    s.paused_self = true;
                    let to = s.to;
                    self.wire(
                        i,
                        to,
                        Wire::Update {
                            channel,
                            message: None,
                            pause: true,
                        },
                    );
                } else if let Some(r) = self.nodes[i].receiving.get(&channel) {
                    let from = r.from;
                    self.wire(
                        i,
                        from,
                        Wire::Update {
                            channel,
                            message: None,
                            pause: true,
                        },
                    );
                }
            }
            TransportCommand::ResumeChannel { channel, message } => {
                if let Some(s) = self.nodes[i].sending.get_mut(&channel) {
                    s.paused_self = false;
                    let to = s.to;
                    self.wire(
                        i,
                        to,
                        Wire::Update {
                            channel,
                            message,
                            pause: false,
                        },
                    );
                    self.pump(i, channel);
                } else if let Some(r) = self.nodes[i].receiving.get(&channel) {
                    let from = r.from;
                    self.wire(
                        i,
                        from,
                        Wire::Update {
                            channel,
                            message,
                            pause: false,
                        },
                    );
                } else if let (Some(m), Some(o)) = (message, self.other_node(i, &channel)) {
                    // No transport channel (yet): the message still reaches the peer.
                    self.wire(
                        i,
                        o,
                        Wire::Update {
                            channel,
                            message: Some(m),
                            pause: false,
                        },
                    );
                }
            }
            TransportCommand::HookResult {
                token,
                message,
                result,
                ..
            } => {
                if let Some(hook) = self.nodes[i].hooks.remove(&token) {
                    self.hook_done(i, hook, message, result);
                }
            }
        }
    }

    pub(crate) fn other_end(&self, i: usize, channel: &ChannelId) -> Option<usize> {
        let n = &self.nodes[i];
        n.sending
            .get(channel)
            .map(|s| s.to)
            .or_else(|| n.receiving.get(channel).map(|r| r.from))
    }

    pub(crate) fn other_node(&self, i: usize, channel: &ChannelId) -> Option<usize> {
        self.node_of(&channel.other_party(&self.nodes[i].peer))
    }

    pub(crate) fn hook_done(
        &mut self,
        i: usize,
        hook: Hook,
        message: Option<Message>,
        result: HookResult,
    ) {
        match hook {
            Hook::Open {
                channel,
                from,
                skip,
                root,
                ..
            } => {
                let rejected = match &result {
                    HookResult::Fail(e) => Some(e.clone()),
                    _ => None,
                };
                self.wire(
                    i,
                    from,
                    Wire::Reply {
                        channel,
                        message,
                        rejected: rejected.clone(),
                    },
                );
                if rejected.is_some() {
                    return;
                }
                let (total, size) = self.dags.get(&root).copied().unwrap_or((0, 0));
                self.nodes[i].sending.insert(
                    channel,
                    Sending {
                        to: from,
                        total,
                        size,
                        next: skip + 1,
                        paused_self: result == HookResult::Pause,
                        paused_peer: false,
                        awaiting: false,
                        ticking: false,
                    },
                );
                if skip >= total {
                    // A restart after every block arrived: graphsync still completes the
                    // response (with nothing to send), so the requester completes too.
                    self.finish_sending(i, from, channel);
                } else {
                    self.pump(i, channel);
                }
            }
            Hook::Update { channel, pause } => {
                if let HookResult::Fail(_) = result {
                    return;
                }
                if let Some(s) = self.nodes[i].sending.get_mut(&channel) {
                    s.paused_peer = pause;
                    if result == HookResult::Pause {
                        s.paused_self = true;
                    }
                    if let Some(m) = message {
                        let to = s.to;
                        self.wire(
                            i,
                            to,
                            Wire::Update {
                                channel,
                                message: Some(m),
                                pause: false,
                            },
                        );
                    }
                    self.pump(i, channel);
                }
            }
            Hook::Queued {
                channel,
                index,
                size,
            } => {
                let Some(s) = self.nodes[i].sending.get_mut(&channel) else {
                    return;
                };
                s.awaiting = false;
                if let HookResult::Fail(e) = result {
                    let to = s.to;
                    self.nodes[i].sending.remove(&channel);
                    self.wire(
                        i,
                        to,
                        Wire::Reply {
                            channel,
                            message,
                            rejected: Some(e.clone()),
                        },
                    );
                    let ev = TransportEvent::ChannelCompleted {
                        channel,
                        result: Err(e),
                    };
                    return self.feed(i, ev);
                }
                if result == HookResult::Pause {
                    s.paused_self = true;
                }
                s.next = index + 1;
                let (to, finished) = (s.to, s.next > s.total);
                self.nodes[i]
                    .sent_blocks
                    .entry(channel)
                    .or_default()
                    .push(index);
                self.wire(
                    i,
                    to,
                    Wire::Block {
                        channel,
                        index,
                        size,
                        message,
                    },
                );
                self.feed(
                    i,
                    TransportEvent::DataSent {
                        channel,
                        size,
                        index,
                        unique: true,
                    },
                );
                if finished {
                    self.finish_sending(i, to, channel);
                } else {
                    self.pump(i, channel);
                }
            }
            Hook::Received { channel, index } => {
                let Some(r) = self.nodes[i].receiving.get_mut(&channel) else {
                    return;
                };
                r.awaiting = false;
                match result {
                    HookResult::Fail(e) => {
                        let from = r.from;
                        self.nodes[i].receiving.remove(&channel);
                        self.wire(i, from, Wire::Cancel { channel });
                        let ev = TransportEvent::ChannelCompleted {
                            channel,
                            result: Err(e),
                        };
                        return self.feed(i, ev);
                    }
                    HookResult::Pause => {
                        r.received = r.received.max(index);
                        let from = r.from;
                        self.wire(
                            i,
                            from,
                            Wire::Update {
                                channel,
                                message: None,
                                pause: true,
                            },
                        );
                    }
                    _ => r.received = r.received.max(index),
                }
                self.after_receive(i, channel);
            }
        }
    }

    /// The sender's last block went out: tell the receiver, and report completion (graphsync's
    /// responder completes once everything is sent).
    pub(crate) fn finish_sending(&mut self, i: usize, to: usize, channel: ChannelId) {
        self.wire(i, to, Wire::Done { channel });
        self.feed(
            i,
            TransportEvent::ChannelCompleted {
                channel,
                result: Ok(()),
            },
        );
    }

    /// Queues the next block if the sending side may.
    pub(crate) fn pump(&mut self, i: usize, channel: ChannelId) {
        let interval = self.config.block_interval;
        let Some(s) = self.nodes[i].sending.get_mut(&channel) else {
            return;
        };
        if s.paused_self || s.paused_peer || s.awaiting || s.next > s.total {
            return;
        }
        if !s.ticking {
            s.ticking = true;
            let at = self.now + interval;
            self.schedule(at, Delivery::Tick { node: i, channel });
        }
    }

    pub(crate) fn queue_block(&mut self, i: usize, channel: ChannelId) {
        let Some(s) = self.nodes[i].sending.get_mut(&channel) else {
            return;
        };
        if s.paused_self || s.paused_peer || s.awaiting || s.next > s.total {
            return;
        }
        s.awaiting = true;
        let (index, size) = (s.next, s.size);
        let token = self.new_hook(
            i,
            Hook::Queued {
                channel,
                index,
                size,
            },
        );
        self.feed(
            i,
            TransportEvent::DataQueued {
                token,
                channel,
                size,
                index,
                unique: true,
            },
        );
    }

    pub(crate) fn after_receive(&mut self, i: usize, channel: ChannelId) {
        let Some(r) = self.nodes[i].receiving.get_mut(&channel) else {
            return;
        };
        if r.awaiting {
            return;
        }
        if let Some((index, size, message)) = r.buffered.pop_front() {
            return self.receive_block(i, channel, index, size, message);
        }
        if r.done_seen && r.received >= r.total {
            self.nodes[i].receiving.remove(&channel);
            self.feed(
                i,
                TransportEvent::ChannelCompleted {
                    channel,
                    result: Ok(()),
                },
            );
        }
    }

    pub(crate) fn receive_block(
        &mut self,
        i: usize,
        channel: ChannelId,
        index: u64,
        size: u64,
        message: Option<Message>,
    ) {
        let Some(r) = self.nodes[i].receiving.get_mut(&channel) else {
            return;
        };
        if r.awaiting {
            r.buffered.push_back((index, size, message));
            return;
        }
        r.awaiting = true;
        let from = r.from;
        if let Some(m) = message {
            let peer = self.nodes[from].peer;
            if let Message::Response(response) = m {
                self.feed(
                    i,
                    TransportEvent::ResponseReceived {
                        from: peer,
                        response,
                        data_request: None,
                    },
                );
            }
        }
        let token = self.new_hook(i, Hook::Received { channel, index });
        self.feed(
            i,
            TransportEvent::DataReceived {
                token,
                channel,
                size,
                index,
                unique: true,
            },
        );
    }

    pub(crate) fn on_wire(&mut self, from: usize, to: usize, wire: Wire) {
        match wire {
            Wire::Open {
                channel,
                message,
                skip,
                root,
                selector,
            } => self.deliver_message(
                to,
                from,
                message,
                Hook::Open {
                    channel,
                    from,
                    skip,
                    root,
                    selector,
                },
            ),
            Wire::Reply {
                channel,
                message,
                rejected,
            } => {
                if let Some(Message::Response(response)) = message {
                    let peer = self.nodes[from].peer;
                    self.feed(
                        to,
                        TransportEvent::ResponseReceived {
                            from: peer,
                            response,
                            data_request: None,
                        },
                    );
                }
                if let Some(e) = rejected
                    && self.nodes[to].receiving.remove(&channel).is_some()
                {
                    self.feed(
                        to,
                        TransportEvent::ChannelCompleted {
                            channel,
                            // The request was refused over there: the peer's doing.
                            result: Err(Fault::PeerFailed(e.to_string())),
                        },
                    );
                }
            }
            Wire::Block {
                channel,
                index,
                size,
                message,
            } => self.receive_block(to, channel, index, size, message),
            Wire::Done { channel } => {
                if let Some(r) = self.nodes[to].receiving.get_mut(&channel) {
                    r.done_seen = true;
                }
                self.after_receive(to, channel);
            }
            Wire::Update {
                channel,
                message,
                pause,
            } => match message {
                Some(m) => self.deliver_message(to, from, m, Hook::Update { channel, pause }),
                None => {
                    if let Some(s) = self.nodes[to].sending.get_mut(&channel) {
                        s.paused_peer = pause;
                        self.pump(to, channel);
                    }
                }
            },
            Wire::Cancel { channel } => {
                self.nodes[to].sending.remove(&channel);
                self.nodes[to].receiving.remove(&channel);
            }
        }
    }
}

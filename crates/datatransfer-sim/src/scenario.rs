//! Scenario helpers: open and close channels, read their states and events, and check the
//! invariants every run must keep.

use crate::*;

impl Sim {
    /// Node `i` opens a pull of `root` from node `from`.
    pub fn open_pull(&mut self, i: usize, from: usize, root: Cid, v: Voucher) -> ChannelId {
        let peer = self.nodes[from].peer;
        let id = self.nodes[i]
            .engine
            .open_pull(Timestamp(self.now), peer, v, root, all_selector())
            .expect("open pull");
        self.drain(i);
        id
    }

    /// Node `i` opens a push of `root` to node `to`.
    pub fn open_push(&mut self, i: usize, to: usize, root: Cid, v: Voucher) -> ChannelId {
        let peer = self.nodes[to].peer;
        let id = self.nodes[i]
            .engine
            .open_push(Timestamp(self.now), peer, v, root, all_selector())
            .expect("open push");
        self.drain(i);
        id
    }

    /// Node `i` closes (cancels) a channel.
    pub fn close(&mut self, i: usize, id: ChannelId) {
        self.closed.insert(id);
        let now = Timestamp(self.now);
        let _ = self.nodes[i].engine.close(now, id);
        self.drain(i);
    }

    /// Node `i`'s stored status for a channel (`ChannelNotFoundError` if it never saw it).
    pub fn status(&self, i: usize, id: &ChannelId) -> Status {
        self.nodes[i]
            .store
            .get(id)
            .map_or(Status::ChannelNotFoundError, |s| s.status)
    }

    /// Node `i`'s stored state for a channel.
    pub fn state(&self, i: usize, id: &ChannelId) -> Option<&ChannelState> {
        self.nodes[i].store.get(id)
    }

    /// The event codes node `i` emitted for a channel, in order.
    pub fn codes(&self, i: usize, id: &ChannelId) -> Vec<EventCode> {
        self.nodes[i]
            .events
            .iter()
            .filter(|(_, s)| s.channel_id == *id)
            .map(|(e, _)| e.code)
            .collect()
    }

    /// Runs `f` on node `i`'s engine at the current time, then carries out its outputs.
    pub fn with_engine<T>(&mut self, i: usize, f: impl FnOnce(&mut Engine, Timestamp) -> T) -> T {
        let now = Timestamp(self.now);
        let out = f(&mut self.nodes[i].engine, now);
        self.drain(i);
        out
    }

    /// Checks the invariants that must hold at any time; returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (i, node) in self.nodes.iter().enumerate() {
            let mut last: HashMap<ChannelId, &ChannelState> = HashMap::new();
            for (ev, st) in &node.events {
                if let Some(prev) = last.get(&st.channel_id) {
                    if prev.status.is_terminal() {
                        return Err(format!(
                            "node {i}: event {} after terminal {}",
                            ev.code, prev.status
                        ));
                    }
                    if st.sent < prev.sent || st.received < prev.received || st.queued < prev.queued
                    {
                        return Err(format!(
                            "node {i}: byte counter went down on {}",
                            st.channel_id
                        ));
                    }
                }
                last.insert(st.channel_id, st);
            }
        }
        Ok(())
    }

    /// Checks what must hold once the network is quiet and every peer is up: every channel
    /// is terminal on both sides, both sides agree on completion, and no connection stays
    /// protected.
    pub fn check_settled(&self) -> Result<(), String> {
        self.check_invariants()?;
        for (i, node) in self.nodes.iter().enumerate() {
            for (id, st) in &node.store {
                if !st.status.is_terminal() {
                    return Err(format!("node {i}: channel {id} stuck in {}", st.status));
                }
                let Some(o) = self.node_of(&id.other_party(&node.peer)) else {
                    continue;
                };
                if self.closed.contains(id) {
                    continue;
                }
                if let Some(other) = self.nodes[o].store.get(id) {
                    let done = |s: Status| s == Status::Completed;
                    if done(st.status) != done(other.status) {
                        return Err(format!(
                            "channel {id}: node {i} says {} but node {o} says {}",
                            st.status, other.status
                        ));
                    }
                }
            }
            if !node.protected.is_empty() {
                return Err(format!(
                    "node {i}: {} connections still protected",
                    node.protected.len()
                ));
            }
        }
        Ok(())
    }

    /// Whether anything is in flight.
    pub fn in_flight(&self) -> usize {
        self.deliveries.len()
    }

    /// A random number from the simulation's generator (for scenario choices).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node `i`'s voucher results' payloads on a channel, for assertions.
    pub fn results(&self, i: usize, id: &ChannelId) -> Vec<u64> {
        self.state(i, id)
            .map(|s| {
                s.voucher_results
                    .iter()
                    .filter_map(PaymentNode::read)
                    .collect()
            })
            .unwrap_or_default()
    }
}

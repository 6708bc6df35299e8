//! graphsync's hooks, handed to the adapter; the hooks that wait get its answers.

use crate::*;

/// How long a request resuming a channel waits for the validation of the channel's opening
/// request before it is refused.
const VALIDATION_WAIT: Duration = Duration::from_secs(60);

/// graphsync's hooks, fed to the [`Adapter`].
pub(super) struct DtHooks(pub(super) Arc<Shared>);

#[async_trait]
impl Hooks for DtHooks {
    fn store_for_request(&self, peer: PeerId, request: &Request) -> Option<Arc<dyn Blockstore>> {
        self.0.adapter().store_for_request(peer, request)
    }

    fn outgoing_request(&self, peer: PeerId, request: &Request) -> Extensions {
        self.0.with(|a| a.outgoing_request(peer, request));
        Extensions::new()
    }

    fn request_queued(&self, peer: PeerId, request: &Request) {
        self.0.with(|a| a.request_queued(peer, request));
    }

    async fn incoming_request(&self, peer: PeerId, request: &Request) -> RequestDecision {
        match self
            .0
            .ask(Some(VALIDATION_WAIT), |a, hook| {
                a.incoming_request(hook, peer, request)
            })
            .await
        {
            Some(HookAnswer::Request(decision)) => decision,
            _ => RequestDecision::Reject(ResponseStatus::RequestRejected, Extensions::new()),
        }
    }

    async fn outgoing_block(
        &self,
        peer: PeerId,
        id: RequestId,
        block: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        match self
            .0
            .ask(None, |a, hook| a.outgoing_block(hook, peer, id, block))
            .await
        {
            Some(HookAnswer::Block(decision, extensions)) => (decision, extensions),
            _ => (BlockDecision::Pause, Extensions::new()),
        }
    }

    fn block_sent(&self, peer: PeerId, id: RequestId, cid: Cid, size: u64) {
        self.0.with(|a| a.block_sent(peer, id, cid, size));
    }

    fn incoming_block(&self, _peer: PeerId, id: RequestId, block: &IncomingBlock) -> BlockDecision {
        // The engine answers asynchronously; a pause or cancel is applied when it does.
        self.0.with(|a| a.incoming_block(id, block));
        BlockDecision::Continue
    }

    fn incoming_response(&self, peer: PeerId, response: &Response) {
        self.0.with(|a| a.incoming_response(peer, response));
    }

    fn request_updated(&self, peer: PeerId, request: &Request) {
        self.0.with(|a| a.request_updated(peer, request));
    }

    fn completed_response(&self, peer: PeerId, id: RequestId, status: ResponseStatus) {
        self.0.with(|a| a.completed_response(peer, id, status));
    }

    fn requestor_cancelled(&self, peer: PeerId, id: RequestId) {
        self.0.with(|a| a.requestor_cancelled(peer, id));
    }

    fn network_error(&self, peer: PeerId, error: &str) {
        self.0.with(|a| a.network_error(peer, error));
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

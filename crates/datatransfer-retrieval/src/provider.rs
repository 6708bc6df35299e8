//! The provider side: a validator that serves free retrievals the way Boost's unpaid
//! graphsync path does, and tells the client when the deal is done.
//!
//! A pull whose voucher is a [`DealProposal`] is accepted when the proposal names the
//! requested root, its selector is the request's (the whole DAG when it names none), it
//! offers no money, and the root is in the provider's block store. The answer is a
//! [`DealResponse`] voucher result: `DealStatusAccepted`, or `DealStatusRejected` with the
//! reason, which lassie shows its user. When the data has gone, the provider's completion
//! message carries `DealStatusCompleted`, which lassie waits for.
//!
//! Unlike Boost, the proposal's `PieceCID` is not checked: this provider has no pieces, only
//! a block store, so a proposal naming a piece is served if the payload is here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use datatransfer::{
    ChannelId, Cid, DagCbor, Manager, ManagerError, PeerId, Registerable, RequestValidator,
    Revalidator, Transport, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher,
};
use datatransfer_ipld::blockstore::Blockstore;

use crate::types::{
    DealId, DealProposal, DealResponse, DealStatus, LegacyDealProposal, LegacyDealResponse,
    PROPOSAL_TYPES, proposal_of,
};

/// Validates retrieval proposals as a free-retrieval provider (Boost's unpaid path), and
/// completes each deal it accepted with `DealStatusCompleted`.
///
/// ```no_run
/// # async fn demo(manager: datatransfer::Manager,
/// #   blocks: std::sync::Arc<dyn datatransfer_ipld::blockstore::Blockstore>)
/// #   -> Result<(), datatransfer::ManagerError> {
/// use datatransfer_retrieval::FreeRetrievalProvider;
/// let provider = FreeRetrievalProvider::new(blocks);
/// provider.register(&manager).await?;
/// # Ok(()) }
/// ```
pub struct FreeRetrievalProvider {
    blocks: Arc<dyn Blockstore>,
    /// Deals accepted and not yet completed, by channel.
    deals: Mutex<HashMap<ChannelId, Deal>>,
    refusing: AtomicBool,
}

impl std::fmt::Debug for FreeRetrievalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreeRetrievalProvider")
            .field("refusing", &self.refusing.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl FreeRetrievalProvider {
    /// A provider serving what `blocks` holds.
    pub fn new(blocks: Arc<dyn Blockstore>) -> Arc<Self> {
        Arc::new(Self {
            blocks,
            deals: Mutex::new(HashMap::new()),
            refusing: AtomicBool::new(false),
        })
    }

    /// Registers this provider on `manager` as the validator and revalidator of both
    /// proposal type names ([`PROPOSAL_TYPES`]).
    /// It also follows the manager's events to forget deals whose channels ended without
    /// completing (failed, cancelled), so its memory of open deals stays bounded.
    pub async fn register<T: Transport>(
        self: &Arc<Self>,
        manager: &Manager<T>,
    ) -> Result<(), ManagerError> {
        for ty in PROPOSAL_TYPES {
            manager.register_voucher_type(ty, self.clone()).await?;
            manager.register_revalidator(ty, self.clone()).await?;
        }
        let mut events = manager.subscribe().await?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((_, state)) = events.next().await {
                let Some(me) = me.upgrade() else {
                    return;
                };
                if state.status.is_terminal() {
                    me.forget(&state.channel_id);
                }
            }
        });
        Ok(())
    }

    /// From now on, refuse new proposals ("the provider is shutting down"); deals already
    /// accepted carry on, and restarts of them are still accepted.
    pub fn refuse_new(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// Forgets `channel` if it ended without completing (failed or cancelled), so that the
    /// provider keeps no record of it. Deals that complete are forgotten on their own.
    pub fn forget(&self, channel: &ChannelId) {
        self.deals().remove(channel);
    }

    /// How many accepted deals have not completed (nor been forgotten).
    pub fn open_deals(&self) -> usize {
        self.deals().len()
    }

    fn deals(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Deal>> {
        self.deals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The decision about one proposal: why it is refused, if it is.
    fn check(
        &self,
        proposal: &DealProposal,
        restart_of_ours: bool,
        root: Cid,
        selector: &DagCbor,
    ) -> Result<(), String> {
        if self.refusing.load(Ordering::SeqCst) && !restart_of_ours {
            return Err("the provider is shutting down".into());
        }
        if proposal.payload_cid != root {
            return Err(format!(
                "the proposal is for {} but the request is for {root}",
                proposal.payload_cid
            ));
        }
        let proposed = match proposal.params.selector_cbor() {
            Ok(Some(s)) => s,
            Ok(None) => datatransfer::all_selector(),
            Err(e) => return Err(format!("the proposal's selector does not encode: {e}")),
        };
        if !proposed.same_node(selector) {
            return Err("the request's selector is not the one in the proposal".into());
        }
        if !proposal.params.is_free() {
            return Err(format!(
                "this provider serves free retrievals only (proposed price per byte {}, unseal price {})",
                proposal.params.price_per_byte, proposal.params.unseal_price
            ));
        }
        match self.blocks.has(&root) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("no content found for {root}")),
            Err(e) => Err(format!("cannot read the block store: {e}")),
        }
    }
}

/// Accepted deals remembered at most (until they complete or their channels end).
const MAX_OPEN_DEALS: usize = 65_536;

/// An accepted deal: its id, and whether it was proposed under the legacy type name.
#[derive(Debug, Clone, Copy)]
struct Deal {
    id: DealId,
    legacy: bool,
}

/// The answer, as a voucher result of the type the proposal's name calls for: a proposal
/// under the legacy name gets a response under the legacy name, as Boost's legacy path did.
fn answer(
    legacy: bool,
    response: DealResponse,
    outcome: ValidationOutcome,
) -> Result<Validation, ValidationError> {
    let result = if legacy {
        TypedNode::encode(&LegacyDealResponse(response))
    } else {
        TypedNode::encode(&response)
    }
    .map_err(|e| ValidationError::Failed(format!("cannot encode the deal response: {e}")))?;
    Ok(Validation::new(outcome).with_result(result))
}

#[async_trait]
impl RequestValidator for FreeRetrievalProvider {
    async fn validate_push(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(Validation::new(ValidationOutcome::rejected(
            "a retrieval provider accepts pulls, not pushes",
        )))
    }

    async fn validate_pull(
        &self,
        is_restart: bool,
        channel: ChannelId,
        receiver: PeerId,
        voucher: &Voucher,
        base_cid: Cid,
        selector: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        let legacy = voucher.type_id.as_str() == LegacyDealProposal::TYPE;
        let proposal = match proposal_of(voucher) {
            Ok(p) => p,
            Err(e) => {
                let why = format!("the retrieval proposal does not decode: {e}");
                return answer(
                    legacy,
                    DealResponse::rejected(0, &why),
                    ValidationOutcome::rejected(why),
                );
            }
        };
        let ours = is_restart && self.deals().contains_key(&channel);
        match self.check(&proposal, ours, base_cid, selector) {
            Ok(()) => {
                let mut deals = self.deals();
                // A peer whose channels never get going (it disconnects right after we
                // accept) cannot grow this without bound: past the cap, some go.
                if deals.len() >= MAX_OPEN_DEALS {
                    let some: Vec<ChannelId> =
                        deals.keys().take(MAX_OPEN_DEALS / 16).copied().collect();
                    for c in some {
                        deals.remove(&c);
                    }
                }
                deals.insert(
                    channel,
                    Deal {
                        id: proposal.id,
                        legacy,
                    },
                );
                drop(deals);
                tracing::info!(%channel, %receiver, root = %base_cid, deal = proposal.id, "retrieval accepted");
                answer(
                    legacy,
                    DealResponse::new(proposal.id, DealStatus::ACCEPTED),
                    ValidationOutcome::Accept,
                )
            }
            Err(why) => {
                tracing::info!(%channel, %receiver, root = %base_cid, deal = proposal.id, reason = %why, "retrieval rejected");
                answer(
                    legacy,
                    DealResponse::rejected(proposal.id, &why),
                    ValidationOutcome::rejected(why),
                )
            }
        }
    }
}

#[async_trait]
impl Revalidator for FreeRetrievalProvider {
    /// A free retrieval takes no payments: a voucher on a running deal is refused.
    async fn revalidate(
        &self,
        channel: ChannelId,
        _voucher: &Voucher,
    ) -> Result<Validation, ValidationError> {
        let deal = self.deals().get(&channel).copied();
        let why = "this provider takes no payments: its retrievals are free";
        answer(
            deal.is_some_and(|d| d.legacy),
            DealResponse::rejected(deal.map_or(0, |d| d.id), why),
            ValidationOutcome::rejected(why),
        )
    }

    async fn on_complete(&self, channel: ChannelId) -> Result<Option<Validation>, ValidationError> {
        let Some(deal) = self.deals().remove(&channel) else {
            return Ok(None);
        };
        answer(
            deal.legacy,
            DealResponse::new(deal.id, DealStatus::COMPLETED),
            ValidationOutcome::Accept,
        )
        .map(Some)
    }
}

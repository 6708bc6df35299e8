//! The traits users implement to decide about vouchers: [`RequestValidator`] (may this peer
//! push or pull this DAG?), [`Revalidator`] (pay-as-you-go: pause a running transfer until a
//! new voucher arrives, settle at the end) and [`TransportConfigurer`] (per-channel transport
//! settings, such as a block store of its own).

use async_trait::async_trait;
use datatransfer_types::{ChannelId, Cid, DagCbor, PeerId, Validation, ValidationError, Voucher};

/// Decides whether a peer's request to push to us or pull from us is accepted (Go's
/// `RequestValidator`). Registered per voucher type with
/// [`crate::Manager::register_voucher_type`].
#[async_trait]
pub trait RequestValidator: Send + Sync + 'static {
    /// `sender` wants to push the DAG under `base_cid` chosen by `selector` to us.
    /// `is_restart` is set when a channel is being restarted. A restart of a channel we
    /// paused (waiting for a voucher) stays paused when this accepts it; answer
    /// [`datatransfer_types::ValidationOutcome::Resume`] to lift the pause with the restart.
    async fn validate_push(
        &self,
        is_restart: bool,
        channel: ChannelId,
        sender: PeerId,
        voucher: &Voucher,
        base_cid: Cid,
        selector: &DagCbor,
    ) -> Result<Validation, ValidationError>;

    /// `receiver` wants to pull the DAG under `base_cid` chosen by `selector` from us.
    /// `is_restart` and a paused channel's restart as for [`Self::validate_push`].
    async fn validate_pull(
        &self,
        is_restart: bool,
        channel: ChannelId,
        receiver: PeerId,
        voucher: &Voucher,
        base_cid: Cid,
        selector: &DagCbor,
    ) -> Result<Validation, ValidationError>;
}

/// A validator that accepts every push and pull: for demos, benchmarks and trusted networks.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptAll;

#[async_trait]
impl RequestValidator for AcceptAll {
    async fn validate_push(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(Validation::accept())
    }

    async fn validate_pull(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(Validation::accept())
    }
}

/// Checks a running transfer again as data moves (Go's `Revalidator`): the pay-as-you-go
/// seam of retrieval. Registered per voucher type with
/// [`crate::Manager::register_revalidator`].
///
/// The progress methods return `Ok(None)` when this revalidator does not handle the channel;
/// `Some` with [`datatransfer_types::ValidationOutcome::Pause`] pauses the transfer until a
/// new voucher arrives (the result travels to the other peer, typically a payment request).
#[async_trait]
pub trait Revalidator: Send + Sync + 'static {
    /// A new voucher arrived on a running channel. `Resume` restarts a paused transfer.
    ///
    /// A restart leaves a channel we paused paused, so the payment it waits for is still
    /// owed; after our process restarts, the channel comes back paused from the store, and
    /// this must answer the voucher that pays with `Resume` from records that survived the
    /// restart (a revalidator that kept its state in memory only would answer `Accept`, and
    /// the channel would wait until its responder idle timeout). Those records and the
    /// channel's pause are stored apart, so a crash can fall between them: a revalidator that
    /// sees a whole interval more served while its records say it waits should ask again
    /// (`tests/bin/soak_node.rs` shows one).
    async fn revalidate(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
    ) -> Result<Validation, ValidationError>;

    /// We queued `bytes` more for a peer pulling from us.
    async fn on_pull_data_sent(
        &self,
        _channel: ChannelId,
        _bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        Ok(None)
    }

    /// We received `bytes` more from a peer pushing to us.
    async fn on_push_data_received(
        &self,
        _channel: ChannelId,
        _bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        Ok(None)
    }

    /// All data moved; `Pause` here asks for a final voucher before the channel completes
    /// (finalization).
    async fn on_complete(
        &self,
        _channel: ChannelId,
    ) -> Result<Option<Validation>, ValidationError> {
        Ok(None)
    }
}

/// Configures the transport for a channel whose voucher has a given type, before the
/// transport opens it (Go's `TransportConfigurer`). `T` is the manager's transport, so a
/// configurer of the graphsync transport can call
/// [`datatransfer_transport_graphsync::GraphsyncTransport::use_store`] directly.
pub trait TransportConfigurer<T: ?Sized = datatransfer_transport_graphsync::GraphsyncTransport>:
    Send + Sync + 'static
{
    /// Called for each channel opened or restarted with a voucher of the registered type.
    fn configure(&self, channel: ChannelId, voucher: &Voucher, transport: &T);
}

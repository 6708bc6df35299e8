//! A paid retrieval between two nodes in one process: the provider serves a file and charges
//! for it as it goes; the client pulls it and pays when asked.
//!
//! Run it with `cargo run --release -p datatransfer --example retrieval`.
//!
//! What it shows, in the order a newcomer meets it:
//! 1. a voucher type (`RetrievalVoucher`) and a voucher-result type (`PaymentRequest`): plain
//!    serde structs that travel as DAG-CBOR;
//! 2. a validator: the provider decides whether a pull is allowed;
//! 3. a revalidator: every `INTERVAL` bytes the provider pauses the transfer and asks for a
//!    payment; a new voucher from the client resumes it;
//! 4. a pull, watched through the event stream, with the client paying as it goes;
//! 5. the file checked byte for byte at the end.

#![allow(clippy::unwrap_used)] // An example: failing loudly is the point.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datatransfer::{
    ChannelId, Cid, DagCbor, EventCode, Manager, PeerId, Registerable, RequestValidator,
    Revalidator, Status, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher,
    all_selector,
};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};
use serde::{Deserialize, Serialize};

/// Bytes the provider sends between two payments.
const INTERVAL: u64 = 1 << 20;

/// The client's voucher: which deal this is, and how much it has paid so far.
#[derive(Debug, Serialize, Deserialize)]
struct RetrievalVoucher {
    deal: u64,
    paid: u64,
}

impl Registerable for RetrievalVoucher {
    const TYPE: &'static str = "RetrievalVoucher";
}

/// The provider's answer: how many bytes it wants paid for before it goes on.
#[derive(Debug, Serialize, Deserialize)]
struct PaymentRequest {
    owed: u64,
}

impl Registerable for PaymentRequest {
    const TYPE: &'static str = "PaymentRequest";
}

/// The provider's policy: deal 42 may be pulled by anyone; nothing else.
struct DealValidator;

#[async_trait]
impl RequestValidator for DealValidator {
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
            "this provider takes no pushes",
        )))
    }

    async fn validate_pull(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        voucher: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        let v: RetrievalVoucher = voucher
            .decode()
            .map_err(|e| ValidationError::Failed(e.to_string()))?;
        Ok(if v.deal == 42 {
            Validation::accept()
        } else {
            Validation::new(ValidationOutcome::rejected("unknown deal"))
        })
    }
}

/// Pay-as-you-go: count bytes sent; past `INTERVAL` unpaid bytes, pause and ask for payment.
#[derive(Default)]
struct PayAsYouGo {
    unpaid: AtomicU64,
    payments: AtomicU64,
}

#[async_trait]
impl Revalidator for PayAsYouGo {
    async fn revalidate(
        &self,
        _: ChannelId,
        voucher: &Voucher,
    ) -> Result<Validation, ValidationError> {
        let v: RetrievalVoucher = voucher
            .decode()
            .map_err(|e| ValidationError::Failed(e.to_string()))?;
        self.payments.fetch_add(1, Ordering::SeqCst);
        self.unpaid.store(0, Ordering::SeqCst);
        println!("provider: payment received (total paid {} bytes)", v.paid);
        Ok(Validation::new(ValidationOutcome::Resume))
    }

    async fn on_pull_data_sent(
        &self,
        _: ChannelId,
        bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        let unpaid = self.unpaid.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if unpaid < INTERVAL {
            return Ok(None);
        }
        let request = TypedNode::encode(&PaymentRequest { owed: unpaid })
            .map_err(|e| ValidationError::Failed(e.to_string()))?;
        Ok(Some(
            Validation::new(ValidationOutcome::Pause).with_result(request),
        ))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The provider: a block store with an 8 MiB file in it, a validator and a revalidator.
    let provider_blocks = Arc::new(MemoryBlockstore::new());
    // Pseudo-random bytes (xorshift), so no two chunks are alike: graphsync sends a
    // repeated block only once.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let file = import_bytes(&*provider_blocks, &data, &ImportOptions::default())?;
    println!("provider: imported {} bytes as {}", file.size, file.root);
    let provider = Manager::builder()
        .blockstore(provider_blocks)
        .build()
        .await?;
    provider
        .register_voucher_type(RetrievalVoucher::TYPE, Arc::new(DealValidator))
        .await?;
    let pay = Arc::new(PayAsYouGo::default());
    provider
        .register_revalidator(RetrievalVoucher::TYPE, pay.clone())
        .await?;
    provider.start().await?;

    // The client: its own block store; it must know the provider's voucher-result type.
    let client_blocks = Arc::new(MemoryBlockstore::new());
    let client = Manager::builder()
        .blockstore(client_blocks.clone())
        .build()
        .await?;
    client
        .register_voucher_result_type(PaymentRequest::TYPE)
        .await?;
    client.start().await?;
    let addr = provider.multiaddr().ok_or("provider has no address")?;
    let provider_id = client.connect(&addr).await?;

    // Subscribe before opening, so no event is missed.
    let mut events = client.subscribe().await?;
    let voucher = TypedNode::encode(&RetrievalVoucher { deal: 42, paid: 0 })?;
    let channel = client
        .open_pull_channel(provider_id, voucher, file.root, all_selector())
        .await?;
    println!("client: opened {channel}");

    let mut paid = 0u64;
    while let Some((event, state)) = events.next().await {
        if state.channel_id != channel {
            continue;
        }
        match event.code {
            EventCode::NewVoucherResult => {
                if let Some(request) = state
                    .last_voucher_result()
                    .and_then(|r| r.decode::<PaymentRequest>().ok())
                {
                    paid += request.owed;
                    println!(
                        "client: {} bytes received, provider asks for {} -> paying",
                        state.received, request.owed
                    );
                    let voucher = TypedNode::encode(&RetrievalVoucher { deal: 42, paid })?;
                    client.send_voucher(channel, voucher).await?;
                }
            }
            EventCode::Error => println!("client: error: {}", event.message),
            _ => {}
        }
        if state.status.is_terminal() {
            println!(
                "client: channel ended {:?} after {} bytes",
                state.status, state.received
            );
            assert_eq!(state.status, Status::Completed);
            break;
        }
    }

    let mut out = Vec::new();
    export(&*client_blocks, &file.root, &mut out)?;
    assert!(out == data, "the file differs");
    println!(
        "client: file verified ({} bytes); {} payments made",
        out.len(),
        pay.payments.load(Ordering::SeqCst)
    );
    client.stop().await?;
    provider.stop().await?;
    Ok(())
}

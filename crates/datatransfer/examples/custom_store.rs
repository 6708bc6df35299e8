//! A channel store of your own.
//!
//! Run it with `cargo run -p datatransfer --example custom_store`.
//!
//! A manager keeps every channel's state and events in a `ChannelStore`: SQLite
//! (`sqlite_store`, the default `sqlite` feature), memory, or anything that implements the
//! trait, such as the database your node already has. This example:
//! 1. implements the trait over a map (stand-in for your database), keeping at most
//!    `MAX_EVENTS` events per channel;
//! 2. checks it with the conformance suite every store must pass
//!    (`datatransfer_types::store::conformance`, feature `store-conformance`);
//! 3. gives it to a client manager, pulls a file, and reads the channel back from it.

#![allow(clippy::unwrap_used)] // An example: failing loudly is the point.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use datatransfer::{
    AcceptAll, ChannelFilter, ChannelId, ChannelState, ChannelStore, ChannelUpdate, Event, Manager,
    Registerable, Status, StoreError, TypedNode, all_selector,
};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use datatransfer_types::store::conformance;
use serde::{Deserialize, Serialize};

/// Events kept per channel; older ones are dropped first.
const MAX_EVENTS: usize = 64;

/// Channels in a map. A real one would write to the node's database in `apply_batch`, in one
/// transaction per batch: a state change and its events must land together or not at all.
#[derive(Default)]
struct MapStore {
    channels: Mutex<Map>,
}

/// Each channel's state and its events, oldest first.
type Map = HashMap<ChannelId, (ChannelState, Vec<Event>)>;

impl MapStore {
    fn lock(&self) -> Result<MutexGuard<'_, Map>, StoreError> {
        // A poisoned lock is a failure of the backend, reported as such.
        self.channels
            .lock()
            .map_err(|_| StoreError::Backend("the map's lock is poisoned".into()))
    }
}

#[async_trait]
impl ChannelStore for MapStore {
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        Ok(self.lock()?.get(id).map(|(state, _)| state.clone()))
    }

    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .filter(|(state, _)| filter.matches(state))
            .map(|(state, _)| state.clone())
            .collect())
    }

    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError> {
        // One lock for the whole batch: atomic, as the trait asks.
        let mut map = self.lock()?;
        for update in updates {
            let entry = map
                .entry(update.state.channel_id)
                .or_insert_with(|| (update.state.clone(), Vec::new()));
            entry.0 = update.state;
            entry.1.extend(update.events);
            let extra = entry.1.len().saturating_sub(MAX_EVENTS);
            entry.1.drain(..extra);
        }
        Ok(())
    }

    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .lock()?
            .get(id)
            .map(|(_, events)| events.clone())
            .unwrap_or_default())
    }

    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(id).is_some())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    deal: u64,
}

impl Registerable for Request {
    const TYPE: &'static str = "CustomStoreExampleRequest";
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1-2. The store passes the suite every store must pass (it panics on a failure).
    conformance::run_all(|| async { MapStore::default() }, MAX_EVENTS).await;
    println!("MapStore passes the channel store conformance suite");

    // 3. A provider with the default store, and a client that keeps channels in a MapStore.
    let blocks = Arc::new(MemoryBlockstore::new());
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = import_bytes(&*blocks, &data, &ImportOptions::default())?;
    let provider = Manager::builder().blockstore(blocks).build().await?;
    provider
        .register_voucher_type(Request::TYPE, Arc::new(AcceptAll))
        .await?;
    provider.start().await?;

    let store = Arc::new(MapStore::default());
    let client = Manager::builder()
        .channel_store(store.clone())
        .build()
        .await?;
    client.start().await?;
    let provider_id = client
        .connect(&provider.multiaddr().ok_or("the provider listens nowhere")?)
        .await?;
    let mut events = client.subscribe().await?;
    let channel = client
        .open_pull_channel(
            provider_id,
            TypedNode::encode(&Request { deal: 7 })?,
            file.root,
            all_selector(),
        )
        .await?;
    while let Some((_, state)) = events.next().await {
        if state.channel_id == channel && state.status.is_terminal() {
            assert_eq!(state.status, Status::Completed);
            break;
        }
    }
    // Everything written so far reaches the store before stop returns.
    client.stop().await?;
    provider.stop().await?;

    let stored = store
        .get(&channel)
        .await?
        .ok_or("the channel is not in the store")?;
    let logged = store.events(&channel).await?;
    println!(
        "the client's MapStore holds {channel}: {:?}, {} bytes received, {} events (last: {:?})",
        stored.status,
        stored.received,
        logged.len(),
        logged.last().map(|e| e.code)
    );
    assert_eq!(stored.status, Status::Completed);
    assert!(!logged.is_empty());
    Ok(())
}

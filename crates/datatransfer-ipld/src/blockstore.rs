//! Where blocks live: the [`Blockstore`] trait and an in-memory store.
//!
//! The trait is synchronous on purpose: a traversal asks for one block at a time on the hot
//! path of every transfer, and the stores that matter (memory, a local file or database)
//! answer in microseconds. A store that must wait on the network can be wrapped by running
//! the traversal on a blocking thread.

use std::collections::HashMap;
use std::sync::RwLock;

pub use bytes::Bytes;
use cid::Cid;
use thiserror::Error;

use crate::codec::{self, BlockError};

/// A block store failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockstoreError {
    /// The block does not match its CID.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The backend failed.
    #[error("block store failed: {0}")]
    Backend(String),
}

/// Content-addressed block storage.
pub trait Blockstore: Send + Sync {
    /// The block with this CID, if stored. A store that keeps blocks in memory hands out a
    /// handle on its own buffer (`Bytes` is shared, not copied).
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError>;

    /// Stores a block under its CID. Implementations verify the hash.
    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError>;

    /// Stores a block the caller has just checked against its CID (a verifying traversal
    /// did, on its way in): a store that verifies in [`Blockstore::put`] may skip hashing it
    /// again here. By default the same as `put`.
    fn put_verified(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        self.put(cid, data)
    }

    /// [`Blockstore::put_verified`] for a caller that owns the block's bytes already (a
    /// received message's, say): a store that keeps blocks, or writes them later on another
    /// thread, may hold `data` itself instead of copying it. By default the same as
    /// `put_verified`.
    fn put_verified_owned(&self, cid: &Cid, data: Bytes) -> Result<(), BlockstoreError> {
        self.put_verified(cid, &data)
    }

    /// Whether every block in this store was checked against its CID when it came in (or
    /// made here from its data), so that a responder serving from it need not hash it again
    /// (go-graphsync's `TrustedStorage`; the receiving side always verifies). False by
    /// default; a store of blocks from elsewhere (a CAR file, say) must say false.
    fn trusted(&self) -> bool {
        false
    }

    /// Whether the block is stored.
    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.get(cid)?.is_some())
    }

    /// Makes every block put so far survive a crash; returns when they are on stable storage.
    /// Called when a transfer has received its last block, before it counts as complete.
    /// Stores that keep nothing across a restart, or write through, need do nothing.
    fn flush(&self) -> Result<(), BlockstoreError> {
        Ok(())
    }

    /// Stores `data` as a block of `codec` and returns its CID (SHA2-256, CIDv1).
    fn put_new(&self, codec: u64, data: &[u8]) -> Result<Cid, BlockstoreError> {
        let cid = codec::cid_of(codec, data);
        self.put(&cid, data)?;
        Ok(cid)
    }
}

/// Blocks in memory.
#[derive(Debug, Default)]
pub struct MemoryBlockstore {
    blocks: RwLock<HashMap<Cid, Bytes>>,
}

impl MemoryBlockstore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many blocks are stored.
    pub fn len(&self) -> usize {
        self.blocks.read().map(|b| b.len()).unwrap_or(0)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every CID stored, in no particular order.
    pub fn cids(&self) -> Vec<Cid> {
        self.blocks
            .read()
            .map(|b| b.keys().copied().collect())
            .unwrap_or_default()
    }
}

fn poisoned() -> BlockstoreError {
    BlockstoreError::Backend("memory block store lock poisoned".into())
}

impl Blockstore for MemoryBlockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        Ok(self
            .blocks
            .read()
            .map_err(|_| poisoned())?
            .get(cid)
            .cloned())
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        codec::verify(cid, data)?;
        self.put_verified(cid, data)
    }

    fn put_verified(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        self.put_verified_owned(cid, Bytes::copy_from_slice(data))
    }

    /// Keeps `data` itself: no copy. A slice of a larger buffer keeps all of that buffer in
    /// memory; the graphsync requester hands over only blocks that are a large part of the
    /// message they came in, and copies the rest.
    fn put_verified_owned(&self, cid: &Cid, data: Bytes) -> Result<(), BlockstoreError> {
        self.blocks
            .write()
            .map_err(|_| poisoned())?
            .insert(*cid, data);
        Ok(())
    }

    /// Every block went through `put` (verified) or `put_verified` (verified by the caller).
    fn trusted(&self) -> bool {
        true
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self
            .blocks
            .read()
            .map_err(|_| poisoned())?
            .contains_key(cid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verified_blocks_only() {
        let bs = MemoryBlockstore::new();
        let cid = bs.put_new(codec::RAW, b"abc").unwrap();
        assert_eq!(bs.get(&cid).unwrap().as_deref(), Some(&b"abc"[..]));
        assert!(bs.has(&cid).unwrap());
        assert!(matches!(
            bs.put(&cid, b"abd"),
            Err(BlockstoreError::Block(BlockError::HashMismatch(_)))
        ));
        assert_eq!(bs.len(), 1);
    }

    #[test]
    fn owned_bytes_are_kept_and_given_back_without_a_copy() {
        let bs = MemoryBlockstore::new();
        let message = Bytes::from_static(b"header:block bytes");
        let block = message.slice(7..);
        let cid = codec::cid_of(codec::RAW, &block);
        bs.put_verified_owned(&cid, block.clone()).unwrap();
        let got = bs.get(&cid).unwrap().unwrap();
        assert_eq!(got, block);
        assert_eq!(got.as_ptr(), block.as_ptr(), "the message's own bytes");
        // Bytes given by reference are copied: the caller's buffer may be reused.
        let mut buf = b"abc".to_vec();
        let cid = bs.put_new(codec::RAW, &buf).unwrap();
        buf[0] = b'x';
        assert_eq!(bs.get(&cid).unwrap().as_deref(), Some(&b"abc"[..]));
    }
}

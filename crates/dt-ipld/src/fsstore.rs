//! A durable block store: one file per block in a directory.
//!
//! Why files rather than SQLite: blocks run up to megabytes, and a file per block lets the
//! operating system's page cache serve reads, lets any number of readers work without locks,
//! makes each write atomic by writing a temporary file and renaming it, and needs no
//! dependency; SQLite is slower for blobs this large. Files live in 256 subdirectories (by
//! the last two characters of the CID) so no directory grows too large.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;

use crate::blockstore::{Blockstore, BlockstoreError};
use crate::codec;

/// Blocks as files under a directory.
#[derive(Debug)]
pub struct FsBlockstore {
    dir: PathBuf,
    sync: bool,
    tmp: AtomicU64,
}

fn io(path: &Path, e: std::io::Error) -> BlockstoreError {
    BlockstoreError::Backend(format!("{}: {e}", path.display()))
}

impl FsBlockstore {
    /// Opens (creating if needed) a store in `dir`. With `sync`, every block is flushed to
    /// stable storage before `put` returns.
    pub fn open(dir: impl AsRef<Path>, sync: bool) -> Result<Self, BlockstoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Self {
            dir,
            sync,
            tmp: AtomicU64::new(0),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, cid: &Cid) -> PathBuf {
        let name = cid.to_string();
        let shard = &name[name.len().saturating_sub(2)..];
        self.dir.join(shard).join(name)
    }
}

impl Blockstore for FsBlockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, BlockstoreError> {
        let path = self.path(cid);
        match fs::read(&path) {
            Ok(data) => Ok(Some(Arc::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        codec::verify(cid, data)?;
        let path = self.path(cid);
        if path.exists() {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(data).map_err(|e| io(&tmp, e))?;
        if self.sync {
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.path(cid).exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RAW;

    #[test]
    fn blocks_survive_reopening_and_bad_blocks_are_refused() {
        let dir = std::env::temp_dir().join(format!("dt-ipld-fs-{}", std::process::id()));
        let cid = {
            let s = FsBlockstore::open(&dir, true).unwrap();
            let cid = s.put_new(RAW, b"durable").unwrap();
            assert!(s.put(&cid, b"not it").is_err());
            cid
        };
        let s = FsBlockstore::open(&dir, false).unwrap();
        assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&b"durable"[..]));
        assert!(s.has(&cid).unwrap());
        assert_eq!(s.get(&codec::cid_of(RAW, b"absent")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}

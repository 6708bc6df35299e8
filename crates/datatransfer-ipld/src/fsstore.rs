//! A durable block store: one file per block in a directory.
//!
//! Why files rather than SQLite: blocks run up to megabytes, and a file per block lets the
//! operating system's page cache serve reads, lets any number of readers work without locks,
//! and needs no dependency; SQLite is slower for blobs this large. Files live in 256
//! subdirectories (by the last two characters of the CID) so no directory grows too large.
//!
//! A block is written to a temporary file under `.tmp/` and renamed to its final name, so a
//! block file never holds part of a block. In a store opened with `sync`, a background thread
//! makes each written block durable (fsync, then the rename, then an fsync of the directory)
//! while the transfer goes on; [`Blockstore::flush`] waits until every block put before it is
//! durable. A block that has a final name is therefore whole and on stable storage, even after
//! a power loss; a crash loses at most the blocks that were still waiting, which a restarted
//! transfer fetches again. Waiting blocks are bounded ([`FsBlockstore::max_unsynced_bytes`]):
//! past the bound, `put` waits for the disk.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use cid::Cid;

use crate::blockstore::{Blockstore, BlockstoreError};
use crate::codec;

/// How many bytes of written blocks may wait for the disk by default (see
/// [`FsBlockstore::max_unsynced_bytes`]).
pub const DEFAULT_MAX_UNSYNCED_BYTES: u64 = 64 << 20;

/// Temporary files older than this are left over from a crash and removed on open.
const STALE_TEMP: Duration = Duration::from_secs(24 * 60 * 60);

/// Blocks as files under a directory.
#[derive(Debug)]
pub struct FsBlockstore {
    dir: PathBuf,
    tmp_dir: PathBuf,
    tmp: AtomicU64,
    syncer: Option<Syncer>,
}

/// The background thread that makes written blocks durable, and what it shares with `put`,
/// `get` and `flush`.
#[derive(Debug)]
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct SyncShared {
    state: Mutex<SyncState>,
    changed: Condvar,
    max_unsynced: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Written blocks not yet under their final name: CID -> temporary file.
    waiting: HashMap<Cid, PathBuf>,
    /// Blocks the thread has not taken yet.
    queue: Vec<Waiting>,
    /// Bytes in `waiting`.
    waiting_bytes: u64,
    /// How many blocks were ever queued, and how many the thread has finished with.
    queued: u64,
    done: u64,
    /// The first failure: from then on the store refuses writes and flushes.
    error: Option<String>,
    closing: bool,
}

#[derive(Debug)]
struct Waiting {
    cid: Cid,
    tmp: PathBuf,
    dest: PathBuf,
    len: u64,
}

fn io(path: &Path, e: std::io::Error) -> BlockstoreError {
    BlockstoreError::Backend(format!("{}: {e}", path.display()))
}

impl FsBlockstore {
    /// Opens (creating if needed) a store in `dir`. With `sync`, written blocks are made
    /// durable in the background and [`Blockstore::flush`] waits for them; without, nothing
    /// is ever flushed to stable storage (for caches and tests).
    pub fn open(dir: impl AsRef<Path>, sync: bool) -> Result<Self, BlockstoreError> {
        let dir = dir.as_ref().to_path_buf();
        let tmp_dir = dir.join(".tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| io(&tmp_dir, e))?;
        remove_stale_temp_files(&tmp_dir);
        let syncer = if sync {
            let shared = Arc::new(SyncShared {
                state: Mutex::new(SyncState::default()),
                changed: Condvar::new(),
                max_unsynced: AtomicU64::new(DEFAULT_MAX_UNSYNCED_BYTES),
            });
            let worker = shared.clone();
            let thread = std::thread::Builder::new()
                .name("fs-blockstore-sync".into())
                .spawn(move || worker.run())
                .map_err(|e| BlockstoreError::Backend(format!("cannot start a thread: {e}")))?;
            Some(Syncer {
                shared,
                thread: Some(thread),
            })
        } else {
            None
        };
        Ok(Self {
            dir,
            tmp_dir,
            tmp: AtomicU64::new(0),
            syncer,
        })
    }

    /// Sets how many bytes of written blocks may wait to be made durable before `put` waits
    /// for the disk (default [`DEFAULT_MAX_UNSYNCED_BYTES`]). It bounds both the memory the
    /// waiting blocks pin in the page cache and what a crash can cost. No effect without
    /// `sync`.
    pub fn max_unsynced_bytes(self, bytes: u64) -> Self {
        if let Some(s) = &self.syncer {
            s.shared.max_unsynced.store(bytes, Ordering::Relaxed);
        }
        self
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

    /// The temporary file of a block still waiting to be made durable.
    fn waiting(&self, cid: &Cid) -> Result<Option<PathBuf>, BlockstoreError> {
        match &self.syncer {
            Some(s) => Ok(s.shared.lock()?.waiting.get(cid).cloned()),
            None => Ok(None),
        }
    }
}

/// Removes temporary files a crashed process left behind. Only old ones: another process
/// may be writing into the same store right now.
fn remove_stale_temp_files(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

impl Blockstore for FsBlockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, BlockstoreError> {
        if let Some(tmp) = self.waiting(cid)? {
            match fs::read(&tmp) {
                Ok(data) => return Ok(Some(Arc::from(data))),
                // Renamed meanwhile: read it under its final name.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&tmp, e)),
            }
        }
        let path = self.path(cid);
        match fs::read(&path) {
            Ok(data) => Ok(Some(Arc::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        codec::verify(cid, data)?;
        self.put_verified(cid, data)
    }

    fn put_verified(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        if let Some(s) = &self.syncer {
            s.shared.lock()?.check()?;
        }
        if self.has(cid)? {
            return Ok(());
        }
        let tmp = self.tmp_dir.join(format!(
            "{}-{}",
            std::process::id(),
            self.tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(data).map_err(|e| io(&tmp, e))?;
        drop(f);
        let dest = self.path(cid);
        match &self.syncer {
            Some(s) => s.shared.queue(Waiting {
                cid: *cid,
                tmp,
                dest,
                len: data.len() as u64,
            }),
            None => move_into_place(&tmp, &dest),
        }
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.waiting(cid)?.is_some() || self.path(cid).exists())
    }

    /// Blocks reach the directory through `put` (verified) or `put_verified`. A file changed
    /// behind the store's back is served as it is, and the receiving side refuses it.
    fn trusted(&self) -> bool {
        true
    }

    fn flush(&self) -> Result<(), BlockstoreError> {
        match &self.syncer {
            Some(s) => s.shared.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for FsBlockstore {
    /// Finishes making the waiting blocks durable.
    fn drop(&mut self) {
        if let Some(s) = &mut self.syncer {
            if let Ok(mut st) = s.shared.state.lock() {
                st.closing = true;
            }
            s.shared.changed.notify_all();
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Renames a written block to its final name, creating its directory.
fn move_into_place(tmp: &Path, dest: &Path) -> Result<(), BlockstoreError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    fs::rename(tmp, dest).map_err(|e| io(dest, e))
}

/// Flushes a directory's entries (the renames into it) to stable storage. Only Unix can
/// open a directory to sync it; elsewhere the file's own sync is what there is.
fn sync_dir(dir: &Path) -> Result<(), BlockstoreError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl SyncShared {
    fn lock(&self) -> Result<MutexGuard<'_, SyncState>, BlockstoreError> {
        self.state
            .lock()
            .map_err(|_| BlockstoreError::Backend("block store lock poisoned".into()))
    }

    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, SyncState>,
    ) -> Result<MutexGuard<'a, SyncState>, BlockstoreError> {
        self.changed
            .wait(guard)
            .map_err(|_| BlockstoreError::Backend("block store lock poisoned".into()))
    }

    /// Hands a written block to the thread; waits while too much is waiting already.
    fn queue(&self, block: Waiting) -> Result<(), BlockstoreError> {
        let mut st = self.lock()?;
        st.waiting.insert(block.cid, block.tmp.clone());
        st.waiting_bytes += block.len;
        st.queued += 1;
        st.queue.push(block);
        self.changed.notify_all();
        let max = self.max_unsynced.load(Ordering::Relaxed);
        while st.waiting_bytes > max && st.error.is_none() && !st.closing {
            st = self.wait(st)?;
        }
        st.check()
    }

    /// Waits until every block queued so far is durable.
    fn flush(&self) -> Result<(), BlockstoreError> {
        let mut st = self.lock()?;
        let target = st.queued;
        loop {
            st.check()?;
            if st.done >= target {
                return Ok(());
            }
            st = self.wait(st)?;
        }
    }

    /// The thread: takes what is queued, makes it durable, says so; until the store closes
    /// and nothing is left.
    fn run(&self) {
        loop {
            let batch = {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                while st.queue.is_empty() && !st.closing {
                    st = match self.changed.wait(st) {
                        Ok(st) => st,
                        Err(_) => return,
                    };
                }
                if st.queue.is_empty() {
                    return;
                }
                std::mem::take(&mut st.queue)
            };
            let (placed, error) = make_durable(&batch);
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            for (block, placed) in batch.iter().zip(placed) {
                st.waiting_bytes = st.waiting_bytes.saturating_sub(block.len);
                // A block that failed keeps its temporary file: this process can still
                // read it, but the store takes no more.
                if placed {
                    st.waiting.remove(&block.cid);
                }
            }
            st.done += batch.len() as u64;
            if let Some(e) = error {
                st.error.get_or_insert(e.to_string());
            }
            self.changed.notify_all();
        }
    }
}

impl SyncState {
    /// The store's first failure, if any.
    fn check(&self) -> Result<(), BlockstoreError> {
        match &self.error {
            Some(e) => Err(BlockstoreError::Backend(format!(
                "a block could not be made durable: {e}"
            ))),
            None => Ok(()),
        }
    }
}

/// Syncs each block's file, renames it into place, then syncs the directories it went into.
/// Says which blocks got their final name, and the first failure.
fn make_durable(batch: &[Waiting]) -> (Vec<bool>, Option<BlockstoreError>) {
    let mut error = None;
    let mut dirs: Vec<&Path> = Vec::new();
    let placed = batch
        .iter()
        .map(|b| {
            let done = fs::OpenOptions::new()
                .write(true)
                .open(&b.tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&b.tmp, e))
                .and_then(|()| move_into_place(&b.tmp, &b.dest));
            match done {
                Ok(()) => {
                    if let Some(parent) = b.dest.parent()
                        && !dirs.contains(&parent)
                    {
                        dirs.push(parent);
                    }
                    true
                }
                Err(e) => {
                    error.get_or_insert(e);
                    false
                }
            }
        })
        .collect();
    for dir in dirs {
        if let Err(e) = sync_dir(dir) {
            error.get_or_insert(e);
        }
    }
    (placed, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RAW;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "datatransfer-ipld-fs-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn block(i: u32) -> Vec<u8> {
        format!("block number {i}").repeat(100).into_bytes()
    }

    #[test]
    fn blocks_survive_reopening_and_bad_blocks_are_refused() {
        let dir = temp_dir("reopen");
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

    #[test]
    fn after_a_flush_every_block_has_its_final_name_and_no_temporary_file_is_left() {
        let dir = temp_dir("flush");
        // A bound smaller than one block: every put waits for the disk.
        let s = FsBlockstore::open(&dir, true)
            .unwrap()
            .max_unsynced_bytes(100);
        let mut cids = Vec::new();
        for i in 0..200 {
            let cid = s.put_new(RAW, &block(i)).unwrap();
            // Readable at once, waiting or not.
            assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&block(i)[..]));
            assert!(s.has(&cid).unwrap());
            cids.push(cid);
        }
        s.flush().unwrap();
        assert_eq!(fs::read_dir(dir.join(".tmp")).unwrap().count(), 0);
        for (i, cid) in (0..).zip(&cids) {
            assert_eq!(fs::read(s.path(cid)).unwrap(), block(i));
        }
        // A second flush with nothing new returns at once.
        s.flush().unwrap();
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_the_store_finishes_the_waiting_blocks() {
        let dir = temp_dir("drop");
        let cids: Vec<Cid> = {
            let s = FsBlockstore::open(&dir, true).unwrap();
            (0..50)
                .map(|i| s.put_new(RAW, &block(i)).unwrap())
                .collect()
        };
        let s = FsBlockstore::open(&dir, false).unwrap();
        for (i, cid) in (0..).zip(&cids) {
            assert_eq!(fs::read(s.path(cid)).unwrap(), block(i));
        }
        assert_eq!(fs::read_dir(dir.join(".tmp")).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_block_that_cannot_be_made_durable_fails_the_flush_and_later_puts() {
        let dir = temp_dir("fail");
        let s = FsBlockstore::open(&dir, true).unwrap();
        let data = block(7);
        let cid = codec::cid_of(RAW, &data);
        // A file where the block's directory should be: the rename into place fails, for
        // root too.
        let shard = s.path(&cid).parent().unwrap().to_path_buf();
        fs::write(&shard, b"in the way").unwrap();
        s.put(&cid, &data).unwrap();
        // Still readable by this process from its temporary file.
        assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&data[..]));
        let err = s.flush().unwrap_err().to_string();
        assert!(err.contains("could not be made durable"), "{err}");
        assert!(err.contains(&shard.display().to_string()), "{err}");
        let err = s.put_new(RAW, &block(8)).unwrap_err().to_string();
        assert!(err.contains("could not be made durable"), "{err}");
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_removes_only_old_temporary_files() {
        let dir = temp_dir("stale");
        let tmp = dir.join(".tmp");
        fs::create_dir_all(&tmp).unwrap();
        let old = fs::File::create(tmp.join("1-0")).unwrap();
        old.set_modified(std::time::SystemTime::now() - 2 * STALE_TEMP)
            .unwrap();
        drop(old);
        fs::write(tmp.join("1-1"), b"another process is writing this").unwrap();
        let _s = FsBlockstore::open(&dir, true).unwrap();
        assert!(!tmp.join("1-0").exists());
        assert!(tmp.join("1-1").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}

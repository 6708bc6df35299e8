//! Writing a block's file past the page cache (`O_DIRECT`, Linux only), for
//! [`FsBlockstore::direct_writes`](super::FsBlockstore::direct_writes).
//!
//! A direct write needs its memory, file offset and length aligned to the device's logical
//! block size. Blocks arrive as slices of received messages, aligned to nothing, so each is
//! copied a megabyte at a time into a buffer of the writer's own (aligned, and reused: the copy
//! reads and writes warm memory) and written from there; the last piece is padded with zeros
//! to the alignment, and the file is cut back to the block's length afterwards.

use std::io;
use std::path::Path;

/// Alignment of a direct write's memory, offset and length: 4 KiB covers devices with 512-byte
/// and with 4 KiB logical blocks.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // Only Linux writes directly.
const ALIGN: usize = 4096;

/// How much of a block one direct write carries (the size of a writer's buffer).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // Only Linux writes directly.
const CHUNK: usize = 1 << 20;

/// Blocks smaller than this go through the page cache even in a store with direct writes: a
/// direct write waits for the device, which small blocks (DAG nodes, small files) would pay
/// once each for little saved.
pub(super) const DIRECT_FROM: usize = 64 << 10;

/// A writer thread's buffer for direct writes, allocated on first use.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // Only Linux writes directly.
#[derive(Debug, Default)]
pub(super) struct AlignedBuf {
    buf: Vec<u8>,
}

impl AlignedBuf {
    /// `CHUNK` bytes starting at an aligned address, if the allocator's memory allows it.
    #[cfg(target_os = "linux")]
    fn aligned(&mut self) -> Option<&mut [u8]> {
        if self.buf.len() < CHUNK + ALIGN {
            self.buf = vec![0; CHUNK + ALIGN];
        }
        let at = self.buf.as_ptr().align_offset(ALIGN);
        self.buf.get_mut(at..at.checked_add(CHUNK)?)
    }
}

/// Creates (or truncates) `path` and writes `data` into it past the page cache. Fails where
/// the system or the filesystem refuses direct I/O (see [`refused`]); the caller then writes
/// the block the usual way.
#[cfg(target_os = "linux")]
pub(super) fn write_new(path: &Path, data: &[u8], scratch: &mut AlignedBuf) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let buf = scratch
        .aligned()
        .ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    for piece in data.chunks(CHUNK) {
        let padded = piece.len().next_multiple_of(ALIGN);
        buf[..piece.len()].copy_from_slice(piece);
        buf[piece.len()..padded].fill(0);
        // A short write would leave the next one unaligned: the kernel refuses it, and the
        // block is written again the usual way.
        file.write_all(&buf[..padded])?;
    }
    // Cut the padding off (a block of whole pages, as most leaves are, has none).
    if !data.len().is_multiple_of(ALIGN) {
        file.set_len(data.len() as u64)?;
    }
    Ok(())
}

/// Whether a failed direct write says direct I/O is refused here (the filesystem does not do
/// it, or would not take our alignment), rather than that this one write failed (a full
/// disk, say).
pub(super) fn refused(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(libc::EINVAL) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported
}

/// Direct writes are Linux-only here: elsewhere every block goes through the page cache.
#[cfg(not(target_os = "linux"))]
pub(super) fn write_new(_: &Path, _: &[u8], _: &mut AlignedBuf) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

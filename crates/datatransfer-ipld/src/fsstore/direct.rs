//! Writing a block's file past the page cache (`O_DIRECT`, Linux only), for
//! [`FsBlockstore::direct_writes`](super::FsBlockstore::direct_writes).
//!
//! A direct write needs its memory, file offset and length aligned to the device's logical
//! block size. Blocks arrive as slices of received messages, aligned to nothing, so each is
//! copied a megabyte at a time into a buffer of the writer's own (aligned, and reused: the copy
//! reads and writes warm memory) and written from there; the last piece is padded with zeros
//! to the alignment, and the file is cut back to the block's length afterwards.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Alignment of a direct write's memory, offset and length: 4 KiB covers devices with 512-byte
/// and with 4 KiB logical blocks.
const ALIGN: usize = 4096;

/// How much of a block one direct write carries (the size of a writer's buffer).
const CHUNK: usize = 1 << 20;

/// Blocks smaller than this go through the page cache even in a store with direct writes: a
/// direct write waits for the device, which small blocks (DAG nodes, small files) would pay
/// once each for little saved.
pub(super) const DIRECT_FROM: usize = 64 << 10;

/// A writer thread's buffer for direct writes, allocated on first use.
#[derive(Debug, Default)]
pub(super) struct AlignedBuf {
    buf: Vec<u8>,
}

impl AlignedBuf {
    /// `CHUNK` bytes starting at an aligned address, if the allocator's memory allows it.
    fn aligned(&mut self) -> Option<&mut [u8]> {
        if self.buf.len() < CHUNK + ALIGN {
            self.buf = vec![0; CHUNK + ALIGN];
        }
        let at = self.buf.as_ptr().align_offset(ALIGN);
        self.buf.get_mut(at..at.checked_add(CHUNK)?)
    }
}

/// Creates `path` (which must not exist) and writes `data` into it past the page cache.
/// Fails where the system or the filesystem refuses direct I/O; the caller then writes the
/// block the usual way.
#[cfg(target_os = "linux")]
pub(super) fn write_new(path: &Path, data: &[u8], scratch: &mut AlignedBuf) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let buf = scratch
        .aligned()
        .ok_or_else(|| io::Error::other("no aligned buffer"))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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
    file.set_len(data.len() as u64)
}

/// Direct writes are Linux-only here: elsewhere every block goes through the page cache.
#[cfg(not(target_os = "linux"))]
pub(super) fn write_new(_: &Path, _: &[u8], _: &mut AlignedBuf) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

//! UnixFS files: import a byte stream as a balanced DAG, export a DAG back to bytes.
//!
//! The import matches `ipfs add --cid-version=1 --raw-leaves --chunker=size-N` (go-unixfs's
//! balanced layout): fixed-size chunks stored as raw blocks; a file of one chunk is that raw
//! block; otherwise DAG-PB nodes of up to 174 links, each link written with an empty name and
//! its cumulative size, and UnixFS `Data` of type File with the file size and each child's
//! size. A full tree of depth d becomes the first child of a new root of depth d + 1.

use std::io::{Read, Write};

use cid::Cid;
use thiserror::Error;

use crate::blockstore::{Blockstore, BlockstoreError};
use crate::codec::{self, BlockError, DAG_PB, PbLink, PbNode, RAW};

/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
/// go-unixfs's links per node (8 KiB / 47 bytes per link).
pub const DEFAULT_MAX_LINKS: usize = 174;

/// How to cut and shape a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Bytes per leaf.
    pub chunk_size: usize,
    /// Links per interior node.
    pub max_links: usize,
    /// Leaves as raw blocks (go-unixfs `--raw-leaves`, the default here); `false` wraps each
    /// chunk in a dag-pb UnixFS file node, as older go-ipfs did.
    pub raw_leaves: bool,
    /// The CID version of the DAG-PB nodes (`ipfs add --cid-version`). With
    /// [`CidVersion::V0`], DAG-PB nodes get CIDv0 (`Qm...`) while raw leaves stay CIDv1, as
    /// kubo does: a raw block has no CIDv0.
    pub cid_version: CidVersion,
}

/// The CID version of an import's DAG-PB nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CidVersion {
    /// CIDv0: a bare SHA2-256 multihash, DAG-PB implied (older go-ipfs's default).
    V0,
    /// CIDv1 (the default here).
    #[default]
    V1,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_links: DEFAULT_MAX_LINKS,
            raw_leaves: true,
            cid_version: CidVersion::V1,
        }
    }
}

/// An import or export failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UnixfsError {
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] BlockstoreError),
    /// A block is missing from the store.
    #[error("missing block {0}")]
    Missing(Cid),
    /// A block is not a UnixFS file node.
    #[error("block {cid} is not a UnixFS file: {reason}")]
    NotAFile {
        /// The block.
        cid: Cid,
        /// Why.
        reason: String,
    },
    /// A block does not decode.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Options that cannot work (a chunk size of 0, fewer than 2 links).
    #[error("invalid import options: {0}")]
    Options(&'static str),
    /// The DAG is deeper than any file could be.
    #[error("UnixFS DAG nested deeper than {0} levels")]
    TooDeep(usize),
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The file's root.
    pub root: Cid,
    /// The file's size in bytes.
    pub size: u64,
    /// How many blocks were written (repeated chunks count once per occurrence).
    pub blocks: u64,
}

/// A child of an interior node: its CID, its file size, its cumulative block size.
struct Child {
    cid: Cid,
    file_size: u64,
    tsize: u64,
}

struct Builder<'a, R> {
    store: &'a dyn Blockstore,
    reader: R,
    opts: &'a ImportOptions,
    buf: Vec<u8>,
    /// The next chunk, read ahead so `done()` is known.
    next: Option<Vec<u8>>,
    blocks: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// UnixFS `Data` of a file node: Type File (2), filesize, blocksizes (proto2, unpacked).
fn file_data(file_size: u64, block_sizes: &[u64]) -> Vec<u8> {
    let mut out = vec![0x08, 0x02, 0x18];
    put_varint(&mut out, file_size);
    for b in block_sizes {
        out.push(0x20);
        put_varint(&mut out, *b);
    }
    out
}

impl<R: Read> Builder<'_, R> {
    /// Stores a DAG-PB node under the CID version asked for.
    fn put_pb(&mut self, bytes: &[u8]) -> Result<Cid, UnixfsError> {
        let cid = match self.opts.cid_version {
            CidVersion::V1 => codec::cid_of(DAG_PB, bytes),
            CidVersion::V0 => Cid::new_v0(*codec::cid_of(DAG_PB, bytes).hash())
                .map_err(|_| UnixfsError::Options("CIDv0 needs a SHA2-256 hash"))?,
        };
        self.store.put(&cid, bytes)?;
        Ok(cid)
    }

    fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, UnixfsError> {
        self.buf.clear();
        let mut filled = 0;
        self.buf.resize(self.opts.chunk_size, 0);
        while filled < self.opts.chunk_size {
            let n = self.reader.read(&mut self.buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok((filled > 0).then(|| self.buf[..filled].to_vec()))
    }

    fn done(&self) -> bool {
        self.next.is_none()
    }

    fn leaf(&mut self) -> Result<Child, UnixfsError> {
        let data = self.next.take().unwrap_or_default();
        self.next = self.read_chunk()?;
        let (cid, tsize) = if self.opts.raw_leaves {
            (self.store.put_new(RAW, &data)?, data.len() as u64)
        } else {
            // UnixFS Data { Type: File, Data: chunk, filesize } in a dag-pb node, no links.
            let mut unixfs = vec![0x08, 0x02, 0x12];
            put_varint(&mut unixfs, data.len() as u64);
            unixfs.extend_from_slice(&data);
            unixfs.push(0x18);
            put_varint(&mut unixfs, data.len() as u64);
            let bytes = PbNode {
                links: Vec::new(),
                data: Some(unixfs),
            }
            .encode();
            (self.put_pb(&bytes)?, bytes.len() as u64)
        };
        self.blocks += 1;
        Ok(Child {
            cid,
            file_size: data.len() as u64,
            tsize,
        })
    }

    fn commit(&mut self, children: Vec<Child>) -> Result<Child, UnixfsError> {
        let file_size = children.iter().map(|c| c.file_size).sum();
        let sizes: Vec<u64> = children.iter().map(|c| c.file_size).collect();
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid,
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(file_data(file_size, &sizes)),
        };
        let bytes = node.encode();
        let cid = self.put_pb(&bytes)?;
        self.blocks += 1;
        Ok(Child {
            cid,
            file_size,
            tsize: bytes.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
        })
    }

    /// go-unixfs's `fillNodeRec`: fills a node of `depth` (1 = parent of leaves).
    fn fill(&mut self, mut children: Vec<Child>, depth: usize) -> Result<Child, UnixfsError> {
        while children.len() < self.opts.max_links && !self.done() {
            let child = if depth == 1 {
                self.leaf()?
            } else {
                self.fill(Vec::new(), depth - 1)?
            };
            children.push(child);
        }
        self.commit(children)
    }
}

/// Imports everything `reader` yields as a UnixFS file into `store`.
pub fn import<R: Read>(
    store: &dyn Blockstore,
    reader: R,
    opts: &ImportOptions,
) -> Result<Imported, UnixfsError> {
    if opts.chunk_size == 0 {
        return Err(UnixfsError::Options("chunk size must be at least 1 byte"));
    }
    if opts.max_links < 2 {
        return Err(UnixfsError::Options("interior nodes need at least 2 links"));
    }
    let mut b = Builder {
        store,
        reader,
        opts,
        buf: Vec::new(),
        next: None,
        blocks: 0,
    };
    b.next = b.read_chunk()?;
    // The first root is a single leaf (the whole file, if it fits in one chunk; an empty
    // raw block for an empty file).
    let mut root = b.leaf()?;
    let mut depth = 1;
    while !b.done() {
        root = b.fill(vec![root], depth)?;
        depth += 1;
    }
    Ok(Imported {
        root: root.cid,
        size: root.file_size,
        blocks: b.blocks,
    })
}

/// Imports a byte slice.
pub fn import_bytes(
    store: &dyn Blockstore,
    data: &[u8],
    opts: &ImportOptions,
) -> Result<Imported, UnixfsError> {
    import(store, data, opts)
}

/// A UnixFS file node: its inline data, its child links and the file size it declares.
struct FileNode {
    inline: Vec<u8>,
    links: Vec<Cid>,
    size: Option<u64>,
}

/// Parses a UnixFS file node.
fn file_node(cid: &Cid, data: &[u8]) -> Result<FileNode, UnixfsError> {
    let not_file = |reason: &str| UnixfsError::NotAFile {
        cid: *cid,
        reason: reason.into(),
    };
    let node = PbNode::decode(data)?;
    let unixfs = node.data.ok_or_else(|| not_file("no UnixFS data"))?;
    // Parse the UnixFS Data message: Type (1) and inline Data (2) matter for export.
    let (mut kind, mut inline, mut size) = (None, Vec::new(), None);
    let mut pos = 0;
    while pos < unixfs.len() {
        let key = unixfs[pos];
        pos += 1;
        let read_varint = |pos: &mut usize| -> Result<u64, UnixfsError> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = *unixfs
                    .get(*pos)
                    .ok_or_else(|| not_file("truncated UnixFS data"))?;
                *pos += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(not_file("bad varint in UnixFS data"))
        };
        match (key >> 3, key & 7) {
            (1, 0) => kind = Some(read_varint(&mut pos)?),
            (3, 0) => size = Some(read_varint(&mut pos)?),
            (2, 2) => {
                let len = read_varint(&mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= unixfs.len())
                    .ok_or_else(|| not_file("truncated UnixFS data"))?;
                inline = unixfs[pos..end].to_vec();
                pos = end;
            }
            (_, 0) => {
                read_varint(&mut pos)?;
            }
            (_, 2) => {
                let len = read_varint(&mut pos)? as usize;
                pos = pos
                    .checked_add(len)
                    .filter(|e| *e <= unixfs.len())
                    .ok_or_else(|| not_file("truncated UnixFS data"))?;
            }
            _ => return Err(not_file("unexpected UnixFS field")),
        }
    }
    // File (2) or Raw (0).
    if !matches!(kind, Some(0) | Some(2)) {
        return Err(not_file("UnixFS type is not File"));
    }
    Ok(FileNode {
        inline,
        links: node.links.into_iter().map(|l| l.hash).collect(),
        size,
    })
}

/// The size of the file under `root`, as its root block declares it (a raw block's length,
/// or a UnixFS node's `filesize`), reading only the root. For progress bars: the DAG's
/// bytes on the wire are slightly more (interior nodes).
pub fn file_size(store: &dyn Blockstore, root: &Cid) -> Result<u64, UnixfsError> {
    let data = store.get(root)?.ok_or(UnixfsError::Missing(*root))?;
    match root.codec() {
        RAW => Ok(data.len() as u64),
        DAG_PB => {
            let node = file_node(root, &data)?;
            Ok(node.size.unwrap_or(node.inline.len() as u64))
        }
        other => Err(BlockError::UnsupportedCodec(other).into()),
    }
}

/// Writes the file under `root` to `out`; returns how many bytes were written. Blocks are
/// verified against their CIDs.
pub fn export<W: Write>(
    store: &dyn Blockstore,
    root: &Cid,
    mut out: W,
) -> Result<u64, UnixfsError> {
    let mut written = 0u64;
    // Depth-first, links in order: an explicit stack of pending CIDs, reversed.
    let mut stack = vec![(*root, 0usize)];
    while let Some((cid, depth)) = stack.pop() {
        if depth > 64 {
            return Err(UnixfsError::TooDeep(64));
        }
        let data = store.get(&cid)?.ok_or(UnixfsError::Missing(cid))?;
        codec::verify(&cid, &data)?;
        match cid.codec() {
            RAW => {
                out.write_all(&data)?;
                written += data.len() as u64;
            }
            DAG_PB => {
                let node = file_node(&cid, &data)?;
                out.write_all(&node.inline)?;
                written += node.inline.len() as u64;
                stack.extend(node.links.into_iter().rev().map(|l| (l, depth + 1)));
            }
            other => return Err(BlockError::UnsupportedCodec(other).into()),
        }
    }
    out.flush()?;
    Ok(written)
}

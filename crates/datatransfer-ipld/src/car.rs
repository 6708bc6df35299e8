//! CAR files (content-addressed archives): read CARv1 and CARv2, write CARv1, and serve a CAR
//! file as a read-only [`Blockstore`].
//!
//! CARv1 is a varint-prefixed DAG-CBOR header `{roots, version: 1}` followed by sections,
//! each a varint length, a CID and the block. CARv2 wraps a CARv1 payload behind an 11-byte
//! pragma and a 40-byte header giving the payload's offset and size. Every length read from a
//! file is bounded, and a truncated file is an error, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use cid::Cid;
use thiserror::Error;

use crate::blockstore::{Blockstore, BlockstoreError, Bytes};
use crate::codec::{self, BlockError};
use crate::node::Node;
use crate::selector::Selector;
use crate::traversal::{BlockVisit, Step, Traversal, TraversalConfig, TraversalError, Visitor};

/// The CARv2 pragma: a CARv1-style header `{"version": 2}`.
const V2_PRAGMA: [u8; 11] = [
    0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
];
/// Largest header accepted.
pub const MAX_HEADER_SIZE: u64 = 1 << 20;
/// Largest section (CID plus block) accepted.
pub const MAX_SECTION_SIZE: u64 = 8 << 20;

/// A CAR file is malformed or unreadable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CarError {
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends inside a header or section.
    #[error("CAR file is truncated ({0})")]
    Truncated(&'static str),
    /// The header is not a CAR header.
    #[error("invalid CAR header: {0}")]
    InvalidHeader(String),
    /// A CAR version other than 1 or 2.
    #[error("unsupported CAR version {0}")]
    UnsupportedVersion(i128),
    /// A header or section longer than allowed.
    #[error("CAR {what} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Header or section.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A section's CID does not parse.
    #[error("invalid CID in CAR section: {0}")]
    InvalidCid(String),
    /// A block does not match its CID.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] BlockstoreError),
    /// Walking the DAG to export failed.
    #[error(transparent)]
    Traversal(Box<TraversalError>),
}

impl From<TraversalError> for CarError {
    fn from(e: TraversalError) -> Self {
        Self::Traversal(Box::new(e))
    }
}

fn read_varint<R: Read>(r: &mut R) -> Result<Option<u64>, CarError> {
    let mut v = 0u64;
    for (i, shift) in (0..64).step_by(7).enumerate() {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(CarError::Truncated("varint"))
            };
        }
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Err(CarError::InvalidHeader("varint too long".into()))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_exact_or<R: Read>(r: &mut R, n: u64, what: &'static str) -> Result<Vec<u8>, CarError> {
    let mut buf = Vec::new();
    r.take(n).read_to_end(&mut buf)?;
    if (buf.len() as u64) < n {
        return Err(CarError::Truncated(what));
    }
    Ok(buf)
}

/// Parses a CARv1 header body; returns the roots.
fn parse_v1_header(bytes: &[u8]) -> Result<Vec<Cid>, CarError> {
    let node =
        codec::decode_dag_cbor(bytes, 16).map_err(|e| CarError::InvalidHeader(e.to_string()))?;
    match node.get("version") {
        Some(Node::Integer(1)) => {}
        Some(Node::Integer(v)) => return Err(CarError::UnsupportedVersion(*v)),
        _ => return Err(CarError::InvalidHeader("no version".into())),
    }
    let Some(Node::List(roots)) = node.get("roots") else {
        return Err(CarError::InvalidHeader("no roots list".into()));
    };
    roots
        .iter()
        .map(|r| match r {
            Node::Link(c) => Ok(*c),
            _ => Err(CarError::InvalidHeader("a root is not a link".into())),
        })
        .collect()
}

/// Reads the blocks of a CARv1 or CARv2 stream in order.
#[derive(Debug)]
pub struct CarReader<R: Read> {
    reader: R,
    /// Bytes left in the payload (a CARv2 payload has a size; a CARv1 runs to the end).
    remaining: u64,
    roots: Vec<Cid>,
}

fn read_v1_header<R: Read>(reader: &mut R) -> Result<Vec<u8>, CarError> {
    let len = read_varint(reader)?.ok_or(CarError::Truncated("header length"))?;
    if len > MAX_HEADER_SIZE {
        return Err(CarError::TooLarge {
            what: "header",
            size: len,
            max: MAX_HEADER_SIZE,
        });
    }
    read_exact_or(reader, len, "header")
}

impl<R: Read> CarReader<R> {
    /// Reads the header. Blocks are verified against their CIDs as they are read.
    pub fn new(mut reader: R) -> Result<Self, CarError> {
        let header = read_v1_header(&mut reader)?;
        if header == V2_PRAGMA[1..] {
            // CARv2: characteristics (16), data offset, data size, index offset (u64 LE each).
            let h = read_exact_or(&mut reader, 40, "CARv2 header")?;
            let le = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[i..i + 8]);
                u64::from_le_bytes(b)
            };
            let (offset, size) = (le(16), le(24));
            let skip = offset
                .checked_sub((V2_PRAGMA.len() + 40) as u64)
                .ok_or_else(|| {
                    CarError::InvalidHeader(format!("CARv2 data offset {offset} inside the header"))
                })?;
            let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())?;
            if skipped < skip {
                return Err(CarError::Truncated("CARv2 padding"));
            }
            let mut payload = (&mut reader).take(size);
            let inner = read_v1_header(&mut payload)?;
            let remaining = payload.limit();
            return Ok(Self {
                roots: parse_v1_header(&inner)?,
                reader,
                remaining,
            });
        }
        Ok(Self {
            roots: parse_v1_header(&header)?,
            reader,
            remaining: u64::MAX,
        })
    }

    /// The roots named in the header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// The next block, or `None` at the end of the payload.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let mut lim = (&mut self.reader).take(self.remaining);
        let Some(len) = read_varint(&mut lim)? else {
            return Ok(None);
        };
        if len > MAX_SECTION_SIZE {
            return Err(CarError::TooLarge {
                what: "section",
                size: len,
                max: MAX_SECTION_SIZE,
            });
        }
        let section = read_exact_or(&mut lim, len, "section")?;
        let left = lim.limit();
        if self.remaining != u64::MAX {
            self.remaining = left;
        }
        let mut cursor = std::io::Cursor::new(&section[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::InvalidCid(e.to_string()))?;
        let data = section[cursor.position() as usize..].to_vec();
        codec::verify(&cid, &data)?;
        Ok(Some((cid, data)))
    }
}

/// Loads every block of a CAR stream into `store`; returns the roots.
pub fn load_car<R: Read>(store: &dyn Blockstore, reader: R) -> Result<Vec<Cid>, CarError> {
    let mut car = CarReader::new(reader)?;
    while let Some((cid, data)) = car.next_block()? {
        store.put(&cid, &data)?;
    }
    Ok(car.roots)
}

/// Writes a CARv1 stream.
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    out: W,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots`.
    pub fn new(mut out: W, roots: &[Cid]) -> Result<Self, CarError> {
        let header = Node::map(vec![
            (
                "roots",
                Node::List(roots.iter().map(|c| Node::Link(*c)).collect()),
            ),
            ("version", Node::Integer(1)),
        ]);
        let bytes = codec::encode_dag_cbor(&header);
        let mut buf = Vec::with_capacity(bytes.len() + 4);
        put_varint(&mut buf, bytes.len() as u64);
        buf.extend(bytes);
        out.write_all(&buf)?;
        Ok(Self { out })
    }

    /// Appends one block.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), CarError> {
        let cid_bytes = cid.to_bytes();
        let mut prefix = Vec::with_capacity(cid_bytes.len() + 10);
        put_varint(&mut prefix, (cid_bytes.len() + data.len()) as u64);
        prefix.extend(cid_bytes);
        self.out.write_all(&prefix)?;
        self.out.write_all(data)?;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes the DAG under `root` chosen by `selector` as a CARv1 file, blocks in traversal
/// order, each block once. Returns how many blocks were written.
pub fn export_car<W: Write>(
    store: &dyn Blockstore,
    root: Cid,
    selector: Selector,
    out: W,
) -> Result<u64, CarError> {
    struct Sink;
    impl Visitor for Sink {
        fn block(&mut self, _: &BlockVisit) {}
    }
    let mut car = CarWriter::new(out, &[root])?;
    let mut seen = std::collections::HashSet::new();
    let mut t = Traversal::new(root, selector, TraversalConfig::default());
    let mut n = 0;
    while let Step::NeedBlock(cid) = t.advance(&mut Sink)? {
        let data = store.get(&cid)?;
        if let Some(d) = &data
            && seen.insert(cid)
        {
            car.write_block(&cid, d)?;
            n += 1;
        }
        t.provide(data.as_deref(), &mut Sink)?;
    }
    car.finish()?;
    Ok(n)
}

/// A CAR file served as a read-only block store: indexed once when opened, then each block
/// read from the file on demand.
#[derive(Debug)]
pub struct CarBlockstore {
    file: Mutex<File>,
    index: HashMap<Cid, (u64, u64)>,
    roots: Vec<Cid>,
}

/// Counts the bytes a reader hands out, so sections can be located in the file.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl CarBlockstore {
    /// Opens and indexes a CARv1 or CARv2 file, verifying every block.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CarError> {
        let file = File::open(path.as_ref())?;
        let counting = Counting {
            inner: BufReader::new(file.try_clone()?),
            pos: 0,
        };
        let mut car = CarReader::new(counting)?;
        let mut index = HashMap::new();
        while let Some((cid, data)) = car.next_block()? {
            let end = car.get_ref().pos;
            index.insert(cid, (end - data.len() as u64, data.len() as u64));
        }
        Ok(Self {
            file: Mutex::new(file),
            index,
            roots: car.roots,
        })
    }

    /// The roots named in the file's header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// How many distinct blocks the file holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the file holds no blocks.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

impl Blockstore for CarBlockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        let Some((offset, len)) = self.index.get(cid) else {
            return Ok(None);
        };
        let mut f = self
            .file
            .lock()
            .map_err(|_| BlockstoreError::Backend("CAR file lock poisoned".into()))?;
        let io = |e: std::io::Error| BlockstoreError::Backend(e.to_string());
        f.seek(SeekFrom::Start(*offset)).map_err(io)?;
        let mut buf = vec![0u8; *len as usize];
        f.read_exact(&mut buf).map_err(io)?;
        Ok(Some(Bytes::from(buf)))
    }

    fn put(&self, _: &Cid, _: &[u8]) -> Result<(), BlockstoreError> {
        Err(BlockstoreError::Backend(
            "a CAR block store is read-only".into(),
        ))
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.index.contains_key(cid))
    }
}

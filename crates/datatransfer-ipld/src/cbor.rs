//! Low-level CBOR reading and writing, exactly as the Go encoders do it.
//!
//! The data-transfer wire formats need three things that general CBOR/serde libraries do not
//! give: text strings that hold arbitrary (non-UTF-8) bytes, because Go writes peer ids that way;
//! embedded IPLD nodes kept as their raw bytes so they re-encode without loss; and finding the
//! end of one CBOR item in a stream with a hard cap on its size and nesting. This module does
//! exactly that and nothing more; data-transfer's message codec and this crate's DAG-CBOR
//! codec are built on it.
//!
//! Only definite-length items are accepted (DAG-CBOR forbids the others, and Go's cbor-gen
//! never writes them).

use cid::Cid;
use thiserror::Error;

/// CBOR major type 0: unsigned integer.
pub const MAJOR_UINT: u8 = 0;
/// CBOR major type 1: negative integer.
pub const MAJOR_NEGINT: u8 = 1;
/// CBOR major type 2: byte string.
pub const MAJOR_BYTES: u8 = 2;
/// CBOR major type 3: text string.
pub const MAJOR_TEXT: u8 = 3;
/// CBOR major type 4: array.
pub const MAJOR_ARRAY: u8 = 4;
/// CBOR major type 5: map.
pub const MAJOR_MAP: u8 = 5;
/// CBOR major type 6: tag.
pub const MAJOR_TAG: u8 = 6;
/// CBOR major type 7: simple values and floats.
pub const MAJOR_SIMPLE: u8 = 7;

/// The CBOR encoding of `null`.
pub const NULL: u8 = 0xf6;
/// The CBOR encoding of `false`.
pub const FALSE: u8 = 0xf4;
/// The CBOR encoding of `true`.
pub const TRUE: u8 = 0xf5;
/// The CBOR tag IPLD uses for links (CIDs).
pub const CID_TAG: u64 = 42;

/// Default cap on the nesting depth of one item (maps, arrays and tags each count one level).
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// A malformed or unacceptable CBOR item.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CborError {
    /// The input ended inside an item.
    #[error("CBOR input ends early at byte {offset}")]
    Truncated {
        /// Where the missing bytes were expected.
        offset: usize,
    },
    /// An additional-information value of 28..=30, which CBOR reserves.
    #[error("reserved CBOR header value {info} at byte {offset}")]
    ReservedHeader {
        /// The 5-bit additional information.
        info: u8,
        /// Where the header starts.
        offset: usize,
    },
    /// An indefinite-length item (forbidden in DAG-CBOR).
    #[error("indefinite-length CBOR item at byte {offset}")]
    IndefiniteLength {
        /// Where the header starts.
        offset: usize,
    },
    /// A simple value other than false, true, null, or a float.
    #[error("unsupported CBOR simple value {value} at byte {offset}")]
    UnsupportedSimple {
        /// The simple value.
        value: u64,
        /// Where the header starts.
        offset: usize,
    },
    /// Nesting deeper than the configured limit.
    #[error("CBOR item nested deeper than {max} levels")]
    TooDeep {
        /// The configured limit.
        max: usize,
    },
    /// An item of another type than the one required here.
    #[error("expected {expected} at byte {offset}, found CBOR major type {found}")]
    UnexpectedType {
        /// What the reader wanted.
        expected: &'static str,
        /// The major type found.
        found: u8,
        /// Where the item starts.
        offset: usize,
    },
    /// Bytes left over after the single item the input should hold.
    #[error("{extra} trailing bytes after the CBOR item")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// A tag-42 link whose bytes are not a valid CID.
    #[error("invalid CID at byte {offset}: {reason}")]
    InvalidCid {
        /// Where the link starts.
        offset: usize,
        /// What was wrong with it.
        reason: String,
    },
}

/// Writes a CBOR header with the shortest encoding of `value`, as every Go encoder does.
pub fn write_header(out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    if value < 24 {
        out.push(m | value as u8);
    } else if value <= u64::from(u8::MAX) {
        out.push(m | 24);
        out.push(value as u8);
    } else if value <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes a text string whose content is `bytes`, which need not be UTF-8 (Go's peer ids).
pub fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    write_header(out, MAJOR_TEXT, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Writes a boolean.
pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { TRUE } else { FALSE });
}

/// Writes a CID as an IPLD link: tag 42 around a byte string of `0x00` then the CID's bytes.
pub fn write_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    write_header(out, MAJOR_TAG, CID_TAG);
    write_header(out, MAJOR_BYTES, bytes.len() as u64 + 1);
    out.push(0);
    out.extend_from_slice(&bytes);
}

/// A decoded CBOR header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major type, 0..=7.
    pub major: u8,
    /// Low five bits of the initial byte.
    pub info: u8,
    /// The argument: a length, an integer, a tag number or a simple value's bits.
    pub value: u64,
    /// Offset of the initial byte.
    pub offset: usize,
}

/// A cursor over a byte slice holding CBOR.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` with the default nesting limit.
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_max_depth(buf, DEFAULT_MAX_DEPTH)
    }

    /// A reader over `buf` that rejects items nested deeper than `max_depth`.
    pub fn with_max_depth(buf: &'a [u8], max_depth: usize) -> Self {
        Self {
            buf,
            pos: 0,
            max_depth,
        }
    }

    /// The current offset into the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self) -> Result<(), CborError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(CborError::TrailingBytes { extra }),
        }
    }

    /// Consumes the next `n` bytes (the body of a byte or text string whose header was read).
    pub fn take_bytes(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        self.take(n)
    }

    /// Moves the cursor back to `pos` (a position this reader was at before).
    pub fn rewind_to(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let truncated = CborError::Truncated { offset: self.pos };
        let n = usize::try_from(n).map_err(|_| truncated.clone())?;
        if n > self.remaining() {
            return Err(truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next byte, without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads one header. Rejects reserved values and indefinite lengths.
    pub fn header(&mut self) -> Result<Header, CborError> {
        let offset = self.pos;
        let initial = self.take(1)?[0];
        let major = initial >> 5;
        let info = initial & 0x1f;
        let value = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])),
            26 => {
                let b = self.take(4)?;
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            27 => {
                let b = self.take(8)?;
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            28..=30 => return Err(CborError::ReservedHeader { info, offset }),
            _ => return Err(CborError::IndefiniteLength { offset }),
        };
        Ok(Header {
            major,
            info,
            value,
            offset,
        })
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<Header, CborError> {
        let h = self.header()?;
        if h.major != major {
            return Err(CborError::UnexpectedType {
                expected,
                found: h.major,
                offset: h.offset,
            });
        }
        Ok(h)
    }

    /// Reads an unsigned integer.
    pub fn read_uint(&mut self) -> Result<u64, CborError> {
        Ok(self.expect(MAJOR_UINT, "an unsigned integer")?.value)
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, CborError> {
        let offset = self.pos;
        match self.take(1)?[0] {
            FALSE => Ok(false),
            TRUE => Ok(true),
            other => Err(CborError::UnexpectedType {
                expected: "a boolean",
                found: other >> 5,
                offset,
            }),
        }
    }

    /// Consumes a `null` if one is next; returns whether it did.
    pub fn read_null(&mut self) -> bool {
        if self.peek() == Some(NULL) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a text string's bytes without checking that they are UTF-8.
    pub fn read_text(&mut self) -> Result<&'a [u8], CborError> {
        let h = self.expect(MAJOR_TEXT, "a text string")?;
        self.take(h.value)
    }

    /// Reads the header of a map and returns its number of entries.
    pub fn read_map_len(&mut self) -> Result<u64, CborError> {
        Ok(self.expect(MAJOR_MAP, "a map")?.value)
    }

    /// Reads the header of an array and returns its number of elements.
    pub fn read_array_len(&mut self) -> Result<u64, CborError> {
        Ok(self.expect(MAJOR_ARRAY, "an array")?.value)
    }

    /// Reads an IPLD link (tag 42) and parses the CID in it.
    pub fn read_cid(&mut self) -> Result<Cid, CborError> {
        let offset = self.pos;
        let tag = self.expect(MAJOR_TAG, "a CID link (tag 42)")?;
        if tag.value != CID_TAG {
            return Err(CborError::InvalidCid {
                offset,
                reason: format!("tag {} instead of 42", tag.value),
            });
        }
        let h = self.expect(MAJOR_BYTES, "the bytes of a CID")?;
        let bytes = self.take(h.value)?;
        let Some((&0, cid_bytes)) = bytes.split_first() else {
            return Err(CborError::InvalidCid {
                offset,
                reason: "missing the 0x00 multibase prefix".into(),
            });
        };
        let cid = Cid::try_from(cid_bytes).map_err(|e| CborError::InvalidCid {
            offset,
            reason: e.to_string(),
        })?;
        if cid.to_bytes() != cid_bytes {
            return Err(CborError::InvalidCid {
                offset,
                reason: "CID bytes are not in canonical form".into(),
            });
        }
        Ok(cid)
    }

    /// Skips one whole item (with everything nested in it) and returns its raw bytes.
    pub fn skip_item(&mut self) -> Result<&'a [u8], CborError> {
        let start = self.pos;
        self.skip_nested(0)?;
        Ok(&self.buf[start..self.pos])
    }

    fn skip_nested(&mut self, depth: usize) -> Result<(), CborError> {
        if depth >= self.max_depth {
            return Err(CborError::TooDeep {
                max: self.max_depth,
            });
        }
        let h = self.header()?;
        match h.major {
            MAJOR_UINT | MAJOR_NEGINT => Ok(()),
            MAJOR_BYTES | MAJOR_TEXT => self.take(h.value).map(drop),
            // A length claim cannot make us loop more often than there are bytes left: every
            // element takes at least one byte, so a lie ends in `Truncated`.
            MAJOR_ARRAY => (0..h.value).try_for_each(|_| self.skip_nested(depth + 1)),
            MAJOR_MAP => (0..h.value).try_for_each(|_| {
                self.skip_nested(depth + 1)?;
                self.skip_nested(depth + 1)
            }),
            MAJOR_TAG => self.skip_nested(depth + 1),
            _ => match h.info {
                // false, true, null, undefined; then half, single and double floats.
                20..=23 | 25..=27 => Ok(()),
                _ => Err(CborError::UnsupportedSimple {
                    value: h.value,
                    offset: h.offset,
                }),
            },
        }
    }
}

/// Returns the length of the single CBOR item at the start of `buf`, or `Ok(None)` if `buf`
/// holds only the beginning of one.
///
/// This is what a stream reader needs: data-transfer messages are written back to back with no
/// length prefix, so the reader must find where each ends. Pair it with a cap on how many bytes
/// it buffers before giving up.
///
/// A reader whose buffer grows a piece at a time should keep an [`ItemScanner`] instead:
/// calling this on every piece reads the item's first bytes again each time.
pub fn item_len(buf: &[u8], max_depth: usize) -> Result<Option<usize>, CborError> {
    ItemScanner::new(max_depth).scan(buf)
}

/// Finds where the CBOR item at the start of a growing buffer ends, reading each byte once.
///
/// A stream reader appends what arrives and calls [`ItemScanner::scan`] again; the scanner
/// goes on from where it stopped, so an item of `n` bytes arriving in any number of pieces
/// costs `O(n)` in all ([`item_len`] on each piece would cost `O(n)` a piece: quadratic for a
/// peer that sends a large item a few bytes at a time). It checks what [`Reader::skip_item`]
/// checks (nesting depth, reserved and indefinite headers, simple values).
#[derive(Debug, Clone)]
pub struct ItemScanner {
    max_depth: usize,
    /// Where the next header starts.
    pos: usize,
    /// How many items each open container still holds, the innermost last; the first entry
    /// is the item itself.
    owed: Vec<u64>,
}

impl ItemScanner {
    /// A scanner for one item nested at most `max_depth` deep.
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth,
            pos: 0,
            owed: vec![1],
        }
    }

    /// Looks at `buf` (the bytes of the previous call, perhaps with more after them) from where
    /// the last call stopped. Returns the item's length once it is whole, `Ok(None)` while it
    /// is not. After a length, [`ItemScanner::reset`] before scanning the next item.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, CborError> {
        let mut r = Reader::with_max_depth(buf, self.max_depth);
        loop {
            let Some(owed) = self.owed.last_mut() else {
                return Ok(Some(self.pos));
            };
            if *owed == 0 {
                self.owed.pop();
                if self.owed.is_empty() {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            // The item read now is at depth `owed.len() - 1`, as in `skip_nested`.
            if self.owed.len() > self.max_depth {
                return Err(CborError::TooDeep {
                    max: self.max_depth,
                });
            }
            r.rewind_to(self.pos);
            let h = match r.header() {
                Err(CborError::Truncated { .. }) => return Ok(None),
                other => other?,
            };
            let inner = match h.major {
                MAJOR_UINT | MAJOR_NEGINT => 0,
                MAJOR_BYTES | MAJOR_TEXT => {
                    match r.take(h.value) {
                        Err(CborError::Truncated { .. }) => return Ok(None),
                        other => other?,
                    };
                    0
                }
                MAJOR_ARRAY => h.value,
                // A lie about the length only ever ends in "not whole yet", which the
                // caller's cap on what it buffers ends.
                MAJOR_MAP => h.value.saturating_mul(2),
                MAJOR_TAG => 1,
                _ => match h.info {
                    // false, true, null, undefined; then half, single and double floats.
                    20..=23 | 25..=27 => 0,
                    _ => {
                        return Err(CborError::UnsupportedSimple {
                            value: h.value,
                            offset: h.offset,
                        });
                    }
                },
            };
            // Counted only once whole: a header or string cut short is read again next time.
            self.pos = r.position();
            if let Some(owed) = self.owed.last_mut() {
                *owed -= 1;
            }
            if inner > 0 {
                self.owed.push(inner);
            }
        }
    }

    /// Starts over, for an item at the start of the buffer (once the caller has taken the
    /// last one out).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.owed.clear();
        self.owed.push(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_form() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (23, &[0x17]),
            (24, &[0x18, 24]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 0x01, 0x00]),
            (65_536, &[0x1a, 0, 1, 0, 0]),
            (
                u64::MAX,
                &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ];
        for (value, want) in cases {
            let mut out = Vec::new();
            write_header(&mut out, MAJOR_UINT, *value);
            assert_eq!(&out, want, "value {value}");
            assert_eq!(Reader::new(&out).read_uint().unwrap(), *value);
        }
    }

    #[test]
    fn non_utf8_text_round_trips() {
        let mut out = Vec::new();
        write_text(&mut out, &[0x00, 0xff, 0xfe]);
        assert_eq!(out, [0x63, 0x00, 0xff, 0xfe]);
        assert_eq!(Reader::new(&out).read_text().unwrap(), &[0x00, 0xff, 0xfe]);
    }

    #[test]
    fn item_len_finds_the_end_or_asks_for_more() {
        // {"a": [1, 2]} followed by the start of another item.
        let buf = [0xa1, 0x61, b'a', 0x82, 0x01, 0x02, 0xa1];
        assert_eq!(item_len(&buf, 8).unwrap(), Some(6));
        assert_eq!(item_len(&buf[..5], 8).unwrap(), None);
        assert_eq!(item_len(&[], 8).unwrap(), None);
    }

    #[test]
    fn rejects_indefinite_reserved_and_deep_items() {
        assert!(matches!(
            Reader::new(&[0x9f, 0xff]).skip_item(),
            Err(CborError::IndefiniteLength { offset: 0 })
        ));
        assert!(matches!(
            Reader::new(&[0x1c]).skip_item(),
            Err(CborError::ReservedHeader { info: 28, .. })
        ));
        let deep = [0x81u8; 10];
        assert_eq!(
            Reader::with_max_depth(&deep, 4).skip_item(),
            Err(CborError::TooDeep { max: 4 })
        );
    }

    #[test]
    fn huge_length_claims_fail_as_truncated() {
        // An array claiming 2^64-1 elements with none present.
        let buf = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&buf).skip_item(),
            Err(CborError::Truncated { .. })
        ));
        let text = [0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&text).read_text(),
            Err(CborError::Truncated { .. })
        ));
    }
}

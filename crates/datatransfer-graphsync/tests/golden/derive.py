#!/usr/bin/env python3
"""Derives the golden graphsync messages in messages.txt from a reading of go-graphsync
v0.13.1; shares no code with the Rust codecs. Run with plain python3.

2.0.0 (message/ipldbind/schema.ipldsch, message/v2/message.go):
- root {"gs2": GraphSyncMessage}; GraphSyncMessage {req, rsp, blk} with absent lists omitted;
- GraphSyncRequest {id: bytes(16), type: "n"|"c"|"u", pri: int (omitted when 0),
  root: link (omitted when undefined), sel: Any (omitted when nil), ext: {name: Any}
  (omitted when empty)};
- GraphSyncResponse {reqid: bytes(16), stat: int, meta: [[link, action]] (omitted when empty),
  ext (omitted when empty)};
- GraphSyncBlock [prefix, data], prefix = varints of CID version, codec, hash code, digest
  length (go-cid Prefix.Bytes);
- go-ipld-prime's dag-cbor encoder sorts every map's keys length-first, then bytewise.

1.0.0 (message/pb/message.proto, message/v1/message.go):
- proto3 fields in field-number order, defaults (0, false, empty) omitted;
- map<string, bytes> entries as embedded {1: key, 2: value}, an empty value omitted (gogo);
  entries written in key order here (Go writes them in map order, which is random; any
  order decodes the same);
- every response carries "graphsync/response-metadata": DAG-CBOR
  [{"link": link, "blockPresent": bool}] (keys canonical: link before blockPresent);
- extension values are their DAG-CBOR bytes; request ids are int32.
"""
import hashlib


def header(major, n):
    m = major << 5
    if n < 24:
        return bytes([m | n])
    if n < 1 << 8:
        return bytes([m | 24, n])
    if n < 1 << 16:
        return bytes([m | 25]) + n.to_bytes(2, "big")
    if n < 1 << 32:
        return bytes([m | 26]) + n.to_bytes(4, "big")
    return bytes([m | 27]) + n.to_bytes(8, "big")


def text(s):
    b = s.encode() if isinstance(s, str) else s
    return header(3, len(b)) + b


def cbytes(b):
    return header(2, len(b)) + b


def uint(n):
    return header(0, n)


def link(cid):
    return header(6, 42) + cbytes(b"\x00" + cid)


def cmap(entries):
    entries = sorted(entries, key=lambda kv: (len(kv[0]), kv[0].encode()))
    out = header(5, len(entries))
    for k, v in entries:
        out += text(k) + v
    return out


def carr(items):
    return header(4, len(items)) + b"".join(items)


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7f) | 0x80])
        n >>= 7
    return out + bytes([n])


def cid_v1(codec, data):
    return varint(1) + varint(codec) + b"\x12\x20" + hashlib.sha256(data).digest()


def cid_v0(data):
    return b"\x12\x20" + hashlib.sha256(data).digest()


def prefix_v1(codec):
    return varint(1) + varint(codec) + varint(0x12) + varint(32)


RAW, DAG_PB, DAG_CBOR = 0x55, 0x70, 0x71
ROOT = cid_v1(DAG_PB, b"golden")
SEL = cmap([("R", cmap([("l", cmap([("none", cmap([]))])), (":>", cmap([("a", cmap([(">", cmap([("@", cmap([]))]))]))]))]))])
ID1 = bytes(range(16))
ID2 = bytes(range(16, 32))
EXT_MAP = cmap([("a", uint(1))])                 # {"a": 1}
BLOCKS = [(RAW, b"hello"), (RAW, b"world")]
CID_A = cid_v1(RAW, b"hello")
CID_B = cid_v1(RAW, b"missing")


def v2_request(rid, typ, pri=0, root=None, sel=None, ext=None):
    e = [("id", cbytes(rid)), ("type", text(typ))]
    if pri:
        e.append(("pri", uint(pri)))
    if root is not None:
        e.append(("root", link(root)))
    if sel is not None:
        e.append(("sel", sel))
    if ext:
        e.append(("ext", cmap(ext)))
    return cmap(e)


def v2_response(rid, stat, meta=None, ext=None):
    e = [("reqid", cbytes(rid)), ("stat", uint(stat))]
    if meta:
        e.append(("meta", carr([carr([link(c), text(a)]) for c, a in meta])))
    if ext:
        e.append(("ext", cmap(ext)))
    return cmap(e)


def v2_message(req=None, rsp=None, blk=None):
    e = []
    if req:
        e.append(("req", carr(req)))
    if rsp:
        e.append(("rsp", carr(rsp)))
    if blk:
        e.append(("blk", carr([carr([cbytes(p), cbytes(d)]) for p, d in blk])))
    return cmap([("gs2", cmap(e))])


def pb_field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def pb_int(num, v):
    return pb_field(num, 0, v) if v else b""


def pb_bytes(num, b):
    return pb_field(num, 2, b) if b else b""


def pb_map(num, entries):
    out = b""
    for k, v in sorted(entries):
        entry = pb_field(1, 2, k.encode()) + (pb_field(2, 2, v) if v else b"")
        out += pb_field(num, 2, entry)
    return out


def v1_metadata(meta):
    return carr([cmap([("link", link(c)), ("blockPresent", b"\xf5" if a == "p" else b"\xf4")]) for c, a in meta])


def v1_request(rid, pri=0, root=b"", sel=b"", ext=(), cancel=False, update=False):
    return (pb_int(1, rid) + pb_bytes(2, root) + pb_bytes(3, sel) + pb_map(4, ext)
            + pb_int(5, pri) + pb_int(6, 1 if cancel else 0) + pb_int(7, 1 if update else 0))


def v1_response(rid, stat, meta=(), ext=()):
    ext = list(ext) + [("graphsync/response-metadata", v1_metadata(meta))]
    return pb_int(1, rid) + pb_int(2, stat) + pb_map(3, ext)


def v1_message(req=(), rsp=(), blk=()):
    return (b"".join(pb_field(2, 2, r) for r in req) + b"".join(pb_field(3, 2, r) for r in rsp)
            + b"".join(pb_field(4, 2, pb_bytes(1, p) + pb_bytes(2, d)) for p, d in blk))


V2 = [
    ("request_new", v2_message(req=[v2_request(ID1, "n", pri=7, root=ROOT, sel=SEL,
                                               ext=[("x/ext", EXT_MAP), ("graphsync/do-not-send-first-blocks", uint(5))])])),
    ("request_cancel", v2_message(req=[v2_request(ID1, "c")])),
    ("request_update", v2_message(req=[v2_request(ID2, "u", ext=[("x/ext", b"\xf5")])])),
    ("response_partial", v2_message(rsp=[v2_response(ID1, 14, meta=[(CID_A, "p"), (CID_B, "m")], ext=[("x/ext", text("hi"))])])),
    ("response_completed", v2_message(rsp=[v2_response(ID2, 20)])),
    ("blocks", v2_message(blk=[(prefix_v1(c), d) for c, d in BLOCKS] + [(b"\x00\x70\x12\x20", b"")])),
    ("everything", v2_message(req=[v2_request(ID2, "c")], rsp=[v2_response(ID1, 34)], blk=[(prefix_v1(RAW), b"hello")])),
]
V1 = [
    ("request_new", v1_message(req=[v1_request(3, pri=7, root=ROOT, sel=SEL,
                                                ext=[("x/ext", EXT_MAP), ("graphsync/do-not-send-first-blocks", uint(5))])])),
    ("request_cancel", v1_message(req=[v1_request(3, cancel=True)])),
    ("request_update", v1_message(req=[v1_request(4, update=True, ext=[("x/ext", b"\xf5")])])),
    ("response_partial", v1_message(rsp=[v1_response(3, 14, meta=[(CID_A, "p"), (CID_B, "m")], ext=[("x/ext", text("hi"))])])),
    ("response_completed", v1_message(rsp=[v1_response(4, 20)])),
    ("blocks", v1_message(blk=[(prefix_v1(c), d) for c, d in BLOCKS] + [(b"\x00\x70\x12\x20", b"")])),
]

if __name__ == "__main__":
    print("# Golden graphsync message bodies (no length prefix); generated by derive.py.")
    print("# Format: <name> <version> <hex>. Shared inputs:")
    print(f"# root {ROOT.hex()}")
    print(f"# selector {SEL.hex()}")
    print(f"# ext_map {EXT_MAP.hex()}")
    print(f"# cid_a {CID_A.hex()}")
    print(f"# cid_b {CID_B.hex()}")
    for name, b in V2:
        print(f"{name} 2.0.0 {b.hex()}")
    for name, b in V1:
        print(f"{name} 1.0.0 {b.hex()}")

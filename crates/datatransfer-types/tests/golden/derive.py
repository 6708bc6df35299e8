#!/usr/bin/env python3
"""Derives the golden vectors in messages.txt from a reading of the Go encoders.

This script is the record of how each vector was built; it shares no code with the Rust
codec. Run it (python3, with the `cryptography` package for the Ed25519 keys) to regenerate
messages.txt.

What it mirrors:
- /fil/datatransfer/1.1.0: go-data-transfer v1.15.1 message/message1_1/*_cbor_gen.go.
  cbor-gen writes a map header, then each field as a text key followed by its value, in the
  struct's declaration order:
    TransferMessage1_1  IsRq, Request, Response                     (nil pointer -> null)
    TransferRequest1_1  BCid, Type, Paus, Part, Pull, Stor, Vouch, VTyp, XferID, RestartChannel
    TransferResponse1_1 Type, Acpt, Paus, XferID, VRes, VTyp
  BCid: nil -> null, else tag 42 + bytes(0x00 ++ cid). Stor/Vouch/VRes are *cbg.Deferred:
  nil -> null, else the raw bytes. ChannelID (types_cbor_gen.go) is a 3-array of
  [text(initiator bytes), text(responder bytes), uint id]; the zero value is ["", "", 0].
- /fil/datatransfer/1.2.0: go-data-transfer v1.15.1 message/message1_1prime (bindnode over
  schema.ipldsch) encoded with go-ipld-prime v0.16.0 dagcbor.Encode, whose default
  MapSortMode_RFC7049 sorts every map's keys by length, then bytewise. Same values otherwise.
- Message constructors: message/message1_1prime/message.go (NewRequest, UpdateRequest, ...):
  which fields each one sets; all others keep Go's zero values (false, 0, "", nil).
- Integers and lengths use the shortest CBOR header (cbor-gen WriteMajorTypeHeader, refmt).
"""
import hashlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization


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


def uint(n):
    return header(0, n)


def text(b):
    if isinstance(b, str):
        b = b.encode()
    return header(3, len(b)) + b


def boolean(v):
    return b"\xf5" if v else b"\xf4"


NULL = b"\xf6"


def cid_link(cid_bytes):
    return header(6, 42) + header(2, len(cid_bytes) + 1) + b"\x00" + cid_bytes


def cbor_map(fields, sort):
    """fields: list of (key, encoded value) in Go declaration order."""
    if sort:
        fields = sorted(fields, key=lambda kv: (len(kv[0]), kv[0].encode()))
    out = header(5, len(fields))
    for k, v in fields:
        out += text(k) + v
    return out


def channel_id(ch):
    if ch is None:
        return header(4, 3) + text(b"") + text(b"") + uint(0)
    i, r, n = ch
    return header(4, 3) + text(i) + text(r) + uint(n)


def request(sort, typ, xfer, bcid=None, paus=False, part=False, pull=False, stor=None,
            vouch=None, vtyp="", restart=None):
    return cbor_map([
        ("BCid", NULL if bcid is None else cid_link(bcid)),
        ("Type", uint(typ)),
        ("Paus", boolean(paus)),
        ("Part", boolean(part)),
        ("Pull", boolean(pull)),
        ("Stor", NULL if stor is None else stor),
        ("Vouch", NULL if vouch is None else vouch),
        ("VTyp", text(vtyp)),
        ("XferID", uint(xfer)),
        ("RestartChannel", channel_id(restart)),
    ], sort)


def response(sort, typ, xfer, acpt=False, paus=False, vres=None, vtyp=""):
    return cbor_map([
        ("Type", uint(typ)),
        ("Acpt", boolean(acpt)),
        ("Paus", boolean(paus)),
        ("XferID", uint(xfer)),
        ("VRes", NULL if vres is None else vres),
        ("VTyp", text(vtyp)),
    ], sort)


def message(sort, req=None, resp=None):
    return cbor_map([
        ("IsRq", boolean(req is not None)),
        ("Request", NULL if req is None else req),
        ("Response", NULL if resp is None else resp),
    ], sort)


def ed25519_peer_id(seed_byte):
    """Peer id of the Ed25519 key whose 32-byte seed is `seed_byte` repeated: an identity
    multihash (0x00, len 0x24) of the protobuf PublicKey {Type: Ed25519 (1), Data: key}."""
    key = Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32).public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    proto = b"\x08\x01\x12\x20" + raw
    return b"\x00" + bytes([len(proto)]) + proto


def sha256_peer_id(data):
    """A sha2-256 multihash peer id, as RSA keys get (the 'Qm...' form)."""
    return b"\x12\x20" + hashlib.sha256(data).digest()


# Fixed inputs shared with the Rust test (tests/golden.rs builds the same values).
BASE_CID = bytes.fromhex(
    # CIDv1, dag-pb (0x70), sha2-256 of b"golden"
    "01" "70" "12" "20") + hashlib.sha256(b"golden").digest()
# The "all" selector: ExploreRecursive{limit: none, sequence: ExploreAll{next: Edge}},
# in DAG-JSON {"R": {"l": {"none": {}}, ":>": {"a": {">": {"@": {}}}}}}, canonical order.
EMPTY_MAP = header(5, 0)
SELECTOR = cbor_map([("R", cbor_map([
    ("l", cbor_map([("none", EMPTY_MAP)], True)),
    (":>", cbor_map([("a", cbor_map([(">", cbor_map([("@", EMPTY_MAP)], True))], True))], True)),
], True))], True)
VOUCHER = cbor_map([("Data", text("hello"))], True)        # {"Data": "hello"}
RESULT = cbor_map([("Price", uint(5)), ("Msg", text("ok"))], True)  # {"Msg": "ok", "Price": 5}
VTYPE = "FakeDTType"
RTYPE = "FakeDTResult"
PEER_A = ed25519_peer_id(1)
PEER_B = sha256_peer_id(b"responder")

CASES = [
    ("new_pull_request", lambda s: message(s, req=request(
        s, 0, 1, bcid=BASE_CID, pull=True, stor=SELECTOR, vouch=VOUCHER, vtyp=VTYPE))),
    ("new_push_request", lambda s: message(s, req=request(
        s, 0, 2, bcid=BASE_CID, pull=False, stor=SELECTOR, vouch=VOUCHER, vtyp=VTYPE))),
    ("restart_request", lambda s: message(s, req=request(
        s, 6, 3, bcid=BASE_CID, pull=True, stor=SELECTOR, vouch=VOUCHER, vtyp=VTYPE))),
    ("update_request_pause", lambda s: message(s, req=request(s, 1, 4, paus=True))),
    ("cancel_request", lambda s: message(s, req=request(s, 2, 5))),
    ("voucher_request", lambda s: message(s, req=request(
        s, 4, 6, vouch=VOUCHER, vtyp=VTYPE))),
    ("restart_existing_channel_request", lambda s: message(s, req=request(
        s, 7, 0, restart=(PEER_A, PEER_B, 1234567)))),
    ("new_response_accepted", lambda s: message(s, resp=response(
        s, 0, 1, acpt=True, vres=RESULT, vtyp=RTYPE))),
    ("new_response_rejected_no_result", lambda s: message(s, resp=response(s, 0, 1))),
    ("update_response_paused", lambda s: message(s, resp=response(s, 1, 7, paus=True))),
    ("cancel_response", lambda s: message(s, resp=response(s, 2, 8))),
    ("complete_response_finalizing", lambda s: message(s, resp=response(
        s, 3, 9, acpt=True, paus=True, vres=RESULT, vtyp=RTYPE))),
    ("voucher_result_response", lambda s: message(s, resp=response(
        s, 5, 300, acpt=True, paus=False, vres=RESULT, vtyp=RTYPE))),
    ("restart_response", lambda s: message(s, resp=response(
        s, 6, 70000, acpt=True, vres=RESULT, vtyp=RTYPE))),
]

if __name__ == "__main__":
    print("# Golden data-transfer messages; generated by derive.py (see its docstring).")
    print("# Format: <name> <version> <hex>. Shared inputs:")
    print(f"# base_cid {BASE_CID.hex()}")
    print(f"# selector {SELECTOR.hex()}")
    print(f"# voucher {VOUCHER.hex()}")
    print(f"# result {RESULT.hex()}")
    print(f"# peer_a {PEER_A.hex()}")
    print(f"# peer_b {PEER_B.hex()}")
    for name, build in CASES:
        print(f"{name} 1.1.0 {build(False).hex()}")
        print(f"{name} 1.2.0 {build(True).hex()}")

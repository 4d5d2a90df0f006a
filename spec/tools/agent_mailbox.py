#!/usr/bin/env python3
"""Reference vectors for mailboxes (spec/mailbox.md): mailbox keys, access signatures, requests on
the wire, and sealed boxes made by PyNaCl (libsodium's crypto_box_seal from another binding).

Written from spec/mailbox.md and spec/identity.md, sharing no code with the Swift implementation.
Dependencies: Python 3.11 standard library, `cryptography` (Ed25519) and PyNaCl (sealed boxes).

Usage:
    python3 spec/tools/agent_mailbox.py --write [Tests/Vectors/mailbox.json]
    python3 spec/tools/agent_mailbox.py --check [Tests/Vectors/mailbox.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.public import PrivateKey as CurvePrivateKey, PublicKey as CurvePublicKey, SealedBox
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519

ACCESS_CONTEXT = b"agent-mailbox-access:v1\n"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Vectors", "mailbox.json")


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mailbox_key(name: str) -> bytes:
    """§1: SHA-256("/agent/mailbox/" ‖ canonical name)."""
    return hashlib.sha256(b"/agent/mailbox/" + name.encode("ascii")).digest()


def public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_id(seed: bytes) -> bytes:
    """identity.md §2: identity multihash of the libp2p public-key protobuf of an Ed25519 key."""
    protobuf = b"\x08\x01\x12\x20" + public_key(seed)
    return b"\x00" + uvarint(len(protobuf)) + protobuf


def access_bytes(op: str, name: str, replica: bytes, timestamp: int, ids: list[bytes]) -> bytes:
    """§4: the bytes an access signature covers."""
    out = bytearray(ACCESS_CONTEXT)
    for field in (op.encode("ascii"), name.encode("ascii"), replica):
        out += uvarint(len(field)) + field
    out += struct.pack(">Q", timestamp)
    out += mailbox_key(name)
    out += hashlib.sha256(b"".join(ids)).digest()
    return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    return b"" if value == 0 else uvarint(number << 3) + uvarint(value)


def message(id_: bytes, sealed: bytes, expires: int) -> bytes:
    return field_bytes(1, id_) + field_bytes(2, sealed) + field_varint(3, expires)


def store_request(mailbox: bytes, messages: list[bytes], recipient_peer: bytes | None) -> bytes:
    """§3: MailboxRequest{type STORE = 0 (not written), mailbox, messages, recipient_peer}."""
    out = field_bytes(2, mailbox)
    for m in messages:
        out += field_bytes(3, m)
    if recipient_peer:
        out += field_bytes(7, recipient_peer)
    return out


def fetch_request(mailbox: bytes, name: str, timestamp: int, signature: bytes, cursor: int) -> bytes:
    access = field_bytes(1, name.encode("ascii")) + field_varint(2, timestamp) + field_bytes(3, signature)
    return field_varint(1, 1) + field_bytes(2, mailbox) + field_bytes(5, access) + field_varint(6, cursor)


def build() -> dict:
    recipient_seed = bytes(range(32))
    replica_seed = bytes(range(32, 64))
    recipient = Ed25519PrivateKey.from_private_bytes(recipient_seed)
    replica = peer_id(replica_seed)
    names = ["bob.agent", "alice.agent", "k51qzi5uqu5dgutdk6i1ynyzgkqngpha5xpgia3a5qqp4jsh0u4csozksxv2ux.agent"]
    keys = [{"name": n, "mailbox_key": mailbox_key(n).hex()} for n in names]

    ids = [bytes([i]) * 16 for i in (1, 2, 3)]
    accesses = []
    for op, op_ids in (("fetch", []), ("ack", ids)):
        signed = access_bytes(op, "bob.agent", replica, 1_800_000_000, op_ids)
        accesses.append({
            "op": op, "name": "bob.agent", "replica_peer_id": replica.hex(), "timestamp": 1_800_000_000,
            "ids": [i.hex() for i in op_ids], "signed_bytes": signed.hex(),
            "signature": recipient.sign(signed).hex(), "recipient_seed": recipient_seed.hex(),
        })

    # Sealed boxes made here, opened by the Swift implementation with the recipient's Ed25519 key.
    curve_public = CurvePublicKey(crypto_sign_ed25519_pk_to_curve25519(public_key(recipient_seed)))
    boxes = []
    for plaintext in (b"", b"hello mailbox", bytes(range(256)) * 4):
        boxes.append({"plaintext": plaintext.hex(), "sealed": SealedBox(curve_public).encrypt(plaintext).hex()})

    mailbox = mailbox_key("bob.agent")
    sealed = bytes.fromhex(boxes[1]["sealed"])
    requests = [
        {"kind": "store", "bytes": store_request(mailbox, [message(ids[0], sealed, 1_800_003_600)], replica).hex(),
         "mailbox": mailbox.hex(), "ids": [ids[0].hex()], "expires": [1_800_003_600], "recipient_peer": replica.hex()},
        {"kind": "fetch", "bytes": fetch_request(mailbox, "bob.agent", 1_800_000_000,
                                                 bytes.fromhex(accesses[0]["signature"]), 7).hex(),
         "mailbox": mailbox.hex(), "cursor": 7, "name": "bob.agent"},
    ]
    return {
        "source": "spec/tools/agent_mailbox.py (spec/mailbox.md §1, §3, §4; sealed boxes by PyNaCl)",
        "recipient_seed": recipient_seed.hex(),
        "mailbox_keys": keys, "access": accesses, "sealed_boxes": boxes, "requests": requests,
    }


def check(vectors: dict) -> None:
    """Recomputes everything deterministic and opens every box with the recipient's key."""
    fresh = build()
    for section in ("mailbox_keys", "access"):
        assert vectors[section] == fresh[section], f"{section} differs"
    seed = bytes.fromhex(vectors["recipient_seed"])
    secret = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    curve_secret = CurvePrivateKey(crypto_sign_ed25519_sk_to_curve25519(secret + public_key(seed)))
    for box in vectors["sealed_boxes"]:
        assert SealedBox(curve_secret).decrypt(bytes.fromhex(box["sealed"])) == bytes.fromhex(box["plaintext"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", nargs="?", const=DEFAULT_PATH)
    parser.add_argument("--check", nargs="?", const=DEFAULT_PATH)
    args = parser.parse_args()
    if args.write:
        vectors = build()
        check(vectors)
        with open(args.write, "w") as f:
            json.dump(vectors, f, indent=1)
            f.write("\n")
    elif args.check:
        with open(args.check) as f:
            check(json.load(f))
        print("ok")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()

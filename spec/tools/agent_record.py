#!/usr/bin/env python3
"""Independent reference implementation of `.agent` names and records (spec/records.md, v1).

Written from spec/records.md alone (plus public multiformats / libp2p knowledge for multiaddr,
unsigned varints, base58btc, base36 and peer ids), without looking at the Swift implementation.

Dependencies: Python 3.11 standard library and the `cryptography` package (Ed25519 signing and
verification). SHA-256 comes from hashlib.

Usage:
    python3 spec/tools/agent_record.py --write Tests/Vectors/records.json
    python3 spec/tools/agent_record.py --check Tests/Vectors/records.json

Choices this file makes where spec/records.md leaves room are marked "GUESS:".
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# --------------------------------------------------------------------------------------------
# Constants (§3, §4, §7)
# --------------------------------------------------------------------------------------------

VERSION = 1
KEY_TYPE_ED25519 = 1
MAX_RECORD_SIZE = 8192
MAX_NAME_LEN = 253
MAX_LABEL_LEN = 63
MAX_ADDRESSES = 32
MAX_ADDRESS_LEN = 1024
MAX_PROTOCOLS = 64
MAX_PROTOCOL_LEN = 256
TTL_MIN = 60
TTL_MAX = 604800
MAX_AGE = 604800
CLOCK_SKEW = 300
SIG_LEN = 64
KEY_LEN = 32
RECORD_CONTEXT = b"agent-record:v1\n"
ROTATION_CONTEXT = b"agent-record-rotation:v1\n"
SUFFIX = ".agent"
RECORD_KEY_PREFIX = b"/agent/"
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1

# Rejection kinds (§4 table). Order of the tuple = order of the rules.
KINDS = ("oversized", "malformed", "invalid_name", "bad_signature", "bad_rotation",
         "self_certifying_mismatch", "ttl_out_of_range", "from_the_future", "too_old", "expired")


class Reject(Exception):
    """A record is rejected with one of KINDS."""

    def __init__(self, kind: str, message: str):
        assert kind in KINDS, kind
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class InvalidName(ValueError):
    pass


class InvalidMultiaddr(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Unsigned varint (multiformats): LEB128, at most 9 bytes, minimal encoding required
# --------------------------------------------------------------------------------------------

def uvarint(n: int) -> bytes:
    if n < 0 or n >= 1 << 63:
        raise ValueError("uvarint out of range (max 2^63-1, 9 bytes)")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Returns (value, new_pos). Raises ValueError on truncation, > 9 bytes or non-minimal form."""
    value = 0
    for i in range(9):
        if pos + i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if b == 0 and i > 0:
                raise ValueError("non-minimal varint")
            return value, pos + i + 1
    raise ValueError("varint longer than 9 bytes")


# --------------------------------------------------------------------------------------------
# base58btc, base36 (lower case), peer ids
# --------------------------------------------------------------------------------------------

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base_x_encode(data: bytes, alphabet: str) -> str:
    base = len(alphabet)
    n = int.from_bytes(data, "big")
    digits = ""
    while n:
        n, r = divmod(n, base)
        digits = alphabet[r] + digits
    zeros = len(data) - len(data.lstrip(b"\0"))
    return alphabet[0] * zeros + digits


def _base_x_decode(text: str, alphabet: str) -> bytes:
    base = len(alphabet)
    n = 0
    for ch in text:
        idx = alphabet.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base{base} character {ch!r}")
        n = n * base + idx
    zeros = len(text) - len(text.lstrip(alphabet[0]))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b58encode(data: bytes) -> str:
    return _base_x_encode(data, B58)


def b58decode(text: str) -> bytes:
    return _base_x_decode(text, B58)


def b36encode(data: bytes) -> str:
    return _base_x_encode(data, B36)


def b36decode(text: str) -> bytes:
    return _base_x_decode(text, B36)


ED25519_PROTOBUF_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])  # PublicKey{Type: Ed25519, Data: 32 bytes}


def peer_id_multihash(public_key: bytes) -> bytes:
    """libp2p peer id of an Ed25519 key: identity multihash of the PublicKey protobuf."""
    assert len(public_key) == KEY_LEN
    pb = ED25519_PROTOBUF_PREFIX + public_key
    return b"\x00" + uvarint(len(pb)) + pb


def peer_id_base58(public_key: bytes) -> str:
    return b58encode(peer_id_multihash(public_key))


def peer_id_base36(public_key: bytes) -> str:
    """CIDv1 (version 1, codec libp2p-key 0x72) in multibase base36 lower case ('k' prefix)."""
    return "k" + b36encode(uvarint(1) + uvarint(0x72) + peer_id_multihash(public_key))


def validate_multihash(mh: bytes) -> None:
    """Accepts the two multihashes libp2p peer ids use: identity (0x00) and sha2-256 (0x12, 32).
    GUESS: any other hash function code inside /p2p is rejected."""
    try:
        code, pos = read_uvarint(mh, 0)
        length, pos = read_uvarint(mh, pos)
    except ValueError as e:
        raise InvalidMultiaddr(f"p2p multihash: {e}")
    if len(mh) - pos != length:
        raise InvalidMultiaddr("p2p multihash: digest length does not match")
    if code == 0x00:
        if length == 0:
            raise InvalidMultiaddr("p2p multihash: empty identity digest")
    elif code == 0x12:
        if length != 32:
            raise InvalidMultiaddr("p2p multihash: sha2-256 digest is not 32 bytes")
    else:
        raise InvalidMultiaddr(f"p2p multihash: unsupported hash code {code:#x}")


# --------------------------------------------------------------------------------------------
# Multiaddr (text -> binary for the protocols agentd knows; binary validation)
# --------------------------------------------------------------------------------------------

# name -> (code, value kind)
MA_PROTOCOLS = {
    "ip4": (4, "ip4"),
    "tcp": (6, "port"),
    "udp": (273, "port"),
    "dns": (53, "dns"),
    "dns4": (54, "dns"),
    "dns6": (55, "dns"),
    "ip6": (41, "ip6"),
    "quic-v1": (461, "none"),
    "p2p": (421, "p2p"),
    "p2p-circuit": (290, "none"),
}
MA_BY_CODE = {code: (name, kind) for name, (code, kind) in MA_PROTOCOLS.items()}


def multiaddr_to_bytes(text: str) -> bytes:
    if not text.startswith("/"):
        raise InvalidMultiaddr("must start with '/'")
    parts = text.split("/")[1:]
    if parts == [""]:
        raise InvalidMultiaddr("empty multiaddr")
    out = bytearray()
    i = 0
    while i < len(parts):
        name = parts[i]
        i += 1
        if name not in MA_PROTOCOLS:
            raise InvalidMultiaddr(f"unknown protocol {name!r}")
        code, kind = MA_PROTOCOLS[name]
        out += uvarint(code)
        if kind == "none":
            continue
        if i >= len(parts):
            raise InvalidMultiaddr(f"{name}: missing value")
        value = parts[i]
        i += 1
        if kind == "ip4":
            try:
                out += ipaddress.IPv4Address(value).packed
            except ValueError as e:
                raise InvalidMultiaddr(f"ip4: {e}")
        elif kind == "ip6":
            if "%" in value:
                raise InvalidMultiaddr("ip6: zone not allowed")
            try:
                out += ipaddress.IPv6Address(value).packed
            except ValueError as e:
                raise InvalidMultiaddr(f"ip6: {e}")
        elif kind == "port":
            if not value.isascii() or not value.isdigit() or int(value) > 65535:
                raise InvalidMultiaddr(f"{name}: bad port {value!r}")
            out += int(value).to_bytes(2, "big")
        elif kind == "dns":
            raw = value.encode("utf-8")
            if not raw:
                raise InvalidMultiaddr(f"{name}: empty name")
            out += uvarint(len(raw)) + raw
        elif kind == "p2p":
            try:
                mh = b58decode(value)
            except ValueError as e:
                raise InvalidMultiaddr(f"p2p: {e}")
            validate_multihash(mh)
            out += uvarint(len(mh)) + mh
    return bytes(out)


def validate_multiaddr_bytes(buf: bytes) -> None:
    """Raises InvalidMultiaddr unless `buf` is a binary multiaddr of known protocols."""
    if not buf:
        raise InvalidMultiaddr("empty multiaddr")
    pos = 0
    while pos < len(buf):
        try:
            code, pos = read_uvarint(buf, pos)
        except ValueError as e:
            raise InvalidMultiaddr(f"protocol code: {e}")
        if code not in MA_BY_CODE:
            raise InvalidMultiaddr(f"unknown protocol code {code}")
        name, kind = MA_BY_CODE[code]
        fixed = {"ip4": 4, "ip6": 16, "port": 2, "none": 0}.get(kind)
        if fixed is not None:
            if len(buf) - pos < fixed:
                raise InvalidMultiaddr(f"{name}: truncated value")
            pos += fixed
            continue
        try:
            length, pos = read_uvarint(buf, pos)
        except ValueError as e:
            raise InvalidMultiaddr(f"{name}: length: {e}")
        if length > len(buf) - pos:
            raise InvalidMultiaddr(f"{name}: length exceeds remaining bytes")
        value = buf[pos:pos + length]
        pos += length
        if kind == "dns":
            # GUESS: a dns value must be non-empty UTF-8 without '/' (what the text form can carry);
            # no DNS syntax (label length, characters) is enforced.
            if not value:
                raise InvalidMultiaddr(f"{name}: empty name")
            try:
                s = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidMultiaddr(f"{name}: not UTF-8")
            if "/" in s:
                raise InvalidMultiaddr(f"{name}: contains '/'")
        elif kind == "p2p":
            validate_multihash(value)


# --------------------------------------------------------------------------------------------
# Ed25519 point validation (libsodium crypto_core_ed25519_is_valid_point semantics):
# canonical encoding (y < p), decodes to a curve point, not of small order, in the prime-order
# subgroup. Pure Python; only used on 32-byte public keys, so speed does not matter.
# --------------------------------------------------------------------------------------------

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decompress(s: bytes):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little") & ((1 << 255) - 1)
    sign = s[31] >> 7
    if y >= _P:
        return None  # non-canonical encoding (libsodium ge25519_is_canonical)
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (_P + 3) // 8, _P)
        if (x * x - x2) % _P:
            x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P:
            return None  # not on the curve
        if (x & 1) != sign:
            x = _P - x
    return (x, y, 1, x * y % _P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(k: int, p):
    q = (0, 1, 1, 0)
    while k:
        if k & 1:
            q = _add(q, p)
        p = _add(p, p)
        k >>= 1
    return q


def _is_identity(p) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def is_valid_ed25519_point(key: bytes) -> bool:
    """True iff `key` is the canonical encoding of a point of prime order L."""
    pt = _decompress(key)
    if pt is None or _is_identity(pt):
        return False
    # [L]P == O and P != O  <=>  P has order exactly L (L is prime); this also excludes every
    # small-order point and every mixed-order point (torsion component).
    return _is_identity(_mul(_L, pt))


# --------------------------------------------------------------------------------------------
# §1 Names
# --------------------------------------------------------------------------------------------

_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def check_canonical_name(name: str) -> None:
    """Raises InvalidName unless `name` is a canonical name (lower case, with the suffix)."""
    if not name.isascii():
        raise InvalidName("name is not ASCII")
    if len(name) > MAX_NAME_LEN:
        raise InvalidName(f"name longer than {MAX_NAME_LEN} characters")
    if not name.endswith(SUFFIX):
        raise InvalidName("name does not end with .agent")
    labels = name[: -len(SUFFIX)].split(".")
    for label in labels:
        if not label:
            raise InvalidName("empty label")
        if len(label) > MAX_LABEL_LEN:
            raise InvalidName(f"label longer than {MAX_LABEL_LEN} characters")
        if not set(label) <= _LABEL_CHARS:
            raise InvalidName(f"label {label!r} has characters outside a-z 0-9 -")
        if label[0] == "-" or label[-1] == "-":
            raise InvalidName(f"label {label!r} starts or ends with '-'")


def normalise_name(text: str) -> str:
    """Tool input -> canonical name. Case-insensitive; `.agent` suffix optional.

    GUESS: only ASCII input is accepted (so that e.g. U+212A KELVIN SIGN, which Unicode lower-cases
    to 'k', is rejected rather than folded). GUESS: the suffix test is made after lower-casing and
    needs the dot, so 'agent' -> 'agent.agent' and 'alice.agent.' (trailing dot) is invalid."""
    if not text.isascii():
        raise InvalidName("name is not ASCII")
    lowered = text.lower()
    if not lowered.endswith(SUFFIX):
        lowered += SUFFIX
    check_canonical_name(lowered)
    return lowered


def self_certifying_key(canonical_name: str) -> Optional[bytes]:
    """If the name is self-certifying, the Ed25519 key its peer id names; else None.

    Self-certifying: exactly one label before '.agent', starting with 'k', whose remaining
    characters decode as base36 to a CIDv1 (varint 1) with codec libp2p-key (varint 0x72) holding
    an identity multihash (0x00, varint 36) of the protobuf 08 01 12 20 <32-byte Ed25519 key>,
    with nothing after it. GUESS: a label that decodes to any other libp2p peer id (sha2-256
    multihash, or a non-Ed25519 key) is treated as an ordinary name."""
    labels = canonical_name[: -len(SUFFIX)].split(".")
    if len(labels) != 1 or not labels[0].startswith("k"):
        return None
    try:
        raw = b36decode(labels[0][1:])
    except ValueError:
        return None
    prefix = uvarint(1) + uvarint(0x72) + b"\x00" + uvarint(36) + ED25519_PROTOBUF_PREFIX
    if len(raw) != len(prefix) + KEY_LEN or not raw.startswith(prefix):
        return None
    return raw[len(prefix):]


# --------------------------------------------------------------------------------------------
# §2 DHT key
# --------------------------------------------------------------------------------------------

def record_key(canonical_name: str) -> bytes:
    return RECORD_KEY_PREFIX + canonical_name.encode("ascii")


def dht_key(canonical_name: str) -> bytes:
    return hashlib.sha256(record_key(canonical_name)).digest()


# --------------------------------------------------------------------------------------------
# §3 Wire format
# --------------------------------------------------------------------------------------------

@dataclass
class Record:
    name: str
    key: bytes
    seq: int
    timestamp: int
    ttl: int
    addresses: list[bytes] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    rotation: Optional[tuple[bytes, bytes]] = None  # (previous_key, endorsement)
    signature: bytes = b""
    body: bytes = b""

    @property
    def raw(self) -> bytes:
        return self.body + self.signature


def rotation_statement(canonical_name: str, new_key: bytes) -> bytes:
    name = canonical_name.encode("ascii")
    return ROTATION_CONTEXT + uvarint(len(name)) + name + new_key


def body_segments(name: str, key: bytes, seq: int, timestamp: int, ttl: int,
                  addresses: list[bytes], protocols: list[str],
                  rotation: Optional[tuple[bytes, bytes]]) -> list[tuple[str, bytes]]:
    """The body as ordered (field, bytes) pieces; tests splice these to build bad records.
    No limits are checked here (that is encode_body's job)."""
    nb = name.encode("utf-8")
    segs = [
        ("version", bytes([VERSION])),
        ("name_len", uvarint(len(nb))),
        ("name", nb),
        ("key_type", bytes([KEY_TYPE_ED25519])),
        ("key", key),
        ("seq", seq.to_bytes(8, "big")),
        ("timestamp", timestamp.to_bytes(8, "big")),
        ("ttl", ttl.to_bytes(4, "big")),
        ("address_count", uvarint(len(addresses))),
    ]
    for i, a in enumerate(addresses):
        segs += [(f"address_len{i}", uvarint(len(a))), (f"address{i}", a)]
    segs.append(("protocol_count", uvarint(len(protocols))))
    for i, p in enumerate(protocols):
        pb = p.encode("utf-8", "surrogatepass")
        segs += [(f"protocol_len{i}", uvarint(len(pb))), (f"protocol{i}", pb)]
    if rotation is None:
        segs.append(("rotation", b"\x00"))
    else:
        segs.append(("rotation", b"\x01" + rotation[0] + rotation[1]))
    return segs


def check_protocol_id(raw: bytes) -> str:
    if not 1 <= len(raw) <= MAX_PROTOCOL_LEN:
        raise ValueError("protocol id length out of range")
    s = raw.decode("utf-8")  # strict: rejects overlong forms, surrogates, > U+10FFFF
    for ch in s:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            # GUESS: only C0 controls and DEL are excluded, as written; C1 (U+0080..U+009F) pass.
            raise ValueError("control character in protocol id")
    return s


def encode_body(rec: Record) -> bytes:
    """Canonical body of a record; enforces every §3 limit (raises ValueError)."""
    check_canonical_name(rec.name)
    if len(rec.key) != KEY_LEN or not is_valid_ed25519_point(rec.key):
        raise ValueError("key is not a valid Ed25519 point of prime order")
    if not (0 <= rec.seq <= U64_MAX and 0 <= rec.timestamp <= U64_MAX and 0 <= rec.ttl <= U32_MAX):
        raise ValueError("integer out of range")
    if len(rec.addresses) > MAX_ADDRESSES or len(rec.protocols) > MAX_PROTOCOLS:
        raise ValueError("too many addresses or protocols")
    for a in rec.addresses:
        if not 1 <= len(a) <= MAX_ADDRESS_LEN:
            raise ValueError("address length out of range")
        validate_multiaddr_bytes(a)
    for p in rec.protocols:
        check_protocol_id(p.encode("utf-8"))
    if rec.rotation is not None:
        if len(rec.rotation[0]) != KEY_LEN or len(rec.rotation[1]) != SIG_LEN:
            raise ValueError("bad rotation field sizes")
    body = b"".join(b for _, b in body_segments(rec.name, rec.key, rec.seq, rec.timestamp,
                                                rec.ttl, rec.addresses, rec.protocols,
                                                rec.rotation))
    if len(body) + SIG_LEN > MAX_RECORD_SIZE:
        raise ValueError("record would exceed 8192 bytes")
    return body


def encode(rec: Record) -> bytes:
    return encode_body(rec) + rec.signature


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise Reject("malformed", f"truncated: {what} needs {n} bytes, {self.remaining()} remain")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def uvarint(self, what: str) -> int:
        try:
            v, self.pos = read_uvarint(self.buf, self.pos)
        except ValueError as e:
            raise Reject("malformed", f"{what}: {e}")
        return v


def decode(buf: bytes) -> Record:
    """Decodes per §3 or raises Reject(oversized | malformed | invalid_name).

    Checks happen in byte order and the first failure wins. GUESS: the name is checked for
    canonical form as soon as it is read, so a non-canonical name followed by a structural fault
    later in the record is `invalid_name`, not `malformed`."""
    if len(buf) > MAX_RECORD_SIZE:
        raise Reject("oversized", f"{len(buf)} bytes > {MAX_RECORD_SIZE}")
    r = _Reader(buf)
    version = r.take(1, "version")[0]
    if version != VERSION:
        raise Reject("malformed", f"unknown version {version}")
    name_len = r.uvarint("name length")
    # GUESS: a name length outside 1..253 is `malformed` (a wire limit), not `invalid_name`.
    if not 1 <= name_len <= MAX_NAME_LEN:
        raise Reject("malformed", f"name length {name_len} outside 1..{MAX_NAME_LEN}")
    name_raw = r.take(name_len, "name")
    try:
        name = name_raw.decode("ascii")
        check_canonical_name(name)
    except (UnicodeDecodeError, InvalidName) as e:
        # GUESS: non-ASCII name bytes are `invalid_name` (they fail "canonical name").
        raise Reject("invalid_name", f"{name_raw!r}: {e}")
    key_type = r.take(1, "key type")[0]
    if key_type != KEY_TYPE_ED25519:
        raise Reject("malformed", f"key type {key_type} is not Ed25519 (1)")
    # §3: keys are not curve-checked when decoding; weak keys fail verification (§4 rule 2).
    key = r.take(KEY_LEN, "key")
    seq = int.from_bytes(r.take(8, "seq"), "big")
    timestamp = int.from_bytes(r.take(8, "timestamp"), "big")
    ttl = int.from_bytes(r.take(4, "ttl"), "big")
    n = r.uvarint("address count")
    if n > MAX_ADDRESSES:
        raise Reject("malformed", f"{n} addresses > {MAX_ADDRESSES}")
    addresses = []
    for i in range(n):
        alen = r.uvarint(f"address {i} length")
        if not 1 <= alen <= MAX_ADDRESS_LEN:
            raise Reject("malformed", f"address {i} length {alen} outside 1..{MAX_ADDRESS_LEN}")
        a = r.take(alen, f"address {i}")
        try:
            validate_multiaddr_bytes(a)
        except InvalidMultiaddr as e:
            raise Reject("malformed", f"address {i}: {e}")
        addresses.append(a)
    m = r.uvarint("protocol count")
    if m > MAX_PROTOCOLS:
        raise Reject("malformed", f"{m} protocols > {MAX_PROTOCOLS}")
    protocols = []
    for i in range(m):
        plen = r.uvarint(f"protocol {i} length")
        if not 1 <= plen <= MAX_PROTOCOL_LEN:
            raise Reject("malformed", f"protocol {i} length {plen} outside 1..{MAX_PROTOCOL_LEN}")
        p = r.take(plen, f"protocol {i}")
        try:
            protocols.append(check_protocol_id(p))
        except (ValueError, UnicodeDecodeError) as e:
            raise Reject("malformed", f"protocol {i}: {e}")
    flag = r.take(1, "rotation flag")[0]
    rotation = None
    if flag == 1:
        prev = r.take(KEY_LEN, "previous key")
        endorsement = r.take(SIG_LEN, "endorsement")
        rotation = (prev, endorsement)
    elif flag != 0:
        raise Reject("malformed", f"rotation flag {flag}")
    body_end = r.pos
    signature = r.take(SIG_LEN, "signature")
    if r.remaining():
        raise Reject("malformed", f"{r.remaining()} bytes after the signature")
    return Record(name=name, key=key, seq=seq, timestamp=timestamp, ttl=ttl,
                  addresses=addresses, protocols=protocols, rotation=rotation,
                  signature=signature, body=buf[:body_end])


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------

def private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(seed: bytes) -> bytes:
    return private_key(seed).public_key().public_bytes(serialization.Encoding.Raw,
                                                       serialization.PublicFormat.Raw)


def _has_small_order(encoded: bytes) -> bool:
    pt = _decompress(encoded)
    return pt is not None and _is_identity(_mul(8, pt))


def ed25519_verify(key: bytes, signature: bytes, message: bytes) -> bool:
    """RFC 8032 pure Ed25519 with libsodium's checks (spec/identity.md §1): S < L, R not of small
    order, the key canonical, on the curve and not of small order; then the cofactorless equation
    (OpenSSL, which also compares R byte for byte)."""
    if len(signature) != 64 or len(key) != 32:
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    if _has_small_order(signature[:32]):
        return False
    if _decompress(key) is None or _has_small_order(key):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def endorse(prev_seed: bytes, canonical_name: str, new_key: bytes) -> bytes:
    return private_key(prev_seed).sign(rotation_statement(canonical_name, new_key))


def sign_body(seed: bytes, body: bytes) -> bytes:
    return private_key(seed).sign(RECORD_CONTEXT + body)


def create(seed: bytes, name: str, seq: int, timestamp: int, ttl: int,
           addresses: list[str], protocols: list[str],
           rotation: Optional[tuple[bytes, bytes]] = None) -> Record:
    """Build and sign a record. `name` is tool input; `addresses` are multiaddr texts."""
    rec = Record(name=normalise_name(name), key=public_key(seed), seq=seq, timestamp=timestamp,
                 ttl=ttl, addresses=[multiaddr_to_bytes(a) for a in addresses],
                 protocols=list(protocols), rotation=rotation)
    rec.body = encode_body(rec)
    rec.signature = sign_body(seed, rec.body)
    return rec


# --------------------------------------------------------------------------------------------
# §4 Validation of a lone record
# --------------------------------------------------------------------------------------------

def validate(buf: bytes, now: int) -> Record:
    """Returns the decoded record or raises Reject with the kind of the first broken rule.
    Arithmetic is on unbounded integers (no u64 wrap-around)."""
    rec = decode(buf)                                                          # 1
    if not ed25519_verify(rec.key, rec.signature, RECORD_CONTEXT + rec.body):  # 2
        raise Reject("bad_signature", "record signature does not verify under its key")
    if rec.rotation is not None:                                               # 3
        prev, endorsement = rec.rotation
        if prev == rec.key:
            raise Reject("bad_rotation", "previous key equals the record key")
        # GUESS: a previous key that is not a valid prime-order point is `bad_rotation`
        # (§3 demands full order only of `key`; such a key could never have held the name).
        if not is_valid_ed25519_point(prev):
            raise Reject("bad_rotation", "previous key is not a valid Ed25519 point")
        if not ed25519_verify(prev, endorsement, rotation_statement(rec.name, rec.key)):
            raise Reject("bad_rotation", "endorsement does not verify under the previous key")
    named = self_certifying_key(rec.name)                                      # 4
    if named is not None and named != rec.key:
        raise Reject("self_certifying_mismatch", "key is not the key of the named peer id")
    if not TTL_MIN <= rec.ttl <= TTL_MAX:                                      # 5
        raise Reject("ttl_out_of_range", f"ttl {rec.ttl} outside {TTL_MIN}..{TTL_MAX}")
    if rec.timestamp > now + CLOCK_SKEW:                                       # 6
        raise Reject("from_the_future", f"timestamp {rec.timestamp} > now {now} + {CLOCK_SKEW}")
    if now - rec.timestamp > MAX_AGE:                                          # 7
        raise Reject("too_old", f"age {now - rec.timestamp} > {MAX_AGE}")
    if now > rec.timestamp + rec.ttl:                                          # 8
        raise Reject("expired", f"expired at {rec.timestamp + rec.ttl}, now {now}")
    return rec


def check(buf: bytes, now: int) -> str:
    """'valid' or the rejection kind."""
    try:
        validate(buf, now)
        return "valid"
    except Reject as e:
        return e.kind


# --------------------------------------------------------------------------------------------
# §5 Ownership
# --------------------------------------------------------------------------------------------

def select(existing: Optional[bytes], incoming: bytes, now: int) -> tuple[str, str]:
    """("accept", reason) or ("reject", kind). Rows of the §5 table are tried top to bottom.
    GUESS: the lapse row is tested before the key comparison, so after a lapse even the old key
    with a lower seq is accepted (`previous_claim_lapsed`)."""
    try:
        inc = validate(incoming, now)
    except Reject as e:
        return ("reject", e.kind)
    if existing is None:
        return ("accept", "first_claim")
    ex = decode(existing)  # accepted earlier by this function
    if ex.name != inc.name:
        raise ValueError("select() compares records for the same name only")
    if now > ex.timestamp + ex.ttl:
        return ("accept", "previous_claim_lapsed")
    if inc.key == ex.key:
        if inc.seq > ex.seq:
            return ("accept", "update")
        if inc.seq == ex.seq:
            return ("accept", "identical") if incoming == existing else ("reject", "conflicting_seq")
        return ("reject", "stale_seq")
    if inc.rotation is None:
        return ("reject", "name_held")
    if inc.rotation[0] != ex.key:
        return ("reject", "rotation_from_wrong_key")
    if inc.seq <= ex.seq:
        return ("reject", "stale_seq")
    return ("accept", "rotation")


# --------------------------------------------------------------------------------------------
# Test vectors
# --------------------------------------------------------------------------------------------

T = 1767225600  # 2026-01-01T00:00:00Z
SEEDS = {"alice": bytes([1]) * 32, "bob": bytes([2]) * 32, "carol": bytes([3]) * 32}
PUB = {k: public_key(s) for k, s in SEEDS.items()}


def _alice_pid() -> str:
    return peer_id_base58(PUB["alice"])


def record_inputs() -> list[dict]:
    """Each: name, input (key, name, seq, timestamp, ttl, addresses, protocols, rotation_from,
    optionally endorsement {signer, name, new_key}), now, expected."""
    alice36 = peer_id_base36(PUB["alice"])
    full_addrs = [
        "/ip4/192.0.2.1/tcp/4001",
        "/ip6/::1/tcp/4001",
        "/dns4/alice.example.com/tcp/443",
        f"/ip4/198.51.100.7/udp/4001/quic-v1/p2p/{_alice_pid()}",
    ]
    full_protos = ["/agent/chat/1.0.0", "/ipfs/ping/1.0.0", "/agent/tasks/2"]
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 55]) + ".agent"
    assert len(long_name) == 253

    def rec(name, key, nm, seq, ts, ttl=86400, addrs=(), protos=(), rot=None, now=None,
            expected="valid", endorsement=None, note=None):
        inp = {"key": key, "name": nm, "seq": seq, "timestamp": ts, "ttl": ttl,
               "addresses": list(addrs), "protocols": list(protos), "rotation_from": rot}
        if endorsement is not None:
            inp["endorsement"] = endorsement
        d = {"name": name, "input": inp, "now": ts + 60 if now is None else now,
             "expected": expected}
        if note:
            d["note"] = note
        return d

    max_addrs = [f"/ip4/10.0.0.{i}/tcp/{4000 + i}" for i in range(1, 33)]
    max_protos = [f"/agent/p{i:02d}/1" for i in range(64)]
    addr_1024 = "/ip4/10.0.0.1/tcp/1" * 128  # 128 x (5 + 3) bytes = 1024

    out = [
        rec("alice_minimal", "alice", "alice", T, T, note="minimal: no addresses, no protocols"),
        rec("alice_full", "alice", "alice.agent", T + 3600, T + 3600, addrs=full_addrs,
            protos=full_protos),
        rec("alice_full_same_seq_other_bytes", "alice", "alice.agent", T + 3600, T + 3610,
            addrs=full_addrs[:1], protos=full_protos[:1], now=T + 3660),
        rec("bob_claims_alice", "bob", "alice.agent", T + 7200, T + 7200,
            addrs=["/ip4/203.0.113.9/tcp/4001"]),
        rec("bob_claims_alice_later", "bob", "alice.agent", T + 90001, T + 90001),
        rec("alice_lower_seq_after_lapse", "alice", "alice.agent", 5, T + 90001,
            note="old holder, lower seq, after its claim lapsed"),
        rec("rotation_alice_to_bob", "bob", "alice.agent", T + 7200, T + 7200,
            addrs=["/dns/bob.example.org/udp/443/quic-v1"], rot="alice"),
        rec("rotation_alice_to_bob_stale", "bob", "alice.agent", T + 3600, T + 7200, rot="alice",
            note="seq equal to alice_full's"),
        rec("rotation_carol_to_bob", "bob", "alice.agent", T + 7200, T + 7200, rot="carol",
            note="valid alone; carol never held alice.agent"),
        rec("bob_refresh_after_rotation", "bob", "alice.agent", T + 20000, T + 20000, rot="alice",
            note="same endorsement as rotation_alice_to_bob, reattached"),
        rec("alice_after_rotation", "alice", "alice.agent", T + 30000, T + 30000),
        rec("rotation_endorsed_by_carol", "bob", "alice.agent", T + 7200, T + 7200, rot="alice",
            endorsement={"signer": "carol", "name": "alice.agent", "new_key": "bob"},
            expected="bad_rotation", note="previous_key is alice's, endorsement signed by carol"),
        rec("rotation_to_same_key", "alice", "alice.agent", T + 7200, T + 7200, rot="alice",
            expected="bad_rotation", note="previous key = key"),
        rec("rotation_endorsement_other_name", "bob", "alice.agent", T + 7200, T + 7200,
            rot="alice", endorsement={"signer": "alice", "name": "bob.agent", "new_key": "bob"},
            expected="bad_rotation"),
        rec("rotation_endorsement_other_key", "bob", "alice.agent", T + 7200, T + 7200,
            rot="alice", endorsement={"signer": "alice", "name": "alice.agent", "new_key": "carol"},
            expected="bad_rotation"),
        rec("multi_label", "alice", "ops.alice.agent", T, T, protos=["/agent/ops/1"]),
        rec("upper_case_input", "bob", "Bob.AGENT", T, T),
        rec("self_certifying_alice", "alice", alice36, T, T,
            addrs=[f"/ip4/192.0.2.1/tcp/4001/p2p/{_alice_pid()}"]),
        rec("self_certifying_upper_case_input", "alice", alice36.upper() + ".AGENT", T + 1, T + 1),
        rec("self_certifying_signed_by_bob", "bob", alice36, T, T,
            expected="self_certifying_mismatch"),
        rec("k_label_not_a_peer_id", "bob", "kevin", T, T,
            note="starts with k but is not base36 of a peer id: ordinary name"),
        rec("peer_id_label_in_two_label_name", "bob", f"ops.{alice36}", T, T,
            note="two labels before .agent: not self-certifying"),
        rec("name_253_chars", "alice", long_name, T, T),
        rec("expired", "alice", "timing.agent", T, T, ttl=3600, now=T + 3601, expected="expired"),
        rec("expiry_boundary", "alice", "timing.agent", T, T, ttl=3600, now=T + 3600,
            note="checked exactly at timestamp + ttl: valid"),
        rec("too_old", "alice", "timing.agent", T, T, ttl=604800, now=T + 604801,
            expected="too_old", note="also expired; rule 7 comes first"),
        rec("max_age_boundary", "alice", "timing.agent", T, T, ttl=604800, now=T + 604800),
        rec("from_the_future", "alice", "timing.agent", T, T + 301, now=T,
            expected="from_the_future"),
        rec("clock_skew_boundary", "alice", "timing.agent", T, T + 300, now=T),
        rec("ttl_too_short", "alice", "timing.agent", T, T, ttl=59, now=T + 1000,
            expected="ttl_out_of_range", note="also expired; rule 5 comes first"),
        rec("ttl_too_long", "alice", "timing.agent", T, T, ttl=604801,
            expected="ttl_out_of_range"),
        rec("ttl_minimum", "alice", "timing.agent", T, T, ttl=60, now=T + 60),
        rec("timestamp_zero", "alice", "timing.agent", 0, 0, ttl=86400, now=100),
        rec("u64_extremes", "alice", "timing.agent", U64_MAX, U64_MAX, ttl=604800, now=U64_MAX,
            note="seq, timestamp and now are 2^64-1: now + 300 and timestamp + ttl exceed u64"),
        rec("max_addresses", "alice", "limits.agent", T, T, addrs=max_addrs),
        rec("address_1024_bytes", "alice", "limits.agent", T, T, addrs=[addr_1024]),
        rec("max_protocols", "alice", "limits.agent", T, T, protos=max_protos),
        rec("utf8_protocols", "alice", "limits.agent", T, T,
            protos=["/agent/échange/1", "/代理/1", "/agent/emoji-\U0001F916/1"]),
        rec("max_size", "alice", "limits.agent", T, T, protos=_max_size_protocols(),
            note="exactly 8192 bytes"),
    ]
    return out


def _max_size_protocols() -> list[str]:
    """Protocol ids that make an alice 'limits.agent' record (no addresses) exactly 8192 bytes."""
    def size(protos):
        return SIG_LEN + sum(len(b) for _, b in body_segments(
            "limits.agent", PUB["alice"], T, T, 86400, [], protos, None))
    protos = []
    while size(protos + [f"/pad/{len(protos):02d}/".ljust(256, "x")]) <= MAX_RECORD_SIZE:
        protos.append(f"/pad/{len(protos):02d}/".ljust(256, "x"))
    gap = MAX_RECORD_SIZE - size(protos)
    # one more protocol: costs len + varint(len) bytes
    plen = gap - 1 if gap - 1 < 128 else gap - 2
    last = f"/pad/{len(protos):02d}/".ljust(plen, "x")
    protos.append(last)
    assert size(protos) == MAX_RECORD_SIZE, size(protos)
    return protos


def build_record(inp: dict) -> Record:
    seed = SEEDS[inp["key"]]
    rotation = None
    if inp["rotation_from"] is not None:
        canonical = normalise_name(inp["name"])
        e = inp.get("endorsement") or {"signer": inp["rotation_from"], "name": canonical,
                                       "new_key": inp["key"]}
        endorsement = endorse(SEEDS[e["signer"]], e["name"], PUB[e["new_key"]])
        rotation = (PUB[inp["rotation_from"]], endorsement)
    return create(seed, inp["name"], inp["seq"], inp["timestamp"], inp["ttl"],
                  inp["addresses"], inp["protocols"], rotation)


def derive_record_vector(v: dict) -> dict:
    rec = build_record(v["input"])
    out = {"name": v["name"], "input": v["input"],
           "canonical_name": rec.name,
           "record_key_hex": record_key(rec.name).hex(),
           "dht_key_hex": dht_key(rec.name).hex(),
           "body_hex": rec.body.hex(),
           "signature_hex": rec.signature.hex(),
           "record_hex": rec.raw.hex(),
           "now": v["now"],
           "expected": v["expected"]}
    if "note" in v:
        out["note"] = v["note"]
    return out


def _signed(seed_name: str, segs: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(b for _, b in segs)
    return body + sign_body(SEEDS[seed_name], body)


def _replace(segs, field_name, value: bytes):
    found = False
    out = []
    for k, b in segs:
        if k == field_name:
            out.append((k, value))
            found = True
        else:
            out.append((k, b))
    assert found, field_name
    return out


def _segs(name="tamper.agent", key=None, seq=T, ts=T, ttl=86400, addrs=(), protos=(), rot=None):
    return body_segments(name, PUB["alice"] if key is None else key, seq, ts, ttl,
                         list(addrs), list(protos), rot)


def _small_order_and_mixed_keys() -> tuple[bytes, bytes]:
    identity = (1).to_bytes(32, "little")  # y = 1: the neutral element, order 1
    # A point of order 8 (y from the standard torsion list), added to alice's key: mixed order.
    torsion = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    assert _decompress(torsion) is not None and _is_identity(_mul(8, _decompress(torsion)))
    a = _add(_decompress(PUB["alice"]), _decompress(torsion))
    zinv = pow(a[2], _P - 2, _P)
    x, y = a[0] * zinv % _P, a[1] * zinv % _P
    mixed = (y | ((x & 1) << 255)).to_bytes(32, "little")
    assert _decompress(mixed) is not None and not is_valid_ed25519_point(mixed)
    return identity, mixed


def tampered_vectors() -> list[dict]:
    """Bad bytes. Unless stated, each has exactly one fault and is otherwise correctly signed."""
    base = build_record({"key": "alice", "name": "alice.agent", "seq": T + 3600,
                         "timestamp": T + 3600, "ttl": 86400,
                         "addresses": ["/ip4/192.0.2.1/tcp/4001"],
                         "protocols": ["/agent/chat/1.0.0"], "rotation_from": None}).raw
    now = T + 3660
    ok_addr = multiaddr_to_bytes("/ip4/192.0.2.1/tcp/4001")
    v = []

    def add(name, raw: bytes, expected, desc):
        v.append({"name": name, "description": desc, "record_hex": raw.hex(), "now": now,
                  "expected": expected})

    # bad_signature
    sig_flip = bytearray(base)
    sig_flip[-1] ^= 0x01
    add("signature_bit_flipped", bytes(sig_flip), "bad_signature",
        "alice_full-like record, last signature byte xor 0x01")
    body_flip = bytearray(base)
    segs = body_segments("alice.agent", PUB["alice"], T + 3600, T + 3600, 86400, [ok_addr],
                         ["/agent/chat/1.0.0"], None)
    off = sum(len(b) for k, b in segs[:[k for k, _ in segs].index("ttl")])
    body_flip[off + 3] ^= 0x01  # ttl 86400 -> 86401 after signing
    add("body_changed_after_signing", bytes(body_flip), "bad_signature",
        "ttl changed from 86400 to 86401 after signing")
    s = int.from_bytes(base[-32:], "little") + _L
    add("signature_s_plus_l", base[:-32] + s.to_bytes(32, "little"), "bad_signature",
        "S replaced by S + L (non-canonical scalar, RFC 8032 5.1.7)")
    wrong = _segs()
    add("signed_by_other_key", b"".join(b for _, b in wrong) +
        sign_body(SEEDS["bob"], b"".join(b for _, b in wrong)), "bad_signature",
        "key is alice's, signature made by bob over the same body")
    add("signed_without_context", b"".join(b for _, b in wrong) +
        private_key(SEEDS["alice"]).sign(b"".join(b for _, b in wrong)), "bad_signature",
        "signature over the body alone, without 'agent-record:v1\\n'")

    # oversized
    max_rec = create(SEEDS["alice"], "limits.agent", T, T, 86400, [], _max_size_protocols()).raw
    add("oversized_trailing_byte", max_rec + b"\x00", "oversized",
        "valid 8192-byte record plus one trailing byte (8193 bytes): size is checked first")
    big_protos = _max_size_protocols()
    big_protos[-1] = big_protos[-1] + "x"
    add("oversized_well_formed", _signed("alice", _segs(name="limits.agent", protos=big_protos)),
        "oversized", "well-formed, correctly signed record of 8193 bytes")

    # malformed: structure
    add("trailing_byte", base + b"\x00", "malformed", "one 0x00 byte after the signature")
    add("truncated_last_byte", base[:-1], "malformed", "last signature byte missing")
    add("truncated_in_body", base[:40], "malformed", "first 40 bytes only")
    add("empty", b"", "malformed", "zero bytes")
    add("version_0", _signed("alice", _replace(_segs(), "version", b"\x00")), "malformed",
        "version byte 0")
    add("version_2", _signed("alice", _replace(_segs(), "version", b"\x02")), "malformed",
        "version byte 2")
    add("key_type_0", _signed("alice", _replace(_segs(), "key_type", b"\x00")), "malformed",
        "key type 0 (RSA in libp2p KeyType)")
    add("key_type_2", _signed("alice", _replace(_segs(), "key_type", b"\x02")), "malformed",
        "key type 2 (secp256k1 in libp2p KeyType)")
    add("non_minimal_varint_name_length",
        _signed("alice", _replace(_segs(), "name_len", b"\x8c\x00")), "malformed",
        "name length 12 encoded as 8c 00")
    add("non_minimal_varint_address_count",
        _signed("alice", _replace(_segs(), "address_count", b"\x80\x00")), "malformed",
        "address count 0 encoded as 80 00")
    add("varint_longer_than_9_bytes",
        _signed("alice", _replace(_segs(), "protocol_count", b"\x80" * 9 + b"\x00")), "malformed",
        "protocol count as a 10-byte varint")
    add("rotation_flag_2", _signed("alice", _replace(_segs(), "rotation", b"\x02")), "malformed",
        "rotation byte 2")
    add("rotation_flag_1_without_fields",
        _signed("alice", _replace(_segs(), "rotation", b"\x01")), "malformed",
        "rotation byte 1 but no previous key / endorsement before the signature")
    add("address_length_exceeds_remaining",
        _signed("alice", _replace(_segs(addrs=[ok_addr]), "address_len0", uvarint(200))),
        "malformed", "address length 200 (within the 1024 limit) but fewer bytes remain")

    # malformed: limits
    addrs33 = [multiaddr_to_bytes(f"/ip4/10.0.0.{i}/tcp/{4000 + i}") for i in range(1, 34)]
    add("addresses_33", _signed("alice", _segs(addrs=addrs33)), "malformed", "33 addresses")
    add("address_empty", _signed("alice", _segs(addrs=[b""])), "malformed",
        "one address of length 0")
    addr1025 = multiaddr_to_bytes("/ip4/10.0.0.1/tcp/1" * 127 + "/ip4/10.0.0.1/udp/1")
    assert len(addr1025) == 1025
    add("address_1025_bytes", _signed("alice", _segs(addrs=[addr1025])), "malformed",
        "one address of 1025 bytes (otherwise a valid multiaddr)")
    add("address_unknown_protocol", _signed("alice", _segs(addrs=[bytes.fromhex("ff7f")])),
        "malformed", "address ff7f: unknown protocol code 16383")
    add("address_truncated_ip4", _signed("alice", _segs(addrs=[bytes.fromhex("047f0000")])),
        "malformed", "address 047f0000: ip4 value truncated")
    add("address_bad_p2p_multihash",
        _signed("alice", _segs(addrs=[bytes.fromhex(
            "a503221221c05877cbae039d70a5e600ea02c6f9f2942439285c9e344e26f8d280c850fad6")])),
        "malformed", "p2p multihash declares 33 digest bytes, 32 present")
    protos65 = [f"/agent/p{i:02d}/1" for i in range(65)]
    add("protocols_65", _signed("alice", _segs(protos=protos65)), "malformed", "65 protocols")
    add("protocol_empty", _signed("alice", _segs(protos=[""])), "malformed",
        "one protocol id of length 0")
    add("protocol_257_bytes", _signed("alice", _segs(protos=["/" + "x" * 256])), "malformed",
        "one protocol id of 257 bytes")
    add("protocol_control_char", _signed("alice", _segs(protos=["/agent/chat\x1f/1"])),
        "malformed", "protocol id containing U+001F")
    add("protocol_del", _signed("alice", _segs(protos=["/agent/chat\x7f/1"])), "malformed",
        "protocol id containing U+007F")
    bad_utf8 = _replace(_replace(_segs(protos=["/agent/x"]), "protocol0", b"/agent/\xff"),
                        "protocol_len0", uvarint(8))
    add("protocol_invalid_utf8", _signed("alice", bad_utf8), "malformed",
        "protocol id bytes '/agent/' ff (not UTF-8)")
    surrogate = "/agent/\ud800".encode("utf-8", "surrogatepass")
    add("protocol_utf8_surrogate",
        _signed("alice", _replace(_replace(_segs(protos=["/agent/x"]), "protocol0", surrogate),
                                  "protocol_len0", uvarint(len(surrogate)))),
        "malformed", "protocol id containing the encoded surrogate ed a0 80 (invalid UTF-8)")

    # malformed: keys
    identity, mixed = _small_order_and_mixed_keys()
    add("key_small_order", _signed("alice", _segs(key=identity)), "bad_signature",
        "key = 0100..00, the neutral element (small order); signed by alice")
    mixed_record = _signed("alice", _segs(key=mixed))
    add("key_mixed_order", mixed_record, check(mixed_record, now),
        "key = alice's point plus a point of order 8: on the curve, not in the prime-order "
        "subgroup; signed by alice")
    off_curve = None
    for y0 in range(2, 100):
        enc = y0.to_bytes(32, "little")
        if _decompress(enc) is None:
            off_curve = enc
            break
    add("key_not_on_curve", _signed("alice", _segs(key=off_curve)), "bad_signature",
        "key whose y has no x on the curve")

    # invalid_name
    add("upper_case_name_on_wire", _signed("alice", _segs(name="Alice.agent")), "invalid_name",
        "name 'Alice.agent' (not canonical), correctly signed")
    add("name_without_suffix", _signed("alice", _segs(name="alice")), "invalid_name",
        "name 'alice' without '.agent'")
    add("name_leading_hyphen", _signed("alice", _segs(name="-alice.agent")), "invalid_name",
        "label starts with '-'")
    add("name_trailing_hyphen", _signed("alice", _segs(name="alice-.agent")), "invalid_name",
        "label ends with '-'")
    add("name_empty_label", _signed("alice", _segs(name="ops..agent")), "invalid_name",
        "empty label")
    add("name_label_64", _signed("alice", _segs(name="a" * 64 + ".agent")), "invalid_name",
        "label of 64 characters")
    add("name_underscore", _signed("alice", _segs(name="al_ice.agent")), "invalid_name",
        "'_' in a label")
    add("name_only_suffix", _signed("alice", _segs(name=".agent")), "invalid_name",
        "'.agent': no label before the suffix")
    return v


def selection_inputs() -> list[dict]:
    def s(name, existing, incoming, now, expected):
        return {"name": name, "existing": existing, "incoming": incoming, "now": now,
                "expected": list(expected)}
    return [
        s("nothing_held", None, "alice_minimal", T + 60, ("accept", "first_claim")),
        s("held_claim_lapsed", "alice_full", "bob_claims_alice_later", T + 90001,
          ("accept", "previous_claim_lapsed")),
        s("lapse_boundary_still_held", "alice_full", "bob_claims_alice_later", T + 90000,
          ("reject", "name_held")),
        s("lapsed_old_holder_lower_seq", "alice_full", "alice_lower_seq_after_lapse", T + 90001,
          ("accept", "previous_claim_lapsed")),
        s("same_key_higher_seq", "alice_minimal", "alice_full", T + 3660, ("accept", "update")),
        s("same_key_same_seq_identical", "alice_full", "alice_full", T + 3660,
          ("accept", "identical")),
        s("same_key_same_seq_different_bytes", "alice_full", "alice_full_same_seq_other_bytes",
          T + 3660, ("reject", "conflicting_seq")),
        s("same_key_lower_seq", "alice_full", "alice_minimal", T + 3660, ("reject", "stale_seq")),
        s("other_key_no_rotation", "alice_full", "bob_claims_alice", T + 7260,
          ("reject", "name_held")),
        s("rotation_endorsed_by_non_holder", "alice_full", "rotation_carol_to_bob", T + 7260,
          ("reject", "rotation_from_wrong_key")),
        s("rotation_by_holder_seq_not_higher", "alice_full", "rotation_alice_to_bob_stale",
          T + 7260, ("reject", "stale_seq")),
        s("rotation_by_holder_higher_seq", "alice_full", "rotation_alice_to_bob", T + 7260,
          ("accept", "rotation")),
        s("new_holder_refreshes_with_same_endorsement", "rotation_alice_to_bob",
          "bob_refresh_after_rotation", T + 20060, ("accept", "update")),
        s("old_holder_after_rotation", "rotation_alice_to_bob", "alice_after_rotation", T + 30060,
          ("reject", "name_held")),
        s("incoming_invalid_bad_rotation", "alice_full", "rotation_endorsed_by_carol", T + 7260,
          ("reject", "bad_rotation")),
        s("incoming_invalid_self_certifying", None, "self_certifying_signed_by_bob", T + 60,
          ("reject", "self_certifying_mismatch")),
        s("incoming_invalid_expired", None, "expired", T + 3601, ("reject", "expired")),
    ]


SOURCE = ("Generated by spec/tools/agent_record.py from spec/records.md (wire format v1), an "
          "implementation written from that document alone. Regenerate with "
          "`python3 spec/tools/agent_record.py --write Tests/Vectors/records.json`; check with "
          "--check. Ed25519 seeds are 32 bytes of 0x01 (alice), 0x02 (bob), 0x03 (carol). "
          "Timestamps are based on 1767225600 (2026-01-01T00:00:00Z). Some integers (u64_extremes) "
          "are 2^64-1 and exceed 2^53.")


def generate() -> dict:
    keys = {k: {"seed": SEEDS[k].hex(), "public_key": PUB[k].hex(),
                "peer_id": peer_id_base58(PUB[k]), "peer_id_base36": peer_id_base36(PUB[k])}
            for k in SEEDS}
    records = [derive_record_vector(v) for v in record_inputs()]
    by_name = {r["name"]: bytes.fromhex(r["record_hex"]) for r in records}
    for r in records:
        got = check(by_name[r["name"]], r["now"])
        assert got == r["expected"], (r["name"], got, r["expected"])
    tampered = tampered_vectors()
    for t in tampered:
        got = check(bytes.fromhex(t["record_hex"]), t["now"])
        assert got == t["expected"], (t["name"], got, t["expected"])
    selection = selection_inputs()
    for sv in selection:
        got = list(select(by_name[sv["existing"]] if sv["existing"] else None,
                          by_name[sv["incoming"]], sv["now"]))
        assert got == sv["expected"], (sv["name"], got, sv["expected"])
    return {"source": SOURCE, "keys": keys, "records": records, "tampered": tampered,
            "selection": selection}


def run_check(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    failures: list[str] = []
    count = 0

    def fail(msg):
        failures.append(msg)
        print(f"FAIL {msg}")

    # keys
    for k, entry in doc["keys"].items():
        count += 1
        seed = bytes.fromhex(entry["seed"])
        pk = public_key(seed)
        if pk.hex() != entry["public_key"] or peer_id_base58(pk) != entry["peer_id"] or \
                ("peer_id_base36" in entry and peer_id_base36(pk) != entry["peer_id_base36"]):
            fail(f"keys.{k}: public key / peer id does not match seed")
        if k in SEEDS and SEEDS[k] != seed:
            fail(f"keys.{k}: seed differs from the generator's")

    # records: re-derive bytes from inputs, decode/re-encode, validate
    by_name: dict[str, bytes] = {}
    for r in doc["records"]:
        count += 1
        name = r["name"]
        try:
            derived = derive_record_vector(r)
        except Exception as e:  # noqa: BLE001
            fail(f"records.{name}: cannot derive from input: {e}")
            continue
        for fld in ("canonical_name", "record_key_hex", "dht_key_hex", "body_hex",
                    "signature_hex", "record_hex"):
            if derived[fld] != r.get(fld):
                fail(f"records.{name}.{fld}: file {r.get(fld)!r} != derived {derived[fld]!r}")
        raw = bytes.fromhex(r["record_hex"])
        by_name[name] = raw
        if r["body_hex"] + r["signature_hex"] != r["record_hex"]:
            fail(f"records.{name}: record_hex != body_hex || signature_hex")
        try:
            rec = decode(raw)
            if encode(rec) != raw:
                fail(f"records.{name}: decode/encode round trip differs")
            if rec.name != r["canonical_name"]:
                fail(f"records.{name}: decoded name {rec.name!r}")
        except Reject as e:
            fail(f"records.{name}: does not decode: {e}")
        got = check(raw, r["now"])
        if got != r["expected"]:
            fail(f"records.{name}: expected {r['expected']}, got {got}")

    # tampered: the file's bytes must give the expected kind, and match the generator's bytes
    regenerated = {t["name"]: t for t in tampered_vectors()}
    for t in doc["tampered"]:
        count += 1
        name = t["name"]
        raw = bytes.fromhex(t["record_hex"])
        got = check(raw, t["now"])
        if got != t["expected"]:
            fail(f"tampered.{name}: expected {t['expected']}, got {got}")
        g = regenerated.get(name)
        if g is None:
            fail(f"tampered.{name}: not produced by this generator")
        elif g["record_hex"] != t["record_hex"] or g["expected"] != t["expected"] or \
                g["now"] != t["now"]:
            fail(f"tampered.{name}: differs from the regenerated vector")
    if set(regenerated) - {t["name"] for t in doc["tampered"]}:
        fail(f"tampered: missing {sorted(set(regenerated) - {t['name'] for t in doc['tampered']})}")

    # selection
    for sv in doc["selection"]:
        count += 1
        name = sv["name"]
        try:
            existing = by_name[sv["existing"]] if sv["existing"] is not None else None
            incoming = by_name[sv["incoming"]]
        except KeyError as e:
            fail(f"selection.{name}: unknown record {e}")
            continue
        got = list(select(existing, incoming, sv["now"]))
        if got != sv["expected"]:
            fail(f"selection.{name}: expected {sv['expected']}, got {got}")

    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    print(f"{base}: {count} vectors checked, {len(failures)} failed")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests",
                           "Vectors", "records.json")
    default = os.path.normpath(default)
    g.add_argument("--write", metavar="PATH", nargs="?", const=default,
                   help=f"regenerate the vectors file (default {default})")
    g.add_argument("--check", metavar="PATH", nargs="?", const=default,
                   help="re-derive and check every vector (same default)")
    args = ap.parse_args(argv)
    if args.write:
        doc = generate()
        with open(args.write, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
        n = len(doc["keys"]) + len(doc["records"]) + len(doc["tampered"]) + len(doc["selection"])
        print(f"wrote {args.write}: {len(doc['records'])} records, {len(doc['tampered'])} "
              f"tampered, {len(doc['selection'])} selection cases ({n} vectors with keys)")
        return 0
    return run_check(args.check)


if __name__ == "__main__":
    sys.exit(main())

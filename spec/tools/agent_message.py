#!/usr/bin/env python3
"""Reference implementation of agent messages (spec/messages.md, envelope v1).

Written from spec/messages.md, sharing no code with the Swift implementation. Names, self-certifying
keys and Ed25519 verification with libsodium's checks come from agent_record.py (the reference
implementation of spec/records.md, beside this file).

Dependencies: Python 3.11 standard library and the `cryptography` package.

Usage:
    python3 spec/tools/agent_message.py --write [Tests/Vectors/messages.json]
    python3 spec/tools/agent_message.py --check [Tests/Vectors/messages.json]
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_record as records  # noqa: E402

# §10 limits
MAX_CONTENT = 262144
MAX_MESSAGE = 270336
MAX_MEDIA_TYPE = 255
MAX_ERROR_CODE = 64
MAX_ERROR_TEXT = 1024
MAX_NAME = 253
FUTURE_SKEW_MS = 300000
MAX_AGE_MS = 600000
CONTEXT = b"agent-msg:v1\n"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TYPES = {1: "request", 2: "response", 3: "notification", 4: "stream", 5: "error"}
TYPE_NUMBERS = {v: k for k, v in TYPES.items()}
TEXT = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"

VARINT, LEN = 0, 2
# field number -> (name, wire type)
ENVELOPE_SCHEMA = {
    1: ("id", LEN), 2: ("type", VARINT), 3: ("sender", LEN), 4: ("recipient", LEN),
    5: ("timestamp_ms", VARINT), 6: ("media_type", LEN), 7: ("content", LEN), 8: ("in_reply_to", LEN),
    9: ("stream_id", LEN), 10: ("stream_seq", VARINT), 11: ("stream_end", VARINT), 12: ("error_code", LEN),
    13: ("error_text", LEN), 14: ("sender_seq", VARINT),
}
FIELD_NUMBERS = {name: number for number, (name, _) in ENVELOPE_SCHEMA.items()}
SIGNED_SCHEMA = {1: ("envelope", LEN), 2: ("signature", LEN)}


class Refusal(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# --------------------------------------------------------------------------------------------
# §1 varints, §3.2 canonical protobuf
# --------------------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    assert 0 <= n < 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos + i >= end:
            raise Refusal("malformed", "truncated varint")
        b = buf[pos + i]
        if i == 9 and b > 1:
            raise Refusal("malformed", "varint over 64 bits")
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if b == 0 and i > 0:
                raise Refusal("malformed", "non-minimal varint")
            return value, pos + i + 1
    raise Refusal("malformed", "varint over 10 bytes")  # unreachable: the 10th byte check


def nonminimal(n: int) -> bytes:
    """`n` as a varint padded with one extra 0x00 byte: the same value, not minimal."""
    raw = bytearray(varint(n))
    raw[-1] |= 0x80
    return bytes(raw) + b"\x00"


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | VARINT) + varint(value)


def read_fields(buf: bytes, start: int, end: int, schema: dict, limits):
    """Yields canonical fields from buf[start:end] one at a time, so that the caller checks each
    field's value before the next field is read (spec §3.3: the first broken field in wire order
    decides); `limits(number)` gives (max length, kind)."""
    pos = start
    last = 0
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise Refusal("malformed", f"unknown field {number}")
        name, expected = schema[number]
        if wire != expected:
            raise Refusal("malformed", f"{name}: wire type {wire}")
        if number <= last:
            raise Refusal("malformed", f"{name}: repeated or out of order")
        last = number
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            if value == 0:
                raise Refusal("malformed", f"{name}: default value present")
            yield number, value
        else:
            length, pos = read_varint(buf, pos, end)
            limit, kind = limits(number)
            if length > limit:
                raise Refusal(kind, f"{name}: {length} bytes over {limit}")
            if length > end - pos:
                raise Refusal("malformed", f"{name}: truncated")
            if length == 0:
                raise Refusal("malformed", f"{name}: empty field present")
            yield number, (pos, pos + length)
            pos += length


# --------------------------------------------------------------------------------------------
# §2 ids
# --------------------------------------------------------------------------------------------

def id_text(raw: bytes) -> str:
    assert len(raw) == 16
    n = int.from_bytes(raw, "big")
    return "".join(CROCKFORD[(n >> (5 * (25 - i))) & 31] for i in range(26))


def parse_id_text(text: str) -> bytes:
    if len(text) != 26:
        raise Refusal("malformed", "id text is not 26 characters")
    n = 0
    for i, ch in enumerate(text):
        up = ch.upper() if "a" <= ch <= "z" else ch
        if up not in CROCKFORD:
            raise Refusal("malformed", "id text outside Crockford base32")
        d = CROCKFORD.index(up)
        if i == 0 and d > 7:
            raise Refusal("malformed", "id over 128 bits")
        n = n << 5 | d
    return n.to_bytes(16, "big")


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

@dataclass
class Message:
    id: bytes
    type: str
    sender: str
    recipient: str
    timestamp_ms: int
    media_type: Optional[str] = None
    content: Optional[bytes] = None
    in_reply_to: Optional[bytes] = None
    stream_id: Optional[bytes] = None
    stream_seq: int = 0
    stream_end: bool = False
    error_code: Optional[str] = None
    error_text: str = ""
    sender_seq: int = 0


def encode_envelope(m: Message) -> bytes:
    """Canonical encoding (fields in number order, defaults left out)."""
    out = field_bytes(1, m.id) + field_varint(2, TYPE_NUMBERS[m.type])
    out += field_bytes(3, m.sender.encode()) + field_bytes(4, m.recipient.encode())
    out += field_varint(5, m.timestamp_ms)
    if m.content:
        out += field_bytes(6, m.media_type.encode()) + field_bytes(7, m.content)
    if m.in_reply_to is not None:
        out += field_bytes(8, m.in_reply_to)
    if m.type == "stream":
        out += field_bytes(9, m.stream_id)
        if m.stream_seq:
            out += field_varint(10, m.stream_seq)
        if m.stream_end:
            out += field_varint(11, 1)
    if m.type == "error":
        out += field_bytes(12, m.error_code.encode())
        if m.error_text:
            out += field_bytes(13, m.error_text.encode())
    if m.sender_seq:
        out += field_varint(14, m.sender_seq)
    return out


def encode_signed(envelope: bytes, signature: bytes) -> bytes:
    return field_bytes(1, envelope) + field_bytes(2, signature)


def sign(seed: bytes, envelope: bytes) -> bytes:
    return records.private_key(seed).sign(CONTEXT + envelope)


def _envelope_limit(number: int) -> tuple[int, str]:
    name = ENVELOPE_SCHEMA[number][0]
    if name in ("id", "in_reply_to", "stream_id"):
        return 16, "malformed"
    if name in ("sender", "recipient"):
        return MAX_NAME, "malformed"
    if name == "media_type":
        return MAX_MEDIA_TYPE, "malformed"
    if name == "content":
        return MAX_CONTENT, "oversized"
    if name == "error_code":
        return MAX_ERROR_CODE, "malformed"
    return MAX_ERROR_TEXT, "malformed"


def _name(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("invalid_name", "name is not UTF-8")
    try:
        records.check_canonical_name(text)
    except records.InvalidName as e:
        raise Refusal("invalid_name", str(e))
    return text


def _check_error_code(code: bytes) -> str:
    allowed = set(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
    if not 1 <= len(code) <= MAX_ERROR_CODE or not set(code) <= allowed:
        raise Refusal("malformed", "bad error_code")
    return code.decode()


def decode_envelope(buf: bytes, start: int, end: int) -> Message:
    values: dict[str, object] = {}
    for number, value in read_fields(buf, start, end, ENVELOPE_SCHEMA, _envelope_limit):
        name = ENVELOPE_SCHEMA[number][0]
        if isinstance(value, tuple):
            raw = buf[value[0]:value[1]]
        if name in ("id", "in_reply_to", "stream_id"):
            if len(raw) != 16:
                raise Refusal("malformed", f"{name} is not 16 bytes")
            values[name] = raw
        elif name == "type":
            if value not in TYPES:
                raise Refusal("malformed", "type outside 1-5")
            values[name] = TYPES[value]
        elif name in ("sender", "recipient"):
            values[name] = _name(raw)
        elif name == "media_type":
            if not all(0x20 <= b <= 0x7E for b in raw):
                raise Refusal("malformed", "media_type not printable ASCII")
            values[name] = raw.decode()
        elif name == "stream_end":
            if value != 1:
                raise Refusal("malformed", "stream_end is not 1")
            values[name] = True
        elif name == "error_code":
            values[name] = _check_error_code(raw)
        elif name == "error_text":
            try:
                values[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Refusal("malformed", "error_text not UTF-8")
        elif name == "content":
            values[name] = raw
        else:  # timestamp_ms, stream_seq, sender_seq
            values[name] = value
    for required in ("id", "type", "sender", "recipient", "timestamp_ms"):
        if required not in values:
            raise Refusal("malformed", f"no {required}")
    if ("content" in values) != ("media_type" in values):
        raise Refusal("malformed", "content and media_type not together")
    t = values["type"]
    if t != "stream" and any(k in values for k in ("stream_id", "stream_seq", "stream_end")):
        raise Refusal("malformed", "stream field on non-stream")
    if t != "error" and any(k in values for k in ("error_code", "error_text")):
        raise Refusal("malformed", "error field on non-error")
    if t in ("request", "notification") and "in_reply_to" in values:
        raise Refusal("malformed", "in_reply_to on request/notification")
    if t == "response" and "in_reply_to" not in values:
        raise Refusal("malformed", "response without in_reply_to")
    if t == "stream" and "stream_id" not in values:
        raise Refusal("malformed", "stream without stream_id")
    if t == "error" and ("in_reply_to" not in values or "error_code" not in values):
        raise Refusal("malformed", "error without in_reply_to or error_code")
    return Message(**values)


def decode_signed(buf: bytes) -> tuple[Message, bytes, bytes]:
    """-> (message, envelope bytes, signature)."""
    if len(buf) > MAX_MESSAGE:
        raise Refusal("oversized", "message over 270336 bytes")
    fields = dict(read_fields(buf, 0, len(buf), SIGNED_SCHEMA,
                              lambda n: (MAX_MESSAGE, "oversized") if n == 1 else (64, "malformed")))
    if 1 not in fields:
        raise Refusal("malformed", "no envelope")
    if 2 not in fields:
        raise Refusal("malformed", "no signature")
    s, e = fields[2]
    if e - s != 64:
        raise Refusal("malformed", "signature not 64 bytes")
    es, ee = fields[1]
    return decode_envelope(buf, es, ee), buf[es:ee], buf[s:e]


# --------------------------------------------------------------------------------------------
# §5 acceptance
# --------------------------------------------------------------------------------------------

def replay_digest(sender: str, mid: bytes) -> bytes:
    raw = sender.encode()
    return hashlib.sha256(varint(len(raw)) + raw + mid).digest()[:16]


def accept(buf: bytes, ctx: dict) -> str:
    """The verdict of §5.1 rules 1-7: 'accepted' or the refusal kind."""
    try:
        m, envelope, signature = decode_signed(buf)
        now = ctx["now_ms"]
        if m.recipient not in ctx["local"]:
            raise Refusal("wrong_recipient", m.recipient)
        if m.timestamp_ms > now and m.timestamp_ms - now > FUTURE_SKEW_MS:
            raise Refusal("from_the_future", "")
        if now > m.timestamp_ms and now - m.timestamp_ms > MAX_AGE_MS:
            raise Refusal("too_old", "")
        key = records.self_certifying_key(m.sender)
        if key is None:
            key_hex = ctx.get("keys", {}).get(m.sender)
            if key_hex is None:
                raise Refusal("unknown_sender", m.sender)
            key = bytes.fromhex(key_hex)
        if not records.ed25519_verify(key, signature, CONTEXT + envelope):
            raise Refusal("bad_signature", "")
        seen = {replay_digest(s, parse_id_text(i)) for s, i in ctx.get("seen", [])}
        if replay_digest(m.sender, m.id) in seen:
            raise Refusal("replayed", "")
        if m.timestamp_ms <= ctx.get("floor_ms", 0):
            raise Refusal("too_old", "at or below the replay floor")
        return "accepted"
    except Refusal as r:
        return r.kind


# --------------------------------------------------------------------------------------------
# §6 JSON form
# --------------------------------------------------------------------------------------------

def rfc3339(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def json_form(m: Message) -> dict:
    out = {"id": id_text(m.id), "type": m.type, "sender": m.sender, "recipient": m.recipient,
           "timestamp": rfc3339(m.timestamp_ms)}
    if m.content is not None:
        out["media_type"] = m.media_type
        shown = None
        if m.media_type == TEXT:
            try:
                shown = m.content.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif m.media_type == JSON_TYPE:
            try:
                shown = json.loads(m.content.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                pass
        if shown is None:
            out["content"] = base64.b64encode(m.content).decode()
            out["content_encoding"] = "base64"
        else:
            out["content"] = shown
    if m.in_reply_to is not None:
        out["in_reply_to"] = id_text(m.in_reply_to)
    if m.type == "stream":
        out.update({"stream_id": id_text(m.stream_id), "sequence": m.stream_seq, "end": m.stream_end})
    if m.type == "error":
        out.update({"error_code": m.error_code, "error_text": m.error_text})
    if m.sender_seq:
        out["sender_seq"] = m.sender_seq
    return out


def compact_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------

SEEDS = {"alice": bytes(range(1, 33)), "bob": bytes(range(33, 65)), "mallory": bytes([0xA5] * 32),
         "carol": bytes(range(100, 132))}
NOW = 1796630400000  # 2026-12-07T08:00:00.000Z


def pub(who: str) -> bytes:
    return records.public_key(SEEDS[who])


def mid(n: int) -> bytes:
    return hashlib.sha256(b"message id %d" % n).digest()[:16]


CAROL_SELF = "k" + records.b36encode(varint(1) + varint(0x72) + b"\x00" + varint(36)
                                     + records.ED25519_PROTOBUF_PREFIX + pub("carol")) + ".agent"


def context(**extra) -> dict:
    ctx = {"now_ms": NOW, "local": ["bob.agent"],
           "keys": {"alice.agent": pub("alice").hex(), "mallory.agent": pub("mallory").hex()}}
    ctx.update(extra)
    return ctx


def base(**kw) -> Message:
    args = dict(id=mid(1), type="request", sender="alice.agent", recipient="bob.agent", timestamp_ms=NOW,
                media_type=TEXT, content=b"hello, bob")
    args.update(kw)
    return Message(**args)


def valid_inputs() -> list[tuple[str, str, Message, dict]]:
    return [
        ("request-text", "alice", base(), context()),
        ("notification-json", "alice",
         base(id=mid(2), type="notification", media_type=JSON_TYPE,
              content=compact_json({"b": [1, 2, {"c": None}], "a": "x\u00e9\n", "n": -7})), context()),
        ("response-no-content", "alice",
         base(id=mid(3), type="response", media_type=None, content=None, in_reply_to=mid(100)), context()),
        ("stream-first-part-binary", "alice",
         base(id=mid(4), type="stream", media_type="application/octet-stream", content=bytes(range(256)),
              stream_id=mid(200)), context()),
        ("stream-last-part-reply", "alice",
         base(id=mid(5), type="stream", media_type="application/octet-stream", content=b"\x00\xff",
              stream_id=mid(200), stream_seq=300, stream_end=True, in_reply_to=mid(100)), context()),
        ("error-with-text", "alice",
         base(id=mid(6), type="error", media_type=None, content=None, in_reply_to=mid(100),
              error_code="method_not_found", error_text="no method \u201cfrob\u201d"), context()),
        ("error-empty-text", "alice",
         base(id=mid(7), type="error", media_type=None, content=None, in_reply_to=mid(100),
              error_code="x.y-z_0"), context()),
        ("text-not-utf8-shown-base64", "alice", base(id=mid(8), content=b"\xff\xfe"), context()),
        ("json-not-json-shown-base64", "alice", base(id=mid(9), media_type=JSON_TYPE, content=b"{nope"),
         context()),
        ("self-certifying-sender", "carol", base(id=mid(10), sender=CAROL_SELF), context()),
        ("future-skew-boundary", "alice", base(id=mid(11), timestamp_ms=NOW + FUTURE_SKEW_MS), context()),
        ("age-boundary", "alice", base(id=mid(12), timestamp_ms=NOW - MAX_AGE_MS), context()),
        ("max-id-and-seq", "alice",
         base(id=b"\xff" * 16, type="stream", stream_id=b"\x00" * 15 + b"\x01", stream_seq=(1 << 64) - 1,
              media_type="x", content=b"y"), context()),
        ("sender-sequence", "alice", base(id=mid(15), type="notification", sender_seq=7), context()),
        ("error-with-sender-sequence", "alice",
         base(id=mid(16), type="error", media_type=None, content=None, in_reply_to=mid(100), error_code="e",
              sender_seq=(1 << 64) - 1), context()),
        ("multi-label-names", "alice",
         base(id=mid(14), recipient="ops.bob.agent"), context(local=["bob.agent", "ops.bob.agent"])),
    ]


def signed_bytes(who: str, m: Message) -> tuple[bytes, bytes, bytes]:
    env = encode_envelope(m)
    sig = sign(SEEDS[who], env)
    return env, sig, encode_signed(env, sig)


def raw_envelope(fields: list[bytes]) -> bytes:
    return b"".join(fields)


def signed_raw(who: str, env: bytes) -> bytes:
    return encode_signed(env, sign(SEEDS[who], env))


def std_fields(**override) -> list[bytes]:
    """The fields of base() as a list, for tampering; override by name with raw field bytes."""
    m = base()
    fields = [("id", field_bytes(1, m.id)), ("type", field_varint(2, 1)),
              ("sender", field_bytes(3, m.sender.encode())), ("recipient", field_bytes(4, m.recipient.encode())),
              ("timestamp_ms", field_varint(5, m.timestamp_ms)), ("media_type", field_bytes(6, TEXT.encode())),
              ("content", field_bytes(7, m.content))]
    out = []
    for name, raw in fields:
        out.append(override.get(name, raw))
    return [f for f in out if f is not None]


def invalid_inputs() -> list[tuple[str, bytes, dict, str]]:
    a = "alice"
    good_env = encode_envelope(base())
    good_sig = sign(SEEDS[a], good_env)
    good = encode_signed(good_env, good_sig)
    cases: list[tuple[str, bytes, dict, str]] = []

    def env_case(name, fields, expected, ctx=None, who=a):
        cases.append((name, signed_raw(who, raw_envelope(fields)), ctx or context(), expected))

    def msg_case(name, m, expected, ctx=None, who=a):
        cases.append((name, signed_bytes(who, m)[2], ctx or context(), expected))

    # Outer structure.
    cases.append(("empty", b"", context(), "malformed"))
    cases.append(("truncated-by-one", good[:-1], context(), "malformed"))
    cases.append(("truncated-in-envelope", good[:40], context(), "malformed"))
    cases.append(("signature-63-bytes", encode_signed(good_env, good_sig[:63]), context(), "malformed"))
    cases.append(("signature-65-bytes", encode_signed(good_env, good_sig + b"\x00"), context(), "malformed"))
    cases.append(("no-signature", field_bytes(1, good_env), context(), "malformed"))
    cases.append(("no-envelope", field_bytes(2, good_sig), context(), "malformed"))
    cases.append(("signature-before-envelope", field_bytes(2, good_sig) + field_bytes(1, good_env), context(),
                  "malformed"))
    cases.append(("envelope-twice", field_bytes(1, good_env) + field_bytes(1, good_env) + field_bytes(2, good_sig),
                  context(), "malformed"))
    cases.append(("unknown-outer-field", good + field_bytes(3, b"x"), context(), "malformed"))
    cases.append(("trailing-zero-byte", good + b"\x00", context(), "malformed"))
    cases.append(("outer-varint-wire-type", field_varint(1, 5) + field_bytes(2, good_sig), context(), "malformed"))
    cases.append(("non-minimal-outer-length", varint(1 << 3 | 2) + nonminimal(len(good_env)) + good_env
                  + field_bytes(2, good_sig), context(), "malformed"))
    cases.append(("over-270336-bytes", b"\x0a" + b"\x00" * MAX_MESSAGE, context(), "oversized"))
    cases.append(("declared-envelope-over-limit-truncated", varint(1 << 3 | 2) + varint(MAX_MESSAGE + 1) + b"\x00",
                  context(), "oversized"))

    # Envelope canonical rules.
    f = dict(zip(["id", "type", "sender", "recipient", "timestamp_ms", "media_type", "content"], std_fields()))
    order = ["id", "type", "sender", "recipient", "timestamp_ms", "media_type", "content"]

    def fields_with(**ov):
        return [ov.get(k, f[k]) for k in order if ov.get(k, f[k]) is not None]

    env_case("fields-out-of-order", [f["id"], f["type"], f["recipient"], f["sender"], f["timestamp_ms"],
                                      f["media_type"], f["content"]], "malformed")
    env_case("field-repeated", fields_with() + [f["content"]], "malformed")
    env_case("unknown-field-14", fields_with() + [field_bytes(14, b"x")], "malformed")
    env_case("unknown-field-0", [b"\x02\x01\x00"] + fields_with(), "malformed")
    env_case("type-as-bytes", fields_with(type=field_bytes(2, b"\x01")), "malformed")
    env_case("type-fixed32-wire", fields_with(type=varint(2 << 3 | 5) + b"\x01\x00\x00\x00"), "malformed")
    env_case("type-0-default-present", fields_with(type=field_varint(2, 0)), "malformed")
    env_case("type-6", fields_with(type=field_varint(2, 6)), "malformed")
    env_case("type-non-minimal-varint", fields_with(type=varint(2 << 3) + b"\x81\x00"), "malformed")
    env_case("timestamp-non-minimal", fields_with(timestamp_ms=varint(5 << 3) + nonminimal(NOW)), "malformed")
    env_case("content-length-non-minimal", fields_with(content=varint(7 << 3 | 2) + nonminimal(10) + b"hello, bob"),
             "malformed")
    env_case("timestamp-over-64-bits", fields_with(timestamp_ms=varint(5 << 3) + b"\xff" * 9 + b"\x02"),
             "malformed")
    env_case("timestamp-missing", fields_with(timestamp_ms=None), "malformed")
    env_case("id-15-bytes", fields_with(id=field_bytes(1, mid(1)[:15])), "malformed")
    env_case("id-17-bytes", fields_with(id=field_bytes(1, mid(1) + b"\x00")), "malformed")
    env_case("id-missing", fields_with(id=None), "malformed")
    env_case("sender-upper-case", fields_with(sender=field_bytes(3, b"Alice.agent")), "invalid_name")
    env_case("sender-no-suffix", fields_with(sender=field_bytes(3, b"alice")), "invalid_name")
    env_case("sender-not-utf8", fields_with(sender=field_bytes(3, b"\xff.agent")), "invalid_name")
    env_case("recipient-bad-label", fields_with(recipient=field_bytes(4, b"-bob.agent")), "invalid_name")
    env_case("sender-254-bytes", fields_with(sender=field_bytes(3, (b"a" * 60 + b".") * 4 + b"aaaa.agent")),
             "malformed")
    env_case("bad-name-before-bad-content-limit",
             fields_with(sender=field_bytes(3, b"ALICE.agent"),
                         content=varint(7 << 3 | 2) + varint(MAX_CONTENT + 1)), "invalid_name")
    env_case("content-declared-over-256k", fields_with(content=varint(7 << 3 | 2) + varint(MAX_CONTENT + 1)),
             "oversized")
    env_case("content-empty-present", fields_with(content=bytes([7 << 3 | 2, 0])), "malformed")
    env_case("content-without-media-type", fields_with(media_type=None), "malformed")
    env_case("media-type-without-content", fields_with(content=None), "malformed")
    env_case("media-type-control-character", fields_with(media_type=field_bytes(6, b"text/plain\n")), "malformed")
    env_case("media-type-256-bytes", fields_with(media_type=field_bytes(6, b"t" * 256)), "malformed")
    env_case("stream-seq-on-request", fields_with() + [field_varint(10, 3)], "malformed")
    env_case("error-code-on-request", fields_with() + [field_bytes(12, b"oops")], "malformed")
    env_case("in-reply-to-on-request", fields_with() + [field_bytes(8, mid(100))], "malformed")
    env_case("response-without-in-reply-to", fields_with(type=field_varint(2, 2)), "malformed")
    env_case("stream-without-stream-id", fields_with(type=field_varint(2, 4)), "malformed")
    env_case("stream-seq-zero-present", fields_with(type=field_varint(2, 4)) + [field_bytes(9, mid(200)),
                                                                                  field_varint(10, 0)], "malformed")
    env_case("stream-end-2", fields_with(type=field_varint(2, 4)) + [field_bytes(9, mid(200)),
                                                                       field_varint(11, 2)], "malformed")
    env_case("error-without-code", fields_with(type=field_varint(2, 5)) + [field_bytes(8, mid(100))], "malformed")
    env_case("error-code-upper-case", fields_with(type=field_varint(2, 5)) + [field_bytes(8, mid(100)),
                                                                                field_bytes(12, b"Oops")],
             "malformed")
    env_case("error-code-65-bytes", fields_with(type=field_varint(2, 5)) + [field_bytes(8, mid(100)),
                                                                              field_bytes(12, b"e" * 65)], "malformed")
    env_case("error-text-empty-present", fields_with(type=field_varint(2, 5)) + [
        field_bytes(8, mid(100)), field_bytes(12, b"e"), bytes([13 << 3 | 2, 0])], "malformed")
    env_case("error-text-not-utf8", fields_with(type=field_varint(2, 5)) + [
        field_bytes(8, mid(100)), field_bytes(12, b"e"), field_bytes(13, b"\xc0\xaf")], "malformed")

    env_case("sender-seq-zero-present", fields_with() + [field_varint(14, 0)], "malformed")
    env_case("sender-seq-as-bytes", fields_with() + [field_bytes(14, b"\x01")], "malformed")
    env_case("sender-seq-before-content", fields_with(content=None, media_type=None) + [
        field_varint(14, 1), field_bytes(6, TEXT.encode()), field_bytes(7, b"x")], "malformed")

    # Acceptance.
    msg_case("wrong-recipient", base(recipient="carol.agent"), "wrong_recipient")
    msg_case("future-skew-plus-1ms", base(timestamp_ms=NOW + FUTURE_SKEW_MS + 1), "from_the_future")
    msg_case("age-plus-1ms", base(timestamp_ms=NOW - MAX_AGE_MS - 1), "too_old")
    msg_case("unknown-sender", base(sender="dave.agent"), "unknown_sender")
    msg_case("signed-by-another-key", base(), "bad_signature", who="mallory")
    msg_case("self-certifying-signed-by-another-key", base(sender=CAROL_SELF), "bad_signature", who="alice")
    tampered_env = encode_envelope(base(content=b"hello, bob!"))
    cases.append(("content-tampered", encode_signed(tampered_env, good_sig), context(), "bad_signature"))
    cases.append(("signature-bit-flipped", encode_signed(good_env, bytes([good_sig[0] ^ 1]) + good_sig[1:]),
                  context(), "bad_signature"))
    # A signature by the right key over the same bytes, but for records (another protocol's context).
    cases.append(("record-context-signature", encode_signed(
        good_env, records.private_key(SEEDS[a]).sign(records.RECORD_CONTEXT + good_env)), context(), "bad_signature"))
    msg_case("replayed", base(), "replayed", ctx=context(seen=[["alice.agent", id_text(mid(1))]]))
    msg_case("same-id-other-sender-not-a-replay", base(sender="mallory.agent"), "accepted", who="mallory",
             ctx=context(seen=[["alice.agent", id_text(mid(1))]]))
    msg_case("at-replay-floor", base(), "too_old", ctx=context(floor_ms=NOW))
    msg_case("above-replay-floor", base(), "accepted", ctx=context(floor_ms=NOW - 1))
    # Rule order.
    msg_case("wrong-recipient-before-signature", base(recipient="carol.agent"), "wrong_recipient", who="mallory")
    msg_case("too-old-before-unknown-sender", base(sender="dave.agent", timestamp_ms=NOW - MAX_AGE_MS - 1),
             "too_old")
    msg_case("bad-signature-before-replay", base(), "bad_signature", who="mallory",
             ctx=context(seen=[["alice.agent", id_text(mid(1))]]))
    return cases


ID_CASES = [bytes(16), b"\xff" * 16, bytes(range(16)), mid(1)]
BAD_ID_TEXTS = ["", "0000000000000000000000000", "000000000000000000000000000", "80000000000000000000000000",
                "0000000000000000000000000I", "0000000000000000000000000U", "0000000000000000000000000-",
                "00000000000000000000000000\n"]


def generate() -> dict:
    doc = {
        "description": "Agent message vectors (spec/messages.md), generated by spec/tools/agent_message.py. "
                       "Seeds are 32-byte Ed25519 seeds; now_ms is the receiver's clock; keys maps sender names "
                       "to the key their record names; seen lists (sender, id) pairs already accepted; floor_ms "
                       "is the replay floor.",
        "keys": [{"who": w, "seed_hex": s.hex(), "public_key_hex": pub(w).hex()} for w, s in SEEDS.items()],
        "ids": [{"hex": raw.hex(), "text": id_text(raw)} for raw in ID_CASES],
        "invalid_id_texts": BAD_ID_TEXTS,
        "valid": [],
        "invalid": [],
    }
    for name, who, m, ctx in valid_inputs():
        env, sig, signed = signed_bytes(who, m)
        doc["valid"].append({
            "name": name, "signer": who, "envelope_hex": env.hex(), "signature_hex": sig.hex(),
            "signed_hex": signed.hex(), "json_text": compact_json(json_form(m)).decode(), "context": ctx, "expected": accept(signed, ctx)})
    for name, raw, ctx, expected in invalid_inputs():
        doc["invalid"].append({"name": name, "signed_hex": raw.hex(), "context": ctx, "expected": expected})
    return doc


def run_check(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    failures: list[str] = []
    count = 0
    for entry in doc["ids"]:
        count += 1
        raw = bytes.fromhex(entry["hex"])
        if id_text(raw) != entry["text"] or parse_id_text(entry["text"]) != raw \
                or parse_id_text(entry["text"].lower()) != raw:
            failures.append(f"ids.{entry['hex']}")
    for text in doc["invalid_id_texts"]:
        count += 1
        try:
            parse_id_text(text)
            failures.append(f"invalid_id_texts.{text!r} parsed")
        except Refusal:
            pass
    seeds = {k["who"]: bytes.fromhex(k["seed_hex"]) for k in doc["keys"]}
    for v in doc["valid"]:
        count += 1
        signed = bytes.fromhex(v["signed_hex"])
        try:
            m, env, sig = decode_signed(signed)
        except Refusal as r:
            failures.append(f"valid.{v['name']}: {r}")
            continue
        if env.hex() != v["envelope_hex"] or encode_envelope(m).hex() != v["envelope_hex"]:
            failures.append(f"valid.{v['name']}: envelope bytes differ")
        if sign(seeds[v["signer"]], env).hex() != v["signature_hex"] or sig.hex() != v["signature_hex"]:
            failures.append(f"valid.{v['name']}: signature differs")
        if compact_json(json_form(m)).decode() != v["json_text"]:
            failures.append(f"valid.{v['name']}: JSON form differs")
        got = accept(signed, v["context"])
        if got != v["expected"] or got != "accepted":
            failures.append(f"valid.{v['name']}: verdict {got}")
    for v in doc["invalid"]:
        count += 1
        got = accept(bytes.fromhex(v["signed_hex"]), v["context"])
        if got != v["expected"]:
            failures.append(f"invalid.{v['name']}: expected {v['expected']}, got {got}")
    # The generator must reproduce the file exactly.
    if generate() != doc:
        failures.append("the file differs from what --write produces")
    for f in failures:
        print("FAIL", f)
    base_name = path.replace("\\", "/").rsplit("/", 1)[-1]
    print(f"{base_name}: {count} vectors checked, {len(failures)} failed")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    default = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests",
                                            "Vectors", "messages.json"))
    g.add_argument("--write", metavar="PATH", nargs="?", const=default)
    g.add_argument("--check", metavar="PATH", nargs="?", const=default)
    args = ap.parse_args(argv)
    if args.write:
        doc = generate()
        with open(args.write, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        print(f"wrote {args.write}: {len(doc['valid'])} valid, {len(doc['invalid'])} invalid, "
              f"{len(doc['ids'])} ids")
        return 0
    return run_check(args.check)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Reference implementation of capability cards (spec/cards.md, v1): the card's JSON form, its
canonical protobuf encoding, signatures, checking, provider keys, SemVer 2.0.0 versions and
version ranges.

Written from spec/cards.md (and spec/records.md §1 for names); it shares no code with the Swift
implementation (spec/cards.md §10 says how independent that is).

Dependencies: Python 3 standard library and the `cryptography` package (Ed25519).

Usage:
    python3 spec/tools/agent_card.py --write Tests/Vectors/cards.json
    python3 spec/tools/agent_card.py --check Tests/Vectors/cards.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_SIGNED = 16384
CONTEXT = b"agent-card:v1\n"
CLOCK_SKEW = 300
SIG_LEN = 64
U64 = 1 << 64


class CardError(Exception):
    def __init__(self, kind: str, message: str = ""):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# Names (records.md §1), capability names and identifiers (cards.md §2)
# ---------------------------------------------------------------------------------------------

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_canonical_name(text: str) -> bool:
    if len(text.encode()) > 253 or not text.endswith(".agent"):
        return False
    if any(ord(c) > 127 for c in text):
        return False
    stem = text[: -len(".agent")]
    return stem != "" and all(LABEL.match(label) for label in stem.split("."))


B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def self_certifying_key(name: str) -> bytes | None:
    """The Ed25519 key a self-certifying name names (records.md §1), else None."""
    stem = name[: -len(".agent")]
    if "." in stem or not stem.startswith("k") or len(stem) < 2:
        return None
    value = 0
    for c in stem[1:]:
        if c not in B36:
            return None
        value = value * 36 + B36.index(c)
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    prefix = bytes([0x01, 0x72, 0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
    if len(raw) != 40 or not raw.startswith(prefix):
        return None
    return raw[8:]


def self_certifying_name(public_key: bytes) -> str:
    raw = bytes([0x01, 0x72, 0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + public_key
    value = int.from_bytes(raw, "big")
    digits = ""
    while value:
        value, r = divmod(value, 36)
        digits = B36[r] + digits
    return "k" + digits + ".agent"


CAPABILITY = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def check_capability(name: str) -> None:
    if not (1 <= len(name.encode()) <= 64) or not CAPABILITY.match(name) or not name.isascii():
        raise CardError("invalid_capability", repr(name))


def check_identifier(text: str) -> None:
    if not (1 <= len(text.encode()) <= 64) or not text.isascii() or not IDENTIFIER.match(text):
        raise CardError("malformed", f"identifier {text!r}")


def check_type(text: str) -> None:
    raw = text.encode()
    if not (1 <= len(raw) <= 64) or any(b < 0x20 or b > 0x7E for b in raw):
        raise CardError("malformed", f"type {text!r}")


def check_text(text: str, limit: int) -> None:
    if len(text.encode()) > limit:
        raise CardError("malformed", "text over its limit")


def check_documentation(text: str) -> None:
    if text == "":
        return
    raw = text.encode()
    scheme = 8 if text.startswith("https://") else 7 if text.startswith("http://") else 0
    if len(raw) > 512 or scheme == 0 or len(raw) <= scheme or any(b < 0x21 or b > 0x7E for b in raw):
        raise CardError("malformed", f"documentation {text!r}")


# ---------------------------------------------------------------------------------------------
# Versions (§3) and ranges (§4)
# ---------------------------------------------------------------------------------------------

def parse_number(text: str, kind: str, limit: int = U64) -> int:
    if text == "" or not all("0" <= c <= "9" for c in text):
        raise CardError(kind, f"not a number: {text!r}")
    if len(text) > 1 and text[0] == "0":
        raise CardError(kind, "leading zero")
    value = int(text)
    if value >= limit:
        raise CardError(kind, "number too large")
    return value


IDENT_CHARS = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


def parse_version(text: str):
    """(major, minor, patch, prerelease tuple); prerelease items are (0, int) or (1, str)."""
    if not (1 <= len(text.encode()) <= 64):
        raise CardError("invalid_version", "length")
    core, _, build = text.partition("+")
    if "+" in text:
        for ident in build.split("."):
            if ident == "" or not set(ident) <= IDENT_CHARS:
                raise CardError("invalid_version", "build")
    core, dash, pre = core.partition("-")
    prerelease = ()
    if dash:
        items = []
        for ident in pre.split("."):
            if ident == "" or not set(ident) <= IDENT_CHARS:
                raise CardError("invalid_version", "prerelease")
            if ident.isdigit() and all("0" <= c <= "9" for c in ident):
                items.append((0, parse_number(ident, "invalid_version")))
            else:
                items.append((1, ident))
        prerelease = tuple(items)
    parts = core.split(".")
    if len(parts) != 3:
        raise CardError("invalid_version", "not M.m.p")
    return tuple(parse_number(p, "invalid_version") for p in parts) + (prerelease,)


def compare(a, b) -> int:
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    pa, pb = a[3], b[3]
    if pa == pb:
        return 0
    if not pa:
        return 1
    if not pb:
        return -1
    for x, y in zip(pa, pb):
        if x == y:
            continue
        if x[0] != y[0]:
            return -1 if x[0] < y[0] else 1  # numeric (0) before alphanumeric (1)
        if x[0] == 0:
            return -1 if x[1] < y[1] else 1
        return -1 if x[1].encode() < y[1].encode() else 1
    return -1 if len(pa) < len(pb) else 1


R_MAX = 1 << 63


def parse_partial(text: str):
    """(numbers list, full version or None); [] for a wildcard."""
    if text == "" or "+" in text:
        raise CardError("invalid_range", text)
    core, dash, pre = text.partition("-")
    parts = core.split(".")
    if len(parts) > 3:
        raise CardError("invalid_range", text)
    numbers = []
    wild = False
    for p in parts:
        if p in ("x", "X", "*"):
            wild = True
            continue
        if wild:
            raise CardError("invalid_range", text)
        numbers.append(parse_number(p, "invalid_range", R_MAX))
    if dash:
        if len(numbers) != 3 or pre == "":
            raise CardError("invalid_range", text)
        try:
            return numbers, parse_version(text)
        except CardError:
            raise CardError("invalid_range", text)
    return numbers, (tuple(numbers) + ((),) if len(numbers) == 3 else None)


def v(a, b=0, c=0):
    return (a, b, c, ())


def parse_range(text: str):
    """A list of alternatives; each (bounds, prerelease versions written)."""
    raw = text.encode()
    if len(raw) > 256 or any(b < 0x20 or b > 0x7E for b in raw):
        raise CardError("invalid_range", "length or bytes")
    sets = text.split("||")
    if len(sets) > 8:
        raise CardError("invalid_range", "alternatives")
    alternatives = []
    for s in sets:
        comparators = [c for c in s.split(" ") if c != ""]
        if not comparators or len(comparators) > 8:
            raise CardError("invalid_range", "comparators")
        bounds, pres = [], []
        for comp in comparators:
            op = ""
            for token in (">=", "<=", ">", "<", "=", "^", "~"):
                if comp.startswith(token):
                    op, comp = token, comp[len(token):]
                    break
            numbers, full = parse_partial(comp)
            if not numbers:
                if op:
                    raise CardError("invalid_range", "wildcard with operator")
                continue
            if full is not None and full[3]:
                pres.append(full)
            n = numbers
            M = n[0]
            low = full if full is not None else v(M, n[1] if len(n) > 1 else 0)
            nxt = v(M + 1) if len(n) == 1 else v(M, n[1] + 1)
            if op in ("", "="):
                bounds += [("=", full)] if full is not None else [(">=", low), ("<", nxt)]
            elif op == ">=":
                bounds.append((">=", low))
            elif op == ">":
                bounds.append((">", full) if full is not None else (">=", nxt))
            elif op == "<":
                bounds.append(("<", low))
            elif op == "<=":
                bounds.append(("<=", full) if full is not None else ("<", nxt))
            elif op == "~":
                bounds += [(">=", low), ("<", nxt)]
            else:  # ^
                if M > 0 or len(n) == 1:
                    upper = v(M + 1)
                elif len(n) == 2 or n[1] > 0:
                    upper = v(0, n[1] + 1)
                else:
                    upper = v(0, 0, n[2] + 1)
                bounds += [(">=", low), ("<", upper)]
        alternatives.append((bounds, pres))
    return alternatives


def range_contains(alternatives, version) -> bool:
    for bounds, pres in alternatives:
        ok = True
        for op, bound in bounds:
            c = compare(version, bound)
            if not {"=": c == 0, ">=": c >= 0, ">": c > 0, "<": c < 0, "<=": c <= 0}[op]:
                ok = False
                break
        if ok and (not version[3] or any(p[:3] == version[:3] for p in pres)):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Canonical protobuf (§5)
# ---------------------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def f_bytes(number: int, value: bytes) -> bytes:
    return b"" if value == b"" else varint(number << 3 | 2) + varint(len(value)) + value


def f_str(number: int, value: str) -> bytes:
    return f_bytes(number, value.encode())


def f_varint(number: int, value: int) -> bytes:
    return b"" if value == 0 else varint(number << 3) + varint(value)


def encode_field(f: dict) -> bytes:
    return f_str(1, f["name"]) + f_str(2, f["type"]) + f_str(3, f.get("description", ""))


def encode_card(card: dict, agent: str, timestamp: int) -> bytes:
    out = f_str(1, agent) + f_varint(2, timestamp) + f_str(3, card["name"]) + f_str(4, card["version"])
    out += f_str(5, card.get("description", ""))
    for interface in card.get("interfaces", []):
        body = f_str(1, interface["name"])
        for m in interface.get("methods", []):
            mb = f_str(1, m["name"])
            mb += b"".join(f_bytes(2, encode_field(p)) for p in m.get("parameters", []))
            mb += b"".join(f_bytes(3, encode_field(r)) for r in m.get("returns", []))
            mb += f_str(4, m.get("description", ""))
            body += f_bytes(2, mb)
        out += f_bytes(6, body)
    return out + f_str(7, card.get("documentation", ""))


def sign_card(card: dict, agent: str, timestamp: int, key: Ed25519PrivateKey):
    body = encode_card(card, agent, timestamp)
    signature = key.sign(CONTEXT + body)
    return body, signature, f_bytes(1, body) + f_bytes(2, signature)


class Reader:
    """Reads one message's fields with the canonical checks of §5.2."""

    def __init__(self, data: bytes, schema: dict):
        self.data, self.i, self.last, self.schema = data, 0, 0, schema

    def varint(self) -> int:
        value, shift, count = 0, 0, 0
        while True:
            if self.i >= len(self.data):
                raise CardError("malformed", "truncated varint")
            b = self.data[self.i]
            self.i += 1
            count += 1
            if count > 10:
                raise CardError("malformed", "long varint")
            value |= (b & 0x7F) << shift
            if b & 0x80 == 0:
                if b == 0 and count > 1:
                    raise CardError("malformed", "non-minimal varint")
                if value >= U64:
                    raise CardError("malformed", "varint over 64 bits")
                return value
            shift += 7

    def fields(self):
        while self.i < len(self.data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number not in self.schema:
                raise CardError("malformed", f"unknown field {number}")
            delimited, repeated, limit = self.schema[number]
            if not (number > self.last or (number == self.last and repeated)):
                raise CardError("malformed", "field order")
            self.last = number
            if wire == 0 and not delimited:
                value = self.varint()
                if value == 0:
                    raise CardError("malformed", "default value")
                yield number, value
            elif wire == 2 and delimited:
                length = self.varint()
                if length > limit:
                    raise CardError("malformed", "over limit")
                if length > len(self.data) - self.i:
                    raise CardError("malformed", "past the end")
                if length == 0:
                    raise CardError("malformed", "empty field")
                value = self.data[self.i:self.i + length]
                self.i += length
                yield number, value
            else:
                raise CardError("malformed", "wire type")


def utf8(raw: bytes, kind: str = "malformed") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(kind, "not UTF-8")


def decode_field(raw: bytes) -> dict:
    out = {}
    for number, value in Reader(raw, {1: (True, False, 64), 2: (True, False, 64), 3: (True, False, 256)}).fields():
        text = utf8(value)
        if number == 1:
            check_identifier(text)
            out["name"] = text
        elif number == 2:
            check_type(text)
            out["type"] = text
        else:
            out["description"] = text
    if "name" not in out or "type" not in out:
        raise CardError("malformed", "field name/type missing")
    return out


def decode_method(raw: bytes) -> dict:
    out = {"parameters": [], "returns": []}
    schema = {1: (True, False, 64), 2: (True, True, MAX_SIGNED), 3: (True, True, MAX_SIGNED), 4: (True, False, 1024)}
    for number, value in Reader(raw, schema).fields():
        if number == 1:
            text = utf8(value)
            check_identifier(text)
            out["name"] = text
        elif number in (2, 3):
            key = "parameters" if number == 2 else "returns"
            if len(out[key]) >= 16:
                raise CardError("malformed", "too many fields")
            out[key].append(decode_field(value))
        else:
            out["description"] = utf8(value)
    if "name" not in out:
        raise CardError("malformed", "method name missing")
    return out


def decode_interface(raw: bytes) -> dict:
    out = {"methods": []}
    for number, value in Reader(raw, {1: (True, False, 64), 2: (True, True, MAX_SIGNED)}).fields():
        if number == 1:
            text = utf8(value)
            check_identifier(text)
            out["name"] = text
        else:
            if len(out["methods"]) >= 32:
                raise CardError("malformed", "too many methods")
            out["methods"].append(decode_method(value))
    if "name" not in out:
        raise CardError("malformed", "interface name missing")
    return out


def decode_card(raw: bytes):
    schema = {1: (True, False, 253), 2: (False, False, 0), 3: (True, False, 64), 4: (True, False, 64),
              5: (True, False, 1024), 6: (True, True, MAX_SIGNED), 7: (True, False, 512)}
    card = {"interfaces": []}
    agent = timestamp = None
    for number, value in Reader(raw, schema).fields():
        if number == 1:
            agent = utf8(value, "invalid_name")
            if not is_canonical_name(agent):
                raise CardError("invalid_name", agent)
        elif number == 2:
            timestamp = value
        elif number == 3:
            name = utf8(value, "invalid_capability")
            check_capability(name)
            card["name"] = name
        elif number == 4:
            version = utf8(value, "invalid_version")
            parse_version(version)
            card["version"] = version
        elif number == 5:
            card["description"] = utf8(value)
        elif number == 6:
            if len(card["interfaces"]) >= 16:
                raise CardError("malformed", "too many interfaces")
            card["interfaces"].append(decode_interface(value))
        else:
            doc = utf8(value)
            check_documentation(doc)
            card["documentation"] = doc
    if agent is None or timestamp is None or "name" not in card or "version" not in card:
        raise CardError("malformed", "required field missing")
    return agent, timestamp, card


def decode_signed(data: bytes):
    if len(data) > MAX_SIGNED:
        raise CardError("oversized", str(len(data)))
    body = signature = None
    for number, value in Reader(data, {1: (True, False, MAX_SIGNED), 2: (True, False, SIG_LEN)}).fields():
        if number == 1:
            body = value
        else:
            signature = value
    if body is None or signature is None or len(signature) != SIG_LEN:
        raise CardError("malformed", "card/signature")
    agent, timestamp, card = decode_card(body)
    return agent, timestamp, card, body, signature


def check(data: bytes, now: int, expected_agent: str | None, expected_capability: str | None,
          key: bytes | None) -> str:
    """The verdict of §6: "valid" or the kind."""
    try:
        agent, timestamp, card, body, signature = decode_signed(data)
        if expected_agent is not None and agent != expected_agent:
            raise CardError("wrong_agent")
        if expected_capability is not None and card["name"] != expected_capability:
            raise CardError("wrong_capability")
        if timestamp > now + CLOCK_SKEW:
            raise CardError("from_the_future")
        signer = self_certifying_key(agent)
        if signer is None:
            signer = key
        if signer is None:
            raise CardError("unknown_agent")
        try:
            Ed25519PublicKey.from_public_bytes(signer).verify(signature, CONTEXT + body)
        except (InvalidSignature, ValueError):
            raise CardError("bad_signature")
        return "valid"
    except CardError as error:
        return error.kind


def provider_key(capability: str) -> bytes:
    return bytes([0x12, 0x20]) + hashlib.sha256(b"/agent/cap/" + capability.encode()).digest()


# ---------------------------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------------------------

def key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


TRANSLATE = {
    "name": "translate",
    "version": "1.2.0",
    "description": "Translates text between languages.",
    "interfaces": [{
        "name": "Translator",
        "methods": [{
            "name": "translate",
            "parameters": [{"name": "text", "type": "string", "description": "what to translate"},
                           {"name": "target", "type": "string"}],
            "returns": [{"name": "translation", "type": "string"}],
            "description": "Returns the text in the target language.",
        }, {"name": "languages", "parameters": [], "returns": [{"name": "codes", "type": "array<string>"}]}],
    }],
    "documentation": "https://example.org/translate",
}
MINIMAL = {"name": "ping", "version": "0.0.1-alpha.1+build.7"}
UNICODE = {"name": "weather.forecast", "version": "2.0.0", "description": "Prévisions météo, 天気予報 ☀",
           "interfaces": [{"name": "Forecast", "methods": [{"name": "daily", "parameters": [{"name": "city", "type": "string", "description": "ville"}], "returns": []}]}]}
# Every count at its limit: 16 interfaces would not fit 16 KiB with 32 methods each; the vector
# holds 16 interfaces of 1 method with 16 parameters and 16 returns.
FULL = {"name": "a" * 64, "version": "18446744073709551615.0.0", "description": "d" * 1024,
        "interfaces": [{"name": f"I{i}", "methods": [{"name": "m", "parameters": [{"name": f"p{j}", "type": "t"} for j in range(16)],
                                                        "returns": [{"name": f"r{j}", "type": "t"} for j in range(16)]}]} for i in range(16)],
        "documentation": "http://" + "x" * 505}

SEED_A = bytes(range(32))
SEED_B = bytes(range(100, 132))
T0 = 1_796_000_000


def build() -> dict:
    alice, bob = key_from_seed(SEED_A), key_from_seed(SEED_B)
    self_name = self_certifying_name(public_bytes(bob))
    cards = []
    signed_by_name = {}
    for label, card, agent, key, seed in [
        ("translate", TRANSLATE, "alice.agent", alice, SEED_A),
        ("minimal", MINIMAL, "alice.agent", alice, SEED_A),
        ("unicode", UNICODE, "weather.bob.agent", bob, SEED_B),
        ("full", FULL, "alice.agent", alice, SEED_A),
        ("self_certifying", MINIMAL, self_name, bob, SEED_B),
    ]:
        body, signature, signed = sign_card(card, agent, T0, key)
        assert len(signed) <= MAX_SIGNED, (label, len(signed))
        decoded = decode_signed(signed)
        assert decoded[0] == agent and decoded[1] == T0
        signed_by_name[label] = signed
        cards.append({
            "name": label, "seed_hex": seed.hex(), "public_key_hex": public_bytes(key).hex(), "agent": agent,
            "timestamp": str(T0), "card_json": json.dumps(card, ensure_ascii=False, sort_keys=True),
            "card_hex": body.hex(), "signature_hex": signature.hex(), "signed_hex": signed.hex(),
            "provider_key_hex": provider_key(card["name"]).hex(), "signed_size": str(len(signed)),
        })

    a_pub = public_bytes(alice).hex()
    base = signed_by_name["translate"]
    body, signature, _ = sign_card(TRANSLATE, "alice.agent", T0, alice)

    def resign(raw_body: bytes, key=alice) -> bytes:
        return f_bytes(1, raw_body) + f_bytes(2, key.sign(CONTEXT + raw_body))

    def card_with(**changes) -> bytes:
        card = dict(TRANSLATE)
        card.update(changes)
        return encode_card(card, "alice.agent", T0)

    decoding = []

    def case(label, data, expected, now=T0, agent="", capability="", key=a_pub):
        verdict = check(data, now, agent or None, capability or None, bytes.fromhex(key) if key else None)
        assert verdict == expected, (label, verdict, expected)
        decoding.append({"name": label, "signed_hex": data.hex(), "now": str(now), "expected_agent": agent,
                         "expected_capability": capability, "key_hex": key, "expected": expected})

    case("valid", base, "valid")
    case("valid, asked for its agent and capability", base, "valid", agent="alice.agent", capability="translate")
    case("exactly 300 s ahead", base, "valid", now=T0 - 300)
    case("301 s ahead", base, "from_the_future", now=T0 - 301)
    case("another agent asked for", base, "wrong_agent", agent="bob.agent")
    case("another capability asked for", base, "wrong_capability", capability="summarize")
    case("no key known", base, "unknown_agent", key="")
    case("key of another agent", base, "bad_signature", key=public_bytes(bob).hex())
    flipped = bytearray(base)
    flipped[-1] ^= 1
    case("signature bit flipped", bytes(flipped), "bad_signature")
    tampered = f_bytes(1, card_with(description="Translates text, badly.")) + f_bytes(2, signature)
    case("card changed after signing", tampered, "bad_signature")
    case("signed by another key", resign(body, bob), "bad_signature")
    case("self-certifying agent, no record needed", signed_by_name["self_certifying"], "valid", key="")
    case("over 16384 bytes", base + bytes(MAX_SIGNED + 1 - len(base)), "oversized")
    case("exactly at the limit but trailing garbage", base + b"\x00", "malformed")
    case("truncated", base[:-1], "malformed")
    case("signature of 63 bytes", f_bytes(1, body) + f_bytes(2, signature[:63]), "malformed")
    case("no signature", f_bytes(1, body), "malformed")
    case("signature before card", f_bytes(2, signature) + f_bytes(1, body), "malformed")
    case("unknown outer field", base + f_bytes(3, b"x"), "malformed")
    swapped = f_varint(2, T0) + f_str(1, "alice.agent") + body[len(f_str(1, "alice.agent") + f_varint(2, T0)):]
    case("timestamp before agent", resign(swapped), "malformed")
    case("unknown card field", resign(body + f_bytes(8, b"x")), "malformed")
    zero_ts = f_str(1, "alice.agent") + varint(2 << 3) + varint(0) + body[len(f_str(1, "alice.agent") + f_varint(2, T0)):]
    case("timestamp 0 written out", resign(zero_ts), "malformed")
    long_ts = f_str(1, "alice.agent") + varint(2 << 3) + varint(T0)[:-1] + bytes([varint(T0)[-1] | 0x80, 0x00]) + \
        body[len(f_str(1, "alice.agent") + f_varint(2, T0)):]
    case("non-minimal timestamp varint", resign(long_ts), "malformed")
    no_version = f_str(1, "alice.agent") + f_varint(2, T0) + f_str(3, "translate")
    case("no version", resign(no_version), "malformed")
    empty_description = f_str(1, "alice.agent") + f_varint(2, T0) + f_str(3, "translate") + f_str(4, "1.2.0") + varint(5 << 3 | 2) + varint(0)
    case("empty description written out", resign(empty_description), "malformed")
    case("agent not canonical", resign(encode_card(TRANSLATE, "Alice.agent", T0)), "invalid_name")
    case("agent without suffix", resign(encode_card(TRANSLATE, "alice", T0)), "invalid_name")
    case("agent over 253 bytes", resign(encode_card(TRANSLATE, ("a" * 63 + ".") * 4 + "agent", T0)), "malformed")
    case("capability in upper case", resign(card_with(name="Translate")), "invalid_capability")
    case("capability ending in a dot", resign(card_with(name="translate.")), "invalid_capability")
    case("capability of 65 bytes", resign(card_with(name="a" * 65)), "malformed")
    case("version with a leading zero", resign(card_with(version="1.02.0")), "invalid_version")
    case("version with a v", resign(card_with(version="v1.2.0")), "invalid_version")
    case("version of two numbers", resign(card_with(version="1.2")), "invalid_version")
    case("description of 1025 bytes", resign(card_with(description="d" * 1025)), "malformed")
    case("documentation not http(s)", resign(card_with(documentation="ftp://example.org")), "malformed")
    case("documentation with a space", resign(card_with(documentation="https://example.org/a b")), "malformed")
    case("interface name starting with a digit", resign(card_with(interfaces=[{"name": "1x", "methods": []}])), "malformed")
    case("field without a type", resign(card_with(interfaces=[{"name": "I", "methods": [{"name": "m", "parameters": [{"name": "p", "type": ""}]}]}])), "malformed")
    case("17 interfaces", resign(card_with(interfaces=[{"name": f"I{i}"} for i in range(17)])), "malformed")
    case("17 parameters", resign(card_with(interfaces=[{"name": "I", "methods": [{"name": "m", "parameters": [{"name": f"p{j}", "type": "t"} for j in range(17)]}]}])), "malformed")
    invalid_utf8 = f_str(1, "alice.agent") + f_varint(2, T0) + f_str(3, "translate") + f_str(4, "1.2.0") + f_bytes(5, b"\xff\xfe")
    case("description not UTF-8", resign(invalid_utf8), "malformed")

    versions = []
    for text in ["1.2.3", "0.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7", "1.0.0-x.7.z.92", "1.0.0+20130313144700",
                 "1.0.0-beta+exp.sha.5114f85", "1.0.0+21AF26D3----117B344092BD", "18446744073709551615.0.0",
                 "1.2", "1", "01.2.3", "1.02.3", "1.2.03", "v1.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", "1.2.3-a..b",
                 "1.2.3 ", "18446744073709551616.0.0", "1.2.3-alpha_beta", "1.2.3.4", "", "1.0.0-" + "a" * 58]:
        try:
            parse_version(text)
            verdict = "valid"
        except CardError as error:
            verdict = error.kind
        versions.append({"text": text, "expected": verdict})

    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0", "10.0.0"]
    parsed = [parse_version(t) for t in order]
    assert all(compare(parsed[i], parsed[i + 1]) < 0 for i in range(len(parsed) - 1))

    ranges = []
    range_texts = ["^1.2", "^1.2.3", "^0.2.3", "^0.0.3", "^0.0", "^0", "^1", "~1.2.3", "~1.2", "~1", "1.x", "1.2.x", "1",
                   "1.2", "1.2.3", ">=1.0 <2.0", ">1.2", ">1.2.3", "<=1.2", "<1.2", "*", "x", "=1.2.3",
                   "1.2.3 || ^2", ">=1.3.0-beta <2", "^1.2.3-beta.2", ">=1.0.0 <1.0.0",
                   # invalid
                   "", "   ", ">= 1.0", "1.x.3", "^*", ">=x", "1.2.3+b", "1.0 - 2.0", "^1.2 ||", "a.b.c", "01.2",
                   "1.2.3.4", "9223372036854775808", "1.2-beta", "|| 1", " ".join(["1"] * 9), "||".join(["1"] * 9)]
    probe = ["0.0.3", "0.0.4", "0.1.0", "0.2.3", "0.2.9", "0.3.0", "1.0.0", "1.1.9", "1.2.0", "1.2.3", "1.2.9", "1.3.0",
             "1.9.9", "2.0.0", "2.5.0", "3.0.0", "1.2.3-beta.2", "1.2.3-beta.3", "1.3.0-beta", "1.3.0-beta.2",
             "1.4.0-rc.1", "2.0.0-rc.1", "1.2.3+build"]
    for text in range_texts:
        try:
            alternatives = parse_range(text)
        except CardError:
            ranges.append({"range": text, "version": "", "expected": "invalid_range"})
            continue
        for version in probe:
            contained = range_contains(alternatives, parse_version(version))
            ranges.append({"range": text, "version": version, "expected": "true" if contained else "false"})
    return {
        "source": "spec/tools/agent_card.py (spec/cards.md v1)",
        "cards": cards, "decoding": decoding, "versions": versions, "order": order, "ranges": ranges,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write")
    group.add_argument("--check")
    args = parser.parse_args()
    vectors = build()
    text = json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    with open(args.check, encoding="utf-8") as f:
        if f.read() != text:
            print(f"{args.check} differs from what this tool generates", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

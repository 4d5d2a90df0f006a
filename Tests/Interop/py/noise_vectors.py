#!/usr/bin/env python3
"""Generate Tests/Vectors/noise-xx.json: Noise_XX_25519_ChaChaPoly_SHA256 test vectors.

The vectors come from the `noiseprotocol` package (independent of agentd's Swift code), with
fixed static AND ephemeral X25519 private keys, so every byte is reproducible:

  1. "XX fixed payloads": message payloads b"", b"responder payload", b"initiator payload".
  2. "XX libp2p payloads": messages 2 and 3 carry real libp2p NoiseHandshakePayload protobufs
     (identity_key = libp2p PublicKey protobuf of an Ed25519 key, identity_sig = Ed25519
     signature over b"noise-libp2p-static-key:" || sender's static X25519 public key).

After the handshake, 3 transport messages initiator->responder and 2 responder->initiator.

Each vector is checked three ways before anything is written:
  - a second run with fresh noiseprotocol objects must give identical bytes;
  - the receiving side of every message (noiseprotocol) must decrypt it to the payload;
  - a small from-the-spec re-implementation in this file (cryptography primitives only) must
    produce the same messages, handshake hash and ciphertexts.

Usage: noise_vectors.py [--out PATH] [--check]
  --check  regenerate and compare with the existing file instead of writing it (exit 1 if
           different).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from noise.connection import Keypair, NoiseConnection

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "Vectors" / "noise-xx.json"

STATIC_I = bytes([0x01]) * 32
EPHEMERAL_I = bytes([0x02]) * 32
STATIC_R = bytes([0x03]) * 32
EPHEMERAL_R = bytes([0x04]) * 32
ED25519_SEED_I = bytes([0x05]) * 32
ED25519_SEED_R = bytes([0x06]) * 32

REKEY = None  # a TRANSPORT entry that rekeys its direction instead of sending

TRANSPORT = [  # (direction, plaintext), in the order they are encrypted
    ("i->r", b"transport message 1 from initiator"),
    ("r->i", b""),
    ("i->r", bytes(i % 251 for i in range(1000))),
    ("r->i", b"transport message 2 from responder"),
    ("i->r", b"transport message 3 from initiator"),
    # Noise spec section 4.2 / 5.1 Rekey() of one direction (agentd's rekey extension,
    # spec/session.md): both sides replace that direction's key; its nonce carries on.
    ("i->r", REKEY),
    ("i->r", b"initiator message under its second key"),
    ("r->i", REKEY),
    ("r->i", b"responder message under its second key"),
    ("i->r", REKEY),
    ("i->r", b"initiator message under its third key"),
]


# ------------------------------------------------------------------ helpers


def x25519_public(priv: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def pb_bytes_field(field: int, value: bytes) -> bytes:
    """Protobuf length-delimited field (wire type 2)."""
    out = bytearray([(field << 3) | 2])
    n = len(value)
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + value


def base58btc(b: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = int.from_bytes(b, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = alphabet[rem] + out
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + out


def peer_id(public_key_pb: bytes) -> str:
    """Identity multihash (0x00, length) of the PublicKey protobuf, base58btc."""
    return base58btc(bytes([0x00, len(public_key_pb)]) + public_key_pb)


def libp2p_payload(ed_seed: bytes, static_x25519_public: bytes) -> dict:
    ed = Ed25519PrivateKey.from_private_bytes(ed_seed)
    ed_pub = ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_key_pb = bytes([0x08, 0x01, 0x12, 0x20]) + ed_pub  # KeyType Ed25519, Data
    sig = ed.sign(b"noise-libp2p-static-key:" + static_x25519_public)
    payload = pb_bytes_field(1, public_key_pb) + pb_bytes_field(2, sig)
    return {"seed": ed_seed, "public": ed_pub, "public_key_pb": public_key_pb,
            "signature": sig, "payload": payload}


# ------------------------------------------------------------------ noiseprotocol run


def run_noiseprotocol(payload1: bytes, payload2: bytes, payload3: bytes) -> dict:
    def party(initiator: bool, static: bytes, ephemeral: bytes) -> NoiseConnection:
        c = NoiseConnection.from_name(PROTOCOL_NAME)
        c.set_as_initiator() if initiator else c.set_as_responder()
        c.set_prologue(b"")
        c.set_keypair_from_private_bytes(Keypair.STATIC, static)
        c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
        with warnings.catch_warnings():  # "ephemeral keypair already set ... testing"
            warnings.simplefilter("ignore")
            c.start_handshake()
        return c

    i = party(True, STATIC_I, EPHEMERAL_I)
    r = party(False, STATIC_R, EPHEMERAL_R)
    messages = []

    def hs(sender, receiver, direction, payload):
        ct = bytes(sender.write_message(payload))
        got = bytes(receiver.read_message(ct))
        assert got == payload, f"handshake {direction}: receiver decrypted {got.hex()}"
        messages.append({"direction": direction, "payload": payload.hex(), "ciphertext": ct.hex()})

    hs(i, r, "i->r", payload1)
    hs(r, i, "r->i", payload2)
    hs(i, r, "i->r", payload3)
    assert i.handshake_finished and r.handshake_finished
    hh = i.get_handshake_hash()
    assert hh == r.get_handshake_hash()

    nonces = {"i->r": 0, "r->i": 0}
    for direction, pt in TRANSPORT:
        sender, receiver = (i, r) if direction == "i->r" else (r, i)
        if pt is REKEY:
            sender.noise_protocol.cipher_state_encrypt.rekey()
            receiver.noise_protocol.cipher_state_decrypt.rekey()
            messages.append({"direction": direction, "rekey": True})
            continue
        ct = bytes(sender.encrypt(pt))
        assert bytes(receiver.decrypt(ct)) == pt, f"transport {direction} does not decrypt"
        messages.append({"direction": direction, "nonce": nonces[direction],
                         "payload": pt.hex(), "ciphertext": ct.hex()})
        nonces[direction] += 1
    return {"messages": messages, "handshake_hash": bytes(hh).hex()}


# ------------------------------------------------------------------ independent check


class _Spec:
    """Noise spec section 5 (Noise_XX_25519_ChaChaPoly_SHA256), written out for cross-checking."""

    def __init__(self, initiator: bool, s: bytes, e: bytes):
        self.initiator, self.s, self.e = initiator, s, e
        self.h = PROTOCOL_NAME if len(PROTOCOL_NAME) == 32 else hashlib.sha256(PROTOCOL_NAME).digest()
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.rs = self.re = None
        self.mix_hash(b"")  # empty prologue

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    @staticmethod
    def hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        temp = hmac.new(ck, ikm, hashlib.sha256).digest()
        o1 = hmac.new(temp, b"\x01", hashlib.sha256).digest()
        o2 = hmac.new(temp, o1 + b"\x02", hashlib.sha256).digest()
        return o1, o2

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = self.hkdf(self.ck, ikm)
        self.n = 0

    @staticmethod
    def nonce(n: int) -> bytes:
        return b"\x00" * 4 + n.to_bytes(8, "little")

    def encrypt_and_hash(self, p: bytes) -> bytes:
        if self.k is None:
            c = p
        else:
            c = ChaCha20Poly1305(self.k).encrypt(self.nonce(self.n), p, self.h)
            self.n += 1
        self.mix_hash(c)
        return c

    def decrypt_and_hash(self, c: bytes) -> bytes:
        if self.k is None:
            p = c
        else:
            p = ChaCha20Poly1305(self.k).decrypt(self.nonce(self.n), c, self.h)
            self.n += 1
        self.mix_hash(c)
        return p

    @staticmethod
    def dh(priv: bytes, pub: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))

    def write(self, tokens: list[str], payload: bytes) -> bytes:
        out = b""
        for t in tokens:
            if t == "e":
                pub = x25519_public(self.e)
                out += pub
                self.mix_hash(pub)
            elif t == "s":
                out += self.encrypt_and_hash(x25519_public(self.s))
            else:
                self._dh_token(t)
        return out + self.encrypt_and_hash(payload)

    def read(self, tokens: list[str], msg: bytes) -> bytes:
        for t in tokens:
            if t == "e":
                self.re, msg = msg[:32], msg[32:]
                self.mix_hash(self.re)
            elif t == "s":
                n = 48 if self.k is not None else 32
                self.rs = self.decrypt_and_hash(msg[:n])
                msg = msg[n:]
            else:
                self._dh_token(t)
        return self.decrypt_and_hash(msg)

    def _dh_token(self, t: str) -> None:
        # t is "ee", "es", "se" or "ss": first letter is the initiator's key, second the responder's.
        mine_first = self.initiator
        a, b = t[0], t[1]
        if mine_first:
            priv = self.e if a == "e" else self.s
            pub = self.re if b == "e" else self.rs
        else:
            priv = self.e if b == "e" else self.s
            pub = self.re if a == "e" else self.rs
        self.mix_key(self.dh(priv, pub))

    def split(self) -> tuple[bytes, bytes]:
        return self.hkdf(self.ck, b"")


def run_spec(payload1: bytes, payload2: bytes, payload3: bytes) -> dict:
    i = _Spec(True, STATIC_I, EPHEMERAL_I)
    r = _Spec(False, STATIC_R, EPHEMERAL_R)
    pattern = [("i->r", ["e"]), ("r->i", ["e", "ee", "s", "es"]), ("i->r", ["s", "se"])]
    messages = []
    for (direction, tokens), payload in zip(pattern, [payload1, payload2, payload3]):
        sender, receiver = (i, r) if direction == "i->r" else (r, i)
        ct = sender.write(tokens, payload)
        assert receiver.read(tokens, ct) == payload
        messages.append({"direction": direction, "payload": payload.hex(), "ciphertext": ct.hex()})
    assert i.h == r.h and i.rs == x25519_public(STATIC_R) and r.rs == x25519_public(STATIC_I)
    k_ir, k_ri = i.split()
    nonces = {"i->r": 0, "r->i": 0}
    keys = {"i->r": k_ir, "r->i": k_ri}
    for direction, pt in TRANSPORT:
        if pt is REKEY:
            # REKEY(k) = ENCRYPT(k, 2^64 - 1, zerolen, zeros)[:32]; n is unchanged.
            keys[direction] = ChaCha20Poly1305(keys[direction]).encrypt(
                _Spec.nonce(2**64 - 1), bytes(32), b"")[:32]
            messages.append({"direction": direction, "rekey": True})
            continue
        k = keys[direction]
        n = nonces[direction]
        ct = ChaCha20Poly1305(k).encrypt(_Spec.nonce(n), pt, b"")
        messages.append({"direction": direction, "nonce": n, "payload": pt.hex(),
                         "ciphertext": ct.hex()})
        nonces[direction] += 1
    return {"messages": messages, "handshake_hash": i.h.hex(),
            "transport_keys": {"i->r": k_ir.hex(), "r->i": k_ri.hex()}}


# ------------------------------------------------------------------ assembly


def make_vector(name: str, payloads: tuple[bytes, bytes, bytes], extra: dict) -> dict:
    a = run_noiseprotocol(*payloads)
    b = run_noiseprotocol(*payloads)  # fresh objects
    if a != b:
        raise SystemExit(f"{name}: second noiseprotocol run differs")
    spec = run_spec(*payloads)
    if spec["messages"] != a["messages"] or spec["handshake_hash"] != a["handshake_hash"]:
        raise SystemExit(f"{name}: noiseprotocol and the spec re-implementation disagree")
    vec = {
        "name": name,
        "protocol_name": PROTOCOL_NAME.decode(),
        "prologue": "",
        "init_static": STATIC_I.hex(),
        "init_ephemeral": EPHEMERAL_I.hex(),
        "resp_static": STATIC_R.hex(),
        "resp_ephemeral": EPHEMERAL_R.hex(),
        "init_static_public": x25519_public(STATIC_I).hex(),
        "init_ephemeral_public": x25519_public(EPHEMERAL_I).hex(),
        "resp_static_public": x25519_public(STATIC_R).hex(),
        "resp_ephemeral_public": x25519_public(EPHEMERAL_R).hex(),
    }
    vec.update(extra)
    vec["messages"] = a["messages"]
    vec["handshake_hash"] = a["handshake_hash"]
    vec["transport_keys"] = spec["transport_keys"]
    return vec


def build() -> dict:
    v1 = make_vector("XX fixed payloads",
                     (b"", b"responder payload", b"initiator payload"), {})
    pi = libp2p_payload(ED25519_SEED_I, x25519_public(STATIC_I))
    pr = libp2p_payload(ED25519_SEED_R, x25519_public(STATIC_R))
    libp2p_extra = {"libp2p": {
        "init_ed25519_seed": pi["seed"].hex(),
        "init_ed25519_public": pi["public"].hex(),
        "init_peer_id": peer_id(pi["public_key_pb"]),
        "init_identity_key": pi["public_key_pb"].hex(),
        "init_identity_sig": pi["signature"].hex(),
        "resp_ed25519_seed": pr["seed"].hex(),
        "resp_ed25519_public": pr["public"].hex(),
        "resp_peer_id": peer_id(pr["public_key_pb"]),
        "resp_identity_key": pr["public_key_pb"].hex(),
        "resp_identity_sig": pr["signature"].hex(),
        "signed_data": "b\"noise-libp2p-static-key:\" || sender's static X25519 public key",
    }}
    v2 = make_vector("XX libp2p payloads", (b"", pr["payload"], pi["payload"]), libp2p_extra)
    return {
        "source": (
            f"Tests/Interop/py/noise_vectors.py with noiseprotocol {version('noiseprotocol')} "
            f"(cryptography {version('cryptography')}), Noise spec rev 34 target; note "
            "noiseprotocol itself declares compatibility with spec revisions 32 and 33. "
            "Every byte is cross-checked against a from-the-spec (section 5) "
            "re-implementation on cryptography primitives in the same script."
        ),
        "notes": [
            "Private keys are the raw 32 bytes given to X25519 (clamping is part of X25519).",
            "messages: the 3 handshake messages first (ciphertext = the full handshake "
            "message), then transport messages; nonce counts per direction from 0, "
            "associated data empty.",
            "transport_keys: Split() output; i->r is the initiator's sending key.",
            "libp2p vector: message 2 payload is the responder's NoiseHandshakePayload, "
            "message 3 the initiator's; fields identity_key=1, identity_sig=2, no extensions.",
        ],
        "vectors": [v1, v2],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    doc = build()
    text = json.dumps(doc, indent=2) + "\n"
    if args.check:
        # Compare the vectors only: "source" names the library versions that made them.
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        if old.get("vectors") != doc["vectors"]:
            print(f"{args.out}: vectors differ from regenerated ones", file=sys.stderr)
            return 1
        print(f"{args.out}: vectors up to date", file=sys.stderr)
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

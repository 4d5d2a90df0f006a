#!/usr/bin/env python3
"""py-libp2p 0.8.1 kad-dht test peer for agentd interop tests and benchmarks.

Uses py-libp2p's own KadDHT (protocol /ipfs/kad/1.0.0) in SERVER mode on hosts built like
peer.py: TCP on 127.0.0.1 (port 0), security /noise only, muxer /yamux/1.0.0 only, Ed25519
identity, AutoConnector disabled. stdout carries one JSON object per line (flushed at once);
logs go to stderr (level from $PEER_LOG, default WARNING).

Single node (interop tests):

  kad_peer.py [--listen /ip4/127.0.0.1/tcp/0] [--seed HEX32] [--no-inbound-events]
      {"event":"ready","peer_id":…,"addrs":["/ip4/127.0.0.1/tcp/P/p2p/…"]}
      then one command per stdin line, each answered by one line carrying the same "id":
        {"id":1,"cmd":"connect","addr":"/ip4/…/tcp/…/p2p/…"}
            -> {"id":1,"ok":true,"peer_id":…,"added":true,"routing_table_size":n}
        {"cmd":"routing_table"}                 -> {"ok":true,"peers":[…]}
        {"cmd":"find_closest","key_hex":"…"}    (or "peer_id": use that id's bytes as key)
            -> {"ok":true,"peers":[…],"addrs":{pid:[…]},"elapsed_s":…,"messages":n}
        {"cmd":"find_peer","peer_id":"…"[,"network":true]}
            -> {"ok":true,"found":bool,"local":bool,"peers":[…],"addrs":[…],
                "elapsed_s":…,"messages":n}
            py's find_peer answers from its routing table / peerstore when it can ("local":
            true, no message sent); "network":true forces the iterative lookup.
        {"cmd":"put_value","key":"<str>","value_hex":"…"}
            -> {"ok":true,"elapsed_s":…,"messages":n,"stored_at":k,"put_requests":m}
        {"cmd":"get_value","key":"<str>"}     -> {"ok":true,"value_hex":"…"|null,…}
            (py answers from its own store first if it holds the key)
        {"cmd":"query_peer","peer_id":…,"key_hex":…}   one FIND_NODE to one peer
            -> {"ok":true,"peers":[…],"addrs":{…}}
        {"cmd":"get_value_from","peer_id":…,"key":…}   one GET_VALUE to one peer
            -> {"ok":true,"value_hex":…|null,"closer_peers":[…]}
        {"cmd":"put_value_to","peer_id":…,"key":…,"value_hex":…}  one PUT_VALUE
            -> {"ok":true,"stored":bool}
        {"cmd":"stats"}   -> {"ok":true,"totals":{"find_node":…,"get_value":…,"put_value":…,
                                 "put_ok":…},"routing_table_size":…,"connected":[…],"rss_bytes":…}
        {"cmd":"stop"}                          -> {"ok":true}, then exit 0
      Any command may carry "timeout" (seconds, default 60). Failures are answered with
      {"ok":false,"error":"…"}; nothing a command does ends the process. Every kad request
      that reaches this node is reported as
      {"event":"inbound_kad","peer_id":…,"type":"FIND_NODE"|…,"key_hex":…}.

Network of N nodes in one process (benchmark):

  kad_peer.py --network N [--seed-base INT] [--fanout F] [--refresh-rounds R]
      {"event":"ready","nodes":N,"peer_ids":[…],"addrs":[…],"setup_s":…,"phases_s":{…},
       "rt_sizes":{"min":…,"avg":…,"max":…},"bootstrap_requests":…,"connections":…,
       "rss_bytes":…}
      Bootstrap: node i (in order) connects to node 0 and --fanout random earlier nodes, puts
      them into its routing table and looks itself up; then --refresh-rounds rounds in which
      every node looks itself up again (--parallel at a time).
      commands (accepted from the start; answered once the network is ready):
        {"id":1,"cmd":"bench","lookups":M,"seed":S[,"mode":"closest"|"find_peer"]
                               [,"warmup":W][,"lookup_timeout":30]}
            -> {"ok":true,"latencies_ms":[…],"messages":[…],"found":K,"failed":E,
                "p50_ms":…,"p99_ms":…,"mean_messages":…,"connections_before":…,
                "connections_after":…,"rss_bytes":…}
        {"cmd":"routing_table","node":i}, {"cmd":"stats"}, {"cmd":"stop"}
      Lookups run one after another. "closest" (default) is py's iterative FIND_NODE lookup
      (PeerRouting.find_closest_peers_network) for the peer id of a random node, started at
      another random node; "found" counts results that contain the target. "find_peer" calls
      KadDHT.find_peer, which answers from the routing table / peerstore without any message
      once the network is bootstrapped. "messages" = FIND_NODE requests sent by that lookup.
      "warmup" lookups run first and are not reported (lookups dial peers not yet connected).

Ends with exit 0 on {"cmd":"stop"}, EOF on stdin, SIGTERM or SIGINT, in well under 5 s (a
watchdog forces the exit 2.5 s after the stop). EOF stops at once: commands still running are
abandoned. A fatal start-up error prints {"event":"error","message":…} and exits 1.
"""

from __future__ import annotations

import os
import signal
import sys

# A signal that arrives while the (slow, ~0.5 s) imports below run must not kill us with
# rc -15: remember it and act on it once trio is up.
_early_signals: list[int] = []


def _early_handler(signum, _frame):  # noqa: ANN001
    _early_signals.append(signum)


signal.signal(signal.SIGTERM, _early_handler)
signal.signal(signal.SIGINT, _early_handler)

# Keep stdout for our JSON lines only; anything a library prints goes to stderr.
_OUT = os.fdopen(os.dup(1), "w", buffering=1)
sys.stdout = sys.stderr

import argparse  # noqa: E402
import contextlib  # noqa: E402
import contextvars  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import multiaddr  # noqa: E402
import trio  # noqa: E402

from libp2p import new_host  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
import libp2p.kad_dht.kad_dht as kad_module  # noqa: E402
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID  # noqa: E402
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT  # noqa: E402
from libp2p.kad_dht.pb.kademlia_pb2 import Message  # noqa: E402
from libp2p.kad_dht.peer_routing import PeerRouting  # noqa: E402
from libp2p.kad_dht.value_store import ValueStore  # noqa: E402
from libp2p.network.config import ConnectionConfig  # noqa: E402
from libp2p.peer.id import ID as PeerID  # noqa: E402
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr  # noqa: E402
from libp2p.security.noise.transport import (  # noqa: E402
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux  # noqa: E402
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402

log = logging.getLogger("kad_peer.py")

assert str(KAD_PROTOCOL_ID) == "/ipfs/kad/1.0.0", KAD_PROTOCOL_ID

# How long the process may take to wind down after stop / EOF / signal before it is forced out.
EXIT_GRACE_S = 2.5
DEFAULT_CMD_TIMEOUT_S = 60.0
ADDR_TTL_S = 24 * 3600


def emit(obj: dict) -> None:
    _OUT.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _OUT.flush()


class PeerError(Exception):
    pass


def describe(exc: BaseException, depth: int = 0) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e, depth) for e in exc.exceptions)
    if type(exc).__name__ == "MultiError" and depth < 6:  # libp2p.exceptions.MultiError
        return "; ".join(describe(e, depth + 1) for e in getattr(exc, "errors", []))
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    text = str(exc).replace("\n", " | ")
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and depth < 6:
        out += f" <- {describe(cause, depth + 1)}"
    return out


# ---------------------------------------------------------------- request counting
#
# Every outbound kad request py makes goes through one of three methods; wrapping them (once, at
# class level) counts requests per command. The counter lives in a context variable: trio tasks
# inherit a copy of the spawning task's context, so tasks a lookup starts share its counter.

_COUNTER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kad_counter", default=None)
TOTALS = {"find_node": 0, "get_value": 0, "put_value": 0, "put_ok": 0}


def _count(kind: str, n: int = 1) -> None:
    TOTALS[kind] += n
    c = _COUNTER.get()
    if c is not None:
        c[kind] = c.get(kind, 0) + n


def install_request_counting() -> None:
    orig_find = PeerRouting._query_peer_for_closest
    orig_get = ValueStore._get_from_peer
    orig_put = ValueStore._store_at_peer

    async def query_peer_for_closest(self, peer, target_key):  # noqa: ANN001
        if peer != self.host.get_id():
            _count("find_node")
        return await orig_find(self, peer, target_key)

    async def get_from_peer(self, peer_id, key, *a, **kw):  # noqa: ANN001
        if peer_id != self.local_peer_id:
            _count("get_value")
        return await orig_get(self, peer_id, key, *a, **kw)

    async def store_at_peer(self, peer_id, key, value, *a, **kw):  # noqa: ANN001
        if peer_id != self.local_peer_id:
            _count("put_value")
        ok = await orig_put(self, peer_id, key, value, *a, **kw)
        if ok and peer_id != self.local_peer_id:
            _count("put_ok")
        return ok

    PeerRouting._query_peer_for_closest = query_peer_for_closest
    ValueStore._get_from_peer = get_from_peer
    ValueStore._store_at_peer = store_at_peer


@contextlib.contextmanager
def counting():
    c: dict = {}
    token = _COUNTER.set(c)
    try:
        yield c
    finally:
        _COUNTER.reset(token)


def install_inbound_events() -> None:
    """Report every kad request the DHT's stream handler reads (kad_dht.py is the only user of
    this function inside that module, so patching the module global hooks exactly that)."""
    orig_read = kad_module.read_varint_prefixed_bytes_limited

    async def reading(stream, limit):  # noqa: ANN001
        data = await orig_read(stream, limit)
        ev: dict = {"event": "inbound_kad"}
        try:
            ev["peer_id"] = stream.muxed_conn.peer_id.to_base58()
        except Exception:
            ev["peer_id"] = None
        try:
            m = Message()
            m.ParseFromString(data)
            ev["type"] = Message.MessageType.Name(m.type)
            ev["key_hex"] = m.key.hex()
        except Exception:
            ev["type"] = "UNPARSEABLE"
        ev["bytes"] = len(data)
        emit(ev)
        return data

    kad_module.read_varint_prefixed_bytes_limited = reading


# ---------------------------------------------------------------- host


def make_host(seed: bytes | None):
    key_pair = ed25519_key_pair(seed)
    host = new_host(
        key_pair=key_pair,
        sec_opt={
            TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
                key_pair, noise_privkey=x25519_key_pair().private_key
            )
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        # With the default of 3, every dial waits out a 250 ms happy-eyeballs delay.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )

    # py's AutoConnector re-dials peers it learnt about every 5-30 s; a test peer must not open
    # connections nobody asked for.
    async def _no_auto_connect() -> None:
        return None

    host.get_network().auto_connector.maybe_connect = _no_auto_connect
    return host


def own_addrs(host) -> list[str]:
    pid = host.get_id().to_base58()
    return [f"{a}/p2p/{pid}" for a in host.get_transport_addrs()]


def peerstore_addrs(host, peer_id: PeerID) -> list[str]:
    try:
        return [str(a) for a in host.get_peerstore().addrs(peer_id)]
    except Exception:
        return []


def parse_peer_id(text) -> PeerID:
    if not isinstance(text, str) or not text:
        raise PeerError("peer_id missing")
    try:
        return PeerID.from_base58(text)
    except Exception as exc:
        raise PeerError(f"bad peer_id {text!r}: {exc}") from None


def need_str(cmd: dict, name: str) -> str:
    v = cmd.get(name)
    if not isinstance(v, str):
        raise PeerError(f"{name} missing or not a string")
    return v


def need_hex(cmd: dict, name: str) -> bytes:
    v = need_str(cmd, name)
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise PeerError(f"{name} is not hex") from None


class Node:
    """One host + its KadDHT."""

    def __init__(self, seed: bytes | None) -> None:
        self.host = make_host(seed)
        self.dht = KadDHT(self.host, DHTMode.SERVER)
        self.peer_id = self.host.get_id()

    async def start(self, stack: contextlib.AsyncExitStack, listen: multiaddr.Multiaddr) -> None:
        await stack.enter_async_context(self.host.run([listen]))
        await stack.enter_async_context(background_trio_service(self.dht))

    def addrs(self) -> list[str]:
        return own_addrs(self.host)

    def rt_peers(self) -> list[PeerID]:
        return self.dht.routing_table.get_peer_ids()

    async def connect(self, info: PeerInfo) -> bool:
        """Connect and put the peer into the routing table (py would not do so by itself)."""
        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, ADDR_TTL_S)
        await self.host.connect(info)
        # host.connect() stores the addresses with a 120 s TTL; make them outlive the test.
        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, ADDR_TTL_S)
        return await self.dht.routing_table.add_peer(
            PeerInfo(info.peer_id, info.addrs), skip_server_mode_check=True
        )

    def addr_map(self, peers: list[PeerID]) -> dict:
        return {p.to_base58(): peerstore_addrs(self.host, p) for p in peers}


# ---------------------------------------------------------------- command plumbing


async def stdin_lines(send: trio.MemorySendChannel) -> None:
    """Feed stdin lines into `send`; close it at EOF. A thread does the blocking reads."""
    stdin = sys.stdin.buffer

    async with send:
        while True:
            try:
                line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
            except (OSError, ValueError):
                line = b""
            if not line:
                log.info("stdin reached EOF")
                return
            line = line.strip()
            if line:
                await send.send(line)


class Dispatcher:
    """Commands are read from the start; all but "stop" wait until `ready` is set (so "stop" and
    EOF end the process promptly even while a network is still bootstrapping)."""

    def __init__(self, handlers: dict, stop: trio.Event, ready: trio.Event | None = None) -> None:
        self.handlers = handlers
        self.stop = stop
        self.ready = ready

    async def run_one(self, raw: bytes) -> None:
        cid = None
        try:
            cmd = json.loads(raw)
            if not isinstance(cmd, dict):
                raise PeerError("command must be a JSON object")
        except Exception as exc:
            emit({"id": None, "ok": False, "error": f"bad command line: {describe(exc)}"})
            return
        cid = cmd.get("id")
        name = cmd.get("cmd")
        if name == "stop":
            emit({"id": cid, "ok": True})
            self.stop.set()
            return
        handler = self.handlers.get(name)
        if handler is None:
            emit({"id": cid, "ok": False, "error": f"unknown cmd {name!r}"})
            return
        timeout = cmd.get("timeout", DEFAULT_CMD_TIMEOUT_S)
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = DEFAULT_CMD_TIMEOUT_S
        if self.ready is not None:
            await self.ready.wait()
        try:
            with trio.fail_after(timeout):
                result = await handler(cmd)
            out = {"id": cid, "ok": True}
            out.update(result)
        except trio.TooSlowError:
            out = {"id": cid, "ok": False, "error": f"timed out after {timeout} s"}
        except Exception as exc:  # noqa: BLE001
            log.debug("command %s failed", name, exc_info=True)
            out = {"id": cid, "ok": False, "error": describe(exc)}
        emit(out)

    async def serve(self, nursery: trio.Nursery) -> None:
        """Read commands until EOF or stop; each runs in its own task (answers may interleave,
        matched by "id")."""
        send, recv = trio.open_memory_channel(64)
        nursery.start_soon(stdin_lines, send)
        async with recv:
            async for raw in recv:
                nursery.start_soon(self.run_one, raw)
                if self.stop.is_set():
                    return
        self.stop.set()  # EOF


# ---------------------------------------------------------------- single node


def single_handlers(node: Node) -> dict:
    host = node.host
    dht = node.dht

    async def connect(cmd: dict) -> dict:
        addr = need_str(cmd, "addr")
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise PeerError(f"bad addr {addr!r}: {describe(exc)}") from None
        added = await node.connect(info)
        return {"peer_id": info.peer_id.to_base58(), "added": added,
                "routing_table_size": dht.routing_table.size()}

    async def routing_table(cmd: dict) -> dict:
        return {"peers": [p.to_base58() for p in node.rt_peers()]}

    async def find_closest(cmd: dict) -> dict:
        if "key_hex" in cmd:
            key = need_hex(cmd, "key_hex")
        else:
            key = parse_peer_id(cmd.get("peer_id")).to_bytes()
        count = int(cmd.get("count", 20))
        with counting() as c:
            t0 = time.perf_counter()
            peers = await dht.peer_routing.find_closest_peers_network(key, count)
            elapsed = time.perf_counter() - t0
        return {"peers": [p.to_base58() for p in peers], "addrs": node.addr_map(peers),
                "elapsed_s": round(elapsed, 6), "messages": c.get("find_node", 0)}

    async def find_peer(cmd: dict) -> dict:
        target = parse_peer_id(cmd.get("peer_id"))
        local = (dht.routing_table.get_peer_info(target) is not None
                 or bool(peerstore_addrs(host, target)))
        with counting() as c:
            t0 = time.perf_counter()
            if cmd.get("network"):
                closest = await dht.peer_routing.find_closest_peers_network(target.to_bytes())
                addrs = peerstore_addrs(host, target)
                found = target in closest or bool(addrs)
                local = False
            else:
                info = await dht.find_peer(target)
                found = info is not None
                addrs = [str(a) for a in info.addrs] if info is not None else []
            elapsed = time.perf_counter() - t0
        return {"found": found, "local": local,
                "peers": [target.to_base58()] if found else [], "addrs": addrs,
                "elapsed_s": round(elapsed, 6), "messages": c.get("find_node", 0)}

    async def put_value(cmd: dict) -> dict:
        key = need_str(cmd, "key")
        value = need_hex(cmd, "value_hex")
        with counting() as c:
            t0 = time.perf_counter()
            await dht.put_value(key, value)
            elapsed = time.perf_counter() - t0
        return {"elapsed_s": round(elapsed, 6), "messages": c.get("find_node", 0),
                "put_requests": c.get("put_value", 0), "stored_at": c.get("put_ok", 0)}

    async def get_value(cmd: dict) -> dict:
        key = need_str(cmd, "key")
        local = dht.value_store.get(key.encode("utf-8")) is not None
        quorum = int(cmd.get("quorum", 0))
        with counting() as c:
            t0 = time.perf_counter()
            value = await dht.get_value(key, quorum=quorum)
            elapsed = time.perf_counter() - t0
        return {"value_hex": value.hex() if value is not None else None, "local": local,
                "elapsed_s": round(elapsed, 6), "messages": c.get("find_node", 0),
                "get_requests": c.get("get_value", 0)}

    async def query_peer(cmd: dict) -> dict:
        peer = parse_peer_id(cmd.get("peer_id"))
        if "key_hex" in cmd:
            key = need_hex(cmd, "key_hex")
        else:
            key = parse_peer_id(cmd.get("target")).to_bytes()
        t0 = time.perf_counter()
        peers = await dht.peer_routing._query_peer_for_closest(peer, key)
        return {"peers": [p.to_base58() for p in peers], "addrs": node.addr_map(peers),
                "elapsed_s": round(time.perf_counter() - t0, 6)}

    async def get_value_from(cmd: dict) -> dict:
        peer = parse_peer_id(cmd.get("peer_id"))
        key = need_str(cmd, "key").encode("utf-8")
        res = await dht.value_store._get_from_peer(
            peer, key, return_record=True, return_closer_peers=True)
        rec, closer = res if isinstance(res, tuple) else (res, [])
        return {"value_hex": rec.value.hex() if rec is not None else None,
                "closer_peers": [p.to_base58() for p in closer]}

    async def put_value_to(cmd: dict) -> dict:
        peer = parse_peer_id(cmd.get("peer_id"))
        key = need_str(cmd, "key").encode("utf-8")
        value = need_hex(cmd, "value_hex")
        stored = await dht.value_store._store_at_peer(peer, key, value)
        return {"stored": bool(stored)}

    async def stats(cmd: dict) -> dict:
        return {"totals": dict(TOTALS), "routing_table_size": dht.routing_table.size(),
                "connected": [p.to_base58() for p in host.get_connected_peers()],
                "rss_bytes": rss_bytes()}

    return {"connect": connect, "routing_table": routing_table, "find_closest": find_closest,
            "find_peer": find_peer, "put_value": put_value, "get_value": get_value,
            "query_peer": query_peer, "get_value_from": get_value_from,
            "put_value_to": put_value_to, "stats": stats}


async def run_single(args, stop: trio.Event) -> int:
    seed = None
    if args.seed is not None:
        try:
            seed = bytes.fromhex(args.seed)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise PeerError("--seed must be 32 bytes of hex")
    if not args.no_inbound_events:
        install_inbound_events()
    node = Node(seed)
    async with contextlib.AsyncExitStack() as stack:
        # (No cancel scope around this: the services entered here outlive it. Starting only
        # binds a loopback listener.)
        await node.start(stack, multiaddr.Multiaddr(args.listen))
        emit({"event": "ready", "peer_id": node.peer_id.to_base58(), "addrs": node.addrs(),
              "protocol": str(KAD_PROTOCOL_ID)})
        async with trio.open_nursery() as nursery:
            disp = Dispatcher(single_handlers(node), stop)
            nursery.start_soon(disp.serve, nursery)
            await stop.wait()
            nursery.cancel_scope.cancel()
        await shutdown(stack)
    return 0


async def shutdown(stack: contextlib.AsyncExitStack) -> None:
    """Close hosts and services, but never for longer than the exit grace allows."""
    with trio.move_on_after(EXIT_GRACE_S - 0.5) as cs:
        try:
            await stack.aclose()
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, trio.Cancelled):
                raise
            log.debug("error while shutting down: %s", describe(exc))
    if cs.cancelled_caught:
        log.info("shutdown took too long; leaving the rest to process exit")


# ---------------------------------------------------------------- network mode


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    idx = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[idx]


def node_seed(base: int | None, i: int) -> bytes | None:
    if base is None:
        return None
    return hashlib.sha256(f"kad_peer:{base}:{i}".encode()).digest()


async def start_network(args, stack: contextlib.AsyncExitStack) -> list[Node]:
    listen = multiaddr.Multiaddr(args.listen)
    nodes = [Node(node_seed(args.seed_base, i)) for i in range(args.network)]
    for node in nodes:
        await node.start(stack, listen)
    return nodes


async def bootstrap_network(args, nodes: list[Node], t0: float) -> dict:
    n = len(nodes)
    rng = random.Random(args.seed_base if args.seed_base is not None else None)
    t_started = time.perf_counter()
    infos = [PeerInfo(nd.peer_id, nd.host.get_transport_addrs()) for nd in nodes]

    async def connect(a: int, b: int) -> None:
        try:
            with trio.fail_after(10):
                await nodes[a].connect(infos[b])
        except Exception as exc:  # noqa: BLE001
            log.warning("bootstrap: node %d -> node %d failed: %s", a, b, describe(exc))

    async def self_lookup(i: int) -> None:
        try:
            with trio.fail_after(30):
                await nodes[i].dht.peer_routing.find_closest_peers_network(
                    nodes[i].peer_id.to_bytes())
        except Exception as exc:  # noqa: BLE001
            log.warning("bootstrap: self lookup of node %d failed: %s", i, describe(exc))

    # Join one after another: node i meets node 0 and a few random earlier nodes, then looks
    # itself up, which fills its table and puts it into the tables of everyone it queries.
    for i in range(1, n):
        targets = [0] + rng.sample(range(1, i), min(args.fanout, i - 1))
        async with trio.open_nursery() as nursery:
            for t in targets:
                nursery.start_soon(connect, i, t)
        await self_lookup(i)
    t_joined = time.perf_counter()
    # Refresh rounds: every node looks itself up again (a few at a time), so early nodes learn
    # about the ones that joined after them.
    for _ in range(args.refresh_rounds):
        sem = trio.Semaphore(max(1, args.parallel))

        async def refresh(i: int) -> None:
            async with sem:
                await self_lookup(i)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(refresh, i)
    t_done = time.perf_counter()
    sizes = [nd.dht.routing_table.size() for nd in nodes]
    info = {
        "setup_s": round(t_done - t0, 3),
        "phases_s": {"start": round(t_started - t0, 3), "join": round(t_joined - t_started, 3),
                     "refresh": round(t_done - t_joined, 3)},
        "rt_sizes": {"min": min(sizes), "avg": round(sum(sizes) / n, 2), "max": max(sizes)},
        "bootstrap_requests": TOTALS["find_node"],
        "connections": total_connections(nodes),
    }
    return info


def total_connections(nodes: list[Node]) -> int:
    total = 0
    for nd in nodes:
        try:
            total += sum(len(v) for v in nd.host.get_network().connections.values())
        except Exception:
            pass
    return total


def network_handlers(nodes: list[Node]) -> dict:
    n = len(nodes)

    async def bench(cmd: dict) -> dict:
        if n < 2:
            raise PeerError("bench needs at least 2 nodes")
        lookups = int(cmd.get("lookups", 50))
        rng = random.Random(cmd.get("seed", 0))
        mode = cmd.get("mode", "closest")
        per_lookup_timeout = float(cmd.get("lookup_timeout", 30))
        warmup = int(cmd.get("warmup", 0))
        conns_before = total_connections(nodes)
        latencies: list[float] = []
        messages: list[int] = []
        found = failed = 0
        for i in range(warmup + lookups):
            src, dst = rng.sample(range(n), 2)
            target = nodes[dst].peer_id
            with counting() as c:
                t0 = time.perf_counter()
                ok = False
                try:
                    with trio.fail_after(per_lookup_timeout):
                        if mode == "find_peer":
                            ok = await nodes[src].dht.find_peer(target) is not None
                        else:
                            peers = await nodes[src].dht.peer_routing \
                                .find_closest_peers_network(target.to_bytes())
                            ok = target in peers
                except Exception as exc:  # noqa: BLE001
                    failed += 1
                    log.warning("lookup %d -> %d failed: %s", src, dst, describe(exc))
                lat = (time.perf_counter() - t0) * 1000.0
            if i < warmup:
                continue
            latencies.append(round(lat, 3))
            messages.append(c.get("find_node", 0))
            found += ok
        s = sorted(latencies)
        return {"lookups": lookups, "mode": mode, "latencies_ms": latencies,
                "messages": messages, "found": found, "failed": failed,
                "p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
                "mean_messages": round(sum(messages) / len(messages), 2) if messages else None,
                "connections_before": conns_before, "connections_after": total_connections(nodes),
                "rss_bytes": rss_bytes()}

    async def routing_table(cmd: dict) -> dict:
        i = int(cmd.get("node", 0))
        if not 0 <= i < n:
            raise PeerError(f"node must be in [0, {n})")
        return {"node": i, "peers": [p.to_base58() for p in nodes[i].rt_peers()]}

    async def stats(cmd: dict) -> dict:
        sizes = [nd.dht.routing_table.size() for nd in nodes]
        return {"totals": dict(TOTALS), "rt_sizes": sizes,
                "connections": total_connections(nodes), "rss_bytes": rss_bytes()}

    return {"bench": bench, "routing_table": routing_table, "stats": stats}


async def run_network(args, stop: trio.Event) -> int:
    if args.network < 1:
        raise PeerError("--network must be at least 1")
    async with contextlib.AsyncExitStack() as stack:
        t0 = time.perf_counter()
        # (Not under a cancel scope: the services entered here outlive it.)
        nodes = await start_network(args, stack)
        ready = trio.Event()

        async def bootstrap() -> None:
            with trio.fail_after(args.setup_timeout):
                info = await bootstrap_network(args, nodes, t0)
            emit({"event": "ready", "nodes": len(nodes),
                  "peer_ids": [nd.peer_id.to_base58() for nd in nodes],
                  "addrs": [nd.addrs()[0] if nd.addrs() else None for nd in nodes],
                  **info, "rss_bytes": rss_bytes()})
            ready.set()

        async with trio.open_nursery() as nursery:
            disp = Dispatcher(network_handlers(nodes), stop, ready)
            nursery.start_soon(disp.serve, nursery)
            nursery.start_soon(bootstrap)
            await stop.wait()
            nursery.cancel_scope.cancel()
        await shutdown(stack)
    return 0


# ---------------------------------------------------------------- main


class _DropKnownNoise(logging.Filter):
    """py's kad handler logs this WARNING whenever a requester half-closes its stream after the
    last request, i.e. after every single request py itself sends. Nothing is wrong then."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not record.getMessage().startswith("Failed to read DHT message from stream")
        except Exception:
            return True


def quiet_known_noise(network: bool) -> None:
    logging.getLogger("libp2p.kad_dht.kad_dht").addFilter(_DropKnownNoise())
    if network:
        # Dozens of nodes produce a lot of warnings; a reader that does not drain stderr must
        # never block us. PEER_LOG in the environment turns this off.
        logging.getLogger("libp2p").setLevel(logging.ERROR)


def arm_exit_watchdog(rc: int = 0) -> None:
    """Once we decided to stop, make sure the process is gone within EXIT_GRACE_S."""
    def _force() -> None:
        try:
            _OUT.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)

    t = threading.Timer(EXIT_GRACE_S, _force)
    t.daemon = True
    t.start()


async def amain(args) -> int:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        stop = trio.Event()
        if _early_signals:
            log.info("signal %d during start-up: stopping", _early_signals[0])
            return 0

        async def watch_signals() -> None:
            async for signum in signals:
                log.info("signal %d: stopping", signum)
                stop.set()
                return

        async def watch_stop() -> None:
            await stop.wait()
            arm_exit_watchdog(0)

        async with trio.open_nursery() as outer:
            outer.start_soon(watch_signals)
            outer.start_soon(watch_stop)
            try:
                if args.network is not None:
                    rc = await run_network(args, stop)
                else:
                    rc = await run_single(args, stop)
            finally:
                outer.cancel_scope.cancel()
        return rc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    p.add_argument("--seed", help="single node: 32-byte hex Ed25519 seed")
    p.add_argument("--no-inbound-events", action="store_true",
                   help="single node: do not print inbound_kad events")
    p.add_argument("--network", type=int, metavar="N", help="run N nodes in this process")
    p.add_argument("--seed-base", type=int, help="network: derive node keys from this")
    p.add_argument("--fanout", type=int, default=2,
                   help="network: random earlier nodes each joiner connects to besides node 0")
    p.add_argument("--refresh-rounds", type=int, default=1,
                   help="network: self-lookup rounds over all nodes after everyone joined")
    p.add_argument("--parallel", type=int, default=4,
                   help="network: concurrent self lookups during refresh rounds")
    p.add_argument("--setup-timeout", type=float, default=300.0)
    args = p.parse_args()

    level = os.environ.get("PEER_LOG", "WARNING").upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_known_noise(network=args.network is not None and "PEER_LOG" not in os.environ)
    install_request_counting()

    try:
        rc = trio.run(amain, args)
    except BaseException as exc:  # noqa: BLE001
        log.debug("failure", exc_info=True)
        if isinstance(exc, KeyboardInterrupt):
            rc = 0
        else:
            log.error("fatal: %s", describe(exc), exc_info=True)
            emit({"event": "error", "message": describe(exc)})
            rc = 1
    _OUT.flush()
    sys.stderr.flush()
    # Do not wait for abandoned worker threads (stdin reader) or library leftovers.
    os._exit(rc)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""py-libp2p 0.8.1 test peer for agentd interop tests.

Security /noise only, muxer /yamux/1.0.0 only, TCP on 127.0.0.1 (port 0), Ed25519 identity.
Serves identify (/ipfs/id/1.0.0, plus identify push), ping (/ipfs/ping/1.0.0) and perf
(/perf/1.0.0) with py-libp2p's own handlers.

stdout carries one JSON object per line (flushed at once); everything else goes to stderr.

  peer.py listen [--seed HEX32] [--ignore-stdin] [--listen MULTIADDR] [--relay-hop [--max-reservations N]]
                 [--reserve-at RELAY_MULTIADDR] [--dcutr]
      {"event":"ready","peer_id":…,"addrs":["/ip4/127.0.0.1/tcp/P/p2p/…"]}
      --listen replaces /ip4/127.0.0.1/tcp/0 (the NAT lab's py relay: /ip4/198.18.0.1/tcp/4001).
      --relay-hop also serves circuit relay v2 (hop and stop) with py-libp2p's CircuitV2Protocol
      and its default limits (max_reservations 4 in total unless --max-reservations).
      --reserve-at RELAY connects to that relay after the ready line, reserves (as dial --reserve,
      plus "circuit": RELAY/p2p-circuit/p2p/SELF) and accepts circuits through it (STOP);
      --dcutr runs py's DCUtRProtocol, which also initiates on every relayed connection (quirk 18).
      then per inbound connection {"event":"connected","peer_id":…}, and once our own identify
      request to that peer is answered {"event":"identify",…}; {"event":"disconnected",…}
      when a connection closes. Runs until SIGTERM/SIGINT or EOF on stdin; exits 0.

  peer.py dial MULTIADDR [--identify] [--ping N] [--perf-upload B --perf-download B]
                         [--reserve] [--seed HEX32] [--timeout S]
      connects, then runs identify, ping, perf in that order, then {"event":"done"}, exit 0.
      A MULTIADDR RELAY/p2p-circuit/p2p/PEER is dialled through the relay with py's
      CircuitV2Transport as shipped (it reserves for the dialer first: quirk 12).
      --reserve first sends one circuit relay v2 RESERVE (a bare {type: RESERVE}) on a fresh hop
      stream and prints {"event":"reservation","status":N,"expire":UNIX,"addrs":[…]}; then
      waits for EOF on stdin before "done" (the reservation lives as long as the connection).
      Any failure: {"event":"error","message":…}, exit 1.
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
import dataclasses  # noqa: E402
from contextlib import AsyncExitStack  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import secrets  # noqa: E402
import time  # noqa: E402

import multiaddr  # noqa: E402
import trio  # noqa: E402

from libp2p import new_host  # noqa: E402
from libp2p.abc import INotifee  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair  # noqa: E402
from libp2p.crypto.serialization import deserialize_public_key  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.host.ping import ID as PING_ID, PING_LENGTH  # noqa: E402
from libp2p.identity.identify.identify import ID as IDENTIFY_ID  # noqa: E402
from libp2p.identity.identify.pb.identify_pb2 import Identify  # noqa: E402
from libp2p.network.config import ConnectionConfig  # noqa: E402
from libp2p.peer.id import ID as PeerID  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.perf.perf_service import PerfService  # noqa: E402
from libp2p.relay.circuit_v2.protocol import (  # noqa: E402
    DEFAULT_RELAY_LIMITS,
    CircuitV2Protocol,
)
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage  # noqa: E402
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol  # noqa: E402
from libp2p.relay.circuit_v2.config import RelayConfig  # noqa: E402
from libp2p.relay.circuit_v2.transport import CircuitV2Transport  # noqa: E402
from libp2p.peer.peerinfo import PeerInfo  # noqa: E402
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg  # noqa: E402
from libp2p.security.noise.transport import (  # noqa: E402
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux  # noqa: E402

log = logging.getLogger("peer.py")


def emit(obj: dict) -> None:
    _OUT.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _OUT.flush()


class PeerError(Exception):
    pass


# ---------------------------------------------------------------- host


def make_host(seed_hex: str | None, auto_connect: bool = False, quic: bool = False):
    seed = None
    if seed_hex is not None:
        seed = bytes.fromhex(seed_hex)
        if len(seed) != 32:
            raise PeerError("--seed must be 32 bytes of hex")
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
        # QUIC v1 (aioquic) for /udp/N/quic-v1 addresses: TLS replaces Noise, QUIC streams yamux.
        enable_quic=quic,
    )
    if not auto_connect:
        # py's AutoConnector re-dials peers it learnt about (e.g. a peer that disconnected)
        # every 5-30 s; a test peer must not open connections nobody asked for.
        async def _no_auto_connect() -> None:
            return None

        host.get_network().auto_connector.maybe_connect = _no_auto_connect
    return host


LISTEN_ADDR = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def own_addrs(host) -> list[str]:
    pid = host.get_id().to_base58()
    return [f"{a}/p2p/{pid}" for a in host.get_transport_addrs()]


# ---------------------------------------------------------------- protocols


async def read_to_eof(stream, limit: int = 1 << 20) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except Exception as exc:  # StreamEOF and friends
            if type(exc).__name__ in ("StreamEOF",):
                break
            raise
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise PeerError("identify response too large")
    return bytes(buf)


async def read_exactly(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise PeerError(f"stream closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def decode_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def parse_identify(data: bytes) -> Identify:
    """One or more varint-delimited Identify messages, merged (go sends several)."""
    msg = Identify()
    pos = 0
    try:
        while pos < len(data):
            n, pos = decode_uvarint(data, pos)
            if pos + n > len(data):
                raise ValueError("truncated identify message")
            msg.MergeFromString(data[pos : pos + n])
            pos += n
        if not data:
            raise ValueError("empty identify response")
    except Exception as exc:
        # Be liberal: a raw, undelimited message.
        raw = Identify()
        try:
            raw.ParseFromString(data)
        except Exception:
            raise PeerError(f"cannot parse identify response ({len(data)} bytes): {exc}")
        return raw
    return msg


def maddr_text(b: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(b))
    except Exception:
        return "hex:" + b.hex()


async def run_identify(host, peer_id: PeerID) -> dict:
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    try:
        with trio.fail_after(10):
            data = await read_to_eof(stream)
    finally:
        try:
            await stream.close()
        except Exception:
            pass
    msg = parse_identify(data)
    key_ok = None
    if msg.HasField("public_key"):
        try:
            key_ok = PeerID.from_pubkey(deserialize_public_key(msg.public_key)) == peer_id
        except Exception:
            key_ok = False
    return {
        "event": "identify",
        "peer_id": peer_id.to_base58(),
        "protocols": list(msg.protocols),
        "listen_addrs": [maddr_text(a) for a in msg.listen_addrs],
        "observed_addr": maddr_text(msg.observed_addr) if msg.observed_addr else None,
        "agent_version": msg.agent_version,
        "protocol_version": msg.protocol_version,
        "public_key_matches_peer_id": key_ok,
        "has_signed_peer_record": msg.HasField("signedPeerRecord"),
        "response_bytes": len(data),
    }


async def run_ping(host, peer_id: PeerID, count: int) -> None:
    stream = await host.new_stream(peer_id, [PING_ID])
    try:
        for _ in range(count):
            payload = secrets.token_bytes(PING_LENGTH)
            with trio.fail_after(10):
                t0 = time.perf_counter()
                await stream.write(payload)
                pong = await read_exactly(stream, PING_LENGTH)
                rtt = (time.perf_counter() - t0) * 1000.0
            if pong != payload:
                raise PeerError("ping: pong payload differs from ping")
            emit({"event": "ping", "rtt_ms": round(rtt, 4)})
    finally:
        try:
            await stream.close()
        except Exception:
            pass


async def run_perf(perf: PerfService, maddr: multiaddr.Multiaddr, up: int, down: int) -> None:
    final = None
    async for out in perf.measure_performance(maddr, up, down):
        if out["type"] == "final":
            final = out
    if final is None:
        raise PeerError("perf: no final result")
    emit({
        "event": "perf",
        "upload_bytes": final["upload_bytes"],
        "download_bytes": final["download_bytes"],
        "seconds": round(final["time_seconds"], 6),
    })


# ---------------------------------------------------------------- listen mode


class ListenNotifee(INotifee):
    def __init__(self, host, nursery: trio.Nursery) -> None:
        self.host = host
        self.nursery = nursery

    async def connected(self, network, conn) -> None:
        peer_id = getattr(conn.muxed_conn, "peer_id", None)
        if peer_id is None:
            return
        direction = getattr(getattr(conn, "direction", None), "name", "UNKNOWN").lower()
        emit({"event": "connected", "peer_id": peer_id.to_base58(), "direction": direction})
        # Never block here: the swarm awaits notifees on the connection path.
        self.nursery.start_soon(self._identify, conn, peer_id)

    async def _identify(self, conn, peer_id) -> None:
        ev = getattr(conn, "event_started", None)
        if ev is not None:
            with trio.move_on_after(5):
                await ev.wait()
        try:
            emit(await run_identify(self.host, peer_id))
        except Exception as exc:
            log.warning("identify towards %s failed: %r", peer_id, exc)
            emit({"event": "identify_failed", "peer_id": peer_id.to_base58(),
                  "message": repr(exc)})

    async def disconnected(self, network, conn) -> None:
        peer_id = getattr(conn.muxed_conn, "peer_id", None)
        if peer_id is not None:
            emit({"event": "disconnected", "peer_id": peer_id.to_base58()})

    async def opened_stream(self, network, stream) -> None:
        pass

    async def closed_stream(self, network, stream) -> None:
        pass

    async def listen(self, network, maddr) -> None:
        pass

    async def listen_close(self, network, maddr) -> None:
        pass


async def wait_stdin_eof() -> None:
    def _drain() -> None:
        while os.read(0, 65536):
            pass

    try:
        await trio.to_thread.run_sync(_drain, abandon_on_cancel=True)
    except OSError:
        pass
    log.info("stdin reached EOF")


async def run_listen(args, stop: trio.CancelScope) -> int:
    listen = multiaddr.Multiaddr(args.listen) if args.listen else LISTEN_ADDR
    host = make_host(args.seed, args.auto_connect, quic="/quic-v1" in str(listen))
    async with host.run([listen]):
        perf = PerfService(host)
        await perf.start()
        async with AsyncExitStack() as services, trio.open_nursery() as nursery:
            if args.relay_hop:
                limits = DEFAULT_RELAY_LIMITS
                if args.max_reservations is not None:
                    limits = dataclasses.replace(limits, max_reservations=args.max_reservations)
                relay = CircuitV2Protocol(host, limits=limits, allow_hop=True)
                await services.enter_async_context(background_trio_service(relay))
                await relay.event_started.wait()
            elif args.reserve_at:
                # Accepts circuits (STOP) from the relay; serves no hop.
                stop_service = CircuitV2Protocol(host, allow_hop=False)
                await services.enter_async_context(background_trio_service(stop_service))
                await stop_service.event_started.wait()
            if args.dcutr:
                dcutr = DCUtRProtocol(host)
                await services.enter_async_context(background_trio_service(dcutr))
                await dcutr.event_started.wait()
            host.get_network().register_notifee(ListenNotifee(host, nursery))
            emit({"event": "ready", "peer_id": host.get_id().to_base58(),
                  "addrs": own_addrs(host)})
            if args.reserve_at:
                relay = multiaddr.Multiaddr(args.reserve_at)
                relay_info = info_from_p2p_addr(relay)
                await host.connect(relay_info)
                await run_reserve(host, relay_info.peer_id,
                                  circuit=f"{relay}/p2p-circuit/p2p/{host.get_id().to_base58()}")

            async def stdin_watch() -> None:
                await wait_stdin_eof()
                stop.cancel()

            if not args.ignore_stdin:
                nursery.start_soon(stdin_watch)
            await trio.sleep_forever()
    return 0


# ---------------------------------------------------------------- dial mode


async def run_dial(args) -> int:
    target = multiaddr.Multiaddr(args.multiaddr)
    info = info_from_p2p_addr(target)  # raises when /p2p/ is missing
    circuit = "/p2p-circuit/" in str(target)
    if circuit:
        # RELAY/p2p-circuit/p2p/PEER: the peer is the last /p2p.
        info = PeerInfo(PeerID.from_base58(str(target).rsplit("/p2p/", 1)[1]), [])
    quic = "/quic-v1" in str(target)
    host = make_host(args.seed, args.auto_connect, quic=quic)
    own = multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1") if quic else LISTEN_ADDR
    async with host.run([own]), AsyncExitStack() as services:
        perf = PerfService(host)
        await perf.start()
        t0 = time.perf_counter()
        if circuit:
            # py's relay client as shipped (quirks 11, 12): not a swarm transport, dialled
            # directly; it reserves at the relay for the dialer before CONNECT.
            relay_service = CircuitV2Protocol(host, allow_hop=False)
            await services.enter_async_context(background_trio_service(relay_service))
            await relay_service.event_started.wait()
            await CircuitV2Transport(host, relay_service, RelayConfig()).dial(target)
        else:
            await host.connect(info)
        log.info("connected to %s in %.1f ms", info.peer_id,
                 (time.perf_counter() - t0) * 1000)
        if args.reserve:
            await run_reserve(host, info.peer_id)
        if args.identify:
            emit(await run_identify(host, info.peer_id))
        if args.ping:
            await run_ping(host, info.peer_id, args.ping)
        if args.perf_upload is not None or args.perf_download is not None:
            await run_perf(perf, target, args.perf_upload or 0, args.perf_download or 0)
        if args.reserve:
            await wait_stdin_eof()
        emit({"event": "done"})
    return 0


async def run_reserve(host, relay, circuit: str | None = None) -> None:
    """One RESERVE on a fresh hop stream; the reply's status, expiry and the relay's addresses
    (plus `circuit`, our address through the relay, when given)."""
    stream = await host.new_stream(relay, [TProtocol("/libp2p/circuit/relay/0.2.0/hop")])
    try:
        await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
        reply = await read_delimited_msg(stream, HopMessage)
    finally:
        await stream.close()
    addrs = [str(multiaddr.Multiaddr(a)) for a in reply.reservation.addrs]
    event = {"event": "reservation", "status": int(reply.status), "expire": int(reply.reservation.expire),
             "addrs": addrs}
    if circuit is not None:
        event["circuit"] = circuit
    emit(event)


# ---------------------------------------------------------------- main


def describe(exc: BaseException, depth: int = 0) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e, depth) for e in exc.exceptions)
    if type(exc).__name__ == "MultiError" and depth < 6:  # libp2p.exceptions.MultiError
        return "; ".join(describe(e, depth + 1) for e in getattr(exc, "errors", []))
    text = str(exc).replace("\n", " | ")
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and depth < 6:
        out += f" <- {describe(cause, depth + 1)}"
    return out


async def amain(args) -> int:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with trio.CancelScope() as stop:
            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("signal %d: stopping", signum)
                    stop.cancel()
                    return

            if _early_signals:
                log.info("signal %d during start-up: stopping", _early_signals[0])
                if args.mode == "listen":
                    return 0
                emit({"event": "error", "message": "interrupted by signal"})
                return 1

            async with trio.open_nursery() as outer:
                outer.start_soon(watch_signals)
                try:
                    if args.mode == "listen":
                        rc = await run_listen(args, stop)
                    else:
                        with trio.move_on_after(args.timeout) as to:
                            rc = await run_dial(args)
                        if to.cancelled_caught:
                            emit({"event": "error",
                                  "message": f"timed out after {args.timeout} s"})
                            rc = 1
                finally:
                    outer.cancel_scope.cancel()
            return rc
        # Only reached when stop was cancelled (signal or stdin EOF).
        if args.mode == "listen":
            return 0
        emit({"event": "error", "message": "interrupted by signal"})
        return 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    pl = sub.add_parser("listen")
    pl.add_argument("--seed")
    pl.add_argument("--ignore-stdin", action="store_true",
                    help="do not exit on stdin EOF (only on SIGTERM/SIGINT)")
    pl.add_argument("--auto-connect", action="store_true",
                    help="keep py-libp2p's AutoConnector (re-dials known peers)")
    pl.add_argument("--listen", metavar="MULTIADDR",
                    help="listen address (default /ip4/127.0.0.1/tcp/0)")
    pl.add_argument("--relay-hop", action="store_true",
                    help="serve circuit relay v2 hop (py-libp2p's CircuitV2Protocol)")
    pl.add_argument("--max-reservations", type=int, metavar="N",
                    help="with --relay-hop: reservations in total (py's default 4)")
    pl.add_argument("--reserve-at", metavar="RELAY_MULTIADDR",
                    help="connect to this relay, reserve, accept circuits (STOP) through it")
    pl.add_argument("--dcutr", action="store_true",
                    help="run py-libp2p's DCUtRProtocol (hole punching over relayed connections)")
    pd = sub.add_parser("dial")
    pd.add_argument("multiaddr")
    pd.add_argument("--seed")
    pd.add_argument("--identify", action="store_true")
    pd.add_argument("--ping", type=int, default=0, metavar="N")
    pd.add_argument("--perf-upload", type=int, metavar="BYTES")
    pd.add_argument("--perf-download", type=int, metavar="BYTES")
    pd.add_argument("--reserve", action="store_true",
                    help="reserve a circuit relay v2 slot at the peer first")
    pd.add_argument("--timeout", type=float, default=30.0, metavar="S")
    pd.add_argument("--auto-connect", action="store_true")
    args = p.parse_args()

    level = os.environ.get("PEER_LOG", "WARNING").upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    try:
        rc = trio.run(amain, args)
    except BaseException as exc:  # noqa: BLE001
        log.debug("failure", exc_info=True)
        if args.mode == "listen" and isinstance(exc, KeyboardInterrupt):
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

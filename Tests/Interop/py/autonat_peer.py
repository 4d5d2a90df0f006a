#!/usr/bin/env python3
"""py-libp2p 0.8.1 AutoNAT v1 peer for agentd interop tests (py's own AutoNATService).

Same host as peer.py (/noise, /yamux/1.0.0, TCP on 127.0.0.1 port 0, Ed25519); one JSON object
per stdout line.

  autonat_peer.py serve
      serves /libp2p/autonat/1.0.0 (py's server: quirk 27 of the NAT notes, it answers OK without
      dialing when a connection to the requester exists) and identify;
      {"event":"ready","peer_id":…,"addrs":[…]}; runs until SIGTERM/SIGINT or EOF on stdin.

  autonat_peer.py ask MULTIADDR --addrs A[,B…]|SELF [--addrs …]
      connects to MULTIADDR and asks it, once per --addrs, to dial back those addresses (SELF: its
      own listen addresses), each request on its own stream (py's query_server):
      {"event":"answer","status":N,"addr":TEXT|null} or {"event":"answer_error","message":…};
      then {"event":"done"}, exit 0. Also {"event":"ready",…} with its own addresses first.
"""

from __future__ import annotations

import argparse
import sys

import peer  # noqa: E402  (sets up stdout, early signals; same directory)

import multiaddr  # noqa: E402
import trio  # noqa: E402

from libp2p.host.autonat import AutoNATService  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402

emit = peer.emit


async def run_serve(args, stop: trio.CancelScope) -> int:
    host = peer.make_host(None)
    AutoNATService(host, serve=True)
    async with host.run([peer.LISTEN_ADDR]):
        emit({"event": "ready", "peer_id": host.get_id().to_base58(), "addrs": peer.own_addrs(host)})
        async with trio.open_nursery() as nursery:
            async def stdin_watch() -> None:
                await peer.wait_stdin_eof()
                stop.cancel()

            nursery.start_soon(stdin_watch)
            await trio.sleep_forever()
    return 0


async def run_ask(args) -> int:
    target = multiaddr.Multiaddr(args.multiaddr)
    info = info_from_p2p_addr(target)
    host = peer.make_host(None)
    service = AutoNATService(host, serve=False)
    async with host.run([peer.LISTEN_ADDR]):
        emit({"event": "ready", "peer_id": host.get_id().to_base58(), "addrs": peer.own_addrs(host)})
        await host.connect(info)
        own = [a for a in host.get_transport_addrs()]
        for group in args.addrs:
            # SELF: this peer's own listen addresses (known only once it runs).
            addrs = [a.to_bytes() for a in own] if group == "SELF" else [
                multiaddr.Multiaddr(a).to_bytes() for a in group.split(",") if a]
            try:
                status, addr = await service.query_server(info.peer_id, addrs, timeout=20.0)
                emit({"event": "answer", "status": status,
                      "addr": str(multiaddr.Multiaddr(addr)) if addr else None})
            except Exception as exc:  # noqa: BLE001
                emit({"event": "answer_error", "message": peer.describe(exc)})
        emit({"event": "done"})
    return 0


async def amain(args) -> int:
    import signal

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with trio.CancelScope() as stop:
            async def watch_signals() -> None:
                async for _ in signals:
                    stop.cancel()
                    return

            if peer._early_signals:
                return 0
            async with trio.open_nursery() as outer:
                outer.start_soon(watch_signals)
                try:
                    if args.mode == "serve":
                        return await run_serve(args, stop)
                    with trio.fail_after(60):
                        return await run_ask(args)
                finally:
                    outer.cancel_scope.cancel()
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    sub.add_parser("serve")
    pa = sub.add_parser("ask")
    pa.add_argument("multiaddr")
    pa.add_argument("--addrs", action="append", default=[])
    args = p.parse_args()
    try:
        rc = trio.run(amain, args)
    except BaseException as exc:  # noqa: BLE001
        emit({"event": "error", "message": peer.describe(exc)})
        rc = 1
    peer._OUT.flush()
    sys.stderr.flush()
    import os

    os._exit(rc)


if __name__ == "__main__":
    main()

"""One side of a TCP simultaneous open, driven by the NAT lab's self-test (NATLabTests).

Reads one JSON command per line on stdin and answers each with a line carrying the same "id"
(the protocol of Sources/AgentTesting/JSONLineProcess.swift):
  {"cmd": "bind"}                  -> {"ok": true, "port": P}: a listener and a dialling socket on
                                      one fresh port (SO_REUSEADDR + SO_REUSEPORT, bind before
                                      connect), as libp2p hosts dial from their listen port.
  {"cmd": "connect", "host": H, "port": P, "timeout": S, "attempt": N, "say": TEXT}
                                   -> {"ok": true} as soon as connect() has sent the SYN; later the
                                      event {"event": "connect", "attempt": N, "ok": ..., ...}: on
                                      success the local and remote addresses and the TEXT the other
                                      side sent over the connection, else the error.
A connected socket stays open (so the routers' conntrack shows the flow) until the process exits
at EOF; a failed one is closed. Every "bind" makes new sockets.
This tests the lab, not the product.
"""
import errno
import json
import select
import socket
import sys
import threading
import time

lock = threading.Lock()
kept = []  # connected sockets, open until exit


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def reusable_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


def finish(sock, listener, attempt, timeout, say):
    deadline = time.monotonic() + timeout
    try:
        _, writable, _ = select.select([], [sock], [], timeout)
        if not writable:
            raise OSError(errno.ETIMEDOUT, "no connection within %.1f s" % timeout)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, errno.errorcode.get(err, str(err)))
        sock.setblocking(True)
        sock.settimeout(max(0.1, deadline - time.monotonic()) + 2)
        sock.sendall(say.encode() + b"\n")
        received = b""
        while not received.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            received += chunk
        emit({"event": "connect", "attempt": attempt, "ok": True,
              "local": list(sock.getsockname()), "remote": list(sock.getpeername()),
              "received": received.decode(errors="replace").strip()})
        with lock:
            kept.append(sock)
    except OSError as e:
        emit({"event": "connect", "attempt": attempt, "ok": False, "error": str(e)})
        sock.close()
    finally:
        listener.close()


def main():
    listener = dialer = None
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        ident = msg.get("id")
        try:
            if msg["cmd"] == "bind":
                listener = reusable_socket()
                listener.bind(("0.0.0.0", 0))
                port = listener.getsockname()[1]
                listener.listen(4)
                dialer = reusable_socket()
                dialer.bind(("0.0.0.0", port))
                emit({"id": ident, "ok": True, "port": port})
            elif msg["cmd"] == "connect":
                dialer.setblocking(False)
                code = dialer.connect_ex((msg["host"], int(msg["port"])))
                if code not in (0, errno.EINPROGRESS):
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                threading.Thread(
                    target=finish, daemon=True,
                    args=(dialer, listener, msg["attempt"], float(msg["timeout"]), msg["say"])).start()
                listener = dialer = None
                emit({"id": ident, "ok": True})
            else:
                emit({"id": ident, "ok": False, "error": "unknown command"})
        except (OSError, KeyError, TypeError, ValueError) as e:
            emit({"id": ident, "ok": False, "error": str(e)})


if __name__ == "__main__":
    main()

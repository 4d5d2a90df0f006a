#ifndef AGENTD_CQUIC_BASELINE_H
#define AGENTD_CQUIC_BASELINE_H

// The plain C QUIC baseline of `agent-bench session` (issue #13): a client and a server on the
// same ngtcp2 0.12 + GnuTLS layer as agentd (Sources/CQuic, same windows), each a plain blocking
// loop on its own thread and UDP socket over loopback: poll, recvfrom, one sendto per datagram,
// no event loop framework, no Swift. What it measures bounds what agentd's QUIC path (NIO + Swift
// above the same C layer) can reach on the machine.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cqb_transfer {
    /// Seconds from the client opening the stream to the last byte (FIN) arriving.
    double seconds;
    /// CPU seconds of the sending (server) and receiving (client) thread for the whole run
    /// (handshake, transfer, close).
    double sender_cpu;
    double receiver_cpu;
    /// Datagrams each side sent (one sendto each).
    uint64_t sender_datagrams;
    uint64_t receiver_datagrams;
} cqb_transfer;

/// A perf-style download over one stream: the client opens a stream and asks for `bytes`; the
/// server sends them and FIN; the client reads them and closes the connection. Windows as
/// agentd's defaults: `stream_window` and `connection_window` bytes. 0, or -1 with a message in
/// `error`.
int cqb_download(uint64_t bytes, uint64_t stream_window, uint64_t connection_window, cqb_transfer *result,
                 char *error, size_t error_len);

/// `count` handshakes in turn from one client socket to one server: each a new connection from
/// dial to handshake complete (client side, both certificates verified: the X.509 checks and the
/// libp2p extension's Ed25519 signature), then closed (CONNECTION_CLOSE), and the server frees it
/// before the next. `seconds` (capacity `count`) gets each dial-to-handshake time; `*total`
/// the wall time of all of them, closes included. 0, or -1 with a message.
int cqb_handshakes(int count, double *seconds, double *total, char *error, size_t error_len);

#ifdef __cplusplus
}
#endif

#endif

// The plain C QUIC baseline of `agent-bench session`; see include/cquic_baseline.h.
#define _GNU_SOURCE
#include "cquic_baseline.h"

#include "cquic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/// Datagrams per `cq_conn_write` call (as QUICEndpoint.sendBatch).
#define BATCH 32
/// Bytes queued per stream write, and most a stream holds unacknowledged (as
/// QUICConnectionCore.streamSendLimit).
#define WRITE_SIZE (64 * 1024)
#define SEND_LIMIT (4u * 1024 * 1024)
/// A run that takes longer than this failed.
#define DEADLINE_NS (120ull * 1000000000ull)
#define MAX_CIDS 16

static uint64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

// MARK: Identities (libp2p/specs tls/tls.md): an Ed25519 host key signs the certificate key.

typedef struct identity {
    cq_key *key;
    cq_credentials *credentials;
} identity;

static const char signature_prefix[] = "libp2p-tls-handshake:";

static int identity_make(identity *id, char *error, size_t error_len) {
    uint8_t host_public[crypto_sign_PUBLICKEYBYTES], host_secret[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(host_public, host_secret);
    id->key = cq_key_generate();
    if (id->key == NULL) {
        snprintf(error, error_len, "cannot generate a certificate key");
        return -1;
    }
    uint8_t message[sizeof signature_prefix - 1 + 512];
    size_t spki_len = 512;
    memcpy(message, signature_prefix, sizeof signature_prefix - 1);
    if (cq_key_spki(id->key, message + sizeof signature_prefix - 1, &spki_len) != 0) {
        snprintf(error, error_len, "cannot encode the certificate key");
        return -1;
    }
    // SignedKey ::= SEQUENCE { publicKey OCTET STRING (protobuf PublicKey), signature OCTET STRING }
    uint8_t extension[2 + 2 + 36 + 2 + 64] = {0x30, 104, 0x04, 36, 0x08, 0x01, 0x12, 0x20};
    memcpy(extension + 8, host_public, 32);
    extension[40] = 0x04;
    extension[41] = 64;
    crypto_sign_detached(extension + 42, NULL, message, sizeof signature_prefix - 1 + spki_len, host_secret);
    sodium_memzero(host_secret, sizeof host_secret);
    uint8_t der[2048];
    size_t der_len = sizeof der;
    int64_t now = (int64_t)time(NULL);
    if (cq_cert_build(id->key, "agent-bench C baseline", extension, sizeof extension, 0, now - 3600, now + 100 * 86400, NULL, der, &der_len,
                      error, error_len) != 0)
        return -1;
    id->credentials = cq_credentials_new(id->key, der, der_len, error, error_len);
    return id->credentials ? 0 : -1;
}

static void identity_free(identity *id) {
    if (id->credentials) cq_credentials_free(id->credentials);
    if (id->key) cq_key_free(id->key);
}

/// The libp2p part of a peer certificate's check (the X.509 part is done by CQuic): the SignedKey
/// holds an Ed25519 key whose signature over prefix || SPKI verifies.
static int verify_extension(const uint8_t *ext, size_t len, const uint8_t *spki, size_t spki_len) {
    if (len != 106 || ext[0] != 0x30 || ext[1] != 104 || ext[2] != 0x04 || ext[3] != 36 || ext[40] != 0x04 ||
        ext[41] != 64)
        return -1;
    static const uint8_t key_header[4] = {0x08, 0x01, 0x12, 0x20};
    if (memcmp(ext + 4, key_header, 4) != 0 || spki_len > 512) return -1;
    uint8_t message[sizeof signature_prefix - 1 + 512];
    memcpy(message, signature_prefix, sizeof signature_prefix - 1);
    memcpy(message + sizeof signature_prefix - 1, spki, spki_len);
    return crypto_sign_verify_detached(ext + 42, message, sizeof signature_prefix - 1 + spki_len, ext + 8);
}

// MARK: One side: a socket and at most one connection

typedef struct side {
    int fd;
    int is_server;
    struct sockaddr_in local, remote;
    cq_config config;
    identity id;
    cq_conn *conn;
    uint8_t cids[MAX_CIDS][20];
    size_t cid_lens[MAX_CIDS];
    int handshake_done, peer_closed;
    uint64_t datagrams;
    // The download: the server's stream and what it was asked for; the client's progress.
    int64_t stream;
    int has_stream;
    uint8_t request[8];
    size_t request_len;
    int request_complete;
    uint64_t requested, queued, unacked;
    int fin_queued;
    uint64_t received;
    int got_fin, stream_failed;
    uint64_t fin_at;
    uint8_t out[BATCH * CQ_MAX_DATAGRAM];
    size_t sizes[BATCH];
    char error[256];
} side;

static int cb_verify(void *ctx, const uint8_t *ext, size_t ext_len, const uint8_t *spki, size_t spki_len) {
    (void)ctx;
    return verify_extension(ext, ext_len, spki, spki_len) == 0 ? 0 : -1;
}

static void cb_handshake(void *ctx) { ((side *)ctx)->handshake_done = 1; }

static void cb_opened(void *ctx, int64_t id) {
    side *s = ctx;
    if (!s->has_stream) {
        s->stream = id;
        s->has_stream = 1;
    }
}

static void cb_data(void *ctx, int64_t id, const uint8_t *data, size_t len, int fin) {
    side *s = ctx;
    if (s->is_server) {
        size_t take = len < sizeof s->request - s->request_len ? len : sizeof s->request - s->request_len;
        memcpy(s->request + s->request_len, data, take);
        s->request_len += take;
        if (fin && s->request_len == sizeof s->request) {
            uint64_t n = 0;
            for (size_t i = 0; i < 8; i++) n = (n << 8) | s->request[i];
            s->requested = n;
            s->request_complete = 1;
        }
    } else {
        s->received += len;
        if (fin) {
            s->got_fin = 1;
            s->fin_at = mono_ns();
        }
    }
    cq_stream_consumed(s->conn, id, len);
}

static void cb_reset(void *ctx, int64_t id, uint64_t code) {
    (void)id;
    (void)code;
    ((side *)ctx)->stream_failed = 1;
}

static void cb_closed(void *ctx, int64_t id) {
    (void)ctx;
    (void)id;
}

static void cb_acked(void *ctx, int64_t id, uint64_t unacked) {
    (void)id;
    ((side *)ctx)->unacked = unacked;
}

static void route_add(side *s, const uint8_t *cid, size_t len) {
    for (int i = 0; i < MAX_CIDS; i++) {
        if (s->cid_lens[i] == 0) {
            memcpy(s->cids[i], cid, len);
            s->cid_lens[i] = len;
            return;
        }
    }
}

static void cb_cid_added(void *ctx, const uint8_t *cid, size_t len) { route_add(ctx, cid, len); }

static void cb_cid_removed(void *ctx, const uint8_t *cid, size_t len) {
    side *s = ctx;
    for (int i = 0; i < MAX_CIDS; i++) {
        if (s->cid_lens[i] == len && memcmp(s->cids[i], cid, len) == 0) s->cid_lens[i] = 0;
    }
}

static const cq_callbacks callbacks = {cb_verify, cb_handshake, cb_opened, cb_data, cb_reset,
                                       cb_closed, cb_acked,     cb_cid_added, cb_cid_removed};

static int side_open(side *s, int is_server, uint64_t stream_window, uint64_t connection_window, char *error,
                     size_t error_len) {
    memset(s, 0, sizeof *s);
    s->is_server = is_server;
    s->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (s->fd < 0) {
        snprintf(error, error_len, "socket: %s", strerror(errno));
        return -1;
    }
    int buffer = 4 * 1024 * 1024;  // as far as net.core.*mem_max allows
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    s->local.sin_family = AF_INET;
    s->local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof s->local;
    if (bind(s->fd, (struct sockaddr *)&s->local, sizeof s->local) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&s->local, &len) != 0) {
        snprintf(error, error_len, "bind: %s", strerror(errno));
        close(s->fd);
        return -1;
    }
    s->config.stream_window = stream_window;
    s->config.connection_window = connection_window;
    s->config.max_streams_bidi = 256;
    s->config.idle_timeout = 5ull * 1000000000ull;
    s->config.handshake_timeout = 5ull * 1000000000ull;
    s->config.keep_alive = 0;
    randombytes_buf(s->config.static_secret, sizeof s->config.static_secret);
    if (identity_make(&s->id, error, error_len) != 0) {
        close(s->fd);
        return -1;
    }
    return 0;
}

static void side_drop_conn(side *s) {
    cq_conn_free(s->conn);
    s->conn = NULL;
    memset(s->cid_lens, 0, sizeof s->cid_lens);
    s->handshake_done = 0;
    s->peer_closed = 0;
}

static void side_close(side *s) {
    if (s->conn) side_drop_conn(s);
    identity_free(&s->id);
    close(s->fd);
}

static void send_datagram(side *s, const uint8_t *data, size_t len) {
    // One sendto per datagram. A full socket buffer drops it, as a network would.
    (void)sendto(s->fd, data, len, 0, (struct sockaddr *)&s->remote, sizeof s->remote);
    s->datagrams++;
}

/// Sends what the connection has to send now. 0, or -1 on a fatal error.
static int side_flush(side *s) {
    for (;;) {
        int n = cq_conn_write(s->conn, s->out, s->sizes, BATCH, mono_ns());
        if (n < 0) {
            snprintf(s->error, sizeof s->error, "%s", cq_conn_error(s->conn));
            return -1;
        }
        for (int i = 0; i < n; i++) send_datagram(s, s->out + (size_t)i * CQ_MAX_DATAGRAM, s->sizes[i]);
        if (n < BATCH) return 0;
    }
}

static int side_owns(side *s, const uint8_t *packet, size_t len, int *is_initial) {
    uint8_t dcid[20];
    size_t dcid_len = 0;
    if (cq_packet_route(packet, len, dcid, &dcid_len, is_initial) != 0) return 0;
    for (int i = 0; i < MAX_CIDS; i++) {
        if (s->cid_lens[i] == dcid_len && memcmp(s->cids[i], dcid, dcid_len) == 0) return 1;
    }
    return 0;
}

/// Reads every datagram waiting; a server creates its connection from a client Initial when it has
/// none. 0, or -1 on a fatal error.
static int side_receive(side *s) {
    uint8_t packet[2048];
    for (;;) {
        struct sockaddr_in from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(s->fd, packet, sizeof packet, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        int is_initial = 0;
        if (!side_owns(s, packet, (size_t)n, &is_initial)) {
            if (!s->is_server || s->conn != NULL || !is_initial) continue;  // another connection's
            s->remote = from;
            uint8_t odcid[20];
            size_t odcid_len = 0;
            s->conn = cq_conn_server_new(&s->config, s->id.credentials, packet, (size_t)n,
                                         (struct sockaddr *)&s->local, sizeof s->local, (struct sockaddr *)&from,
                                         from_len, &callbacks, s, mono_ns(), odcid, &odcid_len, s->error,
                                         sizeof s->error);
            if (s->conn == NULL) return -1;
            route_add(s, odcid, odcid_len);
        }
        if (s->conn == NULL) continue;
        int rv = cq_conn_read(s->conn, (struct sockaddr *)&s->local, sizeof s->local, (struct sockaddr *)&from,
                              from_len, packet, (size_t)n, mono_ns());
        if (rv == 1) {
            s->peer_closed = 1;
            return 0;
        }
        if (rv < 0) {
            snprintf(s->error, sizeof s->error, "%s", cq_conn_error(s->conn));
            return -1;
        }
    }
}

/// Handles a due timer, then waits for a datagram or the next timer. 0, or -1 when the connection
/// ended on a timeout or failed.
static int side_wait(side *s) {
    uint64_t now = mono_ns();
    uint64_t wake = now + 100000000ull;  // without a connection: look again in 100 ms
    if (s->conn) {
        uint64_t expiry = cq_conn_expiry(s->conn);
        if (expiry <= now) {
            if (cq_conn_handle_expiry(s->conn, now) != 0) {
                snprintf(s->error, sizeof s->error, "%s", cq_conn_error(s->conn));
                return -1;
            }
            return 0;  // the caller writes what the timer made due
        }
        if (expiry < wake) wake = expiry;
    }
    struct pollfd pfd = {s->fd, POLLIN, 0};
    struct timespec timeout = {(time_t)((wake - now) / 1000000000ull), (long)((wake - now) % 1000000000ull)};
    (void)ppoll(&pfd, 1, &timeout, NULL);
    return 0;
}

/// Closes the connection (CONNECTION_CLOSE, no error) and frees it.
static void side_close_conn(side *s) {
    int n = cq_conn_write_close(s->conn, 0, s->out, mono_ns());
    if (n > 0) send_datagram(s, s->out, (size_t)n);
    side_drop_conn(s);
}

// MARK: The download

/// Opens a server and a client side (the client aimed at the server) and starts `server_main(arg)` on
/// its own thread. On failure both sides are closed, `error` says why, and -1 is returned.
static int pair_start(side *server, side *client, uint64_t stream_window, uint64_t connection_window,
                      void *(*server_main)(void *), void *arg, pthread_t *thread, char *error, size_t error_len) {
    if (side_open(server, 1, stream_window, connection_window, error, error_len) != 0) return -1;
    if (side_open(client, 0, stream_window, connection_window, error, error_len) != 0) {
        side_close(server);
        return -1;
    }
    client->remote = server->local;
    if (pthread_create(thread, NULL, server_main, arg) != 0) {
        snprintf(error, error_len, "cannot start the server thread");
        side_close(client);
        side_close(server);
        return -1;
    }
    return 0;
}

typedef struct run {
    side server, client;
    uint64_t bytes;
    double sender_cpu;
    int server_failed;
} run;

static uint8_t payload[WRITE_SIZE];

static void *server_main(void *arg) {
    run *r = arg;
    side *s = &r->server;
    double cpu0 = thread_cpu();
    uint64_t deadline = mono_ns() + DEADLINE_NS;
    for (;;) {
        if (side_receive(s) != 0) break;
        if (s->peer_closed) break;
        if (s->conn && s->request_complete && s->has_stream) {
            while (s->queued < s->requested && s->unacked < SEND_LIMIT) {
                uint64_t left = s->requested - s->queued;
                size_t n = left < WRITE_SIZE ? (size_t)left : WRITE_SIZE;
                int64_t held = cq_stream_write(s->conn, s->stream, payload, n);
                if (held < 0) break;
                s->unacked = (uint64_t)held;
                s->queued += n;
            }
            if (s->queued == s->requested && !s->fin_queued) {
                cq_stream_close_write(s->conn, s->stream);
                s->fin_queued = 1;
            }
        }
        if (s->conn && side_flush(s) != 0) break;
        if (mono_ns() > deadline) {
            snprintf(s->error, sizeof s->error, "the server ran out of time");
            break;
        }
        if (side_wait(s) != 0) break;
    }
    r->server_failed = !s->peer_closed;
    r->sender_cpu = thread_cpu() - cpu0;
    return NULL;
}

int cqb_download(uint64_t bytes, uint64_t stream_window, uint64_t connection_window, cqb_transfer *result,
                 char *error, size_t error_len) {
    if (sodium_init() < 0) {
        snprintf(error, error_len, "libsodium failed to initialise");
        return -1;
    }
    run *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(error, error_len, "out of memory");
        return -1;
    }
    memset(payload, 0x5a, sizeof payload);
    r->bytes = bytes;
    pthread_t thread;
    if (pair_start(&r->server, &r->client, stream_window, connection_window, server_main, r, &thread, error,
                   error_len) != 0) {
        free(r);
        return -1;
    }
    side *c = &r->client;
    // The client, on this thread.
    double cpu0 = thread_cpu();
    uint64_t deadline = mono_ns() + DEADLINE_NS, started = 0;
    int ok = 0;
    c->conn = cq_conn_client_new(&c->config, c->id.credentials, (struct sockaddr *)&c->local, sizeof c->local,
                                 (struct sockaddr *)&c->remote, sizeof c->remote, &callbacks, c, mono_ns(), c->error,
                                 sizeof c->error);
    while (c->conn) {
        if (side_receive(c) != 0 || c->peer_closed || c->stream_failed) break;
        if (c->handshake_done && !c->has_stream) {
            started = mono_ns();
            if (cq_stream_open(c->conn, &c->stream) != 0) break;
            c->has_stream = 1;
            uint8_t request[8];
            for (int i = 0; i < 8; i++) request[i] = (uint8_t)(bytes >> (56 - 8 * i));
            if (cq_stream_write(c->conn, c->stream, request, sizeof request) < 0 ||
                cq_stream_close_write(c->conn, c->stream) != 0)
                break;
        }
        if (c->got_fin) {
            ok = c->received == bytes;
            if (!ok) snprintf(c->error, sizeof c->error, "received %llu of %llu bytes",
                              (unsigned long long)c->received, (unsigned long long)bytes);
            side_flush(c);  // the last acknowledgements
            side_close_conn(c);
            break;
        }
        if (side_flush(c) != 0) break;
        if (mono_ns() > deadline) {
            snprintf(c->error, sizeof c->error, "the download ran out of time");
            break;
        }
        if (side_wait(c) != 0) break;
    }
    double receiver_cpu = thread_cpu() - cpu0;
    if (c->conn) side_close_conn(c);  // a failure: let the server stop too
    pthread_join(thread, NULL);
    int rv = 0;
    if (!ok) {
        snprintf(error, error_len, "C baseline download failed: %s", c->error[0] ? c->error : r->server.error);
        rv = -1;
    } else if (r->server_failed) {
        snprintf(error, error_len, "C baseline server failed: %s", r->server.error);
        rv = -1;
    } else {
        result->seconds = (double)(c->fin_at - started) / 1e9;
        result->sender_cpu = r->sender_cpu;
        result->receiver_cpu = receiver_cpu;
        result->sender_datagrams = r->server.datagrams;
        result->receiver_datagrams = c->datagrams;
    }
    side_close(&r->client);
    side_close(&r->server);
    free(r);
    return rv;
}

// MARK: Handshakes in turn

typedef struct handshake_run {
    side server, client;
    int count;
    volatile int stop;
} handshake_run;

static void *handshake_server_main(void *arg) {
    handshake_run *r = arg;
    side *s = &r->server;
    int served = 0;
    uint64_t deadline = mono_ns() + DEADLINE_NS;
    while (served < r->count && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && mono_ns() < deadline) {
        if (side_receive(s) != 0) {
            if (s->conn) side_drop_conn(s);  // a failed handshake: the client reports it
        }
        if (s->conn && s->peer_closed) {
            side_drop_conn(s);
            served++;
            continue;
        }
        if (s->conn && side_flush(s) != 0) side_drop_conn(s);
        if (side_wait(s) != 0 && s->conn) side_drop_conn(s);
    }
    return NULL;
}

int cqb_handshakes(int count, double *seconds, double *total, char *error, size_t error_len) {
    if (count <= 0) {
        snprintf(error, error_len, "count must be positive");
        return -1;
    }
    if (sodium_init() < 0) {
        snprintf(error, error_len, "libsodium failed to initialise");
        return -1;
    }
    handshake_run *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(error, error_len, "out of memory");
        return -1;
    }
    r->count = count;
    pthread_t thread;
    if (pair_start(&r->server, &r->client, 1 << 20, 2 << 20, handshake_server_main, r, &thread, error, error_len) != 0) {
        free(r);
        return -1;
    }
    side *c = &r->client;
    int rv = 0;
    uint64_t begin = mono_ns();
    for (int i = 0; i < count && rv == 0; i++) {
        uint64_t start = mono_ns(), deadline = start + 10ull * 1000000000ull;
        c->conn = cq_conn_client_new(&c->config, c->id.credentials, (struct sockaddr *)&c->local, sizeof c->local,
                                     (struct sockaddr *)&c->remote, sizeof c->remote, &callbacks, c, start, c->error,
                                     sizeof c->error);
        if (c->conn == NULL) {
            rv = -1;
            break;
        }
        while (!c->handshake_done) {
            if (side_receive(c) != 0 || side_flush(c) != 0 || c->peer_closed || mono_ns() > deadline ||
                side_wait(c) != 0) {
                if (c->error[0] == 0) snprintf(c->error, sizeof c->error, "handshake %d did not complete", i);
                rv = -1;
                break;
            }
        }
        if (rv == 0) seconds[i] = (double)(mono_ns() - start) / 1e9;
        side_flush(c);  // the Finished, before the close
        side_close_conn(c);
    }
    *total = (double)(mono_ns() - begin) / 1e9;
    // The server stops now even if a last CONNECTION_CLOSE got lost (it would wait for it).
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
    if (rv != 0) snprintf(error, error_len, "C baseline handshake failed: %s", c->error);
    pthread_join(thread, NULL);
    side_close(&r->client);
    side_close(&r->server);
    free(r);
    return rv;
}

#ifndef AGENTD_CQUIC_H
#define AGENTD_CQUIC_H

// agentd's QUIC layer over ngtcp2 0.12 + GnuTLS (spec/network.md, "QUIC"). What Swift cannot express
// safely lives here: ngtcp2's callbacks, its function-like macros, the GnuTLS session and
// certificate code, and stream send buffers that must stay at a fixed address until the peer
// acknowledges them. The API is macro-free, non-variadic, over opaque handles; everything for one
// connection is called on one thread (the Swift side confines it to its UDP channel's event loop).

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The libp2p TLS extension's OID (libp2p/specs tls/tls.md).
#define CQ_LIBP2P_EXTENSION_OID "1.3.6.1.4.1.53594.1.1"
/// Length of the connection ids we issue (routing reads it from short-header packets).
#define CQ_CID_LENGTH 16
/// Largest UDP payload we send.
#define CQ_MAX_DATAGRAM 1452

/// The ngtcp2 version this was built against, e.g. "0.12.1".
const char *cq_ngtcp2_version(void);

// MARK: TLS certificate (libp2p/specs tls/tls.md)

/// An ephemeral certificate key (ECDSA P-256), never the host key.
typedef struct cq_key cq_key;

/// Creates a fresh key; NULL on failure.
cq_key *cq_key_generate(void);
void cq_key_free(cq_key *key);
/// The key's SubjectPublicKeyInfo DER into `out` (capacity `*len`); sets `*len`. 0 or -1.
int cq_key_spki(const cq_key *key, uint8_t *out, size_t *len);

/// Builds a self-signed X.509 v3 certificate (sha256WithECDSA) for `key` with subject and issuer
/// CN=`common_name`, valid from `not_before` to `not_after` (Unix seconds), carrying the libp2p
/// extension with value `extension` (marked critical if `extension_critical`). With
/// `extra_critical_oid` non-NULL, also an unknown critical extension of that OID (tests). The DER
/// goes to `out` (capacity `*len`); sets `*len`. 0, or -1 with a message in `error`.
int cq_cert_build(const cq_key *key, const char *common_name, const uint8_t *extension, size_t extension_len,
                  int extension_critical, int64_t not_before, int64_t not_after, const char *extra_critical_oid,
                  uint8_t *out, size_t *len, char *error, size_t error_len);

/// The X.509 checks of a peer's certificate (everything that is not libp2p-specific): it parses,
/// is v3, is valid at `now` (Unix seconds), carries exactly one libp2p extension, no unknown
/// critical extension, and its self-signature over the TBSCertificate verifies with a hash of at
/// least 256 bits. On success the extension's value and the certificate's SubjectPublicKeyInfo DER
/// are copied out (capacities `*extension_len`, `*spki_len`; both set). 0, or -1 with a message.
int cq_cert_inspect(const uint8_t *der, size_t der_len, int64_t now, uint8_t *extension, size_t *extension_len,
                    uint8_t *spki, size_t *spki_len, char *error, size_t error_len);

/// Verifies a libp2p host key's signature made with an RSA (`key_type` 0, PKCS#1 v1.5 SHA-256) or
/// ECDSA (`key_type` 3, SHA-256) key given as PKIX DER (the libp2p PublicKey protobuf's data).
/// 0 when valid, -1 otherwise (including unsupported types and keys that do not parse).
int cq_verify_host_signature(int key_type, const uint8_t *key, size_t key_len, const uint8_t *message,
                             size_t message_len, const uint8_t *signature, size_t signature_len);

/// A certificate and its key, as a TLS credential; shared by all connections of an endpoint.
typedef struct cq_credentials cq_credentials;
/// NULL on failure (message in `error`). The key and DER are copied.
cq_credentials *cq_credentials_new(const cq_key *key, const uint8_t *cert_der, size_t cert_len, char *error,
                                   size_t error_len);
void cq_credentials_free(cq_credentials *credentials);

// MARK: Connections

typedef struct cq_conn cq_conn;

/// What a connection tells its owner. All calls happen inside the cq_conn_* call that caused them,
/// on the caller's thread; a callback must not call back into the same connection except
/// `cq_stream_consumed` and the stream write calls (which only queue).
typedef struct cq_callbacks {
    /// The peer's certificate arrived (during the handshake): `extension` is its libp2p extension
    /// and `spki` its SubjectPublicKeyInfo DER, both already past `cq_cert_inspect`. Return 0 to
    /// accept, -1 to refuse (the handshake fails with TLS alert 42, bad_certificate).
    int (*verify_peer)(void *ctx, const uint8_t *extension, size_t extension_len, const uint8_t *spki,
                       size_t spki_len);
    /// The handshake completed with ALPN "libp2p" and an accepted peer certificate.
    void (*handshake_completed)(void *ctx);
    /// The peer opened stream `stream_id`.
    void (*stream_opened)(void *ctx, int64_t stream_id);
    /// In-order stream data (`len` may be 0 when only `fin`).
    void (*stream_data)(void *ctx, int64_t stream_id, const uint8_t *data, size_t len, int fin);
    /// The peer reset its sending side (RESET_STREAM) with `code`.
    void (*stream_reset)(void *ctx, int64_t stream_id, uint64_t code);
    /// The stream is gone both ways (closed, reset or acknowledged); its id is dead.
    void (*stream_closed)(void *ctx, int64_t stream_id);
    /// Bytes of the stream were acknowledged; `unacked` are still held (queued or in flight).
    void (*stream_acked)(void *ctx, int64_t stream_id, uint64_t unacked);
    /// A connection id of ours now routes to this connection / no longer does.
    void (*cid_added)(void *ctx, const uint8_t *cid, size_t len);
    void (*cid_removed)(void *ctx, const uint8_t *cid, size_t len);
} cq_callbacks;

typedef struct cq_config {
    /// Flow-control windows: per stream, per connection (bytes).
    uint64_t stream_window;
    uint64_t connection_window;
    /// Bidirectional streams the peer may open at once.
    uint64_t max_streams_bidi;
    /// Idle timeout and handshake timeout (nanoseconds); keep-alive PINGs every `keep_alive` (0: none).
    uint64_t idle_timeout;
    uint64_t handshake_timeout;
    uint64_t keep_alive;
    /// The endpoint's secret for stateless reset tokens.
    uint8_t static_secret[32];
} cq_config;

/// A client connection from `local` to `remote`; `now` in nanoseconds (any monotonic clock, used
/// for every call of this connection). NULL on failure (message in `error`).
cq_conn *cq_conn_client_new(const cq_config *config, cq_credentials *credentials, const struct sockaddr *local,
                            socklen_t local_len, const struct sockaddr *remote, socklen_t remote_len,
                            const cq_callbacks *callbacks, void *ctx, uint64_t now, char *error, size_t error_len);

/// A server connection for the client Initial `packet` (then pass that packet to `cq_conn_read`).
/// The packet's destination connection id (the client's original one, or after a Retry the one the
/// Retry gave it) is copied to `original_dcid` (capacity 20): route it to this connection too. An
/// Initial answering a Retry must carry a valid token (see `cq_initial_screen`). NULL when the packet is no acceptable
/// Initial or on failure (message in `error`).
cq_conn *cq_conn_server_new(const cq_config *config, cq_credentials *credentials, const uint8_t *packet,
                            size_t packet_len, const struct sockaddr *local, socklen_t local_len,
                            const struct sockaddr *remote, socklen_t remote_len, const cq_callbacks *callbacks,
                            void *ctx, uint64_t now, uint8_t *original_dcid, size_t *original_dcid_len, char *error,
                            size_t error_len);

/// What to do with a client Initial that routes to no connection (`cq_initial_screen`).
enum {
    CQ_INITIAL_DROP = -1,   ///< not an acceptable QUIC v1 Initial, or an invalid Retry token
    CQ_INITIAL_ACCEPT = 0,  ///< create the connection (`cq_conn_server_new`)
    CQ_INITIAL_RETRY = 1,   ///< send `out` (a Retry with an address-validation token); keep nothing
    CQ_INITIAL_REFUSE = 2,  ///< send `out` (an Initial CONNECTION_CLOSE, CONNECTION_REFUSED); keep nothing
};
/// Screening modes: accept any acceptable Initial; require address validation (Initials without
/// a valid Retry token get a Retry); refuse every Initial statelessly.
enum { CQ_SCREEN_ACCEPT = 0, CQ_SCREEN_VALIDATE = 1, CQ_SCREEN_REFUSE = 2 };

/// Screens a client Initial statelessly before any state is committed to it (RFC 9000 §8.1): a
/// Retry token in it is verified (bound to `remote` and valid 10 s, keyed by the config's static
/// secret); under `CQ_SCREEN_VALIDATE` an Initial without a valid token is answered with a Retry,
/// under `CQ_SCREEN_REFUSE` every Initial with CONNECTION_CLOSE. The answer goes to `out`
/// (capacity `*out_len`, at least CQ_MAX_DATAGRAM); sets `*out_len`. Returns a CQ_INITIAL_*.
int cq_initial_screen(const cq_config *config, const uint8_t *packet, size_t packet_len, const struct sockaddr *remote,
                      socklen_t remote_len, int mode, uint64_t now, uint8_t *out, size_t *out_len);

/// Frees the connection and everything it holds (no callbacks).
void cq_conn_free(cq_conn *conn);

/// Routing: the destination connection id of `packet` (short headers: CQ_CID_LENGTH bytes) into
/// `dcid` (capacity 20) and whether it is a long-header Initial of QUIC v1. 0, or -1 for a packet
/// that does not parse.
int cq_packet_route(const uint8_t *packet, size_t len, uint8_t *dcid, size_t *dcid_len, int *is_initial);

/// Feeds one received datagram. 0; 1 when the peer closed (draining: free the connection after
/// `cq_conn_close_delay`); -1 on a fatal error (message in `cq_conn_error`; send what
/// `cq_conn_write_close` produces, then free it).
int cq_conn_read(cq_conn *conn, const struct sockaddr *local, socklen_t local_len, const struct sockaddr *remote,
                 socklen_t remote_len, const uint8_t *packet, size_t len, uint64_t now);

/// Writes up to `max_datagrams` datagrams, each at most CQ_MAX_DATAGRAM bytes, into `out` at
/// offsets `i * CQ_MAX_DATAGRAM`, their sizes into `sizes`. Returns how many, or -1 on a fatal
/// error (as for `cq_conn_read`).
int cq_conn_write(cq_conn *conn, uint8_t *out, size_t *sizes, int max_datagrams, uint64_t now);

/// When the connection's timer expires (nanoseconds, UINT64_MAX: none).
uint64_t cq_conn_expiry(cq_conn *conn);
/// The timer fired: 0, or -1 when the connection is over (idle or handshake timeout; message in
/// `cq_conn_error`): free it.
int cq_conn_handle_expiry(cq_conn *conn, uint64_t now);

/// Closes the connection: writes one CONNECTION_CLOSE datagram into `out` (capacity
/// CQ_MAX_DATAGRAM) with application error `code`, or, after a fatal error, the transport error
/// (or TLS alert) that caused it. Returns its size (0: nothing to send).
int cq_conn_write_close(cq_conn *conn, uint64_t code, uint8_t *out, uint64_t now);

/// The last fatal error's message ("" when none).
const char *cq_conn_error(const cq_conn *conn);
/// The TLS alert the handshake failed with (0: none).
uint8_t cq_conn_tls_alert(const cq_conn *conn);
int cq_conn_handshake_completed(const cq_conn *conn);

// MARK: Streams

/// Opens a bidirectional stream. 0 and its id, or -1 when the peer's stream limit is reached.
int cq_stream_open(cq_conn *conn, int64_t *stream_id);
/// Copies `len` bytes into the stream's send queue (held until acknowledged). Returns the bytes
/// now held for the stream, or -1 when the stream is unknown or its sending side closed.
int64_t cq_stream_write(cq_conn *conn, int64_t stream_id, const uint8_t *data, size_t len);
/// Queues FIN after what is queued. 0 or -1.
int cq_stream_close_write(cq_conn *conn, int64_t stream_id);
/// Aborts both directions (RESET_STREAM and STOP_SENDING with `code`). 0 or -1.
int cq_stream_reset(cq_conn *conn, int64_t stream_id, uint64_t code);
/// The application took `len` bytes of the stream: reopens that much flow-control window.
void cq_stream_consumed(cq_conn *conn, int64_t stream_id, size_t len);

#ifdef __cplusplus
}
#endif

#endif

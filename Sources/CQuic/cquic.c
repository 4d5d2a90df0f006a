// agentd's QUIC layer over ngtcp2 0.12 + GnuTLS; see include/cquic.h and spec/network.md ("QUIC").
#include "cquic.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <ngtcp2/version.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// The build check (issue #13): this layer is written for ngtcp2 0.12's API. ngtcp2 1.x (Debian 13
// and later) changed callbacks, encryption levels and packet info; building against it must fail
// here, clearly, rather than misbehave.
#if !defined(NGTCP2_VERSION_NUM) || NGTCP2_VERSION_NUM < 0x000c00 || NGTCP2_VERSION_NUM >= 0x000d00
#error "agentd's QUIC layer (Sources/CQuic) is written for ngtcp2 0.12.x (Debian 12: libngtcp2-dev 0.12.1); this ngtcp2 has another API (ngtcp2 1.x changed callbacks and packet info). Install ngtcp2 0.12 or port Sources/CQuic."
#endif

static const char alpn_libp2p[] = "libp2p";
static const char tls_priority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:%DISABLE_TLS13_COMPAT_MODE";

const char *cq_ngtcp2_version(void) { return NGTCP2_VERSION; }

static void set_error(char *error, size_t error_len, const char *format, ...) {
    if (error == NULL || error_len == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_len, format, args);
    va_end(args);
}

// MARK: Keys and certificates

struct cq_key {
    gnutls_x509_privkey_t x509;
};

cq_key *cq_key_generate(void) {
    cq_key *key = calloc(1, sizeof *key);
    if (key == NULL) return NULL;
    if (gnutls_x509_privkey_init(&key->x509) < 0) {
        free(key);
        return NULL;
    }
    if (gnutls_x509_privkey_generate(key->x509, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                     0) < 0) {
        cq_key_free(key);
        return NULL;
    }
    return key;
}

void cq_key_free(cq_key *key) {
    if (key == NULL) return;
    gnutls_x509_privkey_deinit(key->x509);
    free(key);
}

static int copy_out(const gnutls_datum_t *datum, uint8_t *out, size_t *len) {
    if (datum->size > *len) return -1;
    memcpy(out, datum->data, datum->size);
    *len = datum->size;
    return 0;
}

int cq_key_spki(const cq_key *key, uint8_t *out, size_t *len) {
    gnutls_privkey_t privkey = NULL;
    gnutls_pubkey_t pubkey = NULL;
    gnutls_datum_t der = {NULL, 0};
    int result = -1;
    if (gnutls_privkey_init(&privkey) < 0) return -1;
    if (gnutls_privkey_import_x509(privkey, key->x509, 0) < 0) goto done;
    if (gnutls_pubkey_init(&pubkey) < 0) goto done;
    if (gnutls_pubkey_import_privkey(pubkey, privkey, 0, 0) < 0) goto done;
    if (gnutls_pubkey_export2(pubkey, GNUTLS_X509_FMT_DER, &der) < 0) goto done;
    result = copy_out(&der, out, len);
done:
    gnutls_free(der.data);
    if (pubkey) gnutls_pubkey_deinit(pubkey);
    gnutls_privkey_deinit(privkey);
    return result;
}

int cq_cert_build(const cq_key *key, const char *common_name, const uint8_t *extension, size_t extension_len,
                  int extension_critical, int64_t not_before, int64_t not_after, const char *extra_critical_oid,
                  uint8_t *out, size_t *len, char *error, size_t error_len) {
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t der = {NULL, 0};
    uint8_t serial[8];
    int rv, result = -1;
    if ((rv = gnutls_x509_crt_init(&crt)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_set_version(crt, 3)) < 0) goto fail;
    if ((rv = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial)) < 0) goto fail;
    serial[0] &= 0x7f;  // a positive INTEGER
    serial[0] |= 0x01;  // without a leading zero byte
    if ((rv = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_set_activation_time(crt, (time_t)not_before)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_set_expiration_time(crt, (time_t)not_after)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, common_name,
                                            (unsigned)strlen(common_name))) < 0)
        goto fail;
    if ((rv = gnutls_x509_crt_set_key(crt, key->x509)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_set_extension_by_oid(crt, CQ_LIBP2P_EXTENSION_OID, extension, extension_len,
                                                   extension_critical ? 1 : 0)) < 0)
        goto fail;
    if (extra_critical_oid != NULL) {
        static const uint8_t null_value[] = {0x05, 0x00};
        if ((rv = gnutls_x509_crt_set_extension_by_oid(crt, extra_critical_oid, null_value, sizeof null_value, 1)) <
            0)
            goto fail;
    }
    if ((rv = gnutls_x509_crt_sign2(crt, crt, key->x509, GNUTLS_DIG_SHA256, 0)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der)) < 0) goto fail;
    if (copy_out(&der, out, len) < 0) {
        set_error(error, error_len, "certificate of %u bytes does not fit the buffer", der.size);
        goto done;
    }
    result = 0;
    goto done;
fail:
    set_error(error, error_len, "cannot build the certificate: %s", gnutls_strerror(rv));
done:
    gnutls_free(der.data);
    if (crt) gnutls_x509_crt_deinit(crt);
    return result;
}

// A DER element's header at `p` (within `end`): the tag, and the content's start and length.
// -1 when it does not parse (hostile input: every length is checked against `end`).
static int der_header(const uint8_t *p, const uint8_t *end, uint8_t *tag, const uint8_t **content, size_t *length) {
    if (p >= end || end - p < 2) return -1;
    *tag = p[0];
    p++;
    size_t n = *p++;
    if (n & 0x80) {
        size_t count = n & 0x7f;
        if (count == 0 || count > 4 || (size_t)(end - p) < count) return -1;
        n = 0;
        for (size_t i = 0; i < count; i++) n = (n << 8) | *p++;
    }
    if ((size_t)(end - p) < n) return -1;
    *content = p;
    *length = n;
    return 0;
}

static int is_known_extension(const char *oid) {
    static const char *const known[] = {
        CQ_LIBP2P_EXTENSION_OID,
        "2.5.29.19",  // basicConstraints
        "2.5.29.15",  // keyUsage
        "2.5.29.37",  // extKeyUsage
        "2.5.29.14",  // subjectKeyIdentifier
        "2.5.29.35",  // authorityKeyIdentifier
        "2.5.29.17",  // subjectAltName
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(oid, known[i]) == 0) return 1;
    return 0;
}

int cq_cert_inspect(const uint8_t *der, size_t der_len, int64_t now, uint8_t *extension, size_t *extension_len,
                    uint8_t *spki, size_t *spki_len, char *error, size_t error_len) {
    gnutls_x509_crt_t crt = NULL;
    gnutls_pubkey_t pubkey = NULL;
    gnutls_datum_t ext = {NULL, 0}, spki_der = {NULL, 0};
    int result = -1, found = 0;
    if (der_len == 0 || der_len > 16384) {
        set_error(error, error_len, "certificate of %zu bytes (1 to 16384 allowed)", der_len);
        return -1;
    }
    gnutls_datum_t input = {(unsigned char *)der, (unsigned)der_len};
    if (gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_import(crt, &input, GNUTLS_X509_FMT_DER) < 0) {
        set_error(error, error_len, "certificate does not parse");
        goto done;
    }
    if (gnutls_x509_crt_get_version(crt) != 3) {
        set_error(error, error_len, "certificate is not X.509 v3");
        goto done;
    }
    time_t activation = gnutls_x509_crt_get_activation_time(crt);
    time_t expiration = gnutls_x509_crt_get_expiration_time(crt);
    if (activation == (time_t)-1 || expiration == (time_t)-1 || (int64_t)activation > now ||
        (int64_t)expiration < now) {
        set_error(error, error_len, "certificate is not valid now");
        goto done;
    }
    for (unsigned i = 0;; i++) {
        char oid[128];
        size_t oid_size = sizeof oid;
        unsigned int critical = 0;
        int rv = gnutls_x509_crt_get_extension_info(crt, i, oid, &oid_size, &critical);
        if (rv == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
        if (rv < 0) {
            set_error(error, error_len, "certificate extension %u does not parse", i);
            goto done;
        }
        if (strcmp(oid, CQ_LIBP2P_EXTENSION_OID) == 0) {
            if (found++) {
                set_error(error, error_len, "certificate carries the libp2p extension twice");
                goto done;
            }
            if (gnutls_x509_crt_get_extension_data2(crt, i, &ext) < 0) {
                set_error(error, error_len, "libp2p extension does not parse");
                goto done;
            }
        } else if (critical && !is_known_extension(oid)) {
            set_error(error, error_len, "certificate has an unknown critical extension %s", oid);
            goto done;
        }
    }
    if (!found) {
        set_error(error, error_len, "certificate has no libp2p extension");
        goto done;
    }
    // The self-signature, checked explicitly over the raw TBSCertificate (the certificate's own key
    // signs it; GnuTLS's chain verification would trust a certificate found in its own trust list
    // without checking the signature).
    int algorithm = gnutls_x509_crt_get_signature_algorithm(crt);
    if (algorithm < 0 || !gnutls_sign_is_secure2((gnutls_sign_algorithm_t)algorithm, 0)) {
        set_error(error, error_len, "certificate signature algorithm is unknown or insecure");
        goto done;
    }
    gnutls_digest_algorithm_t hash = gnutls_sign_get_hash_algorithm((gnutls_sign_algorithm_t)algorithm);
    gnutls_pk_algorithm_t pk = gnutls_sign_get_pk_algorithm((gnutls_sign_algorithm_t)algorithm);
    int strong = hash == GNUTLS_DIG_SHA256 || hash == GNUTLS_DIG_SHA384 || hash == GNUTLS_DIG_SHA512 ||
                 hash == GNUTLS_DIG_SHA3_256 || hash == GNUTLS_DIG_SHA3_384 || hash == GNUTLS_DIG_SHA3_512 ||
                 pk == GNUTLS_PK_EDDSA_ED25519 || pk == GNUTLS_PK_EDDSA_ED448;
    if (!strong) {
        set_error(error, error_len, "certificate signature uses a hash under 256 bits");
        goto done;
    }
    uint8_t tag;
    const uint8_t *content, *tbs_content;
    size_t length, tbs_length;
    if (der_header(der, der + der_len, &tag, &content, &length) < 0 || tag != 0x30 ||
        der_header(content, content + length, &tag, &tbs_content, &tbs_length) < 0 || tag != 0x30) {
        set_error(error, error_len, "certificate does not parse");
        goto done;
    }
    gnutls_datum_t tbs = {(unsigned char *)content, (unsigned)(tbs_content + tbs_length - content)};
    uint8_t signature_bytes[1024];
    size_t signature_size = sizeof signature_bytes;
    if (gnutls_x509_crt_get_signature(crt, (char *)signature_bytes, &signature_size) < 0) {
        set_error(error, error_len, "certificate signature does not parse");
        goto done;
    }
    gnutls_datum_t signature = {signature_bytes, (unsigned)signature_size};
    if (gnutls_pubkey_init(&pubkey) < 0 || gnutls_pubkey_import_x509(pubkey, crt, 0) < 0) {
        set_error(error, error_len, "certificate public key does not parse");
        goto done;
    }
    if (gnutls_pubkey_verify_data2(pubkey, (gnutls_sign_algorithm_t)algorithm, 0, &tbs, &signature) < 0) {
        set_error(error, error_len, "certificate self-signature is invalid");
        goto done;
    }
    if (gnutls_pubkey_export2(pubkey, GNUTLS_X509_FMT_DER, &spki_der) < 0) {
        set_error(error, error_len, "certificate public key does not export");
        goto done;
    }
    if (copy_out(&ext, extension, extension_len) < 0 || copy_out(&spki_der, spki, spki_len) < 0) {
        set_error(error, error_len, "libp2p extension or public key too large");
        goto done;
    }
    result = 0;
done:
    gnutls_free(ext.data);
    gnutls_free(spki_der.data);
    if (pubkey) gnutls_pubkey_deinit(pubkey);
    if (crt) gnutls_x509_crt_deinit(crt);
    return result;
}

int cq_verify_host_signature(int key_type, const uint8_t *key, size_t key_len, const uint8_t *message,
                             size_t message_len, const uint8_t *signature, size_t signature_len) {
    gnutls_sign_algorithm_t algorithm;
    switch (key_type) {
    case 0: algorithm = GNUTLS_SIGN_RSA_SHA256; break;
    case 3: algorithm = GNUTLS_SIGN_ECDSA_SHA256; break;
    default: return -1;
    }
    if (key_len == 0 || key_len > 8192 || signature_len == 0 || signature_len > 8192) return -1;
    gnutls_pubkey_t pubkey = NULL;
    int result = -1;
    gnutls_datum_t key_datum = {(unsigned char *)key, (unsigned)key_len};
    gnutls_datum_t message_datum = {(unsigned char *)message, (unsigned)message_len};
    gnutls_datum_t signature_datum = {(unsigned char *)signature, (unsigned)signature_len};
    if (gnutls_pubkey_init(&pubkey) < 0) return -1;
    if (gnutls_pubkey_import(pubkey, &key_datum, GNUTLS_X509_FMT_DER) < 0) goto done;
    int pk = gnutls_pubkey_get_pk_algorithm(pubkey, NULL);
    if ((key_type == 0 && pk != GNUTLS_PK_RSA) || (key_type == 3 && pk != GNUTLS_PK_ECDSA)) goto done;
    if (gnutls_pubkey_verify_data2(pubkey, algorithm, 0, &message_datum, &signature_datum) < 0) goto done;
    result = 0;
done:
    gnutls_pubkey_deinit(pubkey);
    return result;
}

// MARK: Credentials

struct cq_credentials {
    gnutls_certificate_credentials_t gnutls;
};

static int verify_peer_certificate(gnutls_session_t session);

cq_credentials *cq_credentials_new(const cq_key *key, const uint8_t *cert_der, size_t cert_len, char *error,
                                   size_t error_len) {
    cq_credentials *credentials = calloc(1, sizeof *credentials);
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t input = {(unsigned char *)cert_der, (unsigned)cert_len};
    int rv;
    if (credentials == NULL) return NULL;
    if ((rv = gnutls_certificate_allocate_credentials(&credentials->gnutls)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_init(&crt)) < 0) goto fail;
    if ((rv = gnutls_x509_crt_import(crt, &input, GNUTLS_X509_FMT_DER)) < 0) goto fail;
    if ((rv = gnutls_certificate_set_x509_key(credentials->gnutls, &crt, 1, key->x509)) < 0) goto fail;
    gnutls_certificate_set_verify_function(credentials->gnutls, verify_peer_certificate);
    gnutls_x509_crt_deinit(crt);
    return credentials;
fail:
    set_error(error, error_len, "cannot set up TLS credentials: %s", gnutls_strerror(rv));
    if (crt) gnutls_x509_crt_deinit(crt);
    cq_credentials_free(credentials);
    return NULL;
}

void cq_credentials_free(cq_credentials *credentials) {
    if (credentials == NULL) return;
    if (credentials->gnutls) gnutls_certificate_free_credentials(credentials->gnutls);
    free(credentials);
}

// MARK: Streams' send queues

// A piece of a stream's outgoing data. ngtcp2 keeps pointers into it for retransmission until the
// peer acknowledges it, so a chunk never moves and is freed only once fully acknowledged.
typedef struct cq_chunk {
    struct cq_chunk *next;
    uint64_t offset;  // stream offset of data[0]
    size_t len;
    uint8_t data[];
} cq_chunk;

typedef struct cq_stream {
    int64_t id;
    cq_chunk *head, *tail;  // unacknowledged chunks, oldest first
    cq_chunk *cursor;       // the chunk holding `sent` (NULL: all queued data sent)
    uint64_t acked;         // stream offset acknowledged without a gap
    uint64_t sent;          // stream offset of the next byte to send
    uint64_t queued;        // stream offset after the last queued byte
    int fin_queued, fin_sent, write_closed, blocked, reported_open;
    struct cq_stream *next_pending;  // in the connection's send list
    int pending;
    struct cq_stream *prev, *next;   // all streams of the connection
} cq_stream;

struct cq_conn {
    ngtcp2_conn *conn;
    gnutls_session_t session;
    ngtcp2_crypto_conn_ref conn_ref;
    cq_callbacks callbacks;
    void *ctx;
    cq_config config;
    int is_server;
    int peer_verified;
    int fatal;  // a fatal error happened: the close carries `close_error`
    ngtcp2_connection_close_error close_error;
    cq_stream *streams;
    cq_stream *pending_head, *pending_tail;
    char error[256];
};

static void stream_free(cq_stream *stream) {
    cq_chunk *chunk = stream->head;
    while (chunk) {
        cq_chunk *next = chunk->next;
        free(chunk);
        chunk = next;
    }
    free(stream);
}

static cq_stream *stream_new(cq_conn *c, int64_t id) {
    cq_stream *stream = calloc(1, sizeof *stream);
    if (stream == NULL) return NULL;
    stream->id = id;
    stream->next = c->streams;
    if (c->streams) c->streams->prev = stream;
    c->streams = stream;
    return stream;
}

static void stream_unlink(cq_conn *c, cq_stream *stream) {
    if (stream->prev) stream->prev->next = stream->next;
    else c->streams = stream->next;
    if (stream->next) stream->next->prev = stream->prev;
    if (stream->pending) {
        cq_stream **link = &c->pending_head;
        cq_stream *previous = NULL;
        while (*link && *link != stream) {
            previous = *link;
            link = &(*link)->next_pending;
        }
        if (*link) {
            *link = stream->next_pending;
            if (c->pending_tail == stream) c->pending_tail = previous;
        }
        stream->pending = 0;
    }
}

// ngtcp2 0.12 has no getter for a stream's user data: a scan, most recently used first (a bulk
// stream stays at the front; connections hold at most a few hundred streams).
static cq_stream *stream_find(cq_conn *c, int64_t id) {
    for (cq_stream *stream = c->streams; stream; stream = stream->next) {
        if (stream->id != id) continue;
        if (stream != c->streams) {  // move to the front
            stream->prev->next = stream->next;
            if (stream->next) stream->next->prev = stream->prev;
            stream->prev = NULL;
            stream->next = c->streams;
            c->streams->prev = stream;
            c->streams = stream;
        }
        return stream;
    }
    return NULL;
}

static int stream_has_unsent(const cq_stream *stream) {
    return stream->sent < stream->queued || (stream->fin_queued && !stream->fin_sent);
}

static void stream_mark_pending(cq_conn *c, cq_stream *stream) {
    if (stream->pending || stream->blocked || !stream_has_unsent(stream)) return;
    stream->pending = 1;
    stream->next_pending = NULL;
    if (c->pending_tail) c->pending_tail->next_pending = stream;
    else c->pending_head = stream;
    c->pending_tail = stream;
}

static cq_stream *pending_pop(cq_conn *c) {
    cq_stream *stream = c->pending_head;
    if (stream == NULL) return NULL;
    c->pending_head = stream->next_pending;
    if (c->pending_head == NULL) c->pending_tail = NULL;
    stream->pending = 0;
    stream->next_pending = NULL;
    return stream;
}

// MARK: ngtcp2 callbacks

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) { return ((cq_conn *)ref->user_data)->conn; }

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx) {
    (void)rand_ctx;
    (void)gnutls_rnd(GNUTLS_RND_RANDOM, dest, destlen);
}

static int get_new_connection_id_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                                    void *user_data) {
    (void)conn;
    cq_conn *c = user_data;
    if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) < 0) return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    if (ngtcp2_crypto_generate_stateless_reset_token(token, c->config.static_secret, sizeof c->config.static_secret,
                                                     cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    c->callbacks.cid_added(c->ctx, cid->data, cid->datalen);
    return 0;
}

static int remove_connection_id_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user_data) {
    (void)conn;
    cq_conn *c = user_data;
    c->callbacks.cid_removed(c->ctx, cid->data, cid->datalen);
    return 0;
}

static int handshake_completed_cb(ngtcp2_conn *conn, void *user_data) {
    (void)conn;
    cq_conn *c = user_data;
    gnutls_datum_t alpn = {NULL, 0};
    if (gnutls_alpn_get_selected_protocol(c->session, &alpn) != 0 || alpn.size != strlen(alpn_libp2p) ||
        memcmp(alpn.data, alpn_libp2p, alpn.size) != 0) {
        snprintf(c->error, sizeof c->error, "the peer did not agree ALPN \"libp2p\"");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (!c->peer_verified) {
        snprintf(c->error, sizeof c->error, "the handshake completed without a verified peer certificate");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    c->callbacks.handshake_completed(c->ctx);
    return 0;
}

static cq_stream *remote_stream(cq_conn *c, int64_t id) {
    cq_stream *stream = stream_find(c, id);
    if (stream) return stream;
    stream = stream_new(c, id);
    if (stream == NULL) return NULL;
    if (ngtcp2_conn_set_stream_user_data(c->conn, id, stream) != 0) {
        stream_unlink(c, stream);
        stream_free(stream);
        return NULL;
    }
    stream->reported_open = 1;
    c->callbacks.stream_opened(c->ctx, id);
    return stream;
}

static int stream_open_cb(ngtcp2_conn *conn, int64_t stream_id, void *user_data) {
    (void)conn;
    cq_conn *c = user_data;
    if (!ngtcp2_is_bidi_stream(stream_id)) return 0;  // libp2p uses bidirectional streams only
    return remote_stream(c, stream_id) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data, void *stream_user_data) {
    (void)offset;
    cq_conn *c = user_data;
    if (!ngtcp2_is_bidi_stream(stream_id)) {
        // Unidirectional streams are not allowed (initial_max_streams_uni = 0); credit and drop.
        ngtcp2_conn_extend_max_stream_offset(conn, stream_id, datalen);
        ngtcp2_conn_extend_max_offset(conn, datalen);
        return 0;
    }
    cq_stream *stream = stream_user_data ? stream_user_data : remote_stream(c, stream_id);
    if (stream == NULL) return NGTCP2_ERR_CALLBACK_FAILURE;
    c->callbacks.stream_data(c->ctx, stream_id, data, datalen, (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    return 0;
}

static int acked_stream_data_offset_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t offset, uint64_t datalen,
                                       void *user_data, void *stream_user_data) {
    (void)conn;
    cq_conn *c = user_data;
    cq_stream *stream = stream_user_data;
    if (stream == NULL) return 0;
    uint64_t end = offset + datalen;
    if (end > stream->acked) stream->acked = end;
    while (stream->head && stream->head->offset + stream->head->len <= stream->acked &&
           stream->head != stream->cursor) {
        cq_chunk *chunk = stream->head;
        stream->head = chunk->next;
        if (stream->tail == chunk) stream->tail = NULL;
        free(chunk);
    }
    c->callbacks.stream_acked(c->ctx, stream_id, stream->queued - stream->acked);
    return 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
    (void)flags;
    (void)app_error_code;
    cq_conn *c = user_data;
    cq_stream *stream = stream_user_data;
    if (!ngtcp2_is_bidi_stream(stream_id)) return 0;
    if (!ngtcp2_conn_is_local_stream(conn, stream_id)) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    if (stream) {
        stream_unlink(c, stream);
        stream_free(stream);
    }
    c->callbacks.stream_closed(c->ctx, stream_id);
    return 0;
}

static int stream_reset_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
    (void)conn;
    (void)final_size;
    (void)stream_user_data;
    cq_conn *c = user_data;
    c->callbacks.stream_reset(c->ctx, stream_id, app_error_code);
    return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data, void *user_data,
                                     void *stream_user_data) {
    (void)conn;
    (void)stream_id;
    (void)max_data;
    cq_conn *c = user_data;
    cq_stream *stream = stream_user_data;
    if (stream && stream->blocked) {
        stream->blocked = 0;
        stream_mark_pending(c, stream);
    }
    return 0;
}

static int verify_peer_certificate(gnutls_session_t session) {
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    cq_conn *c = ref->user_data;
    unsigned int count = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(session, &count);
    if (peers == NULL || count != 1) {
        snprintf(c->error, sizeof c->error, "the peer sent %u certificates (exactly 1 required)", count);
        return -1;
    }
    uint8_t extension[4096], spki[4096];
    size_t extension_len = sizeof extension, spki_len = sizeof spki;
    char message[200];
    if (cq_cert_inspect(peers[0].data, peers[0].size, (int64_t)time(NULL), extension, &extension_len, spki,
                        &spki_len, message, sizeof message) != 0) {
        snprintf(c->error, sizeof c->error, "peer certificate refused: %s", message);
        return -1;
    }
    if (c->callbacks.verify_peer(c->ctx, extension, extension_len, spki, spki_len) != 0) {
        if (c->error[0] == 0) snprintf(c->error, sizeof c->error, "peer certificate refused");
        return -1;
    }
    c->peer_verified = 1;
    return 0;
}

// MARK: Connections

static void init_callbacks(ngtcp2_callbacks *cb, int is_server) {
    memset(cb, 0, sizeof *cb);
    if (is_server) {
        cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    } else {
        cb->client_initial = ngtcp2_crypto_client_initial_cb;
        cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    }
    cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb->encrypt = ngtcp2_crypto_encrypt_cb;
    cb->decrypt = ngtcp2_crypto_decrypt_cb;
    cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb->update_key = ngtcp2_crypto_update_key_cb;
    cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb->rand = rand_cb;
    cb->get_new_connection_id = get_new_connection_id_cb;
    cb->remove_connection_id = remove_connection_id_cb;
    cb->handshake_completed = handshake_completed_cb;
    cb->stream_open = stream_open_cb;
    cb->recv_stream_data = recv_stream_data_cb;
    cb->acked_stream_data_offset = acked_stream_data_offset_cb;
    cb->stream_close = stream_close_cb;
    cb->stream_reset = stream_reset_cb;
    cb->extend_max_stream_data = extend_max_stream_data_cb;
}

static void init_settings(ngtcp2_settings *settings, ngtcp2_transport_params *params, const cq_config *config,
                          uint64_t now) {
    ngtcp2_settings_default(settings);
    settings->initial_ts = now;
    settings->max_window = config->connection_window;
    settings->max_stream_window = config->stream_window;
    settings->handshake_timeout = config->handshake_timeout;
    settings->max_tx_udp_payload_size = CQ_MAX_DATAGRAM;
    ngtcp2_transport_params_default(params);
    params->initial_max_stream_data_bidi_local = config->stream_window;
    params->initial_max_stream_data_bidi_remote = config->stream_window;
    params->initial_max_data = config->connection_window;
    params->initial_max_streams_bidi = config->max_streams_bidi;
    params->initial_max_streams_uni = 0;
    params->max_idle_timeout = config->idle_timeout;
    params->active_connection_id_limit = 4;
}

static int setup_tls(cq_conn *c, cq_credentials *credentials, char *error, size_t error_len) {
    int rv;
    unsigned flags = (c->is_server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_END_OF_EARLY_DATA;
    if ((rv = gnutls_init(&c->session, flags)) < 0) goto fail;
    if ((rv = gnutls_priority_set_direct(c->session, tls_priority, NULL)) < 0) goto fail;
    rv = c->is_server ? ngtcp2_crypto_gnutls_configure_server_session(c->session)
                      : ngtcp2_crypto_gnutls_configure_client_session(c->session);
    if (rv != 0) {
        set_error(error, error_len, "cannot configure the TLS session for QUIC");
        return -1;
    }
    gnutls_session_set_ptr(c->session, &c->conn_ref);
    if ((rv = gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE, credentials->gnutls)) < 0) goto fail;
    gnutls_datum_t alpn = {(unsigned char *)alpn_libp2p, (unsigned)strlen(alpn_libp2p)};
    if ((rv = gnutls_alpn_set_protocols(c->session, &alpn, 1, GNUTLS_ALPN_MANDATORY)) < 0) goto fail;
    // The server requires a client certificate; the client sends no SNI (libp2p/specs tls/tls.md).
    if (c->is_server) gnutls_certificate_server_set_request(c->session, GNUTLS_CERT_REQUIRE);
    ngtcp2_conn_set_tls_native_handle(c->conn, c->session);
    return 0;
fail:
    set_error(error, error_len, "cannot set up the TLS session: %s", gnutls_strerror(rv));
    return -1;
}

static cq_conn *conn_alloc(const cq_config *config, const cq_callbacks *callbacks, void *ctx, int is_server) {
    cq_conn *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->config = *config;
    c->callbacks = *callbacks;
    c->ctx = ctx;
    c->is_server = is_server;
    c->conn_ref.get_conn = get_conn;
    c->conn_ref.user_data = c;
    ngtcp2_connection_close_error_default(&c->close_error);
    return c;
}

static void random_cid(ngtcp2_cid *cid) {
    uint8_t data[CQ_CID_LENGTH];
    (void)gnutls_rnd(GNUTLS_RND_NONCE, data, sizeof data);
    ngtcp2_cid_init(cid, data, sizeof data);
}

static void finish_setup(cq_conn *c) {
    if (c->config.keep_alive) ngtcp2_conn_set_keep_alive_timeout(c->conn, c->config.keep_alive);
    ngtcp2_cid scid;
    ngtcp2_conn_get_scid(c->conn, &scid);  // the first one (only one exists yet)
    c->callbacks.cid_added(c->ctx, scid.data, scid.datalen);
}

cq_conn *cq_conn_client_new(const cq_config *config, cq_credentials *credentials, const struct sockaddr *local,
                            socklen_t local_len, const struct sockaddr *remote, socklen_t remote_len,
                            const cq_callbacks *callbacks, void *ctx, uint64_t now, char *error, size_t error_len) {
    cq_conn *c = conn_alloc(config, callbacks, ctx, 0);
    if (c == NULL) return NULL;
    ngtcp2_callbacks cb;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    init_callbacks(&cb, 0);
    init_settings(&settings, &params, config, now);
    ngtcp2_cid dcid, scid;
    random_cid(&dcid);
    random_cid(&scid);
    ngtcp2_path path = {{(ngtcp2_sockaddr *)local, local_len}, {(ngtcp2_sockaddr *)remote, remote_len}, NULL};
    int rv = ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &settings, &params,
                                    NULL, c);
    if (rv != 0) {
        set_error(error, error_len, "cannot create the QUIC connection: %s", ngtcp2_strerror(rv));
        free(c);
        return NULL;
    }
    if (setup_tls(c, credentials, error, error_len) != 0) {
        cq_conn_free(c);
        return NULL;
    }
    finish_setup(c);
    return c;
}

/// How long a Retry token is good for: one round trip and some retransmissions.
static const ngtcp2_duration retry_token_lifetime = 10 * NGTCP2_SECONDS;

static int verify_retry_token(const cq_config *config, const ngtcp2_pkt_hd *hd, const struct sockaddr *remote,
                              socklen_t remote_len, uint64_t now, ngtcp2_cid *odcid) {
    return ngtcp2_crypto_verify_retry_token(odcid, hd->token.base, hd->token.len, config->static_secret,
                                            sizeof config->static_secret, hd->version,
                                            (const ngtcp2_sockaddr *)remote, remote_len, &hd->dcid,
                                            retry_token_lifetime, now);
}

int cq_initial_screen(const cq_config *config, const uint8_t *packet, size_t packet_len, const struct sockaddr *remote,
                      socklen_t remote_len, int mode, uint64_t now, uint8_t *out, size_t *out_len) {
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, packet, packet_len) != 0 || hd.version != NGTCP2_PROTO_VER_V1) return CQ_INITIAL_DROP;
    int validated = 0;
    if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        ngtcp2_cid odcid;
        // A forged, replayed-from-elsewhere or expired Retry token: dropped (RFC 9000 §8.1.2 allows
        // dropping; a close would only help a spoofer learn the token is bad).
        if (verify_retry_token(config, &hd, remote, remote_len, now, &odcid) != 0) return CQ_INITIAL_DROP;
        validated = 1;
    }
    // Any other token (NEW_TOKEN, which we never issue) counts as none (RFC 9000 §8.1.3).
    if (mode == CQ_SCREEN_REFUSE) {
        // Stateless refusal: an Initial with CONNECTION_CLOSE(CONNECTION_REFUSED), keyed from the
        // client's destination id as its own Initial was; nothing is kept.
        ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(out, *out_len, hd.version, &hd.scid, &hd.dcid,
                                                              NGTCP2_CONNECTION_REFUSED, NULL, 0);
        if (n <= 0) return CQ_INITIAL_DROP;
        *out_len = (size_t)n;
        return CQ_INITIAL_REFUSE;
    }
    if (validated || mode == CQ_SCREEN_ACCEPT) return CQ_INITIAL_ACCEPT;
    // Address validation (RFC 9000 §8.1.2): a Retry with a token bound to the client's address and
    // its original destination id; only a client that receives it at that address can answer.
    ngtcp2_cid retry_scid;
    random_cid(&retry_scid);
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
    ngtcp2_ssize token_len =
        ngtcp2_crypto_generate_retry_token(token, config->static_secret, sizeof config->static_secret, hd.version,
                                           (const ngtcp2_sockaddr *)remote, remote_len, &retry_scid, &hd.dcid, now);
    if (token_len < 0) return CQ_INITIAL_DROP;
    ngtcp2_ssize n =
        ngtcp2_crypto_write_retry(out, *out_len, hd.version, &hd.scid, &retry_scid, &hd.dcid, token, (size_t)token_len);
    if (n <= 0) return CQ_INITIAL_DROP;
    *out_len = (size_t)n;
    return CQ_INITIAL_RETRY;
}

cq_conn *cq_conn_server_new(const cq_config *config, cq_credentials *credentials, const uint8_t *packet,
                            size_t packet_len, const struct sockaddr *local, socklen_t local_len,
                            const struct sockaddr *remote, socklen_t remote_len, const cq_callbacks *callbacks,
                            void *ctx, uint64_t now, uint8_t *original_dcid, size_t *original_dcid_len, char *error,
                            size_t error_len) {
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, packet, packet_len) != 0) {
        set_error(error, error_len, "not an acceptable QUIC Initial");
        return NULL;
    }
    if (hd.version != NGTCP2_PROTO_VER_V1) {
        set_error(error, error_len, "QUIC version 0x%08x (only v1 is spoken)", hd.version);
        return NULL;
    }
    // An Initial answering our Retry carries its token: the client's original destination id is
    // in it, and the transport parameters must name both (RFC 9000 §7.3).
    ngtcp2_cid retry_odcid;
    int retried = 0;
    if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (verify_retry_token(config, &hd, remote, remote_len, now, &retry_odcid) != 0) {
            set_error(error, error_len, "invalid Retry token");
            return NULL;
        }
        retried = 1;
    }
    cq_conn *c = conn_alloc(config, callbacks, ctx, 1);
    if (c == NULL) return NULL;
    ngtcp2_callbacks cb;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    init_callbacks(&cb, 1);
    init_settings(&settings, &params, config, now);
    if (retried) {
        params.original_dcid = retry_odcid;
        params.retry_scid = hd.dcid;
        params.retry_scid_present = 1;
        settings.token = hd.token;
    } else {
        params.original_dcid = hd.dcid;
    }
    ngtcp2_cid scid;
    random_cid(&scid);
    ngtcp2_path path = {{(ngtcp2_sockaddr *)local, local_len}, {(ngtcp2_sockaddr *)remote, remote_len}, NULL};
    int rv = ngtcp2_conn_server_new(&c->conn, &hd.scid, &scid, &path, hd.version, &cb, &settings, &params, NULL, c);
    if (rv != 0) {
        set_error(error, error_len, "cannot create the QUIC connection: %s", ngtcp2_strerror(rv));
        free(c);
        return NULL;
    }
    if (setup_tls(c, credentials, error, error_len) != 0) {
        cq_conn_free(c);
        return NULL;
    }
    memcpy(original_dcid, hd.dcid.data, hd.dcid.datalen);
    *original_dcid_len = hd.dcid.datalen;
    finish_setup(c);
    return c;
}

void cq_conn_free(cq_conn *c) {
    if (c == NULL) return;
    cq_stream *stream = c->streams;
    while (stream) {
        cq_stream *next = stream->next;
        stream_free(stream);
        stream = next;
    }
    if (c->conn) ngtcp2_conn_del(c->conn);
    if (c->session) gnutls_deinit(c->session);
    free(c);
}

int cq_packet_route(const uint8_t *packet, size_t len, uint8_t *dcid, size_t *dcid_len, int *is_initial) {
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, packet, len, CQ_CID_LENGTH);
    if (rv != 0 && rv != NGTCP2_ERR_VERSION_NEGOTIATION) return -1;
    if (vc.dcidlen > NGTCP2_MAX_CIDLEN) return -1;
    memcpy(dcid, vc.dcid, vc.dcidlen);
    *dcid_len = vc.dcidlen;
    // Long header with type Initial (0b00 in bits 4-5) of version 1.
    *is_initial = rv == 0 && (packet[0] & 0x80) && vc.version == NGTCP2_PROTO_VER_V1 && ((packet[0] & 0x30) == 0);
    return 0;
}

static void record_fatal(cq_conn *c, int liberr) {
    if (c->fatal) return;
    c->fatal = 1;
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->conn);
    if (liberr == NGTCP2_ERR_CRYPTO && alert) {
        ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->close_error, alert, NULL, 0);
    } else {
        ngtcp2_connection_close_error_set_transport_error_liberr(&c->close_error, liberr, NULL, 0);
    }
    if (c->error[0] == 0) {
        if (liberr == NGTCP2_ERR_CRYPTO && alert)
            snprintf(c->error, sizeof c->error, "TLS handshake failed (alert %u)", alert);
        else snprintf(c->error, sizeof c->error, "%s", ngtcp2_strerror(liberr));
    }
}

int cq_conn_read(cq_conn *c, const struct sockaddr *local, socklen_t local_len, const struct sockaddr *remote,
                 socklen_t remote_len, const uint8_t *packet, size_t len, uint64_t now) {
    if (c->fatal) return -1;
    ngtcp2_path path = {{(ngtcp2_sockaddr *)local, local_len}, {(ngtcp2_sockaddr *)remote, remote_len}, NULL};
    ngtcp2_pkt_info pi = {0};
    int rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, packet, len, now);
    if (rv == 0) return 0;
    if (rv == NGTCP2_ERR_DRAINING) {
        if (c->error[0] == 0) {
            const ngtcp2_connection_close_error *remote_error = NULL;
            (void)remote_error;
            snprintf(c->error, sizeof c->error, "the peer closed the connection");
        }
        return 1;
    }
    // Packets that cannot be decrypted, or arrive for a discarded key, are dropped by ngtcp2 and
    // return 0; what remains ends the connection.
    record_fatal(c, rv);
    return -1;
}

static int write_one(cq_conn *c, uint8_t *out, uint64_t now) {
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    int tried = 0;
    for (;;) {
        cq_stream *stream = NULL;
        // Each pending stream gets one try per datagram; then control frames only.
        if (tried < 64) stream = pending_pop(c);
        ngtcp2_vec vecs[16];
        size_t count = 0;
        uint32_t flags = 0;
        int64_t stream_id = -1;
        if (stream) {
            tried++;
            stream_id = stream->id;
            uint64_t offset = stream->sent;
            for (cq_chunk *chunk = stream->cursor; chunk && count < 16; chunk = chunk->next) {
                size_t skip = (size_t)(offset > chunk->offset ? offset - chunk->offset : 0);
                vecs[count].base = chunk->data + skip;
                vecs[count].len = chunk->len - skip;
                count++;
            }
            int all = count == 0 || stream->tail == NULL ||
                      (vecs[count - 1].base + vecs[count - 1].len == stream->tail->data + stream->tail->len);
            if (stream->fin_queued && all) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        ngtcp2_ssize written = 0;
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, out, CQ_MAX_DATAGRAM, &written, flags,
                                                   stream_id, vecs, count, now);
        if (n < 0) {
            if (stream && n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                stream->blocked = 1;  // extend_max_stream_data puts it back
                continue;
            }
            if (stream && (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND)) {
                stream->fin_sent = 1;  // nothing more will go out on it
                stream->sent = stream->queued;
                stream->cursor = NULL;
                continue;
            }
            record_fatal(c, (int)n);
            return -1;
        }
        if (stream) {
            if (written > 0) {
                stream->sent += (uint64_t)written;
                while (stream->cursor && stream->cursor->offset + stream->cursor->len <= stream->sent)
                    stream->cursor = stream->cursor->next;
            }
            if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && written >= 0 && stream->sent == stream->queued)
                stream->fin_sent = 1;
            stream_mark_pending(c, stream);  // to the back of the list, if more is left
        }
        return (int)n;
    }
}

int cq_conn_write(cq_conn *c, uint8_t *out, size_t *sizes, int max_datagrams, uint64_t now) {
    if (c->fatal) return -1;
    int handshake_done = ngtcp2_conn_get_handshake_completed(c->conn);
    size_t quantum = ngtcp2_conn_get_send_quantum(c->conn);
    size_t budget = quantum > 0 ? quantum : CQ_MAX_DATAGRAM;
    int count = 0;
    size_t bytes = 0;
    while (count < max_datagrams && bytes < budget) {
        int n = write_one(c, out + (size_t)count * CQ_MAX_DATAGRAM, now);
        if (n < 0) return -1;
        if (n == 0) break;
        sizes[count++] = (size_t)n;
        bytes += (size_t)n;
    }
    // Pacing only once the handshake is complete: during it, ngtcp2 0.12 paces from the 333 ms
    // initial RTT estimate and would hold the Finished back for ~20 ms.
    if (handshake_done) ngtcp2_conn_update_pkt_tx_time(c->conn, now);
    return count;
}

uint64_t cq_conn_expiry(cq_conn *c) { return ngtcp2_conn_get_expiry(c->conn); }

int cq_conn_handle_expiry(cq_conn *c, uint64_t now) {
    if (c->fatal) return -1;
    int rv = ngtcp2_conn_handle_expiry(c->conn, now);
    if (rv == 0) return 0;
    if (rv == NGTCP2_ERR_IDLE_CLOSE) snprintf(c->error, sizeof c->error, "idle timeout");
    else if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) snprintf(c->error, sizeof c->error, "handshake timed out");
    record_fatal(c, rv);
    return -1;
}

int cq_conn_write_close(cq_conn *c, uint64_t code, uint8_t *out, uint64_t now) {
    if (ngtcp2_conn_is_in_closing_period(c->conn) || ngtcp2_conn_is_in_draining_period(c->conn)) return 0;
    ngtcp2_connection_close_error error;
    if (c->fatal) {
        error = c->close_error;
        // An idle or handshake timeout closes silently.
        if (error.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT_IDLE_CLOSE) return 0;
    } else {
        ngtcp2_connection_close_error_set_application_error(&error, code, NULL, 0);
    }
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, out, CQ_MAX_DATAGRAM, &error, now);
    return n > 0 ? (int)n : 0;
}

const char *cq_conn_error(const cq_conn *c) { return c->error; }
uint8_t cq_conn_tls_alert(const cq_conn *c) { return ngtcp2_conn_get_tls_alert(c->conn); }
int cq_conn_handshake_completed(const cq_conn *c) { return ngtcp2_conn_get_handshake_completed(c->conn); }

// MARK: Stream calls

int cq_stream_open(cq_conn *c, int64_t *stream_id) {
    cq_stream *stream = stream_new(c, -1);
    if (stream == NULL) return -1;
    if (ngtcp2_conn_open_bidi_stream(c->conn, stream_id, stream) != 0) {
        stream_unlink(c, stream);
        stream_free(stream);
        return -1;
    }
    stream->id = *stream_id;
    return 0;
}

int64_t cq_stream_write(cq_conn *c, int64_t stream_id, const uint8_t *data, size_t len) {
    cq_stream *stream = stream_find(c, stream_id);
    if (stream == NULL || stream->fin_queued || stream->write_closed) return -1;
    if (len > 0) {
        cq_chunk *chunk = malloc(sizeof *chunk + len);
        if (chunk == NULL) return -1;
        chunk->next = NULL;
        chunk->offset = stream->queued;
        chunk->len = len;
        memcpy(chunk->data, data, len);
        if (stream->tail) stream->tail->next = chunk;
        else stream->head = chunk;
        stream->tail = chunk;
        if (stream->cursor == NULL) stream->cursor = chunk;
        stream->queued += len;
        stream_mark_pending(c, stream);
    }
    return (int64_t)(stream->queued - stream->acked);
}

int cq_stream_close_write(cq_conn *c, int64_t stream_id) {
    cq_stream *stream = stream_find(c, stream_id);
    if (stream == NULL || stream->write_closed) return -1;
    if (stream->fin_queued) return 0;
    stream->fin_queued = 1;
    stream_mark_pending(c, stream);
    return 0;
}

int cq_stream_reset(cq_conn *c, int64_t stream_id, uint64_t code) {
    cq_stream *stream = stream_find(c, stream_id);
    if (stream) {
        stream->write_closed = 1;
        stream->sent = stream->queued;
        stream->cursor = NULL;
    }
    return ngtcp2_conn_shutdown_stream(c->conn, stream_id, code) == 0 ? 0 : -1;
}

void cq_stream_consumed(cq_conn *c, int64_t stream_id, size_t len) {
    if (len == 0) return;
    ngtcp2_conn_extend_max_stream_offset(c->conn, stream_id, len);
    ngtcp2_conn_extend_max_offset(c->conn, len);
}

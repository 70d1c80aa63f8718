/*
 * tls_ctx: builds BoringSSL contexts from configuration. Server contexts
 * carry up to 8 certificate chains: per name (the leaf's DNS SANs, else its
 * CN) an ECDSA and/or an RSA one. This BoringSSL keeps one per SSL_CTX, so a
 * select-certificate callback installs the one for the ClientHello's
 * server_name (exact or wildcard match; the first pair's name when nothing
 * matches) and key type. TLS 1.2 and 1.3 with AEAD ciphers only. Client contexts (outbound) have the same floor
 * and a trust store. Errors are written to `err` as one line.
 */
#ifndef STP_TLS_CTX_H
#define STP_TLS_CTX_H

#include <stddef.h>

#include <openssl/ssl.h>

typedef struct {
    const char *cert_file; /* PEM: leaf first, then intermediates */
    const char *key_file;  /* PEM private key (RSA or EC); NULL: in cert_file */
} stp_tls_keypair_t;

/*
 * Server context with `n` key pairs (1 to 8; per name at most one RSA and one
 * ECDSA).
 * min_version: TLS1_2_VERSION or TLS1_3_VERSION.
 * Returns a new SSL_CTX (caller frees with SSL_CTX_free) or NULL with `err` set
 * and, if `bad` is not NULL, *bad the index of the pair the error is about
 * (the second of two that clash), or n when it is about none.
 */
SSL_CTX *stp_tls_ctx_server_new(const stp_tls_keypair_t *pairs, size_t n, uint16_t min_version,
                                char *err, size_t err_len, size_t *bad);

/*
 * Loads one pair as stp_tls_ctx_server_new would and checks that key and
 * certificate match, so that every bad pair of a configuration can be named
 * (stp_tls_ctx_server_new stops at the first). Returns 0, or -1 with `err`
 * set: "cert FILE: ...", "key FILE: ..." or "key FILE does not match
 * certificate FILE".
 */
int stp_tls_keypair_check(const stp_tls_keypair_t *pair, char *err, size_t err_len);

/*
 * Client context: trust anchors from `ca_file` (PEM bundle) or, when NULL,
 * the system default paths. Peer verification is not switched on here; the
 * caller decides per connection (see tls_verify.h in the outbound work).
 */
SSL_CTX *stp_tls_ctx_client_new(const char *ca_file, uint16_t min_version, char *err,
                                size_t err_len);

/* Seconds until the first certificate of `ctx` expires (negative: expired). */
long stp_tls_ctx_cert_expiry(SSL_CTX *ctx);

#endif

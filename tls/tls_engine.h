/*
 * tls_engine: one TLS session (BoringSSL `SSL`) driven entirely through
 * memory: the caller feeds ciphertext that arrived from the network, takes
 * ciphertext to send, reads and writes plaintext. No sockets, no libuv, no
 * SMTP here; proxy/conn.c binds an engine to a libuv stream (h2o's split
 * between socket.c and uv-binding.c.h). This makes the engine testable over a
 * pair of engines in one process.
 *
 * Return codes of the stepping functions:
 *   STP_TLS_OK      the step completed
 *   STP_TLS_AGAIN   more ciphertext input is needed (after sending what is pending)
 *   STP_TLS_CLOSED  the peer sent close_notify (clean end of the TLS stream)
 *   STP_TLS_ERROR   fatal; stp_tls_engine_error() says why
 *
 * After every call the caller must send stp_tls_engine_pending() bytes.
 * Renegotiation is always refused.
 */
#ifndef STP_TLS_ENGINE_H
#define STP_TLS_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

enum {
    STP_TLS_OK = 0,
    STP_TLS_AGAIN = -2,
    STP_TLS_CLOSED = -3,
    STP_TLS_ERROR = -1,
};

typedef struct stp_tls_engine_s stp_tls_engine_t;

/*
 * Creates an engine on `ctx` (the engine takes its own reference).
 * Server: `sni` is NULL. Client: `sni` (may be NULL) is sent as SNI.
 * Returns NULL on allocation failure.
 */
stp_tls_engine_t *stp_tls_engine_new_server(SSL_CTX *ctx);
stp_tls_engine_t *stp_tls_engine_new_client(SSL_CTX *ctx, const char *sni);

/* Frees the engine; accepts NULL. */
void stp_tls_engine_free(stp_tls_engine_t *e);

/* Appends ciphertext received from the peer. Returns STP_TLS_OK or STP_TLS_ERROR (ENOMEM). */
int stp_tls_engine_feed(stp_tls_engine_t *e, const uint8_t *in, size_t len);

/*
 * The same without a copy, for bytes the caller reads into a buffer of its
 * own: the engine decrypts in[0..len) where it lies. stp_tls_engine_keep()
 * must follow before in[] is reused; it copies what was not consumed (at
 * most part of a record) and returns STP_TLS_OK, or STP_TLS_ERROR when out
 * of memory.
 */
void stp_tls_engine_lend(stp_tls_engine_t *e, const uint8_t *in, size_t len);
int stp_tls_engine_keep(stp_tls_engine_t *e);

/* Advances the handshake: STP_TLS_OK when complete, STP_TLS_AGAIN or STP_TLS_ERROR. */
int stp_tls_engine_handshake(stp_tls_engine_t *e);

/* 1 once the handshake completed. */
int stp_tls_engine_established(const stp_tls_engine_t *e);

/*
 * Decrypts into buf[0..cap). Returns the number of bytes (> 0), or
 * STP_TLS_AGAIN (no complete record buffered), STP_TLS_CLOSED or STP_TLS_ERROR.
 */
ssize_t stp_tls_engine_read(stp_tls_engine_t *e, uint8_t *buf, size_t cap);

/* Encrypts all of buf[0..len) into the pending output. STP_TLS_OK or STP_TLS_ERROR. */
int stp_tls_engine_write(stp_tls_engine_t *e, const uint8_t *buf, size_t len);

/* Queues a close_notify alert into the pending output (idempotent). */
void stp_tls_engine_shutdown(stp_tls_engine_t *e);

/*
 * Ciphertext waiting to be sent: stp_tls_engine_pending() tells how many
 * bytes; stp_tls_engine_take() moves up to `cap` of them into `out` and
 * returns the count. Everything pending must eventually be taken and sent.
 */
size_t stp_tls_engine_pending(const stp_tls_engine_t *e);
size_t stp_tls_engine_take(stp_tls_engine_t *e, uint8_t *out, size_t cap);

/*
 * The same without a copy: stp_tls_engine_peek() points *out at all the
 * pending ciphertext (borrowed: valid until the next call on the engine) and
 * returns its length; stp_tls_engine_drop() then discards all of it, once
 * the caller has sent or copied it.
 */
size_t stp_tls_engine_peek(const stp_tls_engine_t *e, const uint8_t **out);
void stp_tls_engine_drop(stp_tls_engine_t *e);

/* Bytes of buffer the engine's two queues hold (not BoringSSL's own):
 * at most a few hundred once both are drained. */
size_t stp_tls_engine_buffer_size(const stp_tls_engine_t *e);

/* Why the last call failed: a short static or engine-owned string ("" if none). */
const char *stp_tls_engine_error(const stp_tls_engine_t *e);

/* After the handshake: "TLSv1.3", "TLS_AES_128_GCM_SHA256", SNI or NULL, key bits. */
const char *stp_tls_engine_version(const stp_tls_engine_t *e);
const char *stp_tls_engine_cipher(const stp_tls_engine_t *e);
const char *stp_tls_engine_sni(const stp_tls_engine_t *e);
int stp_tls_engine_cipher_bits(const stp_tls_engine_t *e);
/* Key exchange group name ("X25519") or NULL. */
const char *stp_tls_engine_group(const stp_tls_engine_t *e);

/* The underlying SSL, borrowed, for verification helpers and tests. */
SSL *stp_tls_engine_ssl(stp_tls_engine_t *e);

#endif

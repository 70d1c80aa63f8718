/*
 * session_cache: client-side TLS session resumption for connections the
 * proxy originates. One ticket per next hop is kept, so connecting to the
 * same relay again costs an abbreviated handshake (no certificate, no
 * signature) instead of a full one.
 *
 * The key names the next hop and everything the session was judged under:
 * the caller builds it from the address, the server name it sends and its
 * TLS policy, so a session made under a weak policy is never offered under
 * a stronger one. A resumed session carries the original peer chain and
 * verification result (BoringSSL keeps both in the SSL_SESSION), and the
 * caller checks them after the handshake as it does after a full one.
 *
 * The cache belongs to the client SSL_CTX (ex_data, freed with it) and is
 * shared by every worker thread using that context: a mutex guards it,
 * taken once per handshake and once per ticket received.
 */
#ifndef STP_TLS_SESSION_CACHE_H
#define STP_TLS_SESSION_CACHE_H

#include <openssl/ssl.h>

/* Fixed number of slots (direct-mapped on the key's hash; a collision
 * replaces the older entry). */
#define STP_TLS_SESSION_CACHE_SLOTS 256

/* Gives a client context a session cache. 0, or -1 when out of memory (the
 * context then works as before, without resumption). */
int stp_tls_session_cache_attach(SSL_CTX *ctx);

/* Before the handshake of a client `ssl` made from such a context: tags it
 * with `key` (copied) so the tickets it receives are stored under it, and
 * offers the session stored under `key`, if any. 0, or -1 when out of
 * memory (the handshake then simply is a full one). */
int stp_tls_session_cache_prepare(SSL *ssl, const char *key);

/* Sessions currently stored (for tests). */
size_t stp_tls_session_cache_count(SSL_CTX *ctx);

#endif

/*
 * mta_sts_fetch: one MTA-STS policy fetch (RFC 8461 section 3.3) on the
 * libuv loop: HTTPS to mta-sts.DOMAIN at a given address, with the chain
 * verified against the client context's trust store and the certificate
 * name checked against mta-sts.DOMAIN (RFC 6125 rules of tls/tls_verify),
 * "GET /.well-known/mta-sts.txt", and the answer accepted only as a 200
 * text/plain body of at most 64 KiB that parses as a policy
 * (policy/http_resp, policy/mta_sts). Redirects are never followed. One
 * timer bounds the whole exchange (connect, handshake, request and the last
 * byte of the body), so a slow server cannot hold the fetch open.
 *
 * The caller resolves mta-sts.DOMAIN itself and passes its addresses (with
 * the port, normally 443, `mta_sts_port` in tests), which are tried in
 * order while connecting fails (refused, unreachable, or no connection
 * within an address's share of the time left), all within the one time cap;
 * a TLS, certificate or HTTP failure ends the fetch. The name is used only
 * for SNI, the Host header and verification. Nothing is logged here: the
 * result carries a precise status and a one-line reason for the caller to
 * log and count.
 */
#ifndef STP_MTA_STS_FETCH_H
#define STP_MTA_STS_FETCH_H

#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "policy/mta_sts.h"

typedef enum {
    STP_MTA_STS_FETCH_OK = 0,   /* a valid policy is in result->policy */
    STP_MTA_STS_FETCH_CONNECT,  /* TCP connection refused or failed */
    STP_MTA_STS_FETCH_TLS,      /* TLS handshake failed, or the connection ended during it */
    STP_MTA_STS_FETCH_CERT,     /* certificate chain or name not verified */
    STP_MTA_STS_FETCH_HTTP,     /* not a 200 text/plain response (http_status says which) */
    STP_MTA_STS_FETCH_TOO_BIG,  /* body over 64 KiB */
    STP_MTA_STS_FETCH_POLICY,   /* the body is not a valid MTA-STS policy */
    STP_MTA_STS_FETCH_TIMEOUT,  /* the time cap expired */
    STP_MTA_STS_FETCH_IO,       /* connection lost, reset or closed before the response ended */
    STP_MTA_STS_FETCH_INTERNAL, /* bad arguments or out of memory */
} stp_mta_sts_fetch_status_t;

typedef struct {
    stp_mta_sts_fetch_status_t status;
    int http_status;                    /* from the status line; 0 if none was read */
    const char *error;                  /* one line, "" on success */
    const stp_mta_sts_policy_t *policy; /* on STP_MTA_STS_FETCH_OK, else NULL */
    uint64_t elapsed_ms;
} stp_mta_sts_fetch_result_t;

/*
 * Called exactly once per started fetch (never from inside
 * stp_mta_sts_fetch_start, never after stp_mta_sts_fetch_cancel). Everything
 * `r` points to is valid only during the call: copy the policy out. The
 * fetch frees itself afterwards; the callback may call
 * stp_mta_sts_fetch_cancel on it (a no-op) but nobody may touch it after the
 * callback returned.
 */
typedef void (*stp_mta_sts_fetch_cb)(const stp_mta_sts_fetch_result_t *r, void *arg);

typedef struct stp_mta_sts_fetch_s stp_mta_sts_fetch_t;

/* The addresses a fetch tries at most (more are ignored). */
#define STP_MTA_STS_FETCH_MAX_ADDR 16

typedef struct {
    SSL_CTX *ctx;       /* client context (stp_tls_ctx_client_new); borrowed, the fetch
                           takes its own reference */
    const char *domain; /* the policy domain, e.g. "example.com" (trailing dot allowed) */
    const struct sockaddr_storage *addrs; /* addresses of mta-sts.DOMAIN, all with the same port,
                                             tried in order; borrowed (copied at start) */
    size_t naddr;                         /* at least 1 */
    uint64_t timeout_ms; /* the whole fetch, every address included; 0 means 30 s */
} stp_mta_sts_fetch_opts_t;

/* "ok", "connect", "tls", "certificate", "http", "too-big", "policy", "timeout", "io", "internal"
 */
const char *stp_mta_sts_fetch_status_name(stp_mta_sts_fetch_status_t s);

/*
 * Starts a fetch. Returns the fetch (owned by itself until the callback ran)
 * or NULL if it could not even be started (invalid domain, no address,
 * addresses with different ports, out of memory);
 * NULL means the callback will not be called. Errors after that (including
 * an immediate connect failure) arrive through the callback, from the loop.
 */
stp_mta_sts_fetch_t *stp_mta_sts_fetch_start(uv_loop_t *loop, const stp_mta_sts_fetch_opts_t *o,
                                             stp_mta_sts_fetch_cb cb, void *arg);

/* Stops a running fetch without calling its callback; memory is released
 * once libuv has closed its handles. A no-op once the callback ran or runs. */
void stp_mta_sts_fetch_cancel(stp_mta_sts_fetch_t *f);

#endif

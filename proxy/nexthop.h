/*
 * nexthop: for route = mx, one secured SMTP connection to the mail servers
 * of one recipient domain, ready for MAIL FROM.
 *
 * Resolves the domain's MX (null MX: RFC 7505; no MX: the domain itself,
 * RFC 5321 5.1), tries the hosts in preference order and every address of
 * each, and secures the connection per the domain's policy: the
 * [policy:DOMAIN] level, DANE (RFC 7672) when the TLSA records of the MX
 * host validate, else MTA-STS (RFC 8461, the cached policy first, fetched
 * when the TXT id changed), and remembered TLS. DANE comes first and a DANE
 * failure never falls back to MTA-STS. The whole attempt is bounded in time.
 *
 * The result is either an open connection past its last EHLO (TLS verified
 * as the policy demands), or the precise SMTP reply to give the recipient
 * ("451 4.4.3 ..." for DNS, 4.4.1 connect, 4.7.4 TLS not offered, 4.7.5
 * certificate or DANE, 556 5.1.10 null MX). Every decision is logged and
 * counted with its source (config, mta-sts, dane, remembered).
 */
#ifndef STP_NEXTHOP_H
#define STP_NEXTHOP_H

#include <openssl/ssl.h>
#include <uv.h>

#include "proxy/config.h"
#include "proxy/conn.h"

typedef enum {
    STP_NEXTHOP_OK = 0,    /* conn is open and past EHLO; see caps */
    STP_NEXTHOP_FAILED,    /* conn is closed; reply is the answer to the RCPT */
    STP_NEXTHOP_CANCELLED, /* conn is closed */
} stp_nexthop_status_t;

typedef struct {
    stp_nexthop_status_t status;
    char reply[768];  /* FAILED: a complete reply line with CRLF */
    unsigned caps;    /* OK: the next hop's STP_EHLO_* keywords (after TLS) */
    int tls;          /* OK: the session is encrypted */
    int verified;     /* OK: PKIX or DANE authenticated the server */
    char mx[256];     /* the MX host used (or tried last) */
    char addr[64];    /* its address, "IP:PORT" */
    char version[16]; /* TLS version, "" in plaintext */
    char cipher[64];
    const char *source; /* "config", "mta-sts", "dane", "remembered" */
    const char *level;  /* the requirement applied ("may", "verify", "dane", ...) */
} stp_nexthop_result_t;

/* Runs once per started attempt, from the loop (never inside start or
 * cancel). On OK the conn's callbacks are still the attempt's own: the
 * callee installs its own (c->cb, c->owner) before returning. `r` is valid
 * only during the call. */
typedef void (*stp_nexthop_cb)(const stp_nexthop_result_t *r, void *arg);

typedef struct {
    uv_loop_t *loop;
    const stp_config_t *cf;        /* [proxy] resolver, policies, mta_sts_*, remember_tls */
    const stp_listener_conf_t *lc; /* timeouts, testing, on_failure, the metrics' label */
    SSL_CTX *ctx;                  /* client context: the trust store for PKIX */
    const char *domain;            /* the recipient domain */
    const char *id;                /* the session id, for the log */
} stp_nexthop_opts_t;

typedef struct stp_nexthop_s stp_nexthop_t;

/*
 * Starts an attempt using `conn` (memory owned by the caller, not
 * initialised; it must stay valid until the callback ran). Returns NULL
 * (no callback) only when out of memory or the resolver cannot start.
 */
stp_nexthop_t *stp_nexthop_start(const stp_nexthop_opts_t *o, stp_conn_t *conn, stp_nexthop_cb cb,
                                 void *arg);

/* Abandons the attempt: the callback still runs (CANCELLED) once the conn is closed. */
void stp_nexthop_cancel(stp_nexthop_t *nh);

/* After a message was accepted over a connection the result said was
 * verified: remember the domain's TLS for remember_tls. */
void stp_nexthop_delivered(uv_loop_t *loop, const stp_config_t *cf, const char *domain);

#endif

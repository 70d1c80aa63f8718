/*
 * resolver: asynchronous DNS on a libuv loop with c-ares, for MX routing,
 * DANE and MTA-STS. One resolver per loop (per worker). Queries are built by
 * policy/dns_msg (RD, AD and EDNS0 with the DO bit, so a validating
 * resolver reports its verdict in the AD bit of the answer) and sent raw
 * with ares_send; answers are parsed by the strict policy/dns_msg parser,
 * never by c-ares' own record parsers.
 *
 * DNSSEC is trusted the way Postfix trusts it: the resolver the proxy talks
 * to (normally a validating resolver on the same host) validates, and its
 * AD bit is the `secure` flag of every result. A validation failure
 * (bogus) reaches the proxy as SERVFAIL, which callers treat as "defer".
 *
 * Results are handed to the callback, which owns them and frees them with
 * stp_dns_result_free(). Every callback runs exactly once, from the loop
 * (never from inside the call that started the query); closing the resolver
 * runs the callbacks of pending queries with STP_DNS_CANCELLED.
 */
#ifndef STP_PROXY_RESOLVER_H
#define STP_PROXY_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "tls/dane.h"

typedef enum {
    STP_DNS_OK = 0,    /* records found (for MX: also the implicit MX and the null MX) */
    STP_DNS_NODATA,    /* the name exists, no record of the type */
    STP_DNS_NXDOMAIN,  /* the name does not exist */
    STP_DNS_SERVFAIL,  /* bogus signatures or a resolver failure: defer */
    STP_DNS_TIMEOUT,   /* no answer within the configured time */
    STP_DNS_ERROR,     /* REFUSED, FORMERR, a malformed answer, a network error */
    STP_DNS_CANCELLED, /* the resolver was closed first */
} stp_dns_status_t;

/* The lookup got a verdict from DNS: records, or that there are none
 * (NODATA, NXDOMAIN). Anything else failed and says nothing either way. */
static inline int stp_dns_answered(stp_dns_status_t s)
{
    return s == STP_DNS_OK || s == STP_DNS_NODATA || s == STP_DNS_NXDOMAIN;
}

enum {
    STP_RESOLVER_MAX_MX = 16,
    STP_RESOLVER_MAX_ADDR = 32,
    STP_RESOLVER_MAX_TLSA = 32,
    STP_RESOLVER_MAX_TXT = 16,
};

typedef struct {
    uint16_t preference;
    char host[256]; /* presentation form, no trailing dot */
} stp_mx_t;

typedef struct {
    const char *text; /* the record's strings concatenated; not NUL-terminated */
    size_t len;
} stp_txt_t;

typedef struct {
    stp_dns_status_t status;
    int secure;      /* every answer this result comes from had AD=1 (for addresses: a
                      * family whose lookup failed is left out; all failed: 0) */
    const char *why; /* static text for logs ("SERVFAIL (bogus or failed)", "timed out") */
    char name[1024]; /* the name asked; for addresses, TLSA and TXT the final name after
                      * CNAMEs (the answer carries the whole chain, so `secure` says the
                      * chain validated too: DANE's TLSA base domain, RFC 7672 2.2.2) */

    /* stp_resolver_mx: sorted by preference (ties keep the answer's order).
     * null_mx: the domain accepts no mail (RFC 7505: a single MX "." ).
     * implicit_mx: the domain has no MX, so per RFC 5321 §5.1 mx[0] is the
     * domain itself with preference 0; resolve its A/AAAA as for any MX. */
    int null_mx, implicit_mx;
    size_t nmx;
    stp_mx_t mx[STP_RESOLVER_MAX_MX];

    /* stp_resolver_addrs: IPv4 addresses first, then IPv6, port set. */
    size_t naddr;
    struct sockaddr_storage addr[STP_RESOLVER_MAX_ADDR];

    /* stp_resolver_tlsa: every TLSA record as published (usable or not:
     * stp_dane_verify sorts them out); data points into this result. */
    size_t ntlsa;
    stp_dane_tlsa_t tlsa[STP_RESOLVER_MAX_TLSA];

    /* stp_resolver_txt */
    size_t ntxt;
    stp_txt_t txt[STP_RESOLVER_MAX_TXT];

    /* stp_resolver_cname: the target of the name's own CNAME record (OK) */
    char target[1024];

    size_t pool_len;
    uint8_t pool[65536];
} stp_dns_result_t;

typedef void (*stp_dns_cb)(stp_dns_result_t *res, void *arg);

typedef struct stp_resolver_s stp_resolver_t;

/* Once per process, before any thread creates a resolver. 0 or -1. */
int stp_resolver_global_init(void);

/*
 * A resolver on `loop`. `server`: "IP:PORT" or "[IPv6]:PORT" (NULL or "":
 * the servers of /etc/resolv.conf). `timeout_ms`: the bound on one query,
 * retries included. NULL with `err` filled on failure.
 */
stp_resolver_t *stp_resolver_new(uv_loop_t *loop, const char *server, unsigned timeout_ms,
                                 char *err, size_t errlen);

/* Cancels what is pending (callbacks run with STP_DNS_CANCELLED), closes
 * the handles; the memory goes when the loop has run their close callbacks. */
void stp_resolver_close(stp_resolver_t *r);

/* Each returns 0 when the query started (cb will run), -1 for an invalid name. */
int stp_resolver_mx(stp_resolver_t *r, const char *domain, stp_dns_cb cb, void *arg);
int stp_resolver_addrs(stp_resolver_t *r, const char *host, uint16_t port, stp_dns_cb cb,
                       void *arg);
/* TLSA at _PORT._tcp.HOST */
int stp_resolver_tlsa(stp_resolver_t *r, const char *host, uint16_t port, stp_dns_cb cb, void *arg);
int stp_resolver_txt(stp_resolver_t *r, const char *name, stp_dns_cb cb, void *arg);

/*
 * The CNAME record of `name` itself, not followed: OK (target set) when the
 * name is an alias, NODATA when it is not; `secure` is that record's own
 * DNSSEC verdict. An address answer's AD bit covers the whole CNAME chain, so
 * this is how DANE learns that the name an MX record lists is secure while
 * its expansion is not (RFC 7672 2.2.2; Postfix asks the same question).
 */
int stp_resolver_cname(stp_resolver_t *r, const char *name, stp_dns_cb cb, void *arg);

/*
 * The DANE start-up check: asks for the DNSKEY of `probe` (NULL or "": the
 * root) and reports STP_DNS_OK with secure=1 when the resolver validates.
 * Anything else (secure=0, SERVFAIL, timeout) means DANE cannot work.
 */
int stp_resolver_check_dnssec(stp_resolver_t *r, const char *probe, stp_dns_cb cb, void *arg);

/*
 * What a result of stp_resolver_check_dnssec says: 1 when the resolver
 * validates; else 0. Either way `why` gets the reason for the log ("no AD
 * bit on the DNSKEY of example.test: the resolver does not validate
 * DNSSEC", "DNSKEY of .: timed out"...). `probe` as given to the check.
 */
int stp_resolver_dnssec_verdict(const stp_dns_result_t *res, const char *probe, char *why,
                                size_t whylen);

/*
 * The same, synchronously, on a private loop: for start-up, before the
 * workers run. Returns 1 when the resolver validates; else 0 with `why`
 * ready for the loud warning ("no AD bit on the DNSKEY of example.test: the
 * resolver does not validate DNSSEC", "timed out"...).
 */
int stp_resolver_validates(const char *server, unsigned timeout_ms, const char *probe, char *why,
                           size_t whylen);

void stp_dns_result_free(stp_dns_result_t *res); /* accepts NULL */

const char *stp_dns_status_name(stp_dns_status_t s); /* "ok", "nodata", "nxdomain", ... */

#endif

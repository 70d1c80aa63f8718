/*
 * ehlo: rewrites a server's EHLO reply as data (Postfix's ehlo_mask idea):
 * the reply is parsed into its greeting line and one keyword line each, a
 * discard mask is computed from the options, and a new reply is rebuilt.
 * Nothing is patched in place. Pure, no I/O.
 *
 * Keywords recognised (case-insensitive, first word of a line):
 *   STARTTLS, AUTH (also the obsolete "AUTH=..." form), CHUNKING, BINARYMIME,
 *   XCLIENT, XFORWARD, PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN,
 *   ENHANCEDSTATUSCODES, DELIVERBY, ETRN, ATRN, TURN, VRFY, REQUIRETLS, ...
 * Unknown keywords are kept unless `drop_unknown` is set.
 */
#ifndef STP_EHLO_H
#define STP_EHLO_H

#include <stddef.h>

#include "proxy/smtp_reply.h"

/* Capability bits, reported for what the server advertised. */
enum {
    STP_EHLO_STARTTLS = 1u << 0,
    STP_EHLO_AUTH = 1u << 1,
    STP_EHLO_CHUNKING = 1u << 2,
    STP_EHLO_BINARYMIME = 1u << 3,
    STP_EHLO_XCLIENT = 1u << 4,
    STP_EHLO_XFORWARD = 1u << 5,
    STP_EHLO_PIPELINING = 1u << 6,
    STP_EHLO_SIZE = 1u << 7,
    STP_EHLO_8BITMIME = 1u << 8,
    STP_EHLO_SMTPUTF8 = 1u << 9,
    STP_EHLO_DSN = 1u << 10,
    STP_EHLO_ENHANCEDSTATUSCODES = 1u << 11,
    STP_EHLO_ETRN = 1u << 12,
    STP_EHLO_ATRN = 1u << 13, /* ATRN and TURN */
    STP_EHLO_REQUIRETLS = 1u << 14,
    STP_EHLO_OTHER = 1u << 31, /* at least one keyword not listed above */
};

typedef struct {
    unsigned drop;        /* STP_EHLO_* bits whose lines are removed */
    int drop_unknown;     /* remove keywords not in the table */
    int add_starttls;     /* append a STARTTLS line (never duplicated) */
    const char *greeting; /* if non-NULL, replaces the first line's text */
    /* if non-zero, a kept SIZE line is rebuilt as "SIZE n", n the smaller of
     * this and the server's own limit (RFC 1870: what the proxy accepts) */
    unsigned long long size_limit;
    /* with size_limit: a server that offers no SIZE gets "SIZE size_limit"
     * added (before its other keywords), the limit the proxy itself
     * enforces; the caller then keeps SIZE= off the MAIL FROM it relays */
    int add_size;
} stp_ehlo_opts_t;

/*
 * Rebuilds reply `r` (a 250 EHLO reply) into out[0..cap) as CRLF-terminated
 * "250-"/"250 " lines. Sets *out_len and, if `seen` is non-NULL, *seen to the
 * STP_EHLO_* bits the server advertised (before dropping).
 * Returns 0, or -1 if `out` is too small or the reply is not a 2xx.
 */
int stp_ehlo_rewrite(const stp_reply_t *r, const stp_ehlo_opts_t *opts, char *out, size_t cap,
                     size_t *out_len, unsigned *seen);

/* Parses only: the STP_EHLO_* bits present in reply `r`. */
unsigned stp_ehlo_caps(const stp_reply_t *r);

/* For SIZE: the advertised limit in bytes, 0 if absent or unlimited. */
unsigned long long stp_ehlo_size(const stp_reply_t *r);

#endif

/*
 * xclient: builds the Postfix XCLIENT command that tells a backend who the
 * real client is (`xclient = yes`, once the backend advertises XCLIENT in
 * its EHLO reply). Attribute values are xtext-encoded (RFC 3461: bytes
 * outside '!'..'~', and '+' and '=', become "+XX"); an IPv6 address is
 * written "IPV6:addr". The server answers a successful XCLIENT with a new
 * 220 greeting, after which the client must send EHLO again.
 */
#ifndef STP_XCLIENT_H
#define STP_XCLIENT_H

#include <stddef.h>
#include <sys/socket.h>

#include "proxy/smtp_reply.h"

/*
 * Writes "XCLIENT ADDR=... PORT=... HELO=... PROTO=ESMTP|SMTP" (no CRLF)
 * into out. helo may be NULL or empty (then HELO=[UNAVAILABLE]). Returns the
 * length, or 0 if it does not fit in cap (out is then empty).
 */
size_t stp_xclient_format(char *out, size_t cap, const struct sockaddr *client, const char *helo,
                          int esmtp);

/*
 * 1 if EHLO reply `r` (a 2xx) has an XCLIENT line naming every attribute
 * the proxy sends (ADDR, PORT, HELO and PROTO, case-insensitive), else 0.
 */
int stp_xclient_offered(const stp_reply_t *r);

/* xtext-encodes in[0..len) into out (NUL-terminated); returns the length,
 * or (size_t)-1 if it does not fit. */
size_t stp_xtext_encode(char *out, size_t cap, const char *in, size_t len);

#endif

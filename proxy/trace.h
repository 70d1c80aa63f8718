/*
 * trace: the Received: header the proxy prepends to every message it relays
 * (RFC 5321 4.4), naming the client, the proxy, the protocol per RFC 3848
 * (SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA) and, under TLS, the version and
 * cipher, so the plaintext backend and the recipient can see how the
 * message travelled. Pure: facts in, header text out.
 */
#ifndef STP_TRACE_H
#define STP_TRACE_H

#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

typedef struct {
    const char *helo;        /* client's HELO/EHLO argument (sanitised here) or NULL */
    const struct sockaddr *client;
    const char *hostname;    /* the proxy's name */
    const char *id;          /* session/queue id */
    int esmtp;               /* client used EHLO */
    int authenticated;
    const char *tls_version; /* NULL: plaintext */
    const char *tls_cipher;
    int tls_bits;
    time_t now;
} stp_trace_t;

/* Writes the header (CRLF-terminated, folded lines) into out. Returns its
 * length, or 0 if cap is too small. */
size_t stp_trace_header(const stp_trace_t *t, char *out, size_t cap);

/* RFC 3848 protocol name for the facts. */
const char *stp_trace_protocol(int esmtp, int tls, int authenticated);

#endif

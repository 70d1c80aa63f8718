/*
 * trace: builds the Received: header. The client's HELO name is untrusted
 * text: only characters valid in a domain or address literal are kept, the
 * rest become '?', and it is cut at 64 characters, so a client can neither
 * break the header's structure nor inject further header lines.
 */
#include "proxy/trace.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

const char *stp_trace_protocol(int esmtp, int tls, int authenticated)
{
    if (!esmtp) {
        return tls ? "SMTPS" : "SMTP";
    }
    if (tls) {
        return authenticated ? "ESMTPSA" : "ESMTPS";
    }
    return authenticated ? "ESMTPA" : "ESMTP";
}

static void sanitize(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    if (in == NULL || *in == '\0') {
        snprintf(out, cap, "unknown");
        return;
    }
    for (; *in && o + 1 < cap && o < 64; in++) {
        unsigned char c = (unsigned char)*in;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
        out[o++] = ok ? (char)c : '?';
    }
    out[o] = '\0';
}

size_t stp_trace_header(const stp_trace_t *t, char *out, size_t cap)
{
    char helo[80], ip[INET6_ADDRSTRLEN + 8] = "unknown", date[64], tls[256] = "";
    struct tm tm;
    int n;

    sanitize(t->helo, helo, sizeof(helo));
    if (t->client && t->client->sa_family == AF_INET) {
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((const struct sockaddr_in *)t->client)->sin_addr, a, sizeof(a));
        snprintf(ip, sizeof(ip), "[%s]", a);
    } else if (t->client && t->client->sa_family == AF_INET6) {
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)t->client)->sin6_addr, a, sizeof(a));
        snprintf(ip, sizeof(ip), "[IPv6:%s]", a);
    }
    gmtime_r(&t->now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (t->tls_version) {
        snprintf(tls, sizeof(tls), "\r\n\t(using %s with cipher %s (%d/%d bits))", t->tls_version,
                 t->tls_cipher ? t->tls_cipher : "unknown", t->tls_bits, t->tls_bits);
    }
    n = snprintf(out, cap,
                 "Received: from %s (%s)\r\n"
                 "\tby %s (smtp-tls-proxy) with %s id %s%s;\r\n"
                 "\t%s\r\n",
                 helo, ip, t->hostname, stp_trace_protocol(t->esmtp, t->tls_version != NULL,
                                                           t->authenticated),
                 t->id, tls, date);
    if (n < 0 || (size_t)n >= cap) {
        return 0;
    }
    return (size_t)n;
}

/*
 * fuzz_tls_name: libFuzzer target for the certificate name rules of
 * tls/tls_verify.c: stp_tls_name_match (a SAN dNSName or CN pattern against
 * a host) and stp_tls_ip_literal (an address the relay was given by).
 *
 * Input: PATTERN '\n' HOST. Checked: a match never depends on case; a
 * partial-label wildcard, or a '*' anywhere but the first label, never
 * matches; a pattern without '*' matches exactly the hosts equal to it but
 * for case and a trailing dot; an IP literal's bytes, printed and parsed
 * again, are the same bytes (brackets or not), and a name that parses as
 * an address is never also an LDH host name.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tls_verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ip(const char *host)
{
    unsigned char b[16], again[16];
    size_t n = stp_tls_ip_literal(host, b);
    if (n == 0) {
        return;
    }
    if (n != 4 && n != 16) {
        abort();
    }
    char text[INET6_ADDRSTRLEN + 2];
    if (inet_ntop(n == 4 ? AF_INET : AF_INET6, b, text + 1, INET6_ADDRSTRLEN) == NULL) {
        abort();
    }
    if (stp_tls_ip_literal(text + 1, again) != n || memcmp(b, again, n) != 0) {
        abort();
    }
    size_t len = strlen(text + 1);
    text[0] = '[';
    text[len + 1] = ']';
    text[len + 2] = '\0';
    if (stp_tls_ip_literal(text, again) != n || memcmp(b, again, n) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL) {
        return 0;
    }
    size_t plen = (size_t)(nl - data), hlen = size - plen - 1;
    char pattern[300], host[300], upper[300];
    if (plen >= sizeof(pattern) || hlen >= sizeof(host) || memchr(nl + 1, '\0', hlen)) {
        return 0;
    }
    memcpy(pattern, data, plen);
    pattern[plen] = '\0';
    memcpy(host, nl + 1, hlen);
    host[hlen] = '\0';
    check_ip(host);

    int m = stp_tls_name_match(pattern, plen, host);
    for (size_t i = 0; i <= hlen; i++) {
        upper[i] = (char)toupper((unsigned char)host[i]);
    }
    if (stp_tls_name_match(pattern, plen, upper) != m) {
        abort();
    }
    const char *star = memchr(pattern, '*', plen);
    if (m && star != NULL && (star != pattern || plen < 2 || pattern[1] != '.' ||
                              memchr(pattern + 1, '*', plen - 1) != NULL)) {
        abort(); /* "f*.example", "*x.example", "a.*.example" never match */
    }
    if (star == NULL && memchr(pattern, '\0', plen) == NULL) {
        size_t p = plen, h = hlen;
        p -= p && pattern[p - 1] == '.';
        h -= h && host[h - 1] == '.';
        int same = p > 0 && p == h && strncasecmp(pattern, host, p) == 0;
        if (m != same) {
            abort();
        }
    }
    return 0;
}

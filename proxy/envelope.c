/*
 * envelope: MAIL FROM / RCPT TO arguments for route = mx (see envelope.h).
 * No I/O, no allocation; every function works on a bounded input.
 */
#include "proxy/envelope.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "policy/domain_name.h"
#include "proxy/ehlo.h"

int stp_env_path(const char *arg, size_t n, size_t *start, size_t *end)
{
    size_t i = 0;
    while (i < n && arg[i] == ' ') {
        i++;
    }
    if (i >= n || arg[i] != '<') {
        return -1;
    }
    int quoted = 0;
    for (size_t j = i + 1; j < n; j++) {
        if (quoted && arg[j] == '\\') {
            j++; /* the escaped character, whatever it is */
        } else if (arg[j] == '"') {
            quoted = !quoted;
        } else if (arg[j] == '>' && !quoted) {
            *start = i;
            *end = j + 1;
            return 0;
        }
    }
    return -1;
}

const char *stp_env_rcpt_domain(const char *arg, size_t n, size_t *params, char out[256])
{
    size_t start = 0, end = 0;
    if (stp_env_path(arg, n, &start, &end) < 0) {
        return "501 5.1.3 Error: bad recipient address syntax\r\n";
    }
    *params = end;
    size_t at = 0;
    int quoted = 0, found = 0;
    for (size_t i = start + 1; i + 1 < end; i++) {
        if (quoted && arg[i] == '\\') {
            i++;
        } else if (arg[i] == '"') {
            quoted = !quoted;
        } else if (arg[i] == '@' && !quoted) {
            at = i;
            found = 1;
        }
    }
    if (!found) {
        return "550 5.1.3 Error: a recipient without a domain cannot be routed\r\n";
    }
    const char *d = arg + at + 1;
    size_t dl = end - 1 - (at + 1);
    if (dl > 0 && d[0] == '[') {
        return "550 5.1.3 Error: address literals cannot be routed by MX\r\n";
    }
    if (dl > 1 && d[dl - 1] == '.') {
        dl--;
    }
    /* The check the policy lookup makes (stp_policy_lookup): a name the
     * envelope lets through always gets its [policy:...] section. As
     * Postfix's smtpd says for such a name: 501 5.1.3. A UTF-8 domain is
     * routed, and judged, by its A-labels. */
    if (stp_domain_name_ascii(d, dl, out) < 0) {
        return "501 5.1.3 Error: bad recipient domain syntax\r\n";
    }
    return NULL;
}

static int word_is(const char *p, size_t k, const char *w)
{
    return strlen(w) == k && strncasecmp(p, w, k) == 0;
}

/* The next space-separated parameter of p[*i..n): its start in *w and its
 * length (0 at the end); *i moves past it. */
static size_t next_param(const char *p, size_t n, size_t *i, const char **w)
{
    while (*i < n && p[*i] == ' ') {
        (*i)++;
    }
    size_t k = 0;
    while (*i + k < n && p[*i + k] != ' ') {
        k++;
    }
    *w = p + *i;
    *i += k;
    return k;
}

const char *stp_env_mail_params(const char *p, size_t n, uint64_t max_size)
{
    size_t i = 0, k;
    const char *w;
    while ((k = next_param(p, n, &i, &w)) != 0) {
        if (k > 5 && strncasecmp(w, "SIZE=", 5) == 0) {
            uint64_t v = 0;
            for (size_t j = 5; j < k; j++) {
                if (w[j] < '0' || w[j] > '9' || j > 5 + 18) {
                    return "501 5.5.4 Error: bad SIZE parameter\r\n";
                }
                v = v * 10 + (uint64_t)(w[j] - '0');
            }
            if (max_size && v > max_size) {
                return "552 5.3.4 Error: message size exceeds fixed limit\r\n";
            }
        } else if (!word_is(w, k, "BODY=7BIT") && !word_is(w, k, "BODY=8BITMIME") &&
                   !word_is(w, k, "SMTPUTF8")) {
            return "555 5.5.4 Error: unsupported MAIL parameter\r\n";
        }
    }
    return NULL;
}

int stp_env_mail_size(const char *arg, size_t n, uint64_t *size)
{
    size_t start, end;
    if (stp_env_path(arg, n, &start, &end) < 0) {
        return 0;
    }
    size_t i = end, k;
    const char *w;
    while ((k = next_param(arg, n, &i, &w)) != 0) {
        if (k > 5 && strncasecmp(w, "SIZE=", 5) == 0) {
            uint64_t v = 0;
            size_t j = 5;
            for (; j < k && w[j] >= '0' && w[j] <= '9'; j++) {
                unsigned d = (unsigned)(w[j] - '0');
                v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
            }
            if (j == k) {
                *size = v;
                return 1;
            }
        }
    }
    return 0;
}

int stp_env_mail_without_size(const char *arg, size_t n, char *out, size_t cap)
{
    size_t start, end;
    if (stp_env_path(arg, n, &start, &end) < 0 || cap <= end) {
        return -1;
    }
    memcpy(out, arg, end);
    size_t len = end, i = end, k;
    const char *w;
    while ((k = next_param(arg, n, &i, &w)) != 0) {
        if (k >= 5 && strncasecmp(w, "SIZE=", 5) == 0) {
            continue;
        }
        if (len + 1 + k >= cap) {
            return -1;
        }
        out[len++] = ' ';
        memcpy(out + len, w, k);
        len += k;
    }
    out[len] = '\0';
    return (int)len;
}

int stp_env_mail_line(const char *arg, size_t n, unsigned caps, char *out, size_t cap,
                      const char **refusal)
{
    size_t start = 0, end = 0;
    *refusal = NULL;
    /* The session never passes these (the command parser refuses them);
     * a line with them must not be built either. */
    if (cap == 0 || memchr(arg, '\0', n) || memchr(arg, '\r', n) || memchr(arg, '\n', n) ||
        stp_env_path(arg, n, &start, &end) < 0) {
        return -1;
    }
    int len = snprintf(out, cap, "MAIL FROM:%.*s", (int)(end - start), arg + start);
    if (len < 0 || (size_t)len >= cap) {
        return -1;
    }
    size_t i = end, k;
    const char *w;
    while ((k = next_param(arg, n, &i, &w)) != 0) {
        unsigned need;
        if (k >= 5 && strncasecmp(w, "SIZE=", 5) == 0) {
            need = STP_EHLO_SIZE;
        } else if (k >= 5 && strncasecmp(w, "BODY=", 5) == 0) {
            need = STP_EHLO_8BITMIME;
        } else if (word_is(w, k, "SMTPUTF8")) {
            need = STP_EHLO_SMTPUTF8;
        } else {
            return -1; /* not a parameter stp_env_mail_params accepts */
        }
        if (caps & need) {
            if ((size_t)len + 1 + k >= cap) {
                return -1;
            }
            out[len++] = ' ';
            memcpy(out + len, w, k);
            len += (int)k;
            out[len] = '\0';
        } else if (need == STP_EHLO_SMTPUTF8) {
            *refusal = "553 5.6.7 Error: the recipient's mail server does not support SMTPUTF8\r\n";
            return -1;
        }
        /* XXX: without 8BITMIME at the next hop the message goes as it is
         * (no conversion to 7 bit), as most MTAs do in practice; without
         * SIZE the next hop simply learns the size from the data. */
    }
    return len;
}

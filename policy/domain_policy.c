/*
 * domain_policy: levels by name, section names, and the longest-match lookup.
 */
#include "policy/domain_policy.h"

#include <string.h>

#include "policy/domain_name.h"

static const char *const names[] = {
    [STP_POLICY_TLS_NONE] = "none",           [STP_POLICY_TLS_MAY] = "may",
    [STP_POLICY_TLS_ENCRYPT] = "encrypt",     [STP_POLICY_TLS_VERIFY] = "verify",
    [STP_POLICY_TLS_SECURE] = "secure",       [STP_POLICY_TLS_DANE] = "dane",
    [STP_POLICY_TLS_DANE_ONLY] = "dane-only", [STP_POLICY_TLS_MTA_STS] = "mta-sts",
};

const char *stp_policy_tls_name(stp_policy_tls_t t)
{
    return (size_t)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

int stp_policy_tls_parse(const char *s, stp_policy_tls_t *out)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (stp_policy_tls_t)i;
            return 0;
        }
    }
    return -1;
}

static void lower_copy(char *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    out[n] = '\0';
}

int stp_policy_name_normalize(const char *in, char out[256])
{
    size_t n = strlen(in);
    if (strcmp(in, "default") == 0) {
        memcpy(out, "default", 8);
        return 0;
    }
    if (n > 1 && in[n - 1] == '.') {
        n--;
    }
    /* A UTF-8 name is the section of its A-labels, which is what the
     * routed recipient domain is looked up by. */
    size_t dot = in[0] == '.';
    char ascii[256];
    int len = stp_domain_name_ascii(in + dot, n - dot, ascii);
    if (len < 0) {
        return -1;
    }
    out[0] = '.';
    memcpy(out + dot, ascii, (size_t)len + 1); /* at most 253 and the NUL */
    return 0;
}

const stp_domain_policy_t *stp_policy_lookup(const stp_policy_table_t *t, const char *domain)
{
    char d[256];
    size_t n = domain ? strlen(domain) : 0;
    if (n > 1 && domain[n - 1] == '.') {
        n--;
    }
    if (!stp_domain_name_valid(domain, n)) {
        return NULL; /* never the default: a name no section can be judged for */
    }
    lower_copy(d, domain, n);

    const stp_domain_policy_t *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < t->n; i++) {
        const stp_domain_policy_t *e = &t->entries[i];
        size_t en = strlen(e->name);
        if (e->name[0] != '.') {
            if (en == n && memcmp(e->name, d, n) == 0) {
                return e; /* exact wins over any suffix */
            }
            continue;
        }
        /* ".example.com" matches "a.example.com", never "example.com" */
        if (en < n && memcmp(d + n - en, e->name, en) == 0 && en > best_len) {
            best = e;
            best_len = en;
        }
    }
    return best ? best : &t->deflt;
}

/*
 * domain_name: RFC 5321 domain syntax (see domain_name.h).
 */
#include "policy/domain_name.h"

#include <string.h>

#include <idn2.h>

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int stp_domain_name_valid(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > 253) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return 0;
            }
            label = 0;
            continue;
        }
        if (c == '-') {
            if (label == 0) {
                return 0;
            }
        } else if (!is_alnum(c)) {
            return 0;
        }
        if (++label > 63) {
            return 0;
        }
    }
    return label > 0 && s[n - 1] != '-';
}

/* s[0..n), a domain name, in lower case into out[256]: its length, or -1
 * if it is no domain name. */
static int lower_valid(const char *s, size_t n, char out[256])
{
    if (!stp_domain_name_valid(s, n)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[n] = '\0';
    return (int)n;
}

int stp_domain_name_ascii(const char *s, size_t n, char out[256])
{
    if (s == NULL || n == 0 || n > 1023) {
        return -1;
    }
    /* Even in a UTF-8 name the ASCII bytes are letters, digits, hyphens
     * and dots: UTS #46 would drop or map some others ("a_\xc3\xbc" came out
     * as "xn--a-eha", the A-label of "a\xc3\xbc"), routing to a name the
     * sender did not write. */
    int ascii = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !is_alnum(c) && c != '-' && c != '.') {
            return -1;
        }
        ascii &= c < 0x80;
    }
    if (ascii) {
        return lower_valid(s, n, out);
    }
    char in[1024];
    memcpy(in, s, n);
    in[n] = '\0';
    char *a = NULL;
    /* STD3 rules: letters, digits and hyphens only, as RFC 5321 wants */
    int rc = idn2_to_ascii_8z(in, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL |
                                          IDN2_USE_STD3_ASCII_RULES);
    int len = rc == IDN2_OK ? lower_valid(a, strlen(a), out) : -1;
    idn2_free(a);
    return len;
}

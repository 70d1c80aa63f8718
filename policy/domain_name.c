/*
 * domain_name: RFC 5321 domain syntax (see domain_name.h).
 */
#include "policy/domain_name.h"

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

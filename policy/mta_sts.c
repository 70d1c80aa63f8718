/*
 * mta_sts: the MTA-STS policy file and TXT record grammars of RFC 8461, and
 * matching MX host names against a policy's patterns.
 *
 * The policy parser collects one line at a time into a fixed buffer (a
 * policy line is short; a long one is an error, never a reason to grow) and
 * judges each line when its terminator arrives, so its state survives any
 * cut of the input. Every rule and its reason is listed in mta_sts.h.
 */
#include "policy/mta_sts.h"

#include <stdio.h>
#include <string.h>

#include "policy/domain_name.h"

enum {
    SEEN_VERSION = 1 << 0,
    SEEN_MODE = 1 << 1,
    SEEN_MAX_AGE = 1 << 2,
    SEEN_MX = 1 << 3,
};

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

static int is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

const char *stp_mta_sts_mode_name(stp_mta_sts_mode_t m)
{
    switch (m) {
    case STP_MTA_STS_MODE_ENFORCE:
        return "enforce";
    case STP_MTA_STS_MODE_TESTING:
        return "testing";
    case STP_MTA_STS_MODE_NONE:
        return "none";
    }
    return "?";
}

const char *stp_mta_sts_mx(const stp_mta_sts_policy_t *p, size_t i)
{
    const char *s = p->mx;
    for (size_t k = 0; k < i && k < p->nmx; k++) {
        s += strlen(s) + 1;
    }
    return s;
}

/* sts-policy-ext-name / sts-ext-name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."). */
static int valid_ext_name(const char *s, size_t n)
{
    if (n == 0 || n > 32 || !is_alnum((unsigned char)s[0])) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '_' && c != '-' && c != '.') {
            return 0;
        }
    }
    return 1;
}

int stp_mta_sts_domain_valid(const char *s)
{
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.') {
        n--;
    }
    return stp_domain_name_valid(s, n);
}

/*
 * sts-policy-ext-value = sts-policy-vchar *(*WSP sts-policy-vchar), vchar
 * being visible ASCII or a well-formed UTF-8 sequence. Leading and trailing
 * blanks were stripped already.
 */
static int valid_ext_value(const char *s, size_t n)
{
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 0x21 && c <= 0x7e) || is_wsp(c)) {
            continue;
        }
        size_t more;
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
        } else {
            return 0;
        }
        if (n - i - 1 < more) {
            return 0;
        }
        for (size_t k = 1; k <= more; k++) {
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
        }
        i += more;
    }
    return 1;
}

static int fail(stp_mta_sts_parser_t *p, unsigned line, const char *why)
{
    if (!p->failed) {
        p->failed = 1;
        p->err = why;
        p->err_line = line;
    }
    return STP_MTA_STS_ERROR;
}

void stp_mta_sts_parser_init(stp_mta_sts_parser_t *p, stp_mta_sts_policy_t *out)
{
    memset(p, 0, sizeof(*p));
    memset(out, 0, sizeof(*out));
    p->out = out;
    p->lineno = 1;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(name, want, n) == 0;
}

static int take_once(stp_mta_sts_parser_t *p, unsigned bit, const char *dup)
{
    if (p->seen & bit) {
        return fail(p, p->lineno, dup);
    }
    p->seen |= bit;
    return 0;
}

static int add_mx(stp_mta_sts_parser_t *p, const char *v, size_t n)
{
    stp_mta_sts_policy_t *out = p->out;
    const char *dom = v;
    size_t dn = n;
    if (n >= 2 && v[0] == '*' && v[1] == '.') {
        dom += 2;
        dn -= 2;
    }
    if (!stp_domain_name_valid(dom, dn)) {
        return fail(p, p->lineno, "bad 'mx' pattern (expected a domain name or *.domain)");
    }
    p->seen |= SEEN_MX;
    char low[256];
    for (size_t i = 0; i < n; i++) {
        low[i] = (char)lower((unsigned char)v[i]);
    }
    low[n] = '\0';
    for (size_t i = 0; i < out->nmx; i++) {
        if (strcmp(stp_mta_sts_mx(out, i), low) == 0) {
            return 0; /* the same pattern twice changes nothing */
        }
    }
    if (out->nmx >= STP_MTA_STS_MAX_MX || out->mx_used + n + 1 > sizeof(out->mx)) {
        return fail(p, p->lineno, "too many 'mx' patterns");
    }
    memcpy(out->mx + out->mx_used, low, n + 1);
    out->mx_used += n + 1;
    out->nmx++;
    return 0;
}

static int field(stp_mta_sts_parser_t *p, const char *name, size_t nlen, const char *v, size_t vlen)
{
    stp_mta_sts_policy_t *out = p->out;

    if (!(p->seen & SEEN_VERSION) && !name_is(name, nlen, "version")) {
        return fail(p, p->lineno, "the first line must be 'version: STSv1'");
    }
    if (name_is(name, nlen, "version")) {
        if (take_once(p, SEEN_VERSION, "duplicate 'version' field") < 0) {
            return -1;
        }
        if (!(vlen == 5 && memcmp(v, "STSv1", 5) == 0)) {
            return fail(p, p->lineno, "unsupported version (only STSv1)");
        }
        return 0;
    }
    if (name_is(name, nlen, "mode")) {
        if (take_once(p, SEEN_MODE, "duplicate 'mode' field") < 0) {
            return -1;
        }
        if (name_is(v, vlen, "enforce")) {
            out->mode = STP_MTA_STS_MODE_ENFORCE;
        } else if (name_is(v, vlen, "testing")) {
            out->mode = STP_MTA_STS_MODE_TESTING;
        } else if (name_is(v, vlen, "none")) {
            out->mode = STP_MTA_STS_MODE_NONE;
        } else {
            return fail(p, p->lineno, "bad 'mode' (expected enforce, testing or none)");
        }
        return 0;
    }
    if (name_is(name, nlen, "max_age")) {
        if (take_once(p, SEEN_MAX_AGE, "duplicate 'max_age' field") < 0) {
            return -1;
        }
        if (vlen == 0 || vlen > 10) {
            return fail(p, p->lineno, "bad 'max_age' (expected 1 to 10 digits)");
        }
        uint64_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (!is_digit((unsigned char)v[i])) {
                return fail(p, p->lineno, "bad 'max_age' (expected 1 to 10 digits)");
            }
            n = n * 10 + (uint64_t)(v[i] - '0');
        }
        if (n > STP_MTA_STS_MAX_AGE_LIMIT) {
            return fail(p, p->lineno, "'max_age' over 31557600");
        }
        out->max_age = (uint32_t)n;
        return 0;
    }
    if (name_is(name, nlen, "mx")) {
        return add_mx(p, v, vlen);
    }
    /* An extension: ignored, but only if it is well-formed. */
    if (!valid_ext_value(v, vlen)) {
        return fail(p, p->lineno, "bad extension field value");
    }
    return 0;
}

/* One complete line (terminator removed). */
static int end_line(stp_mta_sts_parser_t *p)
{
    const char *s = p->line;
    size_t n = p->len;

    p->len = 0;
    if (n == 0) {
        if (p->seen == 0) {
            return fail(p, p->lineno, "the first line must be 'version: STSv1'");
        }
        p->blank_seen = 1;
        return 0;
    }
    if (p->blank_seen) {
        return fail(p, p->lineno - 1, "empty line between fields");
    }
    const char *colon = memchr(s, ':', n);
    if (colon == NULL) {
        return fail(p, p->lineno, "expected 'name: value'");
    }
    size_t nlen = (size_t)(colon - s);
    if (!valid_ext_name(s, nlen)) {
        return fail(p, p->lineno, "bad field name (a blank before ':' or at the line start?)");
    }
    const char *v = colon + 1, *e = s + n;
    while (v < e && is_wsp((unsigned char)*v)) {
        v++;
    }
    while (e > v && is_wsp((unsigned char)e[-1])) {
        e--;
    }
    /* Non-ASCII bytes fail every known field's own check; extensions allow UTF-8. */
    return field(p, s, nlen, v, (size_t)(e - v));
}

int stp_mta_sts_parser_feed(stp_mta_sts_parser_t *p, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p->failed) {
            return STP_MTA_STS_ERROR;
        }
        unsigned char c = (unsigned char)data[i];
        if (p->cr) {
            p->cr = 0;
            if (c != '\n') {
                return fail(p, p->lineno, "CR not followed by LF");
            }
            end_line(p);
            p->lineno++;
            continue;
        }
        if (c == '\r') {
            p->cr = 1;
            continue;
        }
        if (c == '\n') {
            end_line(p);
            p->lineno++;
            continue;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return fail(p, p->lineno, c == 0 ? "NUL byte" : "control character");
        }
        if (p->len >= sizeof(p->line)) {
            return fail(p, p->lineno, "line too long");
        }
        p->line[p->len++] = (char)c;
    }
    return p->failed ? STP_MTA_STS_ERROR : STP_MTA_STS_AGAIN;
}

int stp_mta_sts_parser_finish(stp_mta_sts_parser_t *p)
{
    if (p->failed) {
        return STP_MTA_STS_ERROR;
    }
    if (p->cr) {
        return fail(p, p->lineno, "CR not followed by LF");
    }
    if (p->len > 0) {
        end_line(p);
        if (p->failed) {
            return STP_MTA_STS_ERROR;
        }
    }
    if (p->seen == 0) {
        return fail(p, 0, "empty policy");
    }
    if (!(p->seen & SEEN_MODE)) {
        return fail(p, 0, "missing 'mode' field");
    }
    if (!(p->seen & SEEN_MAX_AGE)) {
        return fail(p, 0, "missing 'max_age' field");
    }
    if (!(p->seen & SEEN_MX) && p->out->mode != STP_MTA_STS_MODE_NONE) {
        return fail(p, 0, "missing 'mx' field");
    }
    return STP_MTA_STS_OK;
}

const char *stp_mta_sts_parser_error(const stp_mta_sts_parser_t *p, char *buf, size_t len)
{
    if (len == 0) {
        return buf;
    }
    if (!p->failed) {
        buf[0] = '\0';
    } else if (p->err_line) {
        snprintf(buf, len, "line %u: %s", p->err_line, p->err);
    } else {
        snprintf(buf, len, "%s", p->err);
    }
    return buf;
}

int stp_mta_sts_policy_parse(const char *text, size_t len, stp_mta_sts_policy_t *out, char *why,
                             size_t whylen)
{
    stp_mta_sts_parser_t p;
    stp_mta_sts_parser_init(&p, out);
    if (stp_mta_sts_parser_feed(&p, text, len) == STP_MTA_STS_ERROR ||
        stp_mta_sts_parser_finish(&p) != STP_MTA_STS_OK) {
        if (why) {
            stp_mta_sts_parser_error(&p, why, whylen);
        }
        return -1;
    }
    if (why && whylen) {
        why[0] = '\0';
    }
    return 0;
}

/* ---- MX matching ---- */

/* Case-insensitive equality of a[0..n) and b[0..n). */
static int same_name(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return 0;
        }
    }
    return 1;
}

int stp_mta_sts_mx_match(const char *pattern, const char *host)
{
    size_t hn = strlen(host);
    size_t pn = strlen(pattern);
    if (hn > 0 && host[hn - 1] == '.') {
        hn--;
    }
    if (hn == 0 || pn == 0 || memchr(host, '*', hn)) {
        return 0;
    }
    if (pn >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.suffix": host = one non-empty label, '.', suffix */
        const char *dot = memchr(host, '.', hn);
        if (dot == NULL || dot == host) {
            return 0;
        }
        size_t rest = hn - (size_t)(dot + 1 - host);
        return rest == pn - 2 && same_name(dot + 1, pattern + 2, rest);
    }
    return hn == pn && same_name(host, pattern, hn);
}

int stp_mta_sts_policy_match(const stp_mta_sts_policy_t *p, const char *host)
{
    const char *s = p->mx;
    for (size_t i = 0; i < p->nmx; i++) {
        if (stp_mta_sts_mx_match(s, host)) {
            return 1;
        }
        s += strlen(s) + 1;
    }
    return 0;
}

/* ---- the TXT record ---- */

static size_t skip_wsp(const char *s, size_t i, size_t n)
{
    while (i < n && is_wsp((unsigned char)s[i])) {
        i++;
    }
    return i;
}

/* "v=STSv1" *WSP ";": the records section 3.1 keeps when there are several. */
static int begins_sts(const char *rec, size_t len)
{
    if (len < 7 || memcmp(rec, "v=STSv1", 7) != 0) {
        return 0;
    }
    size_t i = skip_wsp(rec, 7, len);
    return i < len && rec[i] == ';';
}

/* sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E): visible ASCII but '=' and ';'. */
static int ext_value_char(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '=' && c != ';';
}

static int txt_parse(const char *rec, size_t len, char id[STP_MTA_STS_ID_MAX + 1], const char **why)
{
    if (len < 7 || memcmp(rec, "v=STSv1", 7) != 0) {
        *why = "does not begin with v=STSv1";
        return -1;
    }
    size_t i = 7, fields = 0;
    int have_id = 0;
    for (;;) {
        i = skip_wsp(rec, i, len);
        if (i == len) {
            break;
        }
        if (rec[i] != ';') {
            *why = "expected ';' between fields";
            return -1;
        }
        i = skip_wsp(rec, i + 1, len);
        if (i == len) {
            break; /* a trailing delimiter is allowed */
        }
        size_t name = i;
        while (i < len && rec[i] != '=' && rec[i] != ';' && !is_wsp((unsigned char)rec[i])) {
            i++;
        }
        if (i == len || rec[i] != '=' || !valid_ext_name(rec + name, i - name)) {
            *why = "malformed field (expected name=value)";
            return -1;
        }
        size_t nlen = i - name, val = ++i;
        while (i < len && ext_value_char((unsigned char)rec[i])) {
            i++;
        }
        size_t vlen = i - val;
        if (vlen == 0 || (i < len && !is_wsp((unsigned char)rec[i]) && rec[i] != ';')) {
            *why = "malformed field value";
            return -1;
        }
        fields++;
        if (nlen == 2 && memcmp(rec + name, "id", 2) == 0) {
            if (have_id) {
                *why = "more than one id";
                return -1;
            }
            if (vlen > STP_MTA_STS_ID_MAX) {
                *why = "id longer than 32 characters";
                return -1;
            }
            for (size_t k = 0; k < vlen; k++) {
                if (!is_alnum((unsigned char)rec[val + k])) {
                    *why = "id with characters other than letters and digits";
                    return -1;
                }
            }
            memcpy(id, rec + val, vlen);
            id[vlen] = '\0';
            have_id = 1;
        }
    }
    if (!have_id) {
        *why = fields ? "no id field" : "no fields after v=STSv1";
        return -1;
    }
    return 0;
}

int stp_mta_sts_txt_parse(const char *rec, size_t len, char id[STP_MTA_STS_ID_MAX + 1],
                          const char **why)
{
    const char *dummy;
    id[0] = '\0';
    if (txt_parse(rec, len, id, why ? why : &dummy) < 0) {
        id[0] = '\0'; /* an id seen before the error is not an answer */
        return -1;
    }
    return 0;
}

stp_mta_sts_txt_t stp_mta_sts_txt_select(const char *const *recs, const size_t *lens, size_t n,
                                         char id[STP_MTA_STS_ID_MAX + 1], const char **why)
{
    size_t found = 0, which = 0;
    id[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (begins_sts(recs[i], lens[i])) {
            found++;
            which = i;
        }
    }
    if (found == 0) {
        return STP_MTA_STS_TXT_NONE;
    }
    if (found > 1) {
        if (why) {
            *why = "more than one v=STSv1 record";
        }
        return STP_MTA_STS_TXT_MULTIPLE;
    }
    if (stp_mta_sts_txt_parse(recs[which], lens[which], id, why) < 0) {
        return STP_MTA_STS_TXT_INVALID;
    }
    return STP_MTA_STS_TXT_FOUND;
}

/*
 * config: INI file -> immutable stp_config_t. Each section has a table of
 * directives (name, parser, offset, default, which listener modes accept it).
 * inih does the tokenising; a custom reader counts lines so every message
 * can say FILE:LINE. All errors of a file are collected, not only the first.
 */
#include "proxy/config.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/ssl.h>

typedef int (*parse_fn)(const char *v, void *field, char *msg, size_t len);

enum { M_ANY = 0, M_IN = STP_MODE_INBOUND, M_OUT = STP_MODE_OUTBOUND };

typedef struct {
    const char *name;
    parse_fn parse;
    size_t off;
    const char *def; /* NULL: no default (required or optional) */
    int mode;        /* listener keys: which mode accepts it */
} directive_t;

typedef struct {
    stp_config_t *cf;
    const char *name; /* file name for messages */
    char *err;
    size_t errlen, errused;
    int nerrors;
    /* reader */
    const char *text; /* string input */
    size_t pos;
    FILE *fp;
    int line;
    int section_line;
    /* current section */
    char section[128];
    int kind; /* 0 none, 1 proxy, 2 tls, 3 listener, -1 unknown */
    stp_listener_conf_t *lst;
    /* per listener: line of each key seen, for mode checks */
    int key_line[STP_CONF_MAX_LISTENERS][32];
    int cert_open; /* a cert without key yet */
    int entered_line; /* section_line of the section last entered */
} loader_t;

static void error_at(loader_t *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(loader_t *ld, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ld->nerrors++;
    if (ld->err == NULL || ld->errused + 1 >= ld->errlen) {
        return;
    }
    int n = snprintf(ld->err + ld->errused, ld->errlen - ld->errused, "%s:%d: %s\n", ld->name,
                     line, msg);
    if (n > 0) {
        ld->errused += (size_t)n;
        if (ld->errused >= ld->errlen) {
            ld->errused = ld->errlen - 1;
        }
    }
}

/* ---- value parsers ---- */

static int p_string(const char *v, void *f, char *msg, size_t len, size_t cap)
{
    if (strlen(v) >= cap) {
        snprintf(msg, len, "value too long");
        return -1;
    }
    memcpy(f, v, strlen(v) + 1);
    return 0;
}

static int p_str256(const char *v, void *f, char *msg, size_t len)
{
    return p_string(v, f, msg, len, 256);
}

static int p_path(const char *v, void *f, char *msg, size_t len)
{
    if (*v == '\0') {
        ((char *)f)[0] = '\0';
        return 0;
    }
    if (p_string(v, f, msg, len, 1024) < 0) {
        return -1;
    }
    if (access(v, R_OK) != 0) {
        snprintf(msg, len, "cannot read '%s': %s", v, strerror(errno));
        return -1;
    }
    return 0;
}

static int p_bool(const char *v, void *f, char *msg, size_t len)
{
    static const char *yes[] = {"yes", "true", "on", "1"}, *no[] = {"no", "false", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *(int *)f = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *(int *)f = 0;
            return 0;
        }
    }
    snprintf(msg, len, "invalid value '%s' (expected yes or no)", v);
    return -1;
}

static int p_enum(const char *v, void *f, char *msg, size_t len, const char *const *names,
                  const int *values, const char *allowed)
{
    for (int i = 0; names[i]; i++) {
        if (strcasecmp(v, names[i]) == 0) {
            *(int *)f = values[i];
            return 0;
        }
    }
    snprintf(msg, len, "invalid value '%s' (expected %s)", v, allowed);
    return -1;
}

#define ENUM_PARSER(fn, allowed, ...)                                              \
    static int fn(const char *v, void *f, char *msg, size_t len)                   \
    {                                                                              \
        static const struct {                                                      \
            const char *n;                                                         \
            int v;                                                                 \
        } t[] = {__VA_ARGS__, {NULL, 0}};                                          \
        const char *names[16];                                                     \
        int values[16];                                                            \
        size_t i;                                                                  \
        for (i = 0; t[i].n; i++) {                                                 \
            names[i] = t[i].n;                                                     \
            values[i] = t[i].v;                                                    \
        }                                                                          \
        names[i] = NULL;                                                           \
        return p_enum(v, f, msg, len, names, values, allowed);                     \
    }

ENUM_PARSER(p_mode, "inbound or outbound", {"inbound", STP_MODE_INBOUND},
            {"outbound", STP_MODE_OUTBOUND})
ENUM_PARSER(p_starttls, "offer, require or implicit", {"offer", STP_STARTTLS_OFFER},
            {"require", STP_STARTTLS_REQUIRE}, {"implicit", STP_STARTTLS_IMPLICIT})
ENUM_PARSER(p_level, "none, may, encrypt, verify or secure", {"none", STP_TLS_LEVEL_NONE},
            {"may", STP_TLS_LEVEL_MAY}, {"encrypt", STP_TLS_LEVEL_ENCRYPT},
            {"verify", STP_TLS_LEVEL_VERIFY}, {"secure", STP_TLS_LEVEL_SECURE})
ENUM_PARSER(p_on_failure, "defer or reject", {"defer", STP_ON_FAILURE_DEFER},
            {"reject", STP_ON_FAILURE_REJECT})
ENUM_PARSER(p_bare, "reject or normalize", {"reject", STP_BARE_REJECT},
            {"normalize", STP_BARE_NORMALIZE}, {"normalise", STP_BARE_NORMALIZE})
ENUM_PARSER(p_log_format, "text or json", {"text", STP_LOG_TEXT}, {"json", STP_LOG_JSON})
ENUM_PARSER(p_log_level, "error, warn, info or debug", {"error", STP_LOG_ERROR},
            {"warn", STP_LOG_WARN}, {"info", STP_LOG_INFO}, {"debug", STP_LOG_DEBUG})

static int p_min_version(const char *v, void *f, char *msg, size_t len)
{
    if (strcmp(v, "1.2") == 0) {
        *(uint16_t *)f = TLS1_2_VERSION;
    } else if (strcmp(v, "1.3") == 0) {
        *(uint16_t *)f = TLS1_3_VERSION;
    } else {
        snprintf(msg, len, "invalid value '%s' (expected 1.2 or 1.3)", v);
        return -1;
    }
    return 0;
}

static int p_workers(const char *v, void *f, char *msg, size_t len)
{
    if (strcasecmp(v, "auto") == 0) {
        *(unsigned *)f = 0;
        return 0;
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 1 || n > 256) {
        snprintf(msg, len, "invalid value '%s' (expected auto or 1..256)", v);
        return -1;
    }
    *(unsigned *)f = (unsigned)n;
    return 0;
}

int64_t stp_duration_parse(const char *s)
{
    char *end;
    if (*s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno || n > 100000000ull) {
        return -1;
    }
    if (strcmp(end, "ms") == 0) {
        return (int64_t)n;
    }
    if (*end == '\0' || strcmp(end, "s") == 0) {
        return (int64_t)n * 1000;
    }
    if (strcmp(end, "m") == 0) {
        return (int64_t)n * 60000;
    }
    if (strcmp(end, "h") == 0) {
        return (int64_t)n * 3600000;
    }
    return -1;
}

int64_t stp_size_parse(const char *s)
{
    char *end;
    if (*s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno || n > (1ull << 40)) {
        return -1;
    }
    unsigned long long mult = 1;
    if (*end == 'k' || *end == 'K') {
        mult = 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mult = 1024 * 1024;
        end++;
    } else if (*end == 'g' || *end == 'G') {
        mult = 1024ull * 1024 * 1024;
        end++;
    }
    if (*end != '\0') {
        return -1;
    }
    return (int64_t)(n * mult);
}

static int p_duration(const char *v, void *f, char *msg, size_t len)
{
    int64_t ms = stp_duration_parse(v);
    if (ms <= 0) {
        snprintf(msg, len, "invalid duration '%s' (e.g. 250ms, 30s, 5m, 1h)", v);
        return -1;
    }
    *(uint64_t *)f = (uint64_t)ms;
    return 0;
}

static int p_size64(const char *v, void *f, char *msg, size_t len)
{
    int64_t n = stp_size_parse(v);
    if (n < 0) {
        snprintf(msg, len, "invalid size '%s' (e.g. 2048, 10k, 50M)", v);
        return -1;
    }
    *(uint64_t *)f = (uint64_t)n;
    return 0;
}

static int p_line_length(const char *v, void *f, char *msg, size_t len)
{
    int64_t n = stp_size_parse(v);
    if (n < 512 || n > 65536) {
        snprintf(msg, len, "invalid value '%s' (expected 512..65536)", v);
        return -1;
    }
    *(size_t *)f = (size_t)n;
    return 0;
}

static int p_count(const char *v, void *f, char *msg, size_t len)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 1 || n > 10000000) {
        snprintf(msg, len, "invalid value '%s' (expected a number from 1)", v);
        return -1;
    }
    *(unsigned *)f = (unsigned)n;
    return 0;
}

/* "1.2.3.4:25", "[::1]:25", "name:25" -> resolved stp_hostport_t */
static int parse_hostport(const char *v, stp_hostport_t *hp, char *msg, size_t len)
{
    char host[256];
    const char *port;
    memset(hp, 0, sizeof(*hp));
    if (*v == '[') {
        const char *close = strchr(v, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - v - 1) >= sizeof(host)) {
            snprintf(msg, len, "invalid address '%s' (expected [IPv6]:PORT)", v);
            return -1;
        }
        memcpy(host, v + 1, (size_t)(close - v - 1));
        host[close - v - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof(host) ||
            memchr(v, ':', (size_t)(colon - v))) {
            snprintf(msg, len, "invalid address '%s' (expected HOST:PORT or [IPv6]:PORT)", v);
            return -1;
        }
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 1 || p > 65535) {
        snprintf(msg, len, "invalid port in '%s'", v);
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(msg, len, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(&hp->addr, res->ai_addr, res->ai_addrlen);
    hp->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    snprintf(hp->host, sizeof(hp->host), "%s", host);
    hp->port = (uint16_t)p;
    return 0;
}

static int p_hostport(const char *v, void *f, char *msg, size_t len)
{
    return parse_hostport(v, f, msg, len);
}

static int p_allow(const char *v, void *f, char *msg, size_t len)
{
    stp_listener_conf_t *l = (stp_listener_conf_t *)((char *)f - offsetof(stp_listener_conf_t, allow));
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s", v);
    l->nallow = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save)) {
        if (l->nallow >= STP_CONF_MAX_ALLOW) {
            snprintf(msg, len, "too many networks (at most %d)", STP_CONF_MAX_ALLOW);
            return -1;
        }
        if (stp_cidr_parse(tok, &l->allow[l->nallow]) < 0) {
            snprintf(msg, len, "invalid network '%s' (expected ADDRESS/PREFIX)", tok);
            return -1;
        }
        l->nallow++;
    }
    if (l->nallow == 0) {
        snprintf(msg, len, "empty list");
        return -1;
    }
    return 0;
}

static int p_route(const char *v, void *f, char *msg, size_t len)
{
    stp_listener_conf_t *l = (stp_listener_conf_t *)((char *)f - offsetof(stp_listener_conf_t, route));
    if (strcasecmp(v, "original-dst") == 0) {
        l->route = STP_ROUTE_ORIGINAL_DST;
        return 0;
    }
    if (strcasecmp(v, "mx") == 0) {
        l->route = STP_ROUTE_MX;
        return 0;
    }
    if (strncasecmp(v, "relay:", 6) == 0) {
        if (parse_hostport(v + 6, &l->relay, msg, len) < 0) {
            return -1;
        }
        l->route = STP_ROUTE_RELAY;
        return 0;
    }
    snprintf(msg, len, "invalid value '%s' (expected relay:HOST:PORT, original-dst or mx)", v);
    return -1;
}

#define PX(f) offsetof(stp_config_t, f)
#define LX(f) offsetof(stp_listener_conf_t, f)

static const directive_t proxy_dirs[] = {
    {"hostname", p_str256, PX(hostname), NULL, M_ANY},
    {"workers", p_workers, PX(workers), "auto", M_ANY},
    {"log_format", p_log_format, PX(log_format), "text", M_ANY},
    {"log_level", p_log_level, PX(log_level), "info", M_ANY},
    {NULL, NULL, 0, NULL, 0},
};

static const directive_t tls_dirs[] = {
    {"min_version", p_min_version, PX(min_version), "1.2", M_ANY},
    {"ca_file", p_path, PX(ca_file), NULL, M_ANY},
    {NULL, NULL, 0, NULL, 0},
};

/* Index in this table = index in key_line[]. Keep under 32 entries. */
static const directive_t listener_dirs[] = {
    {"mode", p_mode, LX(mode), NULL, M_ANY},
    {"listen", p_hostport, LX(listen), NULL, M_ANY},
    {"backend", p_hostport, LX(backend), NULL, M_IN},
    {"starttls", p_starttls, LX(starttls), "offer", M_IN},
    {"hide_auth_before_tls", p_bool, LX(hide_auth_before_tls), "yes", M_IN},
    {"bare_newlines", p_bare, LX(bare_newlines), "reject", M_ANY},
    {"trace_header", p_bool, LX(trace_header), "yes", M_ANY},
    {"allow", p_allow, LX(allow), "127.0.0.1/32, ::1/128", M_OUT},
    {"route", p_route, LX(route), NULL, M_OUT},
    {"tls", p_level, LX(tls), "verify", M_OUT},
    {"servername", p_str256, LX(servername), NULL, M_OUT},
    {"ca_file", p_path, LX(ca_file), NULL, M_OUT},
    {"testing", p_bool, LX(testing), "no", M_OUT},
    {"on_failure", p_on_failure, LX(on_failure), "defer", M_OUT},
    {"max_line_length", p_line_length, LX(max_line_length), "2048", M_ANY},
    {"max_connections", p_count, LX(max_connections), "1000", M_ANY},
    {"max_connections_per_ip", p_count, LX(max_connections_per_ip), "20", M_ANY},
    {"max_message_size", p_size64, LX(max_message_size), "0", M_ANY},
    {"connect_timeout", p_duration, LX(connect_timeout), "10s", M_ANY},
    {"greeting_timeout", p_duration, LX(greeting_timeout), "60s", M_ANY},
    {"command_timeout", p_duration, LX(command_timeout), "300s", M_ANY},
    {"idle_timeout", p_duration, LX(idle_timeout), "300s", M_ANY},
    {"handshake_timeout", p_duration, LX(handshake_timeout), "30s", M_ANY},
    {"data_timeout", p_duration, LX(data_timeout), "180s", M_ANY},
    {"session_timeout", p_duration, LX(session_timeout), "3600s", M_ANY},
    {NULL, NULL, 0, NULL, 0},
};

static void apply_defaults(const directive_t *dirs, void *base)
{
    char msg[256];
    for (const directive_t *d = dirs; d->name; d++) {
        if (d->def && d->parse(d->def, (char *)base + d->off, msg, sizeof(msg)) < 0) {
            abort(); /* a default that does not parse is a programming error */
        }
    }
}

static const directive_t *find(const directive_t *dirs, const char *name)
{
    for (const directive_t *d = dirs; d->name; d++) {
        if (strcmp(d->name, name) == 0) {
            return d;
        }
    }
    return NULL;
}

static void enter_section(loader_t *ld, const char *section)
{
    snprintf(ld->section, sizeof(ld->section), "%s", section);
    ld->lst = NULL;
    if (strcmp(section, "proxy") == 0) {
        ld->kind = 1;
    } else if (strcmp(section, "tls") == 0) {
        ld->kind = 2;
    } else if (strncmp(section, "listener:", 9) == 0) {
        const char *name = section + 9;
        size_t n = strlen(name);
        int ok = n > 0 && n < sizeof(ld->cf->listeners[0].name);
        for (size_t i = 0; ok && i < n; i++) {
            ok = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]);
        }
        ld->kind = -1;
        if (!ok) {
            error_at(ld, ld->section_line, "invalid listener name '%s' (letters, digits, _ . -)",
                     name);
            return;
        }
        for (size_t i = 0; i < ld->cf->nlisteners; i++) {
            if (strcmp(ld->cf->listeners[i].name, name) == 0) {
                error_at(ld, ld->section_line, "duplicate listener '%s' (first at line %d)", name,
                         ld->cf->listeners[i].line);
                return;
            }
        }
        if (ld->cf->nlisteners >= STP_CONF_MAX_LISTENERS) {
            error_at(ld, ld->section_line, "too many listeners (at most %d)",
                     STP_CONF_MAX_LISTENERS);
            return;
        }
        ld->kind = 3;
        ld->lst = &ld->cf->listeners[ld->cf->nlisteners++];
        memset(ld->lst, 0, sizeof(*ld->lst));
        snprintf(ld->lst->name, sizeof(ld->lst->name), "%s", name);
        ld->lst->line = ld->section_line;
        apply_defaults(listener_dirs, ld->lst);
    } else {
        ld->kind = -1;
        error_at(ld, ld->section_line,
                 "unknown section [%s] (expected [proxy], [tls] or [listener:NAME])", section);
    }
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    loader_t *ld = user;
    char msg[512];

    if (ld->kind == 0 || ld->section_line != ld->entered_line || strcmp(section, ld->section)) {
        ld->entered_line = ld->section_line;
        enter_section(ld, section);
    }
    if (*section == '\0') {
        error_at(ld, ld->line, "key '%s' outside of any section", name);
        return 1;
    }
    if (ld->kind < 0) {
        return 1; /* already reported */
    }
    if (ld->kind == 2 && (strcmp(name, "cert") == 0 || strcmp(name, "key") == 0)) {
        stp_config_t *cf = ld->cf;
        int is_cert = name[0] == 'c';
        if (is_cert) {
            if (cf->ncerts >= STP_CONF_MAX_CERTS) {
                error_at(ld, ld->line, "too many certificates (at most %d)", STP_CONF_MAX_CERTS);
                return 1;
            }
            if (p_path(value, cf->certs[cf->ncerts].cert, msg, sizeof(msg)) < 0) {
                error_at(ld, ld->line, "cert: %s", msg);
                return 1;
            }
            cf->ncerts++;
            ld->cert_open = 1;
        } else {
            if (!ld->cert_open) {
                error_at(ld, ld->line, "key without a preceding cert");
                return 1;
            }
            if (p_path(value, cf->certs[cf->ncerts - 1].key, msg, sizeof(msg)) < 0) {
                error_at(ld, ld->line, "key: %s", msg);
            }
            ld->cert_open = 0;
        }
        return 1;
    }
    const directive_t *dirs = ld->kind == 1 ? proxy_dirs : ld->kind == 2 ? tls_dirs : listener_dirs;
    const directive_t *d = find(dirs, name);
    if (d == NULL) {
        error_at(ld, ld->line, "unknown key '%s' in [%s]", name, section);
        return 1;
    }
    void *base = ld->kind == 3 ? (void *)ld->lst : (void *)ld->cf;
    if (d->parse(value, (char *)base + d->off, msg, sizeof(msg)) < 0) {
        error_at(ld, ld->line, "%s: %s", name, msg);
        return 1;
    }
    if (ld->kind == 3) {
        size_t idx = (size_t)(d - listener_dirs);
        ld->key_line[ld->lst - ld->cf->listeners][idx] = ld->line;
    }
    return 1;
}

static char *reader(char *str, int num, void *stream)
{
    loader_t *ld = stream;
    char *r;
    if (ld->fp) {
        r = fgets(str, num, ld->fp);
    } else {
        if (ld->text[ld->pos] == '\0') {
            return NULL;
        }
        int i = 0;
        while (i < num - 1 && ld->text[ld->pos]) {
            char c = ld->text[ld->pos++];
            str[i++] = c;
            if (c == '\n') {
                break;
            }
        }
        str[i] = '\0';
        r = str;
    }
    if (r) {
        ld->line++;
        const char *p = str;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '[') {
            ld->section_line = ld->line;
        }
    }
    return r;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
    }
    memmove(dst, src, n);
    dst[n] = '\0';
}

static void validate(loader_t *ld)
{
    stp_config_t *cf = ld->cf;
    if (cf->nlisteners == 0) {
        error_at(ld, ld->line > 0 ? ld->line : 1, "no [listener:NAME] section: nothing to do");
    }
    for (size_t i = 0; i < cf->nlisteners; i++) {
        stp_listener_conf_t *l = &cf->listeners[i];
        int *kl = ld->key_line[i];
        if (!kl[0]) {
            error_at(ld, l->line, "listener '%s': missing key 'mode' (inbound or outbound)",
                     l->name);
            continue;
        }
        if (!kl[1]) {
            error_at(ld, l->line, "listener '%s': missing key 'listen'", l->name);
        }
        for (size_t k = 0; listener_dirs[k].name; k++) {
            if (kl[k] && listener_dirs[k].mode != M_ANY && listener_dirs[k].mode != (int)l->mode) {
                error_at(ld, kl[k], "key '%s' is only valid for mode = %s", listener_dirs[k].name,
                         listener_dirs[k].mode == M_IN ? "inbound" : "outbound");
            }
        }
        if (l->mode == STP_MODE_INBOUND) {
            if (!kl[2]) {
                error_at(ld, l->line, "listener '%s': missing key 'backend'", l->name);
            }
            if (l->starttls != STP_STARTTLS_OFFER && cf->ncerts == 0) {
                error_at(ld, kl[3] ? kl[3] : l->line,
                         "starttls = %s needs a certificate ([tls] cert and key)",
                         l->starttls == STP_STARTTLS_REQUIRE ? "require" : "implicit");
            }
        } else {
            if (!kl[8]) {
                error_at(ld, l->line, "listener '%s': missing key 'route'", l->name);
            }
            if (!kl[10] && l->route == STP_ROUTE_RELAY) {
                copy_str(l->servername, sizeof(l->servername), l->relay.host);
            }
            if (!kl[11]) {
                copy_str(l->ca_file, sizeof(l->ca_file), cf->ca_file);
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (kl[1] && cf->listeners[j].listen.addr_len == l->listen.addr_len &&
                memcmp(&cf->listeners[j].listen.addr, &l->listen.addr, l->listen.addr_len) == 0) {
                error_at(ld, kl[1], "listener '%s': same listen address as listener '%s'",
                         l->name, cf->listeners[j].name);
            }
        }
    }
    for (size_t i = 0; i < cf->ncerts; i++) {
        if (cf->certs[i].key[0] == '\0') {
            /* key may live in the cert file; tls_ctx reports it if not */
        }
    }
}

static stp_config_t *load(loader_t *ld)
{
    stp_config_t *cf = calloc(1, sizeof(*cf));
    if (cf == NULL) {
        error_at(ld, 0, "out of memory");
        return NULL;
    }
    ld->cf = cf;
    apply_defaults(proxy_dirs, cf);
    apply_defaults(tls_dirs, cf);
    if (gethostname(cf->hostname, sizeof(cf->hostname) - 1) != 0 || cf->hostname[0] == '\0') {
        snprintf(cf->hostname, sizeof(cf->hostname), "localhost");
    }
    int rc = ini_parse_stream(reader, ld, handler, ld);
    if (rc > 0) {
        error_at(ld, rc, "syntax error (expected [section] or key = value)");
    }
    validate(ld);
    if (ld->nerrors) {
        stp_config_free(cf);
        return NULL;
    }
    cf->path = strdup(ld->name);
    return cf;
}

stp_config_t *stp_config_load(const char *path, char *errbuf, size_t errlen)
{
    loader_t ld = {.name = path, .err = errbuf, .errlen = errlen};
    if (errlen) {
        errbuf[0] = '\0';
    }
    ld.fp = fopen(path, "r");
    if (ld.fp == NULL) {
        error_at(&ld, 0, "cannot open configuration file: %s", strerror(errno));
        return NULL;
    }
    stp_config_t *cf = load(&ld);
    fclose(ld.fp);
    return cf;
}

stp_config_t *stp_config_load_string(const char *text, const char *name, char *errbuf,
                                     size_t errlen)
{
    loader_t ld = {.name = name, .err = errbuf, .errlen = errlen, .text = text};
    if (errlen) {
        errbuf[0] = '\0';
    }
    return load(&ld);
}

void stp_config_free(stp_config_t *cf)
{
    if (cf == NULL) {
        return;
    }
    free(cf->path);
    free(cf);
}

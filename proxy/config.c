/*
 * config: the INI file turned into one immutable stp_config_t.
 *
 * Every section has a table of directives (name, parser, offset into the
 * struct, default text, validator, flags). Defaults are parsed by the same
 * parsers as the file, so a default is always a value a user could write.
 *
 * inih splits "key = value" lines, strips comments and calls on_key(). It is
 * fed through read_line(), which hands it one physical line at a time and so
 * owns the line count (Debian's inih is built without INI_HANDLER_LINENO).
 * read_line() also recognises section headers itself: inih does not tell the
 * handler about a section that has no keys, nor about a section header that
 * repeats the previous one, and both matter here ([listener:a] with nothing
 * in it must say "missing required key 'mode'"). It strips leading blanks, so
 * inih never takes an indented line for a continuation of the previous
 * value, and it reports lines inih would reject or silently cut (too long,
 * NUL byte, no '=') itself, so that every bad line is reported, not only the
 * first one inih would return.
 *
 * Errors are collected, sorted by line and written as "FILE:LINE: message";
 * the file is checked to the end whatever happens. Listener keys that depend
 * on the mode are checked after the whole file is read, since `mode` may come
 * after them; each key remembers the line it was seen on for that purpose.
 */
#include "proxy/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/ssl.h>

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A configuration file is small; anything bigger is a mistake (wrong -c). */
#define MAX_FILE_SIZE (1024 * 1024)
/* Errors kept for the report; beyond this only a count is kept. */
#define MAX_MESSAGES 200
/* Value text quoted in a message is cut here. */
#define QUOTE_MAX 80

#define MS_PER_S 1000
#define MAX_TIMEOUT_MS (24 * 3600 * 1000LL)

typedef struct loader loader_t;
typedef struct directive directive_t;

/*
 * A parser turns `value` into the field at base + d->offset, or records a
 * message with bad_value()/error_at() and returns -1. It may keep the field
 * half-written on error: a snapshot with errors is never handed out.
 */
typedef int (*parse_fn)(loader_t *ld, const directive_t *d, void *base, const char *value);
/* A validator returns NULL if `v` is acceptable, else what is allowed. */
typedef const char *(*check_fn)(int64_t v);

enum {
    F_REQUIRED = 1 << 0, /* must appear (in the modes the key belongs to) */
    F_INBOUND = 1 << 1,  /* [listener:*] key valid for mode = inbound only */
    F_OUTBOUND = 1 << 2, /* ... for mode = outbound only */
    F_REPEAT = 1 << 3,   /* may appear more than once in a section */
};

struct directive {
    const char *name;
    parse_fn parse;
    size_t offset;
    const char *deflt; /* parsed when the section starts; NULL: none or computed */
    check_fn check;    /* numeric range, applied by the numeric parsers */
    const void *arg;   /* parse_enum: the enum_name_t table */
    unsigned flags;
};

typedef struct {
    const char *name;
    int value;
    int alias; /* accepted but not listed in messages */
} enum_name_t;

/* parse_enum stores an int; the enums of config.h must have that size. */
_Static_assert(sizeof(stp_mode_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_starttls_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_route_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_tls_level_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_on_failure_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_bare_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_log_format_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_log_level_t) == sizeof(int), "enum size");
_Static_assert(sizeof(stp_log_target_t) == sizeof(int), "enum size");

/* All path fields share one size, so parse_path needs no size argument. */
#define PATH_CAP sizeof(((stp_config_t *)0)->ca_file)
_Static_assert(sizeof(((stp_config_t *)0)->certs[0].cert) == PATH_CAP, "path size");
_Static_assert(sizeof(((stp_config_t *)0)->certs[0].key) == PATH_CAP, "path size");
_Static_assert(sizeof(((stp_listener_conf_t *)0)->ca_file) == PATH_CAP, "path size");
_Static_assert(sizeof(((stp_config_t *)0)->state_dir) == PATH_CAP, "path size");
_Static_assert(sizeof(((stp_config_t *)0)->mta_sts_ca_file) == PATH_CAP, "path size");
_Static_assert(sizeof(((stp_domain_policy_t *)0)->ca_file) == PATH_CAP, "path size");
_Static_assert(sizeof(stp_policy_tls_t) == sizeof(int), "enum size");
#define HOSTNAME_CAP sizeof(((stp_config_t *)0)->hostname)
_Static_assert(sizeof(((stp_listener_conf_t *)0)->servername) == HOSTNAME_CAP, "name size");
_Static_assert(sizeof(((stp_hostport_t *)0)->host) == HOSTNAME_CAP, "name size");
_Static_assert(sizeof(((stp_domain_policy_t *)0)->servername) == HOSTNAME_CAP, "name size");

static int parse_enum(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_workers(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_count(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_size(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_size64(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_duration(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_hostname(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_path(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_account(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_cert(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_key(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_min_version(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_listen(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_allow(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_route(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_state_dir(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_policy_tls(loader_t *ld, const directive_t *d, void *base, const char *value);
static int parse_resolver(loader_t *ld, const directive_t *d, void *base, const char *value);

static const char *check_workers(int64_t v);
static const char *check_line_length(int64_t v);
static const char *check_connections(int64_t v);
static const char *check_message_size(int64_t v);
static const char *check_backlog(int64_t v);
static const char *check_timeout(int64_t v);
static const char *check_remember(int64_t v);
static const char *check_cache_time(int64_t v);
static const char *check_reuse_time(int64_t v);
static const char *check_reuse_count(int64_t v);
static const char *check_port(int64_t v);

/* ---- value vocabularies ---- */

static const enum_name_t bool_names[] = {
    {"yes", 1, 0}, {"no", 0, 0}, {"true", 1, 1}, {"false", 0, 1}, {"on", 1, 1},
    {"off", 0, 1}, {"1", 1, 1},  {"0", 0, 1},    {NULL, 0, 0},
};
static const enum_name_t log_format_names[] = {
    {"text", STP_LOG_TEXT, 0},
    {"json", STP_LOG_JSON, 0},
    {NULL, 0, 0},
};
static const enum_name_t log_target_names[] = {
    {"stderr", STP_LOG_STDERR, 0},
    {"syslog", STP_LOG_SYSLOG, 0},
    {NULL, 0, 0},
};
static const enum_name_t log_level_names[] = {
    {"error", STP_LOG_ERROR, 0},
    {"warn", STP_LOG_WARN, 0},
    {"info", STP_LOG_INFO, 0},
    {"debug", STP_LOG_DEBUG, 0},
    {NULL, 0, 0},
};
static const enum_name_t tls_version_names[] = {
    {"1.2", TLS1_2_VERSION, 0},
    {"1.3", TLS1_3_VERSION, 0},
    {NULL, 0, 0},
};
static const enum_name_t mode_names[] = {
    {"inbound", STP_MODE_INBOUND, 0},
    {"outbound", STP_MODE_OUTBOUND, 0},
    {NULL, 0, 0},
};
static const enum_name_t starttls_names[] = {
    {"offer", STP_STARTTLS_OFFER, 0},
    {"require", STP_STARTTLS_REQUIRE, 0},
    {"implicit", STP_STARTTLS_IMPLICIT, 0},
    {NULL, 0, 0},
};
static const enum_name_t bare_names[] = {
    {"reject", STP_BARE_REJECT, 0},
    {"normalize", STP_BARE_NORMALIZE, 0},
    {"normalise", STP_BARE_NORMALIZE, 1},
    {NULL, 0, 0},
};
static const enum_name_t tls_level_names[] = {
    {"none", STP_TLS_LEVEL_NONE, 0},       {"may", STP_TLS_LEVEL_MAY, 0},
    {"encrypt", STP_TLS_LEVEL_ENCRYPT, 0}, {"verify", STP_TLS_LEVEL_VERIFY, 0},
    {"secure", STP_TLS_LEVEL_SECURE, 0},   {NULL, 0, 0},
};
static const enum_name_t on_failure_names[] = {
    {"defer", STP_ON_FAILURE_DEFER, 0},
    {"reject", STP_ON_FAILURE_REJECT, 0},
    {NULL, 0, 0},
};

/* ---- directive tables ---- */

#define CF(f) offsetof(stp_config_t, f)
#define LC(f) offsetof(stp_listener_conf_t, f)

static const directive_t proxy_directives[] = {
    /* default: gethostname(), filled in after the file is read */
    {"hostname", parse_hostname, CF(hostname), NULL, NULL, NULL, 0},
    {"workers", parse_workers, CF(workers), "auto", check_workers, NULL, 0},
    {"user", parse_account, CF(user), "", NULL, NULL, 0},
    {"group", parse_account, CF(group), "", NULL, NULL, 0},
    {"shutdown_grace", parse_duration, CF(shutdown_grace), "30s", check_timeout, NULL, 0},
    {"log_format", parse_enum, CF(log_format), "text", NULL, log_format_names, 0},
    {"log_level", parse_enum, CF(log_level), "info", NULL, log_level_names, 0},
    {"log_target", parse_enum, CF(log_target), "stderr", NULL, log_target_names, 0},
    /* default: none (no endpoint) */
    {"metrics", parse_listen, CF(metrics), NULL, NULL, NULL, 0},
    /* MTA-STS and remembered TLS for route = mx */
    {"state_dir", parse_state_dir, CF(state_dir), "", NULL, NULL, 0},
    {"remember_tls", parse_duration, CF(remember_tls), "0", check_remember, NULL, 0},
    {"mta_sts_port", parse_count, CF(mta_sts_port), "443", check_port, NULL, 0},
    {"mx_port", parse_count, CF(mx_port), "25", check_port, NULL, 0},
    {"mx_attempt_timeout", parse_duration, CF(mx_attempt_timeout), "240s", check_timeout, NULL, 0},
    {"mta_sts_timeout", parse_duration, CF(mta_sts_timeout), "30s", check_timeout, NULL, 0},
    /* default: [tls] ca_file, filled in after the file is read */
    {"mta_sts_ca_file", parse_path, CF(mta_sts_ca_file), NULL, NULL, NULL, 0},
    /* default: "" (the servers of /etc/resolv.conf) */
    {"resolver", parse_resolver, CF(resolver), NULL, NULL, NULL, 0},
    {"dns_timeout", parse_duration, CF(dns_timeout), "10s", check_timeout, NULL, 0},
    /* default: "" (the root zone) */
    {"dnssec_probe", parse_hostname, CF(dnssec_probe), NULL, NULL, NULL, 0},
};

static const directive_t tls_directives[] = {
    /* each cert starts a pair, the key that follows completes it */
    {"cert", parse_cert, 0, NULL, NULL, NULL, F_REPEAT},
    {"key", parse_key, 0, NULL, NULL, NULL, F_REPEAT},
    {"min_version", parse_min_version, CF(min_version), "1.2", NULL, tls_version_names, 0},
    {"ca_file", parse_path, CF(ca_file), "", NULL, NULL, 0},
};

static const directive_t listener_directives[] = {
    {"mode", parse_enum, LC(mode), NULL, NULL, mode_names, F_REQUIRED},
    {"listen", parse_listen, LC(listen), NULL, NULL, NULL, F_REQUIRED},

    {"backend", parse_listen, LC(backend), NULL, NULL, NULL, F_INBOUND | F_REQUIRED},
    {"starttls", parse_enum, LC(starttls), "offer", NULL, starttls_names, F_INBOUND},
    {"hide_auth_before_tls", parse_enum, LC(hide_auth_before_tls), "yes", NULL, bool_names,
     F_INBOUND},
    {"bare_newlines", parse_enum, LC(bare_newlines), "reject", NULL, bare_names, F_INBOUND},
    {"trace_header", parse_enum, LC(trace_header), "yes", NULL, bool_names, F_INBOUND},
    {"proxy_protocol", parse_enum, LC(proxy_protocol), "no", NULL, bool_names, F_INBOUND},
    {"xclient", parse_enum, LC(xclient), "no", NULL, bool_names, F_INBOUND},
    /* no default: required with proxy_protocol = yes */
    {"proxy_from", parse_allow, LC(proxy_from), NULL, NULL, NULL, F_INBOUND | F_REPEAT},

    {"allow", parse_allow, LC(allow), "127.0.0.1/32, ::1/128", NULL, NULL, F_OUTBOUND | F_REPEAT},
    {"route", parse_route, LC(route), NULL, NULL, NULL, F_OUTBOUND | F_REQUIRED},
    {"tls", parse_enum, LC(tls), "verify", NULL, tls_level_names, F_OUTBOUND},
    /* default: the relay host, filled in after the file is read */
    {"servername", parse_hostname, LC(servername), NULL, NULL, NULL, F_OUTBOUND},
    /* default: [tls] ca_file, filled in after the file is read */
    {"ca_file", parse_path, LC(ca_file), NULL, NULL, NULL, F_OUTBOUND},
    {"testing", parse_enum, LC(testing), "no", NULL, bool_names, F_OUTBOUND},
    {"on_failure", parse_enum, LC(on_failure), "defer", NULL, on_failure_names, F_OUTBOUND},
    {"connection_cache_time", parse_duration, LC(connection_cache_time), "0", check_cache_time,
     NULL, F_OUTBOUND},
    {"connection_reuse_time", parse_duration, LC(connection_reuse_time), "300s",
     check_reuse_time, NULL, F_OUTBOUND},
    {"connection_reuse_count", parse_count, LC(connection_reuse_count), "0", check_reuse_count,
     NULL, F_OUTBOUND},

    {"max_line_length", parse_size, LC(max_line_length), "2048", check_line_length, NULL, 0},
    {"max_connections", parse_count, LC(max_connections), "1000", check_connections, NULL, 0},
    {"max_connections_per_ip", parse_count, LC(max_connections_per_ip), "20", check_connections,
     NULL, 0},
    {"backlog", parse_count, LC(backlog), "0", check_backlog, NULL, 0},
    {"max_message_size", parse_size64, LC(max_message_size), "0", check_message_size, NULL, 0},
    {"connect_timeout", parse_duration, LC(connect_timeout), "10s", check_timeout, NULL, 0},
    {"greeting_timeout", parse_duration, LC(greeting_timeout), "60s", check_timeout, NULL, 0},
    {"command_timeout", parse_duration, LC(command_timeout), "300s", check_timeout, NULL, 0},
    {"idle_timeout", parse_duration, LC(idle_timeout), "300s", check_timeout, NULL, 0},
    {"handshake_timeout", parse_duration, LC(handshake_timeout), "30s", check_timeout, NULL, 0},
    {"data_timeout", parse_duration, LC(data_timeout), "180s", check_timeout, NULL, 0},
    {"session_timeout", parse_duration, LC(session_timeout), "3600s", check_timeout, NULL, 0},
};

#define PC(f) offsetof(stp_domain_policy_t, f)

/* [policy:DOMAIN]; which keys suit which level is checked after the file is read. */
static const directive_t policy_directives[] = {
    {"tls", parse_policy_tls, PC(tls), NULL, NULL, NULL, F_REQUIRED},
    {"servername", parse_hostname, PC(servername), NULL, NULL, NULL, 0},
    {"ca_file", parse_path, PC(ca_file), NULL, NULL, NULL, 0},
};

typedef int policy_seen_t[COUNT_OF(policy_directives)];

/* ---- the loader ---- */

typedef enum { SEC_NONE = 0, SEC_SKIP, SEC_PROXY, SEC_TLS, SEC_LISTENER, SEC_POLICY } section_t;

typedef struct {
    int line; /* 0: about the whole file */
    size_t seq;
    char *text;
} message_t;

struct loader {
    const char *file; /* FILE in messages */
    const char *src;  /* the whole text, not NUL-terminated for files */
    size_t len, pos;
    int lineno; /* of the line inih is working on */

    stp_config_t *cf;

    /* the current section */
    section_t section;
    char section_name[96]; /* for messages, escaped */
    const directive_t *table;
    size_t ntable;
    void *base;
    int *seen;  /* line each key of the section was first seen on, 0: not yet */
    int repeat; /* the key being parsed was seen before in this section */

    int proxy_line, tls_line; /* section header lines, 0: not yet */
    int proxy_seen[COUNT_OF(proxy_directives)];
    int tls_seen[COUNT_OF(tls_directives)];
    int listener_seen[STP_CONF_MAX_LISTENERS][COUNT_OF(listener_directives)];
    int key_pending; /* the last cert has no key yet */
    policy_seen_t *policy_seen; /* per entry of cf->policies.entries */
    size_t policy_cap;
    policy_seen_t default_seen;
    int default_line; /* [policy:default] header, 0: not seen */

    message_t *msgs;
    size_t nmsgs, capmsgs, dropped;
};

/* ---- messages ---- */

/*
 * Writes `s` (n bytes) into out as printable ASCII: other bytes become \xNN.
 * Cut with "..." at QUOTE_MAX characters, since values can be long.
 */
static const char *escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= cap || o >= QUOTE_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

#define ESCAPE_CAP (QUOTE_MAX + 16)
#define ESC(buf, s) escape((buf), sizeof(buf), (s), strlen(s))

static void error_at(loader_t *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(loader_t *ld, int line, const char *fmt, ...)
{
    char text[512];
    va_list ap;

    if (ld->nmsgs >= MAX_MESSAGES) {
        ld->dropped++;
        return;
    }
    if (ld->nmsgs == ld->capmsgs) {
        size_t cap = ld->capmsgs ? ld->capmsgs * 2 : 16;
        message_t *m = realloc(ld->msgs, cap * sizeof(*m));
        if (m == NULL) {
            ld->dropped++;
            return;
        }
        ld->msgs = m;
        ld->capmsgs = cap;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    char *copy = strdup(text);
    if (copy == NULL) {
        ld->dropped++;
        return;
    }
    ld->msgs[ld->nmsgs].line = line;
    ld->msgs[ld->nmsgs].seq = ld->nmsgs;
    ld->msgs[ld->nmsgs].text = copy;
    ld->nmsgs++;
}

static int has_errors(const loader_t *ld)
{
    return ld->nmsgs > 0 || ld->dropped > 0;
}

static int has_error_on_line(const loader_t *ld, int line)
{
    for (size_t i = 0; i < ld->nmsgs; i++) {
        if (ld->msgs[i].line == line) {
            return 1;
        }
    }
    return 0;
}

/* "bad value 'V' for 'KEY' in [SECTION]: expected ..." at the current line. */
static void bad_value(loader_t *ld, const directive_t *d, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void bad_value(loader_t *ld, const directive_t *d, const char *value, const char *fmt, ...)
{
    char expected[256], q[ESCAPE_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(expected, sizeof(expected), fmt, ap);
    va_end(ap);
    error_at(ld, ld->lineno, "bad value '%s' for '%s' in [%s]: expected %s", ESC(q, value), d->name,
             ld->section_name, expected);
}

/* File-level messages (line 0) go last; otherwise by line, then as found. */
static int message_order(const void *a, const void *b)
{
    const message_t *x = a, *y = b;
    long lx = x->line > 0 ? x->line : (long)INT_MAX + 1;
    long ly = y->line > 0 ? y->line : (long)INT_MAX + 1;
    if (lx != ly) {
        return lx < ly ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Whole lines only; a last line says how many did not fit. */
static void write_messages(loader_t *ld, char *errbuf, size_t errlen)
{
    char line[768];
    size_t used = 0, written = 0;

    if (errbuf == NULL || errlen == 0) {
        return;
    }
    errbuf[0] = '\0';
    if (ld->nmsgs > 1) {
        qsort(ld->msgs, ld->nmsgs, sizeof(*ld->msgs), message_order);
    }
    for (size_t i = 0; i < ld->nmsgs; i++) {
        int n = ld->msgs[i].line > 0
                    ? snprintf(line, sizeof(line), "%s:%d: %s\n", ld->file, ld->msgs[i].line,
                               ld->msgs[i].text)
                    : snprintf(line, sizeof(line), "%s: %s\n", ld->file, ld->msgs[i].text);
        if (n < 0 || (size_t)n >= errlen - used) {
            break;
        }
        memcpy(errbuf + used, line, (size_t)n + 1);
        used += (size_t)n;
        written++;
    }
    size_t missing = ld->nmsgs - written + ld->dropped;
    if (missing > 0) {
        int n = snprintf(line, sizeof(line), "%s: %zu more error%s not shown\n", ld->file, missing,
                         missing == 1 ? "" : "s");
        if (n > 0 && (size_t)n < errlen - used) {
            memcpy(errbuf + used, line, (size_t)n + 1);
        }
    }
}

/* ---- small text helpers ---- */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/*
 * Letters, digits, '-', '_' and '.', no empty label, no label beginning or
 * ending with '-', no trailing dot (RFC 5321 4.1.2 Domain; "mx.example."
 * in a greeting, an EHLO or SNI is not a domain there): what goes after 220.
 */
static int valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.' ||
        s[n - 1] == '-' || strstr(s, "..") || strstr(s, ".-") || strstr(s, "-.")) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') {
            return 0;
        }
        label = s[i] == '.' ? 0 : label + 1;
        if (label > 63) {
            return 0; /* a DNS label has at most 63 octets (RFC 1035 2.3.4) */
        }
    }
    return 1;
}

static int valid_listener_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(((stp_listener_conf_t *)0)->name)) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') {
            return 0;
        }
    }
    return 1;
}

/* "a, b or c" from the names that are not aliases. */
static const char *enum_expected(char *out, size_t cap, const enum_name_t *names)
{
    size_t visible = 0, k = 0, used = 0;
    for (const enum_name_t *e = names; e->name; e++) {
        visible += !e->alias;
    }
    out[0] = '\0';
    for (const enum_name_t *e = names; e->name; e++) {
        if (e->alias) {
            continue;
        }
        const char *sep = k == 0 ? "" : k + 1 == visible ? " or " : ", ";
        int n = snprintf(out + used, cap - used, "%s%s", sep, e->name);
        if (n < 0 || (size_t)n >= cap - used) {
            break;
        }
        used += (size_t)n;
        k++;
    }
    return out;
}

static int lookup_enum(const enum_name_t *names, const char *value, int *out)
{
    for (const enum_name_t *e = names; e->name; e++) {
        if (strcmp(e->name, value) == 0) {
            *out = e->value;
            return 0;
        }
    }
    return -1;
}

/* ---- numbers, sizes, durations ---- */

/* Leading decimal digits of s into *out; returns the rest or NULL. */
static const char *parse_digits(const char *s, int64_t *out)
{
    int64_t n = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (INT64_MAX - (*p - '0')) / 10) {
            return NULL;
        }
        n = n * 10 + (*p - '0');
    }
    if (p == s) {
        return NULL;
    }
    *out = n;
    return p;
}

static int64_t scale(int64_t n, int64_t unit)
{
    return n > INT64_MAX / unit ? -1 : n * unit;
}

int64_t stp_duration_parse(const char *s)
{
    int64_t n;
    const char *unit = parse_digits(s, &n);
    if (unit == NULL) {
        return -1;
    }
    if (strcmp(unit, "ms") == 0) {
        return n;
    }
    if (*unit == '\0' || strcmp(unit, "s") == 0) {
        return scale(n, MS_PER_S);
    }
    if (strcmp(unit, "m") == 0) {
        return scale(n, 60 * MS_PER_S);
    }
    if (strcmp(unit, "h") == 0) {
        return scale(n, 3600 * MS_PER_S);
    }
    if (strcmp(unit, "d") == 0) {
        return scale(n, 86400LL * MS_PER_S);
    }
    return -1;
}

int64_t stp_size_parse(const char *s)
{
    int64_t n;
    const char *unit = parse_digits(s, &n);
    if (unit == NULL) {
        return -1;
    }
    if (*unit == '\0') {
        return n;
    }
    if (unit[1] != '\0') {
        return -1;
    }
    switch (*unit) {
    case 'k':
    case 'K':
        return scale(n, 1024);
    case 'm':
    case 'M':
        return scale(n, 1024 * 1024);
    case 'g':
    case 'G':
        return scale(n, 1024 * 1024 * 1024);
    default:
        return -1;
    }
}

static const char *check_workers(int64_t v)
{
    return v >= 1 && v <= 256 ? NULL : "auto or a number from 1 to 256"; /* main.c's MAX_WORKERS */
}

static const char *check_line_length(int64_t v)
{
    return v >= 512 && v <= 65536 ? NULL : "a size from 512 to 65536 bytes";
}

static const char *check_connections(int64_t v)
{
    return v >= 0 && v <= 1000000 ? NULL : "a number from 0 (no limit) to 1000000";
}

static const char *check_backlog(int64_t v)
{
    return v >= 0 && v <= 65535 ? NULL : "a number from 0 (the kernel's somaxconn) to 65535";
}

static const char *check_message_size(int64_t v)
{
    return v >= 0 && v <= 4 * 1024 * 1024 * 1024LL
               ? NULL
               : "a size up to 4G (0: the backend's SIZE decides)";
}

/* remember_tls: 0 switches it off; ten years is already forever. */
static const char *check_remember(int64_t v)
{
    return v >= 0 && v <= 3650LL * 86400 * MS_PER_S ? NULL : "a duration up to 3650d (0: off)";
}

static const char *check_port(int64_t v)
{
    return v >= 1 && v <= 65535 ? NULL : "a port from 1 to 65535";
}

/* Every wait has a timer, so 0 ("never") is not a timeout. */
static const char *check_timeout(int64_t v)
{
    return v >= 1 && v <= MAX_TIMEOUT_MS ? NULL : "a duration from 1ms to 24h";
}

/* connection_cache_time: 0 switches it off; a next hop's own idle timeout
 * (Postfix: 300 s, RFC 5321 asks for 5 minutes) closes a connection sooner
 * than anything longer would keep it. */
static const char *check_cache_time(int64_t v)
{
    return v >= 0 && v <= 300000 ? NULL : "a duration from 0 (off) to 300s";
}

/* connection_reuse_time: how old a cached connection may be and still be
 * parked (Postfix: smtp_connection_reuse_time_limit, 300 s). */
static const char *check_reuse_time(int64_t v)
{
    return v >= 1000 && v <= 3600000 ? NULL : "a duration from 1s to 1h";
}

/* connection_reuse_count: how many times a connection may be taken over;
 * 0 = no limit (Postfix: smtp_connection_reuse_count_limit). */
static const char *check_reuse_count(int64_t v)
{
    return v >= 0 && v <= 1000000 ? NULL : "a number from 0 (no limit) to 1000000";
}

typedef enum { NUM_COUNT, NUM_SIZE, NUM_DURATION } num_kind_t;

static int parse_number(loader_t *ld, const directive_t *d, const char *value, num_kind_t kind,
                        int64_t *out)
{
    static const char *const syntax[] = {
        [NUM_COUNT] = "a whole number",
        [NUM_SIZE] = "a size such as 2048, 10k or 50M",
        [NUM_DURATION] = "a duration such as 250ms, 30s, 5m, 1h or 7d (no unit: seconds)",
    };
    int64_t v = -1;
    if (kind == NUM_SIZE) {
        v = stp_size_parse(value);
    } else if (kind == NUM_DURATION) {
        v = stp_duration_parse(value);
    } else {
        const char *rest = parse_digits(value, &v);
        if (rest == NULL || *rest != '\0') {
            v = -1;
        }
    }
    if (v < 0) {
        bad_value(ld, d, value, "%s", syntax[kind]);
        return -1;
    }
    const char *why = d->check ? d->check(v) : NULL;
    if (why) {
        bad_value(ld, d, value, "%s", why);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- parsers ---- */

static void *field_of(const directive_t *d, void *base)
{
    return (char *)base + d->offset;
}

static int parse_enum(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    char expected[128];
    int v;
    if (lookup_enum(d->arg, value, &v) < 0) {
        bad_value(ld, d, value, "%s", enum_expected(expected, sizeof(expected), d->arg));
        return -1;
    }
    *(int *)field_of(d, base) = v;
    return 0;
}

static int parse_min_version(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    char expected[64];
    int v;
    if (lookup_enum(d->arg, value, &v) < 0) {
        bad_value(ld, d, value, "%s", enum_expected(expected, sizeof(expected), d->arg));
        return -1;
    }
    *(uint16_t *)field_of(d, base) = (uint16_t)v;
    return 0;
}

static int parse_workers(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    int64_t v;
    if (strcmp(value, "auto") == 0) {
        *(unsigned *)field_of(d, base) = 0;
        return 0;
    }
    const char *rest = parse_digits(value, &v);
    if (rest == NULL || *rest != '\0' || check_workers(v)) {
        bad_value(ld, d, value, "%s", check_workers(-1));
        return -1;
    }
    *(unsigned *)field_of(d, base) = (unsigned)v;
    return 0;
}

static int parse_count(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    int64_t v;
    if (parse_number(ld, d, value, NUM_COUNT, &v) < 0) {
        return -1;
    }
    *(unsigned *)field_of(d, base) = (unsigned)v;
    return 0;
}

static int parse_size(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    int64_t v;
    if (parse_number(ld, d, value, NUM_SIZE, &v) < 0) {
        return -1;
    }
    *(size_t *)field_of(d, base) = (size_t)v;
    return 0;
}

static int parse_size64(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    int64_t v;
    if (parse_number(ld, d, value, NUM_SIZE, &v) < 0) {
        return -1;
    }
    *(uint64_t *)field_of(d, base) = (uint64_t)v;
    return 0;
}

static int parse_duration(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    int64_t v;
    if (parse_number(ld, d, value, NUM_DURATION, &v) < 0) {
        return -1;
    }
    *(uint64_t *)field_of(d, base) = (uint64_t)v;
    return 0;
}

/*
 * A user or group name. It is looked up here as well as at start-up (where
 * privileges are dropped and the ids are taken), so that --check and a
 * reload report a name this machine does not know with its line, instead
 * of a start that fails after the listeners were bound.
 */
static int parse_account(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    char q[ESCAPE_CAP];
    size_t n = strlen(value);
    int ok = n < 64;
    for (size_t i = 0; i < n && ok; i++) {
        unsigned char c = (unsigned char)value[i];
        ok = isalnum(c) || c == '_' || c == '-' || c == '.' || (c == '$' && i == n - 1);
    }
    if (!ok || value[0] == '-') {
        bad_value(ld, d, value, "a user or group name (letters, digits, '_', '-', '.')");
        return -1;
    }
    if (n > 0) {
        int is_user = strcmp(d->name, "user") == 0;
        errno = 0;
        int found = is_user ? getpwnam(value) != NULL : getgrnam(value) != NULL;
        int e = errno;
        if (!found) {
            /* not found is 0 or one of these (getpwnam(3)); anything else is
             * a lookup that failed, which says nothing about the name */
            if (e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM) {
                error_at(ld, ld->lineno, "unknown %s '%s'", d->name, ESC(q, value));
            } else {
                error_at(ld, ld->lineno, "cannot look up %s '%s': %s", d->name, ESC(q, value),
                         strerror(e));
            }
            return -1;
        }
    }
    memcpy(field_of(d, base), value, n + 1);
    return 0;
}

static int parse_hostname(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    if (!valid_hostname(value)) {
        bad_value(ld, d, value, "a host name (letters, digits, '-', '_' and '.', no trailing dot)");
        return -1;
    }
    char *field = field_of(d, base);
    memcpy(field, value, strlen(value) + 1); /* valid_hostname: at most 253 */
    return 0;
}

/*
 * Opening the file now turns a typo in a path into a message with its line,
 * instead of a failed TLS context at start-up. Contents are tls_ctx's job.
 */
static int check_readable(loader_t *ld, const char *what, const char *path)
{
    char q[ESCAPE_CAP];
    struct stat st;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        error_at(ld, ld->lineno, "cannot read %s '%s': %s", what, ESC(q, path), strerror(e));
        return -1;
    }
    int dir = fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
    fclose(f);
    if (dir) {
        error_at(ld, ld->lineno, "cannot read %s '%s': %s", what, ESC(q, path), strerror(EISDIR));
        return -1;
    }
    return 0;
}

/* Into a PATH_CAP field; "" is allowed (the directive's default applies). */
static int copy_path(loader_t *ld, const directive_t *d, char *field, const char *value)
{
    size_t n = strlen(value);
    if (n >= PATH_CAP) {
        bad_value(ld, d, value, "a path shorter than %zu bytes", PATH_CAP);
        return -1;
    }
    memcpy(field, value, n + 1);
    return 0;
}

static int parse_path(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    if (copy_path(ld, d, field_of(d, base), value) < 0) {
        return -1;
    }
    return value[0] ? check_readable(ld, d->name, value) : 0;
}

static int parse_cert(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_config_t *cf = base;
    if (cf->ncerts >= STP_CONF_MAX_CERTS) {
        error_at(ld, ld->lineno, "too many 'cert' entries in [tls] (at most %d)",
                 STP_CONF_MAX_CERTS);
        ld->key_pending = 0;
        return -1;
    }
    /* Counted even when bad, so that the key that follows pairs with it. */
    cf->certs[cf->ncerts].cert_line = ld->lineno;
    char *field = cf->certs[cf->ncerts++].cert;
    ld->key_pending = 1;
    if (value[0] == '\0') {
        bad_value(ld, d, value, "the path of a PEM certificate chain");
        return -1;
    }
    if (copy_path(ld, d, field, value) < 0) {
        return -1;
    }
    return check_readable(ld, "cert", value);
}

static int parse_key(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_config_t *cf = base;
    if (!ld->key_pending) {
        error_at(ld, ld->lineno, "'key' without a 'cert' before it in [tls]%s",
                 cf->ncerts ? " (each key follows its own cert)" : "");
        return -1;
    }
    ld->key_pending = 0;
    cf->certs[cf->ncerts - 1].key_line = ld->lineno;
    if (value[0] == '\0') {
        bad_value(ld, d, value, "the path of a PEM private key");
        return -1;
    }
    if (copy_path(ld, d, cf->certs[cf->ncerts - 1].key, value) < 0) {
        return -1;
    }
    return check_readable(ld, "key", value);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    } else if (ss->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    }
}

/*
 * "192.0.2.1:25", "[2001:db8::1]:25", "mail.example:25" into hp->host and
 * hp->port; address literals also into hp->addr. Returns NULL or what is
 * expected instead.
 */
static const char *split_hostport(const char *value, stp_hostport_t *hp)
{
    const char *host = value, *port;
    size_t hlen;

    memset(hp, 0, sizeof(*hp));
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL || close[1] != ':') {
            return "[IPv6]:PORT";
        }
        host = value + 1;
        hlen = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = strrchr(value, ':');
        if (colon == NULL) {
            return "HOST:PORT or [IPv6]:PORT";
        }
        hlen = (size_t)(colon - value);
        port = colon + 1;
        if (memchr(value, ':', hlen)) {
            return "an IPv6 address in brackets, as in [::1]:25";
        }
    }
    if (hlen == 0) {
        return "HOST:PORT or [IPv6]:PORT";
    }
    if (hlen >= sizeof(hp->host)) {
        return "a host name shorter than 256 characters";
    }
    int64_t p;
    const char *rest = parse_digits(port, &p);
    if (rest == NULL || *rest != '\0' || p < 1 || p > 65535) {
        return "a port from 1 to 65535 after the last ':'";
    }
    memcpy(hp->host, host, hlen);
    hp->host[hlen] = '\0';
    hp->port = (uint16_t)p;

    struct sockaddr_in *sin = (struct sockaddr_in *)&hp->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&hp->addr;
    if (value[0] == '[') {
        if (inet_pton(AF_INET6, hp->host, &sin6->sin6_addr) != 1) {
            return "an IPv6 address inside [ ]";
        }
        sin6->sin6_family = AF_INET6;
        hp->addr_len = sizeof(*sin6);
    } else if (inet_pton(AF_INET, hp->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        hp->addr_len = sizeof(*sin);
    } else if (!valid_hostname(hp->host)) {
        return "HOST:PORT with a host name or IPv4 address, or [IPv6]:PORT";
    }
    set_port(&hp->addr, hp->port);
    return NULL;
}

/* Host names are looked up once, here; the first address getaddrinfo gives wins. */
static int resolve(loader_t *ld, const directive_t *d, stp_hostport_t *hp)
{
    char q[ESCAPE_CAP];
    struct addrinfo hints, *res = NULL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(hp->host, NULL, &hints, &res);
    const struct addrinfo *ai = res;
    while (rc == 0 && ai && ai->ai_family != AF_INET && ai->ai_family != AF_INET6) {
        ai = ai->ai_next;
    }
    if (rc != 0 || ai == NULL || ai->ai_addrlen > sizeof(hp->addr)) {
        error_at(ld, ld->lineno, "cannot resolve '%s' for '%s' in [%s]: %s", ESC(q, hp->host),
                 d->name, ld->section_name, rc ? gai_strerror(rc) : "no IPv4 or IPv6 address");
        if (res) {
            freeaddrinfo(res);
        }
        return -1;
    }
    memcpy(&hp->addr, ai->ai_addr, ai->ai_addrlen);
    hp->addr_len = (socklen_t)ai->ai_addrlen;
    set_port(&hp->addr, hp->port);
    freeaddrinfo(res);
    return 0;
}

/*
 * state_dir: an existing directory the proxy may write into (the state file
 * is replaced by rename, so the directory itself must be writable).
 */
static int parse_state_dir(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    char q[ESCAPE_CAP];
    struct stat st;
    if (copy_path(ld, d, field_of(d, base), value) < 0 || value[0] == '\0') {
        return value[0] == '\0' ? 0 : -1;
    }
    if (stat(value, &st) != 0) {
        int e = errno;
        error_at(ld, ld->lineno, "cannot use state_dir '%s': %s", ESC(q, value), strerror(e));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        error_at(ld, ld->lineno, "cannot use state_dir '%s': %s", ESC(q, value), strerror(ENOTDIR));
        return -1;
    }
    if (access(value, W_OK | X_OK) != 0) {
        int e = errno;
        error_at(ld, ld->lineno, "cannot use state_dir '%s': %s", ESC(q, value), strerror(e));
        return -1;
    }
    return 0;
}

static int parse_policy_tls(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_policy_tls_t t;
    if (stp_policy_tls_parse(value, &t) < 0) {
        bad_value(ld, d, value, "none, may, encrypt, verify, secure, dane, dane-only or mta-sts");
        return -1;
    }
    *(stp_policy_tls_t *)field_of(d, base) = t;
    return 0;
}

/*
 * resolver = IP:PORT | [IPv6]:PORT: an address literal only (the DNS server
 * cannot be found by name), kept as text for c-ares.
 */
static int parse_resolver(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_hostport_t hp;
    const char *why = split_hostport(value, &hp);
    if (why == NULL && hp.addr_len == 0) {
        why = "an IP address and port, as in 127.0.0.1:53 or [::1]:53 (not a host name)";
    }
    if (why) {
        bad_value(ld, d, value, "%s", why);
        return -1;
    }
    snprintf(field_of(d, base), sizeof(((stp_config_t *)0)->resolver),
             hp.addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", hp.host, (unsigned)hp.port);
    return 0;
}

/* listen and backend: the address is needed at start-up, so names are resolved now. */
static int parse_listen(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_hostport_t *hp = field_of(d, base);
    const char *why = split_hostport(value, hp);
    if (why) {
        bad_value(ld, d, value, "%s", why);
        return -1;
    }
    return hp->addr_len ? 0 : resolve(ld, d, hp);
}

/*
 * route = relay:HOST:PORT | original-dst | mx. A relay given by name is not
 * resolved here (relay.addr_len stays 0): it is a remote service whose
 * addresses may change while the proxy runs, so the outbound side looks it
 * up for each connection. Address literals are filled in.
 */
static int parse_route(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_listener_conf_t *lc = base;
    if (strcmp(value, "original-dst") == 0) {
        lc->route = STP_ROUTE_ORIGINAL_DST;
        return 0;
    }
    if (strcmp(value, "mx") == 0) {
        lc->route = STP_ROUTE_MX;
        return 0;
    }
    if (strncmp(value, "relay:", 6) != 0) {
        bad_value(ld, d, value, "relay:HOST:PORT, original-dst or mx");
        return -1;
    }
    const char *why = split_hostport(value + 6, &lc->relay);
    if (why) {
        bad_value(ld, d, value, "relay:HOST:PORT with %s", why);
        return -1;
    }
    lc->route = STP_ROUTE_RELAY;
    return 0;
}

/*
 * One CIDR of an allow list. "10.0.0.1/8" is refused rather than quietly
 * widened: whoever wrote it meant either one host or the network.
 */
static int parse_one_cidr(loader_t *ld, const directive_t *d, const char *item, stp_cidr_t *out)
{
    stp_cidr_t host;
    char addr[INET6_ADDRSTRLEN + 8], shown[INET6_ADDRSTRLEN];

    if (stp_cidr_parse(item, out) < 0) {
        bad_value(ld, d, item, "ADDRESS or ADDRESS/PREFIX, such as 10.0.0.0/8 or ::1/128");
        return -1;
    }
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    if (alen < sizeof(addr)) {
        memcpy(addr, item, alen);
        addr[alen] = '\0';
        if (stp_cidr_parse(addr, &host) == 0 && memcmp(host.addr, out->addr, 16) != 0 &&
            inet_ntop(out->family, out->addr, shown, sizeof(shown))) {
            bad_value(ld, d, item, "no bits set after the prefix, as in %s/%d", shown, out->prefix);
            return -1;
        }
    }
    return 0;
}

/* allow (and proxy_from) = CIDR[, CIDR...]; repeated lines add to the list
 * (lines are short). */
static int parse_allow(loader_t *ld, const directive_t *d, void *base, const char *value)
{
    stp_listener_conf_t *lc = base;
    char item[128];
    int rc = 0;
    int from = strcmp(d->name, "proxy_from") == 0;
    stp_cidr_t *list = from ? lc->proxy_from : lc->allow;
    size_t *count = from ? &lc->nproxy_from : &lc->nallow;

    if (!ld->repeat) {
        *count = 0; /* the first line written replaces the default */
    }
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && is_blank(*s)) {
            s++;
        }
        while (e > s && is_blank(e[-1])) {
            e--;
        }
        size_t n = (size_t)(e - s);
        if (n == 0) {
            bad_value(ld, d, value, "a comma-separated list such as 127.0.0.1/32, ::1/128");
            return -1;
        }
        if (n >= sizeof(item)) {
            n = sizeof(item) - 1; /* cannot be an address: the message shows it */
        }
        memcpy(item, s, n);
        item[n] = '\0';
        if (*count >= STP_CONF_MAX_ALLOW) {
            error_at(ld, ld->lineno, "too many '%s' entries in [%s] (at most %d)", d->name,
                     ld->section_name, STP_CONF_MAX_ALLOW);
            return -1;
        }
        if (parse_one_cidr(ld, d, item, &list[*count]) == 0) {
            (*count)++;
        } else {
            rc = -1;
        }
        if (comma == NULL) {
            return rc;
        }
        p = comma + 1;
    }
}

/* ---- sections ---- */

static void apply_defaults(loader_t *ld, const directive_t *table, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].deflt) {
            ld->repeat = 0;
            table[i].parse(ld, &table[i], base, table[i].deflt);
        }
    }
}

static void enter(loader_t *ld, section_t s, const directive_t *table, size_t n, void *base,
                  int *seen)
{
    ld->section = s;
    ld->table = table;
    ld->ntable = n;
    ld->base = base;
    ld->seen = seen;
}

static void begin_listener(loader_t *ld, const char *name)
{
    stp_config_t *cf = ld->cf;
    char q[ESCAPE_CAP];

    if (!valid_listener_name(name)) {
        error_at(ld, ld->lineno,
                 "bad listener name '%s': expected up to 63 letters, digits, '_', '.' or '-'",
                 ESC(q, name));
    }
    for (size_t i = 0; i < cf->nlisteners; i++) {
        if (strcmp(cf->listeners[i].name, name) == 0) {
            error_at(ld, ld->lineno, "duplicate listener name '%s' (first at line %d)",
                     ESC(q, name), cf->listeners[i].line);
            break;
        }
    }
    if (cf->nlisteners >= STP_CONF_MAX_LISTENERS) {
        error_at(ld, ld->lineno, "too many listeners (at most %d)", STP_CONF_MAX_LISTENERS);
        ld->section = SEC_SKIP;
        return;
    }
    /* Even a badly named listener is checked, so that all its errors show. */
    size_t i = cf->nlisteners++;
    stp_listener_conf_t *lc = &cf->listeners[i];
    snprintf(lc->name, sizeof(lc->name), "%s", name);
    lc->line = ld->lineno;
    enter(ld, SEC_LISTENER, listener_directives, COUNT_OF(listener_directives), lc,
          ld->listener_seen[i]);
    apply_defaults(ld, listener_directives, COUNT_OF(listener_directives), lc);
}

/*
 * [policy:NAME]: "default", a domain, or ".suffix". Entries are kept in file
 * order; the table grows by doubling, which is safe because only the
 * current section's entry is addressed by pointer while the file is read.
 */
static void begin_policy(loader_t *ld, const char *raw)
{
    stp_config_t *cf = ld->cf;
    stp_policy_table_t *t = &cf->policies;
    char q[ESCAPE_CAP], name[256];

    if (stp_policy_name_normalize(raw, name) < 0) {
        error_at(ld, ld->lineno,
                 "bad policy name '%s': expected a domain, .domain (names below it) or default",
                 ESC(q, raw));
        ld->section = SEC_SKIP;
        return;
    }
    if (strcmp(name, "default") == 0) {
        if (ld->default_line) {
            error_at(ld, ld->lineno, "duplicate section [policy:default] (first at line %d)",
                     ld->default_line);
            ld->section = SEC_SKIP;
            return;
        }
        ld->default_line = ld->lineno;
        memset(&t->deflt, 0, sizeof(t->deflt));
        memcpy(t->deflt.name, "default", 8);
        t->deflt.line = ld->lineno;
        enter(ld, SEC_POLICY, policy_directives, COUNT_OF(policy_directives), &t->deflt,
              ld->default_seen);
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->entries[i].name, name) == 0) {
            error_at(ld, ld->lineno, "duplicate section [policy:%s] (first at line %d)", name,
                     t->entries[i].line);
            ld->section = SEC_SKIP;
            return;
        }
    }
    if (t->n >= STP_CONF_MAX_POLICIES) {
        error_at(ld, ld->lineno, "too many [policy:DOMAIN] sections (at most %d)",
                 STP_CONF_MAX_POLICIES);
        ld->section = SEC_SKIP;
        return;
    }
    if (t->n == ld->policy_cap) {
        size_t cap = ld->policy_cap ? ld->policy_cap * 2 : 8;
        stp_domain_policy_t *e = realloc(t->entries, cap * sizeof(*e));
        if (e) {
            t->entries = e;
        }
        policy_seen_t *seen = e ? realloc(ld->policy_seen, cap * sizeof(*seen)) : NULL;
        if (seen == NULL) {
            error_at(ld, ld->lineno, "out of memory");
            ld->section = SEC_SKIP;
            return;
        }
        ld->policy_seen = seen;
        ld->policy_cap = cap;
    }
    stp_domain_policy_t *p = &t->entries[t->n];
    memset(p, 0, sizeof(*p));
    memset(ld->policy_seen[t->n], 0, sizeof(ld->policy_seen[t->n]));
    memcpy(p->name, name, strlen(name) + 1);
    p->line = ld->lineno;
    enter(ld, SEC_POLICY, policy_directives, COUNT_OF(policy_directives), p, ld->policy_seen[t->n]);
    t->n++;
}

static void begin_section(loader_t *ld, const char *name)
{
    char q[ESCAPE_CAP];
    int *first = NULL;

    escape(ld->section_name, sizeof(ld->section_name), name, strlen(name));
    if (strcmp(name, "proxy") == 0) {
        first = &ld->proxy_line;
        enter(ld, SEC_PROXY, proxy_directives, COUNT_OF(proxy_directives), ld->cf, ld->proxy_seen);
    } else if (strcmp(name, "tls") == 0) {
        first = &ld->tls_line;
        enter(ld, SEC_TLS, tls_directives, COUNT_OF(tls_directives), ld->cf, ld->tls_seen);
    } else if (strncmp(name, "listener:", 9) == 0) {
        begin_listener(ld, name + 9);
        return;
    } else if (strncmp(name, "policy:", 7) == 0) {
        begin_policy(ld, name + 7);
        return;
    } else {
        error_at(ld, ld->lineno,
                 "unknown section [%s] (expected [proxy], [tls], [listener:NAME] or "
                 "[policy:DOMAIN])",
                 ESC(q, name));
        ld->section = SEC_SKIP;
        return;
    }
    /* Keys still go to the same place; the second header is only a likely mistake. */
    if (*first) {
        error_at(ld, ld->lineno, "duplicate section [%s] (first at line %d)", name, *first);
    } else {
        *first = ld->lineno;
    }
}

/* ---- the line reader and the inih handler ---- */

/*
 * inih's own scan for "=:" or "]" stopping at an inline comment (";" after a
 * blank), mirrored so both agree on what a line is.
 */
static const char *find_or_comment(const char *s, const char *chars)
{
    int was_blank = 0;
    while (*s && !strchr(chars, *s) && !(was_blank && *s == ';')) {
        was_blank = is_blank(*s);
        s++;
    }
    return s;
}

/*
 * Looks at one trimmed, non-empty line before inih does. Returns 0 to hand
 * it to inih, -1 to hand inih a blank line instead (it was reported here, or
 * it is a section header, which this file handles itself).
 */
static int classify_line(loader_t *ld, char *line)
{
    char q[ESCAPE_CAP];

    if (line[0] == ';' || line[0] == '#') {
        return 0;
    }
    if (line[0] == '[') {
        char *end = (char *)find_or_comment(line + 1, "]");
        if (*end != ']') {
            error_at(ld, ld->lineno, "missing ']' in section header '%s'", ESC(q, line));
            ld->section = SEC_SKIP;
            return -1;
        }
        const char *after = end + 1;
        while (is_blank(*after)) {
            after++;
        }
        if (*after != '\0' && *after != ';' && *after != '#') {
            error_at(ld, ld->lineno, "unexpected text after ']' in section header '%s'",
                     ESC(q, line));
        }
        *end = '\0';
        char *name = line + 1;
        while (is_blank(*name)) {
            name++;
        }
        for (char *e = end; e > name && is_blank(e[-1]); e--) {
            e[-1] = '\0';
        }
        begin_section(ld, name);
        return -1;
    }
    const char *sep = find_or_comment(line, "=:");
    if (*sep != '=' && *sep != ':') {
        error_at(ld, ld->lineno, "expected 'key = value', '[section]' or a comment, not '%s'",
                 ESC(q, line));
        return -1;
    }
    if (sep == line) {
        error_at(ld, ld->lineno, "missing key name before '%c'", *sep);
        return -1;
    }
    return 0;
}

/* ini_reader: one physical line per call, so inih's count is ours. */
static char *read_line(char *str, int num, void *stream)
{
    loader_t *ld = stream;

    if (ld->pos >= ld->len || num < 3) {
        return NULL;
    }
    const char *p = ld->src + ld->pos, *end = ld->src + ld->len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *eol = nl ? nl : end;
    ld->pos = (size_t)((nl ? nl + 1 : end) - ld->src);
    ld->lineno++;

    if (ld->lineno == 1 && eol - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
        p += 3; /* UTF-8 byte order mark */
    }
    while (p < eol && is_blank(*p)) {
        p++;
    }
    while (eol > p && is_blank(eol[-1])) {
        eol--;
    }
    size_t n = (size_t)(eol - p);
    str[0] = '\n';
    str[1] = '\0';
    if (memchr(p, '\0', n)) {
        error_at(ld, ld->lineno, "NUL byte in line");
        return str;
    }
    /*
     * XXX inih reads into a buffer of its compile-time INI_MAX_LINE (200 in
     * Debian), and would cut a longer line in pieces and drop the rest. A
     * clear error is better than a truncated path; long allow lists can be
     * split over several `allow` lines.
     */
    if (n + 2 > (size_t)num) {
        error_at(ld, ld->lineno, "line too long (at most %d characters)", num - 2);
        return str;
    }
    if (n == 0) {
        return str;
    }
    memcpy(str, p, n);
    str[n] = '\0';
    if (classify_line(ld, str) < 0) {
        str[0] = '\n';
        str[1] = '\0';
        return str;
    }
    str[n] = '\n'; /* a whole line, so inih never asks for "the rest" */
    str[n + 1] = '\0';
    return str;
}

/* ini_handler: `section` is ignored, the reader keeps track of sections. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    loader_t *ld = user;
    char q[ESCAPE_CAP];

    if (ld->section == SEC_NONE) {
        error_at(ld, ld->lineno, "key '%s' outside of any section", ESC(q, name));
        return 1;
    }
    if (ld->section == SEC_SKIP) {
        return 1; /* the section header was reported */
    }
    const directive_t *d = NULL;
    for (size_t i = 0; i < ld->ntable; i++) {
        if (strcmp(ld->table[i].name, name) == 0) {
            d = &ld->table[i];
            break;
        }
    }
    if (d == NULL) {
        error_at(ld, ld->lineno, "unknown key '%s' in [%s]", ESC(q, name), ld->section_name);
        return 1;
    }
    int *seen = &ld->seen[d - ld->table];
    if (*seen && !(d->flags & F_REPEAT)) {
        error_at(ld, ld->lineno, "duplicate key '%s' in [%s] (first at line %d)", d->name,
                 ld->section_name, *seen);
        return 1;
    }
    ld->repeat = *seen != 0;
    if (!*seen) {
        *seen = ld->lineno;
    }
    d->parse(ld, d, ld->base, value);
    return 1; /* errors are collected, never a reason for inih to stop */
}

/* ---- checks once the whole file is read ---- */

static int directive_index(const directive_t *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, name) == 0) {
            return (int)i;
        }
    }
    abort(); /* a name below that is not in the table: programming error */
}

static int listener_key_line(const loader_t *ld, size_t li, const char *name)
{
    return ld->listener_seen[li][directive_index(listener_directives, COUNT_OF(listener_directives),
                                                 name)];
}

static void finish_proxy(loader_t *ld)
{
    stp_config_t *cf = ld->cf;
    if (ld->proxy_seen[directive_index(proxy_directives, COUNT_OF(proxy_directives), "hostname")]) {
        return;
    }
    char name[HOSTNAME_CAP + 1];
    memset(name, 0, sizeof(name));
    if (gethostname(name, sizeof(name) - 1) != 0 || !valid_hostname(name)) {
        error_at(ld, ld->proxy_line,
                 "cannot use this machine's host name in SMTP; set 'hostname' in [proxy]");
        return;
    }
    memcpy(cf->hostname, name, strlen(name) + 1);
}

static const void *ip_bytes(const struct sockaddr_storage *ss, size_t *len)
{
    if (ss->ss_family == AF_INET) {
        *len = 4;
        return &((const struct sockaddr_in *)ss)->sin_addr;
    }
    *len = 16;
    return &((const struct sockaddr_in6 *)ss)->sin6_addr;
}

static int is_wildcard(const struct sockaddr_storage *ss)
{
    static const unsigned char zero[16];
    size_t len;
    const void *a = ip_bytes(ss, &len);
    return memcmp(a, zero, len) == 0;
}

/* 127.0.0.1 and ::1: where Linux sends a connection to 0.0.0.0 or ::. */
static int is_first_loopback(const struct sockaddr_storage *ss)
{
    static const unsigned char v4[4] = {127, 0, 0, 1};
    static const unsigned char v6[16] = {[15] = 1};
    size_t len;
    const void *a = ip_bytes(ss, &len);
    return memcmp(a, len == 4 ? v4 : v6, len) == 0;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    size_t len;
    const unsigned char *a = ip_bytes(ss, &len);
    return len == 4 ? a[0] == 127 : is_first_loopback(ss);
}

/*
 * 1 when a connection to `to` is accepted by a socket bound to `listen`:
 * the same address, or a loopback address (or the wildcard, which Linux
 * connects to 127.0.0.1 or ::1) when the listener binds the wildcard, or
 * the wildcard when the listener binds 127.0.0.1 or ::1. Other local
 * addresses behind a wildcard listen would need the host's interfaces,
 * which may differ at run time; they are not looked at. IPv6 sockets are
 * IPV6_V6ONLY, so the families do not meet. An address not resolved at
 * load time (a relay by name) is never matched.
 */
/* Both resolved, of one family and on one port: what reaches() and
 * binds_overlap() then compare by address. */
static int same_family_and_port(const stp_hostport_t *a, const stp_hostport_t *b)
{
    return a->addr_len && b->addr_len && a->addr.ss_family == b->addr.ss_family &&
           a->port == b->port;
}

static int reaches(const stp_hostport_t *listen, const stp_hostport_t *to)
{
    if (!same_family_and_port(listen, to)) {
        return 0;
    }
    size_t len;
    const void *lb = ip_bytes(&listen->addr, &len), *tb = ip_bytes(&to->addr, &len);
    if (memcmp(lb, tb, len) == 0) {
        return 1;
    }
    if (is_wildcard(&listen->addr)) {
        return is_loopback(&to->addr);
    }
    return is_wildcard(&to->addr) && is_first_loopback(&listen->addr);
}

const char *stp_config_loop_note(const stp_hostport_t *listen, const stp_hostport_t *to)
{
    if (!reaches(listen, to)) {
        return NULL;
    }
    size_t len;
    const void *lb = ip_bytes(&listen->addr, &len), *tb = ip_bytes(&to->addr, &len);
    return memcmp(lb, tb, len) == 0 ? ""
           : is_wildcard(&listen->addr)
               ? " (a wildcard listen address accepts loopback connections on its port)"
               : " (a connection to the wildcard address reaches loopback)";
}

/* backend (inbound) or a relay route (outbound) that leads back to `listen`. */
static void report_loop(loader_t *ld, int line, const char *key, const stp_hostport_t *listen,
                        const stp_hostport_t *to)
{
    const char *note = stp_config_loop_note(listen, to);
    if (note != NULL) {
        error_at(ld, line, "%s is the listener's own address%s: connections would loop", key,
                 note);
    }
}

static void finish_listener(loader_t *ld, size_t li)
{
    stp_config_t *cf = ld->cf;
    stp_listener_conf_t *lc = &cf->listeners[li];
    const int *seen = ld->listener_seen[li];
    char q[ESCAPE_CAP];
    unsigned mode = lc->mode == STP_MODE_INBOUND    ? F_INBOUND
                    : lc->mode == STP_MODE_OUTBOUND ? F_OUTBOUND
                                                    : 0;

    ESC(q, lc->name);
    for (size_t k = 0; k < COUNT_OF(listener_directives); k++) {
        const directive_t *d = &listener_directives[k];
        unsigned only = d->flags & (F_INBOUND | F_OUTBOUND);
        if (seen[k]) {
            if (only && mode && !(only & mode)) {
                error_at(ld, seen[k], "key '%s' is only valid for mode = %s", d->name,
                         only == F_INBOUND ? "inbound" : "outbound");
            }
        } else if ((d->flags & F_REQUIRED) && (!only || (only & mode))) {
            error_at(ld, lc->line, "missing required key '%s' in [listener:%s]", d->name, q);
        }
    }
    if (lc->mode == STP_MODE_INBOUND) {
        if (lc->starttls != STP_STARTTLS_OFFER && cf->ncerts == 0) {
            error_at(ld, listener_key_line(ld, li, "starttls"),
                     "starttls = %s needs a certificate: add 'cert' and 'key' to [tls]",
                     lc->starttls == STP_STARTTLS_REQUIRE ? "require" : "implicit");
        }
        report_loop(ld, listener_key_line(ld, li, "backend"), "backend", &lc->listen,
                    &lc->backend);
        if (!lc->hide_auth_before_tls && lc->starttls != STP_STARTTLS_IMPLICIT) {
            error_at(ld, listener_key_line(ld, li, "hide_auth_before_tls"),
                     "hide_auth_before_tls = no would advertise AUTH where it is refused: before "
                     "TLS every AUTH gets 530 5.7.0 (no password crosses in plaintext)");
        }
        if (!lc->proxy_protocol && lc->nproxy_from > 0) {
            error_at(ld, listener_key_line(ld, li, "proxy_from"),
                     "proxy_from without proxy_protocol = yes does nothing (no PROXY header is "
                     "read)");
        }
        if (lc->proxy_protocol && lc->nproxy_from == 0) {
            error_at(ld, listener_key_line(ld, li, "proxy_protocol"),
                     "proxy_protocol = yes needs 'proxy_from' (the load balancers' networks)");
        }
    }
    if (lc->mode == STP_MODE_OUTBOUND) {
        if (!listener_key_line(ld, li, "servername") && lc->route == STP_ROUTE_RELAY) {
            memcpy(lc->servername, lc->relay.host, strlen(lc->relay.host) + 1);
        }
        lc->ca_file_line = listener_key_line(ld, li, "ca_file");
        if (!lc->ca_file_line) {
            memcpy(lc->ca_file, cf->ca_file, strlen(cf->ca_file) + 1);
            lc->ca_file_line = cf->ca_file_line;
        }
        lc->route_line = listener_key_line(ld, li, "route");
        if (lc->route == STP_ROUTE_RELAY) {
            report_loop(ld, listener_key_line(ld, li, "route"), "route", &lc->listen, &lc->relay);
        }
        /* A relay's servername defaults to its host (above), and route = mx
         * takes names from DNS and [policy:*]; an intercepted connection
         * carries no name at all, so verify/secure would defer every message
         * at run time. Said here, where --check sees it. */
        if (lc->route == STP_ROUTE_ORIGINAL_DST && lc->tls >= STP_TLS_LEVEL_VERIFY &&
            !listener_key_line(ld, li, "servername")) {
            int line = listener_key_line(ld, li, "tls");
            error_at(ld, line ? line : listener_key_line(ld, li, "route"),
                     "route = original-dst with tls = %s needs 'servername' (an intercepted "
                     "connection carries no name to verify)",
                     lc->tls == STP_TLS_LEVEL_SECURE ? "secure" : "verify");
        }
        /* route = mx takes each domain's level and name from [policy:*]: a
         * listener's own would be silently ignored (tls = secure here once
         * meant mail going out in plaintext under the built-in dane). */
        if (lc->route == STP_ROUTE_MX) {
            static const char *const per_domain[] = {"tls", "servername"};
            for (size_t k = 0; k < sizeof(per_domain) / sizeof(per_domain[0]); k++) {
                int line = listener_key_line(ld, li, per_domain[k]);
                if (line) {
                    error_at(ld, line,
                             "%s has no effect with route = mx: each recipient domain's TLS "
                             "comes from its [policy:DOMAIN] section (for every domain: "
                             "[policy:default])",
                             per_domain[k]);
                }
            }
        }
        if (lc->connection_cache_time && lc->route == STP_ROUTE_MX) {
            error_at(ld, listener_key_line(ld, li, "connection_cache_time"),
                     "connection_cache_time works with route = relay or original-dst; "
                     "route = mx keeps a next hop connection for one session");
        }
    }
}

/*
 * Two sockets cannot bind the same address and port; a wildcard overlaps
 * every address of its family (IPv6 sockets are IPV6_V6ONLY, so the families
 * do not meet).
 */
static int binds_overlap(const stp_hostport_t *a, const stp_hostport_t *b)
{
    if (!same_family_and_port(a, b)) {
        return 0;
    }
    size_t len;
    const void *ab = ip_bytes(&a->addr, &len), *bb = ip_bytes(&b->addr, &len);
    return memcmp(ab, bb, len) == 0 || is_wildcard(&a->addr) || is_wildcard(&b->addr);
}

static void check_listen_overlap(loader_t *ld)
{
    const stp_config_t *cf = ld->cf;
    char qa[ESCAPE_CAP], qb[ESCAPE_CAP];

    for (size_t i = 0; i < cf->nlisteners; i++) {
        const stp_hostport_t *b = &cf->listeners[i].listen;
        for (size_t j = 0; b->addr_len && j < i; j++) {
            if (binds_overlap(&cf->listeners[j].listen, b)) {
                error_at(ld, listener_key_line(ld, i, "listen"),
                         "listen address of [listener:%s] overlaps [listener:%s] (line %d)",
                         ESC(qa, cf->listeners[i].name), ESC(qb, cf->listeners[j].name),
                         listener_key_line(ld, j, "listen"));
                break;
            }
        }
    }
}

/*
 * The metrics endpoint on a listener's address can never work: one of the
 * two binds fails at start-up (EADDRINUSE), after --check said yes, and a
 * reload would be refused for the same reason.
 */
static void check_metrics_overlap(loader_t *ld)
{
    const stp_config_t *cf = ld->cf;
    const stp_hostport_t *m = &cf->metrics;
    char q[ESCAPE_CAP];

    for (size_t i = 0; m->addr_len && i < cf->nlisteners; i++) {
        if (binds_overlap(&cf->listeners[i].listen, m)) {
            error_at(ld,
                     ld->proxy_seen[directive_index(proxy_directives, COUNT_OF(proxy_directives),
                                                    "metrics")],
                     "metrics address overlaps the listen address of [listener:%s] (line %d)",
                     ESC(q, cf->listeners[i].name), listener_key_line(ld, i, "listen"));
            break;
        }
    }
}

/* Which keys suit which level, and required keys, per policy section. */
static void finish_policy(loader_t *ld, const stp_domain_policy_t *p, const int *seen)
{
    int key_tls = directive_index(policy_directives, COUNT_OF(policy_directives), "tls");
    int key_sn = directive_index(policy_directives, COUNT_OF(policy_directives), "servername");
    int key_ca = directive_index(policy_directives, COUNT_OF(policy_directives), "ca_file");
    if (!seen[key_tls]) {
        error_at(ld, p->line, "missing required key 'tls' in [policy:%s]", p->name);
        return;
    }
    if (seen[key_sn] && p->tls != STP_POLICY_TLS_VERIFY && p->tls != STP_POLICY_TLS_SECURE) {
        error_at(ld, seen[key_sn], "key 'servername' in [policy:%s] needs tls = verify or secure",
                 p->name);
    }
    if (seen[key_ca] && (p->tls == STP_POLICY_TLS_NONE || p->tls == STP_POLICY_TLS_MAY ||
                         p->tls == STP_POLICY_TLS_ENCRYPT || p->tls == STP_POLICY_TLS_DANE_ONLY)) {
        error_at(ld, seen[key_ca],
                 "key 'ca_file' in [policy:%s] needs tls = verify, secure, dane or mta-sts "
                 "(tls = %s verifies no certificate chain)",
                 p->name, stp_policy_tls_name(p->tls));
    }
}

static void finish(loader_t *ld)
{
    finish_proxy(ld);
    ld->cf->ca_file_line =
        ld->tls_seen[directive_index(tls_directives, COUNT_OF(tls_directives), "ca_file")];
    ld->cf->resolver_line =
        ld->proxy_seen[directive_index(proxy_directives, COUNT_OF(proxy_directives), "resolver")];
    if (!ld->proxy_seen[directive_index(proxy_directives, COUNT_OF(proxy_directives),
                                        "mta_sts_ca_file")]) {
        memcpy(ld->cf->mta_sts_ca_file, ld->cf->ca_file, strlen(ld->cf->ca_file) + 1);
    }
    for (size_t i = 0; i < ld->cf->policies.n; i++) {
        finish_policy(ld, &ld->cf->policies.entries[i], ld->policy_seen[i]);
    }
    if (ld->default_line) {
        finish_policy(ld, &ld->cf->policies.deflt, ld->default_seen);
    }
    for (size_t i = 0; i < ld->cf->nlisteners; i++) {
        finish_listener(ld, i);
    }
    check_listen_overlap(ld);
    check_metrics_overlap(ld);
    if (ld->cf->nlisteners == 0) {
        error_at(ld, 0, "no [listener:NAME] section: nothing to do");
    }
}

/* ---- entry points ---- */

static stp_config_t *load(const char *file, const char *src, size_t len, char *errbuf,
                          size_t errlen)
{
    loader_t *ld = calloc(1, sizeof(*ld));
    stp_config_t *cf = calloc(1, sizeof(*cf));
    char *path = strdup(file);

    if (ld == NULL || cf == NULL || path == NULL) {
        if (errbuf && errlen) {
            snprintf(errbuf, errlen, "%s: out of memory\n", file);
        }
        free(ld);
        free(cf);
        free(path);
        return NULL;
    }
    ld->file = file;
    ld->src = src;
    ld->len = len;
    ld->cf = cf;
    cf->path = path;
    snprintf(ld->section_name, sizeof(ld->section_name), "proxy");
    apply_defaults(ld, proxy_directives, COUNT_OF(proxy_directives), cf);
    snprintf(ld->section_name, sizeof(ld->section_name), "tls");
    apply_defaults(ld, tls_directives, COUNT_OF(tls_directives), cf);
    ld->section_name[0] = '\0';
    /* without [policy:default]: everything the standards offer, best first */
    memcpy(cf->policies.deflt.name, "default", 8);
    cf->policies.deflt.tls = STP_POLICY_TLS_DANE;

    int rc = ini_parse_stream(read_line, ld, on_key, ld);
    if (rc == -2) {
        error_at(ld, 0, "out of memory");
    } else if (rc > 0 && !has_error_on_line(ld, rc)) {
        error_at(ld, rc, "syntax error"); /* read_line should have caught it */
    }
    finish(ld);

    int failed = has_errors(ld);
    write_messages(ld, errbuf, errlen);
    for (size_t i = 0; i < ld->nmsgs; i++) {
        free(ld->msgs[i].text);
    }
    free(ld->msgs);
    free(ld->policy_seen);
    free(ld);
    if (failed) {
        stp_config_free(cf);
        return NULL;
    }
    return cf;
}

stp_config_t *stp_config_load(const char *path, char *errbuf, size_t errlen)
{
    struct stat st;
    const char *why = NULL;
    char *text = NULL;
    size_t len = 0;

    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        why = strerror(errno);
    } else if (fstat(fileno(f), &st) != 0) {
        why = strerror(errno);
    } else if (S_ISDIR(st.st_mode)) {
        why = strerror(EISDIR);
    } else if ((text = malloc(MAX_FILE_SIZE + 1)) == NULL) {
        why = "out of memory";
    } else {
        len = fread(text, 1, MAX_FILE_SIZE + 1, f);
        if (ferror(f)) {
            why = strerror(errno);
        } else if (len > MAX_FILE_SIZE) {
            why = "file too large (more than 1 MiB)";
        }
    }
    if (f) {
        fclose(f);
    }
    if (why) {
        if (errbuf && errlen) {
            snprintf(errbuf, errlen, "%s: cannot read configuration: %s\n", path, why);
        }
        free(text);
        return NULL;
    }
    stp_config_t *cf = load(path, text, len, errbuf, errlen);
    free(text);
    return cf;
}

stp_config_t *stp_config_load_string(const char *text, const char *name, char *errbuf,
                                     size_t errlen)
{
    if (errbuf && errlen) {
        errbuf[0] = '\0';
    }
    return load(name ? name : "(string)", text ? text : "", text ? strlen(text) : 0, errbuf,
                errlen);
}

void stp_config_free(stp_config_t *cf)
{
    if (cf == NULL) {
        return;
    }
    free(cf->path);
    free(cf->policies.entries);
    free(cf);
}

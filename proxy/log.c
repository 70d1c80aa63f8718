/*
 * log: formatting and writing of log lines. A line is built in a stack
 * buffer and written with one write(2) so lines of concurrent workers never
 * interleave. Text lines look like
 *   2026-11-23T10:00:00.123Z info session id=... client=1.2.3.4:5 ...
 * JSON lines carry the same fields: {"ts":"...","level":"info","event":"session","id":"..."}.
 */
#include "proxy/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static stp_log_format_t log_format = STP_LOG_TEXT;
static stp_log_level_t log_level = STP_LOG_INFO;
static stp_log_target_t log_target = STP_LOG_STDERR;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void stp_log_init(stp_log_format_t format, stp_log_level_t level)
{
    log_format = format;
    log_level = level;
}

void stp_log_set_target(stp_log_target_t target)
{
    if (target == STP_LOG_SYSLOG && log_target != STP_LOG_SYSLOG) {
        openlog("smtp-tls-proxy", LOG_PID | LOG_NDELAY, LOG_MAIL);
    } else if (target != STP_LOG_SYSLOG && log_target == STP_LOG_SYSLOG) {
        closelog();
    }
    log_target = target;
}

int stp_log_enabled(stp_log_level_t level)
{
    return level <= log_level;
}

char *stp_log_escape(char *out, size_t cap, const char *in, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (cap == 0) {
        return out;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        int plain = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' && ch != '=';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > cap) { /* keep room for "..." and NUL */
            if (cap >= 4) {
                memcpy(out + (o < cap - 4 ? o : cap - 4), "...", 3);
                o = (o < cap - 4 ? o : cap - 4) + 3;
            }
            break;
        }
        if (plain) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o < cap ? o : cap - 1] = '\0';
    return out;
}

static size_t put(char *buf, size_t cap, size_t len, const char *s, size_t n)
{
    if (len + n > cap) {
        n = cap > len ? cap - len : 0;
    }
    memcpy(buf + len, s, n);
    return len + n;
}

/* Length of the key at p ([A-Za-z0-9_.-]+ directly followed by '='), or 0
 * when p does not start a key=value pair. */
static size_t key_len(const char *p)
{
    size_t n = 0;
    while (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '.' || p[n] == '-') {
        n++;
    }
    return n > 0 && p[n] == '=' ? n : 0;
}

/* Where text starting at p ends: before the next " key=", or at the end. */
static const char *run_end(const char *p)
{
    for (const char *s = strchr(p, ' '); s != NULL; s = strchr(s + 1, ' ')) {
        if (key_len(s + 1) > 0) {
            return s;
        }
    }
    return p + strlen(p);
}

/* Appends [s, e) as the inside of a JSON string. Control bytes were
 * replaced before, so '"' and '\\' are all that need escaping. */
static size_t put_str(char *out, size_t cap, size_t o, const char *s, const char *e)
{
    for (const char *c = s; c < e; c++) {
        if (*c == '"' || *c == '\\') {
            o = put(out, cap, o, "\\", 1);
        }
        o = put(out, cap, o, c, 1);
    }
    return o;
}

/* Converts "event k=v k2=v2 with spaces?" into JSON members. Values run to
 * the next " key=" boundary, so free text after a key stays in its value; a
 * value in quotes ends at the quote that is followed by " key=" or the end.
 * Text that is not key=value (a warning's sentence after the event name)
 * goes whole into a "msg" member, so every line is a JSON object that keeps
 * all of its text. */
static size_t to_json(char *out, size_t cap, const char *msg)
{
    size_t o = 0;
    const char *p = msg;
    int first = 1;
    const char *text[8][2]; /* free-text runs, in order, for "msg" */
    size_t ntext = 0;

    while (*p == ' ') {
        p++;
    }
    /* event name */
    const char *sp = strchr(p, ' ');
    const char *eq = strchr(p, '=');
    if (*p && (eq == NULL || (sp != NULL && sp < eq))) {
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        o = put(out, cap, o, "\"event\":\"", 9);
        o = put_str(out, cap, o, p, p + n);
        o = put(out, cap, o, "\"", 1);
        first = 0;
        p += n;
    }
    while (*p) {
        while (*p == ' ') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        size_t kl = key_len(p);
        if (kl == 0) {
            const char *end = run_end(p);
            if (ntext < sizeof(text) / sizeof(text[0])) {
                text[ntext][0] = p;
                text[ntext][1] = end;
                ntext++;
            } else { /* cannot happen with today's lines: keep it in the last run */
                text[ntext - 1][1] = end;
            }
            p = end;
            continue;
        }
        const char *k = p;
        const char *v = p + kl + 1;
        const char *vs = v, *ve = NULL, *end = NULL;
        if (*v == '"') {
            /* key="quoted text": the string itself in JSON */
            for (const char *q = strchr(v + 1, '"'); q != NULL; q = strchr(q + 1, '"')) {
                if (q[1] == '\0' || (q[1] == ' ' && key_len(q + 2) > 0)) {
                    vs = v + 1;
                    ve = q;
                    end = q + 1;
                    break;
                }
            }
        }
        if (end == NULL) {
            end = run_end(v);
            ve = end;
        }
        if (!first) {
            o = put(out, cap, o, ",", 1);
        }
        first = 0;
        o = put(out, cap, o, "\"", 1);
        o = put(out, cap, o, k, kl);
        o = put(out, cap, o, "\":\"", 3);
        o = put_str(out, cap, o, vs, ve);
        o = put(out, cap, o, "\"", 1);
        p = end;
    }
    if (ntext > 0) {
        o = put(out, cap, o, first ? "\"msg\":\"" : ",\"msg\":\"", first ? 7 : 8);
        for (size_t i = 0; i < ntext; i++) {
            if (i > 0) {
                o = put(out, cap, o, " ", 1);
            }
            o = put_str(out, cap, o, text[i][0], text[i][1]);
        }
        o = put(out, cap, o, "\"", 1);
    }
    return o;
}

void stp_log(stp_log_level_t level, const char *fmt, ...)
{
    /* JSON may double every byte of msg (a '\\' or '"' escaped) and adds
     * quotes around each key and value: line holds the worst case, so a
     * JSON line is never cut inside a string. */
    char msg[2048], line[3 * 2048 + 128], ts[40];
    struct timeval tv;
    struct tm tm;
    size_t len;
    va_list ap;

    if (level > log_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One event, one line: peer bytes are escaped where they are logged;
     * this catches anything else (a reply's CRLF) for text, JSON and syslog. */
    for (char *c = msg; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = '?';
        }
    }

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    size_t tl = strlen(ts);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03dZ", (int)(tv.tv_usec / 1000));

    if (log_target == STP_LOG_SYSLOG) {
        /* syslog stamps the time itself; the level becomes the priority. */
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        if (log_format == STP_LOG_JSON) {
            int n = snprintf(line, sizeof(line), "{\"level\":\"%s\",", level_names[level]);
            len = (size_t)n;
            len += to_json(line + len, sizeof(line) - len - 3, msg);
            len = put(line, sizeof(line), len, "}", 1);
            syslog(prio[level], "%.*s", (int)len, line);
        } else {
            syslog(prio[level], "%s", msg);
        }
        return;
    }
    if (log_format == STP_LOG_JSON) {
        int n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",", ts,
                         level_names[level]);
        len = (size_t)n;
        len += to_json(line + len, sizeof(line) - len - 3, msg);
        len = put(line, sizeof(line), len, "}\n", 2);
    } else {
        int n = snprintf(line, sizeof(line), "%s %s %s\n", ts, level_names[level], msg);
        len = n < 0 ? 0 : (size_t)n >= sizeof(line) ? sizeof(line) - 1 : (size_t)n;
        line[len - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

int stp_log_allow(stp_log_ratelimit_t *r, uint64_t now_ms, unsigned *quiet)
{
    if (r->logged && now_ms - r->last_ms < 1000) {
        r->quiet++;
        return 0;
    }
    *quiet = r->quiet;
    r->quiet = 0;
    r->last_ms = now_ms;
    r->logged = 1;
    return 1;
}

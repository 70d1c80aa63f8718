/*
 * smtp_reply: resumable parser for server replies (see smtp_reply.h). Bytes
 * are copied into the reply's fixed `raw` buffer as they arrive, so a reply
 * can be relayed exactly as received; each line is checked the moment its LF
 * arrives: three digits 1xx..5xx, the same code as the first line, then '-'
 * (more lines follow), ' ' or nothing (last line), and no NUL or CR in it.
 *
 * Limits are checked before a byte is stored, so `raw` never overflows:
 *  - a line holds at most STP_REPLY_MAX_LINE bytes with its line end; a byte
 *    other than LF is refused once only the LF would still fit. A line that
 *    ended in a bare LF thus has room for the CR that a rebuilt copy (ehlo.c)
 *    adds only if it is one byte shorter; ehlo.c checks that itself.
 *  - the reply holds at most STP_REPLY_MAX_BYTES and STP_REPLY_MAX_LINES.
 *
 * An error is sticky: a later feed without a re-init returns ERROR again
 * and consumes nothing. The header requires a re-init; this only makes a
 * caller that forgets it fail closed instead of parsing mid-reply garbage.
 */
#include "proxy/smtp_reply.h"

#include <string.h>

/* Starts a new reply; the previous one was handed out with DONE. */
static void restart(stp_reply_parser_t *p)
{
    p->reply.code = 0;
    p->reply.nlines = 0;
    p->reply.raw_len = 0;
    p->reply.bare_lf = 0;
    p->line_start = 0;
    p->done = 0;
}

void stp_reply_parser_init(stp_reply_parser_t *p)
{
    restart(p);
    p->error = NULL;
}

int stp_reply_parser_idle(const stp_reply_parser_t *p)
{
    return p->done || p->reply.raw_len == 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Checks the line raw[line_start .. raw_len), whose last byte is its LF.
 * Returns 1 for the last line of the reply, 0 for a continuation line, -1
 * with p->error set if the line is malformed.
 */
static int finish_line(stp_reply_parser_t *p)
{
    stp_reply_t *r = &p->reply;
    const char *s = r->raw + p->line_start;
    size_t len = r->raw_len - p->line_start - 1; /* without the LF */
    int code, last;

    if (len > 0 && s[len - 1] == '\r') {
        len--;
    } else {
        r->bare_lf = 1;
    }
    if (len < 3 || s[0] < '1' || s[0] > '5' || !is_digit(s[1]) || !is_digit(s[2])) {
        p->error = "reply line without a 3-digit code";
        return -1;
    }
    code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (r->nlines > 0 && code != r->code) {
        p->error = "reply code changes between lines";
        return -1;
    }
    if (len == 3 || s[3] == ' ') {
        last = 1;
    } else if (s[3] == '-') {
        last = 0;
    } else {
        p->error = "bad separator after reply code";
        return -1;
    }
    /* A CR inside a line would let the next reader split it differently;
     * a NUL would cut it short in any C string it ends up in. */
    if (memchr(s, '\0', len) != NULL || memchr(s, '\r', len) != NULL) {
        p->error = "NUL or CR inside a reply line";
        return -1;
    }
    if (r->nlines >= STP_REPLY_MAX_LINES) {
        p->error = "reply has too many lines";
        return -1;
    }
    r->code = code;
    r->text_off[r->nlines] = p->line_start + (len > 3 ? 4 : 3);
    r->text_len[r->nlines] = len > 3 ? len - 4 : 0;
    r->nlines++;
    p->line_start = r->raw_len;
    return last;
}

int stp_reply_feed(stp_reply_parser_t *p, const char *data, size_t n, size_t *consumed)
{
    stp_reply_t *r = &p->reply;

    if (p->error != NULL) {
        *consumed = 0;
        return STP_REPLY_ERROR;
    }
    if (p->done) {
        restart(p);
    }
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        size_t line_len = r->raw_len - p->line_start;

        if (c != '\n' && line_len + 1 >= STP_REPLY_MAX_LINE) {
            p->error = "reply line too long";
            *consumed = i;
            return STP_REPLY_ERROR;
        }
        if (r->raw_len >= STP_REPLY_MAX_BYTES) {
            p->error = "reply too long";
            *consumed = i;
            return STP_REPLY_ERROR;
        }
        r->raw[r->raw_len++] = c;
        if (c != '\n') {
            continue;
        }
        int rc = finish_line(p);
        if (rc < 0) {
            *consumed = i + 1;
            return STP_REPLY_ERROR;
        }
        if (rc == 1) {
            p->done = 1;
            *consumed = i + 1;
            return STP_REPLY_DONE;
        }
    }
    *consumed = n;
    return STP_REPLY_AGAIN;
}

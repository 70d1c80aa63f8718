/*
 * smtp_reply: resumable multi-line reply parser (see header). Bytes are
 * copied into the reply's raw buffer as they come; each completed line is
 * checked (three digits, a separator, the same code as the first line).
 */
#include "proxy/smtp_reply.h"

#include <string.h>

void stp_reply_parser_init(stp_reply_parser_t *p)
{
    memset(p, 0, sizeof(*p));
}

static void restart(stp_reply_parser_t *p)
{
    p->reply.code = 0;
    p->reply.nlines = 0;
    p->reply.raw_len = 0;
    p->reply.bare_lf = 0;
    p->line_start = 0;
    p->done = 0;
}

/* Checks the line raw[line_start .. raw_len) (LF included). Returns
 * 1 if last line, 0 if continuation, -1 on error. */
static int finish_line(stp_reply_parser_t *p)
{
    stp_reply_t *r = &p->reply;
    const char *s = r->raw + p->line_start;
    size_t len = r->raw_len - p->line_start - 1; /* without LF */

    if (len > 0 && s[len - 1] == '\r') {
        len--;
    } else {
        r->bare_lf = 1;
    }
    if (len < 3 || s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
        s[2] > '9') {
        p->error = "reply line without a 3-digit code";
        return -1;
    }
    int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (r->nlines > 0 && code != r->code) {
        p->error = "reply code changes between lines";
        return -1;
    }
    if (r->nlines >= STP_REPLY_MAX_LINES) {
        p->error = "reply has too many lines";
        return -1;
    }
    int last;
    if (len == 3 || s[3] == ' ') {
        last = 1;
    } else if (s[3] == '-') {
        last = 0;
    } else {
        p->error = "bad separator after reply code";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0' || s[i] == '\r') {
            p->error = "control character in reply";
            return -1;
        }
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

    if (p->done) {
        restart(p);
    }
    for (size_t i = 0; i < n; i++) {
        if (r->raw_len >= STP_REPLY_MAX_BYTES) {
            p->error = "reply too long";
            *consumed = i;
            return STP_REPLY_ERROR;
        }
        if (r->raw_len - p->line_start >= STP_REPLY_MAX_LINE && data[i] != '\n') {
            p->error = "reply line too long";
            *consumed = i;
            return STP_REPLY_ERROR;
        }
        r->raw[r->raw_len++] = data[i];
        if (data[i] != '\n') {
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

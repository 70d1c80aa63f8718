/*
 * smtp_line: byte-at-a-time line splitter with a hard limit (see header).
 */
#include "proxy/smtp_line.h"

#include <string.h>

void stp_line_init(stp_line_t *l, char *buf, size_t max)
{
    memset(l, 0, sizeof(*l));
    l->buf = buf;
    l->max = max;
}

void stp_line_reset(stp_line_t *l)
{
    l->len = 0;
    l->cr = 0;
    l->overflow = 0;
    l->done = 0;
    l->bare_lf = 0;
}

int stp_line_feed(stp_line_t *l, const char *p, size_t n, size_t *consumed)
{
    size_t i;

    if (l->done) {
        stp_line_reset(l);
    }
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            *consumed = i + 1;
            l->done = 1;
            l->bare_lf = !l->cr;
            l->cr = 0;
            if (l->overflow) {
                l->len = 0;
                return STP_LINE_TOOLONG;
            }
            return STP_LINE_DONE;
        }
        if (l->overflow) {
            l->cr = c == '\r';
            continue;
        }
        /* A CR is held back until we know whether LF follows. */
        if (l->cr) {
            if (l->len >= l->max) {
                l->overflow = 1;
            } else {
                l->buf[l->len++] = '\r';
            }
            l->cr = 0;
        }
        if (c == '\r') {
            l->cr = 1;
            continue;
        }
        if (l->overflow || l->len >= l->max) {
            l->overflow = 1;
            continue;
        }
        l->buf[l->len++] = c;
    }
    *consumed = n;
    return STP_LINE_AGAIN;
}

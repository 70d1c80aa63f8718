/*
 * smtp_line: splits the client's byte stream into command lines, one byte at
 * a time, into a fixed caller-owned buffer (see smtp_line.h for the contract).
 *
 * The only subtle byte is CR. Whether a CR is the first half of the line's
 * CRLF or data inside the line is known only when the next byte arrives, and
 * that byte may come in the next read. So a CR is never stored at once: it is
 * remembered in `cr` and either dropped (LF follows) or stored as data (any
 * other byte follows). This is what makes a read that ends between CR and LF
 * give the same line as one that does not.
 *
 * The limit counts stored bytes only, so a line of exactly `max` bytes plus
 * CRLF fits, while `max` bytes plus a data CR is over the limit. Once over,
 * the rest of the line is skipped without storing anything (`overflow`) and
 * the line is reported once, as TOOLONG, when its LF arrives; a peer can
 * therefore never make this module grow or hold more than `max` bytes.
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
    l->bare_lf = 0;
    l->cr = 0;
    l->overflow = 0;
    l->done = 0;
}

/* Stores one data byte of the current line, or switches to discarding when
 * the line would pass the limit. */
static void store(stp_line_t *l, char c)
{
    if (l->overflow) {
        return;
    }
    if (l->len >= l->max) {
        l->overflow = 1;
        return;
    }
    l->buf[l->len++] = c;
}

int stp_line_feed(stp_line_t *l, const char *p, size_t n, size_t *consumed)
{
    /* The line returned by the previous call stayed readable until now. */
    if (l->done) {
        stp_line_reset(l);
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];

        if (c == '\n') {
            int toolong = l->overflow;
            l->bare_lf = !l->cr;
            l->cr = 0;
            l->done = 1;
            *consumed = i + 1;
            if (toolong) {
                /* Nothing of a discarded line is kept, so that the caller
                 * can never act on a truncated command. */
                l->len = 0;
                l->overflow = 0;
                return STP_LINE_TOOLONG;
            }
            return STP_LINE_DONE;
        }
        if (l->cr) {
            /* The held CR was not followed by LF: it is data. */
            l->cr = 0;
            store(l, '\r');
        }
        if (c == '\r') {
            l->cr = 1;
        } else {
            store(l, c);
        }
    }
    *consumed = n;
    return STP_LINE_AGAIN;
}

/*
 * smtp_line: a resumable reader that splits a byte stream into lines with a
 * hard length limit. Used for client commands (and SASL responses) on every
 * listener. It does no I/O and never grows: a line longer than the limit is
 * discarded up to and including its LF and reported once as STP_LINE_TOOLONG,
 * so the session can answer 500 and keep serving the connection.
 *
 * A line ends at LF. A CR immediately before the LF is stripped; the caller
 * learns whether the line ended with a bare LF (no CR) through `bare_lf`.
 * Any other CR inside the line is kept as data (the command parser rejects
 * it). Input split at any byte gives the same sequence of results.
 */
#ifndef STP_SMTP_LINE_H
#define STP_SMTP_LINE_H

#include <stddef.h>

enum {
    STP_LINE_AGAIN = 0,   /* all input consumed, no complete line yet */
    STP_LINE_DONE = 1,    /* a complete line is in buf[0..len) */
    STP_LINE_TOOLONG = 2, /* a line over the limit was discarded through its LF */
};

typedef struct {
    char *buf;     /* caller-provided storage, at least `max` bytes */
    size_t max;    /* longest line accepted, excluding CRLF */
    size_t len;    /* bytes of the current line (without CR/LF) */
    int bare_lf;   /* after DONE: 1 if the line ended with LF not preceded by CR */
    /* private */
    int cr;        /* last byte stored was a CR (held back, not yet in buf) */
    int overflow;  /* discarding the rest of an over-long line */
    int done;      /* previous call returned DONE/TOOLONG: restart on next feed */
} stp_line_t;

/* Initialises `l` to use `buf` of `max` bytes (borrowed; must outlive `l`). */
void stp_line_init(stp_line_t *l, char *buf, size_t max);

/*
 * Feeds up to `n` bytes. Sets *consumed to the number of bytes used; on
 * DONE/TOOLONG the bytes after *consumed belong to the next line and must be
 * fed again. After DONE, buf[0..len) holds the line until the next feed.
 */
int stp_line_feed(stp_line_t *l, const char *p, size_t n, size_t *consumed);

/* Forgets any partial line (used at STARTTLS: nothing pre-TLS survives). */
void stp_line_reset(stp_line_t *l);

#endif

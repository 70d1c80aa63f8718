/*
 * smtp_reply: a resumable parser for server replies (RFC 5321 4.2), single
 * and multi-line ("250-..." continuation lines, "250 ..." last line). It does
 * no I/O and has hard limits: a reply with too many lines or too many bytes,
 * a line without a 3-digit code, a code that changes between lines, or a
 * separator other than '-' / ' ' / end-of-line is STP_REPLY_ERROR; the
 * session then treats the server as broken (it never guesses).
 *
 * Lines end with CRLF; a bare LF is accepted as a line end (many servers
 * emit it) and is remembered in `bare_lf`. Input split at any byte gives the
 * same replies.
 */
#ifndef STP_SMTP_REPLY_H
#define STP_SMTP_REPLY_H

#include <stddef.h>

#define STP_REPLY_MAX_LINES 64
#define STP_REPLY_MAX_BYTES 8192 /* whole reply, CRLFs included */
#define STP_REPLY_MAX_LINE 1024  /* one line, CRLF included */

enum {
    STP_REPLY_AGAIN = 0, /* all input consumed, reply not complete */
    STP_REPLY_DONE = 1,  /* a complete reply is in the parser's `reply` */
    STP_REPLY_ERROR = -1 /* malformed or over a limit; see `error` */
};

typedef struct {
    int code;            /* 100..599 */
    size_t nlines;
    /* Text of line i (after "NNN-" / "NNN "; may be empty), without CRLF. */
    size_t text_off[STP_REPLY_MAX_LINES];
    size_t text_len[STP_REPLY_MAX_LINES];
    char raw[STP_REPLY_MAX_BYTES]; /* the reply exactly as received */
    size_t raw_len;
    int bare_lf;         /* some line ended with a bare LF */
} stp_reply_t;

typedef struct {
    stp_reply_t reply;
    const char *error;   /* static string after STP_REPLY_ERROR */
    /* private */
    size_t line_start;   /* offset in raw of the current line */
    int done;
} stp_reply_parser_t;

/* Makes p ready for a first reply. Cheap: only the state is reset (a reply's
 * arrays are written before they are read), so a parser can be set up per
 * reply. */
void stp_reply_parser_init(stp_reply_parser_t *p);

/* 1 when no reply is partly received (none begun, or the last one handed
 * out with DONE): the parser then holds nothing the next reply needs. */
int stp_reply_parser_idle(const stp_reply_parser_t *p);

/*
 * Feeds up to `n` bytes; *consumed tells how many were used. After DONE the
 * reply stays valid until the next feed, which starts a new reply; bytes after
 * *consumed belong to the next reply. After ERROR the parser must be re-inited.
 */
int stp_reply_feed(stp_reply_parser_t *p, const char *data, size_t n, size_t *consumed);

/* Text of line i of a reply (borrowed pointer into r->raw). */
static inline const char *stp_reply_text(const stp_reply_t *r, size_t i, size_t *len)
{
    *len = r->text_len[i];
    return r->raw + r->text_off[i];
}

#endif

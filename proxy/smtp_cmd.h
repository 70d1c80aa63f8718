/*
 * smtp_cmd: classifies one client command line (as produced by smtp_line)
 * into a verb and its argument. Pure function, no state, no I/O.
 */
#ifndef STP_SMTP_CMD_H
#define STP_SMTP_CMD_H

#include <stddef.h>

typedef enum {
    STP_CMD_UNKNOWN = 0,
    STP_CMD_HELO,
    STP_CMD_EHLO,
    STP_CMD_MAIL,   /* MAIL FROM: */
    STP_CMD_RCPT,   /* RCPT TO: */
    STP_CMD_DATA,
    STP_CMD_BDAT,
    STP_CMD_RSET,
    STP_CMD_NOOP,
    STP_CMD_QUIT,
    STP_CMD_VRFY,
    STP_CMD_EXPN,
    STP_CMD_HELP,
    STP_CMD_STARTTLS,
    STP_CMD_AUTH,
    STP_CMD_XCLIENT,
    STP_CMD_XFORWARD,
    STP_CMD_ETRN,
    STP_CMD_TURN,   /* TURN / ATRN: never relayed */
    STP_CMD__COUNT
} stp_cmd_verb_t;

typedef struct {
    stp_cmd_verb_t verb;
    const char *arg;  /* points into the line: text after the verb (and, for
                         MAIL/RCPT, after "FROM:"/"TO:"), leading spaces skipped */
    size_t arg_len;   /* trailing spaces excluded */
    int malformed;    /* 1: verb known but syntax wrong (e.g. "MAIL TO:", NUL or
                         CR inside the line, non-ASCII in the verb) */
} stp_cmd_t;

/*
 * Parses line[0..len) (without CRLF). Verbs are case-insensitive. A verb must
 * be followed by end of line or a space ("MAILFROM:" is UNKNOWN). Any NUL or
 * CR byte inside the line sets `malformed`.
 */
void stp_cmd_parse(const char *line, size_t len, stp_cmd_t *out);

/* Upper-case name of a verb for logs ("MAIL"), "UNKNOWN" for STP_CMD_UNKNOWN. */
const char *stp_cmd_name(stp_cmd_verb_t verb);

#endif

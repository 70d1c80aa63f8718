/*
 * data_scan: watches message content after DATA's 354 for the one true end
 * of data, CRLF "." CRLF (RFC 5321 4.1.1.4), across buffer boundaries, and
 * for bare CR or bare LF, the raw material of SMTP smuggling. Pure, no I/O,
 * resumable: input split at any byte gives the same result.
 *
 * The scan starts at the beginning of a line (the CRLF that ended "DATA" is
 * the first CRLF), so content ".\r\n" at once is an empty message.
 *
 * Two modes:
 *  - STP_DATA_REJECT: bytes are passed through unchanged. The first bare CR,
 *    bare LF or NUL is reported (STP_DATA_BARE); the caller stops forwarding,
 *    keeps feeding to find the real end, and then rejects the message.
 *  - STP_DATA_NORMALIZE: a bare LF or bare CR becomes CRLF in the output, a
 *    NUL is deleted, and a line that starts with "." right after such a
 *    repaired line end (or a deleted NUL) gets its dot doubled, so the next
 *    hop can never see an end of data (or an unstuffed dot) that the proxy
 *    did not see. Output may be larger than input: at most 2x + 2 bytes.
 * In both modes the end of data is recognised only on the client's original
 * bytes as CR LF "." CR LF.
 */
#ifndef STP_DATA_SCAN_H
#define STP_DATA_SCAN_H

#include <stddef.h>
#include <stdint.h>

typedef enum { STP_DATA_REJECT = 0, STP_DATA_NORMALIZE = 1 } stp_data_mode_t;

enum {
    STP_DATA_AGAIN = 0, /* all input consumed; end not seen yet */
    STP_DATA_DONE = 1,  /* end of data seen; the ".\r\n" is included in what was consumed */
    STP_DATA_BARE = 2,  /* REJECT mode: bare CR/LF or NUL; reported once per message */
};

typedef struct {
    stp_data_mode_t mode;
    uint64_t bytes;      /* content bytes seen so far (client's, before any repair) */
    int saw_bare;        /* a bare CR/LF (REJECT: or NUL) was seen in this message */
    /* private */
    int state;
    int stuff_next;
    int ended;
    uint64_t lead_dots;
} stp_data_scan_t;

void stp_data_scan_init(stp_data_scan_t *s, stp_data_mode_t mode);

/*
 * Scans in[0..n). *consumed: how many input bytes were scanned.
 * REJECT mode: on BARE, keep feeding the rest (from *consumed) to find the
 *   end; later results never report BARE again and produce no output.
 * out (both modes) must have room for 2*n + 4 bytes; *produced is the
 *   number of bytes written to it, to forward instead of the input. out
 *   may be NULL: nothing is written, and *produced counts all the same. Output
 *   is held back lazily (a CR, a line-leading dot) until its meaning is
 *   known, so no prefix of it ends in half a terminator, and in REJECT mode
 *   it stops at the first bare CR/LF.
 * Returns STP_DATA_AGAIN, STP_DATA_DONE or STP_DATA_BARE.
 *
 * The terminating ".\r\n" is part of the consumed (and, in NORMALIZE, the
 * produced) bytes, so forwarding exactly those ends the message at the next hop.
 * Bytes after *consumed on DONE are the client's next command.
 */
int stp_data_scan(stp_data_scan_t *s, const char *in, size_t n, char *out, size_t *consumed,
                  size_t *produced);

/*
 * 1 when the next call's output will be a prefix of its input, in[0 ..
 * *produced): REJECT mode, no bare CR/LF reported, nothing held. The
 * caller may then scan with out = NULL and forward its own bytes, without
 * a copy.
 */
int stp_data_scan_verbatim(const stp_data_scan_t *s);

/* The message's size as RFC 1870 counts it (what SIZE= and the EHLO's SIZE
 * limit mean): the content without its dot-stuffing and without the
 * terminating ".\r\n"; so far, or the whole once the end was seen. */
uint64_t stp_data_size(const stp_data_scan_t *s);

#endif

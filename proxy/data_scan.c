/*
 * data_scan: end-of-data detection and bare CR/LF handling (see header).
 *
 * The state tracks where we are relative to line starts on the client's
 * original bytes:
 *   BOL      at the beginning of a line (after a CRLF, or at the start)
 *   MID      inside a line
 *   CR       after a CR that ends... or not (waiting for LF)
 *   DOT      after "." at the beginning of a line
 *   DOTCR    after ".\r" at the beginning of a line
 * End of data: BOL '.' CR LF, where BOL was reached through a real CRLF.
 * In NORMALIZE mode, a bare LF or CR is written as CRLF, and the next line,
 * if it starts with '.', gets that dot doubled (`stuff_next`).
 */
#include "proxy/data_scan.h"

#include <string.h>

enum { BOL = 0, MID, CR, DOT, DOTCR, BOL_REPAIRED };

void stp_data_scan_init(stp_data_scan_t *s, stp_data_mode_t mode)
{
    memset(s, 0, sizeof(*s));
    s->mode = mode;
    s->state = BOL;
}

int stp_data_scan(stp_data_scan_t *s, const char *in, size_t n, char *out, size_t *consumed,
                  size_t *produced)
{
    int norm = s->mode == STP_DATA_NORMALIZE;
    size_t o = 0;

/* Reports the first bare CR/LF; the offending byte is scanned again by the
 * next call (it then counts as ordinary content). */
#define BARE(at)                   \
    do {                           \
        *consumed = (at);          \
        if (produced) {            \
            *produced = o;         \
        }                          \
        s->bytes--;                \
        return STP_DATA_BARE;      \
    } while (0)

#define EMIT(c)                \
    do {                       \
        if (norm) {            \
            out[o++] = (c);    \
        }                      \
    } while (0)

    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        s->bytes++;
        switch (s->state) {
        case BOL:
        case BOL_REPAIRED:
            if (c == '.') {
                if (s->state == BOL_REPAIRED) {
                    /* A dot behind a repaired line end: the client did not
                     * mean an end of data; keep it content for the next hop. */
                    EMIT('.');
                    EMIT('.');
                    s->state = MID;
                } else {
                    EMIT('.');
                    s->state = DOT;
                }
                break;
            }
            s->state = MID;
            /* fall through */
        case MID:
            if (c == '\r') {
                s->state = CR;
            } else if (c == '\n') {
                /* bare LF */
                if (!norm) {
                    if (!s->saw_bare) {
                        s->saw_bare = 1;
                        s->state = MID;
                        BARE(i);
                    }
                    s->state = MID;
                } else {
                    EMIT('\r');
                    EMIT('\n');
                    s->state = BOL_REPAIRED;
                }
            } else {
                EMIT(c);
            }
            break;
        case CR:
            if (c == '\n') {
                EMIT('\r');
                EMIT('\n');
                s->state = BOL;
                break;
            }
            /* bare CR */
            if (!norm) {
                if (!s->saw_bare) {
                    s->saw_bare = 1;
                    s->state = MID;
                    BARE(i);
                }
                s->state = MID;
                i--; /* re-examine c in MID */
                s->bytes--;
                break;
            }
            EMIT('\r');
            EMIT('\n');
            s->state = BOL_REPAIRED;
            i--; /* c starts the next line */
            s->bytes--;
            break;
        case DOT:
            if (c == '\r') {
                s->state = DOTCR;
            } else if (c == '\n') {
                /* ".\n": not an end; a bare LF */
                if (!norm) {
                    if (!s->saw_bare) {
                        s->saw_bare = 1;
                        s->state = MID;
                        BARE(i);
                    }
                    s->state = MID;
                } else {
                    /* the dot we emitted alone would now end a line: double it */
                    EMIT('.');
                    EMIT('\r');
                    EMIT('\n');
                    s->state = BOL_REPAIRED;
                }
            } else {
                EMIT(c);
                s->state = MID;
            }
            break;
        case DOTCR:
            if (c == '\n') {
                EMIT('\r');
                EMIT('\n');
                *consumed = i + 1;
                if (produced) {
                    *produced = o;
                }
                s->state = BOL;
                return STP_DATA_DONE;
            }
            /* ".\r" + other: bare CR after a dot */
            if (!norm) {
                if (!s->saw_bare) {
                    s->saw_bare = 1;
                    s->state = MID;
                    BARE(i);
                }
                s->state = MID;
                i--;
                s->bytes--;
                break;
            }
            EMIT('.');
            EMIT('\r');
            EMIT('\n');
            s->state = BOL_REPAIRED;
            i--;
            s->bytes--;
            break;
        }
    }
    *consumed = n;
    if (produced) {
        *produced = o;
    }
    return STP_DATA_AGAIN;
#undef EMIT
#undef BARE
}

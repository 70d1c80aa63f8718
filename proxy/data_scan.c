/*
 * data_scan: end-of-data detection and bare CR/LF handling (see header).
 *
 * The scanner works on the client's original bytes with these states:
 *   BOL           at the beginning of a line reached through a real CRLF
 *                 (or the start of the content)
 *   BOL_REPAIRED  at the beginning of a line reached through a repaired bare
 *                 CR/LF (NORMALIZE mode only)
 *   MID           inside a line
 *   CR            after a CR whose meaning is not known yet
 *   DOT           after "." at BOL
 *   DOTCR         after ".\r" at BOL
 * End of data is BOL "." CR LF.
 *
 * Output is written lazily: a CR, a line-leading dot and ".\r" are held back
 * until the next byte says what they are. So a prefix of the output never
 * ends in the first half of a terminator that a lenient next hop might
 * complete on its own, and in REJECT mode output simply stops at the first
 * bare CR/LF (the caller then never sends anything more for this message).
 * Worst case the output is 6 bytes per input byte plus 4 ("..\r\n" followed
 * by a doubled dot), so callers size `out` as 6*n + 4.
 */
#include "proxy/data_scan.h"

#include <string.h>

enum { BOL = 0, BOL_REPAIRED, MID, CR, DOT, DOTCR };

void stp_data_scan_init(stp_data_scan_t *s, stp_data_mode_t mode)
{
    memset(s, 0, sizeof(*s));
    s->mode = mode;
    s->state = BOL;
}

int stp_data_scan(stp_data_scan_t *s, const char *in, size_t n, char *out, size_t *consumed,
                  size_t *produced)
{
    const int norm = s->mode == STP_DATA_NORMALIZE;
    size_t o = 0;
    size_t i = 0;

/* Output stops for good at the first bare CR/LF in REJECT mode. */
#define EMIT(c)                              \
    do {                                     \
        if (out != NULL && (norm || !s->saw_bare)) { \
            out[o++] = (c);                  \
        }                                    \
    } while (0)

/* REJECT mode: the first bare CR/LF is reported once; byte `i` is scanned
 * again by the next call (as content: the message is refused anyway). */
#define BARE()                         \
    do {                               \
        if (!s->saw_bare) {            \
            s->saw_bare = 1;           \
            *consumed = i;             \
            if (produced) {            \
                *produced = o;         \
            }                          \
            return STP_DATA_BARE;      \
        }                              \
    } while (0)

    while (i < n) {
        char c = in[i];
        switch (s->state) {
        case BOL:
        case BOL_REPAIRED:
            if (c == '.') {
                if (s->state == BOL_REPAIRED) {
                    /* The client did not mean an end of data here; keep
                     * the dot content for the next hop. */
                    EMIT('.');
                    EMIT('.');
                    s->state = MID;
                } else {
                    s->state = DOT;
                }
                break;
            }
            s->state = MID;
            continue; /* same byte, as MID */
        case MID:
            if (c == '\r') {
                s->state = CR;
            } else if (c == '\n') {
                if (norm) {
                    s->saw_bare = 1;
                    EMIT('\r');
                    EMIT('\n');
                    s->state = BOL_REPAIRED;
                } else {
                    s->state = MID;
                    BARE();
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
            if (norm) {
                s->saw_bare = 1;
                EMIT('\r');
                EMIT('\n');
                s->state = BOL_REPAIRED;
                continue; /* c starts the next line */
            }
            s->state = MID;
            BARE();
            continue; /* after the report: c is content */
        case DOT:
            if (c == '\r') {
                s->state = DOTCR;
            } else if (c == '\n') {
                if (norm) {
                s->saw_bare = 1;
                    /* ".\n" would become a lone-dot line: double the dot */
                    EMIT('.');
                    EMIT('.');
                    EMIT('\r');
                    EMIT('\n');
                    s->state = BOL_REPAIRED;
                } else {
                    s->state = MID;
                    BARE();
                }
            } else {
                EMIT('.');
                s->state = MID;
                continue; /* c is ordinary content of this line */
            }
            break;
        case DOTCR:
            if (c == '\n') {
                s->bytes++;
                EMIT('.');
                EMIT('\r');
                EMIT('\n');
                s->state = BOL;
                *consumed = i + 1;
                if (produced) {
                    *produced = o;
                }
                return STP_DATA_DONE;
            }
            if (norm) {
                s->saw_bare = 1;
                EMIT('.');
                EMIT('.');
                EMIT('\r');
                EMIT('\n');
                s->state = BOL_REPAIRED;
                continue;
            }
            s->state = MID;
            BARE();
            continue;
        }
        s->bytes++;
        i++;
    }
    *consumed = n;
    if (produced) {
        *produced = o;
    }
    return STP_DATA_AGAIN;
#undef EMIT
#undef BARE
}

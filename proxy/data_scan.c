/*
 * data_scan: finds the end of message content (CR LF "." CR LF) and handles
 * bare CR / bare LF, the raw material of SMTP smuggling (see data_scan.h).
 *
 * SMTP smuggling works when two hops disagree on where a message ends: the
 * proxy sees one message, a lenient next hop sees "\n.\n" (or "\r.\r\n",
 * ...) as its end and runs what follows as a second, forged transaction. So
 * the proxy recognises exactly one ending, on the client's original bytes,
 * and makes sure the next hop can recognise no other:
 *  - REJECT forwards the bytes unchanged up to the first bare CR/LF and
 *    nothing after it; the session refuses the message at its real end and
 *    drops the backend connection before any "." line.
 *  - NORMALIZE turns every bare CR/LF into CRLF and doubles a dot that
 *    starts a line after such a repaired line end. The proxy did not see a
 *    line start there, so a "." the next hop would read as an end (or as a
 *    stuffed dot) must become content.
 *
 * States, on the client's bytes:
 *   BOL           at a line start reached through a real CRLF (or the start
 *                 of the content: the CRLF after "DATA" counts as the first)
 *   BOL_REPAIRED  at a line start reached through a repaired bare CR/LF
 *                 (NORMALIZE only); the proxy's own view is "not a line
 *                 start", so "." here is never the end
 *   MID           inside a line
 *   CR            after a CR whose meaning depends on the next byte
 *   DOT           after "." at BOL
 *   DOTCR         after ".\r" at BOL
 * The end of data is BOL "." CR LF, nothing else.
 *
 * Output is written lazily: a CR, a line-leading "." and ".\r" are held in
 * the state (not in a buffer) until the next byte tells what they are, which
 * may be in the next call. So a prefix of the output never ends in the first
 * part of a terminator that a lenient next hop might complete by itself, and
 * in REJECT mode nothing of the line with the bare CR/LF is sent at all.
 *
 * Output bound: every client byte turns into at most two output bytes
 * (a dot doubled, a bare CR/LF repaired as CRLF), written when the byte is
 * scanned or, if held, when a later byte decides; one call can also flush
 * the at most two bytes held from the call before. So a call writes at most
 * 2*n + 4 bytes, the header's bound (the unit tests and the fuzz target
 * check it).
 *
 * Decisions where the header leaves room:
 *  - NUL is treated like a bare CR/LF: REJECT reports it (STP_DATA_BARE),
 *    NORMALIZE deletes it. Legacy servers that silently delete NUL bytes
 *    read "\r\n\0.\r\n" or "\r\n.\0\r\n" as an end of data the proxy
 *    did not see (SMTP smuggling; found by the conformance suite against a
 *    NUL-deleting backend). Deleting it in NORMALIZE is not transparent to
 *    the line structure: a NUL at a line start leaves that start
 *    BOL_REPAIRED (a following dot is doubled, as the proxy's own view of
 *    the line is "\0.", not "."), a NUL right after a line-leading dot
 *    makes that dot content (doubled), and a held CR becomes a repaired
 *    line end. So neither kind of next hop, NUL-keeping or NUL-deleting,
 *    can see an end or an unstuffed dot the proxy did not see.
 *  - `bytes` counts every consumed byte, the terminating ".\r\n" included:
 *    a held "." may turn out to be the terminator only later, and a count
 *    that never goes down is what a size limit checked after each call
 *    needs.
 *  - In NORMALIZE mode `saw_bare` is set when a line end was repaired, but
 *    STP_DATA_BARE is never returned.
 */
#include "proxy/data_scan.h"

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { BOL = 0, BOL_REPAIRED, MID, CR, DOT, DOTCR };

/* Length of the prefix of p[0..n) free of CR, LF and NUL (at least 1 when
 * p[0] is none of them). With SSE2 (every x86-64) sixteen bytes are tested
 * for all three at once; elsewhere memchr, which is vectorised too, makes
 * three short scans of a line. */
static size_t span_plain(const char *p, size_t n)
{
#if defined(__SSE2__)
    size_t i = 0;
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'), nul = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
                                   _mm_cmpeq_epi8(v, nul));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask != 0) {
            return i + (size_t)__builtin_ctz(mask);
        }
    }
    while (i < n && p[i] != '\r' && p[i] != '\n' && p[i] != '\0') {
        i++;
    }
    return i;
#else
    const char *end = memchr(p, '\r', n);
    size_t len = end ? (size_t)(end - p) : n;
    const char *lf = memchr(p, '\n', len);
    if (lf != NULL) {
        len = (size_t)(lf - p);
    }
    const char *nul = memchr(p, '\0', len);
    if (nul != NULL) {
        len = (size_t)(nul - p);
    }
    return len;
#endif
}

/* Length of the prefix of p[0..n) that the state machine below would take
 * from MID back to MID writing exactly what it read: bytes other than CR,
 * LF and NUL, and CRLF line ends whose next line starts with such a byte
 * other than ".". p[0] is such a byte. The bulk of a message is one run,
 * scanned without a state change per line. A CR too near the end to tell
 * is left to the state machine, which holds it. */
static size_t span_lines(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        i += span_plain(p + i, n - i);
        if (i + 2 < n && p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] != '.' && p[i + 2] != '\r' &&
            p[i + 2] != '\n' && p[i + 2] != '\0') {
            i += 2;
            continue;
        }
        return i;
    }
}

/*
 * RFC 1870's size: the client's bytes without the dots that a line-leading
 * dot stands for (a stuffed dot, or the terminator's) and without the
 * terminator's CRLF; a held ".\r" counts as nothing yet. It never goes down
 * from one call to the next (the CR after a dot is counted once it turns
 * out to be content), as a limit checked after each call needs.
 */
uint64_t stp_data_size(const stp_data_scan_t *s)
{
    return s->bytes - s->lead_dots - (s->state == DOTCR ? 1 : 0) - (s->ended ? 2 : 0);
}

/* REJECT mode passes the client's bytes through unchanged, only later by
 * what it holds; with nothing held and nothing reported, a call's output
 * is a prefix of its input. */
int stp_data_scan_verbatim(const stp_data_scan_t *s)
{
    return s->mode == STP_DATA_REJECT && !s->saw_bare && (s->state == BOL || s->state == MID);
}

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

/* Writes one output byte. In REJECT mode output ends for good at the first
 * bare CR/LF: the caller forwards nothing of this message after it. */
#define EMIT(c)                                                                                    \
    do {                                                                                           \
        if (norm || !s->saw_bare) {                                                                \
            if (out != NULL) {                                                                     \
                out[o] = (c);                                                                      \
            }                                                                                      \
            o++;                                                                                   \
        }                                                                                          \
    } while (0)

/* Writes a repaired line end (NORMALIZE): the next line does not start at
 * a real CRLF, so its leading dot will be doubled. */
#define REPAIR()                                                                                   \
    do {                                                                                           \
        s->saw_bare = 1;                                                                           \
        EMIT('\r');                                                                                \
        EMIT('\n');                                                                                \
        s->state = BOL_REPAIRED;                                                                   \
    } while (0)

/* REJECT mode: reports the first bare CR/LF once. Byte `i` is not consumed:
 * the next call scans it again, as content of the current line (the message
 * is refused anyway, and only its real end still matters). */
#define BARE()                                                                                     \
    do {                                                                                           \
        if (!s->saw_bare) {                                                                        \
            s->saw_bare = 1;                                                                       \
            *consumed = i;                                                                         \
            if (produced != NULL) {                                                                \
                *produced = o;                                                                     \
            }                                                                                      \
            return STP_DATA_BARE;                                                                  \
        }                                                                                          \
    } while (0)

    while (i < n) {
        char c = in[i];

        if (c == '\0') {
            if (!norm) {
                /* After the report the NUL is content (nothing is forwarded
                 * any more; only the real end still matters). */
                BARE();
            } else {
                switch (s->state) {
                case BOL:
                case BOL_REPAIRED:
                    s->state = BOL_REPAIRED; /* deleted; a dot after it is content */
                    break;
                case MID:
                    break; /* deleted */
                case CR:
                    REPAIR(); /* the held CR was bare; the NUL is deleted */
                    break;
                case DOT:
                    EMIT('.');
                    EMIT('.');
                    s->state = MID;
                    break;
                case DOTCR:
                    EMIT('.');
                    EMIT('.');
                    REPAIR();
                    break;
                default:
                    abort();
                }
                s->bytes++;
                i++;
                continue;
            }
        }

        switch (s->state) {
        case BOL:
        case BOL_REPAIRED:
            if (c != '.') {
                s->state = MID;
                continue; /* the same byte, inside the line */
            }
            if (s->state == BOL) {
                s->state = DOT; /* held: end of data or a stuffed dot */
                s->lead_dots++; /* either way not part of the message's size */
                break;
            }
            /* The client did not start a line here; this dot is content and
             * must stay content at the next hop, which does see a line start. */
            EMIT('.');
            EMIT('.');
            s->state = MID;
            break;

        case MID:
            if (c != '\r' && c != '\n' && c != '\0') {
                /* The bulk of a message: copy whole lines at once. The run
                 * ends at a CR that does not end a line followed by an
                 * ordinary one, or at an LF or NUL (the other bytes with a
                 * meaning here). A NUL that is content (REJECT, after the
                 * report) takes the byte-wise path below. */
                size_t run = span_lines(in + i, n - i);
                if (norm || !s->saw_bare) {
                    if (out != NULL) {
                        memcpy(out + o, in + i, run);
                    }
                    o += run;
                }
                s->bytes += run;
                i += run;
                continue;
            }
            if (c == '\r') {
                s->state = CR; /* held */
            } else if (c != '\n') {
                EMIT(c);
            } else if (norm) {
                REPAIR();
            } else {
                BARE();
                /* after the report: the LF is content, the line goes on */
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
                REPAIR();
                continue; /* c starts the next line */
            }
            s->state = MID;
            BARE();
            continue; /* after the report: c is content */

        case DOT:
            if (c == '\r') {
                s->state = DOTCR; /* held */
                break;
            }
            if (c != '\n') {
                EMIT('.'); /* a line that merely starts with a dot */
                s->state = MID;
                continue;
            }
            if (norm) {
                /* ".\n" repaired as ".\r\n" would be an end the proxy did not
                 * see: the dot is doubled. */
                EMIT('.');
                EMIT('.');
                REPAIR();
                break;
            }
            s->state = MID;
            BARE();
            break;

        case DOTCR:
            if (c == '\n') {
                s->bytes++;
                EMIT('.');
                EMIT('\r');
                EMIT('\n');
                s->state = BOL;
                *consumed = i + 1;
                if (produced != NULL) {
                    *produced = o;
                }
                s->ended = 1;
                return STP_DATA_DONE;
            }
            if (norm) {
                /* ".\r" then not LF: a bare CR after a lone dot. */
                EMIT('.');
                EMIT('.');
                REPAIR();
                continue; /* c starts the next line */
            }
            s->state = MID;
            BARE();
            continue;

        default:
            abort(); /* a state this module never sets: memory corruption */
        }
        s->bytes++;
        i++;
    }
    *consumed = n;
    if (produced != NULL) {
        *produced = o;
    }
    return STP_DATA_AGAIN;
#undef EMIT
#undef REPAIR
#undef BARE
}

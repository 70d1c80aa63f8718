/*
 * http_resp: a strict, resumable HTTP/1.x response parser for one job: the
 * MTA-STS policy fetch (RFC 8461 section 3.3). No I/O; feed it what the
 * socket gave, in pieces of any size, and it reports events.
 *
 * What it accepts, and nothing else:
 *   - a status line "HTTP/1.0" or "HTTP/1.1", SP, three digits, then an
 *     optional SP and reason phrase; status 200 only: any other status is an
 *     error that names it (3xx says the redirect is not followed, and its
 *     Location is kept for the message); 1xx interim responses are not
 *     expected (the request sends no Expect) and are errors too;
 *   - header fields "name: value" with CRLF line ends (a bare LF, a CR not
 *     followed by LF, a control character, a blank before the colon, or a
 *     folded line is an error); at most STP_HTTP_MAX_LINE bytes per line,
 *     STP_HTTP_MAX_HEADER_BYTES in all and STP_HTTP_MAX_FIELDS fields;
 *   - exactly one Content-Type, whose media type is text/plain (any case;
 *     well-formed parameters such as charset are allowed);
 *   - framing by one Content-Length, or "Transfer-Encoding: chunked" (no
 *     other coding; never both; never in an HTTP/1.0 response), or else by
 *     the end of the connection (stp_http_resp_eof);
 *   - a body of at most the cap given to init (64 KiB for MTA-STS): a
 *     Content-Length or chunk size above it is refused before the body
 *     arrives, a close-delimited body when it goes over.
 * Bytes after the end of the response are never consumed: DONE is reported
 * with *used not covering them, and the caller closes the connection (the
 * request says "Connection: close"; whatever else the server sends is not
 * part of the policy).
 */
#ifndef STP_HTTP_RESP_H
#define STP_HTTP_RESP_H

#include <stddef.h>
#include <stdint.h>

#define STP_HTTP_MAX_LINE 4096          /* status, header, chunk-size or trailer line */
#define STP_HTTP_MAX_HEADER_BYTES 16384 /* status line, headers and trailers together */
#define STP_HTTP_MAX_FIELDS 100
#define STP_HTTP_MTA_STS_BODY_MAX (64 * 1024)

/* Events and return codes of stp_http_resp_feed / stp_http_resp_eof. */
enum {
    STP_HTTP_AGAIN = 0,   /* all input consumed; nothing to report */
    STP_HTTP_HEADERS = 1, /* status and headers are complete and acceptable */
    STP_HTTP_BODY = 2,    /* *body, *body_len: a piece of the (de-chunked) body */
    STP_HTTP_DONE = 3,    /* the response is complete; later bytes are not consumed */
    STP_HTTP_ERROR = -1,  /* stp_http_resp_error() says why; sticky */
};

typedef enum {
    STP_HTTP_FRAMING_CLOSE = 0, /* body until the connection ends */
    STP_HTTP_FRAMING_LENGTH,    /* Content-Length */
    STP_HTTP_FRAMING_CHUNKED,   /* Transfer-Encoding: chunked */
} stp_http_framing_t;

typedef struct {
    int state;
    char line[STP_HTTP_MAX_LINE];
    size_t len;
    int cr;              /* the last byte of a line was CR */
    size_t header_bytes; /* status line + fields + trailers, terminators included */
    unsigned nfields;

    int status; /* from the status line, 0 before */
    int minor;  /* HTTP/1.<minor> */
    stp_http_framing_t framing;
    uint64_t content_length;
    unsigned have_length : 1;
    unsigned have_te : 1;
    unsigned have_type : 1;
    unsigned type_ok : 1;
    char content_type[64]; /* as sent, cut, non-printable bytes as '?' (for messages) */
    char location[128];    /* of a 3xx, same treatment */

    uint64_t remaining; /* of the Content-Length body or of the current chunk */
    size_t body_bytes;  /* delivered so far */
    size_t body_max;

    const char *err; /* static text */
} stp_http_resp_t;

/* Starts a response; bodies over body_max bytes are refused. */
void stp_http_resp_init(stp_http_resp_t *p, size_t body_max);

/*
 * Consumes bytes of in[0..len) up to the next event and sets *used to how
 * many. STP_HTTP_BODY points *body into `in` (valid until the caller reuses
 * that memory). AGAIN always consumes everything. Calling it with len == 0
 * reports DONE once the response is complete (for example right after
 * HEADERS when Content-Length is 0), AGAIN otherwise.
 */
int stp_http_resp_feed(stp_http_resp_t *p, const char *in, size_t len, size_t *used,
                       const char **body, size_t *body_len);

/* The connection ended: STP_HTTP_DONE if that completes the response
 * (close-delimited body, or already complete), else STP_HTTP_ERROR. */
int stp_http_resp_eof(stp_http_resp_t *p);

/* One line: "HTTP status 301 (redirects are not followed; Location: ...)",
 * "Content-Type text/html is not text/plain", "body over 65536 bytes"... */
const char *stp_http_resp_error(const stp_http_resp_t *p, char *buf, size_t len);

#endif

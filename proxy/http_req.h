/*
 * http_req: a strict, resumable parser for the one HTTP/1.x request the
 * metrics endpoint reads per connection (GET or HEAD, no body). It does no
 * I/O and never grows: the request line and headers together must fit
 * STP_HTTP_REQ_MAX bytes. Lines end in CRLF (a bare LF is an error), header
 * names are tokens, folded headers and request bodies are refused. The
 * result is the method and the path (the target without its query).
 * Anything after the blank line is ignored: the server closes the
 * connection after one response.
 */
#ifndef STP_HTTP_REQ_H
#define STP_HTTP_REQ_H

#include <stddef.h>

#define STP_HTTP_REQ_MAX 4096
#define STP_HTTP_PATH_MAX 256

enum {
    STP_HTTP_AGAIN = 0,  /* all input consumed, the request is not complete */
    STP_HTTP_DONE = 1,   /* a complete request; method and path are set */
    STP_HTTP_ERROR = -1, /* answer `status` and close */
};

enum { STP_HTTP_GET = 1, STP_HTTP_HEAD = 2 };

typedef struct {
    int method;                   /* after DONE */
    char path[STP_HTTP_PATH_MAX]; /* after DONE: NUL-terminated, no query */
    int status;                   /* after ERROR: 400, 405, 414, 431 or 505 */
    /* private */
    size_t len;
    int state;
    char buf[STP_HTTP_REQ_MAX];
} stp_http_req_t;

void stp_http_req_init(stp_http_req_t *r);

/*
 * Feeds up to n bytes; *consumed is all of them on AGAIN, and up to the end
 * of the headers on DONE. After DONE or ERROR the result is final.
 */
int stp_http_req_feed(stp_http_req_t *r, const char *p, size_t n, size_t *consumed);

#endif

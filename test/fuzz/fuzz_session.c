/*
 * fuzz_session: libFuzzer target for a whole inbound session: the real
 * session state machine (session.c, conn.c, the parsers, the TLS engine)
 * driven by fuzzed client bytes and fuzzed backend replies.
 *
 * Why loopback and not memory buffers: session.c owns uv_tcp_t handles
 * (connect, read, write, shutdown, close callbacks) and has no seam below
 * them, so the target runs the real libuv loop in-process instead, with
 * everything on 127.0.0.1: the proxy's listener, a scripted backend and a
 * client, all handles of one uv_loop_t. Each input is one session, run
 * until every handle it opened is closed; nothing is left between inputs,
 * so LeakSanitizer checks every session.
 *
 * Input: byte 0 picks the listener (starttls offer / require /
 * bare_newlines = normalize with xclient = yes / implicit is left out: the
 * client speaks plaintext only), byte 1 how the client bytes are split into writes; then
 * the client bytes, optionally followed by "\xfe\xfe" and the backend's
 * script: replies separated by "\xff", the n-th used for the n-th line the
 * backend reads (after its own greeting, which the script may replace with
 * its first entry when byte 0 has bit 7 set). Once the script is used up the
 * backend answers like a well-behaved MTA (250, 354 for DATA, the message
 * up to CRLF.CRLF, 221 for QUIT).
 *
 * Checked: ASan/UBSan/LSan; the session ends once the client has sent
 * everything and half-closed (no hang: the loop is bounded); the backend
 * never receives XCLIENT (except the proxy's own, once, on the xclient
 * listener), XFORWARD, BDAT, STARTTLS, AUTH (there is no TLS here, and AUTH
 * before TLS is never forwarded) or a line over the limit;
 * the client never gets a 250 to its end of data unless the backend
 * answered an end of data with a 2xx.
 */
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "proxy/config.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { NLISTENERS = 3, MAX_SCRIPT = 64, MAX_BACKEND_LINE = 8192, MAX_ITER = 200000 };

static uv_loop_t loop;
static stp_runtime_t *rt;
static stp_listener_t listeners[NLISTENERS];
static stp_limits_t limits[NLISTENERS]; /* shared limits, as main.c gives each listener */
static uv_tcp_t backend_srv;
static int backend_port;
static int listen_ports[NLISTENERS];

/* ---- a throwaway certificate (nothing is written to the tree) ---- */

static void make_cert(const char *cert_path, const char *key_path)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pkey = EVP_PKEY_new();
    X509 *x = X509_new();
    if (ec == NULL || pkey == NULL || x == NULL || !EC_KEY_generate_key(ec) ||
        !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
        abort();
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"fuzz.test", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, pkey);
    if (!X509_sign(x, pkey, EVP_sha256())) {
        abort();
    }
    FILE *f = fopen(cert_path, "w");
    FILE *k = fopen(key_path, "w");
    if (f == NULL || k == NULL || !PEM_write_X509(f, x) ||
        !PEM_write_PrivateKey(k, pkey, NULL, NULL, 0, NULL, NULL)) {
        abort();
    }
    fclose(f);
    fclose(k);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

static int free_port(void)
{
    uv_tcp_t t;
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &t);
    if (uv_tcp_bind(&t, (const struct sockaddr *)&a, 0) != 0 ||
        uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len) != 0) {
        abort();
    }
    int port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return port;
}

/* ---- the scripted backend ---- */

typedef struct {
    uv_tcp_t tcp;
    char line[MAX_BACKEND_LINE + 2];
    size_t len;
    int in_data;
    unsigned matched; /* bytes of "\r\n.\r\n" matched in DATA */
    int closed;
} backend_conn_t;

static struct {
    const uint8_t *script[MAX_SCRIPT];
    size_t script_len[MAX_SCRIPT];
    size_t nscript, next;
    int replace_greeting;
    int forbidden;        /* a line the backend must never see arrived */
    int xclient_ok;       /* the session's listener has xclient = yes */
    int xclients;         /* the proxy's XCLIENT commands seen */
    int data_ok;          /* the backend answered an end of data with 2xx */
    int awaiting_dot;     /* the last reply was to an end of data */
    int open;             /* backend connections still open */
} be;

static struct {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t writes[8];
    uv_shutdown_t shutdown;
    const uint8_t *bytes;
    size_t len;
    char in[1 << 16];
    size_t in_len;
    int closed;
    int connected;
} cl;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char space[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(space, sizeof(space));
}

static void on_write_free(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void backend_send(backend_conn_t *b, const void *p, size_t n)
{
    if (b->closed || n == 0) {
        return;
    }
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = malloc(n);
    if (w == NULL || copy == NULL) {
        abort();
    }
    memcpy(copy, p, n);
    w->data = copy;
    uv_buf_t buf = uv_buf_init(copy, (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&b->tcp, &buf, 1, on_write_free) != 0) {
        free(copy);
        free(w);
    }
}

static void on_backend_closed(uv_handle_t *h)
{
    free(h->data);
    be.open--;
}

static void backend_close(backend_conn_t *b)
{
    if (!b->closed) {
        b->closed = 1;
        uv_close((uv_handle_t *)&b->tcp, on_backend_closed);
    }
}

/* Answers one line (or the end of data) from the script or as a good MTA. */
static void backend_answer(backend_conn_t *b, const char *line, size_t len, int end_of_data)
{
    static const char *const bad[] = {"XCLIENT", "XFORWARD", "BDAT", "STARTTLS", "AUTH"};
    static const char own[] = "XCLIENT ADDR=127.0.0.1 PORT=";
    if (!end_of_data && be.xclient_ok && len > sizeof(own) - 1 &&
        strncmp(line, own, sizeof(own) - 1) == 0) {
        if (be.xclients++) {
            be.forbidden = 1; /* never twice in a session */
        }
    } else if (!end_of_data) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            size_t k = strlen(bad[i]);
            if (len >= k && strncasecmp(line, bad[i], k) == 0 &&
                (len == k || line[k] == ' ' || line[k] == '\r')) {
                be.forbidden = 1;
            }
        }
    }
    be.awaiting_dot = end_of_data;
    if (be.next < be.nscript) {
        const uint8_t *r = be.script[be.next];
        size_t n = be.script_len[be.next++];
        if (end_of_data && n >= 1 && r[0] == '2') {
            be.data_ok = 1;
        }
        if (!end_of_data && len >= 4 && strncasecmp(line, "DATA", 4) == 0 && n >= 3 &&
            memcmp(r, "354", 3) == 0) {
            b->in_data = 1;
            b->matched = 2; /* the CRLF of "DATA" starts the first line */
        }
        backend_send(b, r, n);
        return;
    }
    if (end_of_data) {
        be.data_ok = 1;
        backend_send(b, "250 2.0.0 queued\r\n", 18);
    } else if (len >= 4 && strncasecmp(line, "DATA", 4) == 0) {
        b->in_data = 1;
        b->matched = 2;
        backend_send(b, "354 go ahead\r\n", 14);
    } else if (len >= 4 && strncasecmp(line, "EHLO", 4) == 0) {
        static const char caps[] = "250-backend.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
                                   "250-8BITMIME\r\n250-AUTH PLAIN\r\n250-CHUNKING\r\n"
                                   "250-XCLIENT NAME ADDR PORT HELO PROTO\r\n250 STARTTLS\r\n";
        backend_send(b, caps, sizeof(caps) - 1);
    } else if (len >= 7 && strncasecmp(line, "XCLIENT", 7) == 0) {
        backend_send(b, "220 backend.test ESMTP\r\n", 24);
    } else if (len >= 4 && strncasecmp(line, "QUIT", 4) == 0) {
        backend_send(b, "221 bye\r\n", 9);
        backend_close(b);
    } else {
        backend_send(b, "250 2.0.0 ok\r\n", 14);
    }
}

static void on_backend_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    backend_conn_t *b = s->data;
    if (n < 0) {
        backend_close(b);
        return;
    }
    for (ssize_t i = 0; i < n && !b->closed; i++) {
        char c = buf->base[i];
        if (b->in_data) {
            static const char end[] = "\r\n.\r\n";
            b->matched = c == end[b->matched] ? b->matched + 1 : (c == '\r' ? 1 : 0);
            if (b->matched == 5) {
                b->in_data = 0;
                b->matched = 0;
                backend_answer(b, NULL, 0, 1);
            }
            continue;
        }
        if (b->len > MAX_BACKEND_LINE) {
            be.forbidden = 1; /* the proxy forwarded an over-long line */
            b->len = 0;
        }
        b->line[b->len++] = c;
        if (c == '\n') {
            backend_answer(b, b->line, b->len, 0);
            b->len = 0;
        }
    }
}

static void on_backend_conn(uv_stream_t *srv, int status)
{
    if (status < 0) {
        return;
    }
    backend_conn_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        abort();
    }
    uv_tcp_init(&loop, &b->tcp);
    b->tcp.data = b;
    if (uv_accept(srv, (uv_stream_t *)&b->tcp) != 0) {
        b->closed = 1;
        be.open++;
        uv_close((uv_handle_t *)&b->tcp, on_backend_closed);
        return;
    }
    be.open++;
    uv_tcp_nodelay(&b->tcp, 1);
    if (be.replace_greeting && be.next < be.nscript) {
        backend_send(b, be.script[be.next], be.script_len[be.next]);
        be.next++;
    } else {
        backend_send(b, "220 backend.test ESMTP\r\n", 24);
    }
    uv_read_start((uv_stream_t *)&b->tcp, on_alloc, on_backend_read);
}

/* ---- the client ---- */

static void on_client_closed(uv_handle_t *h)
{
    (void)h;
    cl.closed = 1;
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_client_closed);
        return;
    }
    size_t room = sizeof(cl.in) - cl.in_len;
    size_t k = (size_t)n < room ? (size_t)n : room;
    memcpy(cl.in + cl.in_len, buf->base, k);
    cl.in_len += k;
}

static void on_client_write(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void on_client_connect(uv_connect_t *c, int status)
{
    (void)c;
    if (status < 0) {
        uv_close((uv_handle_t *)&cl.tcp, on_client_closed);
        return;
    }
    cl.connected = 1;
    uv_tcp_nodelay(&cl.tcp, 1);
    uv_read_start((uv_stream_t *)&cl.tcp, on_alloc, on_client_read);
}

static int initialize(void)
{
    char cert[64], key[64], ini[2048], err[4096];
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    snprintf(cert, sizeof(cert), "/tmp/stp-fuzz-session-%d.pem", (int)getpid());
    snprintf(key, sizeof(key), "/tmp/stp-fuzz-session-%d.key", (int)getpid());
    make_cert(cert, key);

    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &backend_srv);
    if (uv_tcp_bind(&backend_srv, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&backend_srv, 64, on_backend_conn) != 0 ||
        uv_tcp_getsockname(&backend_srv, (struct sockaddr *)&got, &len) != 0) {
        abort();
    }
    backend_port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    for (int i = 0; i < NLISTENERS; i++) {
        listen_ports[i] = free_port();
    }
    /* Short timers so that a stuck session ends quickly in loop time. */
#define TIMERS                                                                                     \
    "connect_timeout = 100ms\ngreeting_timeout = 100ms\ncommand_timeout = 100ms\n"              \
    "idle_timeout = 100ms\nhandshake_timeout = 100ms\ndata_timeout = 100ms\n"                  \
    "session_timeout = 500ms\n"
    snprintf(ini, sizeof(ini),
             "[proxy]\nhostname = fuzz.test\nlog_level = error\n"
             "[tls]\ncert = %s\nkey = %s\n"
             "[listener:offer]\nmode = inbound\nlisten = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n"
             TIMERS
             "[listener:require]\nmode = inbound\nlisten = 127.0.0.1:%d\n"
             "backend = 127.0.0.1:%d\nstarttls = require\n" TIMERS
             "[listener:normalize]\nmode = inbound\nlisten = 127.0.0.1:%d\n"
             "backend = 127.0.0.1:%d\nbare_newlines = normalize\nmax_message_size = 2000\n"
             "xclient = yes\n"
             TIMERS,
             cert, key, listen_ports[0], backend_port, listen_ports[1], backend_port,
             listen_ports[2], backend_port);
    stp_config_t *conf = stp_config_load_string(ini, "fuzz.ini", err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "%s", err);
        abort();
    }
    rt = stp_runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    unlink(cert);
    unlink(key);
    stp_log_init(rt->conf->log_format, rt->conf->log_level);
    for (int i = 0; i < NLISTENERS; i++) {
        const stp_listener_conf_t *lc = &rt->conf->listeners[i];
        int fd = stp_listener_bind(lc, 1);
        if (fd < 0 || stp_limits_init(&limits[i], lc->max_connections,
                                      lc->max_connections_per_ip) < 0 ||
            stp_listener_start(&listeners[i], &loop, rt, lc, fd, &limits[i], 0) < 0) {
            abort();
        }
    }
    return 0;
}

static const uint8_t *find_sep(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (d[i] == 0xfe && d[i + 1] == 0xfe) {
            return d + i;
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        ready = 1;
        initialize();
    }
    if (size < 2 || size > 16384) {
        return 0;
    }
    int which = (data[0] & 0x7f) % NLISTENERS;
    size_t split = data[1];
    const uint8_t *body = data + 2;
    size_t n = size - 2;
    const uint8_t *sep = find_sep(body, n);
    size_t client_len = sep ? (size_t)(sep - body) : n;

    memset(&be, 0, sizeof(be));
    be.replace_greeting = data[0] & 0x80;
    be.xclient_ok = which == 2;
    if (sep) {
        const uint8_t *p = sep + 2, *end = body + n;
        while (p <= end && be.nscript < MAX_SCRIPT) {
            const uint8_t *q = memchr(p, 0xff, (size_t)(end - p));
            if (q == NULL) {
                q = end;
            }
            be.script[be.nscript] = p;
            be.script_len[be.nscript++] = (size_t)(q - p);
            p = q + 1;
        }
    }

    memset(&cl, 0, sizeof(cl));
    cl.bytes = body;
    cl.len = client_len;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", listen_ports[which], &a);
    uv_tcp_init(&loop, &cl.tcp);
    if (uv_tcp_connect(&cl.connect, &cl.tcp, (const struct sockaddr *)&a, on_client_connect)) {
        abort();
    }
    /* Wait for the connection, then send in up to 8 writes and half-close. */
    int iter = 0;
    while (!cl.connected && !cl.closed && iter++ < MAX_ITER) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    if (cl.connected && !cl.closed) {
        size_t step = split ? split : client_len, off = 0;
        unsigned nw = 0;
        if (step == 0) {
            step = 1;
        }
        while (off < client_len) {
            size_t k = client_len - off < step || nw == 7 ? client_len - off : step;
            uv_buf_t b = uv_buf_init((char *)body + off, (unsigned)k);
            uv_write(&cl.writes[nw++], (uv_stream_t *)&cl.tcp, &b, 1, on_client_write);
            off += k;
        }
        uv_shutdown(&cl.shutdown, (uv_stream_t *)&cl.tcp, NULL);
    }
    /* The session must end on its own: the client's EOF, a reply, or a
     * (short) timer. Loop time is real time here, so this is bounded. */
    iter = 0;
    while ((!cl.closed || be.open > 0 || listeners[which].nsessions > 0) && iter++ < MAX_ITER) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    if (iter >= MAX_ITER) {
        fprintf(stderr, "session did not end: client closed %d, backend open %d, sessions %u\n",
                cl.closed, be.open, listeners[which].nsessions);
        abort();
    }
    if (be.forbidden) {
        fprintf(stderr, "the backend received a command it must never see\n");
        abort();
    }
    /* "250" to the client's end of data only if the backend accepted one
     * (checked with the well-behaved backend, whose only 354 is to DATA). */
    if (!be.data_ok && be.nscript == 0) {
        /* any 2xx reply after a 354 would be a message acceptance */
        const char *p = cl.in, *end = cl.in + cl.in_len;
        int after_354 = 0;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (l >= 4 && memcmp(p, "354", 3) == 0 && p[3] == ' ') {
                after_354 = 1;
            } else if (after_354 && l >= 4 && p[0] == '2' && p[3] == ' ') {
                fprintf(stderr, "the client got a 2xx to a message the backend never took\n");
                abort();
            } else if (l >= 4 && p[3] == ' ') {
                after_354 = 0;
            }
            p += l + 1;
        }
    }
    return 0;
}

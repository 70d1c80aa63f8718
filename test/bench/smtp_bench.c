/* smtp-bench: an SMTP load generator (libuv + BoringSSL over FIFO BIOs, tls/fifo_bio).
 *
 * Each connection is one explicit state machine: greeting, EHLO, STARTTLS and
 * the TLS handshake (or implicit TLS, or plaintext), EHLO again, then
 * MAIL/RCPT/DATA/body for each message, QUIT. Replies are read into a fixed
 * per-connection buffer (no per-line allocation). The report gives sessions/s,
 * messages/s, MB/s, session latency percentiles and errors, as text or JSON,
 * with the TLS version and cipher the handshakes negotiated.
 * HOST is a name (the first address it resolves to) or an IP address; the
 * envelope, EHLO name and SNI are options (-f, -t, -e, -S).
 * Every step (connect, each reply, the handshake) has -T seconds: a server
 * that stalls costs a session (an error at that step), never the run.
 * --hold keeps sessions open and idle after EHLO (or RCPT) until SIGINT or
 * SIGTERM, for measuring a server's memory per idle session.
 *
 * -L turns it into the other end: a bare SMTP sink on BoringSSL that offers
 * STARTTLS (or implicit TLS), accepts every envelope and message and relays
 * nothing. It is the floor a TLS-terminating proxy is measured against. */
#include <getopt.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "tls/fifo_bio.h"

enum mode { MODE_PLAIN, MODE_STARTTLS, MODE_IMPLICIT };
enum state {
    S_CONNECT,
    S_GREETING,
    S_EHLO1,
    S_STARTTLS,
    S_HANDSHAKE,
    S_EHLO2,
    S_MAIL,
    S_RCPT,
    S_DATA,
    S_BODY,
    S_QUIT,
    S_HOLD
};

struct opts {
    const char *host, *cert, *key, *from, *rcpt, *ehlo, *sni;
    int port, concurrency, sessions, messages, size, duration, resume, hold, hold_rcpt, json, sink,
        pipeline, timeout;
    enum mode mode;
};

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the current step's -T (not armed in the sink) */
    int handles;      /* of tcp and timer still open: freed when none is */
    SSL *ssl;
    BIO *rbio, *wbio;
    enum state st;
    int msgs_left, tls, closing;
    int in_data;  /* sink: inside DATA, scanning for CRLF.CRLF */
    unsigned eod; /* sink: how much of "\r\n.\r\n" was seen last */
    uint64_t start_ns;
    size_t rlen, olen;
    char rbuf[1024]; /* one line (longer ones are truncated: only the code matters) */
    char out[512];   /* sink: replies to one read, sent in one write */
} conn_t;

/* One read buffer for everything: libuv calls on_read right after on_alloc,
 * and the loop is single-threaded, so no connection keeps one while idle. */
static char inbuf[65536];

static struct opts o = {.host = "127.0.0.1",
                        .port = 25,
                        .concurrency = 50,
                        .sessions = 1000,
                        .messages = 1,
                        .size = 4096,
                        .timeout = 30,
                        .from = "bench@example.test",
                        .rcpt = "sink@example.test",
                        .ehlo = "bench.example.test",
                        .sni = "mx.example.test",
                        .mode = MODE_STARTTLS};
static uv_loop_t *loop;
static SSL_CTX *ctx;
static SSL_SESSION *saved_session;
static struct sockaddr_storage addr;
static char *message;
/* The commands with -f, -t and -e in them (each argument at most 255 bytes);
 * cmd_envelope is MAIL, RCPT and DATA for -P. */
static char cmd_ehlo[300], cmd_mail[300], cmd_rcpt[300], cmd_envelope[610];
static size_t message_len;
static int started, active, done_ok, errors, held;
static uint64_t msgs_done, bytes_done, t0, stop_at;
static double *lat;
static size_t nlat;
static uv_signal_t sig_int, sig_term;

static int resumed, handshakes;
/* What every handshake negotiated (static strings): NULL before the first,
 * "mixed" once two differed. */
static const char *tls_version, *tls_cipher;

static void conn_start(void);
static void hold_progress(void);
static void sink_plain(conn_t *c, const char *p, size_t n);
static void sink_flush(conn_t *c);
static uv_tcp_t listener;

/* TLS 1.3 tickets arrive after the handshake: keep the newest one. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    if (!o.resume)
        return 0;
    if (saved_session != NULL)
        SSL_SESSION_free(saved_session);
    saved_session = sess;
    return 1; /* we took the reference */
}

static void note_same(const char **seen, const char *now)
{
    if (*seen == NULL)
        *seen = now;
    else if (strcmp(*seen, now) != 0)
        *seen = "mixed";
}

static void note_tls(const SSL *ssl)
{
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    note_same(&tls_version, SSL_get_version(ssl));
    note_same(&tls_cipher, cipher != NULL ? SSL_CIPHER_standard_name(cipher) : "unknown");
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    if (c->ssl)
        SSL_free(c->ssl);
    free(c);
    active--;
    if (o.sink)
        return;
    conn_start();
    if (active == 0) {
        uv_close((uv_handle_t *)&sig_int, NULL);
        uv_close((uv_handle_t *)&sig_term, NULL);
    }
}

static const char *const state_names[] = {"connect",   "greeting", "ehlo", "starttls",
                                          "handshake", "ehlo-tls", "mail", "rcpt",
                                          "data",      "body",     "quit", "hold"};
static int errors_at[S_HOLD + 1], timeouts_at[S_HOLD + 1], timeouts;

static void conn_end(conn_t *c, int ok)
{
    if (c->closing)
        return;
    if (!ok)
        errors_at[c->st]++;
    c->closing = 1;
    if (o.sink) {
        /* a sink counts nothing: its clients report */
    } else if (ok) {
        done_ok++;
        if (nlat < (size_t)o.sessions)
            lat[nlat++] = (double)(uv_hrtime() - c->start_ns) / 1e6;
    } else {
        errors++;
        hold_progress();
    }
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    timeouts++;
    timeouts_at[c->st]++;
    conn_end(c, 0);
}

/* A step begins (connecting, waiting for a reply or the handshake): it has
 * -T seconds from now. */
static void arm(conn_t *c)
{
    if (!o.sink && o.timeout > 0 && !c->closing)
        uv_timer_start(&c->timer, on_timeout, (uint64_t)o.timeout * 1000, 0);
}

/* Sets up the handles of a new connection (one close callback frees it). */
static void conn_init(conn_t *c)
{
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
}

static void on_written(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    free(w);
    if (status < 0)
        conn_end(c, 0);
}

/* Sends len bytes as they are on the wire (ciphertext already, or plaintext). */
static void raw_send(conn_t *c, const char *p, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w) + len);
    if (w == NULL)
        abort();
    memcpy(w + 1, p, len);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)len);
    w->data = c;
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(w);
        conn_end(c, 0);
    }
}

static void flush_tls(conn_t *c)
{
    const uint8_t *p;
    size_t n = stp_fifo_bio_peek(c->wbio, &p);
    if (n == 0)
        return;
    raw_send(c, (const char *)p, n);
    stp_fifo_bio_drop(c->wbio);
}

static void send_data(conn_t *c, const char *p, size_t len)
{
    if (!c->tls) {
        raw_send(c, p, len);
        return;
    }
    if (SSL_write(c->ssl, p, (int)len) != (int)len) {
        conn_end(c, 0);
        return;
    }
    flush_tls(c);
}

static void send_str(conn_t *c, const char *s)
{
    send_data(c, s, strlen(s));
}

static void start_tls(conn_t *c)
{
    c->ssl = SSL_new(ctx);
    c->rbio = stp_fifo_bio_new();
    c->wbio = stp_fifo_bio_new();
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL)
        abort();
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    if (*o.sni != '\0')
        SSL_set_tlsext_host_name(c->ssl, o.sni);
    if (o.resume && saved_session != NULL)
        SSL_set_session(c->ssl, saved_session);
    c->tls = 1;
    c->st = S_HANDSHAKE;
}

/* Tells whoever waits for the hold (compare.sh) that every session is up. */
static void hold_progress(void)
{
    if (o.hold && !stop_at && held + errors == o.concurrency) {
        fprintf(stderr, "smtp-bench: holding %d sessions (%d errors)\n", held, errors);
        fflush(stderr);
    }
}

static void note_held(conn_t *c)
{
    uv_timer_stop(&c->timer); /* a held session waits for nothing */
    c->st = S_HOLD;
    held++;
    conn_start();
    hold_progress();
}

/* MAIL FROM; with -P also RCPT TO and DATA in the same write (RFC 2920),
 * as an MTA that pipelines sends them. */
static void send_envelope(conn_t *c)
{
    c->st = S_MAIL;
    send_str(c, o.pipeline ? cmd_envelope : cmd_mail);
}

static void after_ehlo(conn_t *c)
{
    if (o.hold && !o.hold_rcpt) {
        note_held(c);
        return;
    }
    send_envelope(c);
}

/* One complete reply (code) arrived: advance the state machine. */
static void on_reply(conn_t *c, int code)
{
    switch (c->st) {
    case S_GREETING:
        if (code != 220)
            goto fail;
        c->st = S_EHLO1;
        send_str(c, cmd_ehlo);
        return;
    case S_EHLO1:
    case S_EHLO2:
        if (code != 250)
            goto fail;
        if (c->st == S_EHLO1 && o.mode == MODE_STARTTLS) {
            c->st = S_STARTTLS;
            send_str(c, "STARTTLS\r\n");
            return;
        }
        after_ehlo(c);
        return;
    case S_STARTTLS:
        if (code != 220)
            goto fail;
        start_tls(c);
        SSL_do_handshake(c->ssl);
        flush_tls(c);
        return;
    case S_MAIL:
        if (code != 250)
            goto fail;
        c->st = S_RCPT;
        if (!o.pipeline)
            send_str(c, cmd_rcpt);
        return;
    case S_RCPT:
        if (code != 250)
            goto fail;
        if (o.hold) {
            note_held(c);
            return;
        }
        c->st = S_DATA;
        if (!o.pipeline)
            send_str(c, "DATA\r\n");
        return;
    case S_DATA:
        if (code != 354)
            goto fail;
        c->st = S_BODY;
        send_data(c, message, message_len);
        return;
    case S_BODY:
        if (code != 250)
            goto fail;
        msgs_done++;
        bytes_done += (uint64_t)o.size; /* the content, not the ".\r\n" */
        if (--c->msgs_left > 0) {
            send_envelope(c);
            return;
        }
        c->st = S_QUIT;
        send_str(c, "QUIT\r\n");
        return;
    case S_QUIT:
        conn_end(c, code == 221);
        return;
    case S_CONNECT:
    case S_HANDSHAKE:
    case S_HOLD:
        goto fail;
    }
fail:
    conn_end(c, 0);
}

/* Plaintext from the server: split into lines, a reply ends at "NNN ". */
static void on_plain(conn_t *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !c->closing; i++) {
        if (c->rlen < sizeof(c->rbuf))
            c->rbuf[c->rlen++] = p[i];
        if (p[i] != '\n')
            continue;
        int last = c->rlen >= 4 && c->rbuf[3] != '-';
        int code = c->rlen >= 3 ? atoi(c->rbuf) : 0;
        c->rlen = 0;
        if (last) {
            if (c->st == S_STARTTLS && i + 1 < n) {
                conn_end(c, 0); /* bytes after 220 to STARTTLS: injection */
                return;
            }
            arm(c); /* the next step's wait (on_reply may end the session) */
            on_reply(c, code);
        }
    }
}

static void on_tls_bytes(conn_t *c, const char *p, size_t n)
{
    BIO_write(c->rbio, p, (int)n);
    if (c->st == S_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        flush_tls(c);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ)
                conn_end(c, 0);
            return;
        }
        handshakes++;
        if (SSL_session_reused(c->ssl))
            resumed++;
        arm(c);
        if (!o.sink)
            note_tls(c->ssl);
        if (o.sink) {
            if (o.mode == MODE_IMPLICIT) {
                send_str(c, "220 sink.bench.test ESMTP\r\n");
            }
            c->st = S_EHLO1;
        } else if (o.mode == MODE_STARTTLS) {
            c->st = S_EHLO2;
            send_str(c, cmd_ehlo);
        } else {
            c->st = S_GREETING;
        }
    }
    char buf[16384];
    for (;;) {
        int r = SSL_read(c->ssl, buf, sizeof(buf));
        if (r > 0) {
            if (o.sink)
                sink_plain(c, buf, (size_t)r);
            else
                on_plain(c, buf, (size_t)r);
            if (c->closing)
                return;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ)
            conn_end(c, 0); /* closed before the 221 (which ends the session itself) */
        break;
    }
    if (o.sink && !c->closing)
        sink_flush(c);
    flush_tls(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    *b = uv_buf_init(inbuf, sizeof(inbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n < 0) {
        conn_end(c, 0); /* a session succeeds only on the 221 to QUIT (on_reply) */
        return;
    }
    if (c->tls)
        on_tls_bytes(c, b->base, (size_t)n);
    else if (o.sink) {
        sink_plain(c, b->base, (size_t)n);
        if (!c->closing)
            sink_flush(c);
    } else
        on_plain(c, b->base, (size_t)n);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    free(req);
    if (status < 0) {
        conn_end(c, 0);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    c->st = S_GREETING;
    arm(c);
    if (o.mode == MODE_IMPLICIT) {
        start_tls(c);
        SSL_do_handshake(c->ssl);
        flush_tls(c);
    }
}

/* ---- -L: the bare sink ---- */

static SSL_CTX *sink_ctx;

static void sink_reply(conn_t *c, const char *s)
{
    size_t n = strlen(s);
    if (c->olen + n > sizeof(c->out))
        sink_flush(c);
    memcpy(c->out + c->olen, s, n);
    c->olen += n;
}

/* Everything answered during one read goes out as one write (one record). */
static void sink_flush(conn_t *c)
{
    if (c->olen == 0)
        return;
    size_t n = c->olen;
    c->olen = 0;
    send_data(c, c->out, n);
}

static void sink_start_tls(conn_t *c)
{
    c->ssl = SSL_new(sink_ctx);
    c->rbio = stp_fifo_bio_new();
    c->wbio = stp_fifo_bio_new();
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL)
        abort();
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    c->tls = 1;
    c->st = S_HANDSHAKE;
}

static int is_cmd(const conn_t *c, const char *verb)
{
    size_t n = strlen(verb);
    return c->rlen >= n && strncasecmp(c->rbuf, verb, n) == 0;
}

/* One command line (in rbuf, without its CRLF): answer it. Returns 0 to stop
 * reading this buffer (STARTTLS: what follows it is discarded; QUIT). */
static int sink_command(conn_t *c)
{
    if (is_cmd(c, "EHLO")) {
        sink_reply(c, c->tls || o.mode != MODE_STARTTLS
                          ? "250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                            "250 SIZE 0\r\n"
                          : "250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                            "250-SIZE 0\r\n250 STARTTLS\r\n");
    } else if (is_cmd(c, "HELO") || is_cmd(c, "MAIL") || is_cmd(c, "RCPT") || is_cmd(c, "RSET") ||
               is_cmd(c, "NOOP")) {
        sink_reply(c, "250 2.0.0 Ok\r\n");
    } else if (is_cmd(c, "DATA")) {
        sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
        c->in_data = 1;
        c->eod = 2; /* the CRLF before the first body line is already seen */
    } else if (is_cmd(c, "STARTTLS") && !c->tls && o.mode == MODE_STARTTLS) {
        sink_reply(c, "220 2.0.0 Ready to start TLS\r\n");
        sink_flush(c);
        sink_start_tls(c);
        return 0;
    } else if (is_cmd(c, "QUIT")) {
        sink_reply(c, "221 2.0.0 Bye\r\n");
        sink_flush(c);
        c->st = S_QUIT;
        if (c->tls) {
            SSL_shutdown(c->ssl);
            flush_tls(c);
        }
        conn_end(c, 1);
        return 0;
    } else {
        sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
    }
    return 1;
}

/* Inside DATA: how many of the n bytes at p belong to the message, its
 * final CRLF.CRLF included (then in_data ends). The end is looked for at
 * the dots, found with memchr, as a real server's scanner would go a line
 * or more at a time (a byte-at-a-time loop here made the sink spend more on
 * 1 MiB messages than the TLS layer did, and the floor look too high);
 * c->eod carries a partial match from one read to the next. The pattern's
 * only inner CR is at offset 3, where a mismatch can begin a new match only
 * at the byte that failed, which is scanned again. */
static size_t sink_data(conn_t *c, const char *p, size_t n)
{
    static const char eod[] = "\r\n.\r\n";
    size_t i = 0;
    while (c->eod > 0 && i < n) {
        if (p[i] != eod[c->eod]) {
            c->eod = 0;
            break;
        }
        i++;
        if (++c->eod == 5)
            goto end;
    }
    if (i == n)
        return n; /* the partial match goes on in the next read */
    for (const char *q = p + i; (q = memchr(q, '.', (size_t)(p + n - q))) != NULL; q++) {
        size_t d = (size_t)(q - p); /* a match would start at d - 2 */
        if (d >= i + 2 && d + 2 < n && memcmp(q - 2, eod, 5) == 0) {
            i = d + 3;
            goto end;
        }
    }
    /* Not here: remember the longest tail that begins the pattern. */
    for (unsigned k = 4; k > 0; k--) {
        if (n - i >= k && memcmp(p + n - k, eod, k) == 0) {
            c->eod = k;
            break;
        }
    }
    return n;
end:
    c->in_data = 0;
    c->eod = 0;
    sink_reply(c, "250 2.0.0 Ok: queued\r\n");
    return i;
}

/* Plaintext from a client: command lines, or a message body up to CRLF.CRLF. */
static void sink_plain(conn_t *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !c->closing; i++) {
        if (c->in_data) {
            i += sink_data(c, p + i, n - i) - 1;
            continue;
        }
        if (p[i] != '\n') {
            if (c->rlen < sizeof(c->rbuf))
                c->rbuf[c->rlen++] = p[i];
            continue;
        }
        if (c->rlen > 0 && c->rbuf[c->rlen - 1] == '\r')
            c->rlen--;
        int go_on = sink_command(c);
        c->rlen = 0;
        if (!go_on)
            return;
    }
}

static void on_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    conn_init(c);
    active++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_end(c, 0);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    c->st = S_EHLO1;
    if (o.mode == MODE_IMPLICIT) {
        sink_start_tls(c);
        return;
    }
    send_str(c, "220 sink.bench.test ESMTP\r\n");
}

static int sink_main(void)
{
    sink_ctx = SSL_CTX_new(TLS_method());
    if (o.mode != MODE_PLAIN &&
        (o.cert == NULL || o.key == NULL || !SSL_CTX_use_certificate_chain_file(sink_ctx, o.cert) ||
         !SSL_CTX_use_PrivateKey_file(sink_ctx, o.key, SSL_FILETYPE_PEM))) {
        fprintf(stderr, "smtp-bench: -L needs a certificate and key (-C FILE -K FILE)\n");
        return 2;
    }
    SSL_CTX_set_min_proto_version(sink_ctx, TLS1_2_VERSION);
    /* What the proxy's server contexts do, so that the floor is no dearer
     * than the proxy by configuration: tickets only, one per handshake. */
    SSL_CTX_set_session_cache_mode(sink_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(sink_ctx, 1);
    uv_tcp_init(loop, &listener);
    listener.data = NULL;
    int r = uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&listener, 4096, on_accept);
    if (r < 0) {
        fprintf(stderr, "smtp-bench: listen on %s:%d: %s\n", o.host, o.port, uv_strerror(r));
        return 1;
    }
    fprintf(stderr, "smtp-bench: sink listening on %s:%d\n", o.host, o.port);
    fflush(stderr);
    uv_run(loop, UV_RUN_DEFAULT);
    fprintf(stderr, "smtp-bench: sink handshakes %d resumed %d\n", handshakes, resumed);
    SSL_CTX_free(sink_ctx);
    return 0;
}

static int want_more(void)
{
    if (stop_at)
        return uv_hrtime() < stop_at;
    return started < o.sessions;
}

/* Idle-hold: sessions still being set up at once. Thousands of connects
 * in one burst overflow the server's listen backlog, and a dropped SYN
 * costs seconds of retransmission; a window keeps the ramp smooth. */
#define HOLD_RAMP 200

static void conn_start(void)
{
    while (active < o.concurrency && want_more() &&
           (!o.hold || started - held - errors < HOLD_RAMP)) {
        conn_t *c = calloc(1, sizeof(*c));
        uv_connect_t *req = malloc(sizeof(*req));
        if (c == NULL || req == NULL)
            abort();
        conn_init(c);
        c->msgs_left = o.messages;
        c->start_ns = uv_hrtime();
        started++;
        active++;
        arm(c);
        req->data = c;
        if (uv_tcp_connect(req, &c->tcp, (struct sockaddr *)&addr, on_connect) < 0) {
            free(req);
            conn_end(c, 0);
        }
    }
}

static void close_held(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h == (uv_handle_t *)&listener) {
        if (!uv_is_closing(h))
            uv_close(h, NULL);
        return;
    }
    if (h->type == UV_TCP && !uv_is_closing(h)) {
        conn_t *c = h->data;
        conn_end(c, c->st == S_HOLD);
    }
}

/* SIGINT/SIGTERM: start nothing new, close every connection (held ones count as done). */
static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    stop_at = 1;
    o.sessions = started;
    uv_walk(loop, close_held, NULL);
    if (o.sink) {
        uv_close((uv_handle_t *)&sig_int, NULL);
        uv_close((uv_handle_t *)&sig_term, NULL);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (nlat == 0)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[i];
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: smtp-bench [options] HOST PORT   (HOST: a name or an IP address)\n"
        "  -c N   concurrency (50)          -n N   total sessions (1000)\n"
        "  -d S   run for S seconds instead of -n\n"
        "  -T S   give up a session (an error) after S seconds without progress: connect,\n"
        "         each reply, the handshake (30; 0: wait forever)\n"
        "  -m N   messages per session (1)  -s N   message size in bytes (4096), as stored:\n"
        "         CRLF line ends, without the final \".\\r\\n\" (0, or 2 and more)\n"
        "  -M starttls|implicit|plain (starttls)\n"
        "  -f ADDR  MAIL FROM (bench@example.test)  -t ADDR  RCPT TO (sink@example.test)\n"
        "  -e NAME  EHLO name (bench.example.test)  -S NAME  TLS SNI (mx.example.test; '': none)\n"
        "  -r     TLS session resumption (reuse one ticket across connections)\n"
        "  -P     pipeline MAIL, RCPT and DATA in one write (the server must offer PIPELINING)\n"
        "  -H     idle-hold: open -c sessions, EHLO (STARTTLS, EHLO), hold until SIGINT/SIGTERM\n"
        "  -R     with -H: also MAIL and RCPT before holding\n"
        "  -j     report as JSON\n"
        "  -L     be the server instead: a bare SMTP sink that relays nothing, listening on\n"
        "         HOST PORT (-M says how it offers TLS; -C FILE -K FILE: certificate chain, "
        "key)\n");
}

/* The message: exactly -s bytes of content as a receiver stores it (RFC 5321:
 * CRLF-terminated lines, the final ".\r\n" excluded; no line starts with a
 * dot, so there is no stuffing), then the ".\r\n". The header when it fits,
 * then lines of 'x' of at most 78 bytes with their CRLF. Content ends in CRLF,
 * so it is never 1 byte long (main refuses -s 1). */
static void build_message(void)
{
    static const char head[] = "From: <%s>\r\nTo: <%s>\r\nSubject: bench%s\r\n\r\n";
    size_t n = (size_t)o.size, len = 0;
    message = malloc(n + 4);
    if (message == NULL)
        abort();
    int hl = snprintf(NULL, 0, head, o.from, o.rcpt, "");
    if (hl >= 0 && (size_t)hl <= n) {
        /* one byte more than the header is no line: the Subject takes it */
        hl = snprintf(message, n + 1, head, o.from, o.rcpt, n == (size_t)hl + 1 ? "." : "");
        len = (size_t)hl;
    }
    while (len < n) {
        size_t left = n - len, line = left > 78 ? 78 : left;
        if (left - line == 1)
            line -= 2; /* leaves a last line of 3 ("x\r\n"), not 1 */
        memset(message + len, 'x', line - 2);
        len += line;
        message[len - 2] = '\r';
        message[len - 1] = '\n';
    }
    memcpy(message + len, ".\r\n", 3);
    message_len = len + 3;
}

/* An argument that goes into a command or the SNI: one word of at most 255
 * bytes (no CR or LF; no space either, and for EHLO not empty). */
static int word_ok(const char *flag, const char *v, int need)
{
    if (strlen(v) <= 255 && strcspn(v, " \t\r\n") == strlen(v) && (!need || *v != '\0'))
        return 1;
    fprintf(stderr, "smtp-bench: %s: one word of at most 255 bytes\n", flag);
    return 0;
}

/* HOST PORT into addr: a name resolves (the first address), an IP address
 * stays as it is. */
static int resolve(void)
{
    char port[16];
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    uv_getaddrinfo_t req;
    snprintf(port, sizeof(port), "%d", o.port);
    int r = uv_getaddrinfo(loop, &req, NULL, o.host, port, &hints);
    if (r != 0) {
        fprintf(stderr, "smtp-bench: %s: %s\n", o.host, uv_strerror(r));
        return -1;
    }
    memcpy(&addr, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    uv_freeaddrinfo(req.addrinfo);
    return 0;
}

int main(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "c:n:d:m:s:M:T:f:t:e:S:rPHRjLC:K:h")) != -1) {
        switch (ch) {
        case 'c':
            o.concurrency = atoi(optarg);
            break;
        case 'n':
            o.sessions = atoi(optarg);
            break;
        case 'd':
            o.duration = atoi(optarg);
            break;
        case 'm':
            o.messages = atoi(optarg);
            break;
        case 's':
            o.size = atoi(optarg);
            break;
        case 'T':
            o.timeout = atoi(optarg);
            break;
        case 'f':
            o.from = optarg;
            break;
        case 't':
            o.rcpt = optarg;
            break;
        case 'e':
            o.ehlo = optarg;
            break;
        case 'S':
            o.sni = optarg;
            break;
        case 'M':
            if (strcmp(optarg, "plain") == 0)
                o.mode = MODE_PLAIN;
            else if (strcmp(optarg, "implicit") == 0)
                o.mode = MODE_IMPLICIT;
            else if (strcmp(optarg, "starttls") == 0)
                o.mode = MODE_STARTTLS;
            else {
                usage(stderr);
                return 2;
            }
            break;
        case 'r':
            o.resume = 1;
            break;
        case 'P':
            o.pipeline = 1;
            break;
        case 'H':
            o.hold = 1;
            break;
        case 'R':
            o.hold_rcpt = 1;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'L':
            o.sink = 1;
            break;
        case 'C':
            o.cert = optarg;
            break;
        case 'K':
            o.key = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o.size == 1) {
        fprintf(stderr, "smtp-bench: -s 1: message content ends in CRLF (0, or 2 bytes or more)\n");
        return 2;
    }
    if (argc - optind != 2 || o.concurrency < 1 || o.sessions < 1 || o.messages < 1 || o.size < 0 ||
        o.timeout < 0 || (o.pipeline && o.hold_rcpt)) {
        usage(stderr);
        return 2;
    }
    if (!word_ok("-f", o.from, 0) || !word_ok("-t", o.rcpt, 0) || !word_ok("-e", o.ehlo, 1) ||
        !word_ok("-S", o.sni, 0))
        return 2;
    snprintf(cmd_ehlo, sizeof(cmd_ehlo), "EHLO %s\r\n", o.ehlo);
    snprintf(cmd_mail, sizeof(cmd_mail), "MAIL FROM:<%s>\r\n", o.from);
    snprintf(cmd_rcpt, sizeof(cmd_rcpt), "RCPT TO:<%s>\r\n", o.rcpt);
    snprintf(cmd_envelope, sizeof(cmd_envelope), "%s%sDATA\r\n", cmd_mail, cmd_rcpt);
    o.host = argv[optind];
    o.port = atoi(argv[optind + 1]);
    loop = uv_default_loop();
    if (resolve() != 0)
        return 2;
    if (o.hold)
        o.sessions = o.concurrency;
    signal(SIGPIPE, SIG_IGN);
    if (o.sink) {
        uv_signal_init(loop, &sig_int);
        uv_signal_init(loop, &sig_term);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        return sink_main();
    }
    ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    build_message();
    lat = calloc((size_t)(o.duration ? 10000000 : o.sessions) + 1, sizeof(double));
    if (o.duration)
        o.sessions = 10000000;
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    t0 = uv_hrtime();
    if (o.duration)
        stop_at = t0 + (uint64_t)o.duration * 1000000000ull;
    conn_start();
    uv_run(loop, UV_RUN_DEFAULT);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    qsort(lat, nlat, sizeof(double), cmp_double);
    if (tls_version == NULL) /* plaintext, or no handshake completed */
        tls_version = tls_cipher = "none";
    if (o.json)
        printf("{\"sessions\":%d,\"errors\":%d,\"messages\":%llu,\"bytes\":%llu,\"seconds\":%.3f,"
               "\"sessions_per_s\":%.1f,\"messages_per_s\":%.1f,\"mb_per_s\":%.2f,"
               "\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"held\":%d,\"resumed\":%d,"
               "\"timeouts\":%d,\"tls_version\":\"%s\",\"cipher\":\"%s\"}\n",
               done_ok, errors, (unsigned long long)msgs_done, (unsigned long long)bytes_done, secs,
               done_ok / secs, (double)msgs_done / secs, (double)bytes_done / secs / 1e6, pct(0.5),
               pct(0.9), pct(0.99), held, resumed, timeouts, tls_version, tls_cipher);
    else
        printf("sessions %d errors %d messages %llu held %d in %.3f s\n"
               "%.1f sessions/s  %.1f messages/s  %.2f MB/s\n"
               "latency ms p50 %.2f p90 %.2f p99 %.2f  resumed %d\n"
               "tls %s cipher %s\n",
               done_ok, errors, (unsigned long long)msgs_done, held, secs, done_ok / secs,
               (double)msgs_done / secs, (double)bytes_done / secs / 1e6, pct(0.5), pct(0.9),
               pct(0.99), resumed, tls_version, tls_cipher);
    for (int i = 0; i <= S_HOLD; i++)
        if (errors_at[i]) {
            fprintf(stderr, "smtp-bench: %d sessions failed at %s", errors_at[i], state_names[i]);
            if (timeouts_at[i])
                fprintf(stderr, " (%d timed out after %d s)", timeouts_at[i], o.timeout);
            fputc('\n', stderr);
        }
    return errors ? 1 : 0;
}

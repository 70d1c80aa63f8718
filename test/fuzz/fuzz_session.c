/*
 * fuzz_session: libFuzzer target for a whole session: the real session
 * state machine (session.c, conn.c, the parsers, the TLS engine) driven by
 * fuzzed client bytes and fuzzed replies of the server behind the proxy:
 * an inbound listener's backend, or, on a route = mx outbound listener, the
 * next hop, found through a fuzzed DNS (nexthop.c, resolver.c, DANE,
 * MTA-STS, remembered TLS).
 *
 * Why loopback and not memory buffers: session.c owns uv_tcp_t handles
 * (connect, read, write, shutdown, close callbacks) and has no seam below
 * them, so the target runs the real libuv loop in-process instead, with
 * everything on 127.0.0.1: the proxy's listeners, a scripted backend (also
 * every MX host: `mx_port` is its port, and the DNS gives MX hosts
 * 127.0.0.1), a client, and for route = mx a DNS server and an MTA-STS
 * server (mx_world.c), all handles of one uv_loop_t. Each input is one
 * session, run until every handle it opened is closed; nothing is left
 * between inputs (the proxy's domain state, remembered TLS and MTA-STS
 * policies, is emptied before each), so LeakSanitizer checks every session.
 *
 * Input: byte 0 picks the listener (0 starttls offer / 1 require /
 * 2 bare_newlines = normalize with xclient = yes / 3 route = mx / 4 route =
 * mx with on_failure = reject and max_message_size / 5 route = mx with
 * testing = yes; implicit is left out: the client speaks plaintext only),
 * byte 1 how the client bytes are split into writes (all sent at once, then
 * a half-close; for route = mx the half-close comes only with a "Z" token
 * of the world, below: during an MX attempt it ends the session, by
 * design, so without it the listener's 20 ms idle timeout ends a session
 * that did not QUIT); then the client bytes, optionally followed by
 * "\xfe\xfe" and the backend's script: replies separated by "\xff", the
 * n-th used for the n-th line the backend reads on any of its connections
 * (after its own greeting, which the script may replace with its first
 * entry, on every connection, when byte 0 has bit 7 set); an entry that
 * starts with "\xfd" is sent without that byte, then the connection is
 * closed. Once the script is used up the backend answers like a
 * well-behaved MTA (250, 354 for DATA, the message up to CRLF.CRLF, 221
 * for QUIT; as a next hop it offers STARTTLS and answers it with 220 and a
 * TLS handshake). For route = mx, a second "\xfe\xfe" ends the script and
 * starts the world: DNS answers, the certificate of each handshake and the
 * MTA-STS policies, as tokens (mx_world.h), e.g. "MS AS TS1 H0" (the MX
 * and A answers of the table, validated, then a DANE-EE record matching
 * the good certificate, which the next hop then presents).
 *
 * Policies of the route = mx listeners: [policy:none.test] none, may.test
 * may, enc.test encrypt, verify.test verify, secure.test secure,
 * daneonly.test dane-only, sts.test mta-sts, any other domain dane (the
 * default); remember_tls is on.
 *
 * Checked: ASan/UBSan/LSan; the session ends once the client has sent
 * everything and half-closed, or by its timers (no hang: the loop is
 * bounded); the backend
 * never receives XCLIENT (except the proxy's own, once, on the xclient
 * listener), XFORWARD, BDAT, STARTTLS (route = mx: not twice, not inside
 * TLS), AUTH (there is no TLS here, and AUTH before TLS is never forwarded;
 * route = mx answers AUTH itself) or a line over the limit; the client
 * never gets a 250 to its end of data unless the backend answered an end of
 * data with a 2xx (route = mx: no more 2xx replies to the legacy MTA's
 * ends of data than the next hops gave, whatever they scripted). For route
 * = mx, unless the listener has testing = yes, a next hop connection where
 * the attempt's policy requires TLS (encrypt, verify, secure, dane-only,
 * validated TLSA records, remembered TLS, a cached MTA-STS policy in
 * enforce) gets nothing in plaintext but EHLO and STARTTLS, so never MAIL,
 * RCPT or DATA; and where it requires authentication (verify, secure,
 * usable TLSA records, remembered TLS, MTA-STS enforce), a handshake with a
 * certificate that cannot pass (self-signed, another name, or no usable
 * TLSA record matching it) is followed by no line at all.
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

#include "policy/domain_policy.h"
#include "policy/mta_sts.h"
#include "proxy/config.h"
#include "proxy/domain_state.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/resolver.h"
#include "proxy/session.h"
#include "proxy/sts_refresh.h"
#include "test/fuzz/mx_world.h"
#include "tls/tls_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    NLISTENERS = 6,
    FIRST_MX = 3, /* listeners 3, 4, 5 are route = mx; 5 has testing = yes */
    MX_TESTING = 5,
    MAX_SCRIPT = 64,
    MAX_BACKEND_LINE = 8192,
    MAX_ITER = 200000
};

static uv_loop_t loop;
static stp_runtime_t *rt;
static stp_listener_t listeners[NLISTENERS];
static stp_limits_t limits[NLISTENERS]; /* shared limits, as main.c gives each listener */
static uv_tcp_t backend_srv, backend_srv6;
static int backend_port;
static int listen_ports[NLISTENERS];
static char ca_path[64]; /* the next hops' CA, for the mx listeners and MTA-STS fetches */
static int debug;        /* STP_FUZZ_DEBUG=1: the proxy's log and both transcripts on stderr */

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
    /* route = mx: the next hop's side */
    stp_tls_engine_t *tls; /* from its 220 to STARTTLS on */
    int switched;          /* that 220 was just sent: the rest of the read is TLS */
    int cert;              /* world_cert_t the handshake presents */
    int mute;              /* 220 and no TLS after all: nothing read counts any more */
    int req_tls, req_auth; /* what the attempt's policy requires of this connection */
    unsigned auth_ok;      /* then: the certificates (bits) that may authenticate it */
} backend_conn_t;

static struct {
    const uint8_t *script[MAX_SCRIPT];
    size_t script_len[MAX_SCRIPT];
    size_t nscript, next;
    int replace_greeting;
    int forbidden;     /* a line the backend must never see arrived */
    int xclient_ok;    /* the session's listener has xclient = yes */
    int xclients;      /* the proxy's XCLIENT commands seen */
    int data_ok;       /* the backend answered an end of data with 2xx */
    int awaiting_dot;  /* the last reply was to an end of data */
    int open;          /* backend connections still open */
    int mx;            /* the listener is route = mx: the backend is every next hop */
    int mx_testing;    /* ... with testing = yes: no policy is enforced */
    unsigned accepted; /* 2xx replies to an end of data */
    int stray_354;     /* a scripted 354 that is not the one-line reply to DATA */
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
    int written;     /* everything is queued for writing */
    int shut;        /* half-closed */
    int close_after; /* route = mx: half-close after this many replies (-1: never) */
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

static void raw_send(backend_conn_t *b, const void *p, size_t n)
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

/* Sends what the TLS engine has for the wire. */
static void tls_flush(backend_conn_t *b)
{
    const uint8_t *p;
    size_t n;
    while (b->tls != NULL && !b->closed && (n = stp_tls_engine_peek(b->tls, &p)) > 0) {
        raw_send(b, p, n);
        stp_tls_engine_drop(b->tls);
    }
}

static void backend_close(backend_conn_t *b);

static void backend_send(backend_conn_t *b, const void *p, size_t n)
{
    if (b->closed || n == 0) {
        return;
    }
    if (b->tls != NULL) {
        if (stp_tls_engine_write(b->tls, p, n) != STP_TLS_OK) {
            backend_close(b); /* the session broke (an alert came first) */
            return;
        }
        tls_flush(b);
        return;
    }
    raw_send(b, p, n);
}

static void on_backend_closed(uv_handle_t *h)
{
    backend_conn_t *b = h->data;
    stp_tls_engine_free(b->tls);
    free(b);
    be.open--;
}

static void backend_close(backend_conn_t *b)
{
    if (!b->closed) {
        if (b->tls != NULL && stp_tls_engine_established(b->tls)) {
            stp_tls_engine_shutdown(b->tls);
            tls_flush(b);
        }
        b->closed = 1;
        uv_close((uv_handle_t *)&b->tcp, on_backend_closed);
    }
}

static int is_verb(const char *line, size_t len, const char *verb)
{
    size_t k = strlen(verb);
    return len >= k && strncasecmp(line, verb, k) == 0 &&
           (len == k || line[k] == ' ' || line[k] == '\r');
}

/* 1 if one of the lines of r[0..n) starts with "354". */
static int has_354(const uint8_t *r, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++) {
        if ((i == 0 || r[i - 1] == '\n') && memcmp(r + i, "354", 3) == 0) {
            return 1;
        }
    }
    return 0;
}

static void violation(const backend_conn_t *b, const char *what, const char *line, size_t len)
{
    const world_attempt_t *a = world_attempt();
    fprintf(stderr,
            "%s: \"%.*s\"\n  domain=%s host=%s remembered=%d dane_records=%d dane_usable=%d "
            "dane_match=%#x tls=%d cert=%d req_tls=%d req_auth=%d auth_ok=%#x\n",
            what, (int)(len > 200 ? 200 : len), line, a->domain, a->host, a->remembered,
            a->dane_records, a->dane_usable, a->dane_match, b->tls != NULL, b->cert, b->req_tls,
            b->req_auth, b->auth_ok);
    abort();
}

/*
 * route = mx: what the attempt the DNS server follows (world_attempt())
 * requires of a new next hop connection, as nexthop.c decides it: the
 * domain's [policy], DANE where usable TLSA records validated (nothing else
 * counts then), else the TLS that encrypt/verify/secure, any validated TLSA
 * record, remembered TLS or a cached MTA-STS policy in enforce ask for, and
 * a certificate the test CA signed for the name where verify, secure,
 * remembered TLS or MTA-STS enforce authenticate the host. Nothing under
 * testing = yes.
 */
static void label(backend_conn_t *b)
{
    const world_attempt_t *a = world_attempt();
    b->req_tls = b->req_auth = 0;
    b->auth_ok = 0;
    if (!be.mx || be.mx_testing || a->domain[0] == '\0') {
        return;
    }
    const stp_domain_policy_t *p = stp_policy_lookup(&rt->conf->policies, a->domain);
    stp_policy_tls_t t = p->tls;
    if (t == STP_POLICY_TLS_NONE) {
        return;
    }
    if ((t == STP_POLICY_TLS_DANE || t == STP_POLICY_TLS_DANE_ONLY) &&
        (a->dane_usable || t == STP_POLICY_TLS_DANE_ONLY)) {
        b->req_tls = b->req_auth = 1;
        b->auth_ok = a->dane_usable ? a->dane_match : 0;
        return;
    }
    int sts = 0;
    if (t == STP_POLICY_TLS_DANE || t == STP_POLICY_TLS_MTA_STS) {
        stp_mta_sts_policy_t pol;
        sts = stp_domain_state_sts_after_failure(a->domain, &pol) == STP_STS_USE_CACHED &&
              pol.mode == STP_MTA_STS_MODE_ENFORCE;
    }
    b->req_auth = t == STP_POLICY_TLS_VERIFY || t == STP_POLICY_TLS_SECURE || a->remembered || sts;
    b->req_tls = b->req_auth || t == STP_POLICY_TLS_ENCRYPT || a->dane_records;
    b->auth_ok = 1u << W_CERT_GOOD | 1u << W_CERT_OLD_TLS;
    if (strcmp(a->host, "wrong.test") == 0 || strcmp(a->domain, "wrong.test") == 0) {
        b->auth_ok |= 1u << W_CERT_WRONG_NAME;
    }
}

/* route = mx: the next hop's answer to STARTTLS was 220; what follows is per the world. */
static void start_tls(backend_conn_t *b)
{
    int h = world_next_handshake();
    if (h == 4) {
        static const char junk[] = "250 injected after the 220\r\n";
        raw_send(b, junk, sizeof(junk) - 1);
        b->mute = 1;
        return;
    }
    if (h == 5) {
        backend_close(b);
        return;
    }
    if (h == 6) {
        b->mute = 1; /* the ClientHello goes unanswered */
        return;
    }
    b->cert = h;
    b->tls = stp_tls_engine_new_server(world_server_ctx((world_cert_t)h));
    if (b->tls == NULL) {
        abort();
    }
    b->switched = 1;
}

/* Answers one line (or the end of data) from the script or as a good MTA. */
static void backend_answer(backend_conn_t *b, const char *line, size_t len, int end_of_data)
{
    static const char *const bad[] = {"XCLIENT", "XFORWARD", "BDAT", "STARTTLS", "AUTH"};
    static const char own[] = "XCLIENT ADDR=127.0.0.1 PORT=";
    int starttls = !end_of_data && be.mx && is_verb(line, len, "STARTTLS");
    if (debug) {
        fprintf(stderr, "backend %p%s < %.*s%s", (void *)b, b->tls ? " (TLS)" : "",
                (int)(end_of_data ? 13 : len), end_of_data ? "<end of data>" : line,
                end_of_data ? "\n" : "");
    }
    if (!end_of_data && be.xclient_ok && len > sizeof(own) - 1 &&
        strncmp(line, own, sizeof(own) - 1) == 0) {
        if (be.xclients++) {
            be.forbidden = 1; /* never twice in a session */
        }
    } else if (!end_of_data) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            if (is_verb(line, len, bad[i]) && !(starttls && b->tls == NULL)) {
                be.forbidden = 1;
            }
        }
    }
    if (!end_of_data && b->tls != NULL && b->req_auth && !(b->auth_ok & 1u << b->cert)) {
        violation(b, "a line over TLS to a next hop the policy does not authenticate", line, len);
    }
    if (!end_of_data && b->tls == NULL && b->req_tls && !is_verb(line, len, "EHLO") && !starttls) {
        violation(b, "plaintext to a next hop where the policy requires TLS", line, len);
    }
    be.awaiting_dot = end_of_data;
    if (be.next < be.nscript) {
        const uint8_t *r = be.script[be.next];
        size_t n = be.script_len[be.next++];
        int close_after = n >= 1 && r[0] == 0xfd; /* the rest, then a close */
        if (close_after) {
            r++;
            n--;
        }
        int is_data = !end_of_data && len >= 4 && strncasecmp(line, "DATA", 4) == 0;
        if (end_of_data && n >= 1 && r[0] == '2') {
            be.data_ok = 1;
            be.accepted++;
        }
        if (has_354(r, n) && !(is_data && memchr(r, '\n', n) == r + n - 1)) {
            be.stray_354 = 1;
        }
        if (is_data && n >= 3 && memcmp(r, "354", 3) == 0) {
            b->in_data = 1;
            b->matched = 2; /* the CRLF of "DATA" starts the first line */
        }
        backend_send(b, r, n);
        if (close_after) {
            backend_close(b);
            return;
        }
        if (starttls && b->tls == NULL && n >= 3 && memcmp(r, "220", 3) == 0) {
            start_tls(b);
        }
        return;
    }
    if (end_of_data) {
        be.data_ok = 1;
        be.accepted++;
        backend_send(b, "250 2.0.0 queued\r\n", 18);
    } else if (len >= 4 && strncasecmp(line, "DATA", 4) == 0) {
        b->in_data = 1;
        b->matched = 2;
        backend_send(b, "354 go ahead\r\n", 14);
    } else if (be.mx && is_verb(line, len, "EHLO")) {
        /* a next hop: STARTTLS until it is in TLS */
        static const char plain[] = "250-nexthop.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
                                    "250-8BITMIME\r\n250-SMTPUTF8\r\n250 STARTTLS\r\n";
        static const char tls[] = "250-nexthop.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
                                  "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
        if (b->tls) {
            backend_send(b, tls, sizeof(tls) - 1);
        } else {
            backend_send(b, plain, sizeof(plain) - 1);
        }
    } else if (starttls) {
        backend_send(b, "220 2.0.0 ready to start TLS\r\n", 30);
        if (b->tls == NULL) {
            start_tls(b);
        }
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

static void backend_tls_input(backend_conn_t *b, const char *p, size_t n);

/* Plaintext bytes: SMTP lines, or a message up to its end. */
static void backend_plain(backend_conn_t *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !b->closed && !b->mute; i++) {
        char c = p[i];
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
            if (b->switched) {
                /* the 220 to STARTTLS is out: the rest is the handshake */
                b->switched = 0;
                backend_tls_input(b, p + i + 1, n - i - 1);
                return;
            }
        }
    }
}

static void backend_tls_input(backend_conn_t *b, const char *p, size_t n)
{
    if (b->closed) {
        return;
    }
    if (n > 0 && stp_tls_engine_feed(b->tls, (const uint8_t *)p, n) != STP_TLS_OK) {
        abort();
    }
    if (!stp_tls_engine_established(b->tls)) {
        int rc = stp_tls_engine_handshake(b->tls);
        tls_flush(b);
        if (rc == STP_TLS_ERROR) {
            backend_close(b);
            return;
        }
        if (rc != STP_TLS_OK) {
            return;
        }
    }
    for (;;) {
        char plain[16384];
        ssize_t k = stp_tls_engine_read(b->tls, (uint8_t *)plain, sizeof(plain));
        if (k == STP_TLS_AGAIN) {
            break;
        }
        if (k < 0) {
            backend_close(b); /* close_notify, or broken */
            return;
        }
        backend_plain(b, plain, (size_t)k);
        if (b->closed) {
            return;
        }
    }
    tls_flush(b);
}

static void on_backend_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    backend_conn_t *b = s->data;
    if (n < 0) {
        backend_close(b);
        return;
    }
    if (b->tls != NULL) {
        backend_tls_input(b, buf->base, (size_t)n);
    } else {
        backend_plain(b, buf->base, (size_t)n);
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
    label(b);
    uv_tcp_nodelay(&b->tcp, 1);
    if (be.replace_greeting && be.next < be.nscript) {
        if (has_354(be.script[be.next], be.script_len[be.next])) {
            be.stray_354 = 1;
        }
        const uint8_t *r = be.script[be.next];
        size_t n = be.script_len[be.next++];
        if (n >= 1 && r[0] == 0xfd) {
            backend_send(b, r + 1, n - 1);
            backend_close(b);
        } else {
            backend_send(b, r, n);
        }
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

/* The final reply lines the client has read. */
static int client_replies(void)
{
    int n = 0;
    for (size_t i = 0; i + 3 < cl.in_len; i++) {
        if ((i == 0 || cl.in[i - 1] == '\n') && cl.in[i + 3] == ' ') {
            n++;
        }
    }
    return n;
}

/* Half-closes once everything is written (and, for route = mx, once as
 * many replies as the world said have come). */
static void maybe_half_close(void)
{
    if (cl.written && !cl.shut && !cl.closed && cl.close_after >= 0 &&
        client_replies() >= cl.close_after) {
        cl.shut = 1;
        uv_shutdown(&cl.shutdown, (uv_stream_t *)&cl.tcp, NULL);
    }
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
    maybe_half_close();
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

static void remove_ca(void)
{
    unlink(ca_path);
}

static int initialize(void)
{
    char cert[64], key[64], ini[6144], err[4096];
    int dns_port, sts_port;
    signal(SIGPIPE, SIG_IGN);
    debug = getenv("STP_FUZZ_DEBUG") != NULL;
    uv_loop_init(&loop);
    snprintf(cert, sizeof(cert), "/tmp/stp-fuzz-session-%d.pem", (int)getpid());
    snprintf(key, sizeof(key), "/tmp/stp-fuzz-session-%d.key", (int)getpid());
    make_cert(cert, key);
    /* The CA stays while the process runs: each MTA-STS fetch loads it. */
    snprintf(ca_path, sizeof(ca_path), "/tmp/stp-fuzz-session-%d-ca.pem", (int)getpid());
    world_init(&loop, ca_path, &dns_port, &sts_port);
    atexit(remove_ca);
    if (stp_resolver_global_init() < 0) {
        abort();
    }

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
    /* The same next hop on [::1], for AAAA answers (where there is IPv6). */
    struct sockaddr_in6 a6;
    uv_ip6_addr("::1", backend_port, &a6);
    uv_tcp_init(&loop, &backend_srv6);
    if (uv_tcp_bind(&backend_srv6, (const struct sockaddr *)&a6, 0) != 0 ||
        uv_listen((uv_stream_t *)&backend_srv6, 64, on_backend_conn) != 0) {
        uv_close((uv_handle_t *)&backend_srv6, NULL);
    }
    for (int i = 0; i < NLISTENERS; i++) {
        listen_ports[i] = free_port();
    }
    /* Short timers so that a stuck session ends quickly in loop time. */
#define TIMERS                                                                                     \
    "connect_timeout = 100ms\ngreeting_timeout = 100ms\ncommand_timeout = 100ms\n"                 \
    "idle_timeout = 100ms\nhandshake_timeout = 100ms\ndata_timeout = 100ms\n"                      \
    "session_timeout = 500ms\n"
    /* route = mx: every step bounded in tens of milliseconds too (DNS, the
     * MTA-STS fetch, the whole attempt), the session a little longer. The
     * client does not half-close there (during an attempt that ends the
     * session, by design), so without QUIT the idle timeout ends it. */
#define MX_TIMERS                                                                                  \
    "connect_timeout = 100ms\ngreeting_timeout = 100ms\ncommand_timeout = 100ms\n"                 \
    "idle_timeout = 20ms\nhandshake_timeout = 100ms\ndata_timeout = 100ms\n"                       \
    "session_timeout = 1s\n"
    snprintf(
        ini, sizeof(ini),
        "[proxy]\nhostname = fuzz.test\nlog_level = %s\n"
        "resolver = 127.0.0.1:%d\ndns_timeout = 100ms\nmx_port = %d\n"
        "mx_attempt_timeout = 300ms\nmta_sts_port = %d\nmta_sts_timeout = 100ms\n"
        "mta_sts_ca_file = %s\nremember_tls = 1d\n"
        "[tls]\ncert = %s\nkey = %s\n"
        "[listener:offer]\nmode = inbound\nlisten = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n" TIMERS
        "[listener:require]\nmode = inbound\nlisten = 127.0.0.1:%d\n"
        "backend = 127.0.0.1:%d\nstarttls = require\n" TIMERS
        "[listener:normalize]\nmode = inbound\nlisten = 127.0.0.1:%d\n"
        "backend = 127.0.0.1:%d\nbare_newlines = normalize\nmax_message_size = 2000\n"
        "xclient = yes\n" TIMERS "[listener:mx]\nmode = outbound\nlisten = 127.0.0.1:%d\nroute = "
        "mx\nca_file = %s\n" MX_TIMERS
        "[listener:mx-reject]\nmode = outbound\nlisten = 127.0.0.1:%d\nroute = mx\n"
        "ca_file = %s\non_failure = reject\nmax_message_size = 2000\n" MX_TIMERS
        "[listener:mx-testing]\nmode = outbound\nlisten = 127.0.0.1:%d\nroute = mx\n"
        "ca_file = %s\ntesting = yes\n" MX_TIMERS
        "[policy:none.test]\ntls = none\n[policy:may.test]\ntls = may\n"
        "[policy:enc.test]\ntls = encrypt\n[policy:verify.test]\ntls = verify\n"
        "[policy:secure.test]\ntls = secure\n[policy:daneonly.test]\ntls = dane-only\n"
        "[policy:sts.test]\ntls = mta-sts\n",
        debug ? "debug" : "error", dns_port, backend_port, sts_port, ca_path, cert, key,
        listen_ports[0], backend_port, listen_ports[1], backend_port, listen_ports[2], backend_port,
        listen_ports[3], ca_path, listen_ports[4], ca_path, listen_ports[5], ca_path);
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
        if (fd < 0 ||
            stp_limits_init(&limits[i], lc->max_connections, lc->max_connections_per_ip) < 0 ||
            stp_listener_start(&listeners[i], &loop, rt, lc, fd, &limits[i], 0) < 0) {
            abort();
        }
    }
    return 0;
}

/* The 2xx replies the client got right after a 354 (a message accepted). */
static unsigned client_acceptances(void)
{
    const char *p = cl.in, *end = cl.in + cl.in_len;
    int after_354 = 0;
    unsigned n = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (l >= 4 && memcmp(p, "354", 3) == 0 && p[3] == ' ') {
            after_354 = 1;
        } else if (after_354 && l >= 4 && p[0] == '2' && p[3] == ' ') {
            n++;
            after_354 = 0;
        } else if (l >= 4 && p[3] == ' ') {
            after_354 = 0;
        }
        p += l + 1;
    }
    return n;
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
    be.mx = which >= FIRST_MX;
    be.mx_testing = which == MX_TESTING;
    const uint8_t *world = NULL, *end = body + n;
    if (be.mx) {
        /* the script ends at a second separator, the world follows it */
        const uint8_t *sep2 = sep ? find_sep(sep + 2, (size_t)(end - sep - 2)) : NULL;
        if (sep2 != NULL) {
            world = sep2 + 2;
            end = sep2;
        }
        if (sep != NULL && sep + 2 == end) {
            sep = NULL; /* an empty script: no entries (not one empty reply) */
        }
    }
    world_reset(world, world ? (size_t)(body + n - world) : 0);
    /* Nothing remembered from the previous input. */
    stp_domain_state_free();
    if (stp_domain_state_init("") < 0) {
        abort();
    }
    if (sep) {
        const uint8_t *p = sep + 2;
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
    cl.close_after = be.mx ? world_half_close() : 0;
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
        cl.written = 1;
        maybe_half_close();
    }
    /* The session must end on its own: the client's EOF, a reply, or a
     * (short) timer. Loop time is real time here, so this is bounded. */
    iter = 0;
    /* An MTA-STS refresh outlives the delivery that started it: it too
     * must end (dns_timeout and mta_sts_timeout bound it) before the next
     * input, which starts with nothing remembered. */
    while ((!cl.closed || be.open > 0 || listeners[which].nsessions > 0 || world_sts_open() > 0 ||
            stp_sts_refresh_running(&loop) > 0) &&
           iter++ < MAX_ITER) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    if (iter >= MAX_ITER) {
        fprintf(stderr,
                "session did not end: client closed %d, backend open %d, sessions %u, "
                "MTA-STS connections %d, refreshes %u\n",
                cl.closed, be.open, listeners[which].nsessions, world_sts_open(),
                stp_sts_refresh_running(&loop));
        abort();
    }
    if (debug) {
        fprintf(stderr, "client got:\n%.*s\n", (int)cl.in_len, cl.in);
    }
    if (be.forbidden) {
        fprintf(stderr, "the backend received a command it must never see\n");
        abort();
    }
    /* "250" to the client's end of data only if the backend accepted one
     * (checked with the well-behaved backend, whose only 354 is to DATA). */
    if (!be.data_ok && be.nscript == 0 && client_acceptances() > 0) {
        fprintf(stderr, "the client got a 2xx to a message the backend never took\n");
        abort();
    }
    /* route = mx: never more acceptances than the next hops gave, unless
     * the script sent a 354 that was no reply to DATA */
    if (be.mx && !be.stray_354 && client_acceptances() > be.accepted) {
        fprintf(stderr, "the client got %u 2xx to its ends of data, the next hops gave %u\n",
                client_acceptances(), be.accepted);
        abort();
    }
    return 0;
}

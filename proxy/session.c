/*
 * session: the inbound relay. One client (an Internet MTA or MUA) and one
 * backend (the plaintext legacy MTA), and the SMTP state machine between
 * them.
 *
 * The proxy parses every client command and every backend reply. Commands
 * are either forwarded or answered locally (STARTTLS, refusals); each one
 * takes a slot in the pending queue, so replies go back in order even with
 * PIPELINING and a mix of local and backend answers. After DATA, STARTTLS,
 * AUTH and QUIT the proxy stops interpreting client input until the reply
 * is known: what follows DATA is message content only after a 354, what
 * follows AUTH is a SASL response only after a 334, and what follows
 * STARTTLS is never interpreted at all (it is discarded: RFC 3207 requires
 * STARTTLS to end a pipeline group, so only an attacker or a broken client
 * sends anything behind it; Postfix also purges it).
 *
 * Message content is streamed: the data scanner finds the one true end of
 * data (CRLF.CRLF) and rejects bare CR/LF (or normalises it, by setting), and
 * the client's reading stops while the backend's write queue is above its
 * high-water mark. The client gets the backend's own reply to the end of
 * data and nothing else, so no 2xx is ever invented.
 *
 * XCLIENT (xclient = yes): see xclient_begin().
 *
 * Lifetime: finish() is the one way out; it closes both connections and all
 * timers, and destroy() frees the session in the last close callback.
 */
#include "proxy/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/conn.h"
#include "proxy/data_scan.h"
#include "proxy/ehlo.h"
#include "proxy/envelope.h"
#include "proxy/log.h"
#include "proxy/nexthop.h"
#include "proxy/proxy_proto.h"
#include "proxy/session_metrics.h"
#include "proxy/smtp_cmd.h"
#include "proxy/smtp_line.h"
#include "proxy/smtp_reply.h"
#include "proxy/thread_buf.h"
#include "proxy/trace.h"
#include "proxy/upcache.h"
#include "proxy/xclient.h"
#include "policy/cidr.h"
#include "tls/session_cache.h"
#include "tls/tls_verify.h"

#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>

#define PENDING_MAX 128
#define PENDING_SMALL 16 /* in the session; a deeper pipeline borrows PENDING_MAX from the heap */
#define HELD_MAX (1024 * 1024)
#define DATA_CHUNK (64 * 1024)
/* The end of a session (finish()) waits this long at most: for the client
 * to read its last reply and, where it may still be sending (a lingering
 * close, client_may_send()), for it to stop. A lingering close also ends
 * once the client has been quiet LINGER_QUIET_MS with the reply written, or
 * has sent LINGER_MAX_BYTES more (read and dropped). */
#define LINGER_MS 10000
#define LINGER_QUIET_MS 1000
#define LINGER_MAX_BYTES (64 * 1024 * 1024)
#define PROXY_HEADER_MS 5000 /* a load balancer sends its PROXY header at once */
#define FINAL_REPLY_MIN_MS 600000 /* RFC 5321 4.5.3.2.6: 10 minutes for the reply to "." */
#define ERRORS_MAX 20 /* the proxy's own 5xx replies without a message delivered, before 421
                       * (Postfix's smtpd_hard_error_limit) */

/* Pseudo-verbs for queue entries that are not client commands. */
enum {
    V_DATA_END = STP_CMD__COUNT + 1,
    V_SASL,
    V_RSET_INTERNAL,
    V_XC_EHLO,     /* xclient: the EHLO that asks the backend whether it offers XCLIENT */
    V_XCLIENT,     /* xclient: the XCLIENT command */
    V_MAIL_REPLAY, /* route = mx: the remembered MAIL FROM, sent to a new next hop */
    V_MESSAGE,     /* route = mx: the message, after the 354 (never queued) */
    V_HELO_FALLBACK, /* inbound: HELO for a backend that refused the client's EHLO */
};

typedef enum { P_BACKEND = 1, P_LOCAL, P_INTERNAL } pending_kind_t;
typedef enum { A_NONE = 0, A_STARTTLS, A_CLOSE, A_QUIT, A_BDAT } pending_action_t;

typedef struct {
    unsigned char kind;
    unsigned char verb;
    unsigned char action;
    /* P_LOCAL: static reply text. A client's MAIL (P_BACKEND, STP_CMD_MAIL):
     * its sender, escaped, owned by the entry (malloc) until its reply. */
    const char *text;
} pending_t;

/* A backend's reply in the middle of DATA, kept for the client's end of
 * data (see data_interrupted()). */
typedef struct {
    int code;
    size_t text_off, text_len; /* its last line's text, for the log */
    char raw[];                /* as received, NUL-terminated */
} early_reply_t;

typedef enum { S_CONNECTING = 1, S_GREETING, S_COMMAND, S_DATA, S_CLOSING } state_t;
typedef enum { T_NONE = 0, T_HANDSHAKE, T_ACTIVE } tls_state_t;
typedef enum { UP_NONE = 0, UP_EHLO1, UP_STARTTLS, UP_HANDSHAKE, UP_EHLO2, UP_REUSE } up_phase_t;

struct stp_session_s {
    stp_session_t *prev, *next; /* listener's list */
    stp_listener_t *listener;
    stp_runtime_t *rt;
    const stp_listener_conf_t *conf;
    uv_loop_t *loop;

    stp_conn_t client;
    stp_conn_t backends[2]; /* the second one for a plaintext retry (tls = may) or route = mx */
    stp_conn_t *up;         /* the current backend / next hop connection */
    stp_upconn_t *upc;      /* connection_cache_time: up lives in memory of its own */
    unsigned nbackends;     /* connections made (a cached one, new, a plaintext retry) */
    uv_timer_t client_timer;
    uv_timer_t backend_timer;
    uv_timer_t session_timer;
    int open_handles;

    state_t state;
    tls_state_t tls;
    char id[24];
    struct sockaddr_storage peer;
    char peer_str[64];
    uint64_t start_ms;
    unsigned limits_taken : 1;
    unsigned backend_up : 1; /* connected (the conn handle exists) */
    unsigned ehlo_seen : 1;  /* since the last TLS handshake */
    unsigned esmtp : 1;
    unsigned authenticated : 1;
    unsigned sasl : 1;          /* the next client line is a SASL response */
    unsigned paused : 1;        /* client input is held until a reply arrives */
    unsigned discard_input : 1; /* client bytes are dropped (after STARTTLS, QUIT) */
    unsigned draining : 1;
    unsigned quit_seen : 1;
    unsigned trace_owed : 1; /* DATA began; the trace header leads the first content */
    unsigned xclient_tried : 1; /* XCLIENT is considered once per session, never sent twice */
    unsigned xclient_done : 1;  /* the backend knows the client's address, or offers no XCLIENT */
    unsigned client_eof : 1;    /* the client half-closed with replies owed to it */
    unsigned up_pipelining : 1; /* the backend's last EHLO reply offered PIPELINING */
    unsigned size_added : 1;    /* ...had no SIZE: the client saw the proxy's (MAIL's SIZE= is dropped) */
    unsigned rset_due : 1;      /* the RSET after STARTTLS goes out with the next command */
    unsigned up_private : 1;    /* outbound: the next hop saw more than envelopes (AUTH, HELO...) */
    unsigned up_reused : 1;     /* outbound: up was taken from the connection cache */
    unsigned up_unsure : 1;     /* outbound: an RSET was refused; the next hop's state is unknown */
    unsigned bdat : 1;          /* BDAT refused: its chunk may still be coming (bdat_refused()) */
    unsigned in_input : 1;      /* client input is being worked through (process()) */
    uint64_t linger_end;        /* a lingering close ends then at the latest (uv_now) */
    uint64_t linger_bytes;      /* ...or once the client sent this much more, dropped */

    char tls_version[16];
    char tls_cipher[64];
    uint64_t hs_start_ns;   /* uv_hrtime() when the current handshake began */
    stp_proxy_t *pp;        /* proxy_protocol: the header parser until it is done */
    const char *down_reason; /* metrics: why TLS toward the next hop failed */
    char sni[128];
    int tls_bits;
    /* outbound: the proxy's own EHLO/STARTTLS dance with the next hop */
    int up_phase;
    size_t up_extra;        /* bytes that followed the last reply in its read */
    int up_plain_retry;     /* tls = may: the one plaintext retry is in use */
    struct sockaddr_storage next_hop;
    char next_hop_str[280];
    char up_version[16];
    char up_cipher[64];
    char *up_ehlo;          /* the next hop's reply to the proxy's EHLO, as the legacy MTA sees it */
    size_t up_ehlo_len;
    const char *verify;     /* "ok", "failed", "skipped" */
    const char *decision;   /* "tls", "plaintext", "deferred", "rejected" */
    char helo[72];
    char *xc_line;          /* xclient: the client's EHLO/HELO line, held while XCLIENT runs */
    size_t xc_len;
    unsigned char xc_verb;  /* STP_CMD_EHLO or STP_CMD_HELO */
    /* The transaction as the replies tell it (they come in command order,
     * so with pipelining too): the sender of the last accepted MAIL and the
     * RCPTs accepted since, until RSET, EHLO/HELO or the final reply. */
    char mail_from[136];
    unsigned rcpts;
    unsigned errors; /* the proxy's own 5xx replies since the last message delivered */

    /* route = mx (proxy/nexthop.c finds and secures the next hop per domain) */
    stp_nexthop_t *nh;        /* the attempt in progress, or NULL */
    int nh_slot;              /* the backends[] slot it uses */
    int slot_busy[2];         /* backends[i] is in use until its close callback */
    char mx_domain[256];      /* the domain of the next hop connection (or attempt) */
    char mx_failed[256];      /* the domain whose attempt failed in this transaction */
    char *mx_failed_reply;    /* its reply, given again to its other RCPTs (or NULL) */
    char *mx_mail;            /* the legacy MTA's MAIL FROM argument, or NULL */
    char *mx_rcpt;            /* the RCPT line waiting for the next hop */
    size_t mx_rcpt_len;
    unsigned mx_caps;         /* the next hop's EHLO keywords */
    int mx_mail_sent;         /* MAIL replayed on the next hop in this transaction */
    int mx_verified;          /* the next hop's TLS was authenticated */
    int mx_txn_lost;          /* the next hop went away with recipients accepted */
    const char *mx_drop_why;  /* the proxy dropped the next hop (mx_up_broken()): why */
    const char *mx_drop_reply; /* ...and the 451 for what it owed (both static) */
    const char *mx_level;     /* the requirement applied to the last next hop (static) */

    pending_t pq_small[PENDING_SMALL];
    pending_t *pq_big; /* PENDING_MAX entries, only while more than PENDING_SMALL are in flight */
    unsigned pq_head, pq_len;

    char *held;
    size_t held_len, held_cap;

    stp_line_t line;
    char *sasl_buf; /* SASL_RESPONSE_MAX bytes for `line` during an AUTH exchange */
    stp_reply_parser_t *rp; /* 9 KiB: allocated only while a reply is arriving */
    stp_data_scan_t scan;
    const char *msg_abort; /* reply for a message being refused after DATA */
    early_reply_t *early;  /* the backend's reply in the middle of DATA (or NULL) */

    unsigned messages;
    unsigned rejected;
    const char *result;
    char error[160];

    char line_buf[]; /* max_line_length bytes */
};

STP_THREAD_BUF(data_out, 2 * DATA_CHUNK + 4)
static _Atomic unsigned session_counter; /* shared: ids stay unique across workers */

/* The backend (or next hop) connection is gone in the middle of a session. */
#define LOST_421 "421 4.4.2 Error: connection to mail server lost\r\n"
/* BDAT without CHUNKING offered: see the STP_CMD_BDAT case of handle_line(). */
#define BDAT_502 "502 5.5.1 Error: BDAT (CHUNKING) not supported, closing connection\r\n"
/* route = mx: the answer to a command its next hop failed (mx_next_hop_failed()):
 * it closed or said 421; the proxy's write to it failed; it did not answer. */
static const char mx_closed[] = "451 4.4.2 Error: the recipient's mail server closed the "
                                "connection; try again later\r\n";
static const char mx_lost[] = "451 4.4.2 Error: connection to the recipient's mail server "
                              "lost; try again later\r\n";
static const char mx_silent[] = "451 4.4.2 Error: the recipient's mail server did not answer "
                                "in time; try again later\r\n";

static void finish(stp_session_t *s, const char *reply, const char *result, const char *error);
static void process(stp_session_t *s, const char *p, size_t n);
static void arm_timers(stp_session_t *s);
static void update_reading(stp_session_t *s);
static void flush_queue(stp_session_t *s);
static void up_reply(stp_session_t *s, const stp_reply_t *r);
static void relay(stp_session_t *s, const stp_reply_t *r);
static void relay_ehlo(stp_session_t *s, const stp_reply_t *r);
static int ehlo_fallback(stp_session_t *s, const stp_reply_t *r);
static void up_lost(stp_session_t *s, const char *why);
static void up_on_handshake(stp_conn_t *c, const char *err);
static void backend_connect(stp_session_t *s);
static size_t proxy_header_input(stp_session_t *s, const char *data, size_t len);
static void handle_reply(stp_session_t *s, const stp_reply_t *r);
static void relay(stp_session_t *s, const stp_reply_t *r);
static void resume(stp_session_t *s);
static void destroy(stp_session_t *s);
static const stp_conn_cb_t backend_cb;
static void up_park(stp_session_t *s);

/* route = mx: the local side of the session and the hand-over to a next
 * hop found by proxy/nexthop.c (the code is in the "outbound: mx" part). */
static int is_mx(const stp_session_t *s);
static int mx_wait(const stp_session_t *s);
static int mx_command(stp_session_t *s, const stp_cmd_t *cmd, const char *line, size_t len);
static void mx_mail_replied(stp_session_t *s, const stp_reply_t *r);
static void mx_end_transaction(stp_session_t *s, int reset_next_hop);
static void mx_message_done(stp_session_t *s, int ok);
static void mx_up_gone(stp_session_t *s);
static int mx_reply_ends_next_hop(stp_session_t *s, unsigned verb, const stp_reply_t *r);
static void mx_next_hop_failed(stp_session_t *s, unsigned verb, const stp_reply_t *r,
                               const char *err);
static void mx_next_hop_closed(stp_session_t *s, const char *err);
static void mx_up_broken(stp_session_t *s, const char *why, const char *reply);
static void mx_next_hop_lost(stp_session_t *s, const char *err);
static void mx_drop_up(stp_session_t *s);
static void mx_log_dropped(stp_session_t *s, const char *what, const stp_reply_t *r,
                           const char *err);
static void log_early(stp_session_t *s);
static void drain_if_idle(stp_session_t *s);
static void mx_greet(stp_session_t *s);
static void drop_kept_ehlo(stp_session_t *s);

/* ---- small helpers ---- */

static void set_error(stp_session_t *s, const char *error)
{
    if (error && s->error[0] == '\0') {
        stp_log_escape(s->error, sizeof(s->error), error, strlen(error));
    }
}

static const char *hostname(const stp_session_t *s)
{
    return s->rt->conf->hostname;
}

static void client_write(stp_session_t *s, const char *text, size_t len)
{
    if (s->tls == T_HANDSHAKE) {
        return; /* nothing readable can be said in the middle of a handshake */
    }
    stp_conn_write(&s->client, text, len);
}

/*
 * The pending queue is a ring of PENDING_SMALL entries inside the session
 * (2 KiB less per idle session than PENDING_MAX); a client pipelining deeper
 * moves it to a heap ring of PENDING_MAX, given back once the queue is empty.
 */
static pending_t *pq_at(stp_session_t *s, unsigned i)
{
    if (s->pq_big) {
        return &s->pq_big[(s->pq_head + i) % PENDING_MAX];
    }
    return &s->pq_small[(s->pq_head + i) % PENDING_SMALL];
}

/* Moves the queue to the heap ring; 0, or -1 (out of memory). */
static int pq_grow(stp_session_t *s)
{
    pending_t *big = malloc(PENDING_MAX * sizeof(*big));
    if (big == NULL) {
        return -1;
    }
    for (unsigned i = 0; i < s->pq_len; i++) {
        big[i] = *pq_at(s, i);
    }
    s->pq_big = big;
    s->pq_head = 0;
    return 0;
}

static int pq_has_backend(stp_session_t *s)
{
    for (unsigned i = 0; i < s->pq_len; i++) {
        if (pq_at(s, i)->kind != P_LOCAL) {
            return 1;
        }
    }
    return 0;
}

static void pq_push(stp_session_t *s, pending_kind_t kind, unsigned verb, const char *text,
                    pending_action_t action)
{
    if (s->pq_big == NULL && s->pq_len == PENDING_SMALL && pq_grow(s) < 0) {
        finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
        return;
    }
    pending_t *p = pq_at(s, s->pq_len++);
    p->kind = (unsigned char)kind;
    p->verb = (unsigned char)verb;
    p->text = text;
    p->action = (unsigned char)action;
}

/* The queue never overflows: client input is held while it is nearly full. */
static int pq_full(const stp_session_t *s)
{
    return s->pq_len >= PENDING_MAX - 1;
}

static void pq_pop(stp_session_t *s)
{
    s->pq_len--;
    if (s->pq_big == NULL) {
        s->pq_head = (s->pq_head + 1) % PENDING_SMALL;
    } else if (s->pq_len == 0) {
        free(s->pq_big);
        s->pq_big = NULL;
        s->pq_head = 0;
    } else {
        s->pq_head = (s->pq_head + 1) % PENDING_MAX;
    }
}

static void fail_reply(stp_session_t *s, const char *code, const char *text, const char *result,
                       const char *error);

static void local_reply(stp_session_t *s, const char *text, pending_action_t action)
{
    if (text[0] == '5' && ++s->errors >= ERRORS_MAX) {
        /* A client that keeps sending what the proxy refuses (a line of
         * junk is a reply of 40 bytes) is ended, as Postfix does. */
        fail_reply(s, "421 4.7.0", "Error: too many errors", "protocol", "too many errors");
        return;
    }
    pq_push(s, P_LOCAL, 0, text, action);
    flush_queue(s);
}

/* A command to the backend. The RSET owed since STARTTLS (rset_due, only
 * with a backend that offers PIPELINING) leads it in the same write: RSET may
 * stand anywhere in a pipelined group (RFC 2920 3.1), and its reply is read
 * and dropped like the one sent alone. */
static void backend_send(stp_session_t *s, unsigned verb, const char *line, size_t len,
                         pending_kind_t kind)
{
    uv_buf_t b[3] = {uv_buf_init("RSET\r\n", 6), uv_buf_init((char *)line, (unsigned)len),
                     uv_buf_init("\r\n", 2)};
    int rset = s->rset_due;
    if (s->up_ehlo) {
        drop_kept_ehlo(s);
    }
    if (verb != STP_CMD_MAIL && verb != STP_CMD_RCPT && verb != STP_CMD_DATA &&
        verb != STP_CMD_RSET && verb != STP_CMD_NOOP) {
        s->up_private = 1; /* AUTH, the legacy MTA's EHLO...: never parked for another session */
    }
    if (stp_conn_writev(s->up, b + !rset, 2 + rset) < 0) {
        if (!is_mx(s)) {
            finish(s, LOST_421, "backend-lost", "write to backend failed");
            return;
        }
        /* queued as if sent: the close answers it as a reply owed */
        mx_up_broken(s, "write to next hop failed", mx_lost);
    }
    if (rset) {
        s->rset_due = 0;
        pq_push(s, P_INTERNAL, V_RSET_INTERNAL, NULL, A_NONE);
    }
    pq_push(s, kind, verb, NULL, A_NONE);
}

/* ---- lifetime ---- */

static const char *level_name(stp_tls_level_t l)
{
    static const char *const names[] = {"none", "may", "encrypt", "verify", "secure"};
    return (unsigned)l < 5 ? names[l] : "?";
}

static void destroy(stp_session_t *s)
{
    char backend[80];
    uint64_t ms = uv_now(s->loop) - s->start_ms;

    /* Counters and the connection slot first: once the session line is in
     * the log, the metrics count the session and its address may connect
     * again. */
    stp_sm_session_close(s->conf->name,
                         s->conf->mode == STP_MODE_OUTBOUND ? s->up_version : s->tls_version,
                         !s->limits_taken || (s->result && strcmp(s->result, "denied") == 0));
    if (s->limits_taken) {
        stp_limits_release(s->listener->limits, (const struct sockaddr *)&s->peer);
    }

    char helo[sizeof(s->helo) * 4 + 4];
    /* the client's HELO name is peer text: escaped like any other */
    stp_log_escape(helo, sizeof(helo), s->helo[0] ? s->helo : "-", s->helo[0] ? strlen(s->helo) : 1);
    if (s->conf->mode == STP_MODE_OUTBOUND) {
        stp_log(STP_LOG_INFO,
                "session id=%s listener=%s client=%s next_hop=%s policy=%s%s tls=%s cipher=%s "
                "verify=%s decision=%s helo=%s messages=%u rejected=%u bytes_in=%llu "
                "bytes_out=%llu result=%s duration=%llu.%03llus%s%s%s",
                s->id, s->conf->name, s->peer_str, s->next_hop_str[0] ? s->next_hop_str : "-",
                s->conf->route == STP_ROUTE_MX ? (s->mx_level ? s->mx_level : "per-domain")
                                               : level_name(s->conf->tls),
                s->conf->testing ? "(testing)" : "",
                s->up_version[0] ? s->up_version : "none", s->up_cipher[0] ? s->up_cipher : "none",
                s->verify ? s->verify : "skipped", s->decision ? s->decision : "none",
                helo, s->messages, s->rejected,
                (unsigned long long)s->client.bytes_in, (unsigned long long)s->client.bytes_out,
                s->result ? s->result : "closed", (unsigned long long)(ms / 1000),
                (unsigned long long)(ms % 1000), s->error[0] ? " error=\"" : "", s->error,
                s->error[0] ? "\"" : "");
        goto logged;
    }
    stp_sockaddr_str((const struct sockaddr *)&s->conf->backend.addr, backend, sizeof(backend), 1);
    stp_log(STP_LOG_INFO,
            "session id=%s listener=%s client=%s tls=%s cipher=%s sni=%s backend=%s helo=%s "
            "messages=%u rejected=%u bytes_in=%llu bytes_out=%llu result=%s duration=%llu.%03llus%s%s%s",
            s->id, s->conf->name, s->peer_str, s->tls_version[0] ? s->tls_version : "none",
            s->tls_cipher[0] ? s->tls_cipher : "none", s->sni[0] ? s->sni : "-", backend,
            helo, s->messages, s->rejected,
            (unsigned long long)s->client.bytes_in, (unsigned long long)s->client.bytes_out,
            s->result ? s->result : "closed", (unsigned long long)(ms / 1000),
            (unsigned long long)(ms % 1000), s->error[0] ? " error=\"" : "", s->error,
            s->error[0] ? "\"" : "");
logged:
    for (unsigned i = 0; i < s->pq_len; i++) {
        pending_t *p = pq_at(s, i);
        if (p->kind == P_BACKEND && p->verb == STP_CMD_MAIL) {
            free((char *)p->text);
        }
    }
    free(s->held);
    free(s->early);
    free(s->sasl_buf);
    free(s->xc_line);
    free(s->up_ehlo);
    free(s->rp);
    free(s->pq_big);
    free(s->pp);
    free(s->mx_mail);
    free(s->mx_rcpt);
    free(s->mx_failed_reply);
    stp_listener_t *l = s->listener;
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        l->sessions = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    l->nsessions--;
    stp_runtime_unref(s->rt);
    free(s);
    stp_listener_session_done(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    stp_session_t *s = h->data;
    if (--s->open_handles == 0) {
        destroy(s);
    }
}

static void close_timer(uv_timer_t *t)
{
    if (!uv_is_closing((uv_handle_t *)t)) {
        uv_close((uv_handle_t *)t, on_handle_closed);
    }
}

static void on_linger(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    stp_conn_close(&s->client); /* the client did not read our last reply in time */
}

/* A lingering close's timer: the client was quiet LINGER_QUIET_MS; if it
 * has not read the last reply yet, it has until linger_end to do so. */
static void on_linger_quiet(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    if (s->client.wq_bytes > 0 && now < s->linger_end) {
        uv_timer_start(t, on_linger_quiet, s->linger_end - now, 0);
        return;
    }
    stp_conn_close(&s->client);
}

/* Lingering: n more bytes of the client's were read and dropped. */
static void client_on_linger(stp_conn_t *c, size_t n)
{
    stp_session_t *s = c->owner;
    uint64_t now = uv_now(s->loop);
    s->linger_bytes += n;
    if (s->linger_bytes > LINGER_MAX_BYTES || now >= s->linger_end) {
        stp_conn_close(c); /* the reset that was put off, if it still sends */
        return;
    }
    uint64_t left = s->linger_end - now;
    uv_timer_start(&s->client_timer, on_linger_quiet,
                   left < LINGER_QUIET_MS ? left : LINGER_QUIET_MS, 0);
}

/*
 * The client may still be sending as its session ends: in the middle of a
 * message, behind a refused BDAT (its chunk), or ahead of what was answered
 * (input held, commands in flight, or the read being worked through). Its
 * connection then gets a lingering close (stp_conn_linger()): closed with
 * its bytes unread, or with more on the way, it would get a reset instead of
 * the last reply and an end of file. Not after QUIT (result "ok": nothing
 * more is expected, and the common end stays as cheap as it is), once the
 * client has closed its side, in a TLS handshake, or before its session
 * began (refused at connect: it waits for a greeting).
 */
static int client_may_send(const stp_session_t *s, const char *result)
{
    if (!s->limits_taken || s->client.eof || s->client.closing || s->tls == T_HANDSHAKE ||
        s->quit_seen || strcmp(result, "ok") == 0) {
        return 0;
    }
    return s->state == S_DATA || s->bdat || s->held_len > 0 || s->pq_len > 0 || s->in_input;
}

/*
 * The one way out. `reply` (a complete CRLF-terminated line, or NULL) is the
 * last thing the client hears; `result` is a short token for the log.
 */
static void finish(stp_session_t *s, const char *reply, const char *result, const char *error)
{
    if (s->state == S_CLOSING) {
        return;
    }
    int backend_idle = s->state == S_COMMAND && s->pq_len == 0 && !s->quit_seen;
    int linger = client_may_send(s, result);
    if (s->state == S_DATA && s->early) {
        log_early(s); /* the message ends here, at its dot or without it */
    }
    s->state = S_CLOSING;
    if (s->result == NULL) {
        s->result = result;
    }
    set_error(s, error);
    /* The last reply and the TLS close_notify leave in one write. */
    stp_conn_cork(&s->client);
    if (reply) {
        client_write(s, reply, strlen(reply));
    }
    if (linger) {
        stp_conn_linger(&s->client);
    } else {
        stp_conn_close_after_write(&s->client);
    }
    stp_conn_uncork(&s->client);
    if (s->nh) {
        stp_nexthop_cancel(s->nh); /* its callback comes back once its conn is closed */
    }
    if (s->backend_up) {
        /* A polite QUIT only between transactions: inside DATA, closing
         * without the final dot is what makes the backend drop the message. */
        if (backend_idle && !s->up->closing && !s->up->eof) {
            stp_conn_write(s->up, "QUIT\r\n", 6);
            stp_conn_close_after_write(s->up);
        } else {
            stp_conn_close(s->up);
        }
    }
    uv_timer_stop(&s->backend_timer);
    uv_timer_stop(&s->session_timer);
    close_timer(&s->backend_timer);
    close_timer(&s->session_timer);
    /* The client timer stays as a linger limit until the client is closed. */
    if (s->client.closing) {
        close_timer(&s->client_timer);
    } else if (s->client.lingering) {
        s->linger_end = uv_now(s->loop) + LINGER_MS;
        uv_timer_start(&s->client_timer, on_linger_quiet, LINGER_QUIET_MS, 0);
    } else {
        uv_timer_start(&s->client_timer, on_linger, LINGER_MS, 0);
    }
}

static void fail_reply(stp_session_t *s, const char *code, const char *text, const char *result,
                       const char *error)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s %s %s\r\n", code, hostname(s), text);
    finish(s, buf, result, error);
}

/* ---- timers ---- */


/* A client's handshake that did not finish (refused, timed out, or the
 * client closed): counted in both metrics, whatever ended it. */
static void client_handshake_failed(stp_session_t *s, const char *reason)
{
    stp_sm_handshake(s->conf->name, "server", NULL, 0, (uv_hrtime() - s->hs_start_ns) / 1e9);
    stp_sm_starttls(s->conf->name, "failed", reason);
}

static void on_client_timeout(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    const char *what = s->tls == T_HANDSHAKE              ? "handshake"
                       : stp_conn_congested(&s->client) ? "client not reading"
                       : s->state == S_DATA             ? "data"
                                                        : "idle";
    stp_log(STP_LOG_INFO, "timeout id=%s client=%s phase=\"%s\"", s->id, s->peer_str, what);
    if (s->tls == T_HANDSHAKE) {
        client_handshake_failed(s, "timeout");
    }
    fail_reply(s, "421 4.4.2", "Error: timeout exceeded", "timeout", what);
}

static void up_reuse_failed(stp_session_t *s, const char *why);
static void up_handshake_failed(stp_session_t *s, const char *why);

static void on_backend_timeout(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    if (s->up_phase == UP_REUSE) {
        up_reuse_failed(s, "no reply to RSET");
        return;
    }
    if (s->up_phase == UP_HANDSHAKE) {
        /* a failed handshake like any other: 4.7.5 where TLS is required,
         * once more in plaintext under `may` */
        char why[400];
        snprintf(why, sizeof(why), "TLS handshake with %s timed out", s->next_hop_str);
        stp_log(STP_LOG_WARN, "timeout id=%s client=%s phase=\"next hop handshake\"", s->id,
                s->peer_str);
        up_handshake_failed(s, why);
        return;
    }
    if (!s->backend_up) {
        arm_timers(s); /* nothing to wait for (route = mx: the next hop is gone) */
        return;
    }
    const char *what = s->state == S_CONNECTING ? "backend connect"
                       : stp_conn_congested(s->up) ? "backend not reading"
                       : s->state == S_GREETING    ? "backend greeting"
                                                   : "backend reply";
    stp_log(STP_LOG_WARN, "timeout id=%s client=%s phase=\"%s\"", s->id, s->peer_str, what);
    if (is_mx(s)) {
        /* route = mx: a next hop that does not answer (or read the
         * message) is dropped as one that closed: what it owed gets 451
         * 4.4.2 and the legacy MTA's session goes on */
        mx_up_broken(s, stp_conn_congested(s->up) ? "did not read in time" : "no reply in time",
                     mx_silent);
        return;
    }
    if (s->state == S_CONNECTING) {
        fail_reply(s, "421 4.4.1", "Service unavailable: mail server not reachable",
                   "backend-unavailable", what);
    } else {
        fail_reply(s, "421 4.4.2", "Service unavailable: mail server not responding",
                   "backend-timeout", what);
    }
}

static void on_session_timeout(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    fail_reply(s, "421 4.4.2", "Error: session time limit exceeded", "timeout", "session");
}

static uint64_t backend_wait_ms(stp_session_t *s)
{
    const stp_listener_conf_t *c = s->conf;
    if (s->state == S_CONNECTING) {
        return c->connect_timeout;
    }
    if (s->up_phase == UP_HANDSHAKE) {
        return c->handshake_timeout;
    }
    if (s->up_phase == UP_REUSE) {
        return c->connect_timeout; /* a live next hop answers RSET at once; else connect anew */
    }
    if (s->state == S_GREETING) {
        return s->up_phase ? c->command_timeout : c->greeting_timeout;
    }
    for (unsigned i = 0; i < s->pq_len; i++) {
        if (pq_at(s, i)->verb == V_DATA_END) {
            return c->command_timeout > FINAL_REPLY_MIN_MS ? c->command_timeout
                                                          : FINAL_REPLY_MIN_MS;
        }
    }
    return c->command_timeout;
}

/*
 * Derives which waits are running from the state; called after every event.
 * A side whose write queue is full (it does not read what the proxy sends)
 * is the one waited for: the other side's reading stopped because of it
 * (update_reading), so its timer would blame the wrong party.
 */
static void arm_timers(stp_session_t *s)
{
    const stp_listener_conf_t *c = s->conf;

    if (s->state == S_CLOSING) {
        return;
    }
    int client_stuck = stp_conn_congested(&s->client);
    int backend_stuck = s->backend_up && stp_conn_congested(s->up);
    uint64_t client_ms = 0;
    if (s->tls == T_HANDSHAKE) {
        client_ms = c->handshake_timeout;
    } else if (client_stuck) {
        client_ms = c->command_timeout;
    } else if (backend_stuck) {
        client_ms = 0; /* its input waits for the backend */
    } else if (s->state == S_DATA) {
        client_ms = c->data_timeout;
    } else if (s->state == S_COMMAND && !s->paused && !pq_has_backend(s)) {
        client_ms = c->idle_timeout;
    }
    if (client_ms) {
        uv_timer_start(&s->client_timer, on_client_timeout, client_ms, 0);
    } else {
        uv_timer_stop(&s->client_timer);
    }

    int backend_wait = s->backend_up && !client_stuck &&
                       (s->state == S_CONNECTING || s->state == S_GREETING ||
                        pq_has_backend(s) || backend_stuck);
    if (backend_wait) {
        uint64_t ms = !backend_stuck       ? backend_wait_ms(s)
                      : s->state == S_DATA ? c->data_timeout
                                           : c->command_timeout;
        uv_timer_start(&s->backend_timer, on_backend_timeout, ms, 0);
    } else {
        uv_timer_stop(&s->backend_timer);
    }
}

/* ---- flow control ---- */

/*
 * Client reading stops lazily while a reply is awaited (paused: after DATA,
 * AUTH, during XCLIENT): a well-behaved client sends nothing until the reply,
 * so stopping and restarting the read would cost two epoll_ctl calls per
 * message for nothing. Bytes that do arrive early are held, never acted on,
 * and the read stops then, so at most one read's worth is held. After
 * STARTTLS and QUIT (discard_input) reading stops at once.
 */
static void update_reading(stp_session_t *s)
{
    if (s->state == S_CLOSING) {
        return;
    }
    int client = s->tls == T_HANDSHAKE ||
                 ((s->state == S_COMMAND || s->state == S_DATA) &&
                  !(s->paused && s->held_len) && !pq_full(s) && !s->discard_input &&
                  !(s->backend_up && stp_conn_congested(s->up)) &&
                  !stp_conn_congested(&s->client)) || /* it does not read our replies */
                 /* route = mx: a next hop attempt can take minutes; keep
                  * reading (input is held) so a client that leaves is seen */
                 (s->nh != NULL && !s->discard_input);
    if (client) {
        stp_conn_read_start(&s->client);
    } else {
        stp_conn_read_stop(&s->client);
    }
    if (s->backend_up) {
        if (!stp_conn_congested(&s->client)) { /* reading began with the connect */
            stp_conn_read_start(s->up);
        } else {
            stp_conn_read_stop(s->up);
        }
    }
}

static void hold(stp_session_t *s, const char *p, size_t n)
{
    if (s->held_len + n > HELD_MAX) {
        fail_reply(s, "421 4.7.0", "Error: too much pipelined input", "protocol",
                   "held input over limit");
        return;
    }
    if (s->held_len + n > s->held_cap) {
        size_t cap = s->held_cap ? s->held_cap : 4096;
        while (cap < s->held_len + n) {
            cap *= 2;
        }
        char *nb = realloc(s->held, cap);
        if (nb == NULL) {
            finish(s, NULL, "error", "out of memory");
            return;
        }
        s->held = nb;
        s->held_cap = cap;
    }
    memcpy(s->held + s->held_len, p, n);
    s->held_len += n;
}

/* Lets client input flow again after the reply it waited for. */
static void resume(stp_session_t *s)
{
    if (s->held_len && !s->paused) {
        char *buf = s->held;
        size_t len = s->held_len;
        s->held = NULL;
        s->held_len = s->held_cap = 0;
        process(s, buf, len);
        free(buf);
    }
    update_reading(s);
}

/* ---- client side: commands ---- */

static void start_client_tls(stp_session_t *s)
{
    stp_tls_engine_t *e = stp_tls_engine_new_server(s->rt->server_ctx);
    if (e == NULL) {
        finish(s, NULL, "error", "out of memory");
        return;
    }
    s->tls = T_HANDSHAKE;
    s->hs_start_ns = uv_hrtime();
    stp_conn_start_tls(&s->client, e);
}

static void bdat_refused(stp_session_t *s);

static void flush_queue(stp_session_t *s)
{
    while (s->pq_len && pq_at(s, 0)->kind == P_LOCAL && s->state != S_CLOSING) {
        pending_t p = *pq_at(s, 0);
        pq_pop(s);
        if (p.action == A_QUIT) {
            up_park(s); /* parked (and logged) before the client has its 221 */
        }
        client_write(s, p.text, strlen(p.text));
        if (p.action == A_STARTTLS) {
            start_client_tls(s);
        } else if (p.action == A_CLOSE) {
            finish(s, NULL, "shutdown", NULL);
        } else if (p.action == A_QUIT) {
            finish(s, NULL, "ok", NULL);
        } else if (p.action == A_BDAT) {
            bdat_refused(s);
        }
    }
}

static void forward(stp_session_t *s, unsigned verb, const char *line, size_t len)
{
    backend_send(s, verb, line, len, P_BACKEND);
}

/*
 * MAIL FROM with SIZE= for a backend that does not offer SIZE (the client
 * saw the proxy's own SIZE): relayed without it, as RFC 1870 leaves a server
 * without the extension free to refuse the parameter (555). The limit was
 * already checked against the declared size, and the data is counted.
 */
static void forward_mail_without_size(stp_session_t *s, const char *line, size_t len,
                                      const stp_cmd_t *cmd)
{
    size_t head = (size_t)(cmd->arg - line); /* "MAIL FROM:" as the client wrote it */
    char *out = malloc(len + 2);
    int n = out ? stp_env_mail_without_size(cmd->arg, cmd->arg_len, out + head, len + 2 - head)
                : -1;
    if (n < 0) {
        free(out);
        forward(s, STP_CMD_MAIL, line, len); /* the backend judges it as it is */
        return;
    }
    memcpy(out, line, head);
    forward(s, STP_CMD_MAIL, out, head + (size_t)n); /* the line, without CRLF */
    free(out);
}

/* A client's MAIL FROM, forwarded (without SIZE= when strip_size); its
 * queue entry carries the sender to the reply, which makes it the
 * transaction's (mail_from) only if it accepts it. */
static void forward_mail(stp_session_t *s, const char *line, size_t len, const stp_cmd_t *cmd,
                         int strip_size)
{
    char from[sizeof(s->mail_from)];
    stp_log_escape(from, sizeof(from), cmd->arg, cmd->arg_len);
    char *copy = strdup(from);
    if (copy == NULL) {
        finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
        return;
    }
    if (strip_size) {
        forward_mail_without_size(s, line, len, cmd);
    } else {
        forward(s, STP_CMD_MAIL, line, len);
    }
    if (s->state == S_CLOSING) {
        free(copy); /* not sent, or no queue entry */
        return;
    }
    pq_at(s, s->pq_len - 1)->text = copy;
}

/*
 * XCLIENT (Postfix's XCLIENT_README): tells the backend the real client's
 * address (after a PROXY header), port and HELO name, so its logs, access
 * rules and Received: header name the client and not the proxy.
 *
 * Once per session, at the client's first EHLO/HELO, with client input held
 * until the exchange is over (nothing may reach the backend in between):
 *
 *   proxy -> backend  EHLO name        (a HELO client's name, too: only an
 *                                       EHLO reply lists XCLIENT)
 *   backend           250-... XCLIENT ADDR PORT HELO PROTO ...
 *   proxy -> backend  XCLIENT ADDR=... PORT=... HELO=... PROTO=ESMTP|SMTP
 *   backend           220 ...          (a new greeting: the session restarts)
 *   proxy -> backend  the client's own EHLO/HELO line
 *   backend           250 ...          relayed (EHLO reply rewritten as usual)
 *
 * so the client sees exactly one reply to its EHLO: the backend's reply after
 * XCLIENT. A backend that does not offer XCLIENT (Postfix offers it only to
 * smtpd_authorized_xclient_hosts) gets the session without it and the first
 * EHLO reply is the client's (logged once: xclient=unsupported). A backend
 * that offers XCLIENT and then refuses it ends the session with 421 4.3.0:
 * going on would present the proxy's own address as the client, which a
 * backend trusting the proxy's network (Postfix's mynetworks) could treat as
 * a permission to relay.
 *
 * After STARTTLS no XCLIENT is sent again: the backend connection is the
 * same, and Postfix keeps the XCLIENT attributes for the rest of the
 * connection (a new EHLO only changes the HELO name, which the client's new
 * EHLO sets itself); a second XCLIENT would also be judged against the
 * address the first one installed, not the proxy's.
 */
static void xclient_begin(stp_session_t *s, unsigned verb, const char *line, size_t len,
                          const char *arg, size_t arg_len)
{
    char probe[8 + 1024];

    s->xclient_tried = 1;
    s->xc_line = malloc(len ? len : 1);
    if (s->xc_line == NULL) {
        finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
        return;
    }
    memcpy(s->xc_line, line, len);
    s->xc_len = len;
    s->xc_verb = (unsigned char)verb;
    s->paused = 1;
    if (verb == STP_CMD_EHLO) {
        backend_send(s, V_XC_EHLO, line, len, P_BACKEND);
        return;
    }
    if (arg_len > sizeof(probe) - 6) {
        arg_len = sizeof(probe) - 6; /* only the reply's keywords matter */
    }
    memcpy(probe, "EHLO ", 5);
    memcpy(probe + 5, arg, arg_len);
    backend_send(s, V_XC_EHLO, probe, 5 + arg_len, P_BACKEND);
}

/* The client's EHLO/HELO has had its reply: client input flows again. */
static void xclient_end(stp_session_t *s)
{
    if (s->xc_line) {
        free(s->xc_line);
        s->xc_line = NULL;
        s->paused = 0;
    }
}

/* code: the backend's reply to XCLIENT when it refused it, else 0 */
static void xclient_log(stp_session_t *s, const char *result, int code)
{
    if (code) {
        stp_log(STP_LOG_WARN, "backend id=%s backend=%s client=%s xclient=%s code=%d", s->id,
                s->next_hop_str, s->peer_str, result, code);
    } else {
        stp_log(STP_LOG_INFO, "backend id=%s backend=%s client=%s xclient=%s", s->id,
                s->next_hop_str, s->peer_str, result);
    }
}

/* The backend's reply to the EHLO that asked for its capabilities. */
static void xclient_probe_reply(stp_session_t *s, const stp_reply_t *r)
{
    char line[1200], helo[256];

    if (r->code / 100 == 2 && stp_xclient_offered(r)) {
        stp_cmd_t cmd;
        stp_cmd_parse(s->xc_line, s->xc_len, &cmd);
        /* a name too long for XCLIENT is sent as [UNAVAILABLE] */
        size_t n = cmd.arg_len < sizeof(helo) ? cmd.arg_len : 0;
        memcpy(helo, cmd.arg, n);
        helo[n] = '\0';
        n = stp_xclient_format(line, sizeof(line), (const struct sockaddr *)&s->peer, helo,
                               s->xc_verb == STP_CMD_EHLO);
        if (n == 0) {
            fail_reply(s, "421 4.3.0", "Error: cannot identify the client to the mail server",
                       "xclient-refused", "XCLIENT line too long");
            return;
        }
        backend_send(s, V_XCLIENT, line, n, P_BACKEND);
        return;
    }
    if (r->code / 100 == 2 || r->code == 500 || r->code == 502) {
        /* 500/502: a server without EHLO (RFC 821) has no XCLIENT either */
        xclient_log(s, "unsupported", 0);
        s->xclient_done = 1;
    } else {
        /* Refused (an EHLO without a name, say): nothing was learned, so
         * the next EHLO/HELO asks again, and until then no command that
         * the client's address matters for reaches the backend. */
        s->xclient_tried = 0;
    }
    if (s->xc_verb == STP_CMD_HELO && r->code != 421) {
        /* a HELO client gets the reply to its own HELO, not to our EHLO */
        backend_send(s, STP_CMD_HELO, s->xc_line, s->xc_len, P_BACKEND);
        return;
    }
    if (r->code / 100 == 2) {
        relay_ehlo(s, r);
    } else if (ehlo_fallback(s, r)) {
        return; /* the HELO's reply answers the client's EHLO (and ends this) */
    } else {
        relay(s, r);
    }
    xclient_end(s);
}

/* The backend's reply to XCLIENT: a new greeting, then the client's line. */
static void xclient_reply(stp_session_t *s, const stp_reply_t *r)
{
    if (r->code != 220) {
        char text[160];
        size_t len;
        const char *t = stp_reply_text(r, r->nlines - 1, &len);
        xclient_log(s, "refused", r->code);
        stp_log_escape(text, sizeof(text), t, len);
        fail_reply(s, "421 4.3.0", "Error: the mail server refused to learn the client's address",
                   "xclient-refused", text);
        return;
    }
    xclient_log(s, "ok", 0);
    s->xclient_done = 1;
    backend_send(s, s->xc_verb, s->xc_line, s->xc_len, P_BACKEND);
}

/* Outbound: the next hop is reached without TLS (`may` found none, or
 * `testing` let a failure through) though the level asked for it, or with
 * TLS whose certificate did not verify though the level (verify, secure)
 * asked for that (`testing` let it through: anyone in the path can present
 * a certificate). The legacy MTA cannot see either, and would hand its
 * password to whoever stripped the STARTTLS or intercepted the TLS: AUTH is
 * neither offered nor relayed then (tls = none is the administrator's
 * explicit choice of plaintext, encrypt that of unauthenticated TLS, and
 * both stay as they are). Returns NULL when AUTH is safe, else the static
 * 538 reply that refuses it. */
static const char *up_auth_unsafe(const stp_session_t *s)
{
    if (s->conf->mode != STP_MODE_OUTBOUND || s->conf->tls == STP_TLS_LEVEL_NONE) {
        return NULL;
    }
    if (s->up_version[0] == '\0') {
        return "538 5.7.11 Encryption required for requested authentication mechanism "
               "(the next hop is reached without TLS)\r\n";
    }
    if (s->conf->tls >= STP_TLS_LEVEL_VERIFY &&
        (s->verify == NULL || strcmp(s->verify, "ok") != 0)) {
        return "538 5.7.11 Encryption required for requested authentication mechanism "
               "(the next hop's certificate was not verified)\r\n";
    }
    return NULL;
}

/*
 * A SASL response can be longer than any command: RFC 4954 4 wants
 * responses read whatever the line limit, and names 12288 octets (a
 * Kerberos ticket of GSSAPI, an XOAUTH2 token). The line reader gets a
 * buffer that large only while an exchange is on (the client is paused when
 * the 334 arrives, so no line is half read), never for commands.
 */
#define SASL_RESPONSE_MAX 12288

static void sasl_begin(stp_session_t *s)
{
    s->sasl = 1;
    if (s->conf->max_line_length >= SASL_RESPONSE_MAX) {
        return;
    }
    if (s->sasl_buf == NULL && (s->sasl_buf = malloc(SASL_RESPONSE_MAX)) == NULL) {
        return; /* the command line limit stays: an over-long response cancels */
    }
    stp_line_init(&s->line, s->sasl_buf, SASL_RESPONSE_MAX);
}

/* After the response was forwarded (it may live in sasl_buf until then). */
static void sasl_end(stp_session_t *s)
{
    s->sasl = 0;
    if (s->sasl_buf != NULL) {
        stp_line_init(&s->line, s->line_buf, s->conf->max_line_length);
        free(s->sasl_buf);
        s->sasl_buf = NULL;
    }
}

static void handle_line(stp_session_t *s, const char *line, size_t len)
{
    stp_cmd_t cmd;
    const stp_listener_conf_t *c = s->conf;
    int tls = s->tls == T_ACTIVE;
    const char *refusal;

    if (s->sasl) {
        /* A SASL response: relayed as is and never logged. Base64 has no
         * CR or NUL: one inside would be a line end to a lenient backend
         * (a command smuggled past the proxy), so the exchange is
         * cancelled instead (RFC 4954 4), as for an over-long line. */
        if (memchr(line, '\r', len) || memchr(line, '\0', len)) {
            forward(s, V_SASL, "*", 1);
        } else {
            forward(s, V_SASL, line, len);
        }
        sasl_end(s);
        s->paused = 1;
        return;
    }
    if (s->draining) {
        local_reply(s, "421 4.3.2 Service shutting down, closing connection\r\n", A_CLOSE);
        return;
    }

    stp_cmd_parse(line, len, &cmd);
    if (stp_log_enabled(STP_LOG_DEBUG)) {
        char esc[200];
        /* AUTH arguments are credentials: only the verb is logged. */
        stp_log_escape(esc, sizeof(esc), line, cmd.verb == STP_CMD_AUTH ? 4 : len);
        stp_log(STP_LOG_DEBUG, "command id=%s line=\"%s\"", s->id, esc);
    }
    if (cmd.malformed) {
        local_reply(s,
                    cmd.verb == STP_CMD_MAIL || cmd.verb == STP_CMD_RCPT
                        ? "501 5.5.4 Syntax error in parameters or arguments\r\n"
                        : "500 5.5.2 Error: bad syntax\r\n",
                    A_NONE);
        return;
    }

    if (is_mx(s) && mx_command(s, &cmd, line, len)) {
        return;
    }
    /* starttls = require: before TLS only what leads to it. RFC 3207 4:
     * every command but NOOP, EHLO, STARTTLS and QUIT gets 530, so VRFY,
     * EXPN, ETRN or HELP never reach the backend in plaintext (nor HELO: a
     * client without EHLO cannot start TLS). */
    if (c->mode == STP_MODE_INBOUND && c->starttls == STP_STARTTLS_REQUIRE && !tls &&
        cmd.verb != STP_CMD_EHLO && cmd.verb != STP_CMD_NOOP && cmd.verb != STP_CMD_QUIT &&
        cmd.verb != STP_CMD_STARTTLS &&
        cmd.verb != STP_CMD_BDAT) { /* its chunk must never be read as commands: below */
        local_reply(s, "530 5.7.0 Must issue a STARTTLS command first\r\n", A_NONE);
        return;
    }
    if (c->mode == STP_MODE_INBOUND && c->xclient && !s->xclient_done &&
        (cmd.verb == STP_CMD_MAIL || cmd.verb == STP_CMD_RCPT || cmd.verb == STP_CMD_DATA ||
         cmd.verb == STP_CMD_AUTH || cmd.verb == STP_CMD_VRFY || cmd.verb == STP_CMD_EXPN ||
         cmd.verb == STP_CMD_ETRN)) {
        /* The backend would take it as coming from the proxy's address,
         * which it may trust (Postfix's mynetworks): an open relay. */
        local_reply(s, "503 5.5.1 Error: send HELO/EHLO first\r\n", A_NONE);
        return;
    }
    switch (cmd.verb) {
    case STP_CMD_STARTTLS:
        if (c->mode == STP_MODE_OUTBOUND) {
            local_reply(s, "502 5.5.1 Error: command not implemented\r\n", A_NONE);
        } else if (cmd.arg_len) {
            local_reply(s, "501 5.5.4 Syntax: STARTTLS\r\n", A_NONE);
        } else if (tls) {
            local_reply(s, "554 5.5.1 Error: TLS already active\r\n", A_NONE);
        } else if (s->rt->server_ctx == NULL || c->starttls == STP_STARTTLS_IMPLICIT) {
            local_reply(s, "502 5.5.1 Error: command not implemented\r\n", A_NONE);
        } else {
            /* Everything behind STARTTLS in this read, and anything arriving
             * before the 220 is out, is dropped: it was sent in plaintext
             * and must never be executed inside TLS. */
            s->discard_input = 1;
            s->paused = 1;
            stp_line_reset(&s->line);
            local_reply(s, "220 2.0.0 Ready to start TLS\r\n", A_STARTTLS);
        }
        return;

    case STP_CMD_AUTH:
        if (!tls && c->mode == STP_MODE_INBOUND) {
            local_reply(s, "530 5.7.0 Must issue a STARTTLS command first\r\n", A_NONE);
        } else if ((refusal = up_auth_unsafe(s)) != NULL) {
            local_reply(s, refusal, A_NONE);
        } else if (s->authenticated) {
            local_reply(s, "503 5.5.1 Error: already authenticated\r\n", A_NONE);
        } else {
            forward(s, STP_CMD_AUTH, line, len);
            s->paused = 1;
        }
        return;

    case STP_CMD_XCLIENT:
    case STP_CMD_XFORWARD:
        local_reply(s, "550 5.7.0 Error: command not permitted\r\n", A_NONE);
        return;

    case STP_CMD_BDAT:
        /* CHUNKING is never offered, so the proxy does not follow BDAT's
         * framing: the octets behind the line are a message chunk, and
         * read as commands they would run at the backend (a transaction
         * made of message text) and put the client, which expects one
         * reply per BDAT, out of step. So nothing behind the line is
         * read as commands (it is dropped, bdat_refused()); the replies
         * owed before it are relayed, then this one, and the session ends
         * (RFC 5321 7.8). A 5xx, not 421: by RFC 3030
         * 2 it fails the message, so the sender bounces it instead of
         * retrying the same BDAT for days. Not 521 (what Postfix says):
         * RFC 7504 3 keeps that for hosts that never accept mail. */
        s->discard_input = 1;
        s->paused = 1;
        s->bdat = 1;
        local_reply(s, BDAT_502, A_BDAT);
        return;

    case STP_CMD_TURN:
        local_reply(s, "502 5.5.1 Error: command not implemented\r\n", A_NONE);
        return;

    case STP_CMD_UNKNOWN:
        local_reply(s, "500 5.5.2 Error: command not recognized\r\n", A_NONE);
        return;

    case STP_CMD_MAIL:
    case STP_CMD_RCPT:
    case STP_CMD_DATA:
        if (c->starttls == STP_STARTTLS_REQUIRE && !tls) {
            local_reply(s, "530 5.7.0 Must issue a STARTTLS command first\r\n", A_NONE);
            return;
        }
        if (!s->ehlo_seen) {
            local_reply(s, "503 5.5.1 Error: send HELO/EHLO first\r\n", A_NONE);
            return;
        }
        if (cmd.verb == STP_CMD_MAIL) {
            uint64_t size;
            /* SIZE= matters only with a limit (size_added implies one). */
            int declared = c->max_message_size && stp_env_mail_size(cmd.arg, cmd.arg_len, &size);
            /* A declared size over the limit is refused now, not after the
             * whole message was sent (RFC 1870 6.1); the EHLO reply showed
             * the limit. */
            if (declared && size > c->max_message_size) {
                local_reply(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n", A_NONE);
                return;
            }
            forward_mail(s, line, len, &cmd, declared && s->size_added);
            return;
        }
        forward(s, cmd.verb, line, len);
        if (cmd.verb == STP_CMD_DATA) {
            s->paused = 1; /* content only after the backend's 354 */
        }
        return;

    case STP_CMD_HELO:
    case STP_CMD_EHLO: {
        size_t n = cmd.arg_len < sizeof(s->helo) - 1 ? cmd.arg_len : sizeof(s->helo) - 1;
        memcpy(s->helo, cmd.arg, n);
        s->helo[n] = '\0';
        /* Counted at once, so an envelope pipelined behind it is not refused;
         * a backend that rejects the EHLO will refuse the envelope itself. */
        s->ehlo_seen = 1;
        s->esmtp = cmd.verb == STP_CMD_EHLO;
        if (cmd.verb == STP_CMD_EHLO && s->up_ehlo && s->pq_len == 0) {
            /* nothing in flight: the kept reply is the next one owed */
            client_write(s, s->up_ehlo, s->up_ehlo_len);
            free(s->up_ehlo);
            s->up_ehlo = NULL;
            return;
        }
        if (c->mode == STP_MODE_INBOUND && c->xclient && !s->xclient_tried) {
            xclient_begin(s, cmd.verb, line, len, cmd.arg, cmd.arg_len);
            return;
        }
        forward(s, cmd.verb, line, len);
        return;
    }

    case STP_CMD_QUIT:
        if (s->state == S_COMMAND && s->pq_len == 0 && s->backend_up) {
            /* Nothing owed: the client's 221 need not wait for the
             * backend's; finish() still says QUIT to the backend, unless
             * the connection is parked for the next session. */
            up_park(s);
            finish(s, "221 2.0.0 Bye\r\n", "ok", NULL);
            return;
        }
        if (s->upc != NULL && s->state == S_COMMAND && s->backend_up) {
            /* QUIT behind replies still owed (Postfix pipelines it right
             * behind the final dot): answered here once they are relayed,
             * so that the connection can still be parked. */
            s->discard_input = 1;
            s->paused = 1;
            local_reply(s, "221 2.0.0 Bye\r\n", A_QUIT);
            return;
        }
        forward(s, cmd.verb, line, len);
        s->quit_seen = 1;
        s->discard_input = 1;
        s->paused = 1;
        return;

    default: /* RSET NOOP VRFY EXPN HELP ETRN */
        forward(s, cmd.verb, line, len);
        return;
    }
}

static void data_begin(stp_session_t *s)
{
    s->state = S_DATA;
    s->msg_abort = NULL;
    stp_data_scan_init(&s->scan, s->conf->bare_newlines == STP_BARE_NORMALIZE ? STP_DATA_NORMALIZE
                                                                             : STP_DATA_REJECT);
    /* Sent with the first content: one write to the backend, not two. */
    s->trace_owed = s->conf->trace_header != 0;
}

/* The trace header owed to this message, built into buf; returns its length. */
static size_t trace_header(stp_session_t *s, char *buf, size_t size)
{
    stp_trace_t t = {
        .helo = s->helo,
        .client = (const struct sockaddr *)&s->peer,
        .hostname = hostname(s),
        .id = s->id,
        .esmtp = s->esmtp,
        .authenticated = s->authenticated,
        .tls_version = s->tls == T_ACTIVE ? s->tls_version : NULL,
        .tls_cipher = s->tls_cipher,
        .tls_bits = s->tls_bits,
        .now = time(NULL),
    };
    s->trace_owed = 0;
    return stp_trace_header(&t, buf, size);
}

/* A message refused by the proxy itself; reply: its CRLF-ended reply. */
static void log_refused(stp_session_t *s, const char *reply)
{
    s->rejected++;
    stp_log(STP_LOG_INFO, "message id=%s.%u client=%s from=\"%s\" result=refused reason=\"%.*s\"",
            s->id, s->messages + s->rejected, s->peer_str, s->mail_from, (int)strlen(reply) - 2,
            reply); /* without its CRLF */
    stp_sm_message(s->conf->name, 0, 0);
}

/* The BDAT refusal has reached the client (the replies owed before it
 * first). A transaction with accepted recipients was a message sent with
 * BDAT: it gets its line, like a message the proxy refuses after DATA.
 *
 * The chunk behind the BDAT is still on its way: closing with it unread
 * makes the kernel answer with a reset, and a client that writes the whole
 * chunk before it reads (Postfix) gets "connection reset" instead of the
 * 502 and sends the same BDAT again later. So the session ends with a
 * lingering close (s->bdat, client_may_send()): the rest is read and dropped
 * until the client closes, is quiet LINGER_QUIET_MS (it has sent its chunk
 * and read the 502), or LINGER_MS at most. */
static void bdat_refused(stp_session_t *s)
{
    if (s->mail_from[0] != '\0' && s->rcpts) {
        log_refused(s, BDAT_502);
    }
    finish(s, NULL, "protocol", "BDAT without CHUNKING");
}

static void log_message_as(stp_session_t *s, int code, const char *t, size_t len);
static void txn_reset(stp_session_t *s);

/* The line for a message its backend answered in the middle of DATA
 * (s->early): at the client's final dot, or when the session ends before it
 * (finish()). */
static void log_early(stp_session_t *s)
{
    s->rejected++;
    log_message_as(s, s->early->code, s->early->raw + s->early->text_off, s->early->text_len);
}

/* The message ended but is refused by the proxy, or by the backend in the
 * middle of it (early): the backend connection is dropped before the final
 * dot, so the legacy MTA discards what it got. route = mx, the session goes
 * on (neither a next hop's failure nor one refused message ends the legacy
 * MTA's session): refused by the next hop, it is gone already; refused by
 * the proxy, its connection is dropped now, without the dot, and the next
 * RCPT connects anew. 1 then, 0 once the session has ended. */
static int data_refuse(stp_session_t *s)
{
    if (is_mx(s)) {
        if (s->early) {
            log_early(s);
        } else {
            log_refused(s, s->msg_abort);
        }
        if (s->backend_up) {
            char esc[200];
            stp_log_escape(esc, sizeof(esc), s->msg_abort, strlen(s->msg_abort) - 2);
            stp_log(STP_LOG_INFO,
                    "mx id=%s domain=%s next_hop=%s command=message proxy_reply=\"%s\" "
                    "connection=dropped",
                    s->id, s->mx_domain, s->next_hop_str, esc);
            mx_drop_up(s); /* in DATA: closed, never the dot */
        }
        client_write(s, s->msg_abort, strlen(s->msg_abort));
        free(s->early);
        s->early = NULL;
        s->msg_abort = NULL;
        s->state = S_COMMAND;
        mx_end_transaction(s, 0); /* the next hop is gone: nothing to reset */
        txn_reset(s);
        s->paused = 0;
        drain_if_idle(s);
        return s->state != S_CLOSING;
    }
    if (s->backend_up) {
        stp_conn_close(s->up);
    }
    if (s->early) {
        char error[64];
        snprintf(error, sizeof(error), "backend replied %d during DATA", s->early->code);
        finish(s, s->msg_abort, "message-refused", error); /* its line: log_early() */
        return 0;
    }
    log_refused(s, s->msg_abort);
    finish(s, s->msg_abort, "message-refused", "bare CR/LF or size in DATA");
    return 0;
}

/* Streams message content; returns how many input bytes were used. */
static size_t data_input(stp_session_t *s, const char *p, size_t n)
{
    size_t consumed = 0, produced = 0;
    size_t chunk = n < DATA_CHUNK ? n : DATA_CHUNK;
    /* The usual case forwards the client's own bytes; a copy only where
     * the scanner holds or repairs some (a chunk that ends inside a line
     * end, bare_newlines = normalize). */
    char *copy = stp_data_scan_verbatim(&s->scan) ? NULL : data_out();
    const char *out = copy != NULL ? copy : p;
    int rc = stp_data_scan(&s->scan, p, chunk, copy, &consumed, &produced);

    /* Judged before this chunk is forwarded: the chunk may hold the final
     * dot, and a next hop that got it would deliver a message the client
     * is told was refused. */
    if (rc == STP_DATA_BARE && s->msg_abort == NULL) {
        s->msg_abort = "554 5.6.0 Error: bare CR, LF or NUL in message data is not allowed "
                       "(SMTP smuggling protection); message refused\r\n";
    }
    if (s->conf->max_message_size && stp_data_size(&s->scan) > s->conf->max_message_size &&
        s->msg_abort == NULL) {
        s->msg_abort = "552 5.3.4 Error: message size exceeds fixed limit\r\n";
    }
    if (s->msg_abort != NULL && s->backend_up && !is_mx(s)) {
        /* Refused: the backend gets nothing more. Left waiting, idle, for
         * the rest of the message, it could time out (Postfix: 300 s) and
         * its close would turn the refusal into a 421 (a retry, for days, of
         * a message that can never pass). Dropped now, without the dot, it
         * discards what it got. */
        stp_conn_close(s->up);
        s->backend_up = 0;
        s->up = NULL;
    }
    if (s->msg_abort == NULL) {
        char hdr[1024];
        uv_buf_t b[2];
        unsigned nb = 0;
        if (produced && s->trace_owed) {
            b[nb].len = trace_header(s, hdr, sizeof(hdr));
            b[nb].base = hdr;
            nb += b[nb].len > 0;
        }
        b[nb++] = uv_buf_init((char *)out, (unsigned)produced);
        if (produced && stp_conn_writev(s->up, b, nb) < 0) {
            if (!is_mx(s)) {
                finish(s, "451 4.4.2 Error: connection to mail server lost\r\n",
                       "backend-lost", "write to backend failed");
                return n;
            }
            mx_up_broken(s, "write to next hop failed", mx_lost); /* the dot gets 451 */
        }
    }
    if (rc == STP_DATA_DONE) {
        if (s->msg_abort) {
            /* route = mx: what follows the dot is the next command */
            return data_refuse(s) ? consumed : n;
        }
        s->state = S_COMMAND;
        pq_push(s, P_BACKEND, V_DATA_END, NULL, A_NONE);
    }
    return consumed;
}

static void process_input(stp_session_t *s, const char *p, size_t n)
{
    while (n > 0 && s->state != S_CLOSING) {
        if (s->discard_input) {
            if (stp_log_enabled(STP_LOG_DEBUG)) {
                stp_log(STP_LOG_DEBUG, "discard id=%s bytes=%zu", s->id, n);
            }
            return;
        }
        if (s->paused || pq_full(s) || s->state == S_CONNECTING || s->state == S_GREETING ||
            mx_wait(s)) {
            hold(s, p, n);
            return;
        }
        if (s->state == S_DATA) {
            size_t used = data_input(s, p, n);
            p += used;
            n -= used;
            continue;
        }
        size_t used = 0;
        int rc = stp_line_feed(&s->line, p, n, &used);
        p += used;
        n -= used;
        if (rc == STP_LINE_DONE) {
            handle_line(s, s->line.buf, s->line.len);
        } else if (rc == STP_LINE_TOOLONG) {
            if (s->sasl) {
                sasl_end(s);
                forward(s, V_SASL, "*", 1); /* cancel the exchange (RFC 4954) */
                s->paused = 1;
            } else {
                local_reply(s, "500 5.5.2 Error: line too long\r\n", A_NONE);
            }
        }
    }
}

static void process(stp_session_t *s, const char *p, size_t n)
{
    unsigned was = s->in_input;
    s->in_input = 1; /* a session ending now may have more of this input coming */
    process_input(s, p, n);
    s->in_input = was;
}

/* ---- client callbacks ---- */

static void client_on_read(stp_conn_t *c, const char *data, size_t len)
{
    stp_session_t *s = c->owner;
    if (s->pp) {
        size_t used = proxy_header_input(s, data, len);
        if (s->pp || s->state == S_CLOSING) {
            return;
        }
        data += used;
        len -= used;
        if (s->tls == T_HANDSHAKE) {
            /* Implicit TLS: what followed the header in this read (a load
             * balancer may send the header and the ClientHello in one
             * segment) is the handshake's. */
            stp_conn_feed_tls(c, data, len);
            return;
        }
    }
    /* Commands pipelined in this read reach the backend in one write, and
     * the replies given here reach the client in one. */
    stp_conn_t *up = s->backend_up ? s->up : NULL;
    stp_conn_cork(&s->client);
    if (up) {
        stp_conn_cork(up);
    }
    process(s, data, len);
    stp_conn_uncork(&s->client);
    if (up && stp_conn_uncork(up) < 0 && up == s->up) {
        if (is_mx(s)) {
            mx_up_broken(s, "write to next hop failed", mx_lost);
        } else {
            finish(s, LOST_421, "backend-lost", "write to backend failed");
        }
    }
    update_reading(s);
    arm_timers(s);
}

static void client_on_eof(stp_conn_t *c, const char *err)
{
    stp_session_t *s = c->owner;
    if (s->state == S_CLOSING) {
        stp_conn_close(c);
        return;
    }
    if (s->quit_seen && err == NULL) {
        finish(s, NULL, "ok", NULL);
    } else if (err == NULL && s->state == S_COMMAND && pq_has_backend(s)) {
        /* shutdown(SHUT_WR) right after the final dot: the reply to it
         * still reaches the client (which would otherwise send the message
         * again), as with a server that reads no further ahead. route = mx
         * too: a QUIT held behind the dot (mx_wait) is answered after it;
         * during an MX attempt nothing is owed to the backend yet, so the
         * session ends at once and the attempt is cancelled. */
        s->client_eof = 1;
    } else {
        if (s->tls == T_HANDSHAKE) {
            client_handshake_failed(s, "closed");
        }
        finish(s, NULL, s->tls == T_HANDSHAKE ? "tls-failed" : "client-closed", err);
    }
}

static void client_on_handshake(stp_conn_t *c, const char *err)
{
    stp_session_t *s = c->owner;

    if (err) {
        s->tls = T_NONE;
        stp_log(STP_LOG_INFO, "tls id=%s client=%s result=failed error=\"%s\"", s->id,
                s->peer_str, err);
        client_handshake_failed(s, "handshake");
        finish(s, NULL, "tls-failed", err);
        return;
    }
    s->tls = T_ACTIVE;
    snprintf(s->tls_version, sizeof(s->tls_version), "%s", stp_tls_engine_version(c->tls));
    snprintf(s->tls_cipher, sizeof(s->tls_cipher), "%s", stp_tls_engine_cipher(c->tls));
    s->tls_bits = stp_tls_engine_cipher_bits(c->tls);
    const char *sni = stp_tls_engine_sni(c->tls);
    if (sni) {
        stp_log_escape(s->sni, sizeof(s->sni), sni, strlen(sni));
    }
    stp_log(STP_LOG_DEBUG, "tls id=%s client=%s version=%s cipher=%s", s->id, s->peer_str,
            s->tls_version, s->tls_cipher);
    stp_sm_handshake(s->conf->name, "server", s->tls_version, 1,
                     (uv_hrtime() - s->hs_start_ns) / 1e9);
    stp_sm_starttls(s->conf->name, "accepted", NULL);

    /* Nothing learned before TLS survives it (RFC 3207 4.2): the client
     * must EHLO again and the backend forgets any envelope. */
    s->ehlo_seen = 0;
    s->esmtp = 0;
    s->authenticated = 0;
    s->helo[0] = '\0';
    s->mail_from[0] = '\0';
    s->rcpts = 0;
    stp_line_reset(&s->line);
    free(s->held);
    s->held = NULL;
    s->held_len = s->held_cap = 0;
    s->discard_input = 0;

    if (s->conf->starttls == STP_STARTTLS_IMPLICIT) {
        s->paused = 1; /* until the backend's greeting has been relayed */
        backend_connect(s);
    } else {
        /* The backend forgets the envelope before any command from inside
         * TLS reaches it: the RSET leads the client's next command in one
         * write when the backend pipelines (one write and one reply read
         * less per session), else it goes out now, alone. */
        if (s->up_pipelining) {
            s->rset_due = 1;
        } else {
            backend_send(s, V_RSET_INTERNAL, "RSET", 4, P_INTERNAL);
        }
        s->paused = 0;
    }
    update_reading(s);
    arm_timers(s);
}

static void conn_on_close(stp_conn_t *c)
{
    stp_session_t *s = c->owner;
    /* a backend connection in memory of its own (connection_cache_time) */
    stp_upconn_t *own = c != &s->client && c != &s->backends[0] && c != &s->backends[1]
                            ? (stp_upconn_t *)c
                            : NULL;
    if (c == &s->client) {
        close_timer(&s->client_timer);
        if (s->state != S_CLOSING) {
            finish(s, NULL, "client-closed", NULL);
        }
    } else if (c == s->up && s->state != S_CLOSING && is_mx(s)) {
        /* closed under the session (mx_up_broken(): a failed write, no
         * answer in time): as if the next hop had closed; the slot is
         * still taken while this runs */
        mx_next_hop_lost(s, s->mx_drop_why ? s->mx_drop_why : "connection closed");
    } else if (c == s->up && s->state != S_CLOSING) {
        finish(s, LOST_421, "backend-lost", NULL);
    }
    if (c == &s->backends[0] || c == &s->backends[1]) {
        s->slot_busy[c - s->backends] = 0;
    }
    if (own != NULL && own == s->upc) {
        s->upc = NULL;
    }
    if (--s->open_handles == 0) {
        destroy(s);
    }
    stp_upconn_free(own);
}

static void conn_on_drain(stp_conn_t *c)
{
    stp_session_t *s = c->owner;
    update_reading(s);
}

static const stp_conn_cb_t client_cb = {
    .on_read = client_on_read,
    .on_eof = client_on_eof,
    .on_handshake = client_on_handshake,
    .on_drain = conn_on_drain,
    .on_close = conn_on_close,
    .on_linger = client_on_linger,
};

/* ---- backend side ---- */

static void relay(stp_session_t *s, const stp_reply_t *r)
{
    client_write(s, r->raw, r->raw_len);
}

/* The client's view of a backend's (or next hop's) EHLO reply, written to
 * out (STP_REPLY_MAX_BYTES + 64 bytes); up_pipelining and size_added follow
 * what it offers. Returns its length. */
static size_t ehlo_view(stp_session_t *s, const stp_reply_t *r, char *out, size_t size)
{
    size_t len = 0;
    int tls = s->tls == T_ACTIVE;
    stp_ehlo_opts_t o = {
        .drop = STP_EHLO_STARTTLS | STP_EHLO_CHUNKING | STP_EHLO_BINARYMIME | STP_EHLO_XCLIENT |
                STP_EHLO_XFORWARD | STP_EHLO_ATRN | STP_EHLO_REQUIRETLS,
        .drop_unknown = 1,
        .add_starttls = !tls && s->rt->server_ctx != NULL &&
                        s->conf->starttls != STP_STARTTLS_IMPLICIT,
        .size_limit = s->conf->max_message_size, /* enforced on the data too */
        .add_size = 1, /* a backend without SIZE: the client still learns the limit */
    };
    if (s->conf->mode == STP_MODE_OUTBOUND) {
        /* The legacy MTA talks plaintext to us on a trusted network; it sees
         * the next hop's capabilities, AUTH included, never STARTTLS. */
        o.add_starttls = 0;
        if (up_auth_unsafe(s)) {
            o.drop |= STP_EHLO_AUTH;
        }
    } else if (!tls && s->conf->hide_auth_before_tls) {
        o.drop |= STP_EHLO_AUTH;
    }
    unsigned seen = 0;
    if (stp_ehlo_rewrite(r, &o, out, size, &len, &seen) == 0) {
        s->up_pipelining = (seen & STP_EHLO_PIPELINING) != 0;
        s->size_added = o.size_limit != 0 && (seen & STP_EHLO_SIZE) == 0;
        if (o.add_starttls && r->code == 250) {
            stp_sm_starttls(s->conf->name, "offered", NULL);
        }
        return len;
    }
    /* Fail closed: never pass the backend's own keywords through
     * unfiltered; a bare 250 offers no extension at all. */
    s->up_pipelining = 0;
    s->size_added = 0;
    int n = snprintf(out, size, "250 %s\r\n", hostname(s));
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static void relay_ehlo(stp_session_t *s, const stp_reply_t *r)
{
    char out[STP_REPLY_MAX_BYTES + 64];
    client_write(s, out, ehlo_view(s, r, out, sizeof(out)));
}

/*
 * Inbound, a backend that does not know EHLO (RFC 821 only: 500 or 502, RFC
 * 5321 4.1.4) is greeted with HELO instead, and the client's EHLO answered
 * from that reply as an EHLO reply without extensions, which the rewrite
 * gives STARTTLS (and SIZE under a limit). Relayed as it was, the 5xx made
 * clients fall back to HELO and never see STARTTLS: all mail in plaintext
 * (under starttls = require, none at all). Only with nothing else owed
 * (no command pipelined behind the EHLO). 1 if the HELO went.
 */
static int ehlo_fallback(stp_session_t *s, const stp_reply_t *r)
{
    char line[sizeof(s->helo) + 8];
    if (s->conf->mode != STP_MODE_INBOUND || (r->code != 500 && r->code != 502) ||
        s->pq_len != 0 || s->helo[0] == '\0') {
        return 0;
    }
    int n = snprintf(line, sizeof(line), "HELO %s", s->helo);
    stp_log(STP_LOG_INFO, "backend id=%s backend=%s ehlo=refused code=%d fallback=HELO", s->id,
            s->next_hop_str, r->code);
    backend_send(s, V_HELO_FALLBACK, line, (size_t)n, P_BACKEND);
    return s->state != S_CLOSING;
}

/*
 * Outbound: the next hop has just answered the proxy's own EHLO (after TLS,
 * or before it where TLS is optional and not offered). The legacy MTA's
 * first EHLO is answered with that reply instead of being sent again: the
 * next hop knows its client by the proxy's name, not by an internal one
 * like exchange01.corp.local (which MTAs that check HELO names refuse), and
 * the session saves a round trip through TLS. Any other command first, or
 * out of memory, and the EHLO goes to the next hop as before.
 */
static int keep_ehlo_text(stp_session_t *s, const char *text, size_t len)
{
    s->up_ehlo = malloc(len);
    if (s->up_ehlo == NULL) {
        return -1;
    }
    memcpy(s->up_ehlo, text, len);
    s->up_ehlo_len = len;
    return 0;
}

static void keep_ehlo(stp_session_t *s, const stp_reply_t *r)
{
    char out[STP_REPLY_MAX_BYTES + 64];
    (void)keep_ehlo_text(s, out, ehlo_view(s, r, out, sizeof(out)));
}

/* The kept EHLO reply is no longer the next hop's answer (another command
 * went to it first): the legacy MTA has seen no extension yet. */
static void drop_kept_ehlo(stp_session_t *s)
{
    free(s->up_ehlo);
    s->up_ehlo = NULL;
    s->up_pipelining = 0;
    s->size_added = 0;
}

static void handle_greeting(stp_session_t *s, const stp_reply_t *r)
{
    relay(s, r);
    if (r->code != 220) {
        finish(s, NULL, "backend-refused", "backend greeting was not 220");
        return;
    }
    s->state = S_COMMAND;
    s->paused = 0;
    resume(s);
}

/*
 * One line per message at its final reply, answering "was this mail
 * encrypted, and with what?" for the hop the proxy makes: inbound the
 * client's TLS, outbound the next hop's (with its verification and
 * address: the legacy server's side is plaintext by design).
 */
static void log_message_as(stp_session_t *s, int code, const char *t, size_t len)
{
    char text[160];
    stp_log_escape(text, sizeof(text), t, len);
    const char *result = code / 100 == 2 ? "accepted" : code / 100 == 4 ? "tempfail" : "rejected";
    unsigned long long size = (unsigned long long)stp_data_size(&s->scan);
    if (s->conf->mode == STP_MODE_OUTBOUND) {
        stp_log(STP_LOG_INFO,
                "message id=%s.%u client=%s from=\"%s\" rcpts=%u size=%llu next_hop=%s tls=%s "
                "cipher=%s verify=%s result=%s code=%d reply=\"%s\"",
                s->id, s->messages + s->rejected, s->peer_str, s->mail_from, s->rcpts, size,
                s->next_hop_str[0] ? s->next_hop_str : "-",
                s->up_version[0] ? s->up_version : "none", s->up_cipher[0] ? s->up_cipher : "none",
                s->verify ? s->verify : "skipped", result, code, text);
    } else {
        stp_log(STP_LOG_INFO,
                "message id=%s.%u client=%s from=\"%s\" rcpts=%u size=%llu tls=%s cipher=%s "
                "result=%s code=%d reply=\"%s\"",
                s->id, s->messages + s->rejected, s->peer_str, s->mail_from, s->rcpts, size,
                s->tls == T_ACTIVE ? s->tls_version : "none",
                s->tls == T_ACTIVE ? s->tls_cipher : "none", result, code, text);
    }
    stp_sm_message(s->conf->name, code, stp_data_size(&s->scan));
}

/* The line for the message whose final reply is r. */
static void log_message(stp_session_t *s, const stp_reply_t *r)
{
    size_t len;
    const char *t = stp_reply_text(r, r->nlines - 1, &len);
    log_message_as(s, r->code, t, len);
}

static const char protocol_421[] = "421 4.4.2 Error: mail server protocol error\r\n";

/*
 * A reply from the backend in the middle of DATA: after its 354, before
 * the final dot (nothing is owed then). The backend has ended the message
 * on its own (a size or content limit, say) and no longer reads what
 * follows as data: none of it may reach it, and what it got cannot be
 * taken back, so the session ends without the dot (the backend drops the
 * partial message).
 *
 * A 4xx or 5xx is the backend's answer to the message, and the client gets
 * it as written, but as the reply to its final dot: a client reads no
 * reply before it has sent its end of data, and one still writing to a
 * closed connection gets a reset (which can also wipe a reply it has not
 * read yet) and retries the message later, whatever the backend said. So
 * the backend is let go now and the rest of the data is read and dropped
 * (data_input(): msg_abort), as the proxy does with a message it refuses.
 * A 421 ends the session at once, as anywhere. A 2xx (or 1xx, 3xx) would
 * read as acceptance of a message the backend never got whole: the client
 * gets 421 4.4.2 instead, never that reply.
 *
 * route = mx: the proxy is the legacy MTA's own server, and a next hop's
 * failure never ends its session. A 4xx or 5xx is the reply to the dot as
 * above, a 421 (or the next hop's close, backend_on_eof()) gets 451 4.4.2
 * there (mx_next_hop_failed()), and after the dot the session goes on
 * (data_refuse()): the next RCPT connects anew.
 *
 * s->early (malloc) is owned by the session until the message's line is
 * written (data_refuse(), or finish() if the client never sends the dot),
 * and freed by data_refuse() (route = mx) or destroy().
 */
static void data_interrupted(stp_session_t *s, const stp_reply_t *r)
{
    size_t len;
    const char *t = stp_reply_text(r, r->nlines - 1, &len);
    int cls = r->code / 100;

    if ((cls == 4 || cls == 5) && (r->code != 421 || is_mx(s))) {
        if (s->msg_abort == NULL) { /* else the proxy's own refusal stands */
            early_reply_t *e = malloc(sizeof(*e) + r->raw_len + 1);
            if (e == NULL) {
                finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
                return;
            }
            e->code = r->code;
            e->text_off = (size_t)(t - r->raw);
            e->text_len = len;
            memcpy(e->raw, r->raw, r->raw_len);
            e->raw[r->raw_len] = '\0';
            s->early = e;
            s->msg_abort = r->code == 421 ? mx_closed : e->raw;
        }
        if (is_mx(s)) {
            if (r->code == 421) {
                mx_next_hop_failed(s, V_MESSAGE, r, NULL);
            } else {
                mx_log_dropped(s, "command=message reply", r, NULL);
                mx_up_gone(s);
            }
            return;
        }
        /* Gone from the session: its close (now, or its own) is no loss. */
        stp_conn_close(s->up);
        s->backend_up = 0;
        s->up = NULL;
        return;
    }
    s->rejected++;
    if (r->code == 421) {
        log_message(s, r);
        relay(s, r);
        finish(s, NULL, "backend-closed", "backend sent 421 during DATA");
        return;
    }
    char error[64];
    snprintf(error, sizeof(error), "backend replied %d during DATA", r->code);
    /* the line tells what the client got: without "421 " and CRLF */
    log_message_as(s, 421, protocol_421 + 4, sizeof(protocol_421) - 7);
    finish(s, protocol_421, "backend-protocol", error);
}

/* No transaction is open any more (RSET, EHLO/HELO or a final reply). */
static void txn_reset(stp_session_t *s)
{
    s->mail_from[0] = '\0';
    s->rcpts = 0;
}

/* Draining (SIGTERM): a session that has nothing in flight is told at once,
 * not only at its next command; one inside DATA, AUTH or a reply wait is told
 * when that is over. */
static void drain_if_idle(stp_session_t *s)
{
    if (s->draining && s->state == S_COMMAND && s->pq_len == 0 && !s->paused && !s->sasl &&
        !s->quit_seen) {
        fail_reply(s, "421 4.3.2", "Service shutting down, closing connection", "shutdown",
                   NULL);
    }
}

static void handle_reply(stp_session_t *s, const stp_reply_t *r)
{
    if (s->conf->mode == STP_MODE_OUTBOUND && (s->state == S_GREETING || s->up_phase)) {
        up_reply(s, r);
        return;
    }
    if (s->state == S_GREETING) {
        handle_greeting(s, r);
        return;
    }
    if (s->pq_len == 0 && r->code == 421 && is_mx(s) && s->state == S_COMMAND) {
        /* route = mx: a next hop closing between commands (its idle
         * timeout) is the next hop's business: the legacy MTA's session
         * goes on, the next RCPT connects again (as after a silent close). */
        stp_log(STP_LOG_INFO, "mx id=%s domain=%s next_hop=%s closing=421", s->id, s->mx_domain,
                s->next_hop_str);
        mx_up_gone(s);
        return;
    }
    if (s->state == S_DATA) {
        data_interrupted(s, r);
        return;
    }
    if (s->pq_len == 0 || pq_at(s, 0)->kind == P_LOCAL) {
        if (r->code == 421) {
            relay(s, r);
            finish(s, NULL, "backend-closed", "backend sent 421");
        } else {
            finish(s, protocol_421, "backend-protocol", "unexpected reply from backend");
        }
        return;
    }

    pending_t p = *pq_at(s, 0);
    pq_pop(s);
    int ok = r->code / 100 == 2;

    if (p.kind == P_INTERNAL && p.verb == V_MAIL_REPLAY) {
        mx_mail_replied(s, r);
    } else if (p.kind == P_INTERNAL) {
        if (!ok && is_mx(s)) {
            /* a 421 says it is closing (it may keep the socket open a
             * while), anything else leaves its transaction state unknown */
            mx_next_hop_failed(s, V_RSET_INTERNAL, r, NULL);
        } else if (!ok) {
            stp_log(STP_LOG_WARN, "backend id=%s internal RSET answered %d", s->id, r->code);
        }
    } else if (mx_reply_ends_next_hop(s, p.verb, r)) {
        /* answered 451; the legacy MTA's session goes on */
    } else {
        switch (p.verb) {
        case STP_CMD_EHLO:
        case V_HELO_FALLBACK:
            if (ok) {
                relay_ehlo(s, r);
                txn_reset(s); /* RFC 5321 4.1.4: as if RSET */
            } else if (p.verb == STP_CMD_EHLO && ehlo_fallback(s, r)) {
                break; /* the HELO's reply answers the client's EHLO */
            } else {
                relay(s, r);
            }
            xclient_end(s);
            break;
        case STP_CMD_HELO:
            relay(s, r);
            if (ok) {
                txn_reset(s);
            }
            xclient_end(s);
            break;
        case STP_CMD_MAIL:
            if (ok && p.text) {
                /* a new transaction; one refused (nested MAIL, say) leaves
                 * the one open as it is */
                snprintf(s->mail_from, sizeof(s->mail_from), "%s", p.text);
                s->rcpts = 0;
            }
            free((char *)p.text);
            relay(s, r);
            break;
        case STP_CMD_RSET:
            if (ok) {
                txn_reset(s);
            } else {
                s->up_unsure = 1; /* never parked (up_park) */
            }
            relay(s, r);
            break;
        case V_XC_EHLO:
            xclient_probe_reply(s, r);
            break;
        case V_XCLIENT:
            xclient_reply(s, r);
            break;
        case STP_CMD_RCPT:
            s->rcpts += ok;
            relay(s, r);
            break;
        case STP_CMD_DATA:
            relay(s, r);
            if (r->code == 354) {
                data_begin(s);
            } else if (is_mx(s)) {
                mx_end_transaction(s, 1);
            }
            s->paused = 0; /* content after 354, commands otherwise */
            break;
        case V_DATA_END:
            if (ok) {
                s->messages++;
                s->errors = 0; /* the limit is on errors without delivering mail */
            } else {
                s->rejected++;
            }
            log_message(s, r);
            relay(s, r);
            if (is_mx(s)) {
                mx_message_done(s, ok);
            }
            txn_reset(s); /* the final reply ends the transaction, whatever it says */
            break;
        case STP_CMD_AUTH:
        case V_SASL:
            relay(s, r);
            if (r->code == 334) {
                sasl_begin(s);
            } else if (r->code == 235) {
                s->authenticated = 1;
            }
            s->paused = 0;
            break;
        case STP_CMD_QUIT:
            relay(s, r);
            finish(s, NULL, "ok", NULL);
            return;
        default:
            relay(s, r);
            break;
        }
        if (s->state == S_CLOSING) {
            return;
        }
        if (r->code == 421) {
            finish(s, NULL, "backend-closed", "backend sent 421");
            return;
        }
    }
    flush_queue(s);
    resume(s);
    drain_if_idle(s);
}

/* ---- outbound: securing the next hop before the legacy MTA says a word ----
 *
 * Greeting, EHLO, STARTTLS, handshake, verification, EHLO again: only then
 * does the legacy MTA get a greeting, so no envelope or message byte ever
 * leaves before the policy is satisfied. Levels follow Postfix: none (never
 * TLS), may (opportunistic, one plaintext retry after a failed handshake),
 * encrypt (TLS required, unverified), verify and secure (TLS required, chain
 * to a trusted CA and the configured name).
 */

static void up_write(stp_session_t *s, const char *line, up_phase_t next)
{
    uv_buf_t b[2] = {uv_buf_init((char *)line, (unsigned)strlen(line)), uv_buf_init("\r\n", 2)};
    s->up_phase = next;
    if (stp_conn_writev(s->up, b, 2) < 0) {
        up_lost(s, "write failed");
    }
}

/* The next hop is ready: greet the legacy MTA and relay from now on. */
static void up_ready(stp_session_t *s)
{
    char buf[320];
    s->up_phase = UP_NONE;
    if (s->decision == NULL) {
        s->decision = s->up->tls ? "tls" : "plaintext";
        stp_sm_policy(s->conf->name, "config",
                      !s->up->tls                                    ? "plaintext"
                      : s->verify && strcmp(s->verify, "ok") == 0 ? "tls_verified"
                                                                     : "tls_encrypted");
    }
    stp_log(STP_LOG_INFO,
            "next_hop id=%s next_hop=%s policy=%s tls=%s cipher=%s verify=%s decision=%s%s",
            s->id, s->next_hop_str, level_name(s->conf->tls),
            s->up_version[0] ? s->up_version : "none", s->up_cipher[0] ? s->up_cipher : "none",
            s->verify ? s->verify : "skipped", s->decision,
            s->up_reused ? " connection=reused" : "");
    int n = snprintf(buf, sizeof(buf), "220 %s ESMTP smtp-tls-proxy\r\n", hostname(s));
    client_write(s, buf, (size_t)n);
    s->state = S_COMMAND;
    s->paused = 0;
    resume(s);
}

/* Policy says no: a deferral the legacy MTA will retry (4.7.x), or a 5.7.x
 * bounce with on_failure = reject. Nothing of the mail has left. */
static void up_refuse(stp_session_t *s, const char *subcode, const char *why)
{
    char buf[1500];
    int reject = s->conf->on_failure == STP_ON_FAILURE_REJECT;
    s->decision = reject ? "rejected" : "deferred";
    stp_log(STP_LOG_WARN, "policy id=%s next_hop=%s policy=%s decision=%s reason=\"%s\"", s->id,
            s->next_hop_str, level_name(s->conf->tls), s->decision, why);
    stp_sm_policy(s->conf->name, "config", "refused");
    stp_sm_downgrade(s->conf->name, level_name(s->conf->tls),
                     s->down_reason ? s->down_reason : "handshake");
    snprintf(buf, sizeof(buf), "%s %c.%s %s %s\r\n", reject ? "554" : "421", reject ? '5' : '4',
             subcode, hostname(s), why);
    finish(s, buf, "policy", why);
}

/* Enforcement would refuse; under `testing` the session goes on and the
 * log says what would have happened. Returns 1 if the caller may go on. */
static int up_testing(stp_session_t *s, const char *why)
{
    if (!s->conf->testing) {
        return 0;
    }
    stp_log(STP_LOG_WARN, "policy id=%s next_hop=%s policy=%s decision=testing-override "
            "would_refuse=\"%s\"", s->id, s->next_hop_str, level_name(s->conf->tls), why);
    stp_sm_policy(s->conf->name, "config", "would_refuse");
    s->decision = "testing-override";
    return 1;
}

/* The next hop offers no TLS (or refused STARTTLS) on a usable session. */
static void up_no_tls(stp_session_t *s, const char *why)
{
    if (s->conf->tls <= STP_TLS_LEVEL_MAY || up_testing(s, why)) {
        up_ready(s);
        return;
    }
    up_refuse(s, "7.4", why);
}

/* STARTTLS was attempted but no TLS session came of it: the connection is
 * unusable. Under `may` (or `testing`) retry once in plaintext. */
static void up_tls_failed(stp_session_t *s, const char *why)
{
    if ((s->conf->tls == STP_TLS_LEVEL_MAY || up_testing(s, why)) && !s->up_plain_retry) {
        stp_log(STP_LOG_INFO, "next_hop id=%s next_hop=%s retry=plaintext reason=\"%s\"", s->id,
                s->next_hop_str, why);
        s->up_plain_retry = 1;
        s->up_phase = UP_NONE;
        s->up_version[0] = s->up_cipher[0] = '\0';
        stp_conn_close(s->up);
        backend_connect(s);
        return;
    }
    up_refuse(s, "7.5", why);
}

/* The handshake with the next hop failed or timed out: counted, then as
 * any failed STARTTLS. */
static void up_handshake_failed(stp_session_t *s, const char *why)
{
    s->down_reason = "handshake";
    stp_sm_handshake(s->conf->name, "client", NULL, 0, (uv_hrtime() - s->hs_start_ns) / 1e9);
    up_tls_failed(s, why);
}

static void up_lost(stp_session_t *s, const char *why)
{
    char buf[700];
    if (s->up_phase == UP_REUSE) {
        up_reuse_failed(s, why);
        return;
    }
    if (s->up_phase == UP_HANDSHAKE || s->up_phase == UP_STARTTLS) {
        snprintf(buf, sizeof(buf), "TLS with %s failed: %s", s->next_hop_str, why);
        up_tls_failed(s, buf);
        return;
    }
    snprintf(buf, sizeof(buf), "connection to %s lost: %s", s->next_hop_str, why);
    fail_reply(s, "421 4.4.2", buf, "next-hop-lost", why);
}

/* ---- outbound: the connection cache (connection_cache_time, proxy/upcache.h) ---- */

/* What a later session taking this connection over tells its legacy MTA:
 * the next hop's reply to the EHLO that will not be sent again. */
static void up_note_ehlo(stp_session_t *s)
{
    stp_upconn_t *u = s->upc;
    if (u == NULL || s->up_ehlo == NULL) {
        return;
    }
    free(u->ehlo);
    u->ehlo = malloc(s->up_ehlo_len);
    if (u->ehlo != NULL) {
        memcpy(u->ehlo, s->up_ehlo, s->up_ehlo_len);
        u->ehlo_len = s->up_ehlo_len;
        u->pipelining = s->up_pipelining;
        u->size_added = s->size_added;
    }
}

/*
 * The legacy MTA said QUIT with nothing owed: park the next hop connection
 * for the next session instead of closing it, if it is clean. Clean: TLS as
 * policy asked (not a testing override, not plaintext), made under the
 * listener's current configuration, between transactions, and carrying
 * nothing of this session but envelopes and messages (no AUTH, no EHLO or
 * HELO of the legacy MTA's own: up_private). RSET at reuse ends a
 * transaction the legacy MTA left open; one whose RSET the next hop refused
 * (up_unsure) is not parked: that RSET would fail too. upc exists only with
 * connection_cache_time (outbound, relay or original-dst: config.c) and is
 * always the conn `up` points to.
 */
static void up_park(stp_session_t *s)
{
    stp_listener_t *l = s->listener;
    stp_upconn_t *u = s->upc;
    if (u == NULL || s->up_private || s->up_phase != UP_NONE || s->state != S_COMMAND ||
        s->pq_len != 0 || u->conn.tls == NULL || u->conn.closing || u->conn.eof ||
        u->ehlo == NULL || s->decision == NULL || strcmp(s->decision, "tls") != 0 ||
        s->draining || l->draining || l->retired || s->rt != l->rt ||
        (s->rp != NULL && !stp_reply_parser_idle(s->rp)) ||
        s->up_extra != 0 || /* the next hop said more in this read (a 421 behind the 250) */
        s->up_unsure ||     /* it refused an RSET: a transaction may still be open */
        uv_now(s->loop) - u->born_ms >= s->conf->connection_reuse_time ||
        (s->conf->connection_reuse_count && u->uses >= s->conf->connection_reuse_count)) {
        return;
    }
    /* kept no longer than its age allows, not only parked while young */
    uint64_t keep = s->conf->connection_cache_time;
    uint64_t left = s->conf->connection_reuse_time - (uv_now(s->loop) - u->born_ms);
    if (l->upcache == NULL) {
        l->upcache = stp_upcache_new(s->loop, stp_listener_upcache_closed, l);
        if (l->upcache == NULL) {
            return;
        }
    }
    snprintf(u->key, sizeof(u->key), "%s", s->next_hop_str);
    memcpy(u->version, s->up_version, sizeof(u->version));
    memcpy(u->cipher, s->up_cipher, sizeof(u->cipher));
    u->verify = s->verify;
    u->uses++;
    if (stp_upcache_put(l->upcache, u, keep < left ? keep : left) < 0) {
        return;
    }
    stp_log(STP_LOG_DEBUG, "next_hop id=%s next_hop=%s connection=parked uses=%u", s->id,
            s->next_hop_str, u->uses);
    stp_sm_conn_cache(s->conf->name, "parked");
    /* the conn is the cache's now: this session neither closes nor counts it */
    s->upc = NULL;
    s->up = NULL;
    s->backend_up = 0;
    s->open_handles--;
}

/* Takes a parked connection to the next hop, if there is one, and checks
 * with RSET that it still works before the legacy MTA is greeted. Returns 0
 * when there is none (connect as usual). */
static int up_reuse(stp_session_t *s)
{
    stp_listener_t *l = s->listener;
    if (!s->conf->connection_cache_time || l->upcache == NULL || s->rt != l->rt) {
        return 0;
    }
    stp_upconn_t *u = stp_upcache_take(l->upcache, s->next_hop_str);
    if (u == NULL) {
        return 0;
    }
    u->conn.cb = &backend_cb;
    u->conn.owner = s;
    s->upc = u;
    s->up = &u->conn;
    s->open_handles++;
    s->backend_up = 1;
    s->nbackends++;
    s->up_reused = 1;
    memcpy(s->up_version, u->version, sizeof(s->up_version));
    memcpy(s->up_cipher, u->cipher, sizeof(s->up_cipher));
    s->verify = u->verify;
    if (s->rp != NULL) {
        stp_reply_parser_init(s->rp);
    }
    s->state = S_GREETING;
    up_write(s, "RSET", UP_REUSE);
    if (s->state != S_CLOSING) {
        update_reading(s);
        arm_timers(s);
    }
    return 1;
}

/* The parked connection did not survive (the next hop closed it while it
 * was being taken, or refused RSET): nothing of the legacy MTA's session was
 * sent on it, so connect anew as if there had been none. */
static void up_reuse_failed(stp_session_t *s, const char *why)
{
    stp_log(STP_LOG_INFO, "next_hop id=%s next_hop=%s connection=reuse-failed reason=\"%s\"",
            s->id, s->next_hop_str, why);
    stp_sm_conn_cache(s->conf->name, "reuse_failed");
    s->up_phase = UP_NONE;
    s->up_reused = 0;
    s->up_version[0] = s->up_cipher[0] = '\0';
    s->verify = NULL;
    stp_conn_close(s->up);
    backend_connect(s);
}

static void up_reply(stp_session_t *s, const stp_reply_t *r)
{
    char why[700];
    const char *host = s->conf->servername[0] ? s->conf->servername : s->next_hop_str;

    if (s->state == S_GREETING && s->up_phase == UP_NONE) {
        if (r->code != 220) {
            snprintf(why, sizeof(why), "next hop %s refused the connection (%d)",
                     s->next_hop_str, r->code);
            fail_reply(s, "421 4.4.2", why, "next-hop-refused", why);
            return;
        }
        if (s->conf->tls == STP_TLS_LEVEL_NONE || s->up_plain_retry) {
            up_ready(s);
            return;
        }
        snprintf(why, sizeof(why), "EHLO %s", hostname(s));
        up_write(s, why, UP_EHLO1);
        return;
    }
    switch (s->up_phase) {
    case UP_EHLO1:
        if (r->code == 250 && (stp_ehlo_caps(r) & STP_EHLO_STARTTLS)) {
            up_write(s, "STARTTLS", UP_STARTTLS);
            return;
        }
        if (r->code == 250) {
            keep_ehlo(s, r); /* used if policy lets the session go on in plaintext */
        }
        snprintf(why, sizeof(why), "TLS is required, but was not offered by %s", host);
        s->down_reason = "not_offered";
        up_no_tls(s, why);
        return;
    case UP_STARTTLS:
        if (r->code != 220) {
            snprintf(why, sizeof(why), "TLS is required, but STARTTLS was refused by %s (%d)",
                     host, r->code);
            s->down_reason = "starttls_refused";
            up_no_tls(s, why);
            return;
        }
        if (s->up_extra > 0) {
            /* Bytes behind the 220 were sent in plaintext and would be read
             * as if inside TLS: a response injection; never go on with it. */
            snprintf(why, sizeof(why), "%s sent data after its STARTTLS response", host);
            s->down_reason = "injection";
            if (s->conf->tls == STP_TLS_LEVEL_MAY) {
                up_tls_failed(s, why); /* once more in plaintext, as for a failed handshake */
            } else {
                up_refuse(s, "7.5", why); /* even under `testing`: no plaintext way is left */
            }
            return;
        }
        {
            int idx = (int)(s->conf - s->rt->conf->listeners);
            stp_tls_engine_t *e = stp_tls_engine_new_client(
                s->rt->client_ctx[idx], s->conf->servername[0] ? s->conf->servername : NULL);
            if (e == NULL) {
                fail_reply(s, "421 4.3.0", "Error: out of resources", "error", "TLS engine");
                return;
            }
            stp_tls_verify_prepare(stp_tls_engine_ssl(e));
            /* Resume the last session with this next hop, made under the same
             * name and policy (verification is checked after it either way). */
            char key[600];
            snprintf(key, sizeof(key), "%s|%s|%s", s->next_hop_str, s->conf->servername,
                     level_name(s->conf->tls));
            (void)stp_tls_session_cache_prepare(stp_tls_engine_ssl(e), key);
            s->up_phase = UP_HANDSHAKE;
            s->hs_start_ns = uv_hrtime();
            stp_conn_start_tls(s->up, e);
        }
        return;
    case UP_EHLO2:
        if (r->code != 250) {
            snprintf(why, sizeof(why), "%s rejected EHLO after TLS (%d)", host, r->code);
            fail_reply(s, "421 4.4.2", why, "next-hop-refused", why);
            return;
        }
        keep_ehlo(s, r);
        up_note_ehlo(s);
        up_ready(s);
        return;
    case UP_REUSE:
        if (r->code != 250 || s->up_extra > 0) {
            snprintf(why, sizeof(why), "RSET answered %d%s", r->code,
                     s->up_extra > 0 ? " with more behind it" : "");
            up_reuse_failed(s, why);
            return;
        }
        if (keep_ehlo_text(s, s->upc->ehlo, s->upc->ehlo_len) == 0) {
            s->up_pipelining = s->upc->pipelining;
            s->size_added = s->upc->size_added;
        }
        stp_sm_conn_cache(s->conf->name, "reused");
        up_ready(s);
        return;
    default:
        fail_reply(s, "421 4.4.2", "Error: next hop protocol error", "next-hop-protocol",
                   "unexpected reply");
        return;
    }
}

static void up_on_handshake(stp_conn_t *c, const char *err)
{
    stp_session_t *s = c->owner;
    char why[1100], line[300];

    if (c != s->up || s->state == S_CLOSING) {
        return;
    }
    if (err) {
        snprintf(why, sizeof(why), "TLS handshake with %s failed: %s", s->next_hop_str, err);
        up_handshake_failed(s, why);
        return;
    }
    snprintf(s->up_version, sizeof(s->up_version), "%s", stp_tls_engine_version(c->tls));
    snprintf(s->up_cipher, sizeof(s->up_cipher), "%s", stp_tls_engine_cipher(c->tls));
    stp_sm_handshake(s->conf->name, "client", s->up_version, 1,
                     (uv_hrtime() - s->hs_start_ns) / 1e9);

    /* Verification is computed at every level (for the log) and enforced
     * from `verify` on. */
    const char *name = s->conf->servername;
    stp_verify_result_t vr = STP_VERIFY_NAME;
    char vwhy[300] = "no name to verify (set servername)";
    if (name[0]) {
        vr = stp_tls_verify_peer(stp_tls_engine_ssl(c->tls), &name, 1, vwhy, sizeof(vwhy));
    }
    s->verify = vr == STP_VERIFY_OK ? "ok" : "failed";
    if (vr != STP_VERIFY_OK && s->conf->tls >= STP_TLS_LEVEL_VERIFY) {
        snprintf(why, sizeof(why), "certificate verification failed for %s: %s",
                 name[0] ? name : s->next_hop_str, vwhy);
        s->down_reason = "certificate";
        if (!up_testing(s, why)) {
            up_refuse(s, "7.5", why);
            return;
        }
    }
    snprintf(line, sizeof(line), "EHLO %s", hostname(s));
    up_write(s, line, UP_EHLO2);
    update_reading(s);
    arm_timers(s);
}

static void after_client_eof(stp_session_t *s);

static void backend_on_read(stp_conn_t *c, const char *data, size_t len)
{
    stp_session_t *s = c->owner;

    if (c != s->up) {
        return; /* a connection we gave up on (plaintext retry) */
    }
    /* The reply parser (9 KB) exists only while a reply is arriving, so an
     * idle session does not keep it. */
    if (s->rp == NULL) {
        s->rp = malloc(sizeof(*s->rp));
        if (s->rp == NULL) {
            finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
            return;
        }
        stp_reply_parser_init(s->rp);
    }
    /* Replies relayed from this read (pipelined: several) reach the client
     * in one write, and what they release for the backend (content held
     * behind DATA and the commands after it) reaches it in one. */
    stp_conn_cork(&s->client);
    stp_conn_cork(c);
    /* Stop as soon as this conn is replaced (plaintext retry): what is
     * left of its bytes must never be read as the new conn's replies; or
     * given up (route = mx, mx_up_broken()): nor as replies to commands
     * that never reached it. */
    while (len > 0 && s->state != S_CLOSING && c == s->up && !c->closing) {
        size_t used = 0;
        int rc = stp_reply_feed(s->rp, data, len, &used);
        data += used;
        len -= used;
        if (rc == STP_REPLY_ERROR) {
            finish(s, protocol_421, "backend-protocol", s->rp->error);
            stp_conn_uncork(c);
            stp_conn_uncork(&s->client);
            return;
        }
        if (rc == STP_REPLY_DONE) {
            s->up_extra = len; /* bytes behind this reply in the same read */
            handle_reply(s, &s->rp->reply);
        }
    }
    s->up_extra = 0; /* all of this read was looked at */
    stp_conn_uncork(&s->client);
    if (stp_conn_uncork(c) < 0 && c == s->up) {
        if (is_mx(s)) {
            mx_up_broken(s, "write to next hop failed", mx_lost);
        } else {
            finish(s, LOST_421, "backend-lost", "write to backend failed");
        }
    }
    if (s->rp != NULL && stp_reply_parser_idle(s->rp)) {
        free(s->rp);
        s->rp = NULL;
    }
    after_client_eof(s);
    update_reading(s);
    arm_timers(s);
}

/* A client that half-closed with replies owed gets them (the one to its
 * final dot above all); then, or as soon as what it sent can no longer make
 * a whole command or message, the session ends. */
static void after_client_eof(stp_session_t *s)
{
    if (s->client_eof && s->state != S_CLOSING &&
        (s->state == S_DATA || (!pq_has_backend(s) && s->held_len == 0))) {
        finish(s, NULL, "client-closed", NULL);
    }
}

static void backend_on_eof(stp_conn_t *c, const char *err)
{
    stp_session_t *s = c->owner;
    if (c != s->up) {
        stp_conn_close(c);
        return;
    }
    if (s->up_phase != UP_NONE) {
        up_lost(s, err ? err : "connection closed");
        return;
    }
    if (is_mx(s) && (s->state == S_COMMAND || s->state == S_DATA)) {
        /* between transactions, with a reply owed or in the middle of the
         * message: the legacy MTA's session goes on, the next RCPT
         * reconnects */
        mx_next_hop_lost(s, err ? err : "connection closed");
        return;
    }
    if (s->state == S_CLOSING) {
        stp_conn_close(c);
        return;
    }
    if (s->state == S_GREETING) {
        fail_reply(s, "421 4.4.2", "Service unavailable: mail server closed the connection",
                   "backend-lost", err ? err : "backend closed before greeting");
    } else {
        fail_reply(s, "421 4.4.2", "Error: connection to mail server lost", "backend-lost",
                   err ? err : "backend closed the connection");
    }
}

static void backend_on_connect(stp_conn_t *c, const char *err)
{
    stp_session_t *s = c->owner;
    if (s->state == S_CLOSING || c != s->up) {
        return;
    }
    if (err) {
        stp_log(STP_LOG_WARN, "backend id=%s backend=%s result=unreachable error=\"%s\"", s->id,
                s->next_hop_str, err);
        fail_reply(s, "421 4.4.1", "Service unavailable: mail server not reachable",
                   "backend-unavailable", err);
        return;
    }
    s->state = S_GREETING;
    update_reading(s);
    arm_timers(s);
}

static const stp_conn_cb_t backend_cb = {
    .on_read = backend_on_read,
    .on_eof = backend_on_eof,
    .on_connect = backend_on_connect,
    .on_handshake = up_on_handshake,
    .on_drain = conn_on_drain,
    .on_close = conn_on_close,
};

/*
 * A new connection to the backend or next hop (route = mx has its own).
 * With connection_cache_time the conn lives in memory of its own, so that it
 * can outlive the session (parked); otherwise in the session, which costs no
 * allocation and keeps an idle session as small as it is.
 */
static void backend_connect(stp_session_t *s)
{
    int own = s->conf->connection_cache_time != 0;
    /* a cached one, a new one, a plaintext retry (tls = may) */
    if (s->nbackends >= (own ? 3u : 2u)) {
        fail_reply(s, "421 4.3.0", "Error: out of resources", "error", "no backend slot");
        return;
    }
    stp_upconn_t *u = own ? stp_upconn_new() : NULL;
    stp_conn_t *c = u ? &u->conn : &s->backends[s->nbackends];
    if ((own && u == NULL) || stp_conn_init(s->loop, c, &backend_cb, s) < 0) {
        free(u);
        fail_reply(s, "421 4.3.0", "Error: out of resources", "error", "backend socket");
        return;
    }
    s->nbackends++;
    if (u != NULL) {
        u->born_ms = uv_now(s->loop);
    }
    s->upc = u;
    s->up = c;
    if (s->rp != NULL) {
        stp_reply_parser_init(s->rp); /* forget a partial reply of the previous backend */
    }
    s->open_handles++;
    s->backend_up = 1;
    s->state = S_CONNECTING;
    int rc = stp_conn_connect(s->up, (const struct sockaddr *)&s->next_hop);
    if (rc == UV_EMFILE || rc == UV_ENFILE) {
        /* The proxy's own shortage, not the mail server's: said as the
         * listener says it when it cannot accept (proxy/acceptor.c). */
        fail_reply(s, "421 4.3.2", "Too many open files, try again later", "error",
                   "no descriptor for the backend connection");
        return;
    }
    if (rc < 0) {
        fail_reply(s, "421 4.4.1", "Service unavailable: mail server not reachable",
                   "backend-unavailable", uv_strerror(rc));
        return;
    }
    arm_timers(s);
}

/* ---- outbound: mx ----
 *
 * route = mx: the proxy is the legacy MTA's SMTP server until the first
 * RCPT names a domain; proxy/nexthop.c then finds and secures that domain's
 * mail server, and the remembered MAIL FROM and the RCPT are replayed to it.
 * From there the transaction is relayed as on any outbound route. One
 * transaction goes to one domain: without a queue the proxy cannot fan a
 * message out and still give one truthful reply to the final dot, so a
 * recipient of another domain gets 452 4.5.3 and the legacy MTA sends it in
 * a transaction of its own. The EHLO offered to the legacy MTA holds only
 * what can be honoured whatever the next hop turns out to be: no
 * PIPELINING (one command at a time keeps every next hop switch between
 * replies), no AUTH, no CHUNKING, no DSN.
 */

static int is_mx(const stp_session_t *s)
{
    return s->conf->mode == STP_MODE_OUTBOUND && s->conf->route == STP_ROUTE_MX;
}

/* Commands wait while the next hop owes a reply (no PIPELINING offered). */
static int mx_wait(const stp_session_t *s)
{
    return is_mx(s) && s->state == S_COMMAND && pq_has_backend((stp_session_t *)s);
}

static void mx_write(stp_session_t *s, const char *text)
{
    client_write(s, text, strlen(text));
}

static void mx_greet(stp_session_t *s)
{
    char buf[320];
    snprintf(s->next_hop_str, sizeof(s->next_hop_str), "mx");
    int n = snprintf(buf, sizeof(buf), "220 %s ESMTP smtp-tls-proxy\r\n", hostname(s));
    client_write(s, buf, (size_t)n);
    s->state = S_COMMAND;
    update_reading(s);
    arm_timers(s);
}

/* Drops the next hop connection (QUIT first when it can still be said). */
static void mx_drop_up(stp_session_t *s)
{
    if (s->backend_up) {
        if (!s->up->closing && !s->up->eof && s->state == S_COMMAND) {
            stp_conn_write(s->up, "QUIT\r\n", 6);
            stp_conn_close_after_write(s->up);
        } else {
            stp_conn_close(s->up);
        }
    }
    s->backend_up = 0;
    s->up = NULL;
    s->mx_mail_sent = 0;
    s->mx_domain[0] = '\0';
}

static void mx_up_gone(stp_session_t *s)
{
    if (s->mx_mail_sent && s->rcpts) {
        s->mx_txn_lost = 1; /* accepted recipients are gone with it: DATA gets a 4xx */
    }
    mx_drop_up(s);
}

/*
 * route = mx: the next hop failed; r: its reply (a 421, or a refused RSET),
 * or NULL: it closed the connection (err says how). It is closing or
 * unsure, not the proxy: relayed, its 421 (or the proxy's own 421 for a
 * lost connection) would end the legacy MTA's whole session, and with it the
 * mail for every other domain. The connection is dropped now rather than at
 * its close (a command in between would go to a server that no longer
 * listens) and the next RCPT connects anew. What failed (verb):
 *   V_MAIL_REPLAY    the replayed MAIL: the RCPT behind it gets 451 4.4.2
 *   STP_CMD_RCPT     the RCPT gets 451 4.4.2
 *   STP_CMD_DATA     DATA gets 451 4.4.2; the transaction is over
 *   V_DATA_END       the final dot gets 451 4.4.2 (the message is not
 *                    accepted, so the legacy MTA keeps it; logged tempfail)
 *   V_MESSAGE        in the middle of the message: the final dot will get
 *                    451 4.4.2 (s->early, data_refuse()); when it closed,
 *                    s->early is allocated here (malloc), owned as
 *                    data_interrupted() says
 *   V_RSET_INTERNAL  the proxy's own RSET: nobody waits for its reply
 * Any other command the next hop owed a reply gets 451 4.4.2 too.
 */
/* The mx line of a next hop connection dropped: `what` was answered r
 * (its first line), or nothing (err: how it went). */
static void mx_log_dropped(stp_session_t *s, const char *what, const stp_reply_t *r,
                           const char *err)
{
    char esc[200];
    if (r != NULL) {
        size_t len;
        const char *t = stp_reply_text(r, 0, &len);
        stp_log_escape(esc, sizeof(esc), t, len);
        stp_log(STP_LOG_WARN, "mx id=%s domain=%s next_hop=%s %s=\"%d %s\" connection=dropped",
                s->id, s->mx_domain, s->next_hop_str, what, r->code, esc);
    } else {
        stp_log_escape(esc, sizeof(esc), err, strlen(err));
        stp_log(STP_LOG_WARN,
                "mx id=%s domain=%s next_hop=%s %s=none error=\"%s\" connection=dropped", s->id,
                s->mx_domain, s->next_hop_str, what, esc);
    }
}

static void mx_next_hop_failed(stp_session_t *s, unsigned verb, const stp_reply_t *r,
                               const char *err)
{
    const char *what = verb == V_MAIL_REPLAY     ? "mail_reply"
                       : verb == V_RSET_INTERNAL ? "rset_reply"
                       : verb == STP_CMD_RCPT    ? "command=RCPT reply"
                       : verb == STP_CMD_DATA    ? "command=DATA reply"
                       : verb == V_DATA_END      ? "command=end-of-data reply"
                       : verb == V_MESSAGE       ? "command=message reply"
                                                 : "command=other reply";
    /* the proxy dropped it (mx_up_broken()) or it closed */
    const char *reply = s->mx_drop_reply ? s->mx_drop_reply : mx_closed;
    size_t n = strlen(reply);
    mx_log_dropped(s, what, r, err);
    if (verb == V_MESSAGE) {
        if (s->msg_abort == NULL) { /* no reply of its own to keep */
            early_reply_t *e = malloc(sizeof(*e) + n + 1);
            if (e == NULL) {
                finish(s, "421 4.3.0 Error: out of resources\r\n", "error", "out of memory");
                return;
            }
            e->code = 451;
            e->text_off = 4;
            e->text_len = n - 6; /* without "451 " and CRLF */
            memcpy(e->raw, reply, n + 1);
            s->early = e;
            s->msg_abort = e->raw;
        }
        mx_up_gone(s);
        return;
    }
    if (verb == V_DATA_END) {
        s->rejected++;
        if (r != NULL) {
            log_message(s, r); /* tempfail, with the next hop's 421 */
        } else {
            log_message_as(s, 451, reply + 4, n - 6);
        }
        txn_reset(s);
    }
    if (verb != V_RSET_INTERNAL) {
        mx_write(s, reply);
    }
    if (verb == V_MAIL_REPLAY) {
        free(s->mx_rcpt);
        s->mx_rcpt = NULL;
    }
    if (verb == STP_CMD_DATA || verb == V_DATA_END) {
        mx_end_transaction(s, 0); /* over; and nothing to reset on a closing connection */
    }
    if (verb != STP_CMD_RCPT && verb != V_RSET_INTERNAL) {
        s->paused = 0;
    }
    mx_up_gone(s);
}

/* route = mx: the next hop's reply to the replayed MAIL, a RCPT, DATA or
 * the final dot that ends it: a 421 (it is closing), or a reply no such
 * command can have (a 354 to MAIL, RCPT or the dot, a 250 to DATA: out of
 * step with the commands,
 * so none of its later replies can be trusted, and the legacy MTA must
 * never take one for its own). The command is answered 451 4.4.2
 * (mx_next_hop_failed()) and the session goes on; 0 for any other reply,
 * which handle_reply() relays. */
static int mx_reply_ends_next_hop(stp_session_t *s, unsigned verb, const stp_reply_t *r)
{
    if (!is_mx(s) || (verb != V_MAIL_REPLAY && verb != STP_CMD_RCPT && verb != STP_CMD_DATA &&
                      verb != V_DATA_END)) {
        return 0;
    }
    int cls = r->code / 100;
    int fits = cls == 4 || cls == 5 || (verb == STP_CMD_DATA ? r->code == 354 : cls == 2);
    if (r->code != 421 && fits) {
        return 0;
    }
    if (r->code != 421) {
        s->mx_drop_reply = mx_lost;
    }
    mx_next_hop_failed(s, verb, r, NULL);
    s->mx_drop_reply = NULL;
    return 1;
}

/* route = mx: the next hop closed the connection (or reset it) outside
 * DATA. Idle, it is the next hop's business; with replies owed (the proxy's
 * own RSET, the replayed MAIL, a RCPT, DATA or the final dot) each is
 * failed as mx_next_hop_failed() says. The session goes on. */
static void mx_next_hop_closed(stp_session_t *s, const char *err)
{
    while (s->pq_len > 0 && pq_at(s, 0)->kind != P_LOCAL && s->state != S_CLOSING) {
        pending_t p = *pq_at(s, 0);
        pq_pop(s);
        mx_next_hop_failed(
            s, p.kind == P_INTERNAL && p.verb != V_MAIL_REPLAY ? V_RSET_INTERNAL : p.verb, NULL,
            err);
    }
    if (s->state == S_CLOSING) {
        return;
    }
    mx_up_gone(s);
    flush_queue(s);
    resume(s);
    after_client_eof(s);
    drain_if_idle(s);
    arm_timers(s);
}

/* route = mx: the current next hop connection is gone: it closed, a read on
 * it failed (backend_on_eof()), or the proxy closed it (mx_up_broken(),
 * through conn_on_close()). The legacy MTA's session goes on: in the middle
 * of the message its final dot will get 451 4.4.2 (the rest is read and
 * dropped), else each reply the next hop owed is 451 4.4.2
 * (mx_next_hop_closed()); between transactions nothing is owed. */
static void mx_next_hop_lost(stp_session_t *s, const char *err)
{
    if (s->state == S_DATA) {
        mx_next_hop_failed(s, V_MESSAGE, NULL, err);
        if (s->state != S_CLOSING) {
            update_reading(s); /* it may have stopped while the next hop held it back */
            arm_timers(s);
        }
    } else {
        mx_next_hop_closed(s, err);
    }
    s->mx_drop_why = NULL;
    s->mx_drop_reply = NULL;
}

/*
 * route = mx: the proxy gives up the current next hop connection itself: a
 * write to it failed (at once, in the call: a TLS engine that broke, memory
 * that ran out), or it did not answer (or read) in time. `reply` (static)
 * is the 451 for what it owed, `why` (static) the log's error. The
 * connection is closed at once (it is in no state for a QUIT), and its
 * close callback (conn_on_close()) goes on as if it had closed
 * (mx_next_hop_lost()), outside the input or reply being worked through:
 * until then what is written to it fails and is dropped, a command written
 * is queued as if sent (the close answers it) and commands wait (mx_wait()).
 */
static void mx_up_broken(stp_session_t *s, const char *why, const char *reply)
{
    if (s->up->closing) {
        return; /* on its way already */
    }
    s->mx_drop_why = why;
    s->mx_drop_reply = reply;
    stp_conn_close(s->up);
}

/* The transaction is over (final reply, RSET, EHLO, refused DATA). */
static void mx_end_transaction(stp_session_t *s, int reset_next_hop)
{
    if (reset_next_hop && s->backend_up && s->mx_mail_sent && !s->up->closing) {
        backend_send(s, V_RSET_INTERNAL, "RSET", 4, P_INTERNAL);
    }
    free(s->mx_mail);
    s->mx_mail = NULL;
    free(s->mx_rcpt);
    s->mx_rcpt = NULL;
    free(s->mx_failed_reply);
    s->mx_failed_reply = NULL;
    s->mx_mail_sent = 0;
    s->mx_txn_lost = 0;
    s->rcpts = 0;
}

static void mx_message_done(stp_session_t *s, int ok)
{
    if (ok && s->mx_verified && s->rt->conf->remember_tls) {
        stp_nexthop_delivered(s->loop, s->rt->conf, s->mx_domain);
        stp_log(STP_LOG_INFO, "remember id=%s domain=%s tls=verified", s->id, s->mx_domain);
    }
    mx_end_transaction(s, 0);
}

/* The longest MAIL FROM line replayed to a next hop (RFC 5321 4.5.3.1.4's
 * 512, plus room for the extensions' parameters and a long address). */
#define MX_MAIL_LINE 1200
#define MX_MAIL_TOO_LONG "501 5.5.4 Error: MAIL FROM too long\r\n"

/* 1 if the MAIL FROM argument makes a line that fits MX_MAIL_LINE with
 * every parameter kept (a next hop offering less gets a shorter one). */
static int mx_mail_fits(const char *arg, size_t n)
{
    char line[MX_MAIL_LINE];
    const char *refusal = NULL;
    return stp_env_mail_line(arg, n, STP_EHLO_SIZE | STP_EHLO_8BITMIME | STP_EHLO_SMTPUTF8, line,
                             sizeof(line), &refusal) >= 0;
}

/* Sends the remembered MAIL FROM to the next hop; the RCPT follows its 250. */
static void mx_replay_mail(stp_session_t *s)
{
    char line[MX_MAIL_LINE];
    const char *refusal = NULL;
    if (stp_env_mail_line(s->mx_mail, strlen(s->mx_mail), s->mx_caps, line, sizeof(line),
                          &refusal) < 0) {
        mx_write(s, refusal ? refusal : MX_MAIL_TOO_LONG);
        s->paused = 0;
        return;
    }
    backend_send(s, V_MAIL_REPLAY, line, strlen(line), P_INTERNAL);
    s->paused = 1;
}

static void mx_mail_replied(stp_session_t *s, const stp_reply_t *r)
{
    s->paused = 0;
    if (mx_reply_ends_next_hop(s, V_MAIL_REPLAY, r)) {
        /* a 421, or out of step: the RCPT got 451 4.4.2 */
    } else if (r->code / 100 == 2 && s->mx_rcpt) {
        s->mx_mail_sent = 1;
        forward(s, STP_CMD_RCPT, s->mx_rcpt, s->mx_rcpt_len);
    } else {
        /* The next hop refused the sender: that is this recipient's answer. */
        relay(s, r);
    }
    free(s->mx_rcpt);
    s->mx_rcpt = NULL;
}

static void mx_on_nexthop(const stp_nexthop_result_t *r, void *arg)
{
    stp_session_t *s = arg;
    stp_conn_t *c = &s->backends[s->nh_slot];

    s->nh = NULL;
    if (r->status != STP_NEXTHOP_OK) {
        s->slot_busy[s->nh_slot] = 0;
        /* The other recipients of this domain in this transaction get the
         * same answer at once, not an attempt (and a wait) each. */
        free(s->mx_failed_reply);
        s->mx_failed_reply = strdup(r->reply);
        memcpy(s->mx_failed, s->mx_domain, sizeof(s->mx_failed));
        s->mx_domain[0] = '\0';
        if (--s->open_handles == 0) {
            destroy(s);
            return;
        }
        if (s->state == S_CLOSING) {
            return;
        }
        s->decision = "deferred";
        mx_write(s, r->reply);
        free(s->mx_rcpt);
        s->mx_rcpt = NULL;
        s->paused = 0;
        resume(s);
        arm_timers(s);
        drain_if_idle(s); /* a stop that came during the attempt */
        after_client_eof(s); /* a client that half-closed with commands held behind it */
        return;
    }
    c->cb = &backend_cb;
    c->owner = s;
    if (s->state == S_CLOSING) {
        /* The session ended while the ready connection was being handed
         * over: close it; conn_on_close counts it. */
        stp_conn_close(c);
        return;
    }
    s->up = c;
    s->backend_up = 1;
    s->mx_level = r->level;
    s->mx_caps = r->caps;
    s->mx_verified = r->verified;
    /* The MX host name is cut if it has to be: this is only for the log. */
    snprintf(s->next_hop_str, sizeof(s->next_hop_str), "%.200s[%.64s]", r->mx, r->addr);
    snprintf(s->up_version, sizeof(s->up_version), "%s", r->version);
    snprintf(s->up_cipher, sizeof(s->up_cipher), "%s", r->cipher);
    s->verify = r->tls ? (r->verified ? "ok" : "failed") : "skipped";
    s->decision = r->tls ? "tls" : "plaintext";
    if (s->rp != NULL) {
        stp_reply_parser_init(s->rp); /* forget a partial reply of the previous next hop */
    }
    mx_replay_mail(s);
    if (s->state == S_CLOSING) {
        return;
    }
    if (!s->paused) {
        resume(s);
    }
    after_client_eof(s); /* the MAIL refused here: nothing owed to a client that left */
    update_reading(s);
    arm_timers(s);
}

static void mx_start(stp_session_t *s, const char *domain)
{
    mx_drop_up(s);
    int slot = !s->slot_busy[0] ? 0 : !s->slot_busy[1] ? 1 : -1;
    if (slot < 0) {
        mx_write(s, "451 4.3.0 Error: the previous mail server connection is still closing; "
                    "try again\r\n");
        return;
    }
    int idx = (int)(s->conf - s->rt->conf->listeners);
    stp_nexthop_opts_t o = {
        .loop = s->loop,
        .cf = s->rt->conf,
        .lc = s->conf,
        .ctx = s->rt->client_ctx[idx],
        .domain = domain,
        .id = s->id,
    };
    s->nh_slot = slot;
    s->nh = stp_nexthop_start(&o, &s->backends[slot], mx_on_nexthop, s);
    if (s->nh == NULL) {
        mx_write(s, "451 4.3.0 Error: out of resources\r\n");
        return;
    }
    s->slot_busy[slot] = 1;
    s->open_handles++; /* the slot's conn, until the attempt's callback */
    snprintf(s->mx_domain, sizeof(s->mx_domain), "%s", domain);
    s->paused = 1;
}

static void mx_rcpt(stp_session_t *s, const stp_cmd_t *cmd, const char *line, size_t len)
{
    char domain[256];
    size_t params = 0;
    const char *arg = cmd->arg, *bad;
    size_t n = cmd->arg_len;

    if (s->mx_mail == NULL) {
        mx_write(s, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    if ((bad = stp_env_rcpt_domain(arg, n, &params, domain)) != NULL) {
        mx_write(s, bad);
        return;
    }
    for (size_t i = params; i < n; i++) {
        if (arg[i] != ' ') {
            mx_write(s, "555 5.5.4 Error: unsupported RCPT parameter\r\n");
            return;
        }
    }
    if (s->mx_txn_lost) {
        mx_write(s, "451 4.4.2 Error: connection to the recipient's mail server lost\r\n");
        return;
    }
    if (s->mx_mail_sent && strcmp(domain, s->mx_domain) != 0 && s->rcpts == 0 &&
        s->pq_len == 0) {
        /* The transaction's domain accepted no recipient: its connection
         * holds nothing of the message, so this domain takes it over (the
         * old next hop gets QUIT) rather than a 452 and a retry. */
        stp_log(STP_LOG_INFO,
                "mx id=%s domain=%s previous_domain=%s connection=closed reason=\"no recipient "
                "accepted\"",
                s->id, domain, s->mx_domain);
        mx_drop_up(s);
    }
    if (s->mx_mail_sent && strcmp(domain, s->mx_domain) != 0) {
        char buf[400];
        snprintf(buf, sizeof(buf),
                 "452 4.5.3 Error: too many recipients: %s is delivered in a separate "
                 "transaction\r\n",
                 domain);
        stp_log(STP_LOG_INFO, "mx id=%s domain=%s deferred=other-domain transaction_domain=%s",
                s->id, domain, s->mx_domain);
        mx_write(s, buf);
        return;
    }
    if (s->backend_up && s->mx_mail_sent) {
        forward(s, STP_CMD_RCPT, line, len);
        return;
    }
    if (s->mx_failed_reply && strcmp(domain, s->mx_failed) == 0) {
        stp_log(STP_LOG_INFO, "mx id=%s domain=%s deferred=attempt-failed-in-this-transaction",
                s->id, domain);
        mx_write(s, s->mx_failed_reply);
        return;
    }
    free(s->mx_rcpt);
    s->mx_rcpt = malloc(len);
    if (s->mx_rcpt == NULL) {
        mx_write(s, "451 4.3.0 Error: out of resources\r\n");
        return;
    }
    memcpy(s->mx_rcpt, line, len);
    s->mx_rcpt_len = len;
    if (s->backend_up && strcmp(domain, s->mx_domain) == 0 && !s->up->closing && !s->up->eof) {
        mx_replay_mail(s); /* the same domain again: the connection is reused */
        return;
    }
    mx_start(s, domain);
}

/* The commands the proxy answers itself under route = mx; 0 for the rest
 * (refusals shared with the other routes). */
static int mx_command(stp_session_t *s, const stp_cmd_t *cmd, const char *line, size_t len)
{
    char buf[400];
    const char *bad;

    switch (cmd->verb) {
    case STP_CMD_EHLO:
    case STP_CMD_HELO: {
        size_t n = cmd->arg_len < sizeof(s->helo) - 1 ? cmd->arg_len : sizeof(s->helo) - 1;
        memcpy(s->helo, cmd->arg, n);
        s->helo[n] = '\0';
        s->ehlo_seen = 1;
        s->esmtp = cmd->verb == STP_CMD_EHLO;
        mx_end_transaction(s, 1);
        if (!s->esmtp) {
            snprintf(buf, sizeof(buf), "250 %s\r\n", hostname(s));
        } else if (s->conf->max_message_size) {
            snprintf(buf, sizeof(buf),
                     "250-%s\r\n250-SIZE %llu\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                     "250 SMTPUTF8\r\n",
                     hostname(s), (unsigned long long)s->conf->max_message_size);
        } else {
            snprintf(buf, sizeof(buf),
                     "250-%s\r\n250-SIZE\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                     "250 SMTPUTF8\r\n",
                     hostname(s));
        }
        mx_write(s, buf);
        return 1;
    }
    case STP_CMD_MAIL:
        if (!s->ehlo_seen) {
            mx_write(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        } else if (s->mx_mail) {
            mx_write(s, "503 5.5.1 Error: nested MAIL command\r\n");
        } else {
            size_t start = 0, end = 0, n = cmd->arg_len;
            const char *a = cmd->arg;
            if (stp_env_path(a, n, &start, &end) < 0) {
                mx_write(s, "501 5.1.7 Error: bad sender address syntax\r\n");
            } else if ((bad = stp_env_mail_params(a + end, n - end,
                                                  s->conf->max_message_size)) != NULL) {
                mx_write(s, bad);
            } else if (!mx_mail_fits(a + start, n - start)) {
                /* refused now, not as the answer to the first RCPT */
                mx_write(s, MX_MAIL_TOO_LONG);
            } else if ((s->mx_mail = malloc(n - start + 1)) == NULL) {
                mx_write(s, "451 4.3.0 Error: out of resources\r\n");
            } else {
                memcpy(s->mx_mail, a + start, n - start);
                s->mx_mail[n - start] = '\0';
                stp_log_escape(s->mail_from, sizeof(s->mail_from), a + start, end - start);
                s->rcpts = 0;
                mx_write(s, "250 2.1.0 Ok\r\n");
            }
        }
        return 1;
    case STP_CMD_RCPT:
        mx_rcpt(s, cmd, line, len);
        return 1;
    case STP_CMD_DATA:
        if (s->mx_mail == NULL) {
            mx_write(s, "503 5.5.1 Error: need MAIL command\r\n");
        } else if (s->mx_txn_lost) {
            mx_write(s, "451 4.4.2 Error: connection to the recipient's mail server lost\r\n");
        } else if (!s->mx_mail_sent || s->rcpts == 0 || !s->backend_up) {
            mx_write(s, "554 5.5.1 Error: no valid recipients\r\n");
        } else {
            forward(s, STP_CMD_DATA, line, len);
            s->paused = 1; /* content only after the next hop's 354 */
        }
        return 1;
    case STP_CMD_RSET:
        mx_end_transaction(s, 1);
        mx_write(s, "250 2.0.0 Ok\r\n");
        return 1;
    case STP_CMD_NOOP:
        mx_write(s, "250 2.0.0 Ok\r\n");
        return 1;
    case STP_CMD_VRFY:
        mx_write(s, "252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery\r\n");
        return 1;
    case STP_CMD_QUIT:
        mx_write(s, "221 2.0.0 Bye\r\n");
        finish(s, NULL, "ok", NULL);
        return 1;
    case STP_CMD_AUTH:
    case STP_CMD_EXPN:
    case STP_CMD_ETRN:
    case STP_CMD_HELP:
        mx_write(s, "502 5.5.1 Error: command not implemented\r\n");
        return 1;
    default:
        return 0;
    }
}

/* ---- accept ---- */

static int same_endpoint(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family) {
        return 0;
    }
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* route = original-dst: where the legacy MTA meant to connect before an
 * iptables/nftables REDIRECT sent it to us. */
static int original_dst(stp_session_t *s)
{
    struct sockaddr_storage dst, local;
    socklen_t len = sizeof(dst);
    int ll = sizeof(local), rc = -1;
    uv_os_fd_t fd;

    memset(&dst, 0, sizeof(dst));
    if (uv_fileno((uv_handle_t *)&s->client.tcp, &fd) == 0 &&
        uv_tcp_getsockname(&s->client.tcp, (struct sockaddr *)&local, &ll) == 0) {
        if (local.ss_family == AF_INET) {
            rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len);
        } else {
            rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len);
        }
    }
    /* Without a redirect the "original" destination is the proxy itself;
     * connecting there would loop. Compare address and port only (the
     * kernel's sockaddr padding differs between the two calls). */
    if (rc < 0 || same_endpoint((struct sockaddr *)&dst, (struct sockaddr *)&local)) {
        stp_log(STP_LOG_WARN, "route id=%s client=%s result=no-original-destination", s->id,
                s->peer_str);
        finish(s, "421 4.3.5 Error: no original destination (is the REDIRECT rule in place?)\r\n",
               "no-original-dst", "SO_ORIGINAL_DST unavailable");
        return -1;
    }
    memcpy(&s->next_hop, &dst, sizeof(dst));
    stp_sockaddr_str((struct sockaddr *)&dst, s->next_hop_str, sizeof(s->next_hop_str), 1);
    return 0;
}

static void session_begin(stp_session_t *s);

/* ---- PROXY protocol (proxy_protocol = yes) ---- */

static void on_proxy_timeout(uv_timer_t *t)
{
    stp_session_t *s = t->data;
    stp_log(STP_LOG_WARN, "proxy_protocol id=%s listener=%s client=%s result=timeout", s->id,
            s->conf->name, s->peer_str);
    stp_sm_refused(s->conf->name, "proxy_protocol");
    finish(s, NULL, "proxy-protocol", "no PROXY header in time");
}

/* Only the configured load balancers may speak for someone else; the
 * header must arrive before the greeting (the backend is not contacted). */
static void proxy_header_wait(stp_session_t *s)
{
    const stp_listener_conf_t *conf = s->conf;
    s->state = S_CONNECTING;
    if (!stp_cidr_list_match(conf->proxy_from, conf->nproxy_from, (struct sockaddr *)&s->peer)) {
        stp_log(STP_LOG_WARN, "proxy_protocol id=%s listener=%s client=%s result=denied", s->id,
                conf->name, s->peer_str);
        stp_sm_refused(conf->name, "proxy_not_allowed");
        finish(s, NULL, "denied", "client not in proxy_from");
        return;
    }
    s->pp = malloc(sizeof(*s->pp));
    if (s->pp == NULL) {
        finish(s, NULL, "error", "out of memory");
        return;
    }
    stp_proxy_init(s->pp);
    uv_timer_start(&s->client_timer, on_proxy_timeout, PROXY_HEADER_MS, 0);
    stp_conn_read_start(&s->client);
}

/* Feeds the header parser; returns the bytes it used. When the header is
 * complete the client's real address replaces the socket's and the session
 * begins; what follows the header is the client's SMTP. */
static size_t proxy_header_input(stp_session_t *s, const char *data, size_t len)
{
    size_t used = 0;
    int rc = stp_proxy_feed(s->pp, data, len, &used);
    if (rc == STP_PROXY_AGAIN) {
        return used;
    }
    uv_timer_stop(&s->client_timer);
    if (rc == STP_PROXY_ERROR) {
        stp_log(STP_LOG_WARN, "proxy_protocol id=%s listener=%s client=%s result=invalid "
                "error=\"%s\"", s->id, s->conf->name, s->peer_str, s->pp->error);
        stp_sm_refused(s->conf->name, "proxy_protocol");
        finish(s, NULL, "proxy-protocol", s->pp->error);
        return used;
    }
    char via[64];
    memcpy(via, s->peer_str, sizeof(via));
    if (!s->pp->local) {
        memcpy(&s->peer, &s->pp->src, sizeof(s->peer));
        stp_sockaddr_str((struct sockaddr *)&s->peer, s->peer_str, sizeof(s->peer_str), 1);
    }
    stp_log(STP_LOG_INFO, "proxy_protocol id=%s listener=%s client=%s via=%s version=%d%s", s->id,
            s->conf->name, s->peer_str, via, s->pp->version, s->pp->local ? " local=yes" : "");
    free(s->pp);
    s->pp = NULL;
    session_begin(s);
    return used;
}

int stp_session_accept(stp_listener_t *l, int fd, const struct sockaddr *peer, socklen_t len)
{
    const stp_listener_conf_t *conf = l->conf;
    stp_session_t *s = calloc(1, sizeof(*s) + conf->max_line_length);
    if (s == NULL) {
        return UV_ENOMEM; /* the listener refuses it and goes on */
    }
    int rc = stp_conn_init(l->loop, &s->client, &client_cb, s);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->listener = l;
    s->rt = l->rt;
    stp_runtime_ref(s->rt);
    s->conf = conf;
    s->loop = l->loop;
    s->start_ms = uv_now(l->loop);
    s->open_handles = 1;
    uv_timer_init(l->loop, &s->client_timer);
    uv_timer_init(l->loop, &s->backend_timer);
    uv_timer_init(l->loop, &s->session_timer);
    s->client_timer.data = s->backend_timer.data = s->session_timer.data = s;
    s->open_handles += 3;
    stp_line_init(&s->line, s->line_buf, conf->max_line_length);
    snprintf(s->id, sizeof(s->id), "%05X%05X", (unsigned)(time(NULL) & 0xFFFFF),
             ++session_counter & 0xFFFFF);

    /* link first: destroy() unlinks */
    s->next = l->sessions;
    if (l->sessions) {
        l->sessions->prev = s;
    }
    l->sessions = s;
    l->nsessions++;
    stp_sm_session_open(conf->name);

    /* accept4() gave the address: no getpeername() */
    memcpy(&s->peer, peer, len < sizeof(s->peer) ? len : sizeof(s->peer));
    stp_sockaddr_str((struct sockaddr *)&s->peer, s->peer_str, sizeof(s->peer_str), 1);
    if (uv_tcp_open(&s->client.tcp, fd) != 0) {
        close(fd); /* not the handle's: uv_tcp_open() takes it only on success */
        s->state = S_CONNECTING;
        finish(s, NULL, "accept-failed", NULL);
        return 0;
    }
    stp_conn_tune(&s->client);
    if (conf->mode == STP_MODE_INBOUND && conf->proxy_protocol) {
        proxy_header_wait(s);
        return 0;
    }
    session_begin(s);
    return 0;
}

/* The client's address is known (from the socket or the PROXY header):
 * limits, access, then the backend. */
static void session_begin(stp_session_t *s)
{
    stp_listener_t *l = s->listener;
    const stp_listener_conf_t *conf = s->conf;
    stp_limit_result_t lr = stp_limits_acquire(l->limits, (struct sockaddr *)&s->peer);
    if (lr != STP_LIMIT_OK || l->draining) {
        s->state = S_CONNECTING;
        const char *text = l->draining ? "421 4.3.2 Service shutting down\r\n"
                           : lr == STP_LIMIT_PER_IP
                               ? "421 4.7.0 Error: too many connections from your address\r\n"
                               : "421 4.7.0 Error: too many connections\r\n";
        stp_sm_refused(conf->name, l->draining               ? "draining"
                                   : lr == STP_LIMIT_PER_IP ? "max_connections_per_ip"
                                                            : "max_connections");
        finish(s, text, l->draining ? "shutdown" : "limit", NULL);
        return;
    }
    s->limits_taken = 1;
    uv_timer_start(&s->session_timer, on_session_timeout, conf->session_timeout, 0);

    if (conf->mode == STP_MODE_OUTBOUND) {
        /* Never an open relay: only the configured networks may use it. */
        if (!stp_cidr_list_match(conf->allow, conf->nallow, (struct sockaddr *)&s->peer)) {
            stp_log(STP_LOG_WARN, "access id=%s listener=%s client=%s result=denied", s->id,
                    conf->name, s->peer_str);
            stp_sm_refused(conf->name, "not_allowed");
            finish(s, "554 5.7.1 Access denied\r\n", "denied", "client not in allow");
            return;
        }
        if (conf->route == STP_ROUTE_MX) {
            mx_greet(s);
            return;
        }
        if (conf->route == STP_ROUTE_ORIGINAL_DST) {
            if (original_dst(s) < 0) {
                return;
            }
        } else {
            memcpy(&s->next_hop, &conf->relay.addr, sizeof(s->next_hop));
            snprintf(s->next_hop_str, sizeof(s->next_hop_str), "%s:%u", conf->relay.host,
                     conf->relay.port);
        }
        if (!up_reuse(s)) {
            backend_connect(s);
        }
        return;
    }
    memcpy(&s->next_hop, &conf->backend.addr, sizeof(s->next_hop));
    stp_sockaddr_str((struct sockaddr *)&s->next_hop, s->next_hop_str, sizeof(s->next_hop_str), 1);

    if (conf->starttls == STP_STARTTLS_IMPLICIT) {
        start_client_tls(s);
        s->state = S_CONNECTING; /* the backend is connected after the handshake */
        update_reading(s);
        arm_timers(s);
        return;
    }
    backend_connect(s);
}

void stp_session_drain(stp_session_t *s)
{
    s->draining = 1;
    if (s->state == S_CLOSING) {
        return;
    }
    if (s->tls == T_HANDSHAKE || s->pp) {
        finish(s, NULL, "shutdown", NULL); /* nothing readable can be said yet */
    } else if (s->state == S_CONNECTING || s->state == S_GREETING) {
        /* no greeting yet (the backend's, or the next hop being secured):
         * the 421 stands in for it */
        fail_reply(s, "421 4.3.2", "Service shutting down, closing connection", "shutdown", NULL);
    } else {
        drain_if_idle(s); /* otherwise: when the reply it waits for is relayed */
    }
}

void stp_session_kill(stp_session_t *s)
{
    finish(s, NULL, "killed", NULL);
    if (s->client.lingering) {
        stp_conn_close(&s->client); /* the grace period is over: a lingering close's too */
    }
}

stp_session_t *stp_session_next(stp_session_t *s)
{
    return s->next;
}

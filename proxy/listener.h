/*
 * listener: the runtime snapshot (configuration plus what was built from it,
 * such as the TLS server context), listening sockets, and accepting.
 * A listener owns the sessions it accepted (a list, for draining).
 */
#ifndef STP_LISTENER_H
#define STP_LISTENER_H

#include <openssl/ssl.h>
#include <uv.h>

#include "proxy/config.h"
#include "proxy/log.h"
#include "proxy/limits.h"

typedef struct stp_session_s stp_session_t;

/* Everything built from one configuration load. Immutable once running;
 * sessions hold a reference so a reload can replace it under them. */
typedef struct {
    stp_config_t *conf;
    SSL_CTX *server_ctx; /* NULL when no [tls] cert is configured */
    /* Outbound listeners: the client context toward the next hop (trust
     * store of the listener), by listener index; NULL for tls = none. */
    SSL_CTX *client_ctx[STP_CONF_MAX_LISTENERS];
    _Atomic unsigned refs; /* sessions of every worker take and drop references */
} stp_runtime_t;

typedef struct stp_listener_s {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    const stp_listener_conf_t *conf;
    stp_runtime_t *rt;
    stp_limits_t *limits; /* shared by every worker's copy of this listener */
    unsigned worker;      /* which worker thread runs this copy */
    stp_session_t *sessions; /* doubly linked through the session */
    unsigned nsessions;
    int draining;
    int retired; /* removed by a reload: not accepting, sessions go on */
    int closed;
    int released; /* the listening handle is fully closed (its close callback ran) */
    /* accept errors (EMFILE...) come once per waiting connection: logged
     * at most once a second, with how many were not */
    stp_log_ratelimit_t accept_err;
    /* A connection no session could be made for (out of memory) is
     * accepted into this handle and closed at once: libuv holds an
     * accepted socket and stops watching the listener until uv_accept().
     * Part of the listener, so refusing allocates nothing. */
    uv_tcp_t spare;
    int spare_closing; /* its close callback has not run yet */
    int spare_waiting; /* a connection waits in libuv for the spare */
    /* outbound, connection_cache_time: next hop connections parked between
     * sessions (created at the first park; closed with the listener) */
    struct stp_upcache_s *upcache;
    /* Draining or retired, the last session gone and the listening handle released:
     * from then on nothing refers to the listener and its memory may be
     * reused. Called once. */
    void (*on_empty)(struct stp_listener_s *l);
    /* A connection waits to be accepted: stp_session_accept() (set by
     * stp_listener_start; a unit test may put its own here). */
    void (*on_accept)(struct stp_listener_s *l);
} stp_listener_t;

/*
 * Builds the runtime from a loaded config: TLS contexts, relay addresses.
 * Takes ownership of `conf`. Returns NULL on failure and writes every
 * problem found into err, one per line as "FILE:LINE: message\n" (LINE
 * that of the key naming the file or relay; "FILE: message" without one).
 */
stp_runtime_t *stp_runtime_new(stp_config_t *conf, char *err, size_t errlen);
void stp_runtime_ref(stp_runtime_t *rt);
void stp_runtime_unref(stp_runtime_t *rt);

/*
 * Creates a listening socket for `conf` with SO_REUSEPORT, so that every
 * worker can have its own socket on the same address and the kernel spreads
 * connections among them. Called before privileges are dropped. `first`: the
 * first socket for this address, which fails when something already listens
 * there. Returns the descriptor or -1 (logged).
 */
int stp_listener_bind(const stp_listener_conf_t *conf, int first);

/* Starts accepting on `fd` (from stp_listener_bind; taken over) in `loop`.
 * `limits` is borrowed and shared. Returns 0 or -1 (logged, fd closed). */
int stp_listener_start(stp_listener_t *l, uv_loop_t *loop, stp_runtime_t *rt,
                       const stp_listener_conf_t *conf, int fd, stp_limits_t *limits,
                       unsigned worker);

/* Stops accepting and closes the listening socket; open sessions are asked
 * to finish (421 4.3.2 at once if idle, else at the next command
 * boundary). on_empty runs once no session is left and the socket's handle
 * is closed (possibly at once). */
void stp_listener_drain(stp_listener_t *l);

/* Stops accepting and closes the listening socket, as for a listener a
 * reload removed; open sessions go on as usual. on_empty runs as for
 * stp_listener_drain. */
void stp_listener_retire(stp_listener_t *l);

/* Closes every remaining session now. */
void stp_listener_kill_sessions(stp_listener_t *l);

/*
 * The connection libuv just announced gets no session (stp_session_accept
 * could not allocate one, `why` says so): it is accepted into the
 * listener's spare handle and closed, logged like a failed accept (at most
 * a line a second), so the listener goes on accepting. Allocates nothing.
 * While the spare is still closing from the previous refusal, the
 * connection waits in libuv (the listener paused) and is announced again,
 * through the listener's connection callback, once the spare is free.
 */
void stp_listener_refuse(stp_listener_t *l, const char *why);

/* Session bookkeeping, called by session.c. */
void stp_listener_session_done(stp_listener_t *l);

/* A reload changed the listener's configuration: parked next hop
 * connections were made under the previous one and are let go. */
void stp_listener_reconfigured(stp_listener_t *l);

/* The connection cache's close callback (arg: the listener). */
void stp_listener_upcache_closed(void *arg);

#endif

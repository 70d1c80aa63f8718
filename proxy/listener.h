/*
 * listener: the runtime snapshot (configuration plus what was built from it,
 * such as the TLS server context), listening sockets, and accepting.
 * A listener owns the sessions it accepted (a list, for draining).
 */
#ifndef STP_LISTENER_H
#define STP_LISTENER_H

#include <openssl/ssl.h>
#include <uv.h>

#include "proxy/acceptor.h"
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
    stp_acceptor_t acceptor; /* the listening socket */
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
    int released; /* the acceptor is fully closed (its close callback ran) */
    /* Connections refused at accept (out of descriptors or memory) and
     * pauses come in bursts, one per waiting connection: logged at most
     * once a second, with how many were not. */
    stp_log_ratelimit_t accept_err;
    /* outbound, connection_cache_time: next hop connections parked between
     * sessions (created at the first park; closed with the listener) */
    struct stp_upcache_s *upcache;
    /* Draining or retired, the last session gone and the listening handle released:
     * from then on nothing refers to the listener and its memory may be
     * reused. Called once. */
    void (*on_empty)(struct stp_listener_s *l);
    /* A connection was accepted: `fd` (non-blocking, close-on-exec) and
     * its peer's address. Returns 0 once a session owns fd, or a negative
     * libuv error (UV_ENOMEM) when none could be made: fd is still the
     * caller's, which refuses the connection (stp_listener_start sets
     * stp_session_accept here; a unit test may put its own). */
    int (*on_accept)(struct stp_listener_s *l, int fd, const struct sockaddr *peer, socklen_t len);
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

/*
 * Starts accepting on `fd` (from stp_listener_bind; taken over) in `loop`,
 * through an acceptor (acceptor.h). `limits` is borrowed and shared.
 * Returns 0 or -1 (logged, fd closed; the listener is closed and, once
 * drained, empty when the acceptor's handles are). A connection no session
 * can be made for, out of descriptors (taken in the acceptor's reserve
 * slot) or memory, is told "421 4.3.2 HOSTNAME Too many open files, try
 * again later" (or "Out of memory") where the listener speaks first in
 * plaintext, closed, counted in stp_connections_refused_total (reason
 * out_of_descriptors or out_of_memory) and logged at most once a second.
 */
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

/* Session bookkeeping, called by session.c. */
void stp_listener_session_done(stp_listener_t *l);

/* A reload changed the listener's configuration: parked next hop
 * connections were made under the previous one and are let go. */
void stp_listener_reconfigured(stp_listener_t *l);

/* The connection cache's close callback (arg: the listener). */
void stp_listener_upcache_closed(void *arg);

#endif

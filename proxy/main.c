/*
 * main: command line, start-up and shutdown of smtp-tls-proxy.
 *
 *   smtp-tls-proxy -c FILE           run in the foreground, log to stderr
 *   smtp-tls-proxy --check -c FILE   validate the configuration and exit
 *
 * Start-up: load the configuration and certificates, bind every listener
 * once per worker (SO_REUSEPORT), drop to `user`/`group`, then run one
 * thread per worker, each with its own libuv loop and its own copy of every
 * listener; the kernel spreads connections among the copies. The main
 * thread only handles signals.
 *
 * Listener slots: every listener has a slot, the same index in every worker
 * and in the shared connection caps. A reload that adds a listener binds it
 * (once per worker) into a free slot before anything else changes; one that
 * removes a listener retires its slot: the socket is closed at once, its
 * sessions finish on the snapshot they started with, and the slot is free
 * again once every worker's copy is gone.
 *
 * SIGTERM/SIGINT: every worker stops accepting and lets its sessions finish
 * (each gets "421 4.3.2" at once when idle, else as soon as the message or
 * reply in flight is done); after `shutdown_grace` what
 * is left is closed; the process exits once every worker's loop is empty.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <uv.h>

#include "policy/cidr.h"
#include "proxy/certwatch.h"
#include "proxy/crash.h"
#include "proxy/conn.h"
#include "proxy/config.h"
#include "proxy/domain_state.h"
#include "proxy/probe.h"
#include "proxy/resolver.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/metrics_http.h"
#include "proxy/sts_refresh.h"

#define STP_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/smtp-tls-proxy/smtp-tls-proxy.ini"
#define MAX_WORKERS 256
#define CERT_POLL_MS 2000 /* how often certificate files are looked at */
/* Listeners of the current configuration, plus room for removed ones whose
 * sessions are still finishing. */
#define SLOTS (2 * STP_CONF_MAX_LISTENERS)

/* A reload as one worker applies it (one message per worker: each has its
 * own sockets). */
typedef struct reload_msg_s {
    struct reload_msg_s *next;
    stp_runtime_t *rt;  /* one reference, handed to the worker */
    int conf_of[SLOTS]; /* the slot's listener in rt->conf, -1: not in it (any more) */
    int fd[SLOTS];      /* a new listener's socket for this worker, else -1 */
} reload_msg_t;

/* One worker thread: its loop, its copies of the listeners, and the async
 * handle through which the main thread tells it to reload or stop. */
typedef struct {
    unsigned id;
    char name[20]; /* "worker-N", for a crash report */
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t grace;
    stp_listener_t listeners[SLOTS];
    unsigned char live[SLOTS];     /* started, and not yet empty and closed */
    stp_runtime_t *retired[SLOTS]; /* removed by a reload: the snapshot its conf is in */
    atomic_int stop;  /* set by the main thread before waking */
    uv_mutex_t lock;  /* guards pending */
    reload_msg_t *pending, **pending_tail; /* reloads to apply, oldest first */
    stp_runtime_t *rt;      /* the worker's current snapshot (one reference) */
    int stopping;     /* worker's own view */
    uint64_t grace_ms;
} worker_t;

/* The main thread's view of a slot. */
typedef struct {
    const stp_listener_conf_t *conf; /* in current_rt; NULL: not in the configuration */
    int limits_init;
    atomic_uint holders; /* workers whose copy is not gone yet */
} slot_t;

static worker_t *workers;
static unsigned nworkers;
static slot_t slots[SLOTS];
static stp_limits_t limits[SLOTS]; /* per slot, shared by the workers */
static uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
/* A SIGHUP before the loop's handler exists (start-up can wait dns_timeout
 * for the DANE check) would end the process with no line logged, and systemd
 * takes a SIGHUP death for a clean exit: it is noted and becomes one reload
 * once the proxy has started. */
static volatile sig_atomic_t hup_at_start_up;
static uv_timer_t hup_later;
static uv_async_t worker_done;
static atomic_uint workers_finished;
static int stopping;
static const char *config_path;
static stp_runtime_t *current_rt; /* the main thread's reference */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: smtp-tls-proxy [-c FILE] [--check] [--version] [--help]\n"
            "       smtp-tls-proxy probe DOMAIN [--json] [-c FILE]\n"
            "\n"
            "A STARTTLS-aware SMTP proxy: gives a plaintext mail server modern TLS.\n"
            "\n"
            "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
            "  -t, --check        validate the configuration (and certificates), then exit:\n"
            "                     0 if valid, 1 with FILE:LINE: message for each error\n"
            "  -v, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "  probe DOMAIN       show how mail to DOMAIN would be protected (per MX: TLS,\n"
            "                     certificate, MTA-STS, DANE) and the verdict of the policy\n"
            "\n"
            "Runs in the foreground and logs to stderr. SIGTERM/SIGINT drain and stop;\n"
            "SIGHUP reloads the configuration and certificates.\n");
}

static int same_address(const stp_hostport_t *a, const stp_hostport_t *b)
{
    return a->addr_len == b->addr_len && memcmp(&a->addr, &b->addr, a->addr_len) == 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

/* ---- worker side (runs on the worker's thread) ---- */

static void worker_all_done(worker_t *w)
{
    for (size_t i = 0; i < SLOTS; i++) {
        if (w->live[i]) {
            return;
        }
    }
    /* MTA-STS refreshes still running (they outlive the sessions that
     * started them) end here; everything left then is the worker's own
     * (async, timer): close it so the loop ends and the thread returns. */
    stp_sts_refresh_stop(&w->loop);
    uv_walk(&w->loop, close_walk, NULL);
}

/* /readyz: ready until a stop signal starts the drain. */
static int is_ready(void *arg)
{
    (void)arg;
    return !stopping;
}

/* A copy of a listener is gone (drained, empty, socket closed): its slot
 * no longer holds anything of this worker. */
static void on_listener_empty(stp_listener_t *l)
{
    worker_t *w = &workers[l->worker];
    size_t slot = (size_t)(l - w->listeners);
    if (!w->live[slot]) {
        return;
    }
    w->live[slot] = 0;
    stp_runtime_unref(w->retired[slot]);
    w->retired[slot] = NULL;
    atomic_fetch_sub(&slots[slot].holders, 1);
    if (w->stopping) {
        worker_all_done(w);
    }
}

/* Starts this worker's copy of a listener in `slot` (fd is taken over). */
static void worker_start_listener(worker_t *w, size_t slot, stp_runtime_t *rt,
                                  const stp_listener_conf_t *conf, int fd)
{
    stp_listener_t *l = &w->listeners[slot];
    w->live[slot] = 1;
    int rc = stp_listener_start(l, &w->loop, rt, conf, fd, &limits[slot], w->id);
    l->on_empty = on_listener_empty;
    if (rc < 0) {
        stp_listener_drain(l); /* gives the slot back once the handle is closed */
    }
}

static void on_grace(uv_timer_t *t)
{
    worker_t *w = t->data;
    stp_log(STP_LOG_WARN, "stop worker=%u grace period over, closing remaining sessions", w->id);
    for (size_t i = 0; i < SLOTS; i++) {
        if (w->live[i]) {
            stp_listener_kill_sessions(&w->listeners[i]);
        }
    }
}

/*
 * Applies one reload: new sessions of every kept listener use `m->rt`
 * (sessions already running keep their own reference), new listeners start
 * accepting, removed ones stop: their socket is closed and their sessions
 * finish on the snapshot they began with, which the slot keeps alive.
 */
static void worker_apply(worker_t *w, reload_msg_t *m)
{
    for (size_t i = 0; i < SLOTS; i++) {
        stp_listener_t *l = &w->listeners[i];
        if (m->fd[i] >= 0) {
            worker_start_listener(w, i, m->rt, &m->rt->conf->listeners[m->conf_of[i]], m->fd[i]);
        } else if (w->live[i] && !w->retired[i] && m->conf_of[i] >= 0) {
            l->conf = &m->rt->conf->listeners[m->conf_of[i]];
            l->rt = m->rt;
            stp_listener_reconfigured(l);
        } else if (w->live[i] && !w->retired[i] && !l->draining) {
            stp_runtime_ref(l->rt);
            w->retired[i] = l->rt;
            stp_listener_retire(l);
        }
    }
    stp_runtime_unref(w->rt);
    w->rt = m->rt;
    free(m);
}

static void on_wake(uv_async_t *a)
{
    worker_t *w = a->data;
    uv_mutex_lock(&w->lock);
    reload_msg_t *m = w->pending;
    w->pending = NULL;
    w->pending_tail = &w->pending;
    uv_mutex_unlock(&w->lock);
    while (m) {
        reload_msg_t *next = m->next;
        worker_apply(w, m);
        m = next;
    }
    if (!atomic_load(&w->stop) || w->stopping) {
        return;
    }
    w->stopping = 1;
    uv_timer_start(&w->grace, on_grace, w->grace_ms, 0);
    uv_unref((uv_handle_t *)&w->grace);
    /* Every listener drains; the loop ends once the last copy is gone. */
    for (size_t i = 0; i < SLOTS; i++) {
        if (w->live[i]) {
            stp_listener_drain(&w->listeners[i]);
        }
    }
    worker_all_done(w);
}

/* A thread whose alternate signal stack could not be mapped: a stack
 * overflow in it would end the process without the crash line. */
static void crash_thread_start(const char *name)
{
    if (stp_crash_thread_start(name) < 0) {
        stp_log(STP_LOG_WARN, "crash thread=%s alt_stack=no error=\"%s\"", name, strerror(errno));
    }
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    crash_thread_start(w->name);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    stp_crash_thread_end();
    atomic_fetch_add(&workers_finished, 1);
    uv_async_send(&worker_done);
}

/* ---- main thread ---- */

static void dane_check_cancel(void);

static void on_worker_done(uv_async_t *a)
{
    (void)a;
    if (atomic_load(&workers_finished) < nworkers) {
        return;
    }
    stp_log(STP_LOG_INFO, "stop reason=shutdown");
    dane_check_cancel(); /* its handles close with the resolver, not by the walk below */
    stp_certwatch_stop();
    stp_metrics_http_stop();
    uv_walk(uv_default_loop(), close_walk, NULL);
    /* Closing the signal handles restored the default actions: a repeated
     * SIGTERM must not kill a process that is already on its way out. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
}

/* SIGUSR1/SIGUSR2 mean nothing to the proxy; their default action would end
 * it without a drain or a log line (a stray `kill -USR1`, a log rotator
 * configured for another daemon). */
static void on_ignored_signal(uv_signal_t *h, int signum)
{
    (void)h;
    stp_log(STP_LOG_INFO, "signal name=%s result=ignored", signum == SIGUSR1 ? "USR1" : "USR2");
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (stopping) {
        return;
    }
    stopping = 1;
    stp_log(STP_LOG_INFO, "stop signal=%s draining=yes grace=%llums workers=%u",
            signum == SIGTERM ? "TERM" : "INT", (unsigned long long)workers[0].grace_ms,
            nworkers);
    for (unsigned i = 0; i < nworkers; i++) {
        atomic_store(&workers[i].stop, 1);
        uv_async_send(&workers[i].wake);
    }
}

static void reload(const char *trigger);
static void dane_check_async(const stp_config_t *conf);

/* A certificate or key file changed on disk: the same as SIGHUP (the file
 * names come from the configuration, so it is read again too). */
static void on_cert_change(void)
{
    reload("certificate-files");
}

static void reload_failed(const char *why)
{
    stp_metrics_count(STP_M_RELOADS, "result=\"failed\"", 1);
    stp_log(STP_LOG_ERROR, "reload result=failed reason=\"%s\" keeping=previous", why);
}

static void close_fds(int (*fds)[SLOTS], unsigned n)
{
    for (unsigned w = 0; w < n; w++) {
        for (size_t i = 0; i < SLOTS; i++) {
            if (fds[w][i] >= 0) {
                close(fds[w][i]);
            }
        }
    }
}

/* Undoes a reload that failed after its sockets and messages were made:
 * closes the first `nbound` workers' new sockets, frees what was built. */
static void reload_abort(stp_runtime_t *rt, int (*fds)[SLOTS], unsigned nbound,
                         reload_msg_t **msgs, const char *why)
{
    if (fds) {
        close_fds(fds, nbound);
    }
    for (unsigned w = 0; msgs && w < nworkers; w++) {
        free(msgs[w]);
    }
    free(msgs);
    free(fds);
    stp_runtime_unref(rt);
    reload_failed(why);
}

/*
 * SIGHUP: load the file again and build a new snapshot (certificates read
 * again). Any error keeps the running snapshot. Keys that shape the process
 * (workers, user, group, log_format, log_level) need a restart; changing
 * them is refused with a message. Listeners are matched by listen address:
 * a new address is bound in every worker before anything changes (a bind
 * failure refuses the whole reload, nothing half-applied), an address no
 * longer configured stops accepting while its sessions finish.
 */
static void reload(const char *trigger)
{
    char err[16384];
    const stp_config_t *old = current_rt->conf;
    int conf_of[SLOTS];
    int added[SLOTS] = {0};

    if (stopping) {
        stp_log(STP_LOG_INFO, "reload result=ignored reason=\"stopping\" trigger=%s", trigger);
        return;
    }
    err[0] = '\0';
    stp_config_t *conf = stp_config_load(config_path, err, sizeof(err));
    if (conf == NULL) {
        char *save = NULL, esc[1200];
        for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            stp_log(STP_LOG_ERROR, "reload error=\"%s\"",
                    stp_log_escape(esc, sizeof(esc), line, strlen(line)));
        }
        reload_failed("configuration errors");
        return;
    }
    const char *restart = NULL;
    /* What is set up once at start (threads, privileges, the log, the
     * metrics listener, the state file) is refused rather than ignored. */
    if (conf->workers != old->workers || strcmp(conf->user, old->user) ||
        strcmp(conf->group, old->group) || conf->log_format != old->log_format ||
        conf->log_level != old->log_level || conf->log_target != old->log_target ||
        conf->metrics.port != old->metrics.port || strcmp(conf->metrics.host, old->metrics.host) ||
        strcmp(conf->state_dir, old->state_dir)) {
        restart = "workers, user, group, log_format, log_level, log_target, metrics and "
                  "state_dir need a restart";
    }
    if (restart) {
        stp_config_free(conf);
        reload_failed(restart);
        return;
    }
    stp_certwatch_base_t files;
    stp_certwatch_base(conf, &files); /* before the files are read */
    stp_runtime_t *rt = stp_runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        char *save = NULL, esc[1200];
        for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            stp_log(STP_LOG_ERROR, "reload error=\"%s\"",
                    stp_log_escape(esc, sizeof(esc), line, strlen(line)));
        }
        reload_failed("cannot build the new snapshot");
        return;
    }
    conf = rt->conf;

    /* Each new listener takes the slot of the running one with its address,
     * else a free slot (not configured, no worker's copy left). */
    for (size_t i = 0; i < SLOTS; i++) {
        conf_of[i] = -1;
    }
    for (size_t j = 0; j < conf->nlisteners; j++) {
        size_t i = 0;
        while (i < SLOTS && !(slots[i].conf && conf_of[i] < 0 &&
                              same_address(&slots[i].conf->listen, &conf->listeners[j].listen))) {
            i++;
        }
        if (i == SLOTS) {
            i = 0;
            while (i < SLOTS && (slots[i].conf || added[i] || atomic_load(&slots[i].holders))) {
                i++;
            }
            if (i == SLOTS) {
                stp_runtime_unref(rt);
                reload_failed("too many removed listeners still finishing sessions; try again "
                              "later");
                return;
            }
            added[i] = 1;
        }
        conf_of[i] = (int)j;
    }

    /* Everything that can fail comes first: the new sockets (every worker's
     * copy) and the messages. */
    int(*fds)[SLOTS] = malloc(nworkers * sizeof(*fds));
    reload_msg_t **msgs = calloc(nworkers, sizeof(*msgs));
    int failed = fds == NULL || msgs == NULL;
    unsigned nbound = 0;
    for (; nbound < nworkers && !failed; nbound++) {
        msgs[nbound] = calloc(1, sizeof(reload_msg_t));
        failed = msgs[nbound] == NULL;
        for (size_t i = 0; i < SLOTS; i++) {
            fds[nbound][i] = -1;
        }
        for (size_t i = 0; i < SLOTS && !failed; i++) {
            if (added[i]) {
                fds[nbound][i] = stp_listener_bind(&conf->listeners[conf_of[i]], nbound == 0);
                failed = fds[nbound][i] < 0;
            }
        }
    }
    if (failed) {
        reload_abort(rt, fds, nbound, msgs, "cannot listen on a new address");
        return;
    }
    for (size_t i = 0; i < SLOTS; i++) {
        if (added[i]) {
            const stp_listener_conf_t *n = &conf->listeners[conf_of[i]];
            if (slots[i].limits_init) {
                stp_limits_free(&limits[i]); /* no worker's copy is left to use them */
                slots[i].limits_init = 0;
            }
            if (stp_limits_init(&limits[i], n->max_connections, n->max_connections_per_ip) <
                0) {
                reload_abort(rt, fds, nworkers, msgs, "out of memory");
                return;
            }
            slots[i].limits_init = 1;
        }
    }

    /* Commit. Caps of kept listeners are shared: changed in place. */
    for (size_t i = 0; i < SLOTS; i++) {
        if (conf_of[i] >= 0) {
            const stp_listener_conf_t *n = &conf->listeners[conf_of[i]];
            if (added[i]) {
                atomic_store(&slots[i].holders, nworkers);
            } else {
                stp_limits_set(&limits[i], n->max_connections, n->max_connections_per_ip);
            }
            slots[i].conf = n;
        } else if (slots[i].conf) {
            char addr[80];
            stp_sockaddr_str((const struct sockaddr *)&slots[i].conf->listen.addr, addr,
                             sizeof(addr), 1);
            stp_log(STP_LOG_INFO, "listen listener=%s addr=%s result=closed reason=reload",
                    slots[i].conf->name, addr);
            slots[i].conf = NULL;
        }
    }
    for (unsigned i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        reload_msg_t *m = msgs[i];
        stp_runtime_ref(rt);
        m->rt = rt;
        memcpy(m->conf_of, conf_of, sizeof(conf_of));
        memcpy(m->fd, fds[i], sizeof(m->fd));
        w->grace_ms = rt->conf->shutdown_grace; /* read by the worker only at stop */
        uv_mutex_lock(&w->lock);
        *w->pending_tail = m;
        w->pending_tail = &m->next;
        uv_mutex_unlock(&w->lock);
        uv_async_send(&w->wake);
    }
    free(msgs);
    free(fds);
    stp_runtime_unref(current_rt);
    current_rt = rt;
    /* The certificates first, as at start: once "reload result=ok" is in
     * the log, their lines are too and their files are watched. */
    stp_certwatch_check(rt->conf);
    stp_certwatch_start(uv_default_loop(), rt->conf, &files, CERT_POLL_MS, on_cert_change);
    stp_metrics_count(STP_M_RELOADS, "result=\"ok\"", 1);
    stp_log(STP_LOG_INFO, "reload result=ok trigger=%s listeners=%zu tls=%s", trigger,
            rt->conf->nlisteners, rt->server_ctx ? "yes" : "no");
    dane_check_async(rt->conf);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    reload("signal");
}

static void on_early_hup(int signum)
{
    (void)signum;
    hup_at_start_up = 1;
}

static void on_hup_later(uv_timer_t *t)
{
    (void)t;
    stp_log(STP_LOG_INFO, "signal name=HUP result=reload reason=\"received during start-up\"");
    reload("signal");
}

/*
 * Drops to `user`/`group` once every socket is bound and every file read.
 * Returns 0, or -1 (logged) when asked to drop and it could not be done:
 * the caller must not go on serving with more privileges than configured.
 */
static int drop_privileges(const stp_config_t *conf)
{
    if (conf->user[0] == '\0' && conf->group[0] == '\0') {
        return 0;
    }
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (conf->user[0]) {
        struct passwd *pw = getpwnam(conf->user);
        if (pw == NULL) {
            stp_log(STP_LOG_ERROR, "privileges error=\"unknown user\" user=%s", conf->user);
            return -1;
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (conf->group[0]) {
        struct group *gr = getgrnam(conf->group);
        if (gr == NULL) {
            stp_log(STP_LOG_ERROR, "privileges error=\"unknown group\" group=%s", conf->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    /* The user's supplementary groups come along (initgroups, as nginx and
     * Postfix do): on Debian a key is shared through group ssl-cert, and a
     * reload reads it again as this user. Only `group =` alone gets that
     * group and no other. */
    if (geteuid() == 0 &&
        (conf->user[0] ? initgroups(conf->user, gid) : setgroups(1, &gid)) < 0) {
        stp_log(STP_LOG_ERROR, "privileges error=\"%s: %s\"",
                conf->user[0] ? "initgroups" : "setgroups", strerror(errno));
        return -1;
    }
    if (setgid(gid) < 0 || setuid(uid) < 0) {
        stp_log(STP_LOG_ERROR, "privileges error=\"%s\" user=%s group=%s", strerror(errno),
                conf->user[0] ? conf->user : "-", conf->group[0] ? conf->group : "-");
        return -1;
    }
    /* Check the result rather than trust the calls: root must be gone for
     * good (a saved set-user-ID of 0 would let it come back). */
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid ||
        (uid != 0 && setuid(0) == 0)) {
        stp_log(STP_LOG_ERROR, "privileges error=\"drop did not take effect\"");
        return -1;
    }
    gid_t groups[64];
    int ngroups = getgroups(64, groups);
    char glist[64 * 11 + 1] = "";
    size_t gl = 0;
    for (int i = 0; i < ngroups && gl < sizeof(glist) - 12; i++) {
        gl += (size_t)snprintf(glist + gl, sizeof(glist) - gl, "%s%u", i ? "," : "",
                               (unsigned)groups[i]);
    }
    stp_log(STP_LOG_INFO, "privileges user=%s uid=%u gid=%u groups=%s",
            conf->user[0] ? conf->user : "-", (unsigned)uid, (unsigned)gid,
            ngroups > 0 ? glist : ngroups == 0 ? "none" : "more-than-64");
    return 0;
}

/*
 * The DANE check: DANE trusts the AD bit of the configured resolver, so a
 * resolver that does not validate makes every TLSA record "insecure" and
 * DANE silently inert. That deserves a loud warning, not a refusal to start
 * or reload (the other policies still work). Asked when a route = mx
 * listener has a DANE policy: at start-up (waited for, up to dns_timeout)
 * and after every reload (on the main loop, not waited for).
 *
 * dane_configured: whether a route = mx listener can meet a DANE policy.
 */
static int dane_configured(const stp_config_t *conf)
{
    int mx = 0, dane = 0;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        mx |= conf->listeners[i].mode == STP_MODE_OUTBOUND &&
              conf->listeners[i].route == STP_ROUTE_MX;
    }
    const stp_policy_table_t *t = &conf->policies;
    dane = t->deflt.tls == STP_POLICY_TLS_DANE || t->deflt.tls == STP_POLICY_TLS_DANE_ONLY;
    for (size_t i = 0; i < t->n; i++) {
        dane |= t->entries[i].tls == STP_POLICY_TLS_DANE ||
                t->entries[i].tls == STP_POLICY_TLS_DANE_ONLY;
    }
    return mx && dane;
}

static void dane_warn(const char *resolver, const char *why)
{
    stp_log(STP_LOG_WARN,
            "dnssec WARNING: DANE is configured (tls = dane or dane-only) but the resolver "
            "%s does not validate DNSSEC: %s; TLSA records will be treated as insecure "
            "(dane falls back to MTA-STS or opportunistic TLS, dane-only defers every "
            "message). Point [proxy] resolver at a validating resolver (e.g. a local unbound)",
            resolver[0] ? resolver : "of /etc/resolv.conf", why);
}

/*
 * Where the AD bit comes from. DANE takes "validated" from the resolver's
 * AD bit; a resolver must only trust that bit over a secure channel, or
 * where it was configured to (RFC 4035 4.6, 4.9.3), and Postfix, which
 * trusts it the same way, strongly recommends a validating resolver on a
 * loopback address of the MTA host (postconf(5), smtp_dns_support_level).
 * Anywhere else, whoever is on the path to the resolver, or runs it, can
 * set AD on forged TLSA records and so authenticate a man in the middle.
 * Warned about (start-up, reload, --check), never refused: a trusted
 * resolver over a protected link (IPsec, WireGuard) is a deliberate choice.
 */
#define RESOLV_CONF "/etc/resolv.conf"

/* 1 if `ip` (no port, IPv6 without brackets) is on loopback: 127.0.0.0/8 or
 * ::1 (IPv4-mapped too). */
static int ip_on_loopback(const char *ip)
{
    struct sockaddr_storage ss;
    stp_cidr_t lo[2];
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
    } else {
        return 0;
    }
    if (stp_cidr_parse("127.0.0.0/8", &lo[0]) < 0 || stp_cidr_parse("::1/128", &lo[1]) < 0) {
        return 0;
    }
    return stp_cidr_list_match(lo, 2, (const struct sockaddr *)&ss);
}

/*
 * The resolvers the proxy's DNS goes to that are not on loopback, into
 * out ("198.51.100.53:53", or the nameservers of /etc/resolv.conf when
 * [proxy] resolver is not set, "10.0.0.2, 10.0.0.3"). Returns 1 if there is
 * one, 0 if every one is on loopback (c-ares asks 127.0.0.1 when
 * /etc/resolv.conf names none or cannot be read).
 */
static int remote_resolvers(const stp_config_t *conf, char *out, size_t len)
{
    char ip[64];
    out[0] = '\0';
    if (conf->resolver[0]) {
        /* "IP:PORT" or "[IPv6]:PORT", as parse_resolver wrote it */
        const char *r = conf->resolver, *end = r[0] == '[' ? strchr(r, ']') : strrchr(r, ':');
        size_t n = end ? (size_t)(end - r) - (r[0] == '[') : strlen(r);
        snprintf(ip, sizeof(ip), "%.*s", (int)(n < sizeof(ip) ? n : sizeof(ip) - 1),
                 r + (r[0] == '['));
        if (!ip_on_loopback(ip)) {
            snprintf(out, len, "%s", conf->resolver);
        }
        return out[0] != '\0';
    }
    FILE *f = fopen(RESOLV_CONF, "r");
    if (f == NULL) {
        return 0;
    }
    char line[512];
    size_t used = 0;
    while (fgets(line, sizeof(line), f)) {
        char *p = line + strspn(line, " \t");
        if (strncmp(p, "nameserver", 10) != 0 || (p[10] != ' ' && p[10] != '\t')) {
            continue;
        }
        p += 10 + strspn(p + 10, " \t");
        size_t n = strcspn(p, " \t\r\n%"); /* an IPv6 zone ("%eth0") is not the address */
        if (n == 0 || n >= sizeof(ip)) {
            continue;
        }
        memcpy(ip, p, n);
        ip[n] = '\0';
        if (!ip_on_loopback(ip) && used + n + 3 < len) {
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? ", " : "", ip);
        }
    }
    fclose(f);
    return out[0] != '\0';
}

/* The warning about a resolver off loopback where DANE is used, without its
 * prefix, into text; 0 when none is due. `where` gets "FILE:LINE" of
 * [proxy] resolver, or FILE when the resolvers come from /etc/resolv.conf. */
static int resolver_locality(const stp_config_t *conf, char *text, size_t len, char *where,
                             size_t wlen)
{
    char who[300];
    if (!dane_configured(conf) || !remote_resolvers(conf, who, sizeof(who))) {
        return 0;
    }
    if (conf->resolver[0]) {
        snprintf(where, wlen, "%s:%d", conf->path, conf->resolver_line);
        snprintf(text, len,
                 "DANE trusts the AD bit of the resolver %s ([proxy] resolver), which is not on "
                 "a loopback address",
                 who);
    } else {
        snprintf(where, wlen, "%s", conf->path);
        snprintf(text, len,
                 "DANE trusts the AD bit of the nameservers of " RESOLV_CONF
                 " (%s; [proxy] resolver is not set), which are not on a loopback address",
                 who);
    }
    const char *it = conf->resolver[0] ? "it" : "them";
    size_t n = strlen(text);
    snprintf(text + n, len - n,
             ": whoever is on the path to %s, or runs %s, can pass forged TLSA records as "
             "validated and so authenticate a man in the middle. Run a validating resolver on "
             "this host (e.g. unbound on 127.0.0.1:53) and point [proxy] resolver at it, or "
             "reach a trusted one only over a protected link",
             it, it);
    return 1;
}

static void resolver_locality_warn(const stp_config_t *conf)
{
    char text[1200], where[1100];
    if (resolver_locality(conf, text, sizeof(text), where, sizeof(where))) {
        stp_log(STP_LOG_WARN, "dnssec WARNING: %s (%s)", text, where);
    }
}

/* A reload's check runs on the main loop: a resolver that does not answer
 * must not hold up signals, certificate polling and /metrics for up to
 * dns_timeout. One at a time: a newer reload's check replaces it. */
static struct {
    stp_resolver_t *r;
    char resolver[sizeof(((stp_config_t *)0)->resolver)];
    char probe[sizeof(((stp_config_t *)0)->dnssec_probe)];
} dane_async;

static void dane_check_cancel(void)
{
    stp_resolver_t *r = dane_async.r;
    dane_async.r = NULL;
    stp_resolver_close(r); /* its callback runs with STP_DNS_CANCELLED */
}

static void on_dane_checked(stp_dns_result_t *res, void *arg)
{
    (void)arg;
    char why[300];
    if (res->status == STP_DNS_CANCELLED || dane_async.r == NULL) {
        stp_dns_result_free(res);
        return;
    }
    int ok = stp_resolver_dnssec_verdict(res, dane_async.probe, why, sizeof(why));
    stp_dns_result_free(res);
    dane_check_cancel(); /* done: the resolver goes (closing inside its callback is allowed) */
    if (!ok) {
        dane_warn(dane_async.resolver, why);
    }
}

/* After a reload: the same check as at start-up, without waiting for it. */
static void dane_check_async(const stp_config_t *conf)
{
    char err[256], why[300];
    dane_check_cancel();
    if (!dane_configured(conf)) {
        return;
    }
    resolver_locality_warn(conf);
    snprintf(dane_async.resolver, sizeof(dane_async.resolver), "%s", conf->resolver);
    snprintf(dane_async.probe, sizeof(dane_async.probe), "%s", conf->dnssec_probe);
    dane_async.r = stp_resolver_new(uv_default_loop(), conf->resolver, (unsigned)conf->dns_timeout,
                                    err, sizeof(err));
    if (dane_async.r == NULL) {
        snprintf(why, sizeof(why), "%s", err);
        dane_warn(dane_async.resolver, why);
        return;
    }
    if (stp_resolver_check_dnssec(dane_async.r, conf->dnssec_probe, on_dane_checked, NULL) != 0) {
        snprintf(why, sizeof(why), "invalid probe name '%s'", conf->dnssec_probe);
        dane_check_cancel();
        dane_warn(dane_async.resolver, why);
    }
}

/* At start-up, before the workers run: waited for (up to dns_timeout), so
 * the warning comes with the start-up lines. */
static void dane_check(const stp_config_t *conf)
{
    char why[300];
    resolver_locality_warn(conf);
    if (dane_configured(conf) && !stp_resolver_validates(conf->resolver,
                                                         (unsigned)conf->dns_timeout,
                                                         conf->dnssec_probe, why, sizeof(why))) {
        dane_warn(conf->resolver, why);
    }
}

/* route = mx: c-ares once per process, the domain memory from state_dir,
 * and the DANE check. */
static int mx_start_up(const stp_config_t *conf)
{
    if (stp_resolver_global_init() < 0) {
        stp_log(STP_LOG_ERROR, "start error=\"c-ares initialisation failed\"");
        return -1;
    }
    if (stp_domain_state_init(conf->state_dir) < 0) {
        stp_log(STP_LOG_ERROR, "start error=\"out of memory\"");
        return -1;
    }
    dane_check(conf);
    return 0;
}

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

/*
 * --check: what start-up logs about certificate expiry (error once expired,
 * warn within STP_CERT_WARN_DAYS), as warnings at the line of the 'cert'
 * key. The proxy runs with such a certificate, so the check still passes.
 */
static void cert_expiry_warnings(const stp_config_t *conf)
{
    for (size_t i = 0; i < conf->ncerts; i++) {
        long left;
        char when[32];
        if (stp_certwatch_expiry(conf->certs[i].cert, &left, when, sizeof(when)) < 0 ||
            left >= (long)STP_CERT_WARN_DAYS * 86400) {
            continue;
        }
        if (left <= 0) {
            fprintf(stderr,
                    "%s:%d: warning: certificate %s expired on %s: clients that verify it "
                    "will refuse the handshake\n",
                    conf->path, conf->certs[i].cert_line, conf->certs[i].cert, when);
        } else {
            fprintf(stderr, "%s:%d: warning: certificate %s expires on %s, in %ld days\n",
                    conf->path, conf->certs[i].cert_line, conf->certs[i].cert, when,
                    left / 86400);
        }
    }
}

/*
 * Descriptors: a proxied session holds two (client, backend or next hop).
 * The soft limit is raised to the hard one (what nginx's
 * worker_rlimit_nofile is set for by hand), and when the listeners'
 * max_connections still cannot be reached, start-up says so instead of the
 * first EMFILE under load.
 */
static void fd_limit(const stp_config_t *conf)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    rlim_t was = rl.rlim_cur;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            rl.rlim_cur = was;
        }
    }
    unsigned long long need = 64; /* listening sockets, DNS, state, metrics, logs */
    int bounded = 1;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        unsigned m = conf->listeners[i].max_connections;
        bounded &= m != 0;
        need += 2ull * m;
    }
    char needs[32] = "unbounded"; /* a listener with max_connections = 0 */
    if (bounded) {
        snprintf(needs, sizeof(needs), "%llu", need);
    }
    stp_log(STP_LOG_INFO, "fd_limit limit=%llu was=%llu need=%s", (unsigned long long)rl.rlim_cur,
            (unsigned long long)was, needs);
    if (bounded && need > rl.rlim_cur) {
        stp_log(STP_LOG_WARN,
                "fd_limit WARNING: the listeners' max_connections need about %llu descriptors "
                "(two per session) and the limit is %llu: raise it (ulimit -n, systemd "
                "LimitNOFILE) or lower max_connections",
                need, (unsigned long long)rl.rlim_cur);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    int check = 0, ch;
    char err[16384];

    if (argc > 1 && strcmp(argv[1], "probe") == 0) {
        return stp_probe_main(argc - 1, argv + 1, DEFAULT_CONFIG);
    }

    while ((ch = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'v':
            printf("smtp-tls-proxy %s (libuv %s, %s)\n", STP_VERSION, uv_version_string(),
                   OPENSSL_VERSION_TEXT);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, SIG_IGN); /* until the loop logs them (on_ignored_signal) */
    signal(SIGUSR2, SIG_IGN);
    struct sigaction early = {.sa_handler = on_early_hup, .sa_flags = SA_RESTART};
    sigemptyset(&early.sa_mask);
    sigaction(SIGHUP, &early, NULL);
    err[0] = '\0';
    stp_config_t *conf = stp_config_load(path, err, sizeof(err));
    if (conf == NULL) {
        fputs(err, stderr);
        if (err[0] && err[strlen(err) - 1] != '\n') {
            fputc('\n', stderr);
        }
        fprintf(stderr, "smtp-tls-proxy: configuration file %s test failed\n", path);
        return 1;
    }
    stp_certwatch_base_t files;
    stp_certwatch_base(conf, &files); /* before the files are read */
    stp_runtime_t *rt = stp_runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        fputs(err, stderr); /* FILE:LINE: message, one per line */
        fprintf(stderr, "smtp-tls-proxy: configuration file %s test failed\n", path);
        return 1;
    }
    conf = rt->conf;
    if (check) {
        cert_expiry_warnings(conf);
        char text[1200], where[1100];
        if (resolver_locality(conf, text, sizeof(text), where, sizeof(where))) {
            fprintf(stderr, "%s: warning: %s\n", where, text);
        }
        fprintf(stderr, "smtp-tls-proxy: configuration file %s test is successful\n", path);
        stp_runtime_unref(rt);
        return 0;
    }

    stp_log_init(conf->log_format, conf->log_level);
    stp_crash_install(conf->log_format);
    crash_thread_start("main");
    fd_limit(conf);
    config_path = path;
    if (mx_start_up(conf) < 0) {
        stp_runtime_unref(rt);
        stp_crash_thread_end();
        return 1;
    }
    current_rt = rt;
    stp_log_set_target(conf->log_target);
    uv_loop_t *loop = uv_default_loop();
    nworkers = conf->workers ? conf->workers : cpu_count();
    if (nworkers > MAX_WORKERS) {
        nworkers = MAX_WORKERS;
    }
    workers = calloc(nworkers, sizeof(*workers));
    int failed = workers == NULL;
    size_t nlimits = 0;
    for (; nlimits < conf->nlisteners && !failed; nlimits++) {
        const stp_listener_conf_t *lc = &conf->listeners[nlimits];
        if (stp_limits_init(&limits[nlimits], lc->max_connections, lc->max_connections_per_ip) <
            0) {
            stp_log(STP_LOG_ERROR, "start error=\"out of memory\"");
            failed = 1;
            break;
        }
        slots[nlimits].limits_init = 1;
        slots[nlimits].conf = lc;
        atomic_store(&slots[nlimits].holders, nworkers);
    }
    /* Every socket is bound here, before privileges are dropped, and every
     * worker's handles are set up before its thread starts. */
    unsigned ninit = 0;
    for (; ninit < nworkers && !failed; ninit++) {
        worker_t *w = &workers[ninit];
        w->id = ninit;
        snprintf(w->name, sizeof(w->name), "worker-%u", ninit);
        w->grace_ms = conf->shutdown_grace;
        uv_mutex_init(&w->lock);
        w->pending_tail = &w->pending;
        stp_runtime_ref(rt);
        w->rt = rt;
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->grace);
        w->grace.data = w;
        for (size_t i = 0; i < conf->nlisteners && !failed; i++) {
            int fd = stp_listener_bind(&conf->listeners[i], ninit == 0);
            if (fd < 0) {
                failed = 1;
            } else {
                worker_start_listener(w, i, rt, &conf->listeners[i], fd);
                failed = w->listeners[i].closed;
            }
        }
    }
    if (!failed && drop_privileges(conf) < 0) {
        failed = 1;
    }
    if (!failed && conf->metrics.port) {
        if (stp_metrics_http_start(loop, (const struct sockaddr *)&conf->metrics.addr, is_ready,
                                   NULL, err, sizeof(err)) < 0) {
            stp_log(STP_LOG_ERROR, "start error=\"%s\"", err);
            failed = 1;
        }
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    uv_signal_init(loop, &sig_usr1);
    uv_signal_init(loop, &sig_usr2);
    uv_async_init(loop, &worker_done, on_worker_done);
    if (!failed) {
        uv_signal_start(&sig_term, on_stop_signal, SIGTERM);
        uv_signal_start(&sig_int, on_stop_signal, SIGINT);
        uv_signal_start(&sig_hup, on_hup, SIGHUP);
        uv_timer_init(loop, &hup_later);
        if (hup_at_start_up) { /* reloaded once the workers run */
            uv_timer_start(&hup_later, on_hup_later, 0, 0);
        }
        uv_signal_start(&sig_usr1, on_ignored_signal, SIGUSR1);
        uv_signal_start(&sig_usr2, on_ignored_signal, SIGUSR2);
        if (geteuid() == 0) {
            stp_log(STP_LOG_WARN,
                    "privileges WARNING: still running as root after start-up; set the [proxy] "
                    "keys user and group to drop privileges once the ports are bound, or run "
                    "as an unprivileged user with CAP_NET_BIND_SERVICE"); /* no '=': one key */
        }
        stp_certwatch_check(conf);
        stp_certwatch_start(loop, conf, &files, CERT_POLL_MS, on_cert_change);
        stp_log(STP_LOG_INFO, "start version=%s hostname=%s listeners=%zu workers=%u tls=%s",
                STP_VERSION, conf->hostname, conf->nlisteners, nworkers,
                rt->server_ctx ? "yes" : "no");
        for (unsigned i = 0; i < nworkers; i++) {
            if (uv_thread_create(&workers[i].thread, worker_main, &workers[i]) != 0) {
                stp_log(STP_LOG_ERROR, "start error=\"cannot create worker thread\"");
                abort();
            }
        }
        uv_run(loop, UV_RUN_DEFAULT);
        for (unsigned i = 0; i < nworkers; i++) {
            uv_thread_join(&workers[i].thread);
        }
    } else {
        /* Nothing ran: close what was set up on each worker's loop. */
        for (unsigned i = 0; i < ninit; i++) {
            worker_t *w = &workers[i];
            for (size_t j = 0; j < SLOTS; j++) {
                if (w->live[j]) {
                    stp_listener_drain(&w->listeners[j]);
                }
            }
            uv_walk(&w->loop, close_walk, NULL);
            uv_run(&w->loop, UV_RUN_DEFAULT);
        }
        stp_metrics_http_stop();
        uv_walk(loop, close_walk, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    for (unsigned i = 0; i < ninit; i++) {
        uv_loop_close(&workers[i].loop);
        uv_mutex_destroy(&workers[i].lock);
        /* reloads a worker never took (it had stopped): their sockets and
         * snapshots */
        for (reload_msg_t *m = workers[i].pending, *next; m; m = next) {
            next = m->next;
            for (size_t j = 0; j < SLOTS; j++) {
                if (m->fd[j] >= 0) {
                    close(m->fd[j]);
                }
            }
            stp_runtime_unref(m->rt);
            free(m);
        }
        for (size_t j = 0; j < SLOTS; j++) {
            stp_runtime_unref(workers[i].retired[j]);
        }
        stp_runtime_unref(workers[i].rt);
    }
    for (size_t i = 0; i < SLOTS; i++) {
        if (slots[i].limits_init) {
            stp_limits_free(&limits[i]);
        }
    }
    free(workers);
    stp_runtime_unref(current_rt);
    stp_domain_state_free();
    uv_loop_close(loop);
    stp_crash_thread_end();
    return failed ? 1 : 0;
}

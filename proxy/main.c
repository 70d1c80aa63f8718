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
 * SIGTERM/SIGINT: every worker stops accepting and lets its sessions finish
 * (each gets "421 4.3.2" at its next command); after `shutdown_grace` what
 * is left is closed; the process exits once every worker's loop is empty.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/certwatch.h"
#include "proxy/config.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/metrics_http.h"

#define STP_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/smtp-tls-proxy/smtp-tls-proxy.ini"
#define MAX_WORKERS 256
#define CERT_POLL_MS 2000 /* how often certificate files are looked at */

/* One worker thread: its loop, its copies of the listeners, and the async
 * handle through which the main thread tells it to stop. */
typedef struct {
    unsigned id;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t grace;
    stp_listener_t listeners[STP_CONF_MAX_LISTENERS];
    size_t nlisteners;
    atomic_int stop;  /* set by the main thread before waking */
    uv_mutex_t lock;  /* guards pending */
    stp_runtime_t *pending; /* a reloaded snapshot to adopt (one reference) */
    stp_runtime_t *rt;      /* the worker's current snapshot (one reference) */
    int stopping;     /* worker's own view */
    uint64_t grace_ms;
} worker_t;

static worker_t *workers;
static unsigned nworkers;
static stp_limits_t limits[STP_CONF_MAX_LISTENERS]; /* per listener, shared by the workers */
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_async_t worker_done;
static atomic_uint workers_finished;
static int stopping;
static const char *config_path;
static stp_runtime_t *current_rt; /* the main thread's reference */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: smtp-tls-proxy [-c FILE] [--check] [--version] [--help]\n"
            "\n"
            "A STARTTLS-aware SMTP proxy: gives a plaintext mail server modern TLS.\n"
            "\n"
            "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
            "  -t, --check        validate the configuration (and certificates), then exit:\n"
            "                     0 if valid, 1 with FILE:LINE: message for each error\n"
            "  -v, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
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
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].nsessions || !w->listeners[i].draining) {
            return;
        }
    }
    /* Everything left is the worker's own (async, timer): close it so the
     * loop ends and the thread returns. */
    uv_walk(&w->loop, close_walk, NULL);
}

/* /readyz: ready until a stop signal starts the drain. */
static int is_ready(void *arg)
{
    (void)arg;
    return !stopping;
}

static void on_listener_empty(stp_listener_t *l)
{
    worker_all_done(&workers[l->worker]);
}

static void on_grace(uv_timer_t *t)
{
    worker_t *w = t->data;
    stp_log(STP_LOG_WARN, "stop worker=%u grace period over, closing remaining sessions", w->id);
    for (size_t i = 0; i < w->nlisteners; i++) {
        stp_listener_kill_sessions(&w->listeners[i]);
    }
}

/* New sessions of every listener use `rt`; a listener's conf moves to the
 * new snapshot's listener with the same address (the reload checked that
 * each has one). Sessions already running keep their own reference. */
static void worker_adopt(worker_t *w, stp_runtime_t *rt)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        stp_listener_t *l = &w->listeners[i];
        for (size_t j = 0; j < rt->conf->nlisteners; j++) {
            if (same_address(&l->conf->listen, &rt->conf->listeners[j].listen)) {
                l->conf = &rt->conf->listeners[j];
                break;
            }
        }
        l->rt = rt;
    }
    stp_runtime_unref(w->rt);
    w->rt = rt;
}

static void on_wake(uv_async_t *a)
{
    worker_t *w = a->data;
    uv_mutex_lock(&w->lock);
    stp_runtime_t *rt = w->pending;
    w->pending = NULL;
    uv_mutex_unlock(&w->lock);
    if (rt) {
        worker_adopt(w, rt);
    }
    if (!atomic_load(&w->stop) || w->stopping) {
        return;
    }
    w->stopping = 1;
    uv_timer_start(&w->grace, on_grace, w->grace_ms, 0);
    uv_unref((uv_handle_t *)&w->grace);
    /* Drain every listener first, then look for the end once: a listener
     * that is already empty must not close the loop under the others. */
    for (size_t i = 0; i < w->nlisteners; i++) {
        stp_listener_drain(&w->listeners[i]);
    }
    for (size_t i = 0; i < w->nlisteners; i++) {
        w->listeners[i].on_empty = on_listener_empty;
    }
    worker_all_done(w);
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_fetch_add(&workers_finished, 1);
    uv_async_send(&worker_done);
}

/* ---- main thread ---- */

static void on_worker_done(uv_async_t *a)
{
    (void)a;
    if (atomic_load(&workers_finished) < nworkers) {
        return;
    }
    stp_log(STP_LOG_INFO, "stop reason=shutdown");
    stp_certwatch_stop();
    stp_metrics_http_stop();
    uv_walk(uv_default_loop(), close_walk, NULL);
    /* Closing the signal handles restored the default actions: a repeated
     * SIGTERM must not kill a process that is already on its way out. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
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

/*
 * SIGHUP: load the file again and build a new snapshot (certificates read
 * again). Any error keeps the running snapshot. Keys that shape the process
 * (workers, user, group, log_format, log_level) and the set of listen
 * addresses need a restart; changing them is refused with a message.
 */
static void reload(const char *trigger)
{
    char err[16384];
    const stp_config_t *old = current_rt->conf;

    if (stopping) {
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
    if (conf->workers != old->workers || strcmp(conf->user, old->user) ||
        strcmp(conf->group, old->group) || conf->log_format != old->log_format ||
        conf->log_level != old->log_level) {
        restart = "workers, user, group, log_format and log_level need a restart";
    } else if (conf->nlisteners != old->nlisteners) {
        restart = "adding or removing listeners needs a restart";
    }
    for (size_t i = 0; i < old->nlisteners && !restart; i++) {
        size_t j = 0;
        while (j < conf->nlisteners &&
               !same_address(&old->listeners[i].listen, &conf->listeners[j].listen)) {
            j++;
        }
        if (j == conf->nlisteners) {
            restart = "changing a listen address needs a restart";
        } else if (conf->listeners[j].mode == STP_MODE_OUTBOUND &&
                   conf->listeners[j].route == STP_ROUTE_MX) {
            restart = "route = mx is not implemented yet";
        }
    }
    if (restart) {
        stp_config_free(conf);
        reload_failed(restart);
        return;
    }
    stp_runtime_t *rt = stp_runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        stp_log(STP_LOG_ERROR, "reload error=\"%s: %s\"", config_path, err);
        reload_failed("cannot build the new snapshot");
        return;
    }
    /* Caps are per listener and shared: change them in place. */
    for (size_t i = 0; i < old->nlisteners; i++) {
        for (size_t j = 0; j < rt->conf->nlisteners; j++) {
            const stp_listener_conf_t *n = &rt->conf->listeners[j];
            if (same_address(&old->listeners[i].listen, &n->listen)) {
                stp_limits_set(&limits[i], n->max_connections, n->max_connections_per_ip);
            }
        }
    }
    for (unsigned i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        stp_runtime_ref(rt);
        w->grace_ms = rt->conf->shutdown_grace; /* read by the worker only at stop */
        uv_mutex_lock(&w->lock);
        stp_runtime_t *stale = w->pending;
        w->pending = rt;
        uv_mutex_unlock(&w->lock);
        stp_runtime_unref(stale); /* a reload the worker had not taken yet */
        uv_async_send(&w->wake);
    }
    stp_runtime_unref(current_rt);
    current_rt = rt;
    stp_metrics_count(STP_M_RELOADS, "result=\"ok\"", 1);
    stp_log(STP_LOG_INFO, "reload result=ok trigger=%s listeners=%zu tls=%s", trigger,
            rt->conf->nlisteners, rt->server_ctx ? "yes" : "no");
    stp_certwatch_check(rt->conf);
    stp_certwatch_start(uv_default_loop(), rt->conf, CERT_POLL_MS, on_cert_change);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
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
    if (geteuid() == 0 && setgroups(1, &gid) < 0) {
        stp_log(STP_LOG_ERROR, "privileges error=\"setgroups: %s\"", strerror(errno));
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
    stp_log(STP_LOG_INFO, "privileges user=%s uid=%u gid=%u", conf->user[0] ? conf->user : "-",
            (unsigned)uid, (unsigned)gid);
    return 0;
}

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
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
    stp_runtime_t *rt = stp_runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "%s: %s\n", path, err);
        fprintf(stderr, "smtp-tls-proxy: configuration file %s test failed\n", path);
        return 1;
    }
    conf = rt->conf;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        if (conf->listeners[i].mode == STP_MODE_OUTBOUND &&
            conf->listeners[i].route == STP_ROUTE_MX) {
            fprintf(stderr, "%s:%d: listener '%s': route = mx is not implemented yet\n", path,
                    conf->listeners[i].line, conf->listeners[i].name);
            stp_runtime_unref(rt);
            return 1;
        }
    }
    if (check) {
        fprintf(stderr, "smtp-tls-proxy: configuration file %s test is successful\n", path);
        stp_runtime_unref(rt);
        return 0;
    }

    stp_log_init(conf->log_format, conf->log_level);
    config_path = path;
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
    }
    /* Every socket is bound here, before privileges are dropped, and every
     * worker's handles are set up before its thread starts. */
    unsigned ninit = 0;
    for (; ninit < nworkers && !failed; ninit++) {
        worker_t *w = &workers[ninit];
        w->id = ninit;
        w->grace_ms = conf->shutdown_grace;
        uv_mutex_init(&w->lock);
        stp_runtime_ref(rt);
        w->rt = rt;
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->grace);
        w->grace.data = w;
        for (size_t i = 0; i < conf->nlisteners && !failed; i++) {
            int fd = stp_listener_bind(&conf->listeners[i], ninit == 0);
            if (fd < 0 || stp_listener_start(&w->listeners[i], &w->loop, rt, &conf->listeners[i],
                                             fd, &limits[i], ninit) < 0) {
                failed = 1;
            } else {
                w->nlisteners++;
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
    uv_async_init(loop, &worker_done, on_worker_done);
    if (!failed) {
        uv_signal_start(&sig_term, on_stop_signal, SIGTERM);
        uv_signal_start(&sig_int, on_stop_signal, SIGINT);
        uv_signal_start(&sig_hup, on_hup, SIGHUP);
        if (geteuid() == 0) {
            stp_log(STP_LOG_WARN,
                    "privileges WARNING: still running as root after start-up; set [proxy] "
                    "user = (and group =) to drop privileges once the ports are bound, or run "
                    "as an unprivileged user with CAP_NET_BIND_SERVICE");
        }
        stp_certwatch_check(conf);
        stp_certwatch_start(loop, conf, CERT_POLL_MS, on_cert_change);
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
            for (size_t j = 0; j < w->nlisteners; j++) {
                stp_listener_drain(&w->listeners[j]);
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
        stp_runtime_unref(workers[i].pending);
        stp_runtime_unref(workers[i].rt);
    }
    for (size_t i = 0; i < nlimits; i++) {
        stp_limits_free(&limits[i]);
    }
    free(workers);
    stp_runtime_unref(current_rt);
    uv_loop_close(loop);
    return failed ? 1 : 0;
}

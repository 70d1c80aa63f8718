/*
 * main: command line, start-up and shutdown of smtp-tls-proxy.
 *
 *   smtp-tls-proxy -c FILE           run in the foreground, log to stderr
 *   smtp-tls-proxy --check -c FILE   validate the configuration and exit
 *
 * SIGTERM/SIGINT: stop accepting, let sessions finish (each gets
 * "421 4.3.2" at its next command), and after the grace period close what
 * is left; the process exits once every handle is closed.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proxy/config.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/metrics_http.h"

#define STP_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/smtp-tls-proxy/smtp-tls-proxy.ini"
#define SHUTDOWN_GRACE_MS 30000

static stp_listener_t listeners[STP_CONF_MAX_LISTENERS];
static size_t nlisteners;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t grace_timer;
static int stopping;

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
            "Runs in the foreground and logs to stderr. SIGTERM/SIGINT drain and stop.\n");
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void all_done(void)
{
    for (size_t i = 0; i < nlisteners; i++) {
        if (listeners[i].nsessions || !listeners[i].draining) {
            return;
        }
    }
    stp_log(STP_LOG_INFO, "stop reason=shutdown");
    stp_metrics_http_stop();
    /* Everything left is ours (signals, timer): close it so the loop ends. */
    uv_walk(uv_default_loop(), close_walk, NULL);
}

/* /readyz: ready until a stop signal starts the drain. */
static int is_ready(void *arg)
{
    (void)arg;
    return !stopping;
}

static void on_listener_empty(stp_listener_t *l)
{
    (void)l;
    all_done();
}

static void on_grace(uv_timer_t *t)
{
    (void)t;
    stp_log(STP_LOG_WARN, "stop grace period over, closing remaining sessions");
    for (size_t i = 0; i < nlisteners; i++) {
        stp_listener_kill_sessions(&listeners[i]);
    }
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (stopping) {
        return;
    }
    stopping = 1;
    stp_log(STP_LOG_INFO, "stop signal=%s draining=yes grace=%ds",
            signum == SIGTERM ? "TERM" : "INT", SHUTDOWN_GRACE_MS / 1000);
    uv_timer_start(&grace_timer, on_grace, SHUTDOWN_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&grace_timer);
    /* Drain every listener first, then look for the end once: a listener
     * that is already empty must not close the loop under the others. */
    for (size_t i = 0; i < nlisteners; i++) {
        stp_listener_drain(&listeners[i]);
    }
    for (size_t i = 0; i < nlisteners; i++) {
        listeners[i].on_empty = on_listener_empty;
    }
    all_done();
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    /* XXX reload arrives with the production-service work (issue 5). */
    stp_log(STP_LOG_WARN, "reload not supported yet; restart to apply a new configuration");
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
    stp_log_set_target(conf->log_target);
    uv_loop_t *loop = uv_default_loop();
    int failed = 0;
    for (size_t i = 0; i < conf->nlisteners && !failed; i++) {
        if (stp_listener_start(&listeners[i], loop, rt, &conf->listeners[i]) < 0) {
            failed = 1;
        } else {
            nlisteners++;
        }
    }
    if (!failed && conf->metrics.port) {
        if (stp_metrics_http_start(loop, (const struct sockaddr *)&conf->metrics.addr, is_ready,
                                   NULL, err, sizeof(err)) < 0) {
            stp_log(STP_LOG_ERROR, "start error=\"%s\"", err);
            failed = 1;
        }
    }
    uv_timer_init(loop, &grace_timer);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    if (!failed) {
        uv_signal_start(&sig_term, on_stop_signal, SIGTERM);
        uv_signal_start(&sig_int, on_stop_signal, SIGINT);
        uv_signal_start(&sig_hup, on_hup, SIGHUP);
        stp_log(STP_LOG_INFO, "start version=%s hostname=%s listeners=%zu tls=%s", STP_VERSION,
                conf->hostname, nlisteners, rt->server_ctx ? "yes" : "no");
        uv_run(loop, UV_RUN_DEFAULT);
    } else {
        for (size_t i = 0; i < nlisteners; i++) {
            stp_listener_drain(&listeners[i]);
        }
        stp_metrics_http_stop();
        uv_walk(loop, close_walk, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; i < nlisteners; i++) {
        stp_limits_free(&listeners[i].limits);
    }
    stp_runtime_unref(rt);
    uv_loop_close(loop);
    return failed ? 1 : 0;
}

/*
 * listener_test: a connection no session can be made for (on_accept
 * returns UV_ENOMEM, as stp_session_accept does when it cannot allocate).
 * Here a real listener on loopback refuses a burst of connections: every
 * client of a plaintext listener reads the 421 before the close (an
 * implicit TLS listener only closes), one log line covers the burst, each is
 * counted in stp_connections_refused_total, and the listener then accepts
 * normally; draining it right after a refusal calls on_empty once its
 * acceptor is closed. The accept callback is the test's (the listener's own
 * one makes sessions). Running out of descriptors is acceptor_test's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/listener.h"
#include "proxy/metrics.h"
#include "test/unit/check.h"
#include "test/unit/sock_check.h"

#define BURST 4

static uv_loop_t loop;
static stp_listener_t lst;
static stp_listener_conf_t lconf;
static stp_config_t cf;
static stp_runtime_t rt;
static int refusing;    /* connections still to refuse */
static int refused;     /* connections refused */
static int accepted;    /* connections taken normally */
static int drain_after; /* drain the listener right after the next refusal */
static int empty_calls; /* on_empty */
static int released_at_empty;

static int on_test_accept(stp_listener_t *l, int fd, const struct sockaddr *peer, socklen_t len)
{
    (void)l;
    CHECK(peer->sa_family == AF_INET);
    CHECK_EQ_INT(len, sizeof(struct sockaddr_in));
    if (refusing > 0) {
        refusing--;
        refused++;
        if (drain_after) {
            drain_after = 0;
            stp_listener_drain(&lst); /* before the listener refuses fd */
        }
        return UV_ENOMEM;
    }
    accepted++;
    close(fd);
    return 0;
}

static void on_empty(stp_listener_t *l)
{
    (void)l;
    empty_calls++;
    released_at_empty = lst.released;
}

static int port;

static void start(stp_starttls_t starttls)
{
    memset(&lconf, 0, sizeof(lconf));
    snprintf(lconf.name, sizeof(lconf.name), "t");
    lconf.mode = STP_MODE_INBOUND;
    lconf.starttls = starttls;
    struct sockaddr_in *a = (struct sockaddr_in *)&lconf.listen.addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = 0;
    int fd = stp_listener_bind(&lconf, 1);
    CHECK(fd >= 0);
    struct sockaddr_in got;
    socklen_t len = sizeof(got);
    getsockname(fd, (struct sockaddr *)&got, &len);
    port = ntohs(got.sin_port);
    rt.conf = &cf;
    snprintf(cf.hostname, sizeof(cf.hostname), "mx.test");
    /* worker 1: the first worker's copy would log the listener */
    CHECK_EQ_INT(stp_listener_start(&lst, &loop, &rt, &lconf, fd, NULL, 1), 0);
    lst.on_accept = on_test_accept;
    lst.on_empty = on_empty;
}

static int client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    CHECK_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Runs the loop until cond() or 5 s. */
static void run_until(int (*cond)(void))
{
    for (int i = 0; i < 500 && !cond(); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
}

static int burst_refused(void)
{
    return refused == BURST;
}

static int burst_refused_one(void)
{
    return refused == 1;
}

static int one_accepted(void)
{
    return accepted == 1;
}

static int emptied(void)
{
    return empty_calls > 0;
}

/* The value of a series in the registry's output, or -1. */
static long series(const char *name_and_labels)
{
    static char text[65536];
    stp_metrics_render(text, sizeof(text));
    const char *p = strstr(text, name_and_labels);
    return p ? strtol(p + strlen(name_and_labels), NULL, 10) : -1;
}

static const char oom_series[] =
    "stp_connections_refused_total{listener=\"t\",reason=\"out_of_memory\"} ";

static void test_refusals_keep_the_listener_accepting(void)
{
    uv_loop_init(&loop);
    stp_metrics_reset();
    start(STP_STARTTLS_OFFER);
    int fds[BURST];
    refusing = BURST;
    for (int i = 0; i < BURST; i++) {
        fds[i] = client();
    }
    stp_capture_t cap;
    stp_capture_begin(&cap);
    run_until(burst_refused);
    const char *log = stp_capture_end(&cap);
    CHECK_EQ_INT(refused, BURST);
    for (int i = 0; i < BURST; i++) {
        CHECK(stp_told(fds[i], "421 4.3.2 mx.test Out of memory, try again later\r\n"));
        close(fds[i]);
    }
    /* one line for the burst (a line a second at most) */
    CHECK(strstr(log, "accept listener=t error=\"out of memory\" repeated=0 result=closed\n"));
    CHECK(strstr(strchr(log, '\n') + 1, "accept") == NULL);
    CHECK_EQ_INT(series(oom_series), BURST);

    /* memory back: the next connection is taken as usual */
    int fd = client();
    run_until(one_accepted);
    CHECK_EQ_INT(accepted, 1);
    close(fd);

    /* a drain from the refused connection's callback: on_empty once the
     * acceptor is closed, and that connection still refused */
    refusing = 1;
    drain_after = 1;
    fd = client();
    run_until(emptied);
    CHECK_EQ_INT(empty_calls, 1);
    CHECK_EQ_INT(released_at_empty, 1);
    CHECK_EQ_INT(refused, BURST + 1);
    CHECK(stp_told(fd, "421 4.3.2 mx.test Out of memory, try again later\r\n"));
    CHECK_EQ_INT(series(oom_series), BURST + 1);
    close(fd);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_implicit_tls_listener_only_closes(void)
{
    uv_loop_init(&loop);
    stp_metrics_reset();
    refused = accepted = empty_calls = 0;
    start(STP_STARTTLS_IMPLICIT);
    refusing = 1;
    int fd = client();
    stp_capture_t cap;
    stp_capture_begin(&cap);
    run_until(burst_refused_one);
    stp_capture_end(&cap);
    CHECK(stp_told(fd, ""));
    CHECK_EQ_INT(series(oom_series), 1);
    close(fd);
    stp_listener_drain(&lst);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(empty_calls, 1);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    STP_RUN(test_refusals_keep_the_listener_accepting);
    STP_RUN(test_implicit_tls_listener_only_closes);
    return STP_CHECK_DONE();
}

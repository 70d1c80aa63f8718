/*
 * listener_test: refusing a connection no session can be made for
 * (stp_listener_refuse, what stp_session_accept does when it cannot
 * allocate). libuv holds each accepted socket until uv_accept() and stops
 * watching the listener meanwhile, so a refusal that only returned stalled
 * the listener for good. Here a real listener on loopback refuses a burst of
 * connections (more than one while the spare handle is still closing):
 * every client sees its connection closed, the listener then accepts
 * normally, and draining it while the spare closes calls on_empty only
 * after the spare's close callback. The connection callback is the test's
 * (the listener's own one makes sessions).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/listener.h"
#include "test/unit/check.h"

#define BURST 4

static uv_loop_t loop;
static stp_listener_t lst;
static stp_listener_conf_t lconf;
static int refusing;    /* connections still to refuse */
static int refused;     /* connections refused */
static int waited;      /* refusals while the spare was closing */
static int accepted;    /* connections taken normally */
static uv_tcp_t taken;  /* the one taken normally */
static int drain_after; /* drain the listener right after the next refusal */
static int empty_calls; /* on_empty */
static int spare_closing_at_empty;

static void on_test_accept(stp_listener_t *l)
{
    uv_stream_t *server = (uv_stream_t *)&l->tcp;
    if (refusing > 0) {
        if (lst.spare_closing) {
            waited++; /* this one waits and is announced again */
        } else {
            refusing--;
            refused++;
        }
        stp_listener_refuse(&lst, "out of memory");
        if (drain_after) {
            drain_after = 0;
            stp_listener_drain(&lst);
        }
        return;
    }
    uv_tcp_init(&loop, &taken);
    CHECK_EQ_INT(uv_accept(server, (uv_stream_t *)&taken), 0);
    accepted++;
}

static void on_empty(stp_listener_t *l)
{
    (void)l;
    empty_calls++;
    spare_closing_at_empty = lst.spare_closing;
}

static int port;

static void start(void)
{
    memset(&lconf, 0, sizeof(lconf));
    snprintf(lconf.name, sizeof(lconf.name), "t");
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
    /* worker 1: the first worker's copy would log the listener (and look
     * at the runtime, which this test has none of) */
    CHECK_EQ_INT(stp_listener_start(&lst, &loop, NULL, &lconf, fd, NULL, 1), 0);
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

/* The server closed fd: EOF (or a reset) without a byte. */
static int closed_by_server(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 1) {
        return 0;
    }
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int burst_fd[BURST];
static int burst_done(void)
{
    for (int i = 0; i < BURST; i++) {
        if (burst_fd[i] >= 0 && !closed_by_server(burst_fd[i])) {
            return 0;
        }
        burst_fd[i] = -1; /* seen closed (its descriptor is closed below) */
    }
    return 1;
}

static int one_accepted(void)
{
    return accepted == 1;
}

static int emptied(void)
{
    return empty_calls > 0;
}

static void test_refusals_keep_the_listener_accepting(void)
{
    uv_loop_init(&loop);
    start();
    int fds[BURST];
    /* all connected before the loop runs: one wakeup accepts them in a
     * row, so the later ones find the spare still closing */
    refusing = BURST;
    for (int i = 0; i < BURST; i++) {
        fds[i] = burst_fd[i] = client();
    }
    stp_capture_t cap;
    stp_capture_begin(&cap);
    run_until(burst_done);
    const char *log = stp_capture_end(&cap);
    CHECK(burst_done());
    /* one line for the burst (a line a second at most) */
    CHECK(strstr(log, "accept listener=t error=\"out of memory\" repeated=0 result=closed\n"));
    CHECK(strstr(strchr(log, '\n') + 1, "accept") == NULL);
    CHECK_EQ_INT(refused, BURST + 0);
    CHECK(waited > 0);
    for (int i = 0; i < BURST; i++) {
        close(fds[i]);
    }
    /* memory back: the next connection is taken as usual */
    int fd = client();
    run_until(one_accepted);
    CHECK_EQ_INT(accepted, 1);
    CHECK(!lst.spare_closing && !lst.spare_waiting);
    close(fd);
    if (accepted) {
        uv_close((uv_handle_t *)&taken, NULL);
    }

    /* a drain while the spare closes: on_empty waits for it */
    refusing = 1;
    drain_after = 1;
    fd = client();
    run_until(emptied);
    CHECK_EQ_INT(empty_calls, 1);
    CHECK_EQ_INT(spare_closing_at_empty, 0);
    CHECK_EQ_INT(refused, BURST + 1);
    close(fd);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    STP_RUN(test_refusals_keep_the_listener_accepting);
    return STP_CHECK_DONE();
}

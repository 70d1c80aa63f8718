/*
 * acceptor_test: accepting on a real loopback socket, and what happens when
 * the process is out of descriptors. The test lowers its own descriptor
 * limit and fills every slot below it, then connects clients (their sockets
 * made before): each one is taken in the acceptor's reserve slot and shed,
 * the slot becomes the reserve again, and nothing else is accepted. With the reserve
 * gone (as when another thread takes its slot) accepting pauses: the loop
 * sleeps until the pause timer instead of turning on accept4(), and
 * resumes by itself once a descriptor is free. Also: the errno table, the
 * batch bound per wakeup, and closing from the connection callback.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/acceptor.h"
#include "test/unit/check.h"
#include "test/unit/sock_check.h"

static uv_loop_t loop;
static stp_acceptor_t acc;
static int port;
static int conns, sheds, pauses, closed_calls;
static int last_pause_err, last_shed_err, last_shed_fd;
static int close_on_conn; /* on_conn closes the acceptor */

static void on_conn(stp_acceptor_t *a, int fd, const struct sockaddr *peer, socklen_t len)
{
    CHECK(peer->sa_family == AF_INET);
    CHECK_EQ_INT(len, sizeof(struct sockaddr_in));
    CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    conns++;
    close(fd);
    if (close_on_conn) {
        stp_acceptor_close(a);
    }
}

static void on_shed(stp_acceptor_t *a, int fd, int err)
{
    (void)a;
    sheds++;
    last_shed_err = err;
    last_shed_fd = fd;
    CHECK_EQ_INT(write(fd, "shed\r\n", 6), 6); /* the acceptor closes it */
}

static void on_pause(stp_acceptor_t *a, int err)
{
    (void)a;
    pauses++;
    last_pause_err = err;
}

static void on_closed(stp_acceptor_t *a)
{
    (void)a;
    closed_calls++;
}

static void start(void)
{
    conns = sheds = pauses = closed_calls = 0;
    close_on_conn = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    CHECK_EQ_INT(listen(fd, 4 * STP_ACCEPT_BATCH), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    memset(&acc, 0, sizeof(acc));
    acc.on_conn = on_conn;
    acc.on_shed = on_shed;
    acc.on_pause = on_pause;
    acc.on_closed = on_closed;
    CHECK_EQ_INT(stp_acceptor_start(&acc, &loop, fd), 0);
    CHECK(acc.reserve >= 0);
}

static void stop(void)
{
    stp_acceptor_close(&acc);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(closed_calls, 1);
}

static void connect_to(int fd)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    CHECK_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
}

static int client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    connect_to(fd);
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether the server said `want` and closed fd ("" for a close or reset
 * without a byte). */
static void test_classify(void)
{
    CHECK_EQ_INT(stp_accept_classify(EAGAIN), STP_ACCEPT_AGAIN);
    CHECK_EQ_INT(stp_accept_classify(EWOULDBLOCK), STP_ACCEPT_AGAIN);
    static const int skip[] = {EINTR,     ECONNABORTED, EPROTO, ENOPROTOOPT, ENETDOWN, ENETUNREACH,
                               EHOSTDOWN, EHOSTUNREACH, ENONET, EOPNOTSUPP,  EPERM};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++) {
        CHECK_EQ_INT(stp_accept_classify(skip[i]), STP_ACCEPT_SKIP);
    }
    CHECK_EQ_INT(stp_accept_classify(EMFILE), STP_ACCEPT_SHED);
    CHECK_EQ_INT(stp_accept_classify(ENFILE), STP_ACCEPT_SHED);
    static const int pause[] = {ENOBUFS, ENOMEM, EBADF, EINVAL, ENOTSOCK, EFAULT};
    for (size_t i = 0; i < sizeof(pause) / sizeof(pause[0]); i++) {
        CHECK_EQ_INT(stp_accept_classify(pause[i]), STP_ACCEPT_PAUSE);
    }
}

#define MANY (3 * STP_ACCEPT_BATCH + 2)

static int all_taken(void)
{
    return conns == MANY;
}

static void test_batch_per_wakeup(void)
{
    uv_loop_init(&loop);
    start();
    int fds[MANY];
    for (int i = 0; i < MANY; i++) {
        fds[i] = client(); /* all in the kernel's queue before the loop runs */
    }
    uv_run(&loop, UV_RUN_NOWAIT); /* one wakeup */
    CHECK_EQ_INT(conns, STP_ACCEPT_BATCH);
    run_until(all_taken);
    CHECK_EQ_INT(conns, MANY);
    CHECK_EQ_INT(pauses, 0);
    for (int i = 0; i < MANY; i++) {
        close(fds[i]);
    }
    stop();
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

#define NCLIENTS 5
#define MAXFILL 256

static int fill[MAXFILL];
static int nfill;

/* Lowers the soft limit to a few above what is open and takes every slot
 * below it. */
static void exhaust(struct rlimit *saved)
{
    int top = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(top);
    CHECK_EQ_INT(getrlimit(RLIMIT_NOFILE, saved), 0);
    struct rlimit low = *saved;
    low.rlim_cur = (rlim_t)top + 64;
    CHECK_EQ_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
    nfill = 0;
    int fd;
    while (nfill < MAXFILL && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) {
        fill[nfill++] = fd;
    }
    CHECK(nfill < MAXFILL);
    CHECK_EQ_INT(errno, EMFILE);
}

static int sheds_wanted;
static int enough_sheds(void)
{
    return sheds >= sheds_wanted;
}

static int one_conn(void)
{
    return conns == 1;
}

static void test_out_of_descriptors(void)
{
    uv_loop_init(&loop);
    start();
    int cl[NCLIENTS + 2];
    for (int i = 0; i < NCLIENTS + 2; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM, 0); /* made now, connected when full */
    }
    struct rlimit saved;
    exhaust(&saved);

    /* Every waiting connection is taken in the reserve's slot and shed;
     * the reserve is back after each one. */
    for (int i = 0; i < NCLIENTS; i++) {
        connect_to(cl[i]);
    }
    sheds_wanted = NCLIENTS;
    run_until(enough_sheds);
    CHECK_EQ_INT(sheds, NCLIENTS);
    CHECK_EQ_INT(last_shed_err, UV_EMFILE);
    CHECK_EQ_INT(conns, 0);
    CHECK_EQ_INT(pauses, 0);
    /* the connection's slot became the reserve: never free for another thread */
    CHECK_EQ_INT(acc.reserve, last_shed_fd);
    for (int i = 0; i < NCLIENTS; i++) {
        CHECK(stp_told(cl[i], "shed\r\n"));
    }

    /* The reserve's slot taken, as by another thread: accepting pauses,
     * and the loop sleeps until the pause timer instead of spinning. */
    close(acc.reserve);
    acc.reserve = -1;
    fill[nfill++] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fill[nfill - 1] >= 0);
    connect_to(cl[NCLIENTS]);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(pauses, 1);
    CHECK_EQ_INT(last_pause_err, UV_EMFILE);
    CHECK(acc.paused);
    CHECK(!uv_is_active((uv_handle_t *)&acc.poll));
    double t0 = now_s();
    uv_run(&loop, UV_RUN_ONCE); /* blocks until the pause ends */
    double slept = now_s() - t0;
    CHECK(slept > 0.8 * STP_ACCEPT_PAUSE_MS / 1000.0);
    /* still out of descriptors (no reserve to be had): paused again */
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(pauses, 2);
    CHECK_EQ_INT(sheds, NCLIENTS);
    CHECK(acc.reserve < 0);

    /* One descriptor free: the next resume reopens the reserve, and the
     * waiting client is shed with it. */
    close(fill[--nfill]);
    sheds_wanted = NCLIENTS + 1;
    t0 = now_s();
    run_until(enough_sheds);
    CHECK_EQ_INT(sheds, NCLIENTS + 1);
    CHECK(now_s() - t0 < 2.0 * STP_ACCEPT_PAUSE_MS / 1000.0 + 0.5);
    CHECK(stp_told(cl[NCLIENTS], "shed\r\n"));
    CHECK(acc.reserve >= 0);
    CHECK_EQ_INT(conns, 0);

    /* Descriptors back: connections are taken again. */
    while (nfill > 0) {
        close(fill[--nfill]);
    }
    CHECK_EQ_INT(setrlimit(RLIMIT_NOFILE, &saved), 0);
    connect_to(cl[NCLIENTS + 1]);
    run_until(one_conn);
    CHECK_EQ_INT(conns, 1);
    CHECK_EQ_INT(sheds, NCLIENTS + 1);
    for (int i = 0; i < NCLIENTS + 2; i++) {
        close(cl[i]);
    }
    stop();
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_closed_from_on_conn(void)
{
    uv_loop_init(&loop);
    start();
    close_on_conn = 1;
    int a = client(), b = client();
    run_until(one_conn);
    CHECK_EQ_INT(conns, 1); /* the second was not taken: the acceptor closed */
    CHECK(acc.closing);
    CHECK_EQ_INT(acc.fd, -1);
    CHECK_EQ_INT(acc.reserve, -1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(closed_calls, 1);
    CHECK(stp_told(b, "")); /* reset with the listening socket */
    close(a);
    close(b);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    STP_RUN(test_classify);
    STP_RUN(test_batch_per_wakeup);
    STP_RUN(test_out_of_descriptors);
    STP_RUN(test_closed_from_on_conn);
    return STP_CHECK_DONE();
}

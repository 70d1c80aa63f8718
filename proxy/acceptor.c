/*
 * acceptor: accepting without uv_listen() (see acceptor.h for why).
 *
 * Per connection this costs what libuv's own path did: accept4() returns
 * the peer's address, which saves the getpeername() a session made after
 * uv_accept(), and that pays for the ioctl(FIONBIO) uv_tcp_open() makes on
 * the new socket; the accept4() that finds the queue empty (EAGAIN) ends a
 * wakeup as it did in libuv 1.44's loop.
 */
#include "proxy/acceptor.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

stp_accept_action_t stp_accept_classify(int err)
{
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
        return STP_ACCEPT_AGAIN;
    case EINTR:
    case ECONNABORTED: /* the client left before it was accepted */
    /* accept(2): Linux passes network errors already pending on the new
     * connection on as accept()'s own; they are that connection's, the
     * next one is fine. EPERM: a firewall rule refused it. */
    case EPROTO:
    case ENOPROTOOPT:
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET:
    case EOPNOTSUPP:
    case EPERM:
        return STP_ACCEPT_SKIP;
    case EMFILE:
    case ENFILE:
        return STP_ACCEPT_SHED;
    default:
        /* ENOBUFS, ENOMEM: the kernel is short of memory, and retrying at
         * once only makes it shorter. Anything else (EBADF, EINVAL...)
         * would fail again at every attempt: a pause, never a spin. */
        return STP_ACCEPT_PAUSE;
    }
}

/*
 * The reserve: a second descriptor of the listening socket itself. Any
 * descriptor would hold the slot; this one needs no file (nothing to open
 * in a chroot or a bare container), is never polled, and goes with the
 * socket. (A duplicate keeps the socket's epoll registration alive after
 * close(a->fd): stp_acceptor_close() and pauses take it out of epoll first.)
 */
static int open_reserve(const stp_acceptor_t *a)
{
    return fcntl(a->fd, F_DUPFD_CLOEXEC, 0);
}

static void on_readable(uv_poll_t *p, int status, int events);

static void on_resume(uv_timer_t *t)
{
    stp_acceptor_t *a = t->data;
    a->paused = 0;
    if (a->reserve < 0) {
        a->reserve = open_reserve(a); /* may fail again: the next EMFILE pauses again */
    }
    int rc = uv_poll_start(&a->poll, UV_READABLE, on_readable);
    if (rc < 0) {
        a->paused = 1;
        uv_timer_start(&a->pause_timer, on_resume, STP_ACCEPT_PAUSE_MS, 0);
        a->on_pause(a, rc);
    }
}

static void pause_accepting(stp_acceptor_t *a, int err)
{
    a->paused = 1;
    uv_poll_stop(&a->poll);
    uv_timer_start(&a->pause_timer, on_resume, STP_ACCEPT_PAUSE_MS, 0);
    a->on_pause(a, err);
}

/*
 * Out of descriptors (`err`): the reserve's slot takes one waiting
 * connection, on_shed refuses it, and the slot becomes the reserve again.
 * Returns 0 to go on accepting, -1 when this cannot be done: there is no
 * reserve to be had, or the slot it freed was taken by another thread
 * before accept4() (the other workers and the main thread open descriptors
 * too). A reserve lost that way is sought again here and at the end of each
 * pause, whenever a descriptor is free.
 */
static int shed_one(stp_acceptor_t *a, int err)
{
    if (a->reserve < 0 && (a->reserve = open_reserve(a)) < 0) {
        return -1;
    }
    close(a->reserve);
    a->reserve = -1;
    int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        stp_accept_action_t act = stp_accept_classify(errno);
        a->reserve = open_reserve(a);
        return a->reserve < 0 || act == STP_ACCEPT_SHED || act == STP_ACCEPT_PAUSE ? -1 : 0;
    }
    a->on_shed(a, fd, uv_translate_sys_error(err));
    /* dup3() closes the connection as close() would and makes its slot the
     * reserve in the same step: after a close() and a new dup, another
     * thread could take the slot in between (a worker accepting the next
     * client, which connects as soon as it sees this one closed). */
    if (!a->closing && dup3(a->fd, fd, O_CLOEXEC) == fd) {
        a->reserve = fd;
        return 0;
    }
    close(fd);
    if (a->closing) {
        return 0;
    }
    a->reserve = open_reserve(a);
    return a->reserve < 0 ? -1 : 0;
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    stp_acceptor_t *a = p->data;
    (void)events;
    if (status < 0) {
        pause_accepting(a, status); /* libuv stopped the handle itself */
        return;
    }
    /* Every attempt counts, failed ones too: an error that repeats for
     * every waiting connection ends the wakeup after a batch like
     * connections do. on_conn may close the acceptor. */
    for (unsigned n = 0; n < STP_ACCEPT_BATCH && !a->closing; n++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(a->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            a->on_conn(a, fd, (const struct sockaddr *)&peer, len);
            continue;
        }
        int err = errno;
        switch (stp_accept_classify(err)) {
        case STP_ACCEPT_AGAIN:
            return;
        case STP_ACCEPT_SKIP:
            break;
        case STP_ACCEPT_SHED:
            /* accept4() takes a descriptor before it looks at the queue,
             * so EMFILE does not say that a connection waits: at the first
             * attempt of a wakeup one does (the socket polled readable),
             * later the next wakeup will tell. Giving up the reserve for an
             * empty queue would only open a window for another thread to
             * take its slot. One connection shed per wakeup: while more
             * wait, the socket polls readable again at once. */
            if (n == 0 && shed_one(a, err) < 0) {
                pause_accepting(a, uv_translate_sys_error(err));
            }
            return;
        case STP_ACCEPT_PAUSE:
            pause_accepting(a, uv_translate_sys_error(err));
            return;
        }
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    stp_acceptor_t *a = h->data;
    if (--a->open_handles == 0 && a->on_closed) {
        a->on_closed(a);
    }
}

int stp_acceptor_start(stp_acceptor_t *a, uv_loop_t *loop, int fd)
{
    a->fd = fd;
    a->reserve = -1;
    a->paused = 0;
    a->closing = 0;
    uv_timer_init(loop, &a->pause_timer); /* cannot fail */
    a->pause_timer.data = a;
    a->open_handles = 1;
    int rc = uv_poll_init(loop, &a->poll, fd);
    if (rc == 0) {
        a->poll.data = a;
        a->open_handles = 2;
        rc = uv_poll_start(&a->poll, UV_READABLE, on_readable);
    }
    if (rc < 0) {
        stp_acceptor_close(a);
        return rc;
    }
    a->reserve = open_reserve(a);
    return 0;
}

void stp_acceptor_close(stp_acceptor_t *a)
{
    if (a->closing) {
        return;
    }
    a->closing = 1;
    /* The poll handle first: closing it takes the socket out of epoll, so
     * the descriptor can be closed at once, as uv_close() did it for the
     * uv_tcp_t this replaces (a listener removed by a reload stops taking
     * connections right away). */
    if (a->open_handles == 2) {
        uv_close((uv_handle_t *)&a->poll, on_handle_closed);
    }
    uv_close((uv_handle_t *)&a->pause_timer, on_handle_closed);
    close(a->fd);
    a->fd = -1;
    if (a->reserve >= 0) {
        close(a->reserve);
        a->reserve = -1;
    }
}

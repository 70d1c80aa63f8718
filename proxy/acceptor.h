/*
 * acceptor: takes connections off one listening socket in one event loop,
 * in place of libuv's uv_listen(), so that running out of descriptors
 * neither spins the loop nor stops the socket.
 *
 * libuv 1.44 (Debian bookworm) accepts in a loop inside its own callback
 * until EAGAIN. At EMFILE/ENFILE it closes the loop's reserve descriptor,
 * accepts and closes what is pending and reopens the reserve; when another
 * thread took the freed slot in between, the reserve stays closed and every
 * later accept() fails with EMFILE and is reported to the connection
 * callback without ever going back to the loop: the thread turns at 100% CPU,
 * its sessions frozen and SIGTERM unheard, as long as a connection waits
 * (and a rate-limited log line never comes again: the loop's clock stands
 * still). A failed uv_accept() outside that callback also leaves the
 * listener unwatched for good.
 *
 * Here, as nginx does: the socket is watched with a uv_poll_t, accept4() runs
 * at most STP_ACCEPT_BATCH times per wakeup, and at EMFILE/ENFILE the
 * acceptor gives up its own reserve descriptor to take one waiting
 * connection (one per wakeup), which on_shed refuses, then takes the slot
 * back; when that
 * does not work (no reserve, or the freed slot was taken), or on any other
 * resource error, it stops watching for STP_ACCEPT_PAUSE_MS and tries again.
 */
#ifndef STP_ACCEPTOR_H
#define STP_ACCEPTOR_H

#include <sys/socket.h>

#include <uv.h>

/* Connections taken per wakeup at most. Each one is a session set up at
 * once (an allocation, handles, a backend connect or TLS state: some tens
 * of microseconds), so a flood against one listener hands the loop back to
 * the sessions it serves within a few milliseconds; what is left waits in
 * the kernel's queue and wakes the loop again at its next turn (the poll is
 * level-triggered). 64 rather than nginx's unbounded multi_accept or its
 * one-per-wakeup default: bursts of up to 64 cost no more system calls per
 * connection than libuv 1.44's loop did, beyond that one epoll_wait more per
 * 64 connections. */
#define STP_ACCEPT_BATCH 64

/* How long accepting stops when it cannot go on (out of descriptors with
 * no reserve to give up, out of kernel memory): nginx's accept_mutex_delay
 * default. Long enough that a process at its limit spends nothing on a
 * socket it cannot serve (two accept attempts a second), short enough that a
 * waiting client hardly notices once sessions end and free descriptors. */
#define STP_ACCEPT_PAUSE_MS 500

/* What an accept4() error means for the loop over the queue. */
typedef enum {
    STP_ACCEPT_AGAIN, /* EAGAIN: the queue is empty, wait for the next wakeup */
    STP_ACCEPT_SKIP,  /* EINTR, or that connection failed on the network: go on */
    STP_ACCEPT_SHED,  /* EMFILE/ENFILE: give up the reserve to take and refuse one */
    STP_ACCEPT_PAUSE, /* out of memory, or a socket error that would repeat: stop a while */
} stp_accept_action_t;

/* Pure: the action for accept4()'s errno `err`. */
stp_accept_action_t stp_accept_classify(int err);

typedef struct stp_acceptor_s stp_acceptor_t;

struct stp_acceptor_s {
    uv_poll_t poll;
    uv_timer_t pause_timer;
    int fd;      /* the listening socket (owned), -1 once closed */
    int reserve; /* a descriptor given up at EMFILE, -1 while it cannot be had */
    int paused;  /* not watching until pause_timer fires */
    int closing; /* stp_acceptor_close() was called */
    unsigned open_handles;
    void *data; /* the owner's */
    /*
     * A connection: `fd` (non-blocking, close-on-exec) now belongs to the
     * callee, `peer` is its address. The callee may close the acceptor.
     */
    void (*on_conn)(stp_acceptor_t *a, int fd, const struct sockaddr *peer, socklen_t len);
    /*
     * Out of descriptors (`err`: UV_EMFILE or UV_ENFILE): `fd` is a waiting
     * connection taken in the reserve's slot so that it is not left to wait.
     * The callee may write a line to it (non-blocking) and must not close
     * it: the acceptor closes it by making its slot the reserve again.
     */
    void (*on_shed)(stp_acceptor_t *a, int fd, int err);
    /* Accepting stopped for STP_ACCEPT_PAUSE_MS; `err` (a libuv error) says why. */
    void (*on_pause)(stp_acceptor_t *a, int err);
    /* After stp_acceptor_close(): both handles are closed, the memory is the owner's again. */
    void (*on_closed)(stp_acceptor_t *a);
};

/*
 * Starts watching `fd` (listening, non-blocking) in `loop`; the callbacks
 * and `data` are set by the caller before. The socket is taken over on
 * success and on failure. Returns 0 or a libuv error; after a failure
 * the acceptor is closing and on_closed comes as after stp_acceptor_close().
 */
int stp_acceptor_start(stp_acceptor_t *a, uv_loop_t *loop, int fd);

/* Stops accepting and closes the listening socket and the reserve now (a
 * connection the kernel still queues is reset by the close); on_closed once
 * the handles are closed. Idempotent. */
void stp_acceptor_close(stp_acceptor_t *a);

#endif

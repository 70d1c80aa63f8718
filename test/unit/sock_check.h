/*
 * sock_check: what a test's client socket was told, for the unit tests that
 * run a listener (listener_test, acceptor_test).
 */
#ifndef STP_TEST_SOCK_CHECK_H
#define STP_TEST_SOCK_CHECK_H

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Whether the server wrote `want` and closed fd ("": closed without a
 * byte), within 2 s of silence. Prints what came instead. */
static inline int stp_told(int fd, const char *want)
{
    char buf[256];
    size_t n = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (n < sizeof(buf) - 1 && poll(&p, 1, 2000) == 1) {
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    if (strcmp(buf, want) != 0) {
        fprintf(stderr, "told \"%s\", not \"%s\"\n", buf, want);
        return 0;
    }
    return 1;
}

#endif

/*
 * ssl_write_fault: an LD_PRELOAD shim for the integration tests, for the
 * proxy's own write failures toward a next hop, which no peer can cause (a
 * TLS engine that broke, memory that ran out: the write fails at once, in
 * the call, not later through the socket). SSL_write on a client-side SSL
 * (the proxy's connection to a next hop; the legacy MTA's side is
 * plaintext) fails, as a broken engine's does, when the bytes written hold
 * the text of STP_FAULT_SSL_WRITE; everything else goes to BoringSSL's own
 * SSL_write (libssl is a shared library, see bazel/system.BUILD).
 *
 * Also socket(): a new TCP socket fails with EMFILE while the file named by
 * STP_FAULT_SOCKET exists, as when the proxy ran out of descriptors between
 * accepting a client (accept4, untouched) and opening its backend
 * connection (libuv's socket() call, through the shared libuv).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct ssl_st SSL;

int SSL_write(SSL *ssl, const void *buf, int num);
int SSL_is_server(const SSL *ssl);

int SSL_write(SSL *ssl, const void *buf, int num)
{
    const char *marker = getenv("STP_FAULT_SSL_WRITE");
    if (marker != NULL && *marker != '\0' && num > 0 && !SSL_is_server(ssl) &&
        memmem(buf, (size_t)num, marker, strlen(marker)) != NULL) {
        return -1;
    }
    int (*real)(SSL *, const void *, int) =
        (int (*)(SSL *, const void *, int))dlsym(RTLD_NEXT, "SSL_write");
    return real(ssl, buf, num);
}

int socket(int domain, int type, int protocol)
{
    const char *flag = getenv("STP_FAULT_SOCKET");
    if (flag != NULL && *flag != '\0' && (domain == AF_INET || domain == AF_INET6) &&
        (type & 0xf) == SOCK_STREAM && access(flag, F_OK) == 0) {
        errno = EMFILE;
        return -1;
    }
    int (*real)(int, int, int) = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    return real(domain, type, protocol);
}

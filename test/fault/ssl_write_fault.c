/*
 * ssl_write_fault: an LD_PRELOAD shim for the integration tests, for the
 * proxy's own write failures toward a next hop, which no peer can cause (a
 * TLS engine that broke, memory that ran out: the write fails at once, in
 * the call, not later through the socket). SSL_write on a client-side SSL
 * (the proxy's connection to a next hop; the legacy MTA's side is
 * plaintext) fails, as a broken engine's does, when the bytes written hold
 * the text of STP_FAULT_SSL_WRITE; everything else goes to BoringSSL's own
 * SSL_write (libssl is a shared library, see bazel/system.BUILD).
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

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

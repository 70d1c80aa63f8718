/*
 * fuzz_config: libFuzzer target for the configuration loader. The input is
 * the INI text (cut at its first NUL, as a C string would be); the loader
 * must turn anything into a snapshot or error lines, without crashing,
 * leaking or reading out of bounds.
 *
 * The loader resolves host names of `listen` and `backend` with getaddrinfo.
 * A fuzzer must not send DNS queries (slow, and a result that depends on the
 * network), so this file defines its own getaddrinfo/freeaddrinfo, which the
 * static link prefers over libc's: "localhost" is 127.0.0.1, every other
 * name does not exist. Address literals never reach getaddrinfo.
 * Relative file names (cert = x.pem) are opened in the working directory;
 * run the fuzzer from an empty directory.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    struct addrinfo ai;
    struct sockaddr_in sin;
} fake_addrinfo_t;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    if (node == NULL || strcmp(node, "localhost") != 0) {
        return EAI_NONAME;
    }
    fake_addrinfo_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return EAI_MEMORY;
    }
    f->sin.sin_family = AF_INET;
    f->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->ai.ai_family = AF_INET;
    f->ai.ai_socktype = SOCK_STREAM;
    f->ai.ai_addr = (struct sockaddr *)&f->sin;
    f->ai.ai_addrlen = sizeof(f->sin);
    *res = &f->ai;
    return 0;
}

void freeaddrinfo(struct addrinfo *res)
{
    free(res); /* ai is the first member of fake_addrinfo_t */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errbuf[4096];
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    stp_config_t *cf = stp_config_load_string(text, "fuzz.ini", errbuf, sizeof(errbuf));
    /* Either a snapshot or at least one message, never neither. */
    if (cf == NULL && errbuf[0] == '\0') {
        abort();
    }
    stp_config_free(cf);
    free(text);
    return 0;
}

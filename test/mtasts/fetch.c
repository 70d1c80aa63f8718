/*
 * fetch: one MTA-STS policy fetch from the command line, for tests.
 *
 *   fetch DOMAIN IP:PORT[,IP:PORT...] [--ca FILE] [--timeout MS]
 *
 * Connects to IP:PORT (IPv6 as [addr]:port; several, tried in order while
 * connecting fails, as the proxy tries the addresses of mta-sts.DOMAIN),
 * verifies the certificate for
 * mta-sts.DOMAIN against FILE (default: the system store), and prints one
 * JSON object: {"status": "ok"|"http"|..., "http_status": N, "error": "...",
 * "elapsed_ms": N, "policy": {"mode": ..., "max_age": N, "mx": [...]}}
 * ("policy" only on success). Exit status 0 on success, 1 on a failed
 * fetch, 2 on bad usage. The loop must close cleanly afterwards (every
 * handle closed), which the ASan build turns into a leak check.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/mta_sts_fetch.h"
#include "tls/tls_ctx.h"

static int exit_code = 2;

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void on_done(const stp_mta_sts_fetch_result_t *r, void *arg)
{
    (void)arg;
    printf("{\"status\": ");
    json_string(stp_mta_sts_fetch_status_name(r->status));
    printf(", \"http_status\": %d, \"error\": ", r->http_status);
    json_string(r->error);
    printf(", \"elapsed_ms\": %llu", (unsigned long long)r->elapsed_ms);
    if (r->policy) {
        printf(", \"policy\": {\"mode\": ");
        json_string(stp_mta_sts_mode_name(r->policy->mode));
        printf(", \"max_age\": %u, \"mx\": [", (unsigned)r->policy->max_age);
        for (size_t i = 0; i < r->policy->nmx; i++) {
            printf("%s", i ? ", " : "");
            json_string(stp_mta_sts_mx(r->policy, i));
        }
        printf("]}");
    }
    printf("}\n");
    exit_code = r->status == STP_MTA_STS_FETCH_OK ? 0 : 1;
}

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host)) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535) {
        return -1;
    }
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']') {
            return -1;
        }
        host[n - 1] = '\0';
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &in->sin_addr) == 1 ? 0 : -1;
}

/* A comma-separated list of IP:PORT into ss[]; the count, or 0 if one is bad. */
static size_t parse_addrs(const char *s, struct sockaddr_storage *ss, size_t cap)
{
    char buf[1024];
    size_t n = 0;
    if (strlen(s) >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, s, strlen(s) + 1);
    for (char *save = NULL, *a = strtok_r(buf, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        if (n == cap || parse_addr(a, &ss[n]) < 0) {
            return 0;
        }
        n++;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *ca = NULL;
    uint64_t timeout = 0;
    struct sockaddr_storage ss[STP_MTA_STS_FETCH_MAX_ADDR];
    size_t nss = argc < 3 ? 0 : parse_addrs(argv[2], ss, STP_MTA_STS_FETCH_MAX_ADDR);

    if (nss == 0) {
        fprintf(stderr, "usage: %s DOMAIN IP:PORT[,IP:PORT...] [--ca FILE] [--timeout MS]\n",
                argv[0]);
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc) {
            ca = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "%s: unknown argument %s\n", argv[0], argv[i]);
            return 2;
        }
    }
    char err[512];
    SSL_CTX *ctx = stp_tls_ctx_client_new(ca, TLS1_2_VERSION, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    stp_mta_sts_fetch_opts_t o = {
        .ctx = ctx,
        .domain = argv[1],
        .addrs = ss,
        .naddr = nss,
        .timeout_ms = timeout,
    };
    stp_mta_sts_fetch_t *f = stp_mta_sts_fetch_start(&loop, &o, on_done, NULL);
    SSL_CTX_free(ctx); /* the fetch holds its own reference */
    if (f == NULL) {
        fprintf(stderr, "%s: cannot start a fetch for '%s'\n", argv[0], argv[1]);
        uv_loop_close(&loop);
        return 2;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "%s: handles left open\n", argv[0]);
        return 3;
    }
    fflush(stdout);
    return exit_code;
}

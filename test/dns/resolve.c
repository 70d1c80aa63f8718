/*
 * resolve: a test tool that runs one lookup through proxy/resolver.c on a
 * libuv loop and prints the result as one JSON object, so the integration
 * tests can check what the proxy's resolver sees (status, AD bit, sorted MX,
 * addresses, TLSA, TXT, a CNAME's target) against real nsd/unbound servers.
 *
 *   resolve [--server IP:PORT] [--timeout MS] mx|addrs|tlsa|txt|cname|dnssec|startup NAME
 *
 * `startup` runs the synchronous start-up check (stp_resolver_validates)
 * and prints {"validates": BOOL, "why": TEXT}.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/resolver.h"

static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7F) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void hex(const uint8_t *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
    putchar('"');
}

static int exit_code = 1;

static void done(stp_dns_result_t *res, void *arg)
{
    printf("{\"status\": \"%s\", \"secure\": %s, \"why\": ", stp_dns_status_name(res->status),
           res->secure ? "true" : "false");
    json_str(res->why, strlen(res->why));
    printf(", \"name\": ");
    json_str(res->name, strlen(res->name));
    printf(", \"null_mx\": %s, \"implicit_mx\": %s, \"mx\": [", res->null_mx ? "true" : "false",
           res->implicit_mx ? "true" : "false");
    for (size_t i = 0; i < res->nmx; i++) {
        printf("%s[%u, ", i ? ", " : "", res->mx[i].preference);
        json_str(res->mx[i].host, strlen(res->mx[i].host));
        putchar(']');
    }
    printf("], \"addrs\": [");
    for (size_t i = 0; i < res->naddr; i++) {
        char a[INET6_ADDRSTRLEN];
        const struct sockaddr_storage *ss = &res->addr[i];
        if (ss->ss_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, a, sizeof(a));
        } else {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, a, sizeof(a));
        }
        printf("%s\"%s\"", i ? ", " : "", a);
    }
    printf("], \"tlsa\": [");
    for (size_t i = 0; i < res->ntlsa; i++) {
        printf("%s[%u, %u, %u, ", i ? ", " : "", res->tlsa[i].usage, res->tlsa[i].selector,
               res->tlsa[i].mtype);
        hex(res->tlsa[i].data, res->tlsa[i].len);
        putchar(']');
    }
    printf("], \"txt\": [");
    for (size_t i = 0; i < res->ntxt; i++) {
        printf("%s", i ? ", " : "");
        json_str(res->txt[i].text, res->txt[i].len);
    }
    printf("], \"target\": ");
    json_str(res->target, strlen(res->target));
    printf("}\n");
    exit_code = 0;
    stp_dns_result_free(res);
    stp_resolver_close(arg);
}

int main(int argc, char **argv)
{
    const char *server = NULL;
    unsigned timeout = 5000;
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "--server") == 0) {
            server = argv[i + 1];
        } else if (strcmp(argv[i], "--timeout") == 0) {
            timeout = (unsigned)atoi(argv[i + 1]);
        } else {
            break;
        }
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: resolve [--server IP:PORT] [--timeout MS] "
                        "mx|addrs|tlsa|txt|cname|dnssec|startup NAME\n");
        return 2;
    }
    const char *kind = argv[i], *name = argv[i + 1];
    char err[256];
    if (strcmp(kind, "startup") == 0) {
        stp_resolver_global_init();
        int ok = stp_resolver_validates(server, timeout, name, err, sizeof(err));
        printf("{\"validates\": %s, \"why\": ", ok ? "true" : "false");
        json_str(err, strlen(err));
        printf("}\n");
        return 0;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    stp_resolver_global_init();
    stp_resolver_t *r = stp_resolver_new(&loop, server, timeout, err, sizeof(err));
    if (r == NULL) {
        fprintf(stderr, "resolve: %s\n", err);
        return 2;
    }
    int rc;
    if (strcmp(kind, "mx") == 0) {
        rc = stp_resolver_mx(r, name, done, r);
    } else if (strcmp(kind, "addrs") == 0) {
        rc = stp_resolver_addrs(r, name, 25, done, r);
    } else if (strcmp(kind, "tlsa") == 0) {
        rc = stp_resolver_tlsa(r, name, 25, done, r);
    } else if (strcmp(kind, "txt") == 0) {
        rc = stp_resolver_txt(r, name, done, r);
    } else if (strcmp(kind, "cname") == 0) {
        rc = stp_resolver_cname(r, name, done, r);
    } else if (strcmp(kind, "dnssec") == 0) {
        rc = stp_resolver_check_dnssec(r, name, done, r);
    } else {
        fprintf(stderr, "resolve: unknown lookup '%s'\n", kind);
        return 2;
    }
    if (rc != 0) {
        printf("{\"status\": \"invalid\"}\n");
        stp_resolver_close(r);
        exit_code = 0;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&loop);
    return closed == 0 ? exit_code : 3;
}

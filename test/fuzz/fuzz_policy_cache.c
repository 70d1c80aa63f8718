/*
 * fuzz_policy_cache: libFuzzer target for the state file loader.
 *
 * Input: byte 0 picks the mode; 0: the rest is the whole file; else the
 * rest is the record lines and the target adds the header and a correct end
 * line (count and checksum), so mutations reach the record parser instead
 * of dying on the checksum. Checked: a rejected file leaves the cache empty
 * with a reason; an accepted file serializes to a file that loads again and
 * serializes to the same bytes (nothing is lost or invented across a
 * restart), and every cached policy is one the policy parser accepts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

enum { MAX_INPUT = 100000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char file[MAX_INPUT + 128];
    static stp_cache_t *c, *d;
    char why[256];
    const int64_t now = 1700000000;

    if (c == NULL) {
        c = stp_cache_new(64);
        d = stp_cache_new(64);
        if (c == NULL || d == NULL) {
            abort();
        }
    }
    if (size < 1 || size > MAX_INPUT) {
        return 0;
    }
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] != 0) {
        static const char header[] = "smtp-tls-proxy state 1\n";
        size_t used = sizeof(header) - 1, lines = 0;
        memcpy(file, header, used);
        memcpy(file + used, in, n);
        used += n;
        if (n > 0 && in[n - 1] != '\n') {
            file[used++] = '\n';
        }
        for (size_t i = sizeof(header) - 1; i < used; i++) {
            lines += file[i] == '\n';
        }
        used += (size_t)snprintf(file + used, sizeof(file) - used, "end %zu %016llx\n", lines,
                                 (unsigned long long)fnv1a(file, used));
        in = file;
        n = used;
    }
    if (stp_cache_load(c, in, n, now, why, sizeof(why)) != 0) {
        if (stp_cache_count(c) != 0 || why[0] == '\0') {
            abort();
        }
        return 0;
    }
    size_t len, len2;
    char *text = stp_cache_serialize(c, &len);
    if (text == NULL) {
        abort();
    }
    if (stp_cache_load(d, text, len, now, why, sizeof(why)) != 0) {
        abort();
    }
    char *again = stp_cache_serialize(d, &len2);
    if (again == NULL || len != len2 || memcmp(text, again, len) != 0 ||
        stp_cache_count(c) != stp_cache_count(d)) {
        abort();
    }
    free(text);
    free(again);
    return 0;
}

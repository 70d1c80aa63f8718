/*
 * check: the smallest test harness that does the job. A test file defines
 * test functions and lists them in main() with STP_RUN; CHECK records a
 * failure with file:line and the test goes on; the process exits non-zero if
 * any check failed and prints "N passed, N failed" per file.
 */
#ifndef STP_TEST_CHECK_H
#define STP_TEST_CHECK_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int stp_check_failures;
static int stp_check_current_failed;
static int stp_check_passed, stp_check_failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            stp_check_failures++;                                                     \
            stp_check_current_failed = 1;                                             \
        }                                                                             \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long stp_a_ = (long long)(a), stp_b_ = (long long)(b);                       \
        if (stp_a_ != stp_b_) {                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,    \
                    __LINE__, #a, #b, stp_a_, stp_b_);                                     \
            stp_check_failures++;                                                          \
            stp_check_current_failed = 1;                                                  \
        }                                                                                  \
    } while (0)

#define CHECK_MEM(a, alen, b, blen)                                                          \
    do {                                                                                     \
        size_t stp_al_ = (alen), stp_bl_ = (blen);                                           \
        if (stp_al_ != stp_bl_ || memcmp((a), (b), stp_al_) != 0) {                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s\n  got:  \"%.*s\"\n  want: \"%.*s\"\n", \
                    __FILE__, __LINE__, #a, #b, (int)stp_al_, (const char *)(a), (int)stp_bl_,   \
                    (const char *)(b));                                                      \
            stp_check_failures++;                                                            \
            stp_check_current_failed = 1;                                                    \
        }                                                                                    \
    } while (0)

#define CHECK_STR(a, b) CHECK_MEM((a), strlen(a), (b), strlen(b))

#define STP_RUN(fn)                                                   \
    do {                                                              \
        stp_check_current_failed = 0;                                 \
        fn();                                                         \
        if (stp_check_current_failed) {                               \
            stp_check_failed++;                                       \
            fprintf(stderr, "FAIL %s\n", #fn);                        \
        } else {                                                      \
            stp_check_passed++;                                       \
        }                                                             \
    } while (0)

/* What a test's code logs: stderr goes to a temporary file from
 * stp_capture_begin() until stp_capture_end(), which returns what was written
 * (at most 16383 bytes). */
typedef struct {
    FILE *file;
    int saved;
    char text[16384];
} stp_capture_t;

static inline void stp_capture_begin(stp_capture_t *c)
{
    c->file = tmpfile();
    CHECK(c->file != NULL);
    c->saved = dup(2);
    fflush(stderr);
    if (c->file) {
        dup2(fileno(c->file), 2);
    }
}

static inline const char *stp_capture_end(stp_capture_t *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    c->text[0] = '\0';
    if (c->file) {
        rewind(c->file);
        size_t n = fread(c->text, 1, sizeof(c->text) - 1, c->file);
        c->text[n] = '\0';
        fclose(c->file);
    }
    return c->text;
}

#define STP_CHECK_DONE()                                                        \
    (printf("%d passed, %d failed\n", stp_check_passed, stp_check_failed),     \
     stp_check_failures ? 1 : 0)

#endif

/*
 * certwatch: certificate expiry in logs and metrics, and renewed files
 * noticed without a signal.
 */
#include "proxy/certwatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proxy/log.h"
#include "proxy/metrics.h"

#define DAY_MS (24ull * 3600 * 1000)
#define SETTLE_MS 500 /* quiet time after a change: a rewrite may come in pieces */

typedef struct {
    const char *path; /* borrowed from the configuration */
    struct stat st;
    int ok;
} file_t;

static struct {
    uv_loop_t *loop;
    file_t files[2 * STP_CONF_MAX_CERTS];
    size_t nfiles;
    uv_timer_t poll, settle, daily;
    int timers;
    const stp_config_t *conf;
    void (*on_change)(void);
} w;

/* "a.example,b.example": DNS names of the SAN, else the CN. */
static void cert_names(X509 *x, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS) {
            continue;
        }
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        int n = ASN1_STRING_length(g->d.dNSName);
        if (len + (size_t)n + 2 < cap) {
            if (len) {
                out[len++] = ',';
            }
            memcpy(out + len, p, (size_t)n);
            len += (size_t)n;
            out[len] = '\0';
        }
    }
    GENERAL_NAMES_free(gens);
    if (len == 0) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
    }
}

/* The first certificate of `file`: seconds left until its notAfter, which
 * also goes into `when` (UTC); its names into `names` when not NULL.
 * Returns the notAfter time, or -1 when the file holds no certificate. */
static time_t read_expiry(const char *file, long *left, char *when, size_t whenlen, char *names,
                          size_t nameslen)
{
    FILE *f = fopen(file, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) {
        fclose(f);
    }
    if (x == NULL) {
        return -1;
    }
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x))) {
        days = secs = 0;
    }
    time_t not_after = time(NULL) + (time_t)days * 86400 + secs;
    struct tm tm;
    gmtime_r(&not_after, &tm);
    strftime(when, whenlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (names != NULL) {
        cert_names(x, names, nameslen);
    }
    X509_free(x);
    *left = (long)days * 86400 + secs;
    return not_after;
}

int stp_certwatch_expiry(const char *file, long *left, char *when, size_t whenlen)
{
    return read_expiry(file, left, when, whenlen, NULL, 0) == (time_t)-1 ? -1 : 0;
}

static void cert_label(char *label, size_t cap, const char *file)
{
    char lf[1100];
    snprintf(label, cap, "cert=\"%s\"", stp_metrics_label_escape(lf, sizeof(lf), file));
}

/* Logs one certificate's expiry and sets its gauge under `label`. */
static void check_one(const char *file, const char *label)
{
    char esc_file[1100], names[512], esc_names[600], when[32];
    long left = 0;
    stp_log_escape(esc_file, sizeof(esc_file), file, strlen(file));
    time_t not_after = read_expiry(file, &left, when, sizeof(when), names, sizeof(names));
    if (not_after == (time_t)-1) {
        stp_log(STP_LOG_ERROR, "certificate file=\"%s\" error=\"cannot be read\"", esc_file);
        return;
    }
    stp_log_escape(esc_names, sizeof(esc_names), names, strlen(names));

    stp_log_level_t level = left <= 0                                    ? STP_LOG_ERROR
                            : left < (long)STP_CERT_WARN_DAYS * 86400 ? STP_LOG_WARN
                                                                         : STP_LOG_INFO;
    stp_log(level, "certificate file=\"%s\" names=%s not_after=%s days_left=%ld%s", esc_file,
            esc_names, when, left / 86400,
            left <= 0 ? " expired=yes" : level == STP_LOG_WARN ? " expires=soon" : "");
    stp_metrics_gauge_set(STP_M_CERT_EXPIRY, label, (double)not_after);
}

void stp_certwatch_check(const stp_config_t *conf)
{
    char labels[STP_CONF_MAX_CERTS][1200]; /* 9.6 KiB of stack, main thread */
    const char *keep[STP_CONF_MAX_CERTS];
    for (size_t i = 0; i < conf->ncerts; i++) {
        cert_label(labels[i], sizeof(labels[i]), conf->certs[i].cert);
        keep[i] = labels[i];
        check_one(conf->certs[i].cert, labels[i]);
    }
    /* a certificate no longer configured has no expiry to alert on */
    stp_metrics_gauge_retain(STP_M_CERT_EXPIRY, keep, conf->ncerts);
}

static void on_settled(uv_timer_t *t)
{
    (void)t;
    if (w.on_change) {
        w.on_change();
    }
}

/* What a change looks like from stat(2): a new inode (a rename or a
 * switched symlink), or new contents (size, mtime, ctime). */
static int same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* stat(2), with a zeroed `st` for a file that cannot be looked at (errno
 * says why). */
static int look_at(const char *path, struct stat *st)
{
    if (stat(path, st) == 0) {
        return 1;
    }
    int e = errno;
    memset(st, 0, sizeof(*st));
    errno = e;
    return 0;
}

static void look(file_t *f)
{
    struct stat st;
    int ok = look_at(f->path, &st), e = errno;
    if (ok != f->ok || !same_stat(&st, &f->st)) {
        /* Not there, or not to be seen by this user (after dropping
         * privileges): the reload that follows says what it cannot read. */
        char esc[1100], why[160] = "";
        if (!ok && e == ENOENT) {
            snprintf(why, sizeof(why), " missing=yes");
        } else if (!ok) {
            snprintf(why, sizeof(why), " error=\"%s\"", strerror(e));
        }
        stp_log(STP_LOG_INFO, "certificate file=\"%s\" changed=yes%s",
                stp_log_escape(esc, sizeof(esc), f->path, strlen(f->path)), why);
        uv_timer_start(&w.settle, on_settled, SETTLE_MS, 0);
    }
    f->ok = ok;
    f->st = st;
}

static void on_poll(uv_timer_t *t)
{
    (void)t;
    for (size_t i = 0; i < w.nfiles; i++) {
        look(&w.files[i]);
    }
}

static void on_daily(uv_timer_t *t)
{
    (void)t;
    if (w.conf) {
        stp_certwatch_check(w.conf);
    }
}

void stp_certwatch_base(const stp_config_t *conf, stp_certwatch_base_t *base)
{
    base->n = 0;
    for (size_t i = 0; i < 2 * conf->ncerts; i++) {
        const char *path = i % 2 ? conf->certs[i / 2].key : conf->certs[i / 2].cert;
        if (path[0] == '\0') {
            continue; /* the key is in the certificate file */
        }
        size_t n = base->n++;
        base->path[n] = path;
        base->ok[n] = look_at(path, &base->st[n]);
    }
}

/*
 * A file seen in the base (taken as root, before `user =` took effect) that
 * this user may not look at: that is no change of the file, and a reload
 * could not read it either. Said once; the file counts as unseen from now
 * on, so that it is noticed (and reloaded) once its permissions let it be.
 */
static void hidden_since_base(file_t *f)
{
    struct stat st;
    if (!f->ok || look_at(f->path, &st) || (errno != EACCES && errno != EPERM)) {
        return;
    }
    const char *why = strerror(errno);
    char esc[1100];
    stp_log(STP_LOG_WARN,
            "certificate file=\"%s\" watched=no error=\"%s\" (the user the proxy runs as "
            "cannot look at it: a renewal is not noticed until it can)",
            stp_log_escape(esc, sizeof(esc), f->path, strlen(f->path)), why);
    f->ok = 0;
    f->st = st;
}

/*
 * Polling with stat(2) from a timer rather than uv_fs_poll: the state a
 * change is compared with was taken before the files were read, by
 * stp_certwatch_base (uv_fs_poll takes its first look later, in the thread
 * pool, and would miss a change made in between). A change while a file is
 * being read costs one more reload, never a missed renewal.
 */
void stp_certwatch_start(uv_loop_t *loop, const stp_config_t *conf,
                         const stp_certwatch_base_t *base, unsigned interval_ms,
                         void (*on_change)(void))
{
    w.loop = loop;
    w.conf = conf;
    w.on_change = on_change;
    if (!w.timers) {
        uv_timer_init(loop, &w.poll);
        uv_timer_init(loop, &w.settle);
        uv_timer_init(loop, &w.daily);
        w.timers = 1;
        uv_timer_start(&w.daily, on_daily, DAY_MS, DAY_MS);
        uv_unref((uv_handle_t *)&w.daily);
    }
    /* a reload may have changed the file names */
    for (w.nfiles = 0; w.nfiles < base->n; w.nfiles++) {
        file_t *f = &w.files[w.nfiles];
        f->path = base->path[w.nfiles];
        f->ok = base->ok[w.nfiles];
        f->st = base->st[w.nfiles];
        hidden_since_base(f);
    }
    uv_timer_start(&w.poll, on_poll, interval_ms, interval_ms);
    uv_unref((uv_handle_t *)&w.poll);
}

void stp_certwatch_stop(void)
{
    if (w.timers) {
        uv_close((uv_handle_t *)&w.poll, NULL);
        uv_close((uv_handle_t *)&w.settle, NULL);
        uv_close((uv_handle_t *)&w.daily, NULL);
        w.timers = 0;
    }
    w.nfiles = 0;
    w.conf = NULL;
}

/*
 * mx_world: the DNS server, the next hop's certificates and the MTA-STS
 * server of fuzz_session's route = mx listeners (see mx_world.h).
 *
 * The DNS server answers each question from the world tokens of the input,
 * or from a table keyed by the question's type, its first label and a
 * variant number (the token's digits). Names the table makes up are the
 * question's own with a label put in front or swapped ("mx.D" for the MX of
 * D, "mx.REST" for the CNAME of "alias.REST"), so any recipient domain the
 * fuzzer writes has a whole world of its own. Records are written in full
 * (no compression but the owner pointer to the question).
 */
#include "test/fuzz/mx_world.h"

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/dns_msg.h"
#include "proxy/domain_state.h"
#include "tls/dane.h"
#include "tls/tls_engine.h"

enum { K_MX, K_A, K_AAAA, K_TLSA, K_TXT, K_CNAME, K_NKINDS, MAX_TOK = 64 };

typedef struct {
    char action;
    unsigned variant;
} dns_tok_t;

static struct {
    dns_tok_t q[K_NKINDS][MAX_TOK];
    size_t n[K_NKINDS], next[K_NKINDS];
    uint8_t hs[MAX_TOK], sts[MAX_TOK];
    size_t nhs, nexths, nsts, nextsts;
    int half_close;
    world_attempt_t att;
} w;

static uv_loop_t *wloop;
static SSL_CTX *ctxs[W_NCERTS];
static X509 *ca_cert, *leaf_cert[W_NCERTS];

/* TLSA association data the table serves */
static uint8_t spki256_good[32], spki256_self[32], spki256_wrong[32], spki256_ca[32];
static uint8_t cert256_good[32], cert256_ca[32], spki512_good[64];
static uint8_t spki_good[256], ca_der[2048];
static size_t spki_good_len, ca_der_len;

/* ---- certificates ---- */

static EVP_PKEY *new_key(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *k = EVP_PKEY_new();
    if (ec == NULL || k == NULL || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(k, ec)) {
        abort();
    }
    return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (ext == NULL || !X509_add_ext(x, ext, -1)) {
        abort();
    }
    X509_EXTENSION_free(ext);
}

/* A certificate for `key`, signed by ca/ca_key (NULL: self-signed). */
static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *san, EVP_PKEY *ca_key, X509 *ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    if (x == NULL) {
        abort();
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
    X509_set_pubkey(x, key);
    if (san == NULL) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, ca ? ca : x, NID_subject_alt_name, san);
    }
    if (!X509_sign(x, ca_key ? ca_key : key, EVP_sha256())) {
        abort();
    }
    return x;
}

static SSL_CTX *new_server_ctx(X509 *leaf, EVP_PKEY *key, X509 *chain, uint16_t max_version)
{
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (c == NULL || !SSL_CTX_use_certificate(c, leaf) || !SSL_CTX_use_PrivateKey(c, key) ||
        (chain && !SSL_CTX_add1_chain_cert(c, chain))) {
        abort();
    }
    if (max_version) {
        SSL_CTX_set_min_proto_version(c, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(c, max_version);
    }
    /* nothing of one input's handshakes may carry over to the next */
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    return c;
}

static size_t spki_der(X509 *x, uint8_t *out, size_t cap)
{
    uint8_t *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    if (n <= 0 || (size_t)n > cap) {
        abort();
    }
    memcpy(out, der, (size_t)n);
    OPENSSL_free(der);
    return (size_t)n;
}

static size_t cert_der(X509 *x, uint8_t *out, size_t cap)
{
    uint8_t *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0 || (size_t)n > cap) {
        abort();
    }
    memcpy(out, der, (size_t)n);
    OPENSSL_free(der);
    return (size_t)n;
}

static void make_certs(const char *ca_path)
{
    /* the table's domains, each named itself and with a wildcard (MX
     * hosts, mta-sts.D) */
    static const char *const domains[] = {
        "none.test",     "may.test", "enc.test",   "verify.test", "secure.test", "dane.test",
        "daneonly.test", "sts.test", "other.test", "a.test",      "b.test"};
    char san[1024];
    size_t off = 0;
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
        off += (size_t)snprintf(san + off, sizeof(san) - off, "%sDNS:%s,DNS:*.%s", i ? "," : "",
                                domains[i], domains[i]);
    }
    EVP_PKEY *ca_key = new_key(), *good = new_key(), *wrong = new_key(), *self = new_key();
    ca_cert = new_cert(ca_key, "fuzz test CA", NULL, NULL, NULL);
    leaf_cert[W_CERT_GOOD] = new_cert(good, "mx.fuzz.test", san, ca_key, ca_cert);
    leaf_cert[W_CERT_WRONG_NAME] = new_cert(wrong, "wrong.test", "DNS:wrong.test", ca_key, ca_cert);
    leaf_cert[W_CERT_SELF] = new_cert(self, "mx.fuzz.test", san, NULL, NULL);
    leaf_cert[W_CERT_OLD_TLS] = leaf_cert[W_CERT_GOOD];
    X509_up_ref(leaf_cert[W_CERT_OLD_TLS]);

    ctxs[W_CERT_GOOD] = new_server_ctx(leaf_cert[W_CERT_GOOD], good, ca_cert, 0);
    ctxs[W_CERT_WRONG_NAME] = new_server_ctx(leaf_cert[W_CERT_WRONG_NAME], wrong, ca_cert, 0);
    ctxs[W_CERT_SELF] = new_server_ctx(leaf_cert[W_CERT_SELF], self, NULL, 0);
    ctxs[W_CERT_OLD_TLS] = new_server_ctx(leaf_cert[W_CERT_GOOD], good, ca_cert, TLS1_1_VERSION);

    uint8_t der[2048];
    size_t n = spki_der(leaf_cert[W_CERT_GOOD], spki_good, sizeof(spki_good));
    spki_good_len = n;
    SHA256(spki_good, n, spki256_good);
    SHA512(spki_good, n, spki512_good);
    n = spki_der(leaf_cert[W_CERT_SELF], der, sizeof(der));
    SHA256(der, n, spki256_self);
    n = spki_der(leaf_cert[W_CERT_WRONG_NAME], der, sizeof(der));
    SHA256(der, n, spki256_wrong);
    n = spki_der(ca_cert, der, sizeof(der));
    SHA256(der, n, spki256_ca);
    n = cert_der(leaf_cert[W_CERT_GOOD], der, sizeof(der));
    SHA256(der, n, cert256_good);
    ca_der_len = cert_der(ca_cert, ca_der, sizeof(ca_der));
    SHA256(ca_der, ca_der_len, cert256_ca);

    FILE *f = fopen(ca_path, "w");
    if (f == NULL || !PEM_write_X509(f, ca_cert)) {
        abort();
    }
    fclose(f);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(good);
    EVP_PKEY_free(wrong);
    EVP_PKEY_free(self);
}

SSL_CTX *world_server_ctx(world_cert_t c)
{
    return ctxs[c];
}

/* ---- tokens ---- */

static int is_sep(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',';
}

void world_reset(const uint8_t *script, size_t len)
{
    static const char kinds[] = "MAQTXC";
    memset(&w, 0, sizeof(w));
    w.half_close = -1;
    size_t i = 0;
    while (i < len) {
        while (i < len && is_sep(script[i])) {
            i++;
        }
        size_t start = i;
        while (i < len && !is_sep(script[i])) {
            i++;
        }
        if (i == start) {
            break;
        }
        const uint8_t *t = script + start;
        size_t tl = i - start;
        const char *k = t[0] ? strchr(kinds, t[0]) : NULL;
        if (k != NULL) {
            int kind = (int)(k - kinds);
            if (w.n[kind] == MAX_TOK) {
                continue;
            }
            dns_tok_t *d = &w.q[kind][w.n[kind]++];
            d->action = tl > 1 ? (char)t[1] : 'S';
            d->variant = 0;
            for (size_t j = 2; j < tl && j < 5 && t[j] >= '0' && t[j] <= '9'; j++) {
                d->variant = d->variant * 10 + (unsigned)(t[j] - '0');
            }
        } else if (t[0] == 'Z') {
            w.half_close = 0;
            for (size_t j = 1; j < tl && j < 4 && t[j] >= '0' && t[j] <= '9'; j++) {
                w.half_close = w.half_close * 10 + (t[j] - '0');
            }
        } else if (t[0] == 'H' || t[0] == 'P') {
            for (size_t j = 1; j < tl; j++) {
                int d = t[j] >= '0' && t[j] <= '9'   ? t[j] - '0'
                        : t[j] >= 'a' && t[j] <= 'f' ? t[j] - 'a' + 10
                                                     : -1;
                if (d < 0) {
                    continue;
                }
                if (t[0] == 'H' && w.nhs < MAX_TOK) {
                    w.hs[w.nhs++] = (uint8_t)(d % 7);
                } else if (t[0] == 'P' && w.nsts < MAX_TOK) {
                    w.sts[w.nsts++] = (uint8_t)d;
                }
            }
        }
    }
}

int world_half_close(void)
{
    return w.half_close;
}

int world_next_handshake(void)
{
    return w.nexths < w.nhs ? w.hs[w.nexths++] : W_CERT_GOOD;
}

const world_attempt_t *world_attempt(void)
{
    return &w.att;
}

/* ---- DNS ---- */

enum { T_A = 1, T_CNAME = 5, T_MX = 15, T_TXT = 16, T_AAAA = 28, T_TLSA = 52 };

typedef struct {
    uint8_t b[4096];
    size_t len;
    unsigned an;
} resp_t;

static uv_udp_t dns;

static size_t wire_len(const uint8_t *wire)
{
    size_t n = 0;
    while (wire[n] != 0) {
        n += 1 + wire[n];
    }
    return n + 1;
}

/* `label` then the name `base` (wire form) into out; 0 when over 255 bytes. */
static size_t prefixed(uint8_t *out, const char *label, const uint8_t *base)
{
    size_t ll = strlen(label), bl = wire_len(base);
    if (1 + ll + bl > STP_DNS_NAME_WIRE_MAX) {
        return 0;
    }
    out[0] = (uint8_t)ll;
    memcpy(out + 1, label, ll);
    memcpy(out + 1 + ll, base, bl);
    return 1 + ll + bl;
}

/* The name without its first label (the root stays the root). */
static const uint8_t *rest(const uint8_t *wire)
{
    return wire[0] ? wire + 1 + wire[0] : wire;
}

static int first_label_is(const uint8_t *wire, const char *s)
{
    size_t n = strlen(s);
    return wire[0] == n && strncasecmp((const char *)wire + 1, s, n) == 0;
}

/* One record; owner NULL: the question's name. Dropped when it does not fit. */
static void rr(resp_t *r, const uint8_t *owner, uint16_t type, const void *rdata, size_t rdlen)
{
    size_t ol = owner ? wire_len(owner) : 2;
    if (r->len + ol + 10 + rdlen > sizeof(r->b)) {
        return;
    }
    if (owner) {
        memcpy(r->b + r->len, owner, ol);
    } else {
        r->b[r->len] = 0xc0;
        r->b[r->len + 1] = 12;
    }
    uint8_t *p = r->b + r->len + ol;
    p[0] = (uint8_t)(type >> 8);
    p[1] = (uint8_t)type;
    p[2] = 0;
    p[3] = 1; /* IN */
    p[4] = p[5] = 0;
    p[6] = 0x0e;
    p[7] = 0x10; /* TTL 3600 */
    p[8] = (uint8_t)(rdlen >> 8);
    p[9] = (uint8_t)rdlen;
    memcpy(p + 10, rdata, rdlen);
    r->len += ol + 10 + rdlen;
    r->an++;
}

static void rr_name(resp_t *r, const uint8_t *owner, uint16_t type, const uint8_t *target,
                    const uint8_t *pref)
{
    uint8_t rd[2 + STP_DNS_NAME_WIRE_MAX];
    size_t off = 0;
    if (pref) {
        rd[0] = pref[0];
        rd[1] = pref[1];
        off = 2;
    }
    size_t tl = wire_len(target);
    memcpy(rd + off, target, tl);
    rr(r, owner, type, rd, off + tl);
}

static void rr_mx(resp_t *r, unsigned pref, const char *label, const uint8_t *base)
{
    uint8_t name[STP_DNS_NAME_WIRE_MAX + 1], p[2] = {0, (uint8_t)pref};
    if (label == NULL) {
        rr_name(r, NULL, T_MX, base, p);
    } else if (prefixed(name, label, base)) {
        rr_name(r, NULL, T_MX, name, p);
    }
}

static void answer_mx(resp_t *r, const uint8_t *q, unsigned v)
{
    static const uint8_t root[] = {0};
    static const uint8_t other[] = "\002mx\005other\004test";
    switch (v % 8) {
    case 1:
        rr_mx(r, 10, "mx", q);
        rr_mx(r, 20, "mx2", q);
        break;
    case 2:
        rr_mx(r, 0, NULL, root); /* null MX */
        break;
    case 3:
        rr_mx(r, 10, "down", q);
        rr_mx(r, 20, "mx", q);
        break;
    case 4:
        rr_mx(r, 10, "alias", q);
        break;
    case 5:
        rr_mx(r, 10, NULL, other);
        break;
    case 6:
        rr_mx(r, 20, "mx2", q);
        rr_mx(r, 10, "nohost", q);
        break;
    case 7:
        rr_mx(r, 10, "mx", q);
        rr_mx(r, 10, NULL, root);
        break;
    default:
        rr_mx(r, 10, "mx", q);
        break;
    }
}

/*
 * A (v6 = 0) or AAAA: first the CNAME chain, then the addresses at its end.
 * By name: "alias.REST" is a CNAME of "mx.REST", "down.*" has 127.0.0.2
 * (where nothing listens), "nohost.*" does not exist.
 */
static void answer_addrs(resp_t *r, const uint8_t *q, int v6, unsigned v, int *rcode)
{
    uint8_t t1[STP_DNS_NAME_WIRE_MAX + 1], t2[STP_DNS_NAME_WIRE_MAX + 1];
    const uint8_t *final = NULL; /* the question's name */
    v %= v6 ? 3 : 6;
    if (first_label_is(q, "nohost") && v == 0) {
        *rcode = STP_DNS_RCODE_NXDOMAIN;
        return;
    }
    if ((v6 && v == 2) || (!v6 && v == 3)) {
        if (prefixed(t1, "cname", rest(q))) {
            rr_name(r, NULL, T_CNAME, t1, NULL);
            final = t1;
        }
    } else if (!v6 && v == 5) {
        if (prefixed(t1, "c1", rest(q)) && prefixed(t2, "c2", rest(q))) {
            rr_name(r, NULL, T_CNAME, t1, NULL);
            rr_name(r, t1, T_CNAME, t2, NULL);
            final = t2;
        }
    } else if (first_label_is(q, "alias") && prefixed(t1, "mx", rest(q))) {
        rr_name(r, NULL, T_CNAME, t1, NULL);
        final = t1;
    }
    static const uint8_t lo1[4] = {127, 0, 0, 1}, lo2[4] = {127, 0, 0, 2};
    static const uint8_t lo6[16] = {[15] = 1};
    if (v6) {
        if (v != 0) {
            rr(r, final, T_AAAA, lo6, 16);
        }
        return;
    }
    switch (v) {
    case 1:
        rr(r, final, T_A, lo2, 4);
        rr(r, final, T_A, lo1, 4);
        break;
    case 2:
        rr(r, final, T_A, lo1, 4);
        rr(r, final, T_A, lo1, 4);
        break;
    case 4:
        break; /* NODATA (after the chain, if any) */
    default:
        rr(r, final, T_A, first_label_is(q, "down") ? lo2 : lo1, 4);
        break;
    }
}

typedef struct {
    uint8_t usage, selector, mtype;
    const uint8_t *data;
    size_t len;
    unsigned match; /* certificates a usable record of this kind can match */
} tlsa_row_t;

/* The TLSA records of variant v; returns how many. */
static size_t tlsa_rows(unsigned v, tlsa_row_t *rows)
{
    static const uint8_t zeros[32];
    const unsigned good = 1u << W_CERT_GOOD | 1u << W_CERT_OLD_TLS;
    const unsigned ca = good | 1u << W_CERT_WRONG_NAME;
    switch (v % 15) {
    case 1:
        rows[0] = (tlsa_row_t){3, 1, 1, spki256_good, 32, good};
        return 1;
    case 2:
        rows[0] = (tlsa_row_t){3, 1, 1, spki256_self, 32, 1u << W_CERT_SELF};
        return 1;
    case 3:
        rows[0] = (tlsa_row_t){3, 1, 1, zeros, 32, 0};
        return 1;
    case 4:
        rows[0] = (tlsa_row_t){2, 0, 1, cert256_ca, 32, ca};
        return 1;
    case 5:
        rows[0] = (tlsa_row_t){3, 0, 1, cert256_good, 32, good};
        return 1;
    case 6:
        rows[0] = (tlsa_row_t){0, 0, 1, cert256_ca, 32, 0}; /* PKIX-TA: unusable */
        return 1;
    case 7:
        rows[0] = (tlsa_row_t){1, 1, 1, spki256_good, 32, 0}; /* PKIX-EE: unusable */
        return 1;
    case 8:
        rows[0] = (tlsa_row_t){3, 1, 2, spki512_good, 64, good};
        return 1;
    case 9:
        rows[0] = (tlsa_row_t){3, 1, 0, spki_good, spki_good_len, good};
        return 1;
    case 10:
        rows[0] = (tlsa_row_t){2, 1, 1, spki256_ca, 32, ca};
        return 1;
    case 11:
        rows[0] = (tlsa_row_t){3, 1, 1, zeros, 32, 0};
        rows[1] = (tlsa_row_t){3, 1, 1, spki256_wrong, 32, 1u << W_CERT_WRONG_NAME};
        return 2;
    case 12:
        rows[0] = (tlsa_row_t){2, 0, 0, ca_der, ca_der_len, ca}; /* the anchor in DNS */
        return 1;
    case 13:
        rows[0] = (tlsa_row_t){3, 1, 1, spki256_good, 31, 0}; /* short: unusable */
        return 1;
    case 14:
        rows[0] = (tlsa_row_t){3, 1, 1, spki256_good, 32, good};
        rows[1] = (tlsa_row_t){0, 0, 1, cert256_ca, 32, 0};
        return 2;
    default:
        return 0; /* NODATA */
    }
}

static void answer_tlsa(resp_t *r, unsigned v, int secure)
{
    tlsa_row_t rows[2];
    size_t n = tlsa_rows(v, rows);
    for (size_t i = 0; i < n; i++) {
        uint8_t rd[3 + 2048];
        rd[0] = rows[i].usage;
        rd[1] = rows[i].selector;
        rd[2] = rows[i].mtype;
        memcpy(rd + 3, rows[i].data, rows[i].len);
        rr(r, NULL, T_TLSA, rd, 3 + rows[i].len);
        if (!secure) {
            continue;
        }
        /* What the proxy will hold: validated records for this host. */
        stp_dane_tlsa_t t = {rows[i].usage, rows[i].selector, rows[i].mtype, rows[i].data,
                             rows[i].len};
        w.att.dane_records = 1;
        if (stp_dane_usable(&t)) {
            w.att.dane_usable = 1;
            w.att.dane_match |= rows[i].match;
        }
    }
}

static void rr_txt(resp_t *r, const char *s)
{
    uint8_t rd[256];
    size_t n = strlen(s);
    rd[0] = (uint8_t)n;
    memcpy(rd + 1, s, n);
    rr(r, NULL, T_TXT, rd, n + 1);
}

static void answer_txt(resp_t *r, unsigned v)
{
    switch (v % 6) {
    case 1:
        rr_txt(r, "v=STSv1; id=1");
        break;
    case 2:
        rr_txt(r, "v=STSv1; id=2");
        break;
    case 3:
        rr_txt(r, "v=spf1 -all");
        break;
    case 4:
        rr_txt(r, "v=STSv1; id=1");
        rr_txt(r, "v=STSv1; id=3");
        break;
    case 5:
        rr_txt(r, "v=STSv1; id=bad-id!");
        break;
    default:
        break; /* NODATA: no MTA-STS */
    }
}

static void answer_cname(resp_t *r, const uint8_t *q, unsigned v)
{
    uint8_t t[STP_DNS_NAME_WIRE_MAX + 1];
    if (v % 2 == 1 && prefixed(t, "cname", rest(q))) {
        rr_name(r, NULL, T_CNAME, t, NULL);
    } else if (first_label_is(q, "alias") && prefixed(t, "mx", rest(q))) {
        rr_name(r, NULL, T_CNAME, t, NULL);
    }
}

/* Follows the attempt the question belongs to (world_attempt_t). */
static void track(uint16_t qtype, const char *name)
{
    if (qtype == T_MX) {
        memset(&w.att, 0, sizeof(w.att));
        snprintf(w.att.domain, sizeof(w.att.domain), "%s", name);
        int64_t since;
        w.att.remembered = stp_domain_state_tls_required(name, &since);
    } else if (qtype == T_A &&
               !(strncmp(name, "mta-sts.", 8) == 0 && strcmp(name + 8, w.att.domain) == 0)) {
        snprintf(w.att.host, sizeof(w.att.host), "%s", name);
        w.att.dane_records = w.att.dane_usable = 0;
        w.att.dane_match = 0;
    }
}

static void on_dns_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char space[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(space, sizeof(space));
}

static void on_dns_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                        unsigned flags)
{
    const uint8_t *q = (const uint8_t *)buf->base;
    uint8_t qw[STP_DNS_NAME_WIRE_MAX + 1];
    char name[STP_DNS_NAME_WIRE_MAX + 1];
    size_t off = 12, qwl = 0, nl = 0;
    (void)flags;
    if (n < 12 || from == NULL || q[4] != 0 || q[5] != 1) {
        return;
    }
    for (;;) {
        if (off >= (size_t)n) {
            return;
        }
        uint8_t l = q[off];
        if (l == 0) {
            break;
        }
        if (l > 63 || off + 1 + l > (size_t)n || qwl + 2 + l > STP_DNS_NAME_WIRE_MAX) {
            return;
        }
        memcpy(qw + qwl, q + off, 1 + (size_t)l);
        for (size_t i = 0; i < l; i++) {
            char c = (char)q[off + 1 + i];
            name[nl++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        name[nl++] = '.';
        qwl += 1 + (size_t)l;
        off += 1 + (size_t)l;
    }
    qw[qwl] = 0;
    name[nl ? nl - 1 : 0] = '\0';
    off++;
    if (off + 4 > (size_t)n) {
        return;
    }
    uint16_t qtype = (uint16_t)(q[off] << 8 | q[off + 1]);
    size_t qend = off + 4;
    track(qtype, name);

    int kind = qtype == T_MX      ? K_MX
               : qtype == T_A     ? K_A
               : qtype == T_AAAA  ? K_AAAA
               : qtype == T_TLSA  ? K_TLSA
               : qtype == T_TXT   ? K_TXT
               : qtype == T_CNAME ? K_CNAME
                                  : -1;
    dns_tok_t tok = {'S', 0};
    if (kind >= 0 && w.next[kind] < w.n[kind]) {
        tok = w.q[kind][w.next[kind]++];
    }
    if (tok.action == 'd') {
        return;
    }
    static resp_t r;
    int rcode = STP_DNS_RCODE_NOERROR, ad = 0, tc = 0, bad = 0;
    r.len = qend;
    r.an = 0;
    memcpy(r.b, q, qend);
    switch (tok.action) {
    case 'E':
        ad = 1;
        break;
    case 'e':
        break;
    case 'N':
        ad = 1;
        rcode = STP_DNS_RCODE_NXDOMAIN;
        break;
    case 'n':
        rcode = STP_DNS_RCODE_NXDOMAIN;
        break;
    case 'f':
        rcode = STP_DNS_RCODE_SERVFAIL;
        break;
    case 'r':
        rcode = STP_DNS_RCODE_REFUSED;
        break;
    case 't':
        tc = 1;
        break;
    default: /* 'S', 's', 'x' and anything else: the table */
        ad = tok.action != 's';
        bad = tok.action == 'x';
        switch (qtype) {
        case T_MX:
            answer_mx(&r, qw, tok.variant);
            break;
        case T_A:
        case T_AAAA:
            answer_addrs(&r, qw, qtype == T_AAAA, tok.variant, &rcode);
            break;
        case T_TLSA:
            answer_tlsa(&r, tok.variant, ad && !bad);
            break;
        case T_TXT:
            answer_txt(&r, tok.variant);
            break;
        case T_CNAME:
            answer_cname(&r, qw, tok.variant);
            break;
        default:
            rcode = STP_DNS_RCODE_REFUSED;
            break;
        }
        break;
    }
    unsigned an = r.an + (unsigned)bad;
    r.b[2] = (uint8_t)(0x80 | (tc ? 0x02 : 0) | (q[2] & 0x01)); /* QR, TC, RD as asked */
    r.b[3] = (uint8_t)(0x80 | (ad ? 0x20 : 0) | rcode);         /* RA, AD, RCODE */
    r.b[4] = 0;
    r.b[5] = 1;
    r.b[6] = (uint8_t)(an >> 8);
    r.b[7] = (uint8_t)an;
    memset(r.b + 8, 0, 4);
    uv_buf_t out = uv_buf_init((char *)r.b, (unsigned)r.len);
    (void)uv_udp_try_send(h, &out, 1, from);
}

/* ---- the MTA-STS policy server ---- */

typedef struct {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown;
    stp_tls_engine_t *tls;
    int choice;
    char req[2048];
    size_t len;
    int answered, closed;
} sts_conn_t;

static uv_tcp_t sts_srv;
static int sts_open;

int world_sts_open(void)
{
    return sts_open;
}

static void on_sts_closed(uv_handle_t *h)
{
    sts_conn_t *c = h->data;
    stp_tls_engine_free(c->tls);
    free(c);
    sts_open--;
}

static void sts_close(sts_conn_t *c)
{
    if (!c->closed) {
        c->closed = 1;
        uv_close((uv_handle_t *)&c->tcp, on_sts_closed);
    }
}

static void on_sts_write(uv_write_t *wr, int status)
{
    (void)status;
    free(wr->data);
    free(wr);
}

static void sts_flush(sts_conn_t *c)
{
    const uint8_t *p;
    size_t n;
    while (!c->closed && (n = stp_tls_engine_peek(c->tls, &p)) > 0) {
        uv_write_t *wr = malloc(sizeof(*wr));
        char *copy = malloc(n);
        if (wr == NULL || copy == NULL) {
            abort();
        }
        memcpy(copy, p, n);
        stp_tls_engine_drop(c->tls);
        wr->data = copy;
        uv_buf_t b = uv_buf_init(copy, (unsigned)n);
        if (uv_write(wr, (uv_stream_t *)&c->tcp, &b, 1, on_sts_write) != 0) {
            free(copy);
            free(wr);
        }
    }
}

static void on_sts_shutdown(uv_shutdown_t *s, int status)
{
    (void)status;
    sts_close(s->data);
}

static void sts_respond(sts_conn_t *c)
{
    char domain[256] = "unknown.test", body[512], out[1024];
    const char *sni = stp_tls_engine_sni(c->tls);
    if (sni != NULL && strncasecmp(sni, "mta-sts.", 8) == 0 && strlen(sni) < 8 + sizeof(domain)) {
        snprintf(domain, sizeof(domain), "%s", sni + 8);
    }
    const char *status = "200 OK", *type = "text/plain";
    switch (c->choice) {
    case 1:
        snprintf(body, sizeof(body), "version: STSv1\nmode: enforce\nmx: *.%s\nmax_age: 604800\n",
                 domain);
        break;
    case 2:
        snprintf(body, sizeof(body),
                 "version: STSv1\r\nmode: enforce\r\nmx: mx.other.test\r\nmax_age: 86400\r\n");
        break;
    case 3:
        snprintf(body, sizeof(body),
                 "version: STSv1\r\nmode: testing\r\nmx: mx.%s\r\nmax_age: 86400\r\n", domain);
        break;
    case 4:
        snprintf(body, sizeof(body), "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n");
        break;
    case 5:
        status = "404 Not Found";
        snprintf(body, sizeof(body), "not here\n");
        break;
    case 6:
        snprintf(body, sizeof(body), "not a policy\r\n");
        break;
    case 7:
        type = "text/html";
        snprintf(body, sizeof(body), "<p>version: STSv1</p>\n");
        break;
    case 10: /* half of max_age is gone at once: the next use refreshes it */
        snprintf(body, sizeof(body),
                 "version: STSv1\r\nmode: enforce\r\nmx: mx.%s\r\nmax_age: 1\r\n", domain);
        break;
    case 11:
        snprintf(body, sizeof(body),
                 "version: STSv1\r\nmode: testing\r\nmx: *.%s\r\nmx: mx.other.test\r\n"
                 "max_age: 1\r\n",
                 domain);
        break;
    default:
        snprintf(body, sizeof(body),
                 "version: STSv1\r\nmode: enforce\r\nmx: mx.%s\r\nmax_age: 86400\r\n", domain);
        break;
    }
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, type, strlen(body), body);
    c->answered = 1;
    stp_tls_engine_write(c->tls, (const uint8_t *)out, (size_t)n);
    stp_tls_engine_shutdown(c->tls);
    sts_flush(c);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_sts_shutdown) != 0) {
        sts_close(c);
    }
}

static void on_sts_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    sts_conn_t *c = s->data;
    if (n < 0 || c->answered) {
        if (n < 0) {
            sts_close(c);
        }
        return;
    }
    if (stp_tls_engine_feed(c->tls, (const uint8_t *)buf->base, (size_t)n) != STP_TLS_OK) {
        sts_close(c);
        return;
    }
    if (!stp_tls_engine_established(c->tls)) {
        int rc = stp_tls_engine_handshake(c->tls);
        sts_flush(c);
        if (rc == STP_TLS_ERROR) {
            sts_close(c);
            return;
        }
        if (rc != STP_TLS_OK) {
            return;
        }
        if (c->choice == 9) {
            sts_close(c);
            return;
        }
    }
    for (;;) {
        uint8_t plain[1024];
        ssize_t k = stp_tls_engine_read(c->tls, plain, sizeof(plain));
        if (k == STP_TLS_AGAIN) {
            break;
        }
        if (k < 0 || c->len + (size_t)k >= sizeof(c->req)) {
            sts_close(c);
            return;
        }
        memcpy(c->req + c->len, plain, (size_t)k);
        c->len += (size_t)k;
        c->req[c->len] = '\0';
        if (strstr(c->req, "\r\n\r\n") != NULL && c->choice != 12) { /* 12: never answers */
            sts_respond(c);
            return;
        }
    }
    sts_flush(c);
}

static void on_sts_conn(uv_stream_t *srv, int status)
{
    if (status < 0) {
        return;
    }
    sts_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    uv_tcp_init(wloop, &c->tcp);
    c->tcp.data = c;
    sts_open++;
    c->choice = w.nextsts < w.nsts ? w.sts[w.nextsts++] : 0;
    c->tls = stp_tls_engine_new_server(ctxs[c->choice == 8 ? W_CERT_SELF : W_CERT_GOOD]);
    if (c->tls == NULL || uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        sts_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_dns_alloc, on_sts_read);
}

/* ---- start ---- */

static int bound_port(uv_handle_t *h, int udp)
{
    struct sockaddr_storage got;
    int len = sizeof(got);
    int rc = udp ? uv_udp_getsockname((uv_udp_t *)h, (struct sockaddr *)&got, &len)
                 : uv_tcp_getsockname((uv_tcp_t *)h, (struct sockaddr *)&got, &len);
    if (rc != 0) {
        abort();
    }
    return ntohs(((struct sockaddr_in *)&got)->sin_port);
}

void world_init(uv_loop_t *loop, const char *ca_path, int *dns_port, int *sts_port)
{
    struct sockaddr_in a;
    wloop = loop;
    make_certs(ca_path);
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_udp_init(loop, &dns) != 0 || uv_udp_bind(&dns, (const struct sockaddr *)&a, 0) != 0 ||
        uv_udp_recv_start(&dns, on_dns_alloc, on_dns_recv) != 0) {
        abort();
    }
    *dns_port = bound_port((uv_handle_t *)&dns, 1);
    if (uv_tcp_init(loop, &sts_srv) != 0 ||
        uv_tcp_bind(&sts_srv, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&sts_srv, 64, on_sts_conn) != 0) {
        abort();
    }
    *sts_port = bound_port((uv_handle_t *)&sts_srv, 0);
}

/*
 * mx_world: what fuzz_session's route = mx listeners reach besides the
 * legacy MTA and the next hop's SMTP, all on the fuzzer's libuv loop: a DNS
 * server (UDP on 127.0.0.1, the proxy's `resolver`), the next hop's
 * certificates (a test CA, two leaves it signed, a self-signed one), and an
 * HTTPS server for MTA-STS policies (`mta_sts_port`).
 *
 * What they answer comes from the "world" section of a fuzz input: tokens
 * separated by blanks or commas, each consumed by the next query of its
 * kind (see world_reset() and fuzz_session.c); without a token, a small
 * table answers (every recipient domain D has "MX 10 mx.D", every MX host
 * "A 127.0.0.1", no TLSA, no MTA-STS), with the AD bit set.
 *
 * The DNS server also follows the attempt it answers (world_attempt()): the
 * domain of the last MX question, the MX host of the last address question,
 * and what the validated TLSA records it gave for that host require, so the
 * fuzzer can tell which certificates a DANE host may present.
 */
#ifndef STP_FUZZ_MX_WORLD_H
#define STP_FUZZ_MX_WORLD_H

#include <openssl/ssl.h>
#include <uv.h>

/* The next hop's certificates, as the "H" token picks them for each handshake. */
typedef enum {
    W_CERT_GOOD = 0,   /* signed by the test CA, names every table domain D and *.D */
    W_CERT_WRONG_NAME, /* signed by the test CA, names only wrong.test */
    W_CERT_SELF,       /* self-signed, the good names, a key of its own */
    W_CERT_OLD_TLS,    /* the good chain, but the server speaks TLS 1.1 at most */
    W_NCERTS,
} world_cert_t;

/* What the DNS server has said about the current delivery attempt. */
typedef struct {
    char domain[256];    /* the last MX question, lower case */
    int remembered;      /* the proxy's domain state required TLS for it at that question */
    char host[256];      /* the last address question (the MX host being tried) */
    int dane_records;    /* validated TLSA records were given for that host */
    int dane_usable;     /* ... and one of them is usable (stp_dane_usable) */
    unsigned dane_match; /* bit per world_cert_t that a usable record can match */
} world_attempt_t;

/*
 * Once: makes the certificates, writes the CA to ca_path (the caller removes
 * it at exit), starts the DNS and HTTPS servers on `loop`. Their ports go
 * to *dns_port and *sts_port.
 */
void world_init(uv_loop_t *loop, const char *ca_path, int *dns_port, int *sts_port);

/*
 * Per input: forgets the previous world and reads the tokens of
 * script[0..len) (borrowed for the whole input):
 *   M|A|Q|T|X|C  then an action, then a variant number: the next MX, A,
 *      AAAA, TLSA, TXT or CNAME question gets this answer. Actions:
 *      S/s the table's answer (variant) with/without the AD bit, E/e NODATA,
 *      N/n NXDOMAIN, f SERVFAIL, r REFUSED, d no answer (dns_timeout),
 *      t truncated (TC: c-ares retries over TCP, where nobody listens),
 *      x malformed (one answer record more than there is)
 *   H  then digits: the certificate (world_cert_t) of each next STARTTLS
 *      handshake in turn; 4: 220 then plaintext bytes instead of TLS,
 *      5: 220 then the connection is closed, 6: 220 then nothing at all
 *      (the handshake times out)
 *   P  then digits: the MTA-STS server's answer to each next fetch in turn
 *      (0 enforce mx.D, 1 enforce *.D, 2 enforce mx.other.test, 3 testing,
 *      4 none, 5 404, 6 not a policy, 7 text/html, 8 self-signed
 *      certificate, 9 closed after the handshake, a enforce mx.D and b
 *      testing *.D and mx.other.test with max_age 1: the next delivery to
 *      D refreshes it, c never answers the request)
 *   Z  then a number N: the legacy MTA half-closes once it has sent
 *      everything and read N replies (see world_half_close())
 */
void world_reset(const uint8_t *script, size_t len);

/* -1, or N from a "ZN" token ("Z": 0): the legacy MTA half-closes once it
 * has sent everything and read N replies (during an MX attempt a half-close
 * ends the session). */
int world_half_close(void);

/* The server context for a certificate choice. */
SSL_CTX *world_server_ctx(world_cert_t c);

/* The next "H" choice (0..6), W_CERT_GOOD when none is left. */
int world_next_handshake(void);

const world_attempt_t *world_attempt(void);

/* MTA-STS connections not yet closed. */
int world_sts_open(void);

#endif

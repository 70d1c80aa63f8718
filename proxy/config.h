/*
 * config: the INI file (parsed with inih) turned into one immutable snapshot.
 * Every section has a table of directives (name, parser, offset, default);
 * every error is reported as "FILE:LINE: message" (unknown section or key,
 * bad value, missing file, unknown mode, missing required key) and all errors
 * of a file are reported, not just the first. `--check` prints them and exits.
 */
#ifndef STP_CONFIG_H
#define STP_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "policy/cidr.h"
#include "policy/domain_policy.h"

#define STP_CONF_MAX_LISTENERS 32
#define STP_CONF_MAX_CERTS 8
#define STP_CONF_MAX_ALLOW 64
#define STP_CONF_MAX_POLICIES 10000

typedef enum { STP_MODE_INBOUND = 1, STP_MODE_OUTBOUND = 2 } stp_mode_t;
typedef enum { STP_STARTTLS_OFFER = 1, STP_STARTTLS_REQUIRE, STP_STARTTLS_IMPLICIT } stp_starttls_t;
typedef enum { STP_ROUTE_RELAY = 1, STP_ROUTE_ORIGINAL_DST, STP_ROUTE_MX } stp_route_t;
/* Ordered, Postfix semantics: compare with <, >=. */
typedef enum {
    STP_TLS_LEVEL_NONE = 0,
    STP_TLS_LEVEL_MAY,
    STP_TLS_LEVEL_ENCRYPT,
    STP_TLS_LEVEL_VERIFY,
    STP_TLS_LEVEL_SECURE,
} stp_tls_level_t;
typedef enum { STP_ON_FAILURE_DEFER = 0, STP_ON_FAILURE_REJECT } stp_on_failure_t;
typedef enum { STP_BARE_REJECT = 0, STP_BARE_NORMALIZE } stp_bare_t;
typedef enum { STP_LOG_TEXT = 0, STP_LOG_JSON } stp_log_format_t;
typedef enum { STP_LOG_STDERR = 0, STP_LOG_SYSLOG } stp_log_target_t;
typedef enum { STP_LOG_ERROR = 0, STP_LOG_WARN, STP_LOG_INFO, STP_LOG_DEBUG } stp_log_level_t;

typedef struct {
    char host[256];               /* as written (name or literal, no brackets) */
    uint16_t port;
    struct sockaddr_storage addr; /* resolved at load time (numeric or getaddrinfo) */
    socklen_t addr_len;
} stp_hostport_t;

typedef struct {
    char name[64];  /* the NAME of [listener:NAME] */
    int line;       /* line of the section header, for messages */
    stp_mode_t mode;
    stp_hostport_t listen;

    /* inbound */
    stp_hostport_t backend;
    stp_starttls_t starttls;    /* default offer */
    int hide_auth_before_tls;   /* default yes */
    stp_bare_t bare_newlines;   /* reject | normalize; default reject */
    int trace_header;           /* default yes */
    int proxy_protocol;         /* default no: yes reads a PROXY v1/v2 header first */
    stp_cidr_t proxy_from[STP_CONF_MAX_ALLOW]; /* who may send it (required with yes) */
    size_t nproxy_from;
    int xclient;                /* default no: yes sends XCLIENT when the backend offers it */

    /* outbound */
    stp_cidr_t allow[STP_CONF_MAX_ALLOW];
    size_t nallow;              /* default: 127.0.0.1/32 and ::1/128 */
    stp_route_t route;
    stp_hostport_t relay;       /* route = relay:HOST:PORT */
    stp_tls_level_t tls;        /* default verify */
    char servername[256];       /* default: relay host */
    char ca_file[1024];         /* default: "" = system store ([tls] ca_file) */
    int ca_file_line;           /* line of the key that named ca_file (here or in [tls]), 0: none */
    int route_line;             /* line of 'route', for messages about the relay */
    int testing;                /* default no */
    stp_on_failure_t on_failure;/* default defer */
    uint64_t connection_cache_time; /* ms a clean TLS connection to the next hop waits for
                                     * the next session (relay, original-dst); 0 = off */
    uint64_t connection_reuse_time; /* ms: never parked once older (default 300 s) */
    unsigned connection_reuse_count; /* times it may be taken over; 0 = no limit */

    /* limits and timers (milliseconds), each with a default */
    size_t max_line_length;     /* 2048 */
    unsigned max_connections;   /* 1000 */
    unsigned max_connections_per_ip; /* 20 */
    unsigned backlog;           /* 0 = the kernel's limit, net.core.somaxconn */
    uint64_t max_message_size;  /* 0 = backend's SIZE decides */
    uint64_t connect_timeout;   /* 10s:  TCP connect to backend / next hop */
    uint64_t greeting_timeout;  /* 60s:  backend/next hop 220 */
    uint64_t command_timeout;   /* 300s: server reply to a relayed command */
    uint64_t idle_timeout;      /* 300s: client silent between commands */
    uint64_t handshake_timeout; /* 30s:  TLS handshake */
    uint64_t data_timeout;      /* 180s: client silent inside DATA; 600s for the final reply */
    uint64_t session_timeout;   /* 3600s: whole session */
} stp_listener_conf_t;

typedef struct {
    char *path;                 /* file the snapshot came from */

    /* [proxy] */
    char hostname[256];         /* default: gethostname() */
    unsigned workers;           /* 0 = auto (one per CPU) */
    char user[64];              /* "" = keep the starting user */
    char group[64];             /* "" = the user's primary group */
    uint64_t shutdown_grace;    /* 30s: drain time at SIGTERM before 421 4.3.2 */
    stp_log_format_t log_format;
    stp_log_level_t log_level;
    stp_log_target_t log_target; /* stderr (default) | syslog (facility mail) */
    stp_hostport_t metrics;     /* port 0: no metrics endpoint */

    /* [proxy]: delivery to any domain (route = mx): MTA-STS and remembered TLS */
    char state_dir[1024];       /* "" (default): nothing survives a restart */
    uint64_t remember_tls;      /* ms a domain reached over verified TLS must keep it; 0 = off */
    unsigned mta_sts_port;      /* 443; tests point it elsewhere */
    unsigned mx_port;           /* 25: the SMTP port of MX hosts; tests point it elsewhere */
    uint64_t mx_attempt_timeout; /* 240s: finding and securing a next hop for one RCPT, all steps */
    uint64_t mta_sts_timeout;   /* 30s: one whole policy fetch */
    char mta_sts_ca_file[1024]; /* trust store for policy hosts; default [tls] ca_file */

    /* [proxy]: DNS for route = mx, DANE and MTA-STS */
    char resolver[64];          /* DNS server "IP:PORT" or "[IPv6]:PORT"; "" = /etc/resolv.conf */
    int resolver_line;          /* line of [proxy] resolver, 0: not given */
    uint64_t dns_timeout;       /* 10s: one DNS lookup, retries included */
    char dnssec_probe[256];     /* name whose DNSKEY must validate when DANE is used; "" = root */

    /* [tls] */
    struct {
        char cert[1024];
        char key[1024];
        int cert_line, key_line; /* lines of 'cert' and 'key' (0: no key line) */
    } certs[STP_CONF_MAX_CERTS];
    size_t ncerts;              /* cert/key may repeat: pairs in order */
    uint16_t min_version;       /* TLS1_2_VERSION (default) or TLS1_3_VERSION */
    char ca_file[1024];         /* outbound trust store; "" = system default */
    int ca_file_line;           /* line of [tls] ca_file, 0: not given */

    stp_listener_conf_t listeners[STP_CONF_MAX_LISTENERS];
    size_t nlisteners;

    /* [policy:DOMAIN] and [policy:default]; stp_policy_lookup(&cf->policies, domain) */
    stp_policy_table_t policies;
} stp_config_t;

/*
 * Loads `path`. On success returns a new snapshot (free with
 * stp_config_free). On failure returns NULL and writes every error, one per
 * line as "FILE:LINE: message\n", into errbuf (truncated to errlen).
 */
stp_config_t *stp_config_load(const char *path, char *errbuf, size_t errlen);

/* Same, from a string (tests, fuzzing); `name` is used as FILE in messages. */
stp_config_t *stp_config_load_string(const char *text, const char *name, char *errbuf,
                                     size_t errlen);

void stp_config_free(stp_config_t *cf); /* accepts NULL */

/* "30s", "5m", "1h", "30d", "250ms", "10" (seconds) -> milliseconds; -1 on error. */
int64_t stp_duration_parse(const char *s);
/* "2048", "10k", "50M" -> bytes; -1 on error. */
int64_t stp_size_parse(const char *s);

/* NULL unless a connection to `to` would reach the listener on `listen`
 * (the same address and port, or through a wildcard); else a note for the
 * error ("" when the addresses are the same). */
const char *stp_config_loop_note(const stp_hostport_t *listen, const stp_hostport_t *to);

#endif

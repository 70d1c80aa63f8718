/*
 * mta_sts: MTA-STS (RFC 8461) as pure text rules. No I/O: the policy file
 * and the TXT records come in as bytes, a policy or a precise error comes out.
 *
 * Policy file (RFC 8461 section 3.2), checked strictly:
 *   - lines end in LF or CRLF (a bare CR, a NUL or any other control byte is
 *     an error); the last line may lack its terminator; empty lines are
 *     accepted only after the last field (an editor's trailing newlines),
 *     never between fields;
 *   - each line is NAME ":" *WSP VALUE *WSP: no blank before the name or
 *     before the colon; names are case-sensitive, so "Mode" is an unknown
 *     extension, not "mode";
 *   - the first line must be "version: STSv1" (the RFC's examples and the
 *     large providers' documentation put it first; a policy that does not
 *     start with it is not taken for an MTA-STS policy);
 *   - "mode" is enforce, testing or none; "max_age" is 1 to 10 digits with a
 *     value of at most 31557600; "mx" is ["*."] Domain (RFC 5321 letters,
 *     digits and hyphens, no trailing dot) and may repeat;
 *   - version, mode and max_age are each "required once" in the RFC's ABNF.
 *     A second occurrence, even with the same value, rejects the policy: a
 *     file that says two things cannot be relied on for either, and taking
 *     the first or the last would let whoever can append to it choose;
 *   - at least one mx is required, except with mode: none (the ABNF's
 *     exception); unknown fields are ignored once they are well-formed
 *     extension fields (name: letter or digit, then up to 31 letters, digits,
 *     '_', '-', '.'; value: visible characters separated by blanks).
 *
 * TXT record (section 3.1): "v=STSv1" first, fields separated by ";" with
 * optional blanks, exactly one "id" of 1 to 32 letters and digits,
 * well-formed extensions ignored. Of several TXT records, those that do not
 * begin with "v=STSv1" followed by ";" are discarded; if more or less than
 * one remains, the domain has no usable record.
 */
#ifndef STP_MTA_STS_H
#define STP_MTA_STS_H

#include <stddef.h>
#include <stdint.h>

/* RFC 8461: max_age is at most 31557600 seconds (about a year). */
#define STP_MTA_STS_MAX_AGE_LIMIT 31557600u
/* Bytes of one policy line, terminator excluded; longer lines are an error. */
#define STP_MTA_STS_MAX_LINE 1024
/* Room for the mx patterns of one policy (each stored NUL-terminated). */
#define STP_MTA_STS_MX_BYTES 2048
#define STP_MTA_STS_MAX_MX 64
/* An id is 1 to 32 letters and digits. */
#define STP_MTA_STS_ID_MAX 32

typedef enum {
    STP_MTA_STS_MODE_NONE = 0,
    STP_MTA_STS_MODE_TESTING,
    STP_MTA_STS_MODE_ENFORCE,
} stp_mta_sts_mode_t;

/* A parsed policy. Plain data: copy it with memcpy. */
typedef struct {
    stp_mta_sts_mode_t mode;
    uint32_t max_age;              /* seconds, 0..STP_MTA_STS_MAX_AGE_LIMIT */
    size_t nmx;                    /* number of mx patterns */
    size_t mx_used;                /* bytes of mx[] in use */
    char mx[STP_MTA_STS_MX_BYTES]; /* patterns, lower-cased, each NUL-terminated */
} stp_mta_sts_policy_t;

/* "enforce", "testing", "none". */
const char *stp_mta_sts_mode_name(stp_mta_sts_mode_t m);

/* The i-th mx pattern (i < p->nmx), borrowed from p. */
const char *stp_mta_sts_mx(const stp_mta_sts_policy_t *p, size_t i);

/* Return codes of the incremental parser. */
enum {
    STP_MTA_STS_OK = 0,     /* finish(): a valid policy is in *out */
    STP_MTA_STS_AGAIN = 1,  /* feed(): everything consumed, give more or finish */
    STP_MTA_STS_ERROR = -1, /* invalid; stp_mta_sts_parser_error() says why */
};

/*
 * The incremental policy parser: feed it the body in pieces of any size, then
 * call finish. Cutting the input anywhere gives the same result. Once an
 * error is returned every later call returns it again.
 */
typedef struct {
    stp_mta_sts_policy_t *out;
    char line[STP_MTA_STS_MAX_LINE];
    size_t len;      /* bytes in line[] */
    unsigned lineno; /* of the line being read, from 1 */
    int cr;          /* the last byte was a CR (only an LF may follow) */
    int blank_seen;  /* an empty line was read: only empty lines may follow */
    int failed;
    unsigned seen;     /* bit per required field */
    const char *err;   /* static text */
    unsigned err_line; /* 0: about the whole policy */
} stp_mta_sts_parser_t;

/* Starts a parse into *out (cleared). */
void stp_mta_sts_parser_init(stp_mta_sts_parser_t *p, stp_mta_sts_policy_t *out);

/* STP_MTA_STS_AGAIN (all of data[0..len) consumed) or STP_MTA_STS_ERROR. */
int stp_mta_sts_parser_feed(stp_mta_sts_parser_t *p, const char *data, size_t len);

/* End of the body: STP_MTA_STS_OK (policy in *out) or STP_MTA_STS_ERROR. */
int stp_mta_sts_parser_finish(stp_mta_sts_parser_t *p);

/* "line 3: duplicate 'mode' field" or "missing 'mx' field"; "" if no error. */
const char *stp_mta_sts_parser_error(const stp_mta_sts_parser_t *p, char *buf, size_t len);

/* Whole-body convenience: 0 and *out, or -1 with the message in why. */
int stp_mta_sts_policy_parse(const char *text, size_t len, stp_mta_sts_policy_t *out, char *why,
                             size_t whylen);

/*
 * 1 if the MX host name `host` (as DNS gave it: any case, with or without a
 * trailing dot) matches the pattern `pattern`: equal ignoring case, or for
 * "*.suffix" exactly one left-most label followed by ".suffix"
 * ("*.example.com" matches "a.example.com", neither "a.b.example.com" nor
 * "example.com").
 */
int stp_mta_sts_mx_match(const char *pattern, const char *host);

/* 1 if `host` matches any mx pattern of the policy. */
int stp_mta_sts_policy_match(const stp_mta_sts_policy_t *p, const char *host);

/* TXT record results. */
typedef enum {
    STP_MTA_STS_TXT_FOUND = 0, /* exactly one valid record: id filled in */
    STP_MTA_STS_TXT_NONE,      /* no record begins with "v=STSv1;" */
    STP_MTA_STS_TXT_MULTIPLE,  /* more than one does: no usable record (RFC 8461 3.1) */
    STP_MTA_STS_TXT_INVALID,   /* the one record is malformed: no usable record */
} stp_mta_sts_txt_t;

/*
 * Parses one TXT record (its character-strings already concatenated).
 * Returns 0 with the id (NUL-terminated) in id[STP_MTA_STS_ID_MAX + 1], or
 * -1 with a static reason in *why.
 */
int stp_mta_sts_txt_parse(const char *rec, size_t len, char id[STP_MTA_STS_ID_MAX + 1],
                          const char **why);

/*
 * Applies section 3.1 to all the TXT records of _mta-sts.DOMAIN:
 * recs[i] of lens[i] bytes, i < n. On FOUND the id is in id[]; on INVALID
 * *why (if not NULL) gets a static reason.
 */
stp_mta_sts_txt_t stp_mta_sts_txt_select(const char *const *recs, const size_t *lens, size_t n,
                                         char id[STP_MTA_STS_ID_MAX + 1], const char **why);

/* 1 if `s` is a usable domain name (letters, digits, hyphens; dots between
 * labels of 1..63; at most 253; a trailing dot allowed). */
int stp_mta_sts_domain_valid(const char *s);

#endif

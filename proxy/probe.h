/*
 * probe: `smtp-tls-proxy probe DOMAIN [--json] [-c FILE]`, the
 * administrator's "is my mail to DOMAIN protected?" tool.
 */
#ifndef STP_PROBE_H
#define STP_PROBE_H

/* argv[0] is "probe". Returns the process exit status. */
int stp_probe_main(int argc, char **argv, const char *default_config);

#endif

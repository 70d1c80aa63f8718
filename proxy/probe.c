#include "proxy/probe.h"

#include <stdio.h>

int stp_probe_main(int argc, char **argv, const char *default_config)
{
    (void)argc;
    (void)argv;
    (void)default_config;
    fprintf(stderr, "probe: not implemented\n");
    return 2;
}

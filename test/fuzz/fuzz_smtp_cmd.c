/* fuzz_smtp_cmd: any line parses without overrun; the argument always lies
 * inside the line. */
#include <stdint.h>

#include "proxy/smtp_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stp_cmd_t c;
    const char *line = (const char *)data;
    stp_cmd_parse(line, size, &c);
    if (c.arg < line || c.arg + c.arg_len > line + size || c.verb >= STP_CMD__COUNT) {
        __builtin_trap();
    }
    (void)stp_cmd_name(c.verb);
    return 0;
}

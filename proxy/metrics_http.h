/*
 * metrics_http: the monitoring endpoint (`[proxy] metrics = ADDR:PORT`), a
 * minimal HTTP/1.1 server on one libuv loop. One request per connection
 * (Connection: close), parsed by http_req with its size cap and a read
 * timer:
 *
 *   GET /metrics   200, text/plain; version=0.0.4: stp_metrics_render()
 *   GET /healthz   200 while the process runs
 *   GET /readyz    200 while listeners accept, 503 while draining/stopping
 *   anything else  404 (405/400/414/431/505 for refused requests)
 *
 * HEAD is answered like GET without a body.
 */
#ifndef STP_METRICS_HTTP_H
#define STP_METRICS_HTTP_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

/* Returns 1 while the process accepts new sessions. */
typedef int (*stp_metrics_ready_fn)(void *arg);

/*
 * Starts serving on `addr` on `loop` (one server per process). Returns 0, or
 * -1 with a message in err. `ready` is borrowed and called per /readyz.
 */
int stp_metrics_http_start(uv_loop_t *loop, const struct sockaddr *addr, stp_metrics_ready_fn ready,
                           void *arg, char *err, size_t errlen);

/* Stops listening and closes open connections; idempotent. Memory is freed
 * in the close callbacks, so run the loop afterwards. */
void stp_metrics_http_stop(void);

#endif

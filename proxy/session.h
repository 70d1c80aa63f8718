/*
 * session: one client connection relayed to one server connection, and the
 * SMTP state machine between them (inbound mode: the client is an Internet
 * MTA, the server is the plaintext legacy MTA).
 */
#ifndef STP_SESSION_H
#define STP_SESSION_H

#include "proxy/listener.h"

/* Starts the session of a connection accepted on `l`: `fd` and its peer's
 * address (l->on_accept). Returns 0 once the session owns fd (refused
 * connections, limits, get a 421 and are closed by it), or a negative libuv
 * error (UV_ENOMEM) when no session could be made: fd is left to the
 * caller. */
int stp_session_accept(stp_listener_t *l, int fd, const struct sockaddr *peer, socklen_t len);

/* Asks the session to finish: 421 4.3.2 at once if it waits for a command,
 * else as soon as what is in flight (a message, a reply) is done. */
void stp_session_drain(stp_session_t *s);

/* Closes the session now, without a reply. */
void stp_session_kill(stp_session_t *s);

/* Session list links (owned by the listener). */
stp_session_t *stp_session_next(stp_session_t *s);

#endif

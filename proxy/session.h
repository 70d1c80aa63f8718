/*
 * session: one client connection relayed to one server connection, and the
 * SMTP state machine between them (inbound mode: the client is an Internet
 * MTA, the server is the plaintext legacy MTA).
 */
#ifndef STP_SESSION_H
#define STP_SESSION_H

#include "proxy/listener.h"

/* Accepts one pending connection from l->tcp and starts its session.
 * Refused connections (limits) get a 421 and are closed. */
void stp_session_accept(stp_listener_t *l);

/* Asks the session to finish: 421 4.3.2 at once if it waits for a command,
 * else as soon as what is in flight (a message, a reply) is done. */
void stp_session_drain(stp_session_t *s);

/* Closes the session now, without a reply. */
void stp_session_kill(stp_session_t *s);

/* Session list links (owned by the listener). */
stp_session_t *stp_session_next(stp_session_t *s);

#endif

#!/usr/bin/env python3
"""A scripted next hop for the outbound tests: a receiving MTA that offers
STARTTLS with a chosen certificate, or misbehaves in a chosen way.

  nexthop.py --listen 127.0.0.1:PORT|[::1]:PORT --maildir DIR --cert PEM --key KEY --mode MODE

Messages are stored as NNNN-tls.eml or NNNN-plain.eml (how they arrived).
Modes: good, strip (no STARTTLS in EHLO), refuse454, refuse502, garbage
(STARTTLS answered with junk), inject (bytes behind the 220), fragment (a
CRLF-less fragment behind the 220), tls10 (only TLS 1.0), drop-after-dot
(closes the connection instead of answering the final dot), helo-only
(no ESMTP: EHLO refused), refuse421 (421 to STARTTLS, then closes), tls11
(only TLS 1.1), drop-in-handshake (reads the ClientHello, then closes),
stall-in-handshake (reads the ClientHello, never answers),
fragment-late (the CRLF-less fragment 50 ms after the 220, in a segment of
its own), fragment-1 (a single byte behind the 220, in its segment), auth (a submission server: after TLS it offers AUTH PLAIN,
CHUNKING and XCLIENT, accepts AUTH PLAIN for user/secret and stores
NNNN-tls-auth.eml), strip-auth (the same with its STARTTLS stripped: AUTH
offered in plaintext), garbage-after-ehlo / data-after-ehlo (after TLS, the
EHLO reply and, in the same TCP segment, a bogus TLS record / an unasked
reply), idle-421 (after each message, 0.3 s later: 421 and a close),
dot-421-behind (the reply to the final dot and a 421 in one segment, the
connection left open),
mail-421 (421 to MAIL, then closes), mail-354 / rcpt-354 / data-250 /
dot-354 (out of step with the commands: 354 to MAIL / 354 to RCPT / 250
to DATA / 354 to the final dot, nothing stored), mail-421-linger (421 to MAIL, then
keeps the connection open 10 s before closing: a client must not go on using
it), rset-421 (421 to RSET, then closes: a server that timed the session
out as the client came back to it), rset-silent (never answers RSET), rset-extra (answers RSET with two 250
replies in one segment), slow (0.5 s before answering MAIL, RCPT, DATA
and the final dot: a busy MTA; the message is stored before that wait, as a
real one commits before it replies), rset-502 (refuses RSET with 502 and
keeps the transaction: a MAIL behind it gets 503 nested MAIL),
data-554-rset-421 (554 to DATA, then 421 to RSET, the connection kept open
1 s before closing), data-554-rset-502 (554 to DATA, then RSET refused as in
rset-502), data-mid-421 / data-mid-552 (after its 354 and the message's
first line: 421 and a close / 552 5.3.4, then it reads on until the client
closes, logging "data-mid-552 dropped"), data-mid-close (closes after the
message's first line), rcpt-close / data-close / dot-close (closes instead
of answering RCPT / DATA / the final dot), data-stall-close (after its 354
reads nothing of the message for 1 s, then closes: a client sending faster
than it reads is held back meanwhile). The rcpt-421 ... dot-close and
data-stall-close modes fail on their first occasion only (first_421()).
In every mode a RCPT whose address starts with "unknown" gets 550 5.1.1.
QUIT is logged on stderr as a "bye" line, the SNI a client sends as "sni NAME".
"""
import argparse
import os
import socket
import ssl
import sys
import threading
import time


def log_sni(sock, name, ctx):
    sys.stderr.write("sni %s\n" % name)
    return None  # an int would be a TLS alert


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.tls = False
        self.authed = False
        self.txn = False  # a MAIL was accepted and not yet ended (rset-502 modes)

    def line(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                return None
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.rstrip(b"\r")

    def send(self, b):
        self.sock.sendall(b)


_first = [True]
_first_lock = threading.Lock()


def first_421():
    """True once: the rcpt-421, data-421 and dot-421 modes say 421 (and
    close) on their first occasion only, so a reconnection is served."""
    with _first_lock:
        was, _first[0] = _first[0], False
        return was


def serve(c, a, count, lock):
    conn = Conn(c)
    try:
        if a.greet_delay:
            time.sleep(a.greet_delay)
        if a.mode == "greet-554":  # no SMTP service here (RFC 5321 3.1)
            conn.send(b"554 5.3.2 nexthop.example.test not accepting mail\r\n")
            conn.line()  # the client's QUIT, or its close
            return
        conn.send(b"220 nexthop.example.test ESMTP\r\n")
        while True:
            l = conn.line()
            if l is None:
                return
            u = l.upper()
            if u.startswith(b"EHLO") or u.startswith(b"HELO"):
                sys.stderr.write("hello %s tls=%s\n" % (l.decode(errors="replace"), conn.tls))
                sys.stderr.flush()
            if u.startswith(b"EHLO") and conn.tls and a.mode == "ehlo2-550":
                conn.send(b"550 5.7.1 nexthop.example.test go away\r\n")
                continue
            if u.startswith(b"EHLO") and conn.tls and a.mode == "ehlo2-drop":
                return  # closed with the EHLO inside TLS unanswered
            if u.startswith(b"EHLO"):
                if a.mode == "helo-only":
                    conn.send(b"502 5.5.1 EHLO not supported\r\n")
                    continue
                caps = [b"250-nexthop.example.test", b"250-PIPELINING", b"250-8BITMIME",
                        b"250-SMTPUTF8"]
                if not conn.tls and a.mode not in ("strip", "strip-auth"):
                    caps.append(b"250-STARTTLS")
                if a.mode == "strip-auth":  # a submission server with its STARTTLS stripped
                    caps.append(b"250-AUTH PLAIN LOGIN")
                if conn.tls and a.mode == "auth":
                    caps += [b"250-AUTH PLAIN LOGIN", b"250-CHUNKING", b"250-XCLIENT NAME ADDR"]
                caps.append(b"250 ENHANCEDSTATUSCODES")
                if conn.tls and a.mode in ("garbage-after-ehlo", "data-after-ehlo"):
                    # the EHLO reply and what follows in one TCP segment, so
                    # the proxy reads them together
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    conn.send(b"\r\n".join(caps) + b"\r\n")
                    if a.mode == "garbage-after-ehlo":
                        os.write(conn.sock.fileno(), b"\x17\x03\x03\x00\x05junk!")
                    else:
                        conn.send(b"250 2.1.0 unasked\r\n")
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                    conn.line()  # whatever comes, then hang up
                    return
                conn.send(b"\r\n".join(caps) + b"\r\n")
            elif u.startswith(b"HELO"):
                conn.send(b"250 nexthop.example.test\r\n")
            elif u == b"STARTTLS":
                if a.mode == "refuse454":
                    conn.send(b"454 4.7.0 TLS not available due to temporary reason\r\n")
                    continue
                if a.mode == "refuse502":
                    conn.send(b"502 5.5.1 Error: command not implemented\r\n")
                    continue
                if a.mode == "refuse421":
                    conn.send(b"421 4.3.2 Service shutting down\r\n")
                    return
                if a.mode == "garbage":
                    conn.send(b"hello there\r\n")
                    continue
                if a.mode == "inject":
                    conn.send(b"220 2.0.0 Ready\r\n250-injected\r\n250 STARTTLS\r\n")
                elif a.mode == "fragment":
                    conn.send(b"220 2.0.0 Ready\r\n250 inj")
                elif a.mode == "fragment-1":
                    conn.send(b"220 2.0.0 Ready\r\n2")
                elif a.mode == "fragment-late":
                    conn.send(b"220 2.0.0 Ready\r\n")
                    time.sleep(0.05)  # a segment of its own, while the ClientHello is on its way
                    conn.send(b"250 inj")
                else:
                    conn.send(b"220 2.0.0 Ready to start TLS\r\n")
                if a.mode == "drop-in-handshake":
                    conn.sock.recv(100)  # part of the ClientHello
                    return
                if a.mode == "stall-in-handshake":
                    conn.sock.recv(4096)  # the ClientHello, never answered
                    while conn.sock.recv(4096):
                        pass
                    return
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(a.cert, a.key)
                ctx.sni_callback = log_sni
                if a.mode == "tls10":
                    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                    ctx.minimum_version = ssl.TLSVersion.TLSv1
                    ctx.maximum_version = ssl.TLSVersion.TLSv1
                if a.mode == "tls11":
                    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                try:
                    conn.sock = ctx.wrap_socket(conn.sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                conn.tls = True
                conn.buf = b""
            elif u.startswith(b"AUTH ") and (a.mode == "auth" and conn.tls or a.mode == "strip-auth"):
                sys.stderr.write("auth tls=%s\n" % conn.tls)
                sys.stderr.flush()
                if l[5:] == b"PLAIN AHVzZXIAc2VjcmV0":  # \0user\0secret
                    conn.authed = True
                    conn.send(b"235 2.7.0 Authentication successful\r\n")
                else:
                    conn.send(b"535 5.7.8 Error: authentication failed\r\n")
            elif u.startswith(b"MAIL") and a.mode == "auth" and not conn.authed:
                conn.send(b"530 5.7.0 Authentication required\r\n")
            elif u.startswith(b"MAIL") and a.mode in ("mail-421", "mail-421-linger"):
                sys.stderr.write("mail-421 %s\n" % l.decode(errors="replace"))
                sys.stderr.flush()
                conn.send(b"421 4.3.2 nexthop.example.test Service shutting down\r\n")
                if a.mode == "mail-421-linger":
                    time.sleep(10)
                return
            elif u == b"RSET" and a.mode == "data-554-rset-421":
                sys.stderr.write("rset-421 tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"421 4.4.2 nexthop.example.test closing connection\r\n")
                time.sleep(1)  # closing, but not at once: a client must not go on using it
                return
            elif u == b"RSET" and a.mode in ("rset-502", "data-554-rset-502"):
                sys.stderr.write("rset-502 tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"502 5.5.2 Error: command not recognized\r\n")
            elif u.startswith(b"MAIL") and conn.txn and a.mode in ("rset-502",
                                                                    "data-554-rset-502"):
                sys.stderr.write("nested %s\n" % l.decode(errors="replace"))
                sys.stderr.flush()
                conn.send(b"503 5.5.1 Error: nested MAIL command\r\n")
            elif u == b"RSET" and a.mode == "rset-421":
                sys.stderr.write("rset-421 tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"421 4.4.2 nexthop.example.test Error: timeout exceeded\r\n")
                return
            elif u == b"RSET" and a.mode == "rset-extra":
                sys.stderr.write("rset-extra tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")
            elif u == b"RSET" and a.mode == "rset-close":
                sys.stderr.write("rset-close tls=%s\n" % conn.tls)
                sys.stderr.flush()
                return  # closed with the RSET unanswered
            elif u == b"RSET" and a.mode == "rset-silent":
                sys.stderr.write("rset-silent tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.line()  # until the client gives up on this connection
                return
            elif u.startswith(b"RCPT") and a.mode == "rcpt-421" and first_421():
                sys.stderr.write("rcpt-421 %s\n" % l.decode(errors="replace"))
                sys.stderr.flush()
                conn.send(b"421 4.3.2 nexthop.example.test Service shutting down\r\n")
                return
            elif u.startswith(b"RCPT") and a.mode == "rcpt-close" and first_421():
                sys.stderr.write("rcpt-close %s\n" % l.decode(errors="replace"))
                sys.stderr.flush()
                return  # closed with the RCPT unanswered
            elif u == b"DATA" and a.mode == "data-close" and first_421():
                sys.stderr.write("data-close\n")
                sys.stderr.flush()
                return  # closed with DATA unanswered
            elif u == b"DATA" and a.mode == "data-421" and first_421():
                sys.stderr.write("data-421\n")
                sys.stderr.flush()
                conn.send(b"421 4.3.2 nexthop.example.test Service shutting down\r\n")
                return
            elif (a.mode, u[:4]) in (("mail-354", b"MAIL"), ("rcpt-354", b"RCPT")):
                # out of step: a reply meant for DATA
                sys.stderr.write("command %s tls=%s\n" % (l.decode(errors="replace"), conn.tls))
                sys.stderr.flush()
                conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif u == b"DATA" and a.mode == "data-250":
                sys.stderr.write("data-250 tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"250 2.0.0 Ok\r\n")
            elif u.startswith(b"MAIL") or u.startswith(b"RCPT") or u == b"RSET" or u == b"NOOP":
                # the envelope on stderr ("command ..."; EHLO and HELO above as
                # "hello ..."), for tests that check what arrived where
                sys.stderr.write("command %s tls=%s\n" % (l.decode(errors="replace"), conn.tls))
                sys.stderr.flush()
                if a.mode == "slow" and not u.startswith(b"RSET") and not u == b"NOOP":
                    time.sleep(0.5)
                conn.txn = not u.startswith(b"RSET") and (conn.txn or u.startswith(b"MAIL"))
                if u.startswith(b"RCPT TO:<UNKNOWN"):  # in every mode: a user it does not have
                    conn.send(b"550 5.1.1 <%s> User unknown\r\n" % l[9:].split(b">")[0])
                    continue
                conn.send(b"250 2.0.0 Ok\r\n")
            elif u == b"DATA" and a.mode.startswith("data-554-"):
                sys.stderr.write("data-554 tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"554 5.7.1 nexthop.example.test no DATA from you\r\n")
            elif u == b"DATA":
                if a.mode == "slow":
                    time.sleep(0.5)
                conn.send(b"354 go ahead\r\n")
                if a.mode == "slow-data":  # reads nothing of the message for 2 s
                    time.sleep(2)
                if a.mode == "data-stall-close" and first_421():
                    time.sleep(1)  # reads nothing, then closes with it unread
                    sys.stderr.write("data-stall-close\n")
                    sys.stderr.flush()
                    return
                if a.mode.startswith("data-mid-") and first_421():
                    conn.line()  # the message's first line
                    sys.stderr.write("%s\n" % a.mode)
                    sys.stderr.flush()
                    if a.mode == "data-mid-421":
                        conn.send(b"421 4.3.2 nexthop.example.test Service shutting down\r\n")
                    elif a.mode == "data-mid-552":
                        conn.send(b"552 5.3.4 nexthop.example.test Message too big\r\n")
                        l = b""
                        while l not in (None, b"."):
                            l = conn.line()  # the rest of the message, until the client lets go
                        sys.stderr.write("data-mid-552 %s\n" % ("dropped" if l is None else "dot"))
                        sys.stderr.flush()
                    return
                lines = []
                while True:
                    l = conn.line()
                    if l is None:
                        return
                    if l == b".":
                        break
                    lines.append(l[1:] if l.startswith(b".") else l)
                if a.mode == "drop-after-dot" or a.mode == "dot-close" and first_421():
                    return
                if a.mode == "dot-421" and first_421():  # nothing stored
                    sys.stderr.write("dot-421\n")
                    sys.stderr.flush()
                    conn.send(b"421 4.3.2 nexthop.example.test Service shutting down\r\n")
                    return
                if a.mode == "dot-354":  # out of step: nothing stored
                    conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    continue
                if a.mode == "dot-451":  # a temporary failure: nothing stored
                    conn.send(b"451 4.3.0 nexthop.example.test try again later\r\n")
                    continue
                with lock:
                    count[0] += 1
                    n = count[0]
                name = "%04d-%s%s.eml" % (n, "tls" if conn.tls else "plain",
                                          "-auth" if conn.authed else "")
                with open(os.path.join(a.maildir, name), "wb") as f:
                    f.write(b"\r\n".join(lines) + b"\r\n")
                conn.txn = False
                if a.mode == "slow":
                    time.sleep(0.5)  # stored, the reply not yet sent
                if a.mode == "dot-421-behind":
                    # the dot's reply and a 421 in one segment; stays open
                    conn.send(b"250 2.0.0 Ok: queued\r\n421 4.4.2 nexthop.example.test closing soon\r\n")
                    continue
                conn.send(b"250 2.0.0 Ok: queued\r\n")
                if a.mode == "idle-421":
                    time.sleep(0.3)  # an idle timeout, as a busy MTA has
                    conn.send(b"421 4.4.2 nexthop.example.test Error: timeout exceeded\r\n")
                    return
            elif u == b"QUIT":
                sys.stderr.write("bye tls=%s\n" % conn.tls)
                sys.stderr.flush()
                conn.send(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.send(b"502 5.5.2 Error: command not recognized\r\n")
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.sock.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", default="good")
    p.add_argument("--greet-delay", type=float, default=0.0, help="seconds before the 220")
    a = p.parse_args()
    os.makedirs(a.maildir, exist_ok=True)
    host, port = a.listen.rsplit(":", 1)
    host = host.strip("[]")  # [::1]:PORT
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    print("ready", flush=True)
    count, lock = [0], threading.Lock()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, a, count, lock), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

#!/usr/bin/env python3
"""A recording SMTP backend for tests and the demo: a plaintext legacy MTA.

Stores each accepted message (dot-unstuffed, exactly as received) as
NNNN.eml in --maildir, appends every command line it receives to
--transcript (so tests can prove what never reached the backend), and can
be told to misbehave like real legacy servers do.

  sink.py --listen 127.0.0.1:2526 --maildir DIR [--transcript FILE]
          [--ehlo-caps "PIPELINING,SIZE 10240000,..."] [--reject-rcpt SUBSTR]
          [--reject-data] [--lenient-eod] [--greeting TEXT] [--no-greeting]
          [--auth-ok]
"""
import argparse
import os
import socket
import sys
import threading

DEFAULT_CAPS = ("PIPELINING,SIZE 52428800,8BITMIME,STARTTLS,AUTH PLAIN LOGIN,CHUNKING,"
                "BINARYMIME,XCLIENT NAME ADDR,XFORWARD NAME ADDR,SMTPUTF8,DSN,ENHANCEDSTATUSCODES")
LENIENT_ENDS = [b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r",
                b"\r\n.\r"]


class Sink:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.count = 0
        os.makedirs(args.maildir, exist_ok=True)

    def log(self, line):
        if self.args.transcript:
            with self.lock, open(self.args.transcript, "ab") as f:
                f.write(line if line.endswith(b"\n") else line + b"\n")

    def store(self, msg):
        with self.lock:
            self.count += 1
            path = os.path.join(self.args.maildir, "%04d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(msg)
        os.rename(path + ".tmp", path)

    def read_data(self, conn, buf):
        """Returns (message, rest) or (None, b'') on EOF."""
        ends = LENIENT_ENDS if self.args.lenient_eod else [b"\r\n.\r\n"]
        data = b"\r\n" + buf  # the CRLF that ended DATA starts the first line
        start = 0
        while True:
            best = None
            for e in ends:
                i = data.find(e, start)
                if i >= 0 and (best is None or i < best[0]):
                    best = (i, e)
            if best:
                i, e = best
                body = data[2:i + 2] if i >= 2 else b""
                # dot-unstuffing on CRLF lines
                lines = body.split(b"\r\n")
                body = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)
                return body, data[i + len(e):]
            chunk = conn.recv(1 << 20)
            if not chunk:
                return None, b""
            start = max(0, len(data) - 8)  # an ending may straddle chunks
            data += chunk

    def session(self, conn):
        a = self.args
        f_buf = b""
        try:
            if a.no_greeting:
                while conn.recv(4096):
                    pass
                return
            conn.sendall(("220 %s\r\n" % a.greeting).encode())
            rcpts = 0
            mail = False
            while True:
                while b"\n" not in f_buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    f_buf += chunk
                line, f_buf = f_buf.split(b"\n", 1)
                self.log(line + b"\n")
                cmd = line.rstrip(b"\r").upper()
                if cmd.startswith(b"EHLO"):
                    caps = [c for c in a.ehlo_caps.split(",") if c]
                    out = ["250-backend.test"] + ["250-" + c for c in caps]
                    out[-1] = "250 " + out[-1][4:]
                    conn.sendall(("\r\n".join(out) + "\r\n").encode())
                elif cmd.startswith(b"HELO"):
                    conn.sendall(b"250 backend.test\r\n")
                elif cmd.startswith(b"MAIL"):
                    rcpts = 0
                    mail = True
                    conn.sendall(b"250 2.1.0 Ok\r\n")
                elif cmd.startswith(b"RCPT"):
                    if not mail:
                        conn.sendall(b"503 5.5.1 Error: need MAIL command\r\n")
                    elif a.reject_rcpt and a.reject_rcpt.encode().upper() in cmd:
                        conn.sendall(b"550 5.1.1 <rejected>: Recipient address rejected\r\n")
                    else:
                        rcpts += 1
                        conn.sendall(b"250 2.1.5 Ok\r\n")
                elif cmd == b"DATA":
                    if rcpts == 0:
                        conn.sendall(b"554 5.5.1 Error: no valid recipients\r\n")
                        continue
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    msg, f_buf = self.read_data(conn, f_buf)
                    if msg is None:
                        self.log(b"(connection lost in DATA)\n")
                        return
                    if a.reject_data:
                        conn.sendall(b"554 5.7.1 Message rejected by content filter\r\n")
                    else:
                        self.store(msg)
                        conn.sendall(b"250 2.0.0 Ok: queued as %04d\r\n" % self.count)
                    rcpts = 0
                    mail = False
                elif cmd.startswith(b"AUTH"):
                    if a.auth_ok:
                        conn.sendall(b"235 2.7.0 Authentication successful\r\n")
                    else:
                        conn.sendall(b"535 5.7.8 Error: authentication failed\r\n")
                elif cmd == b"RSET":
                    rcpts = 0
                    mail = False
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif cmd == b"NOOP":
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif cmd.startswith(b"VRFY"):
                    conn.sendall(b"252 2.0.0 Send some mail, I'll try my best\r\n")
                elif cmd == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except OSError:
            pass
        finally:
            conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--transcript")
    p.add_argument("--ehlo-caps", default=DEFAULT_CAPS)
    p.add_argument("--reject-rcpt")
    p.add_argument("--reject-data", action="store_true")
    p.add_argument("--lenient-eod", action="store_true")
    p.add_argument("--greeting", default="backend.test ESMTP sink")
    p.add_argument("--no-greeting", action="store_true")
    p.add_argument("--auth-ok", action="store_true")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    sink = Sink(a)
    fam = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host.strip("[]"), int(port)))
    s.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=sink.session, args=(c,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

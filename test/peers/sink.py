#!/usr/bin/env python3
"""A recording SMTP backend for tests and the demo: a plaintext legacy MTA.

Stores each accepted message as NNNN.eml in --maildir: the raw bytes exactly
as received between the 354 and the end of data, dot-unstuffed. Appends every
command line it receives, verbatim, to --transcript, so tests can prove what
never reached the backend (XCLIENT, AUTH before TLS, a smuggled MAIL). It can
be told to misbehave the way real legacy servers do:

  --lenient-eod      ends DATA on "\\n.\\n", "\\r.\\r", "\\n.\\r\\n", "\\r\\n.\\n", ...
                     and deletes NUL bytes first (so "\\r\\n\\0.\\r\\n" ends it too),
                     like a server vulnerable to SMTP smuggling
  --reject-rcpt S    550 for any RCPT containing S (case-insensitive)
  --reject-data      554 after the end of data; nothing stored
  --close-after-data reads the whole message, then drops the connection
                     without a reply (and stores nothing)
  --no-greeting      accepts TCP and never says anything
  --greeting TEXT    the text of the 220 line
  --auth-ok          AUTH succeeds (235); otherwise 535
  --eod-delay S      wait S seconds before the reply to the end of data
  --auth-challenge   AUTH LOGIN gets 334; the next line is the SASL response
  --silent-quit      never answers QUIT; waits for the peer to close
  --no-ehlo          502 to EHLO, as an RFC 821 server (HELO works)
  --data-timeout S   in DATA, S seconds without a byte: 421 and close
  --strict-params    555 for a MAIL SIZE= parameter when --ehlo-caps offers no
                     SIZE (RFC 1870 servers without the extension may refuse it)

  sink.py --listen 127.0.0.1:2526 --maildir DIR [--transcript FILE]
          [--ehlo-caps "PIPELINING,SIZE 10240000,..."] [options above]

Transcript markers (lines that are not commands) start with "(":
"(connection lost in DATA)" when a client disappears before the end of data,
so a test can prove a partial message was discarded.

Prints "ready" on stdout once listening. Python 3 standard library only.
"""
import argparse
import asyncio
import os
import sys

DEFAULT_CAPS = ("PIPELINING,SIZE 52428800,8BITMIME,STARTTLS,AUTH PLAIN LOGIN,CHUNKING,"
                "BINARYMIME,XCLIENT NAME ADDR,XFORWARD NAME ADDR,SMTPUTF8,DSN,ENHANCEDSTATUSCODES")
STRICT_ENDS = (b"\r\n.\r\n",)
# What vulnerable servers accept as the end of data (SMTP smuggling, 2023).
LENIENT_ENDS = (b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r",
                b"\r\n.\r", b"\r.\n")
MAX_LINE = 1 << 20


class Sink:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.ends = LENIENT_ENDS if args.lenient_eod else STRICT_ENDS
        os.makedirs(args.maildir, exist_ok=True)
        # Continue numbering after messages already in the folder (demo restarts).
        for name in os.listdir(args.maildir):
            if name.endswith(".eml") and name[:-4].isdigit():
                self.count = max(self.count, int(name[:-4]))

    def record(self, line):
        if self.args.transcript:
            with open(self.args.transcript, "ab") as f:
                f.write(line if line.endswith(b"\n") else line + b"\n")

    def store(self, msg):
        self.count += 1
        path = os.path.join(self.args.maildir, "%04d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(msg)
        os.rename(path + ".tmp", path)  # readers never see half a message
        return self.count

    def find_end(self, data, start):
        best = None
        for e in self.ends:
            i = data.find(e, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, e)
        return best

    async def read_data(self, reader, buf):
        """Returns (message, rest) or (None, b"") if the client went away."""
        # The CRLF that ended the DATA line starts the first line of data.
        lenient = self.ends is LENIENT_ENDS
        data = bytearray(b"\r\n" + (buf.replace(b"\0", b"") if lenient else buf))
        start = 0
        while True:
            hit = self.find_end(data, start)
            if hit:
                i, e = hit
                body = bytes(data[2:i + 2]) if i >= 2 else b""
                lines = body.split(b"\r\n")
                body = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)
                return body, bytes(data[i + len(e):])
            if self.args.data_timeout:
                try:
                    chunk = await asyncio.wait_for(reader.read(1 << 20), self.args.data_timeout)
                except asyncio.TimeoutError:
                    return TIMED_OUT, b""
            else:
                chunk = await reader.read(1 << 20)
            if not chunk:
                return None, b""
            start = max(0, len(data) - 8)  # an ending may straddle two reads
            data += chunk.replace(b"\0", b"") if lenient else chunk

    async def session(self, reader, writer):
        a = self.args
        buf = b""
        try:
            if a.no_greeting:
                while await reader.read(65536):
                    pass
                return
            writer.write(("220 %s\r\n" % a.greeting).encode())
            mail = False
            rcpts = 0
            pending = b""  # replies held while more pipelined commands wait in buf
            sasl = False  # the next line is a SASL response (--auth-challenge)
            while True:
                while b"\n" not in buf:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > MAX_LINE:
                        return
                line, buf = buf.split(b"\n", 1)
                self.record(line + b"\n")
                cmd = line.rstrip(b"\r")
                verb = cmd.split(b" ", 1)[0].upper()
                out = b"502 5.5.2 Error: command not recognized\r\n"
                if sasl:
                    sasl = False
                    if cmd == b"*":
                        out = b"501 5.7.0 Authentication aborted\r\n"
                    elif a.auth_ok:
                        out = b"235 2.7.0 Authentication successful\r\n"
                    else:
                        out = b"535 5.7.8 Error: authentication failed\r\n"
                elif verb == b"EHLO" and a.no_ehlo:
                    out = b"502 5.5.2 Error: command not recognized\r\n"
                elif verb == b"EHLO":
                    caps = [c for c in a.ehlo_caps.split(",") if c]
                    lines = ["backend.test"] + caps
                    out = "".join("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", l)
                                  for i, l in enumerate(lines)).encode()
                    mail, rcpts = False, 0
                elif verb == b"HELO":
                    out = b"250 backend.test\r\n"
                    mail, rcpts = False, 0
                elif verb == b"MAIL":
                    if mail:
                        out = b"503 5.5.1 Error: nested MAIL command\r\n"
                    elif (a.strict_params and b" SIZE=" in cmd.upper()
                          and not any(c.upper().split(" ")[0] == "SIZE"
                                      for c in a.ehlo_caps.split(","))):
                        out = b"555 5.5.4 Unsupported option: SIZE\r\n"
                    else:
                        mail, rcpts = True, 0
                        out = b"250 2.1.0 Ok\r\n"
                elif verb == b"RCPT":
                    if not mail:
                        out = b"503 5.5.1 Error: need MAIL command\r\n"
                    elif a.reject_rcpt and a.reject_rcpt.encode().upper() in cmd.upper():
                        out = b"550 5.1.1 <rejected>: Recipient address rejected\r\n"
                    else:
                        rcpts += 1
                        out = b"250 2.1.5 Ok\r\n"
                elif verb == b"DATA":
                    if not mail:
                        out = b"503 5.5.1 Error: need RCPT command\r\n"
                    elif rcpts == 0:
                        out = b"554 5.5.1 Error: no valid recipients\r\n"
                    else:
                        writer.write(pending + b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        pending = b""
                        await writer.drain()
                        msg, buf = await self.read_data(reader, buf)
                        mail, rcpts = False, 0
                        if msg is TIMED_OUT:  # as Postfix's smtpd at smtpd_timeout
                            self.record(b"(timeout in DATA)")
                            writer.write(b"421 4.4.2 backend.test Error: timeout exceeded\r\n")
                            await writer.drain()
                            return
                        if msg is None:
                            self.record(b"(connection lost in DATA)")
                            return
                        if a.close_after_data:
                            self.record(b"(closed after DATA without a reply)")
                            return
                        if a.reject_data:
                            out = b"554 5.7.1 Message rejected by content filter\r\n"
                        else:
                            n = self.store(msg)
                            out = b"250 2.0.0 Ok: queued as %04d\r\n" % n
                        if a.eod_delay:
                            await asyncio.sleep(a.eod_delay)
                elif verb == b"AUTH":
                    if a.auth_challenge and cmd.upper() == b"AUTH LOGIN":
                        out = b"334 VXNlcm5hbWU6\r\n"
                        sasl = True
                    elif a.auth_ok:
                        out = b"235 2.7.0 Authentication successful\r\n"
                    else:
                        out = b"535 5.7.8 Error: authentication failed\r\n"
                elif verb == b"RSET":
                    mail, rcpts = False, 0
                    out = b"250 2.0.0 Ok\r\n"
                elif verb == b"NOOP":
                    out = b"250 2.0.0 Ok\r\n"
                elif verb == b"VRFY":
                    out = b"252 2.0.0 Send some mail, I'll try my best\r\n"
                elif verb == b"QUIT":
                    if a.silent_quit:
                        writer.write(pending)
                        await writer.drain()
                        while await reader.read(65536):
                            pass
                        self.record(b"(closed by the peer after QUIT)")
                        return
                    writer.write(pending + b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                # PIPELINING: answer in order, in one write once no more
                # input is waiting (as Postfix's smtpd does).
                pending += out
                if b"\n" not in buf:
                    writer.write(pending)
                    pending = b""
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except OSError:
                pass


TIMED_OUT = object()  # read_data(): the client sent nothing for --data-timeout


async def serve(args):
    host, port = args.listen.rsplit(":", 1)
    sink = Sink(args)
    server = await asyncio.start_server(sink.session, host.strip("[]"), int(port),
                                        reuse_address=True, backlog=256, limit=MAX_LINE)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def parser():
    """The command line; every option has its help text (test/README.md
    promises that `--help` lists the misbehaviours)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT ([v6]:PORT) to listen on")
    p.add_argument("--maildir", required=True,
                   help="directory for accepted messages, NNNN.eml, raw and dot-unstuffed")
    p.add_argument("--transcript",
                   help="file to append every command line to, verbatim (markers start with '(')")
    p.add_argument("--ehlo-caps", default=DEFAULT_CAPS, help="comma-separated EHLO keywords")
    p.add_argument("--reject-rcpt", metavar="S",
                   help="550 for any RCPT containing S (case-insensitive)")
    p.add_argument("--reject-data", action="store_true",
                   help="554 after the end of data; nothing stored")
    p.add_argument("--lenient-eod", action="store_true",
                   help="end DATA on any line-end variant around the dot (\\n.\\n, \\r.\\r, ...) "
                        "after deleting NULs, like a server open to SMTP smuggling")
    p.add_argument("--close-after-data", action="store_true",
                   help="read the whole message, then drop the connection without a reply "
                        "(nothing stored)")
    p.add_argument("--greeting", default="backend.test ESMTP sink",
                   help="the text of the 220 line")
    p.add_argument("--no-greeting", action="store_true",
                   help="accept TCP and never say anything")
    p.add_argument("--auth-ok", action="store_true", help="AUTH succeeds (235); otherwise 535")
    p.add_argument("--eod-delay", type=float, default=0, metavar="S",
                   help="seconds to wait before the reply to the end of data")
    p.add_argument("--auth-challenge", action="store_true",
                   help="AUTH LOGIN gets 334 and the next line is its response ('*' cancels: 501)")
    p.add_argument("--silent-quit", action="store_true", help="never answer QUIT; wait for the peer to close")
    p.add_argument("--no-ehlo", action="store_true",
                   help="an RFC 821 server: 502 to EHLO (HELO works)")
    p.add_argument("--data-timeout", type=float, default=0, metavar="S",
                   help="in DATA, after S seconds without a byte: 421 and close (a server's "
                        "own timeout, Postfix's smtpd_timeout)")
    p.add_argument("--strict-params", action="store_true",
                   help="555 for MAIL SIZE= unless --ehlo-caps offers SIZE")
    return p


def main():
    args = parser().parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())

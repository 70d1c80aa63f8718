"""Conformance cases that no integration test covered yet. Each test states
the attack, the outcome it expects, and records what it observed (note())
for the table test/conformance/run.py prints.

They use the integration harness (test/integration/harness.py): real
processes on loopback, free ports, stopped by PID.
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402
from harness import (BODY, CERTS, Client, NextHop, Proxy, ProxyCase, Sink, client_ctx,  # noqa: E402
                     free_port, poll, split_trace, tmpdir)
from test_attacks import SECOND, Smuggling  # noqa: E402
from test_outbound import attempt  # noqa: E402


def note(case, text):
    """Records what a case observed; run.py prints it in the table."""
    case.observed = text
    print("OBSERVED: " + text, flush=True)


class ScriptedBackend:
    """A plaintext backend in a thread that answers each command line with
    script(line) (bytes to send, or None to close). Greets with `greeting`
    after `delay` seconds. Records the command lines it got in .lines."""

    def __init__(self, script, greeting=b"220 scripted.test ESMTP\r\n", delay=0.0):
        self.script, self.greeting, self.delay = script, greeting, delay
        self.lines = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            time.sleep(self.delay)
            c.sendall(self.greeting)
            while True:
                while b"\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                self.lines.append(line)
                out = self.script(line)
                if out is None:
                    return
                c.sendall(out)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.srv.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def plain_script(line):
    """A well-behaved minimal backend."""
    verb = line.split(b" ", 1)[0].upper()
    if verb == b"EHLO":
        return b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    if verb == b"DATA":
        return b"354 go\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 2.0.0 ok\r\n"


# --- inbound ------------------------------------------------------------------


class Inbound(ProxyCase):
    sink_args = ("--auth-ok",)

    def test_credential_theft_injection(self):
        # The attacker (on path, before TLS) appends its own envelope to the
        # victim's STARTTLS, hoping the proxy runs it inside TLS so that the
        # victim's AUTH and message go to the attacker's recipient.
        c = self.client()
        c.reply()
        c.cmd("EHLO victim.example")
        c.send(b"STARTTLS\r\nMAIL FROM:<attacker@evil.example>\r\n"
               b"RCPT TO:<attacker@evil.example>\r\nDATA\r\n")
        code, lines = c.reply()
        self.assertEqual(lines, ["220 2.0.0 Ready to start TLS"])
        c.tls()
        self.assertTrue(c.silent(0.5), "replies to injected commands inside TLS: %r" % c.buf)
        self.assertEqual(c.cmd("EHLO victim.example")[0], 250)
        self.assertEqual(c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0")[0], 235)
        self.assertEqual(self.send_message(c)[0], 250)
        self.assert_never_sent(b"attacker@evil")
        _, rest = self.one_message()
        self.assertNotIn(b"AHVzZXIAc2VjcmV0", rest)
        note(self, "220, injected MAIL/RCPT/DATA discarded; victim's message delivered alone")

    def test_plaintext_after_220(self):
        # STARTTLS accepted, then plaintext instead of a ClientHello.
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n")
        self.assertTrue(c.closed(5), "connection kept open after plaintext in the handshake")
        self.assertNotIn(b"250", c.buf)
        self.assert_never_sent(b"MAIL", b"RCPT")
        note(self, "connection closed, nothing forwarded")

    def test_auth_pipelined_after_starttls(self):
        # A client that sends STARTTLS and its AUTH in one segment must not
        # have the AUTH executed (or leaked) in any state.
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"STARTTLS\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
        self.assertEqual(c.reply()[0], 220)
        c.tls()
        self.assertTrue(c.silent(0.5), c.buf)
        self.assert_never_sent(b"AUTH")
        note(self, "AUTH discarded with the rest of the pipeline")

    def test_pipelining_without_ehlo(self):
        # No EHLO, so PIPELINING was never offered: a whole transaction in
        # one segment. Every command gets exactly one reply, in order, and
        # the message arrives once, with the body that followed the 354.
        c = self.client()
        c.reply()
        c.send(b"HELO x.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"DATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 221])
        self.assertEqual(split_trace(self.messages(1)[0])[1], b"Subject: p\r\n\r\nbody\r\n")
        # And with no greeting command at all: answered in order, nothing stored.
        d = self.client()
        d.reply()
        d.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
               b"Subject: x\r\n\r\nbody\r\n.\r\n")
        codes = []
        while not d.silent(1.0) or d.buf:
            while b"\n" in d.buf:
                codes.append(d.reply()[0])
        self.assertTrue(codes, "no replies")
        self.assertEqual(len(self.sink.messages()), 1)
        self.assert_never_sent(b"Subject: x")
        note(self, "with HELO: 250,250,250,354,250; without: %s" % codes)

    def test_renegotiation_refused(self):
        # openssl s_client with TLS 1.2 asks to renegotiate ("R" on stdin).
        port = self.proxy.port()
        p = subprocess.Popen(["openssl", "s_client", "-tls1_2", "-starttls", "smtp", "-connect",
                              "127.0.0.1:%d" % port, "-servername", "mx.example.test",
                              "-CAfile", os.path.join(CERTS, "ca.pem")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and os.killpg(p.pid, signal.SIGKILL))
        try:
            p.stdin.write(b"EHLO x.example\n")
            p.stdin.flush()
            time.sleep(1.0)
            p.stdin.write(b"R\n")
            p.stdin.flush()
            time.sleep(1.0)
            p.stdin.write(b"NOOP\nQUIT\n")
            p.stdin.flush()
            p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out = p.stdout.read().decode("utf-8", "replace")
        p.stdout.close()
        print(out[-3000:])
        self.assertIn("RENEGOTIATING", out)
        self.assertIn("Protocol  : TLSv1.2", out)
        # Refused: the renegotiation never completes, nothing after it runs.
        self.assertNotIn("221 2.0.0", out, out[-2000:])
        self.assertIn("alert no renegotiation", out)
        # The proxy carries on: a new session works end to end.
        c = self.ready_client()
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(len(self.messages(1)), 1)
        note(self, "renegotiation refused (alert), connection closed; proxy serves new sessions")

    def test_implicit_tls_renegotiation_refused(self):
        # The same through python's ssl, which cannot renegotiate: instead
        # a second ClientHello inside the session, as raw bytes after TLS.
        c = self.ready_client()
        raw = ssl.MemoryBIO(), ssl.MemoryBIO()
        o = client_ctx().wrap_bio(raw[0], raw[1], server_hostname="mx.example.test")
        try:
            o.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = raw[1].read()
        # An attempt to inject a handshake record as application data: it
        # is content of the TLS stream, so it must be refused as a command.
        c.send(hello + b"\r\n")
        codes = []
        while b"\n" in c.buf or not c.silent(1.0):
            codes.append(c.reply()[0])
        self.assertTrue(codes)
        self.assertEqual({x // 100 for x in codes}, {5}, codes)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        note(self, "ClientHello bytes inside TLS: %d refused line(s) (%s), session continues"
             % (len(codes), codes[0]))


class EarlyTalker(unittest.TestCase):
    """The client speaks before the greeting (the backend greets after 1 s)."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.backend = ScriptedBackend(plain_script, delay=1.0)
        self.addCleanup(self.backend.stop)
        self.proxy = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % self.backend.port}})
        self.addCleanup(self.proxy.stop)

    def test_talking_before_greeting(self):
        c = Client(self.proxy.port())
        self.addCleanup(c.close)
        c.send(b"EHLO x.example\r\nMAIL FROM:<a@example.test>\r\n")
        code, lines = c.reply()
        # The first thing the client reads is the greeting or a refusal,
        # never a reply to a command the backend has not greeted for.
        self.assertIn(code, (220, 421, 554), lines)
        if code == 220:
            rest = [c.reply()[0] for _ in range(2)]
            seen = list(self.backend.lines)
            note(self, "greeting first, then %s; backend saw %d lines after its greeting"
                 % (rest, len(seen)))
        else:
            self.assertTrue(c.closed())
            self.assertEqual(self.backend.lines, [])
            note(self, "refused with %d" % code)

    def test_starttls_before_greeting(self):
        c = Client(self.proxy.port())
        self.addCleanup(c.close)
        c.send(b"STARTTLS\r\n")
        code, lines = c.reply()
        # The first line read is the backend's greeting (relayed), not the
        # proxy's "220 2.0.0 Ready to start TLS": no handshake before it.
        self.assertEqual(code, 220, lines)
        self.assertFalse(lines[0].startswith("220 2.0.0"), lines)
        code2, lines2 = c.reply()
        if code2 == 220:
            c.tls()
            self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        note(self, "greeting first, then STARTTLS answered: %s" % lines2[0])


# --- both directions: replies from the backend -------------------------------------


class BadReplies(unittest.TestCase):
    def run_backend(self, script):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        b = ScriptedBackend(script)
        self.addCleanup(b.stop)
        p = Proxy(tmp, {"in": {"backend": "127.0.0.1:%d" % b.port, "command_timeout": "2s"}})
        self.addCleanup(p.stop)
        c = Client(p.port())
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        return p, c

    def envelope(self, c):
        """MAIL, RCPT, DATA, body: returns the replies seen until one is not
        2xx/3xx or the connection ends."""
        got = []
        for cmd in (b"MAIL FROM:<a@example.test>", b"RCPT TO:<b@example.test>", b"DATA"):
            try:
                code, lines = c.cmd(cmd.decode())
            except (EOFError, OSError):
                got.append(0)
                return got
            got.append(code)
            if code // 100 not in (2, 3):
                return got
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        try:
            got.append(c.reply()[0])
        except (EOFError, OSError):
            got.append(0)
        return got

    def check(self, script, what):
        p, c = self.run_backend(script)
        got = self.envelope(c)
        self.assertNotEqual(got[-1] // 100, 2, "a 2xx for %s: %s" % (what, got))
        self.assertIn(got[-1] // 100, (0, 4, 5), got)
        self.assertEqual(p.stop(), 0)
        note(self, "%s -> client got %s" % (what, got))

    def test_malformed_reply(self):
        self.check(lambda l: b"hello there\r\n" if l.upper().startswith(b"RCPT")
                   else plain_script(l), "RCPT answered 'hello there'")

    def test_malformed_reply_code(self):
        self.check(lambda l: b"2x0 ok\r\n" if l.upper().startswith(b"MAIL")
                   else plain_script(l), "MAIL answered '2x0 ok'")

    def test_mixed_multiline_codes(self):
        self.check(lambda l: b"250-ok\r\n550 no\r\n" if l.upper().startswith(b"RCPT")
                   else plain_script(l), "RCPT answered 250-/550 mixed")

    def test_overlong_reply_line(self):
        self.check(lambda l: b"250 " + b"x" * 100000 + b"\r\n" if l.upper().startswith(b"RCPT")
                   else plain_script(l), "RCPT answered with a 100 kB line")

    def test_endless_multiline_reply(self):
        self.check(lambda l: b"250-x\r\n" * 20000 + b"250 ok\r\n" if l.upper().startswith(b"RCPT")
                   else plain_script(l), "RCPT answered with 20001 lines")

    def test_reply_before_dot(self):
        # A backend that answers 250 to DATA's content before the final dot
        # (replying while the message is still streaming).
        state = {"data": False}

        def script(line):
            if line.upper() == b"DATA":
                state["data"] = True
                return b"354 go\r\n250 2.0.0 early\r\n"
            return plain_script(line)
        self.check(script, "250 sent right behind 354")

    def test_unsolicited_reply(self):
        self.check(lambda l: b"250 ok\r\n250 extra\r\n" if l.upper().startswith(b"MAIL")
                   else plain_script(l), "two replies to MAIL")


# --- both: envelope and size ------------------------------------------------------------


class ManyRcpts(ProxyCase):
    def test_1000_rcpts_pipelined(self):
        c = self.ready_client()
        c.send(b"MAIL FROM:<a@example.test>\r\n" +
               b"".join(b"RCPT TO:<r%d@example.test>\r\n" % i for i in range(1000)) + b"DATA\r\n")
        codes = [c.reply()[0] for _ in range(1002)]
        self.assertEqual(codes[0], 250)
        ok = codes[1:1001].count(250)
        self.assertTrue(all(x in (250, 452) for x in codes[1:1001]), set(codes))
        if codes[-1] == 354:
            c.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(len(self.messages(1)), 1)
        rcpt_lines = [l for l in self.sink.lines() if l.startswith(b"RCPT")]
        self.assertEqual(len(rcpt_lines), ok)
        note(self, "%d RCPT accepted, %d deferred, DATA %d, one message"
             % (ok, 1000 - ok, codes[-1]))


class SizeLimit(ProxyCase):
    listeners = {"in": {"max_message_size": "10000"}}

    def oversized(self, content):
        """MAIL, RCPT, DATA, then `content` and the final dot in one send:
        552 5.3.4, the connection closed, nothing stored. Returns the reply."""
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(content + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 552, lines)
        self.assertTrue(lines[0].startswith("552 5.3.4"), lines)
        self.assertTrue(c.closed())
        self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines(), 5),
                        self.sink.lines()[-3:])
        self.assertEqual(self.sink.messages(), [])
        return lines

    def test_size_exceeded(self):
        lines = self.oversized(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 50)
        note(self, lines[0] + "; connection closed, nothing stored")

    def test_size_exceeded_in_the_last_chunk(self):
        # Over the limit by a few hundred bytes, the final dot in the same
        # TLS record: the limit is judged before anything of that chunk is
        # forwarded, so the backend never sees the dot (never stores it).
        lines = self.oversized(b"Subject: just over\r\n\r\n" + (b"z" * 98 + b"\r\n") * 104)
        note(self, lines[0] + "; nothing stored")

    def test_size_exactly_at_the_limit(self):
        # RFC 1870 counts neither stuffed dots nor the final ".\r\n": a
        # message of exactly the announced SIZE is accepted, one byte more is not
        head = b"Subject: exact\r\n\r\n..a stuffed dot\r\n"  # 34 bytes on the wire, size 33
        fill = 10000 - (len(head) - 1) - 2
        content = head + b"y" * fill + b"\r\n"
        lines = self.oversized(head + b"y" * (fill + 1) + b"\r\n")
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test> SIZE=10000")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(content + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        accepted = lambda: [harness.log_fields(l) for l in self.proxy.log_lines("message")
                            if "result=accepted" in l]
        self.assertTrue(poll(accepted))
        self.assertEqual(accepted()[0]["size"], "10000")
        c.close()
        note(self, "size 10000: 250 (logged size=10000); 10001: " + lines[0])

    def test_size_declared_too_big(self):
        c = self.client()
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(code, 250)
        # the backend (smtp-sink style) offers a larger SIZE: the client sees the proxy's limit
        self.assertIn("SIZE 10000", [l[4:] for l in lines], lines)
        c.starttls()
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        code, lines = c.cmd("MAIL FROM:<a@example.test> SIZE=50000")
        note(self, "EHLO shows SIZE 10000; MAIL SIZE=50000: %s" % lines[0])
        self.assertEqual(code, 552, lines)
        self.assertTrue(lines[0].startswith("552 5.3.4"), lines)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test> SIZE=9000")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: b"QUIT" in self.sink.lines()))
        self.assertNotIn(b"MAIL FROM:<a@example.test> SIZE=50000", self.sink.lines())
        self.assertIn(b"MAIL FROM:<a@example.test> SIZE=9000", self.sink.lines())


# --- slowloris: one byte at a time, every phase ------------------------------------------


class Slowloris(ProxyCase):
    listeners = {"in": {"idle_timeout": "1s", "data_timeout": "1s", "handshake_timeout": "1s",
                        "session_timeout": "3s"}}

    def dribble(self, c, data, limit=8.0):
        """Sends data one byte every 0.25 s (so no per-byte timer fires)
        until the proxy closes; returns the seconds it took."""
        t0 = time.time()
        for b in data:
            try:
                c.sock.send(bytes([b]))
            except OSError:
                break
            if c.closed(0.25):
                break
            if time.time() - t0 > limit:
                self.fail("still open after %.1fs of dribbling" % limit)
        return time.time() - t0

    def check_closed(self, c, t, phase):
        self.assertLess(t, 6.0)
        self.assertNotIn(b"250 2.0.0 Ok: queued", c.buf)
        note(self, "%s: closed after %.1fs" % (phase, t))

    def test_dribble_command(self):
        c = self.client()
        c.reply()
        t = self.dribble(c, b"EHLO " + b"x" * 200 + b"\r\n")
        self.check_closed(c, t, "command")
        self.assertIn(b"421 4.4.2", c.buf)
        self.assert_never_sent(b"EHLO")

    def test_dribble_data(self):
        c = self.ready_client(tls=False)
        c.cmd("MAIL FROM:<a@example.test>")
        c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(c.cmd("DATA")[0], 354)
        t = self.dribble(c, b"y" * 200)
        self.check_closed(c, t, "data")
        self.assertEqual(self.sink.messages(), [])

    def test_dribble_handshake(self):
        c = self.client()
        c.reply()
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        o = client_ctx().wrap_bio(bio_in, bio_out, server_hostname="mx.example.test")
        try:
            o.do_handshake()
        except ssl.SSLWantReadError:
            pass
        t = self.dribble(c, bio_out.read())
        self.check_closed(c, t, "handshake")

    def test_silent_before_greeting_reply(self):
        # Connect, read the greeting, say nothing (a slow greeting phase).
        c = self.client()
        c.reply()
        t0 = time.time()
        self.assertTrue(c.closed(5))
        self.assertIn(b"421 4.4.2", c.buf)
        note(self, "silent client: 421 4.4.2 after %.1fs" % (time.time() - t0))


class Flood(ProxyCase):
    listeners = {"in": {"max_connections_per_ip": "5", "max_connections": "100"}}

    def test_flood_from_one_ip(self):
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(60):
            socks.append(Client(self.proxy.port()))
        codes = []
        for s in socks:
            try:
                codes.append(s.reply()[0])
            except (EOFError, OSError):
                codes.append(0)
        self.assertEqual(codes.count(220), 5, codes)
        self.assertEqual(len(codes) - codes.count(220), codes.count(421), codes)
        for s in socks:
            s.close()
        # Service resumes once the flood is gone.
        c = poll(lambda: self._fresh(), 5)
        self.assertTrue(c)
        self.assertEqual(self.send_message(c)[0], 250)
        note(self, "60 connections: 5 served, 55 got 421 4.7.0; served again afterwards")

    def _fresh(self):
        c = self.client()
        if c.reply()[0] != 220:
            return None
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        return c


# --- smuggling: one case per ending ---------------------------------------------------------

ENDINGS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_lf": b"\r.\n",
    "cr_dot_cr": b"\r.\r",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_nul_dot_crlf": b"\r\n\x00.\r\n",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_dot_cr": b"\r\n.\r",
    "lf_dot_cr_crlf": b"\n.\r\r\n",
    "cr_dot_cr_crlf": b"\r.\r\r\n",
}


class SmugglingEndings(Smuggling):
    """Against the lenient backend (sink.py --lenient-eod): reject mode
    refuses the message (554 5.6.0, nothing stored), normalize mode stores
    one message containing the would-be second transaction as text; the
    backend never sees the smuggled envelope."""

    def run_ending(self, name):
        ending = ENDINGS[name]
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = self.attempt(c, ending)
        c.close()
        if code == 250:
            # passed as content: one message, with the second inside it
            msgs = self.messages(1)
            self.assertIn(b"evil@attacker.example", split_trace(msgs[0])[1])
            reject = "250, one message (content)"
        else:
            self.assertTrue(lines[0].startswith("554 5.6.0"), lines)
            self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines(), 5),
                            self.sink.lines())
            self.assertEqual(self.sink.messages(), [])
            reject = "554 5.6.0, nothing stored"
        n = len(self.sink.messages())
        c = self.client("norm")
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(self.attempt(c, ending)[0], 250)
        c.close()
        msgs = self.messages(n + 1)
        self.assertIn(b"evil@attacker.example", split_trace(msgs[-1])[1])
        self.assert_nothing_smuggled()
        note(self, "reject: %s; normalize: 250, one message" % reject)


for _n in ENDINGS:
    setattr(SmugglingEndings, "test_" + _n, lambda self, n=_n: self.run_ending(n))


# --- faults --------------------------------------------------------------------------------


class Faults(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_backend_sigkill_mid_data(self):
        sink = Sink(self.tmp)
        self.addCleanup(sink.stop)
        p = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port}})
        self.addCleanup(p.stop)
        c = Client(p.port())
        self.addCleanup(c.close)
        c.reply()
        c.cmd("EHLO x.example")
        c.cmd("MAIL FROM:<a@example.test>")
        c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: half\r\n\r\nfirst half\r\n")
        time.sleep(0.3)
        os.kill(sink.proc.pid, signal.SIGKILL)
        sink.proc.p.wait()
        try:
            c.send(b"second half\r\n.\r\n")
            code, lines = c.reply()
        except (EOFError, OSError):
            code, lines = 0, ["(closed)"]
        self.assertNotEqual(code // 100, 2, lines)
        self.assertEqual(sink.messages(), [])
        self.assertEqual(p.stop(), 0)
        note(self, "client got %s; backend stored nothing" % lines[0])

    def test_proxy_sigkill_during_transaction(self):
        # Kill the proxy at several points of a transaction; whenever the
        # sender saw a 2xx to the final dot, the backend must have the message.
        sink = Sink(self.tmp)
        self.addCleanup(sink.stop)
        results = []
        for point in ("after-rcpt", "mid-data", "after-dot"):
            p = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port}})
            c = Client(p.port())
            try:
                before = len(sink.messages())
                c.reply()
                c.cmd("EHLO x.example")
                c.cmd("MAIL FROM:<a@example.test>")
                c.cmd("RCPT TO:<b@example.test>")
                if point == "after-rcpt":
                    p.proc.stop(signal.SIGKILL)
                else:
                    c.cmd("DATA")
                    c.send(b"Subject: %s\r\n\r\nbody\r\n" % point.encode())
                    if point == "mid-data":
                        time.sleep(0.2)
                        p.proc.stop(signal.SIGKILL)
                    else:
                        c.send(b".\r\n")
                        p.proc.stop(signal.SIGKILL)
                try:
                    code = c.reply()[0]
                except (EOFError, OSError):
                    code = 0
                time.sleep(0.5)
                stored = len(sink.messages()) - before
                if code // 100 == 2:
                    self.assertEqual(stored, 1, "2xx at %s but nothing stored" % point)
                if point != "after-dot":
                    self.assertEqual(stored, 0, point)
                results.append("%s: reply %s, stored %d" % (point, code or "none", stored))
            finally:
                c.close()
                p.proc.stop(signal.SIGKILL)
        note(self, "; ".join(results))


class OpenRelay(unittest.TestCase):
    """The outbound listener relays only for its allow list: probes from
    another loopback address (127.0.0.2, not in allow) are refused at once,
    before any next-hop byte, whatever they try."""

    def test_probe_from_outside_allow(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        hop = NextHop(tmp, "good")
        self.addCleanup(hop.stop)
        p = Proxy(tmp, {"out": {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop.port,
                                "tls": "verify", "servername": "mx.example.test",
                                "ca_file": os.path.join(CERTS, "ca.pem"),
                                "allow": "127.0.0.1/32"}}, tls=False)
        self.addCleanup(p.stop)
        for probe in (b"EHLO probe.example\r\nMAIL FROM:<spam@evil.example>\r\n"
                      b"RCPT TO:<victim@elsewhere.example>\r\nDATA\r\nspam\r\n.\r\n",
                      b"HELO probe.example\r\nMAIL FROM:<>\r\nRCPT TO:<\"victim@x\"@[127.0.0.1]>\r\n"):
            s = socket.create_connection(("127.0.0.1", p.port("out")), timeout=10,
                                         source_address=("127.0.0.2", 0))
            got = b""
            try:
                while b"\n" not in got:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
                self.assertTrue(got.startswith(b"554 5.7.1"), got)
                # and whatever it tries next goes nowhere
                s.sendall(probe)
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by the proxy: the right answer
            finally:
                s.close()
            self.assertNotIn(b"\n250", got)
            self.assertNotIn(b"\n354", got)
        self.assertEqual(hop.stored(), [])
        # The allowed address is served (the probe was refused for its address).
        self.assertEqual(attempt(p.port("out"))[0], "delivered")
        self.assertEqual(len(hop.stored()), 1)
        self.assertEqual(p.stop(), 0)
        note(self, "127.0.0.2: 554 5.7.1 and closed, nothing relayed; 127.0.0.1 delivered")


class OutboundFaults(unittest.TestCase):
    def test_nexthop_closes_mid_handshake(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        hop = NextHop(tmp, "drop-in-handshake")
        self.addCleanup(hop.stop)
        p = Proxy(tmp, {"out": {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop.port,
                                "tls": "verify", "servername": "mx.example.test",
                                "ca_file": os.path.join(CERTS, "ca.pem")}}, tls=False)
        self.addCleanup(p.stop)
        got = attempt(p.port("out"))
        self.assertEqual(got[0], "refused", got)
        self.assertTrue(400 <= got[1] < 500, got)
        self.assertIn("4.7.5", got[2])
        self.assertEqual(hop.stored(), [])
        note(self, "legacy MTA got: %s" % got[2])


if __name__ == "__main__":
    unittest.main()

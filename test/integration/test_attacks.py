"""Attacks on the STARTTLS boundary, on the backend and on the message
boundary. Each test shows the exchange it expects; the backend's transcript
proves what never reached it.
"""

import shutil
import time
import unittest

from harness import (BODY, BODY_UNSTUFFED, Client, Proxy, ProxyCase, Sink, log_fields,
                     parse_trace, poll, split_trace, tmpdir)
from test_mx import MxBase

MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"


class StarttlsBoundary(ProxyCase):
    sink_args = ("--auth-ok",)
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}}

    def test_command_injection_in_one_segment(self):
        # C: STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n   (one write)
        # S: 220 2.0.0 Ready to start TLS
        # ... TLS: no replies to RSET/MAIL; they were never executed.
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n")
        code, lines = c.reply()
        self.assertEqual(lines, ["220 2.0.0 Ready to start TLS"])
        # Either discarded (then the handshake works) or the connection dropped.
        try:
            c.tls()
        except (OSError, EOFError):
            self.assert_never_sent(b"evil", b"MAIL")
            return
        self.assertTrue(c.silent(1.0), "replies inside TLS to injected commands: %r" % c.buf)
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<good@example.test>")[0], 250)
        self.assert_never_sent(b"evil")
        # The backend saw: EHLO, the proxy's reset (RSET or EHLO), EHLO, MAIL <good>.
        lines = self.sink.lines()
        self.assertEqual(lines[0], b"EHLO x.example")
        self.assertEqual(lines[-1], b"MAIL FROM:<good@example.test>")
        self.assertEqual(sum(1 for l in lines if l.startswith(b"MAIL")), 1, lines)

    def test_injection_with_crlf_and_bare_lf(self):
        c = self.client()
        c.reply()
        c.send(b"EHLO x.example\r\nSTARTTLS\nMAIL FROM:<evil@attacker.example>\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 220)
        try:
            c.tls()
            self.assertTrue(c.silent(1.0), c.buf)
        except (OSError, EOFError):
            pass
        self.assert_never_sent(b"evil")

    def test_envelope_before_starttls_not_reused(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("MAIL FROM:<early@example.test>")[0], 250)
        c.starttls()
        c.cmd("EHLO x.example")
        # The backend was reset: a RCPT without a new MAIL fails, so does DATA.
        code, lines = c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(code, 503, lines)
        self.assertIn(c.cmd("DATA")[0], (503, 554))
        self.assertEqual(self.sink.messages(), [])
        # And a full transaction afterwards works, with the new envelope only.
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(len(self.messages(1)), 1)

    def test_mail_after_tls_before_new_ehlo_refused(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "DATA"):
            code, lines = c.cmd(cmd)
            self.assertEqual(code, 503, cmd)
            self.assertTrue(lines[0].startswith("503 5.5.1"), lines)
        self.assertEqual(self.sink.lines().count(b"MAIL FROM:<a@example.test>"), 0)
        c.cmd("EHLO x.example")
        self.assertEqual(self.send_message(c)[0], 250)

    def test_auth_before_tls_refused_and_never_forwarded(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0LXBhc3N3b3Jk")
        self.assertEqual(code, 530)
        self.assertTrue(lines[0].startswith("530 5.7.0"), lines)
        code, _ = c.cmd("AUTH LOGIN")
        self.assertEqual(code, 530)
        self.assert_never_sent(b"AUTH")
        c.starttls()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0LXBhc3N3b3Jk")[0], 235)
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(parse_trace(self.one_message()[0])["proto"], "ESMTPSA")
        c.cmd("QUIT")
        self.stop_proxy()  # flushes the session log
        # AUTH payloads are never logged (the sink's transcript is not a log).

    def test_auth_payload_never_logged(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0LXBhc3N3b3Jk")
        c.starttls()
        c.cmd("EHLO x.example")
        c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0LXBhc3N3b3Jk")
        c.cmd("AUTH LOGIN")
        c.cmd("c2VjcmV0LXBhc3N3b3Jk")
        c.cmd("QUIT")
        proxy = self.proxy
        self.stop_proxy()
        log = proxy.log()
        self.assertNotIn("AHVzZXIAc2VjcmV0LXBhc3N3b3Jk", log)
        self.assertNotIn("c2VjcmV0LXBhc3N3b3Jk", log)
        self.assertNotIn("secret-password", log)

    def test_starttls_with_argument(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("STARTTLS now")
        self.assertEqual(code, 501)
        self.assertTrue(lines[0].startswith("501 5.5.4"), lines)
        self.assertEqual(c.cmd("NOOP")[0], 250)  # still plaintext, still served
        c.starttls()
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)

    def test_starttls_inside_tls_refused(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("STARTTLS")
        self.assertEqual(code, 554)
        self.assertTrue(lines[0].startswith("554 5.5.1"), lines)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assert_never_sent(b"STARTTLS")

    def test_starttls_on_implicit_listener_refused(self):
        c = self.client("smtps", implicit=True)
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("STARTTLS")
        self.assertEqual(code, 554)
        self.assertTrue(lines[0].startswith("554 5.5.1"), lines)
        self.assertEqual(self.send_message(c)[0], 250)

    def test_plaintext_on_implicit_listener(self):
        # A plaintext client on the TLS port gets no SMTP from the backend.
        c = self.client("smtps")
        c.send(b"EHLO x.example\r\n")
        self.assertTrue(c.closed(10))
        self.assertNotIn(b"250", c.buf)
        self.assertNotIn(b"backend.test", c.buf)
        self.assert_never_sent(b"EHLO")


class SaslResponse(ProxyCase):
    """The line after a backend's 334 is relayed as is (never parsed, never
    logged), unless it holds a CR or NUL, which base64 never does: to a
    backend that ends lines at a bare CR, the rest would be a command."""
    sink_args = ("--auth-ok", "--auth-challenge")

    def ready(self):
        c = self.ready_client()
        self.assertEqual(c.cmd("AUTH LOGIN")[0], 334)
        return c

    def test_response_relayed(self):
        c = self.ready()
        self.assertEqual(c.cmd("dXNlcg==")[0], 235)
        self.assertIn(b"dXNlcg==", self.sink.lines())

    def test_bare_cr_cancels_the_exchange(self):
        for junk in (b"dXNlcg==\rXCLIENT ADDR=127.0.0.1", b"dXNlcg==\0MAIL FROM:<x@y>"):
            c = self.ready()
            c.send(junk + b"\r\n")
            code, lines = c.reply()
            self.assertEqual(code, 501, lines)  # the backend's answer to "*"
            self.assertEqual(c.cmd("NOOP")[0], 250)  # the session goes on
            c.close()
        self.assertEqual(self.sink.lines().count(b"*"), 2)
        self.assert_never_sent(b"XCLIENT", b"dXNlcg==")

    def test_long_response_relayed(self):
        # RFC 4954 4: responses up to 12288 octets whatever the line limit
        # (2048 here): a GSSAPI ticket, an XOAUTH2 token
        token = b"QUJD" * 3072  # 12288 octets of base64
        c = self.ready()
        c.send(token + b"\r\n")
        self.assertEqual(c.reply()[0], 235)
        self.assertIn(token, self.sink.lines())
        # commands have their own limit again
        code, lines = c.cmd("NOOP " + "x" * 3000)
        self.assertEqual(lines, ["500 5.5.2 Error: line too long"])
        self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_response_over_the_limit_cancels(self):
        c = self.ready()
        c.send(b"QUJD" * 3072 + b"Q\r\n")
        self.assertEqual(c.reply()[0], 501)  # the backend's answer to "*"
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertIn(b"*", self.sink.lines())
        self.assert_never_sent(b"QUJDQUJD")


class RequireTls(ProxyCase):
    listeners = {"in": {"starttls": "require"}}

    def test_commands_before_tls(self):
        c = self.client()
        c.reply()
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "DATA",
                    "AUTH PLAIN AGEAYg=="):
            code, lines = c.cmd(cmd)
            self.assertEqual(lines, [MUST_STARTTLS], cmd)
        self.assert_never_sent(b"MAIL", b"RCPT", b"DATA", b"AUTH")
        c.starttls()
        c.cmd("EHLO x.example")
        self.assertEqual(self.send_message(c)[0], 250)
        t = parse_trace(self.one_message()[0])
        self.assertEqual((t["proto"], t["version"]), ("ESMTPS", "TLSv1.3"))

    def test_pipelined_envelope_before_tls(self):
        c = self.client()
        c.reply()
        c.send(b"EHLO x.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        for _ in range(3):
            self.assertEqual(c.reply()[1], [MUST_STARTTLS])
        # The would-be message lines are commands now; none may become mail.
        self.assert_never_sent(b"MAIL", b"RCPT", b"DATA")
        self.assertEqual(self.sink.messages(), [])


class RefusedCommands(ProxyCase):
    listeners = {"in": {}}

    def test_xclient_xforward_bdat(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        for cmd, want in (("XCLIENT ADDR=192.0.2.1 NAME=trusted.example", "550 5.7.0"),
                          ("XFORWARD ADDR=192.0.2.1", "550 5.7.0"),
                          ("xclient addr=192.0.2.1", "550 5.7.0")):
            code, lines = c.cmd(cmd)
            self.assertTrue(lines[0].startswith(want), (cmd, lines))
        c.starttls()
        c.cmd("EHLO x.example")
        self.assertTrue(c.cmd("XCLIENT ADDR=192.0.2.1")[1][0].startswith("550 5.7.0"))
        self.assertEqual(self.send_message(c)[0], 250)
        # BDAT (CHUNKING is never offered) ends the session: see BdatChunk
        code, lines = c.cmd("BDAT 10 LAST")
        self.assertTrue(lines[0].startswith("502 5.5.1"), lines)
        self.assertTrue(c.closed())
        self.assert_never_sent(b"XCLIENT", b"XFORWARD", b"BDAT")

    def test_too_many_errors_ends_the_session(self):
        # Postfix's smtpd_hard_error_limit: the 20th refusal is a 421 instead.
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"JUNK\r\n" * 25)
        for i in range(19):
            code, lines = c.reply()
            self.assertEqual(code, 500, (i, lines))
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.7.0 mx.example.test Error: too many errors"),
                        lines)
        self.assertTrue(c.closed())
        poll(lambda: self.proxy.log_lines("session"))
        f = log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["error"]), ("protocol", "too many errors"), f)
        self.assert_never_sent(b"JUNK")

    def test_overlong_line_then_normal_service(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("NOOP " + "x" * 5000)
        self.assertEqual(code, 500)
        self.assertTrue(lines[0].startswith("500 5.5.2"), lines)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        # the same inside TLS, in the envelope
        c.starttls()
        c.cmd("EHLO x.example")
        c.cmd("MAIL FROM:<a@example.test>")
        code, lines = c.cmd("RCPT TO:<" + "y" * 100000 + "@example.test>")
        self.assertEqual(code, 500)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertFalse(any(len(l) > 2100 for l in self.sink.lines()))

    def test_pipelining_replies_in_order(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<one@example.test>\r\n"
               b"XCLIENT ADDR=1.2.3.4\r\nRCPT TO:<two@example.test>\r\nNOOP\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(6)]
        self.assertEqual(codes, [250, 250, 550, 250, 250, 354])
        c.send(b"body\r\n.\r\nQUIT\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 221)
        self.assertEqual(split_trace(self.messages(1)[0])[1], b"body\r\n")

    def test_pipelined_session_in_one_segment_over_tls(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        c.send(b"EHLO x.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"RCPT TO:<c@example.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(5)], [250, 250, 250, 250, 354])
        c.send(BODY + b".\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<d@example.test>\r\n"
               b"DATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        c.send(b"second\r\n.\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 221])
        one, two = self.messages(2)
        self.assertEqual(split_trace(one)[1], BODY_UNSTUFFED)
        self.assertEqual(split_trace(two)[1], b"second\r\n")

    def test_escape_sequences_not_logged_raw(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO evil\x1b[31m\x07.example")
        c.cmd("MAIL FROM:<a\x1b[2J@example.test>")
        c.cmd("QUIT")
        proxy = self.proxy
        self.stop_proxy()
        log = proxy.log()
        self.assertNotIn("\x1b", log)
        self.assertNotIn("\x07", log)
        self.assertTrue(proxy.log_lines("session"), log)


# A BDAT chunk whose octets are commands (and a message) if read as lines.
CHUNK = (b"Subject: hi\r\n\r\nsome text\r\nRSET\r\nMAIL FROM:<ceo@bank.test>\r\n"
         b"RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged body\r\n"
         b".\r\nQUIT\r\n")
BDAT_502 = "502 5.5.1 Error: BDAT (CHUNKING) not supported, closing connection"


class BdatChunkCase:
    """BDAT with CHUNKING never offered (the proxy strips it from EHLO). The
    proxy does not follow BDAT's framing, so the octets behind the BDAT
    line are never read, let alone run as commands: the replies owed before
    it are relayed, then 502 5.5.1 (a 5xx fails the message, RFC 3030 2:
    the sender bounces it instead of retrying), and the session ends
    (result=protocol). A transaction with accepted recipients is logged as
    a refused message. Mixed into a TestCase with self.backend_lines() (what
    the backend or next hop received) and self.stored()."""

    def check_refused(self, c, log_lines, before=()):
        """After the BDAT line and its chunk went out: the replies owed
        before it (`before`, codes), then the 502, then EOF."""
        for code in before:
            self.assertEqual(c.reply()[0], code)
        code, lines = c.reply()
        self.assertTrue(lines[0].startswith("502 5.5.1 "), lines)
        closed = c.closed()
        self.assertEqual(c.buf, b"", "a reply after the BDAT's (its chunk was read)")
        self.assertTrue(closed)
        self.assertTrue(poll(lambda: log_lines("session")), "no session line")
        for needle in (b"ceo@bank.test", b"victim", b"BDAT", b"RSET", b"DATA", b"forged"):
            self.assertFalse([l for l in self.backend_lines() if needle in l],
                             (needle, self.backend_lines()))
        self.assertEqual(self.stored(), [])
        self.assertEqual(lines, [BDAT_502])
        f = log_fields(log_lines("session")[0])
        self.assertEqual((f["result"], f["error"]), ("protocol", "BDAT without CHUNKING"), f)


class BdatChunk(BdatChunkCase, ProxyCase):
    listeners = {"in": {}, "req": {"starttls": "require"}}

    def backend_lines(self):
        return [l.upper() for l in self.sink.lines()]

    def stored(self):
        return self.sink.messages()

    def test_chunk_is_never_read_as_commands(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        c.send(b"BDAT %d LAST\r\n" % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines)
        # the backend saw the envelope and then at most the proxy's QUIT
        # (read once: the QUIT may arrive between two reads)
        seen = self.sink.lines()
        self.assertEqual(seen[-3:-1] if seen[-1] == b"QUIT" else seen[-2:],
                         [b"MAIL FROM:<a@example.test>", b"RCPT TO:<b@example.test>"])
        m = [log_fields(l) for l in self.proxy.log_lines("message")]
        self.assertEqual([(x["from"], x["result"], x["reason"]) for x in m],
                         [("<a@example.test>", "refused", BDAT_502)], m)

    def test_replies_owed_before_the_bdat_come_first(self):
        # one write: MAIL and RCPT reach the backend, their replies reach
        # the client in order, then the 502; the chunk reaches nobody
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT %d\r\n"
               % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines, before=(250, 250))

    def test_big_chunk_written_before_reading_gets_the_502(self):
        # A client that writes the whole chunk (4 MB, more than any socket
        # buffer holds) before it reads, as Postfix does: the proxy reads
        # and drops the rest, so the client's write completes and it reads
        # the 502. The proxy closed with the chunk unread, the kernel sent a
        # reset, and the client saw "connection reset" (and would retry).
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        size = 4 * 1024 * 1024
        c.sock.sendall(b"BDAT %d LAST\r\n" % size + b"x" * size)
        code, lines = c.reply()
        self.assertEqual(lines, [BDAT_502])
        self.assertTrue(c.closed())
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")), "no session line")
        f = log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["result"], f["error"]), ("protocol", "BDAT without CHUNKING"), f)
        self.assertGreater(int(f["bytes_in"]), size)
        self.assertEqual(self.sink.messages(), [])

    def test_chunk_before_tls_on_a_require_listener(self):
        # BDAT is not one of the commands refused with 530 before TLS: its
        # chunk would then have been read as commands
        c = self.client("req")
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"BDAT %d LAST\r\n" % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines)  # the backend got none of it

    def test_bdat_without_a_transaction(self):
        # the chunk's QUIT is content too: no 221; no message to log
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"BDAT %d LAST\r\n" % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines)
        self.assertEqual(self.proxy.log_lines("message"), [])


class BdatChunkOutbound(BdatChunkCase, unittest.TestCase):
    """The same on an outbound listener (route = relay) to a next hop."""

    def setUp(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        self.sink = Sink(tmp)
        self.addCleanup(self.sink.stop)
        self.proxy = Proxy(tmp, {"out": {"mode": "outbound", "tls": "none",
                                         "route": "relay:127.0.0.1:%d" % self.sink.port}},
                           tls=False)
        self.addCleanup(self.proxy.stop)

    def backend_lines(self):
        return [l.upper() for l in self.sink.lines()]

    def stored(self):
        return self.sink.messages()

    def test_chunk_is_never_read_as_commands(self):
        c = Client(self.proxy.port("out"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO legacy.example")[0], 250)
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT %d LAST\r\n"
               % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines, before=(250, 250))
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])


class BdatChunkMx(BdatChunkCase, MxBase):
    """route = mx: the next hop holds the replayed MAIL and the RCPT when
    the BDAT comes; it gets nothing more (a QUIT at most)."""

    def test_chunk_is_never_read_as_commands(self):
        self.h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        c = self.legacy_client(port, 60)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@d1.example.test>")[0], 250)
        c.send(b"BDAT %d LAST\r\n" % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines)
        self.assertEqual([l.split(" tls=")[0] for l in self.h.commands()][-2:],
                         ["command MAIL FROM:<a@legacy.example>",
                          "command RCPT TO:<bob@d1.example.test>"])

    def test_bdat_before_any_next_hop(self):
        self.h = self.hop("127.0.0.11", "mxa")
        port = self.start_proxy()
        c = self.legacy_client(port, 60)
        self.assertEqual(c.cmd("MAIL FROM:<a@legacy.example>")[0], 250)
        c.send(b"BDAT %d LAST\r\n" % len(CHUNK) + CHUNK)
        self.check_refused(c, self.proxy.log_lines)
        self.assertEqual(self.h.commands(), [])

    def backend_lines(self):
        return [l.upper().encode() for l in self.h.commands()]

    def stored(self):
        return self.h.stored()


SMUGGLE_ENDINGS = [b"\n.\n", b"\r.\r\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\n.\r", b"\r\n.\r",
                   b"\r.\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]
SECOND = (b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
          b"Subject: smuggled\r\n\r\nsmuggled\r\n")


class Smuggling(ProxyCase):
    """Against a backend that ends DATA on any of the endings (like a
    vulnerable legacy server): the proxy must make sure it never does."""
    sink_args = ("--lenient-eod",)
    listeners = {"in": {}, "norm": {"bare_newlines": "normalize"}}

    def attempt(self, c, ending):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: first\r\n\r\nfirst" + ending + SECOND + b"\r\n.\r\n")
        return c.reply()

    def assert_nothing_smuggled(self):
        self.assert_never_sent(b"victim", b"evil@attacker")
        for m in self.sink.messages():
            self.assertFalse(m.startswith(b"Subject: smuggled") or m.startswith(b"smuggled"), m)
            self.assertFalse(split_trace(m)[1].startswith(b"Subject: smuggled"), m)

    def test_reject_mode(self):
        for ending in SMUGGLE_ENDINGS:
            with self.subTest(ending=ending):
                c = self.client()
                c.reply()
                c.cmd("EHLO x.example")
                code, lines = self.attempt(c, ending)
                self.assertEqual(code, 554, lines)
                self.assertTrue(lines[0].startswith("554 5.6.0"), lines)
                self.assertTrue(c.closed(), "connection left open after 554")
                c.close()
        # The backend lost each connection inside DATA: no partial message kept.
        def lost():
            return self.sink.lines().count(b"(connection lost in DATA)")
        poll(lambda: lost() == len(SMUGGLE_ENDINGS), 5)
        self.assertEqual(lost(), len(SMUGGLE_ENDINGS))
        self.assertEqual(self.sink.messages(), [])
        self.assert_nothing_smuggled()

    def test_reject_mode_inside_tls(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        c.cmd("EHLO x.example")
        code, lines = self.attempt(c, b"\n.\r\n")
        self.assertTrue(lines[0].startswith("554 5.6.0"), lines)
        # the backend lost the connection inside DATA: nothing kept, then or later
        self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines(), 5),
                        self.sink.lines())
        self.assertEqual(self.sink.messages(), [])
        self.assert_nothing_smuggled()

    def test_normalize_mode(self):
        for i, ending in enumerate(SMUGGLE_ENDINGS):
            with self.subTest(ending=ending):
                c = self.client("norm")
                c.reply()
                c.cmd("EHLO x.example")
                self.assertEqual(self.attempt(c, ending)[0], 250)
                msgs = self.messages(i + 1)
                trace, rest = split_trace(msgs[-1])
                self.assertTrue(rest.startswith(b"Subject: first\r\n\r\nfirst"), rest)
                # The would-be second transaction is content of the first message.
                self.assertIn(b"MAIL FROM:<evil@attacker.example>", rest)
                self.assertIn(b"smuggled", rest)
                # Every line end the backend got is CRLF.
                self.assertNotIn(b"\n", rest.replace(b"\r\n", b""))
                self.assertNotIn(b"\r", rest.replace(b"\r\n", b""))
                self.assertEqual(c.cmd("QUIT")[0], 221)
                c.close()
        self.assert_nothing_smuggled()

    def test_dots_are_content(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        body = b"Subject: dots\r\n\r\nx.\r\n...\r\n.. .\r\nend\r\n"
        self.assertEqual(self.attempt_raw(c, body)[0], 250)
        _, rest = split_trace(self.messages(1)[0])
        self.assertEqual(rest, b"Subject: dots\r\n\r\nx.\r\n..\r\n. .\r\nend\r\n")

    def test_nul_refused_or_deleted(self):
        # The lenient backend deletes NUL bytes, as some legacy servers do,
        # so "\r\n\0.\r\n" and "\r\n.\0\r\n" would end its DATA: reject
        # mode refuses NUL like a bare CR/LF, normalize mode deletes it and
        # keeps a dot that the deletion brings to a line start as content.
        body = b"Subject: nul\r\n\r\n\x00.\r\n.\x00\r\nend\r\n"
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = self.attempt_raw(c, body)
        self.assertTrue(lines[0].startswith("554 5.6.0"), lines)
        self.assertIn("NUL", lines[0])
        self.assertTrue(c.closed())
        c = self.client("norm")
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(self.attempt_raw(c, body)[0], 250)
        _, rest = split_trace(self.messages(1)[0])
        self.assertEqual(rest, b"Subject: nul\r\n\r\n.\r\n.\r\nend\r\n")

    def attempt_raw(self, c, body):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body + b".\r\n")
        return c.reply()


class RefusedMessageOutlivesBackendTimeout(ProxyCase):
    """A message the proxy refuses in the middle (a bare LF, or over
    max_message_size) is still read to its end, which can take longer than
    the backend's own DATA timeout (here 1 s; Postfix's smtpd_timeout is
    300 s). The backend is dropped at the refusal, so its timeout can no
    longer turn the client's 554/552 (a bounce) into a 421 (a retry, for
    days, of a message that can never pass)."""
    sink_args = ("--data-timeout", "1")
    listeners = {"in": {"max_message_size": "1000"}}

    def refused_slowly(self, first, reply):
        c = self.ready_client()
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>"):
            self.assertEqual(c.cmd(cmd)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(first)
        time.sleep(2)  # the rest comes after the backend's timeout
        c.send(b"the rest\r\n.\r\n")
        code, lines = c.reply()
        self.assertTrue(lines[0].startswith(reply), lines)
        c.close()

    def test_bare_lf_refusal_stands(self):
        self.refused_slowly(b"Subject: x\r\n\r\nbare\nLF\r\n", "554 5.6.0")
        self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines(), 5))
        self.assertNotIn(b"(timeout in DATA)", self.sink.lines())
        self.assertEqual(self.sink.messages(), [])

    def test_size_refusal_stands(self):
        self.refused_slowly(b"Subject: x\r\n\r\n" + (b"y" * 78 + b"\r\n") * 30, "552 5.3.4")
        self.assertTrue(poll(lambda: b"(connection lost in DATA)" in self.sink.lines(), 5))
        self.assertEqual(self.sink.messages(), [])

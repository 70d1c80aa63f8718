"""Outbound: the proxy originates TLS toward the next hop and never
downgrades where policy requires TLS.

Each scenario runs one scripted next hop (test/peers/nexthop.py) behind one
proxy with an outbound listener per TLS level, sends one message through
every level, and checks the outcome: delivered over TLS, delivered in
plaintext, or deferred with the expected enhanced code and nothing stored.
"""
import os
import signal
import shutil
import subprocess
import threading
import time
import unittest

from harness import (ASAN, CERTS, Client, NextHop, Process, Proxy, Sink, StreamingClient, Syscalls,
                     free_port, log_fields, poll, split_trace, tmpdir)

LEVELS = ("none", "may", "encrypt", "verify", "secure")
TLS, PLAIN = "tls", "plain"

# scenario: (nexthop mode, certificate, outcome per level)
SCENARIOS = {
    "good": ("good", "ecdsa", (PLAIN, TLS, TLS, TLS, TLS)),
    "starttls_stripped": ("strip", "ecdsa", (PLAIN, PLAIN, "4.7.4", "4.7.4", "4.7.4")),
    "starttls_454": ("refuse454", "ecdsa", (PLAIN, PLAIN, "4.7.4", "4.7.4", "4.7.4")),
    "starttls_502": ("refuse502", "ecdsa", (PLAIN, PLAIN, "4.7.4", "4.7.4", "4.7.4")),
    "starttls_421": ("refuse421", "ecdsa", (PLAIN, "4.", "4.", "4.", "4.")),
    "starttls_garbage": ("garbage", "ecdsa", (PLAIN, "4.", "4.", "4.", "4.")),
    "esmtp_hidden": ("helo-only", "ecdsa", (PLAIN, PLAIN, "4.7.4", "4.7.4", "4.7.4")),
    "injection_after_220": ("inject", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "fragment_after_220": ("fragment", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    # one byte is enough to stand in front of the first reply inside TLS
    "one_byte_after_220": ("fragment-1", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "fragment_late_after_220": ("fragment-late", "ecdsa",
                                (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "self_signed": ("good", "selfsigned", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "unknown_ca": ("good", "unknownca", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "wrong_name": ("good", "wrongname", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "expired": ("good", "expired", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "wildcard_trick": ("good", "wildcard", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "wildcard_trick_more": ("good", "wildcard2", (PLAIN, TLS, TLS, "4.7.5", "4.7.5")),
    "wildcard_left_label": ("good", "wildcardok", (PLAIN, TLS, TLS, TLS, TLS)),
    "tls10_only": ("tls10", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "tls11_only": ("tls11", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "closed_mid_handshake": ("drop-in-handshake", "ecdsa", (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
    "stalled_mid_handshake": ("stall-in-handshake", "ecdsa",
                              (PLAIN, PLAIN, "4.7.5", "4.7.5", "4.7.5")),
}


def attempt(port):
    """Sends one message; returns ("delivered", code) or ("refused", code, text)."""
    c = Client(port, timeout=15)
    try:
        code, lines = c.reply()
        if code != 220:
            return ("refused", code, lines[0])
        code, lines = c.cmd("EHLO legacy.example")
        if code == 502:
            code, lines = c.cmd("HELO legacy.example")  # as a real MTA falls back
        if code != 250:
            return ("refused", code, lines[0])
        assert "STARTTLS" not in " ".join(lines), lines
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>"):
            code, lines = c.cmd(cmd)
            if code != 250:
                return ("refused", code, lines[0])
        code, lines = c.cmd("DATA")
        if code != 354:
            return ("refused", code, lines[0])
        c.send(b"Subject: outbound\r\n\r\nbody\r\n.\r\n")
        try:
            code, lines = c.reply()
        except EOFError:
            return ("refused", 0, "closed after data")
        return ("delivered", code) if code == 250 else ("refused", code, lines[0])
    finally:
        c.close()


class Levels(unittest.TestCase):
    def run_scenario(self, name):
        mode, cert, outcomes = SCENARIOS[name]
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        hop = NextHop(tmp, mode, cert)
        self.addCleanup(hop.stop)
        listeners = {}
        for level in LEVELS:
            listeners[level] = {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop.port,
                                "tls": level, "servername": "mx.example.test",
                                "ca_file": os.path.join(CERTS, "ca.pem"),
                                "handshake_timeout": "2s"}  # a stalled handshake
        proxy = Proxy(tmp, listeners, tls=False)
        self.addCleanup(proxy.stop)
        for level, want in zip(LEVELS, outcomes):
            before = hop.stored()
            got = attempt(proxy.port(level))
            after = hop.stored()
            new = [f for f in after if f not in before]
            label = "%s/%s: %r" % (name, level, got)
            if want in (TLS, PLAIN):
                self.assertEqual(got[0], "delivered", label)
                self.assertEqual(len(new), 1, label)
                self.assertTrue(new[0].endswith("-%s.eml" % want), label + " " + new[0])
            else:
                self.assertEqual(got[0], "refused", label)
                self.assertTrue(400 <= got[1] < 500, label)
                self.assertIn(" " + want, got[2], label)
                self.assertEqual(new, [], label)  # nothing left the proxy in plaintext
        self.assertEqual(proxy.stop(), 0)
        log = proxy.log()
        self.assertIn("policy=", log)


for _name in SCENARIOS:
    setattr(Levels, "test_" + _name,
            lambda self, n=_name: self.run_scenario(n))


class Behaviour(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def proxy(self, hop_port, **keys):
        k = {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop_port, "tls": "verify",
             "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem")}
        k.update(keys)
        p = Proxy(self.tmp, {"out": k}, tls=False)
        self.addCleanup(p.stop)
        return p

    def test_testing_mode_delivers_and_logs(self):
        hop = NextHop(self.tmp, "good", "selfsigned")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, testing="yes")
        self.assertEqual(attempt(p.port("out"))[0], "delivered")
        self.assertEqual(len(hop.stored()), 1)
        self.assertEqual(p.stop(), 0)
        self.assertIn("decision=testing-override", p.log())
        self.assertIn("would_refuse=", p.log())

    def test_next_hop_failing_around_its_tls_session_defers(self):
        """The next hop says 554 instead of 220, refuses EHLO inside TLS, or
        closes with that EHLO unanswered: the legacy MTA is refused at its
        greeting with 421 4.4.2 naming what happened (it keeps its mail and
        retries), nothing is stored, and the session says why."""
        for mode, why, result in (
                ("greet-554", "refused the connection (554)", "next-hop-refused"),
                ("ehlo2-550", "rejected EHLO after TLS (550)", "next-hop-refused"),
                ("ehlo2-drop", "lost", "next-hop-lost")):
            hop = NextHop(self.tmp, mode, "ecdsa")
            self.addCleanup(hop.stop)
            p = self.proxy(hop.port)
            got = attempt(p.port("out"))
            self.assertEqual(got[:2], ("refused", 421), (mode, got))
            self.assertTrue(got[2].startswith("421 4.4.2 "), (mode, got))
            self.assertIn(why, got[2], (mode, got))
            self.assertEqual(hop.stored(), [], mode)
            self.assertEqual(p.stop(), 0)
            sess = [l for l in p.log().splitlines() if " session " in l]
            self.assertEqual(len(sess), 1, p.log())
            self.assertIn("result=%s" % result, sess[0])

    def test_next_hop_reading_slowly_holds_the_legacy_mta_back(self):
        """slow-data: the next hop reads nothing of the message for 2 s. The
        proxy buffers at most its write queue (the TLS records for the next
        hop), stops reading the legacy MTA meanwhile, and goes on when the
        next hop reads: the 16 MB arrive whole, over TLS, and the proxy's
        memory does not grow with them."""
        hop = NextHop(self.tmp, "slow-data", "ecdsa")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        c = Client(p.port("out"), timeout=60)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO legacy.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        line = b"y" * 78 + b"\r\n"
        body = line * (16 * 1024 * 1024 // len(line))

        def rss_kb():
            with open("/proc/%d/status" % p.pid) as f:
                return int([l for l in f if l.startswith("VmRSS:")][0].split()[1])

        before = rss_kb()
        sent = []
        t = threading.Thread(target=lambda: (c.sock.sendall(body + b".\r\n"), sent.append(1)),
                             daemon=True)
        t.start()
        time.sleep(1.5)  # the next hop reads nothing yet
        self.assertFalse(sent, "16 MB went into a next hop that reads nothing")
        grown = rss_kb() - before
        self.assertLess(grown, 16384 if ASAN else 4096,
                        "the proxy buffered %d kB for the stalled next hop" % grown)
        t.join(40)
        self.assertTrue(sent)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(hop.stored(), ["0001-tls.eml"])
        with open(os.path.join(hop.maildir, "0001-tls.eml"), "rb") as f:
            got = f.read()
        self.assertTrue(got.endswith(body), "the message did not arrive whole")

    def test_next_hop_lost_while_the_legacy_mta_is_still_writing(self):
        """data-mid-close: the next hop closes after the message's first
        line while the legacy MTA is still writing the rest (8 MB): it
        reads the 421, then the end of the stream, and its writes go on
        meanwhile (the proxy reads and drops them: a lingering close). The
        proxy closed with its bytes unread, the kernel sent a reset, the
        legacy MTA's writes failed, and one on Windows (Exchange) drops
        what it has not read at a reset: it logged the reset, not the 421."""
        hop = NextHop(self.tmp, "data-mid-close")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        c = StreamingClient(p.port("out"), timeout=30)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        for cmd, code in (("EHLO legacy.example", 250), ("MAIL FROM:<a@example.test>", 250),
                          ("RCPT TO:<b@example.test>", 250), ("DATA", 354)):
            self.assertEqual(c.cmd(cmd)[0], code, cmd)
        r = c.stream((b"y" * 78 + b"\r\n") * 800, 8 * 1024 * 1024)
        self.assertIsNone(r["write_error"], r)
        self.assertEqual(r["end"], "eof", r)
        self.assertEqual(r["got"], b"421 4.4.2 mx.example.test Error: connection to mail server "
                                   b"lost\r\n", r)
        self.assertGreaterEqual(r["written"], 8 * 1024 * 1024, r)
        c.close()
        self.assertTrue(poll(lambda: p.log_lines("session")), p.log()[-3000:])
        f = log_fields(p.log_lines("session")[0])
        self.assertEqual(f["result"], "backend-lost", f)
        self.assertEqual(hop.stored(), [])
        self.assertEqual(p.stop(), 0, p.log()[-3000:])

    def test_testing_mode_still_refuses_an_injection(self):
        """`testing = yes` retries a failed handshake in plaintext, but bytes
        injected behind the 220 to STARTTLS leave no plaintext way: refused
        (as on route = mx), never delivered, and no testing override logged."""
        for mode in ("inject", "fragment"):
            hop = NextHop(self.tmp, mode, "ecdsa")
            self.addCleanup(hop.stop)
            p = self.proxy(hop.port, testing="yes", tls="encrypt")
            got = attempt(p.port("out"))
            self.assertEqual(got[0], "refused", (mode, got))
            self.assertEqual(got[1], 421, (mode, got))
            self.assertIn(" 4.7.5 ", got[2], (mode, got))
            self.assertEqual(hop.stored(), [], mode)
            self.assertEqual(p.stop(), 0)
            self.assertNotIn("testing-override", p.log(), mode)
            self.assertNotIn("retry=plaintext", p.log(), mode)
            self.assertIn("sent data after its STARTTLS response", p.log(), mode)

    def test_pipelined_group_is_one_tls_record(self):
        """The legacy MTA's pipelined MAIL, RCPTs and DATA (one read) leave
        for the next hop in one write holding one TLS record, not one write
        per command and one record per line and CRLF."""
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        with Client(p.port("out")) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO legacy.example.test")[0], 250)
            trace = Syscalls(self.tmp, p.pid)
            try:
                c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                       b"RCPT TO:<c@example.test>\r\nDATA\r\n")
                self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
            finally:
                calls = trace.stop()
            records = [w for w in calls if w.startswith(b"\x17\x03\x03")]  # application data
            self.assertEqual(len(records), 1, calls)
            self.assertEqual(len(records[0]), 5 + int.from_bytes(records[0][3:5], "big"), records)
            c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
        self.assertEqual(len(hop.stored()), 1)

    def test_finished_and_ehlo_in_one_write(self):
        """The proxy's last handshake flight to the next hop (its Finished)
        and the EHLO that follows leave in one write: one segment, and one
        wakeup of the next hop, where they were two."""
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        trace = Syscalls(self.tmp, p.pid)
        try:
            with Client(p.port("out")) as c:  # relay mode: TLS with the next hop before the 220
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            calls = trace.stop()
        hello = [i for i, w in enumerate(calls) if w[:1] == b"\x16" and w[5:6] == b"\x01"]
        self.assertEqual(len(hello), 1, calls)

        def record_types(w):
            types = []
            while len(w) >= 5:
                types.append(w[0])
                w = w[5 + int.from_bytes(w[3:5], "big"):]
            self.assertEqual(w, b"", "a write ends inside a record")
            return types

        # the next write: [ChangeCipherSpec,] Finished and EHLO, both sealed
        # (application data records in TLS 1.3)
        self.assertEqual([t for t in record_types(calls[hello[0] + 1]) if t != 0x14], [0x17, 0x17])

    def test_on_failure_reject_bounces(self):
        hop = NextHop(self.tmp, "strip")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, on_failure="reject")
        got = attempt(p.port("out"))
        self.assertEqual(got[:2], ("refused", 554))
        self.assertIn("5.7.4 ", got[2])
        self.assertIn("TLS is required, but was not offered", got[2])

    def test_drop_after_dot_never_250(self):
        hop = NextHop(self.tmp, "drop-after-dot")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        got = attempt(p.port("out"))
        self.assertEqual(got[0], "refused")
        self.assertTrue(got[1] == 0 or 400 <= got[1] < 500, got)

    def test_not_an_open_relay(self):
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, allow="10.0.0.0/8")
        c = Client(p.port("out"))
        code, lines = c.reply()
        self.assertEqual(code, 554)
        self.assertIn("5.7.1", lines[0])
        self.assertTrue(c.closed())
        c.close()
        self.assertEqual(hop.stored(), [])

    def test_sni_sent_is_servername(self):
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        # our own inbound listener as next hop records the SNI it saw
        sink = Sink(self.tmp)
        self.addCleanup(sink.stop)
        inbound = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port}})
        self.addCleanup(inbound.stop)
        p = self.proxy(inbound.port("in"))
        self.assertEqual(attempt(p.port("out"))[0], "delivered")
        self.assertEqual(inbound.stop(), 0)
        self.assertIn("sni=mx.example.test", inbound.log())


    def test_relay_by_address_verifies_its_ip_san(self):
        """route = relay:127.0.0.1:PORT without servername: the address is
        the name to verify (its default), matched against the certificate's
        iPAddress SANs (RFC 6125 IP-ID); a DNS-only certificate was the only
        kind it could be checked against, so tls = verify deferred every
        message. No SNI is sent for an address (RFC 6066 3)."""
        sink = Sink(self.tmp)
        self.addCleanup(sink.stop)
        inbound = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port}})
        self.addCleanup(inbound.stop)
        p = Proxy(self.tmp, {"out": {"mode": "outbound", "tls": "verify",
                                     "route": "relay:127.0.0.1:%d" % inbound.port("in"),
                                     "ca_file": os.path.join(CERTS, "ca.pem")}}, tls=False)
        self.addCleanup(p.stop)
        self.assertEqual(attempt(p.port("out")), ("delivered", 250))
        self.assertEqual(p.stop(), 0)
        self.assertIn("verify=ok", p.log())
        self.assertEqual(inbound.stop(), 0)
        self.assertNotIn("sni=127.0.0.1", inbound.log())

    def test_may_retries_once_in_plaintext_and_logs_it(self):
        hop = NextHop(self.tmp, "tls10")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, tls="may")
        self.assertEqual(attempt(p.port("out")), ("delivered", 250))
        self.assertEqual([f[-10:] for f in hop.stored()], ["-plain.eml"])
        self.assertEqual(p.stop(), 0)
        log = p.log()
        self.assertEqual(log.count("retry=plaintext"), 1, log)
        self.assertRegex(log, r"policy=may .*decision=plaintext")

    def test_shutdown_while_securing_the_next_hop_says_421(self):
        """SIGTERM while the next hop's handshake is under way: the legacy
        MTA, which has no greeting yet, gets 421 4.3.2 instead of a bare close."""
        hop = NextHop(self.tmp, "stall-in-handshake")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, tls="encrypt")
        c = Client(p.port("out"))
        self.addCleanup(c.close)
        self.assertTrue(poll(lambda: any(l.startswith("hello ") for l in
                                         hop.proc.log().splitlines())))
        os.kill(p.pid, signal.SIGTERM)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.3.2 "), lines)
        self.assertEqual(p.stop(), 0)  # already stopping: its exit code

    def auth_session(self, p, level, offered, refusal=None):
        """A legacy session that asks to authenticate: AUTH is offered in the
        EHLO reply and relayed (235) when `offered`, else neither offered nor
        relayed (538 5.7.11, saying `refusal` if given)."""
        c = Client(p.port("out"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd("EHLO legacy.example")
        self.assertEqual(code, 250, lines)
        kws = [l[4:].split(" ")[0].upper() for l in lines[1:]]
        self.assertEqual("AUTH" in kws, offered, (level, lines))
        code, lines = c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0")
        if offered:
            self.assertEqual(code, 235, (level, lines))
        else:
            self.assertEqual(code, 538, (level, lines))
            self.assertTrue(lines[0].startswith("538 5.7.11 "), lines)
            if refusal:
                self.assertIn(refusal, lines[0])
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()

    def test_auth_never_in_plaintext_under_may(self):
        """`may` and a submission server whose STARTTLS was stripped: the mail
        may go in plaintext, the legacy MTA's password may not. AUTH is not
        offered, and refused with 538 5.7.11; under tls = none (plaintext by
        the administrator's choice) it is relayed as before."""
        hop = NextHop(self.tmp, "strip-auth")
        self.addCleanup(hop.stop)
        for level, offered in (("may", False), ("none", True)):
            p = self.proxy(hop.port, tls=level)
            self.auth_session(p, level, offered)
            self.assertEqual(p.stop(), 0)
        auths = [l for l in hop.proc.log().splitlines() if l.startswith("auth ")]
        self.assertEqual(auths, ["auth tls=False"])  # the tls = none session's only

    def test_auth_never_to_an_unverified_next_hop_under_testing(self):
        """`verify` or `secure` with `testing = yes`, and a submission server
        whose certificate does not verify (self-signed: whoever intercepts
        the connection can present one): the mail goes on, as testing asks,
        but the legacy MTA's password does not. AUTH is not offered and is
        refused with 538 5.7.11, as when the next hop is reached in
        plaintext; under `encrypt` (verification not asked for) AUTH is
        relayed as before."""
        hop = NextHop(self.tmp, "auth", "selfsigned")
        self.addCleanup(hop.stop)
        for level, offered in (("verify", False), ("secure", False), ("encrypt", True)):
            p = self.proxy(hop.port, tls=level, testing="yes")
            self.auth_session(p, level, offered, refusal="not verified")
            self.assertEqual(p.stop(), 0)
            self.assertEqual("decision=testing-override" in p.log(), not offered, level)
        auths = [l for l in hop.proc.log().splitlines() if l.startswith("auth ")]
        self.assertEqual(auths, ["auth tls=True"])  # the encrypt session's only

    def test_auth_relayed_to_submission_server_over_tls(self):
        """The legacy MTA authenticates to a provider's submission server
        through the proxy: it sees AUTH (only offered there after TLS), not
        STARTTLS, CHUNKING or XCLIENT, and the AUTH payload is never logged."""
        hop = NextHop(self.tmp, "auth")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port, tls="secure")
        c = Client(p.port("out"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd("EHLO legacy.example")
        self.assertEqual(code, 250)
        kws = [l[4:].split(" ")[0].upper() for l in lines[1:]]
        self.assertIn("AUTH", kws)
        for gone in ("STARTTLS", "CHUNKING", "XCLIENT"):
            self.assertNotIn(gone, kws)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 530)  # the hop's own rule
        self.assertEqual(c.cmd("AUTH PLAIN AHVzZXIAd3Jvbmc=")[0], 535)
        self.assertEqual(c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0")[0], 235)
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>"):
            self.assertEqual(c.cmd(cmd)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: submitted\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual([f[-13:] for f in hop.stored()], ["-tls-auth.eml"])
        self.assertEqual(p.stop(), 0)
        log = p.log()
        self.assertRegex(log, r"policy=secure tls=TLSv1\.3 .*verify=ok decision=tls")
        for secret in ("AHVzZXIAc2VjcmV0", "AHVzZXIAd3Jvbmc", "secret"):
            self.assertNotIn(secret, log)

    def hop_hellos(self, hop):
        """The EHLO and HELO lines the next hop received, in order."""
        return [l[len("hello "):] for l in hop.proc.log().splitlines() if l.startswith("hello ")]

    def test_legacy_ehlo_answered_with_the_next_hops_reply(self):
        """The legacy MTA's first EHLO is answered with the next hop's reply
        to the proxy's own EHLO after TLS: the next hop sees the proxy's name
        only (never the legacy host's internal one) and no second EHLO; the
        legacy MTA still sees the next hop's capabilities. Another command
        first, and its EHLO goes to the next hop as before; HELO always
        does."""
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)

        def session(first, helo):
            c = Client(p.port("out"))
            try:
                self.assertEqual(c.reply()[0], 220)
                if first:
                    self.assertEqual(c.cmd(first)[0], 250)
                code, lines = c.cmd(helo)
                self.assertEqual(code, 250, lines)
                for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>"):
                    self.assertEqual(c.cmd(cmd)[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                c.send(b"Subject: ehlo\r\n\r\nbody\r\n.\r\n")
                self.assertEqual(c.reply()[0], 250)
                self.assertEqual(c.cmd("QUIT")[0], 221)
                return lines
            finally:
                c.close()

        lines = session(None, "EHLO exchange01.corp.local")
        self.assertEqual(lines[0], "250-nexthop.example.test")
        kws = [l[4:].split(" ")[0] for l in lines[1:]]
        self.assertEqual(kws, ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"],
                         lines)
        self.assertTrue(poll(lambda: len(hop.stored()) == 1))
        self.assertEqual(self.hop_hellos(hop), ["EHLO mx.example.test tls=False",
                                                  "EHLO mx.example.test tls=True"])
        # after another command (a NOOP, relayed), the EHLO is relayed too
        session("NOOP", "EHLO exchange01.corp.local")
        session(None, "HELO exchange01.corp.local")
        self.assertTrue(poll(lambda: len(hop.stored()) == 3))
        self.assertEqual(self.hop_hellos(hop)[2:], [
            "EHLO mx.example.test tls=False", "EHLO mx.example.test tls=True",
            "EHLO exchange01.corp.local tls=True",
            "EHLO mx.example.test tls=False", "EHLO mx.example.test tls=True",
            "HELO exchange01.corp.local tls=True"])
        self.assertEqual(p.stop(), 0)
        self.assertIn("helo=exchange01.corp.local", p.log())

    def test_bare_lf_in_data_never_reaches_the_next_hop(self):
        hop = NextHop(self.tmp, "good")
        self.addCleanup(hop.stop)
        p = self.proxy(hop.port)
        c = Client(p.port("out"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        for cmd in ("EHLO legacy.example", "MAIL FROM:<a@example.test>",
                    "RCPT TO:<b@example.test>"):
            self.assertEqual(c.cmd(cmd)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        # a smuggling attempt: a lenient next hop would end the message at
        # "\n.\r\n" and run the MAIL behind it
        c.send(b"Subject: smuggle\r\n\r\nbody\n.\r\nMAIL FROM:<evil@example.test>\r\n"
               b"RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: evil\r\n\r\nx\r\n.\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 554, lines)
        self.assertIn("5.6.0", lines[0])
        time.sleep(0.5)
        self.assertEqual(hop.stored(), [])  # neither the message nor the smuggled one

    def test_silent_next_hop_is_a_timeout_not_a_hang(self):
        import socket
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody ever greets
        self.addCleanup(silent.close)
        p = self.proxy(silent.getsockname()[1], greeting_timeout="1s")
        started = time.time()
        got = attempt(p.port("out"))
        self.assertEqual(got[:2], ("refused", 421), got)
        self.assertIn("4.4.2", got[2])
        self.assertLess(time.time() - started, 10)


class ConnectionCache(unittest.TestCase):
    """connection_cache_time: after the legacy MTA's QUIT, a clean TLS
    connection to the next hop waits for the next session, which checks it
    with RSET and goes on without connect, EHLO, STARTTLS or handshake. Never
    a connection that carried AUTH or the legacy MTA's own EHLO, never one
    the next hop closed, and never a lost session when reuse fails."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start(self, mode="good", cert="ecdsa", **keys):
        self.hop = NextHop(self.tmp, mode, cert)
        self.addCleanup(self.hop.stop)
        k = {"mode": "outbound", "route": "relay:127.0.0.1:%d" % self.hop.port, "tls": "verify",
             "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem"),
             "connection_cache_time": "60s"}
        k.update(keys)
        # one worker: every session finds what the one before it parked
        self.mport = free_port()
        self.p = Proxy(self.tmp, {"out": k}, tls=False,
                       proxy_extra={"workers": "1", "metrics": "127.0.0.1:%d" % self.mport})
        self.addCleanup(self.p.stop)

    def cache_events(self):
        """{event: n} of stp_connection_cache_total, from /metrics."""
        text = subprocess.run(["curl", "-s", "-m", "10", "http://127.0.0.1:%d/metrics" % self.mport],
                              stdout=subprocess.PIPE, check=True).stdout.decode()
        got = {}
        for l in text.splitlines():
            if l.startswith('stp_connection_cache_total{listener="out",event="'):
                got[l.split('event="')[1].split('"')[0]] = int(float(l.rsplit(" ", 1)[1]))
        return got

    def session(self, auth=None, before_ehlo=None, quit=True, expect_mail=250,
                pipelined_quit=False):
        """One message; returns the EHLO reply's lines."""
        c = Client(self.p.port("out"))
        try:
            self.assertEqual(c.reply()[0], 220)
            if before_ehlo:
                self.assertEqual(c.cmd(before_ehlo)[0], 250)
            code, lines = c.cmd("EHLO exchange01.corp.local")
            self.assertEqual(code, 250, lines)
            if auth:
                self.assertEqual(c.cmd(auth)[0], 235)
            code, mlines = c.cmd("MAIL FROM:<a@example.test>")
            self.assertEqual(code, expect_mail, mlines)
            if code != 250:
                return lines
            self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            if pipelined_quit:  # as Postfix does: QUIT right behind the final dot
                c.send(b"Subject: cached\r\n\r\nbody\r\n.\r\nQUIT\r\n")
                self.assertEqual(c.reply()[0], 250)
                self.assertEqual(c.reply()[0], 221)
                return lines
            c.send(b"Subject: cached\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            if quit:
                self.assertEqual(c.cmd("QUIT")[0], 221)
            return lines
        finally:
            c.close()

    def hop_log(self, prefix):
        return [l for l in self.hop.proc.log().splitlines() if l.startswith(prefix)]

    def connections(self):
        """TCP connections the next hop saw (each begins with the proxy's EHLO)."""
        return len([l for l in self.hop_log("hello ") if l.endswith("tls=False")])

    def test_next_session_reuses_the_tls_connection(self):
        self.start()
        first = self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 1))
        second = self.session()
        third = self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 3))
        self.assertEqual(self.hop.stored(), ["0001-tls.eml", "0002-tls.eml", "0003-tls.eml"])
        self.assertEqual(first, second)  # the legacy MTA sees the same capabilities
        self.assertEqual(first, third)
        self.assertEqual(self.connections(), 1)
        self.assertEqual(len(self.hop_log("hello ")), 2)  # the proxy's EHLO, before and in TLS
        cmds = [l.split(" tls=")[0] for l in self.hop_log("command ")]
        self.assertEqual(cmds, ["command MAIL FROM:<a@example.test>", "command RCPT TO:<b@example.test>",
                                "command RSET", "command MAIL FROM:<a@example.test>",
                                "command RCPT TO:<b@example.test>",
                                "command RSET", "command MAIL FROM:<a@example.test>",
                                "command RCPT TO:<b@example.test>"])
        self.assertTrue(all(l.endswith("tls=True") for l in self.hop_log("command ")))
        self.assertEqual(self.hop_log("bye "), [])  # parked, not closed
        self.assertEqual(self.cache_events(), {"parked": 3, "reused": 2})
        # a stop says QUIT on the parked connection and exits cleanly
        self.assertEqual(self.p.stop(), 0)
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        log = self.p.log()
        self.assertEqual(log.count("connection=reused"), 2, log)
        sessions = self.p.log_lines("session")
        self.assertEqual(len(sessions), 3)
        for l in sessions:  # every session says how its mail left
            self.assertIn("tls=TLSv1.3", l)
            self.assertIn("verify=ok", l)
            self.assertIn("decision=tls", l)
            self.assertIn("result=ok", l)

    def test_more_behind_the_last_reply_is_never_parked(self):
        """The next hop answers the final dot and says 421 in the same
        segment: the connection is not parked (the next session connects
        anew), though the legacy MTA's QUIT came right behind the dot."""
        self.start(mode="dot-421-behind")
        self.session(pipelined_quit=True)
        self.session(pipelined_quit=True)
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertNotIn("parked", self.cache_events())

    def test_quit_pipelined_behind_the_dot_still_parks(self):
        """A pipelining legacy MTA sends QUIT in the same write as the final
        dot: the proxy answers it after relaying the dot's reply, and the
        connection is still parked for the next session."""
        self.start()
        self.session(pipelined_quit=True)
        self.session(pipelined_quit=True)
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 3))
        self.assertEqual(self.connections(), 1)
        self.assertEqual(self.hop_log("bye "), [])
        self.assertEqual(self.cache_events(), {"parked": 3, "reused": 2})

    def test_idle_connection_gets_quit_when_its_time_is_up(self):
        self.start(connection_cache_time="300ms")
        self.session()
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=5))
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertNotIn("connection=reused", self.p.log())

    def test_reuse_time_caps_how_long_a_connection_is_kept(self):
        """connection_reuse_time = 1s: a connection older than that is not
        kept, whatever connection_cache_time (60s) says."""
        self.start(connection_reuse_time="1s")
        self.session()
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=5))
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertNotIn("reused", self.cache_events())

    def test_reuse_count_limits_the_takeovers(self):
        """connection_reuse_count = 1: a connection serves its first session
        and one more, then gets QUIT; the third session connects anew."""
        self.start(connection_reuse_count="1")
        for _ in range(3):
            self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 3))
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=5))
        self.assertEqual(self.connections(), 2)
        self.assertEqual(self.cache_events(), {"parked": 2, "reused": 1})

    def test_next_hop_closing_a_parked_connection(self):
        """idle-421: 0.3 s after each message the next hop says 421 and
        closes; the parked connection is dropped and the next session
        connects anew."""
        self.start("idle-421")
        self.session()
        time.sleep(0.8)
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertNotIn("connection=reused", self.p.log())
        self.assertEqual(self.p.stop(), 0)

    def assert_reuse_fails_once(self, mode, reason):
        """Two sessions against a next hop in `mode`: the second finds the
        parked connection unusable (`reason`), connects anew, and both
        messages arrive, every session ending ok."""
        self.start(mode)
        self.session()
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertEqual(len(self.hop_log(mode)), 1)
        self.assertEqual(self.cache_events(), {"parked": 2, "reuse_failed": 1})
        self.assertEqual(self.p.stop(), 0)
        self.assertIn('connection=reuse-failed reason="%s"' % reason, self.p.log())
        for l in self.p.log_lines("session"):
            self.assertIn("result=ok", l)

    def test_reuse_refused_connects_anew_without_losing_the_session(self):
        """rset-421: the parked connection answers the reuse RSET with 421
        (the next hop timed it out just then): the legacy MTA never sees it,
        the session goes on over a new connection."""
        self.assert_reuse_fails_once("rset-421", "RSET answered 421")

    def test_more_behind_the_reset_reply_connects_anew(self):
        """rset-extra: the parked connection answers the reuse RSET with a
        second, unasked reply behind it: it is out of step with its replies
        and is given up (as one that refuses RSET), the legacy MTA never sees
        it and the session goes on over a new connection."""
        self.start("rset-extra")
        self.session()
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertEqual(len(self.hop_log("rset-extra")), 1)
        self.assertEqual(self.cache_events(), {"parked": 2, "reuse_failed": 1})
        self.assertEqual(self.p.stop(), 0)
        self.assertIn('connection=reuse-failed reason="RSET answered 250 with more behind it"',
                      self.p.log())

    def test_connection_whose_rset_was_refused_is_never_parked(self):
        """rset-502: the next hop refuses the legacy MTA's RSET (relayed as
        it is) and keeps its transaction open: the connection's state is
        unknown, so it is not parked but gets QUIT, and the next session
        connects anew. It was parked, and the next session found it only to
        see its RSET check fail (reuse_failed)."""
        self.start("rset-502")
        c = Client(self.p.port("out"))
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO exchange01.corp.local")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(c.cmd("RSET"), (502, ["502 5.5.2 Error: command not recognized"]))
            self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            c.close()
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3),
                        self.hop.proc.log())
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 1))
        self.assertEqual(self.connections(), 2)
        self.assertEqual(len(self.hop_log("rset-502")), 1)
        self.assertEqual(self.cache_events(), {"parked": 1})
        self.assertEqual(self.p.stop(), 0)

    def test_connection_made_before_a_reload_is_never_reused_after_it(self):
        """A session whose next hop connection was made under tls = may (a
        certificate that does not verify) ends after a reload to tls =
        verify: its connection is not parked, so the next session, under
        verify, never inherits an unverified one and is refused (4.7.5)."""
        import signal
        self.start(cert="selfsigned", tls="may")
        c = Client(self.p.port("out"))
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO exchange01.corp.local")[0], 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: cached\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            with open(self.p.ini) as f:
                text = f.read()
            self.assertIn("\ntls = may\n", text)
            with open(self.p.ini, "w") as f:
                f.write(text.replace("\ntls = may\n", "\ntls = verify\n"))
            os.kill(self.p.pid, signal.SIGHUP)
            self.assertTrue(poll(lambda: " reload result=ok" in self.p.log()), self.p.log())
            self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            c.close()
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        got = attempt(self.p.port("out"))
        self.assertEqual(got[0], "refused", got)
        self.assertIn(" 4.7.5", got[2], got)
        self.assertEqual(self.hop.stored(), ["0001-tls.eml"])
        self.assertNotIn("connection=reused", self.p.log())
        self.assertEqual(self.p.stop(), 0)

    def test_next_hop_closing_at_reuse_connects_anew(self):
        """rset-close: the parked connection closes when the reuse RSET
        arrives (the next hop's idle timeout, just then): the session goes
        on over a new connection, the legacy MTA never sees it."""
        self.assert_reuse_fails_once("rset-close", "connection closed")

    def test_silent_next_hop_at_reuse_connects_anew(self):
        """rset-silent: the parked connection never answers the reuse RSET;
        after connect_timeout (not the 5 minutes of command_timeout) the
        session goes on over a new connection."""
        self.start("rset-silent", connect_timeout="1s")
        self.session()
        started = time.time()
        self.session()
        self.assertLess(time.time() - started, 8)
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 2))
        self.assertEqual(self.connections(), 2)
        self.assertEqual(self.p.stop(), 0)
        self.assertIn('connection=reuse-failed reason="no reply to RSET"', self.p.log())

    def test_authenticated_connection_is_never_parked(self):
        """A connection the legacy MTA authenticated on carries its
        credentials: the next session must not inherit them."""
        self.start("auth")
        self.session(auth="AUTH PLAIN AHVzZXIAc2VjcmV0")
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        self.session(expect_mail=530)  # no AUTH: a new connection, and the next hop says so
        self.assertEqual(self.connections(), 2)
        self.assertEqual(self.hop.stored(), ["0001-tls-auth.eml"])

    def test_legacy_ehlo_relayed_is_never_parked(self):
        """A NOOP first makes the legacy MTA's EHLO go to the next hop: the
        connection then knows the legacy host's name and is not handed on."""
        self.start()
        self.session(before_ehlo="NOOP")
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        self.session()
        self.session()
        self.assertTrue(poll(lambda: len(self.hop.stored()) == 3))
        self.assertEqual(self.connections(), 2)  # the second connection served two sessions
        self.assertEqual(self.p.log().count("connection=reused"), 1)

    def test_session_without_quit_is_not_parked(self):
        """A legacy MTA that hangs up without QUIT: the connection is closed
        as before (QUIT to the next hop), not parked."""
        self.start()
        self.session(quit=False)
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        self.session()
        self.assertEqual(self.connections(), 2)

    def test_testing_override_is_never_parked(self):
        """testing = yes lets a session go on where policy would refuse (a
        certificate that does not verify): each such session is decided and
        logged on its own connection, never inherited."""
        self.start(cert="selfsigned", testing="yes")
        self.session()
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        self.session()
        self.assertEqual(self.connections(), 2)
        self.assertEqual(self.p.stop(), 0)
        # the policy, next_hop and session lines, for each session
        self.assertEqual(self.p.log().count("decision=testing-override"), 6)

    def test_reload_lets_parked_connections_go(self):
        """Parked connections were made under the configuration of their
        time: a reload says QUIT on them."""
        import signal
        self.start()
        self.session()
        self.assertEqual(self.hop_log("bye "), [])
        os.kill(self.p.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: self.hop_log("bye ") == ["bye tls=True"], timeout=3))
        self.session()
        self.assertEqual(self.connections(), 2)
        self.assertEqual(self.p.stop(), 0)


class Chain(unittest.TestCase):
    """legacy client -> outbound (verify) -> inbound (STARTTLS) -> recording backend."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.inbound = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % self.sink.port}})
        self.addCleanup(self.inbound.stop)
        self.out = Proxy(self.tmp, {"out": {
            "mode": "outbound", "route": "relay:127.0.0.1:%d" % self.inbound.port("in"),
            "tls": "secure", "servername": "mx.example.test",
            "ca_file": os.path.join(CERTS, "ca.pem")}}, tls=False)
        self.addCleanup(self.out.stop)

    def test_swaks_through_both(self):
        out = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.out.port("out"),
                              "--to", "b@example.test", "--from", "a@example.test",
                              "--body", "chained body"], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout.decode())
        msgs = poll(self.sink.messages)
        self.assertEqual(len(msgs), 1)
        trace, rest = split_trace(msgs[0])
        self.assertIn("with ESMTPS", trace)  # the outbound -> inbound hop was TLS
        self.assertIn(b"chained body", rest)

    def test_smtp_source_burst(self):
        out = subprocess.run(["smtp-source", "-s", "5", "-m", "20", "-c", "-f", "a@example.test",
                              "-t", "b@example.test", "127.0.0.1:%d" % self.out.port("out")],
                             capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        msgs = poll(lambda: len(self.sink.messages()) >= 20 and self.sink.messages(), timeout=30)
        self.assertEqual(len(msgs), 20)
        for m in msgs:
            self.assertIn("using TLSv1.3", split_trace(m)[0])


class NginxNextHop(unittest.TestCase):
    """nginx's mail proxy with `starttls only` as the next hop, relaying to a
    recording backend: the proxy must secure it before the legacy MTA speaks."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        module = "/usr/lib/nginx/modules/ngx_mail_module.so"
        if not (os.path.exists("/usr/sbin/nginx") and os.path.exists(module)):
            self.fail("nginx with the mail module is missing (deploy/install-deps.sh installs it)")
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.port, auth = free_port(), free_port()
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
load_module %(module)s;
user root;
worker_processes 1;
daemon off;
master_process off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log info;
events {}
http {
    access_log off;
    client_body_temp_path %(tmp)s; proxy_temp_path %(tmp)s; fastcgi_temp_path %(tmp)s;
    uwsgi_temp_path %(tmp)s; scgi_temp_path %(tmp)s;
    server {
        listen 127.0.0.1:%(auth)d;
        location /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port %(sink)d;
            return 204;
        }
    }
}
mail {
    server_name nexthop.example.test;
    auth_http 127.0.0.1:%(auth)d/auth;
    xclient off;
    server {
        listen 127.0.0.1:%(port)d;
        protocol smtp;
        smtp_auth none;
        starttls only;
        ssl_certificate %(certs)s/ecdsa.pem;
        ssl_certificate_key %(certs)s/ecdsa.key;
    }
}
""" % {"module": module, "tmp": self.tmp, "auth": auth, "sink": self.sink.port,
       "port": self.port, "certs": CERTS})
        self.nginx = Process(["/usr/sbin/nginx", "-p", self.tmp, "-c", conf, "-e",
                              os.path.join(self.tmp, "nginx-stderr.log")],
                             os.path.join(self.tmp, "nginx.out"))
        self.addCleanup(self.nginx.stop)
        from harness import wait_port
        wait_port(self.port)

    def test_delivers_through_nginx_over_verified_tls(self):
        p = Proxy(self.tmp, {"out": {
            "mode": "outbound", "route": "relay:127.0.0.1:%d" % self.port, "tls": "secure",
            "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem")}}, tls=False)
        self.addCleanup(p.stop)
        self.assertEqual(attempt(p.port("out")), ("delivered", 250))
        msgs = poll(self.sink.messages)
        self.assertEqual(len(msgs), 1)
        self.assertIn(b"Subject: outbound", msgs[0])
        self.assertEqual(p.stop(), 0)
        self.assertIn("decision=tls", p.log())
        self.assertIn("verify=ok", p.log())

"""A real MTA on both sides of the outbound listener: private Postfix
instances (postfix_instance.PrivatePostfix), each with its own configuration
directory, queue and log.

As the legacy MTA (relayhost = the proxy's outbound listener, no TLS of its
own), Postfix's mail reaches the recording backend behind outbound (verify)
-> the project's inbound listener over TLS; when the next hop is down or
refuses TLS, Postfix keeps the mail queued with the proxy's reason and
delivers it once the next hop is back: no mail lost.

As the next hop (smtpd_tls_security_level = may), Postfix logs the TLS
session the proxy established and delivers into a Maildir.
"""
import os
import re
import shutil
import subprocess
import unittest

import postfix_instance
from harness import CERTS, NextHop, Proxy, Sink, free_port, poll, split_trace, tmpdir

MSG = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: from postfix\r\n\r\n"
       b"first line\r\n.a line that starts with a dot\r\nlast line\r\n")


def outbound(tmp, hop_port, level="verify", **keys):
    k = {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop_port, "tls": level,
         "servername": "mx.example.test", "ca_file": os.path.join(CERTS, "ca.pem")}
    k.update(keys)
    return Proxy(tmp, {"out": k}, tls=False, proxy_extra={"workers": "1"})


class PostfixCase(unittest.TestCase):
    timeout = 90

    def setUp(self):
        missing = postfix_instance.available()
        if missing:
            self.fail("private Postfix: " + missing)
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def postfix(self, **kw):
        pf = postfix_instance.PrivatePostfix(**kw)
        self.addCleanup(pf.stop)
        return pf

    def stop(self, proxy):
        self.assertEqual(proxy.stop(), 0, proxy.log()[-3000:])


class PostfixAsLegacyMta(PostfixCase):
    """legacy Postfix -> outbound (verify) -> inbound (STARTTLS) -> sink."""

    def chain(self, inbound_port=None):
        """A recording sink behind the inbound listener (on inbound_port if given)."""
        sink = Sink(self.tmp)
        self.addCleanup(sink.stop)
        inbound = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port}},
                        ports={"in": inbound_port} if inbound_port else None)
        self.addCleanup(inbound.stop)
        return sink, inbound

    def test_delivers_over_verified_tls(self):
        sink, inbound = self.chain()
        out = outbound(self.tmp, inbound.port("in"))
        self.addCleanup(out.stop)
        pf = self.postfix(main={"relayhost": "[127.0.0.1]:%d" % out.port("out")})
        pf.submit("a@example.test", ["b@example.test"], MSG)
        pf.sendmail("a@example.test", ["c@example.test"], MSG.replace(b"\r\n", b"\n"))

        self.assertTrue(pf.wait_log(r"to=<c@example\.test>.*status=sent"), pf.log())
        log = pf.log()
        for rcpt in ("b", "c"):
            line = re.search(r".*to=<%s@example\.test>.*" % rcpt, log).group(0)
            self.assertIn("relay=127.0.0.1[127.0.0.1]:%d" % out.port("out"), line)
            self.assertIn("status=sent (250 ", line)
        msgs = poll(lambda: len(sink.messages()) >= 2 and sink.messages())
        self.assertEqual(len(msgs or []), 2, sink.messages())
        for m in msgs:
            trace, rest = split_trace(m)
            # the inbound listener saw the outbound proxy arrive over TLS
            self.assertRegex(trace, r"with ESMTPS id \S+\s+\(using TLSv1\.3 with cipher ")
            # then Postfix's own trace header, and the message intact (dot unstuffed)
            self.assertTrue(rest.startswith(b"Received: from legacy.example.test"), rest[:200])
            self.assertIn(b"Subject: from postfix\r\n", rest)
            self.assertIn(b"\r\n.a line that starts with a dot\r\nlast line\r\n", rest)
        self.assertEqual(pf.queue_j(), [])
        self.stop(out)
        self.assertRegex(out.log(), r"policy=verify tls=TLSv1\.3 .*verify=ok decision=tls")
        self.stop(inbound)

    def test_connection_cache_carries_postfix_sessions_on_one_tls_session(self):
        """connection_cache_time: three Postfix deliveries, one after the
        other (a session each, as Postfix opens them without a backlog),
        reach the next hop over one TLS session: the inbound listener sees a
        single session with three messages."""
        sink, inbound = self.chain()
        out = outbound(self.tmp, inbound.port("in"), connection_cache_time="60s")
        self.addCleanup(out.stop)
        pf = self.postfix(main={"relayhost": "[127.0.0.1]:%d" % out.port("out")})
        for n in (1, 2, 3):
            pf.submit("a@example.test", ["r%d@example.test" % n], MSG)
            self.assertTrue(pf.wait_log(r"to=<r%d@example\.test>.*status=sent" % n), pf.log())
            # Postfix logs status=sent before its QUIT, which parks the
            # connection: the next submission must find it parked
            self.assertTrue(poll(lambda: len(out.log_lines("session")) == n, 10), out.log())
        self.assertEqual(len(poll(lambda: len(sink.messages()) == 3 and sink.messages()) or []), 3)
        self.stop(out)
        self.assertEqual(out.log().count("connection=reused"), 2, out.log()[-3000:])
        self.stop(inbound)
        sessions = inbound.log_lines("session")
        self.assertEqual(len(sessions), 1, sessions)
        self.assertIn("messages=3", sessions[0])
        self.assertIn("tls=TLSv1.3", sessions[0])

    def assert_deferred(self, pf, *want):
        """The message waits in Postfix's deferred queue with each of `want`
        in its reason (the proxy's reply, relayed by Postfix's smtp client)."""
        self.assertTrue(pf.wait_log(r"status=deferred"), pf.log())
        queued = pf.queue_j()
        self.assertEqual(len(queued), 1, queued)
        self.assertEqual(queued[0]["queue_name"], "deferred")
        reason = queued[0]["recipients"][0]["delay_reason"]
        shown = " ".join(pf.queue_p().split())
        for w in want:
            self.assertIn(w, reason)
            self.assertIn(w, shown)
        return reason

    def test_next_hop_down_keeps_mail_queued_until_it_is_back(self):
        hop_port = free_port()  # nothing listens there yet
        out = outbound(self.tmp, hop_port)
        self.addCleanup(out.stop)
        pf = self.postfix(main={"relayhost": "[127.0.0.1]:%d" % out.port("out")})
        pf.submit("a@example.test", ["b@example.test"], MSG)
        self.assert_deferred(pf, "refused to talk to me: 421 4.4.1 ",
                             "Service unavailable: mail server not reachable")

        # the next hop comes back: the retry delivers it, over TLS
        sink, inbound = self.chain(inbound_port=hop_port)
        pf.flush()
        self.assertTrue(pf.wait_log(r"status=sent"), pf.log())
        msgs = poll(sink.messages)
        self.assertEqual(len(msgs), 1)
        self.assertIn("using TLSv1.3", split_trace(msgs[0])[0])
        self.assertTrue(poll(lambda: pf.queue_j() == []), pf.queue_p())

    def deferred_by_policy(self, mode, cert, *want):
        hop = NextHop(self.tmp, mode, cert)
        self.addCleanup(hop.stop)
        out = outbound(self.tmp, hop.port)
        self.addCleanup(out.stop)
        pf = self.postfix(main={"relayhost": "[127.0.0.1]:%d" % out.port("out")})
        pf.submit("a@example.test", ["b@example.test"], MSG)
        self.assert_deferred(pf, *want)
        self.assertEqual(hop.stored(), [])  # nothing went out in plaintext
        self.stop(out)
        self.assertIn("decision=deferred", out.log())

    def test_starttls_not_offered_defers_with_474(self):
        self.deferred_by_policy("strip", "ecdsa", " 4.7.4 ",
                                "TLS is required, but was not offered by mx.example.test")

    def test_untrusted_certificate_defers_with_475(self):
        self.deferred_by_policy("good", "selfsigned", " 4.7.5 ",
                                "certificate verification failed for mx.example.test")

    def test_tls10_only_next_hop_defers_with_475(self):
        self.deferred_by_policy("tls10", "ecdsa", " 4.7.5 ", "TLS handshake with ")


class PostfixAsNextHop(PostfixCase):
    """legacy client (swaks) -> outbound (verify/secure) -> Postfix smtpd with
    smtpd_tls_security_level = may -> virtual(8) Maildir."""

    def test_delivers_over_tls_to_postfix(self):
        pf = self.postfix(hostname="nexthop.example.test", mailbox=True, main={
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": os.path.join(CERTS, "ecdsa.pem"),
            "smtpd_tls_key_file": os.path.join(CERTS, "ecdsa.key"),
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "yes",
        })
        for level in ("verify", "secure"):
            out = outbound(self.tmp, pf.port, level)
            self.addCleanup(out.stop)
            r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % out.port("out"),
                                "--from", "a@example.test", "--to", "b@example.test",
                                "--helo", "legacy.example.test", "--h-Subject", "to " + level,
                                "--body", "via postfix"], capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout.decode()[-2000:])
            self.stop(out)
            self.assertRegex(out.log(), r"policy=%s tls=TLSv1\.[23] .*verify=ok decision=tls"
                             % level)
        self.assertTrue(poll(lambda: len(pf.messages()) >= 2, timeout=20), pf.log())
        log = pf.log()
        tls = re.findall(r"smtpd\[\d+\]: Anonymous TLS connection established from "
                         r"\S+\[127\.0\.0\.1\]: (TLSv1\.[23]) with cipher", log)
        self.assertEqual(len(tls), 2, log)
        self.assertEqual(len(re.findall(r"status=sent \(delivered to maildir\)", log)), 2, log)
        msgs = pf.messages()
        self.assertEqual(sorted(re.search(rb"Subject: to (\w+)", m).group(1) for m in msgs),
                         [b"secure", b"verify"], msgs)
        for m in msgs:
            self.assertIn(b"via postfix", m)
            # Postfix's own trace header records the TLS session
            self.assertRegex(m.decode(), r"\(using TLSv1\.[23] with cipher ")
        # every smtpd session that carried an envelope was one of those TLS sessions
        self.assertEqual(len(re.findall(r"smtpd\[\d+\]: [0-9A-F]+: client=", log)), 2, log)

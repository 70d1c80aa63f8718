"""Real peers through the inbound gateway.

Each test sends with a real client (swaks, smtplib, openssl s_client, curl,
Postfix smtp-source) or to a real backend (Postfix smtp-sink), and checks the
message arrived byte for byte behind the proxy's Received: header, which must
be the first header and name the protocol (RFC 3848) and the negotiated TLS
version and cipher.
"""
import os
import shutil
import smtplib
import subprocess
import sys
import time
import unittest

from harness import (BODY, CERTS, ROOT, Process, Proxy, ProxyCase, client_ctx, free_port,
                     parse_trace, poll, split_trace, tmpdir, wait_port)


def run(argv, timeout=30, **kw):
    """Runs a client tool to completion (it is killed at the timeout)."""
    return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          **kw)


def swaks_data(out):
    """The message swaks sent, as the backend must store it: the lines it
    printed (" -> " / " ~> ") between the 354 and the final dot, CRLF-ended
    and dot-unstuffed."""
    lines, inside = [], False
    for line in out.splitlines():
        if line[:3] in ("<- ", "<~ ") and line[4:7] == "354":
            inside = True
        elif inside and line[:4] in (" -> ", " ~> "):
            if line[4:] == ".":
                break
            lines.append(line[4:])
    return "".join((l[1:] if l.startswith(".") else l) + "\r\n" for l in lines).encode()


class SinkHelp(unittest.TestCase):
    def test_every_option_has_help(self):
        # test/README.md: `sink.py --help` lists its misbehaviours
        sys.path.insert(0, os.path.join(ROOT, "test", "peers"))
        try:
            import sink
        finally:
            sys.path.pop(0)
        missing = [a.option_strings[0] for a in sink.parser()._actions
                   if a.option_strings and not a.help]
        self.assertEqual(missing, [])


class Swaks(ProxyCase):
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}}

    def swaks(self, port, *extra):
        out = run(["swaks", "--server", "127.0.0.1:%d" % port, "--to", "b@example.test",
                   "--from", "a@example.test", "--helo", "swaks.example",
                   "--h-Subject", "swaks", "--body", "swaks body line\n.a dot line\nlast",
                   "--tls-ca-path", os.path.join(CERTS, "ca.pem"), "--tls-verify"] + list(extra))
        text = out.stdout.decode()
        self.assertEqual(out.returncode, 0, text + out.stderr.decode())
        sent = swaks_data(text)
        self.assertIn(b"\r\n.a dot line\r\n", sent)
        return text, sent

    def test_swaks_starttls_default_is_tls13(self):
        _, sent = self.swaks(self.proxy.port(), "--tls")
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.3", helo="swaks.example")
        self.assertEqual(rest, sent)
        self.assertIn(b"\r\nSubject: swaks\r\n", rest)

    def test_swaks_starttls_tls12(self):
        _, sent = self.swaks(self.proxy.port(), "--tls", "--tls-protocol", "tlsv1_2")
        trace, rest = self.one_message()
        t = self.assert_trace(trace, "ESMTPS", "TLSv1.2")
        self.assertRegex(t["cipher"], "GCM|CHACHA20")
        self.assertEqual(rest, sent)

    def test_swaks_implicit_tls(self):
        out, sent = self.swaks(self.proxy.port("smtps"), "--tlsc")
        self.assertIn("220 backend.test ESMTP sink", out)  # the greeting comes after the handshake
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.3")
        self.assertEqual(rest, sent)

    def test_swaks_plaintext(self):
        _, sent = self.swaks(self.proxy.port())
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTP", None, helo="swaks.example")
        self.assertEqual(rest, sent)


class Smtplib(ProxyCase):
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}}

    def test_starttls_tls12_byte_for_byte(self):
        s = smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10)
        self.addCleanup(s.close)
        s.ehlo("client.example")
        self.assertTrue(s.has_extn("starttls"))
        s.starttls(context=client_ctx("1.2"))
        s.ehlo("client.example")
        self.assertFalse(s.has_extn("starttls"))
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)  # smtplib dot-stuffs, the backend unstuffs
        t = self.assert_trace(trace, "ESMTPS", "TLSv1.2", helo="client.example")
        self.assertNotIn("CBC", t["cipher"])
        self.assertNotIn("SHA1", t["cipher"])

    def test_starttls_tls13_byte_for_byte(self):
        s = smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10)
        self.addCleanup(s.close)
        s.starttls(context=client_ctx("1.3"))
        s.ehlo("client.example")
        s.sendmail("a@example.test", ["b@example.test", "c@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)
        self.assert_trace(trace, "ESMTPS", "TLSv1.3", helo="client.example")

    def test_smtp_ssl_implicit(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.proxy.port("smtps"), timeout=10,
                             context=client_ctx())
        self.addCleanup(s.close)
        code, _ = s.ehlo("implicit.example")
        self.assertEqual(code, 250)
        self.assertFalse(s.has_extn("starttls"))
        self.assertTrue(s.has_extn("auth"))  # inside TLS from the start: AUTH is shown
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)
        self.assert_trace(trace, "ESMTPS", "TLSv1.3", helo="implicit.example")

    def test_plaintext_is_esmtp(self):
        s = smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10)
        self.addCleanup(s.close)
        s.ehlo("plain.example")
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)
        self.assert_trace(trace, "ESMTP", None, helo="plain.example")

    def test_two_messages_in_one_session(self):
        s = smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10)
        self.addCleanup(s.close)
        s.starttls(context=client_ctx())
        s.ehlo("client.example")
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.sendmail("a@example.test", ["b@example.test"], BODY.replace(b"hello", b"second"))
        s.quit()
        one, two = self.messages(2)
        t1, t2 = parse_trace(split_trace(one)[0]), parse_trace(split_trace(two)[0])
        self.assertEqual(split_trace(two)[1], BODY.replace(b"hello", b"second"))
        self.assertNotEqual(t1["id"], "")
        self.assertEqual(t1["version"], t2["version"])


class OpensslSClient(ProxyCase):
    def deliver(self, flag):
        p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-connect",
                              "127.0.0.1:%d" % self.proxy.port(), flag, "-CAfile",
                              os.path.join(CERTS, "ca.pem"), "-verify_return_error", "-quiet",
                              "-name", "client.example"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        # s_client reads stdin only after the handshake; give it the session
        # line by line as an interactive user would.
        time.sleep(0.5)
        for line in (b"EHLO openssl.example", b"MAIL FROM:<a@example.test>",
                     b"RCPT TO:<b@example.test>", b"DATA"):
            p.stdin.write(line + b"\r\n")
            p.stdin.flush()
            time.sleep(0.15)
        out, err = p.communicate(b"Subject: " + flag.encode() + b"\r\n\r\nbody\r\n.\r\nQUIT\r\n",
                                 timeout=20)
        self.assertIn(b"250 2.0.0 Ok: queued", out, out + err)
        self.assertNotIn(b"STARTTLS", out.split(b"250-backend.test")[-1])

    def test_tls12(self):
        self.deliver("-tls1_2")
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.2", helo="openssl.example")
        self.assertEqual(rest, b"Subject: -tls1_2\r\n\r\nbody\r\n")

    def test_tls13(self):
        self.deliver("-tls1_3")
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.3", helo="openssl.example")
        self.assertEqual(rest, b"Subject: -tls1_3\r\n\r\nbody\r\n")


    def quit_session(self, *flags):
        """A TLS session that only says QUIT (s_client reads until the proxy
        closes, so every ticket sent before the 221 is seen)."""
        out = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                              "127.0.0.1:%d" % self.proxy.port(), "-CAfile",
                              os.path.join(CERTS, "ca.pem"), "-verify_return_error", "-ign_eof"] +
                             list(flags), input=b"QUIT\r\n", capture_output=True, timeout=15)
        text = out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")
        self.assertEqual(out.returncode, 0, text)
        self.assertIn("221 ", text)
        return text

    def test_resumption_with_one_ticket(self):
        # TLS 1.3: one ticket per handshake (BoringSSL would send two), on a
        # full handshake and on a resumed one; the ticket resumes.
        sess = os.path.join(self.tmp, "tls13.sess")
        full = self.quit_session("-tls1_3", "-sess_out", sess)
        self.assertIn("New, TLSv1.3", full)
        self.assertEqual(full.count("Post-Handshake New Session Ticket arrived"), 1, full)
        again = self.quit_session("-tls1_3", "-sess_in", sess)
        self.assertIn("Reused, TLSv1.3", again)
        self.assertEqual(again.count("Post-Handshake New Session Ticket arrived"), 1, again)
        # TLS 1.2 resumes from its ticket too.
        sess12 = os.path.join(self.tmp, "tls12.sess")
        self.assertIn("New, TLSv1.2", self.quit_session("-tls1_2", "-sess_out", sess12))
        self.assertIn("Reused, TLSv1.2", self.quit_session("-tls1_2", "-sess_in", sess12))


class Certificates(ProxyCase):
    """Both certificates of [tls] serve: an ECDSA-only and an RSA-only client
    each complete a handshake; old and non-AEAD suites never do."""

    def handshake(self, *flags):
        out = run(["openssl", "s_client", "-brief", "-starttls", "smtp", "-connect",
                   "127.0.0.1:%d" % self.proxy.port(), "-CAfile", os.path.join(CERTS, "ca.pem"),
                   "-verify_return_error", "-servername", "mx.example.test"] + list(flags),
                  timeout=15)
        return out.returncode, out.stderr.decode() + out.stdout.decode()

    def test_ecdsa_and_rsa_clients(self):
        cases = [
            ("TLS1.3 ECDSA", ["-tls1_3", "-sigalgs", "ECDSA+SHA256"], "ECDSA"),
            ("TLS1.3 RSA", ["-tls1_3", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], "RSA"),
            ("TLS1.2 ECDHE-ECDSA", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "ECDSA"),
            ("TLS1.2 ECDHE-RSA", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "RSA"),
        ]
        for label, flags, sig in cases:
            with self.subTest(label):
                rc, out = self.handshake(*flags)
                self.assertEqual(rc, 0, "%s: %s" % (label, out))
                self.assertIn("Signature type: " + sig, out, label)

    def test_no_old_protocols_or_non_aead_ciphers(self):
        cases = [
            ("TLS1.1", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
            ("TLS1.2 CBC", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA"]),
            ("TLS1.2 RSA kx", ["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),
        ]
        for label, flags in cases:
            with self.subTest(label):
                rc, out = self.handshake(*flags)
                self.assertNotEqual(rc, 0, "%s handshake succeeded: %s" % (label, out))
        self.assertEqual(self.sink.messages(), [])


class ImplicitTlsPosture(ProxyCase):
    """The same posture on the implicit-TLS port (port 465 style)."""
    listeners = {"smtps": {"starttls": "implicit"}}

    def probe(self, *args):
        out = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.proxy.port("smtps")] +
                  list(args), timeout=20)
        return out.stdout.decode("utf-8", "replace")

    def test_tls_posture_rsa_and_ecdsa(self):
        cases = [
            (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "Server public key is 256 bit"),
            (("-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"), "Server public key is 2048 bit"),
            (("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"), "Server public key is 256 bit"),
            (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"), "Server public key is 2048 bit"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                self.assertIn(want, self.probe(*args), args)
        # no CBC, no static RSA key exchange, nothing below TLS 1.2
        for args in (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"),
                     ("-tls1_2", "-cipher", "AES128-GCM-SHA256"), ("-tls1_1",), ("-tls1",)):
            with self.subTest(args=args):
                self.assertIn("Cipher is (NONE)", self.probe(*args), args)


class Curl(ProxyCase):
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}}

    def curl(self, url, port, *extra):
        mail = os.path.join(self.tmp, "curl.eml")
        with open(mail, "wb") as f:
            f.write(b"Subject: curl\r\n\r\ncurl body\r\n")
        out = run(["curl", "-sS", "--cacert", os.path.join(CERTS, "ca.pem"),
                   "--resolve", "mx.example.test:%d:127.0.0.1" % port, url % port,
                   "--mail-from", "a@example.test", "--mail-rcpt", "b@example.test",
                   "-T", mail] + list(extra))
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_curl_smtp_ssl_reqd(self):
        self.curl("smtp://mx.example.test:%d", self.proxy.port(), "--ssl-reqd")
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.3")
        self.assertEqual(rest, b"Subject: curl\r\n\r\ncurl body\r\n")

    def test_curl_smtp_ssl_reqd_tls12(self):
        self.curl("smtp://mx.example.test:%d", self.proxy.port(), "--ssl-reqd", "--tlsv1.2",
                  "--tls-max", "1.2")
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.2")
        self.assertEqual(rest, b"Subject: curl\r\n\r\ncurl body\r\n")

    def test_curl_smtps_implicit(self):
        self.curl("smtps://mx.example.test:%d", self.proxy.port("smtps"))
        trace, rest = self.one_message()
        self.assert_trace(trace, "ESMTPS", "TLSv1.3")
        self.assertEqual(rest, b"Subject: curl\r\n\r\ncurl body\r\n")


class PostfixTools(ProxyCase):
    """smtp-source as a load generator (plaintext, several sessions at once),
    posttls-finger as a TLS probe."""

    def test_smtp_source_burst(self):
        out = run(["smtp-source", "-s", "5", "-m", "40", "-l", "4000", "-f", "a@example.test",
                   "-t", "b@example.test", "-S", "burst", "127.0.0.1:%d" % self.proxy.port()],
                  timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        msgs = self.messages(40, timeout=20)
        ids = set()
        for m in msgs:
            trace, rest = split_trace(m)
            t = parse_trace(trace)
            self.assertIn(t["proto"], ("SMTP", "ESMTP"))  # smtp-source says HELO or EHLO
            self.assertIsNone(t["version"])
            ids.add(t["id"])
            self.assertIn(b"Subject: burst\r\n", rest)
            self.assertNotIn(b"Received: ", rest.split(b"\r\n\r\n")[0])
        self.assertEqual(len(ids), 40, "trace ids must differ per message")
        # a session's line comes once its connections are closed, a moment
        # after smtp-source has its last 221
        relayed = lambda: sum(int(l.split("messages=")[1].split()[0])
                              for l in self.proxy.log_lines("session"))
        self.assertTrue(poll(lambda: relayed() >= 40, 10), self.proxy.log()[-2000:])
        self.assertEqual(relayed(), 40)

    def test_posttls_finger_verifies(self):
        cfg = os.path.join(self.tmp, "postfix")
        os.makedirs(cfg)
        open(os.path.join(cfg, "main.cf"), "w").close()
        out = run(["posttls-finger", "-c", "-l", "secure", "-F", os.path.join(CERTS, "ca.pem"),
                   "-L", "summary", "[127.0.0.1]:%d" % self.proxy.port(), "mx.example.test"],
                  env={"MAIL_CONFIG": cfg, "PATH": "/usr/sbin:/usr/bin:/bin"})
        text = out.stdout.decode() + out.stderr.decode()
        self.assertEqual(out.returncode, 0, text)
        self.assertIn("Verified TLS connection established", text)
        self.assertIn("TLSv1.3 with cipher", text)


class PostfixSmtpSinkBackend(ProxyCase):
    """Postfix smtp-sink as the legacy backend instead of our sink."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.dump = os.path.join(self.tmp, "dump")
        os.makedirs(self.dump)
        os.chmod(self.tmp, 0o755)
        os.chmod(self.dump, 0o777)  # smtp-sink drops privileges to nobody
        port = free_port()
        # -d: one file per transaction; the name is the template + a random suffix
        self.pf = Process(["smtp-sink", "-u", "nobody", "-d", self.dump + "/m", "-h",
                           "legacy.example.test", "127.0.0.1:%d" % port, "64"],
                          os.path.join(self.tmp, "smtp-sink.log"), stdout=subprocess.DEVNULL)
        self.addCleanup(self.pf.stop)
        wait_port(port)
        self.proxy = Proxy(self.tmp, {"in": {"backend": "127.0.0.1:%d" % port}})
        self.addCleanup(self.stop_proxy)

    def dumps(self):
        out = []
        for n in sorted(os.listdir(self.dump)):
            with open(os.path.join(self.dump, n), "rb") as f:
                out.append(f.read())
        return out

    def test_swaks_through_to_smtp_sink(self):
        c = self.client()
        code, lines = c.reply()
        self.assertEqual(code, 220)
        code, lines = c.cmd("EHLO client.example")
        kws = [l[4:].split(" ")[0].upper() for l in lines[1:]]
        self.assertEqual(kws.count("STARTTLS"), 1)
        for gone in ("XCLIENT", "XFORWARD", "AUTH"):
            self.assertNotIn(gone, kws)
        c.close()
        out = run(["swaks", "--server", "127.0.0.1:%d" % self.proxy.port(), "--tls",
                   "--to", "b@example.test", "--from", "a@example.test", "--helo",
                   "swaks.example", "--h-Subject", "via smtp-sink", "--body", "sink body"])
        self.assertEqual(out.returncode, 0, out.stdout.decode() + out.stderr.decode())
        dumps = poll(self.dumps)
        self.assertEqual(len(dumps), 1)
        d = dumps[0].decode()
        # smtp-sink writes LF line ends: its X- envelope lines, its own
        # Received:, then the message, which starts with ours.
        self.assertIn("X-Mail-Args: <a@example.test>", d)
        self.assertIn("X-Rcpt-Args: <b@example.test>", d)
        ours = d.split("\nReceived: ")[2] if d.count("\nReceived: ") > 1 else ""
        self.assertTrue(ours.startswith("from swaks.example ([127.0.0.1])"), d)
        self.assertIn("with ESMTPS", ours)
        self.assertIn("TLSv1.3", ours)
        self.assertIn("Subject: via smtp-sink", d)
        self.assertIn("sink body", d)

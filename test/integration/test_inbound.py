"""Inbound gateway: real peers on loopback against the real binary.

Every test starts its own recording backend (test/peers/sink.py) and its own
proxy, and checks what arrived at the backend byte for byte, what the
backend's transcript shows it was sent, and what the client was told.
"""
import hashlib
import os
import shutil
import smtplib
import socket
import subprocess
import time
import unittest

from harness import (BIN, CERTS, Client, Proxy, Sink, client_ctx, free_port, poll, split_trace,
                     tmpdir)

BODY = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\n"
        b"line one\r\n..a line that starts with a dot\r\nlast line\r\n")
BODY_UNSTUFFED = BODY.replace(b"\r\n..a", b"\r\n.a")


class Base(unittest.TestCase):
    sink_args = ()
    listeners = {"in": {}}
    tls = True

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp, *self.sink_args)
        self.addCleanup(self.sink.stop)
        ls = {}
        for name, keys in self.listeners.items():
            k = {"backend": "127.0.0.1:%d" % self.sink.port}
            k.update(keys)
            ls[name] = k
        self.proxy = Proxy(self.tmp, ls, tls=self.tls)
        self.addCleanup(self.stop_proxy)

    def stop_proxy(self):
        if self.proxy is not None:
            rc = self.proxy.stop()
            log = self.proxy.log()
            self.proxy = None
            self.assertEqual(rc, 0, "proxy exit code %s\n%s" % (rc, log[-3000:]))

    def client(self, name="in", **kw):
        c = Client(self.proxy.port(name), **kw)
        self.addCleanup(c.close)
        return c

    def send_message(self, c, body=BODY, rcpts=("b@example.test",)):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        for r in rcpts:
            self.assertEqual(c.cmd("RCPT TO:<%s>" % r)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body + b".\r\n")
        return c.reply()

    def one_message(self):
        msgs = poll(self.sink.messages)
        self.assertEqual(len(msgs), 1, msgs)
        return split_trace(msgs[0])


class RealPeers(Base):
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}}

    def test_swaks_starttls(self):
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1:%d" % self.proxy.port(), "--tls", "--to",
             "b@example.test", "--from", "a@example.test", "--body", "swaks body line",
             "--h-Subject", "swaks"], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout.decode() + out.stderr.decode())
        trace, rest = self.one_message()
        self.assertIn("with ESMTPS", trace)
        self.assertIn("using TLSv1.3", trace)
        self.assertIn(b"swaks body line", rest)
        self.assertIn(b"Subject: swaks", rest)

    def test_smtplib_starttls_tls12_byte_for_byte(self):
        s = smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10)
        s.ehlo("client.example")
        self.assertTrue(s.has_extn("starttls"))
        s.starttls(context=client_ctx("1.2"))
        s.ehlo("client.example")
        self.assertFalse(s.has_extn("starttls"))
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)  # smtplib dot-stuffs, the backend unstuffs
        self.assertIn("from client.example ([127.0.0.1])", trace)
        self.assertIn("with ESMTPS", trace)
        self.assertIn("using TLSv1.2", trace)

    def test_smtp_ssl_implicit(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.proxy.port("smtps"), timeout=10,
                             context=client_ctx())
        code, _ = s.ehlo("implicit.example")
        self.assertEqual(code, 250)
        self.assertFalse(s.has_extn("starttls"))
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        trace, rest = self.one_message()
        self.assertEqual(rest, BODY)
        self.assertIn("using TLSv1.3", trace)

    def test_openssl_s_client_tls12_and_tls13(self):
        for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            script = (b"EHLO openssl.example\r\nMAIL FROM:<a@example.test>\r\n"
                      b"RCPT TO:<b@example.test>\r\nDATA\r\n")
            p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-connect",
                                  "127.0.0.1:%d" % self.proxy.port(), flag, "-CAfile",
                                  os.path.join(CERTS, "ca.pem"), "-quiet",
                                  "-verify_return_error"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            # wait for the handshake before speaking, as a real client would
            time.sleep(0.5)
            p.stdin.write(script)
            p.stdin.flush()
            time.sleep(0.5)
            out, err = p.communicate(
                b"Subject: " + want.encode() + b"\r\n\r\nbody\r\n.\r\nQUIT\r\n", timeout=20)
            self.assertIn(b"250 2.0.0 Ok: queued", out, out + err)
        msgs = poll(lambda: len(self.sink.messages()) == 2 and self.sink.messages())
        self.assertEqual(len(msgs), 2)
        self.assertIn("using TLSv1.2", split_trace(msgs[0])[0])
        self.assertIn("using TLSv1.3", split_trace(msgs[1])[0])

    def test_tls_posture_rsa_and_ecdsa(self):
        def probe(*args):
            out = subprocess.run(["openssl", "s_client", "-connect",
                                  "127.0.0.1:%d" % self.proxy.port("smtps")] + list(args),
                                 input=b"", capture_output=True, timeout=20)
            return out.stdout.decode("utf-8", "replace")
        cases = [
            (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "Server public key is 256 bit"),
            (("-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"), "Server public key is 2048 bit"),
            (("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"), "Server public key is 256 bit"),
            (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"), "Server public key is 2048 bit"),
        ]
        for args, want in cases:
            self.assertIn(want, probe(*args), args)
        # no CBC, no static RSA key exchange, nothing below TLS 1.2
        for args in (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"), ("-tls1_2", "-cipher", "AES128-GCM-SHA256"),
                     ("-tls1_1",), ("-tls1",)):
            self.assertIn("Cipher is (NONE)", probe(*args), args)

    def test_curl_ssl_reqd(self):
        mail = os.path.join(self.tmp, "curl.eml")
        with open(mail, "wb") as f:
            f.write(b"Subject: curl\r\n\r\ncurl body\r\n")
        out = subprocess.run(
            ["curl", "-sS", "--ssl-reqd", "--cacert", os.path.join(CERTS, "ca.pem"),
             "--resolve", "mx.example.test:%d:127.0.0.1" % self.proxy.port(),
             "smtp://mx.example.test:%d" % self.proxy.port(), "--mail-from", "a@example.test",
             "--mail-rcpt", "b@example.test", "-T", mail], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        trace, rest = self.one_message()
        self.assertIn("with ESMTPS", trace)
        self.assertEqual(rest, b"Subject: curl\r\n\r\ncurl body\r\n")

    def test_session_log_line(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO log.example")
        c.starttls()
        c.cmd("EHLO log.example")
        self.assertEqual(self.send_message(c)[0], 250)
        c.cmd("QUIT")
        log = poll(lambda: "session id=" in self.proxy.log() and self.proxy.log())
        line = [l for l in log.splitlines() if " session id=" in l][0]
        for want in ("client=127.0.0.1:", "tls=TLSv1.3", "cipher=TLS_", "backend=127.0.0.1:%d"
                     % self.sink.port, "messages=1", "result=ok", "duration="):
            self.assertIn(want, line)
        msg = [l for l in log.splitlines() if " message id=" in l][0]
        self.assertIn("result=accepted", msg)
        self.assertIn("tls=TLSv1.3", msg)


class EhloRewrite(Base):
    def test_before_and_after_tls(self):
        c = self.client()
        self.assertEqual(c.reply(), (220, ["220 backend.test ESMTP sink"]))
        code, lines = c.cmd("EHLO x.example")
        kws = [l[4:].split(" ")[0].upper() for l in lines[1:]]
        self.assertEqual(code, 250)
        self.assertEqual(kws.count("STARTTLS"), 1)
        for gone in ("AUTH", "CHUNKING", "BINARYMIME", "XCLIENT", "XFORWARD"):
            self.assertNotIn(gone, kws)
        for kept in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"):
            self.assertIn(kept, kws)
        c.starttls()
        code, lines = c.cmd("EHLO x.example")
        kws = [l[4:].split(" ")[0].upper() for l in lines[1:]]
        self.assertNotIn("STARTTLS", kws)
        self.assertIn("AUTH", kws)
        self.assertNotIn("CHUNKING", kws)

    def test_helo(self):
        c = self.client()
        c.reply()
        self.assertEqual(c.cmd("HELO old.example")[0], 250)
        self.assertEqual(self.send_message(c)[0], 250)
        trace, _ = self.one_message()
        self.assertIn("with SMTP id", trace)


class NoCertificate(Base):
    tls = False

    def test_no_starttls_offered_without_cert(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertNotIn("STARTTLS", " ".join(lines).upper())
        self.assertEqual(c.cmd("STARTTLS")[0], 502)
        self.assertEqual(self.send_message(c)[0], 250)
        trace, _ = self.one_message()
        self.assertIn("with ESMTP id", trace)
        self.assertNotIn("using", trace)


class Attacks(Base):
    sink_args = ("--auth-ok",)

    def test_starttls_command_injection(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n")
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.buf, b"")
        c.sock = client_ctx().wrap_socket(c.sock, server_hostname="mx.example.test")
        # inside TLS: no replies for the injected commands are waiting
        c.sock.settimeout(1)
        with self.assertRaises(socket.timeout):
            c.sock.recv(100)
        c.sock.settimeout(10)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertFalse(any(b"evil" in l for l in self.sink.lines()))
        # the backend saw exactly: EHLO, (internal) RSET, NOOP
        self.assertEqual(self.sink.lines(), [b"EHLO x.example", b"RSET", b"NOOP"])

    def test_envelope_before_starttls_not_reused(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("MAIL FROM:<early@example.test>")[0], 250)
        c.starttls()
        # MAIL/RCPT before the new EHLO are refused by the proxy
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 503)
        c.cmd("EHLO x.example")
        # the backend was reset: RCPT without a new MAIL is refused there
        c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(c.cmd("DATA")[0] // 100, 5)  # no envelope at the backend
        self.assertIn(b"RSET", self.sink.lines())
        self.assertEqual(self.sink.messages(), [])

    def test_auth_before_tls_refused_and_not_forwarded(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("AUTH PLAIN AGEAYg==")
        self.assertEqual(code, 530)
        self.assertIn("5.7.0", lines[0])
        self.assertFalse(any(l.startswith(b"AUTH") for l in self.sink.lines()))
        c.starttls()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("AUTH PLAIN AGEAYg==")[0], 235)
        self.assertEqual(self.send_message(c)[0], 250)
        trace, _ = self.one_message()
        self.assertIn("with ESMTPSA", trace)

    def test_starttls_with_argument_and_twice(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("STARTTLS now")
        self.assertEqual(code, 501)
        self.assertIn("5.5.4", lines[0])
        c.starttls()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("STARTTLS")
        self.assertEqual(code, 554)
        self.assertIn("5.5.1", lines[0])
        self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_xclient_xforward_bdat_refused(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1")[0], 550)
        self.assertEqual(c.cmd("XFORWARD ADDR=192.0.2.1")[0], 550)
        self.assertEqual(c.cmd("BDAT 10 LAST")[0], 502)
        seen = b"".join(self.sink.lines())
        for verb in (b"XCLIENT", b"XFORWARD", b"BDAT"):
            self.assertNotIn(verb, seen)

    def test_overlong_line_then_normal_service(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("NOOP " + "x" * 5000)
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", lines[0])
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertFalse(any(len(l) > 3000 for l in self.sink.lines()))

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


class RequireTls(Base):
    listeners = {"in": {"starttls": "require"}}

    def test_require(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        for cmd in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "DATA",
                    "AUTH PLAIN AGEAYg=="):
            code, lines = c.cmd(cmd)
            self.assertEqual(code, 530, cmd)
            self.assertEqual(lines[0], "530 5.7.0 Must issue a STARTTLS command first")
        self.assertEqual(self.sink.lines(), [b"EHLO x.example"])
        c.starttls()
        c.cmd("EHLO x.example")
        self.assertEqual(self.send_message(c)[0], 250)


SMUGGLE_ENDINGS = [b"\n.\n", b"\r.\r\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\n.\r", b"\r\n.\r",
                   b"\r\n\x00.\r\n"]
SECOND = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n"


class Smuggling(Base):
    sink_args = ("--lenient-eod",)
    listeners = {"in": {}, "norm": {"bare_newlines": "normalize"}}

    def attempt(self, name, ending):
        c = self.client(name)
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: s\r\n\r\nfirst" + ending + SECOND + b"\r\n.\r\n")
        return c

    def test_reject_mode(self):
        for ending in SMUGGLE_ENDINGS:
            c = self.attempt("in", ending)
            code, lines = c.reply()
            if ending == b"\r\n\x00.\r\n":
                # no bare CR/LF: a NUL line is content; exactly one message
                self.assertEqual(code, 250, ending)
            else:
                self.assertEqual(code, 554, ending)
                self.assertIn("5.6.0", lines[0])
                self.assertTrue(c.closed(), ending)
            c.close()
        msgs = self.sink.messages()
        self.assertEqual(len(msgs), 1, msgs)  # only the NUL case, as one message
        self.assertFalse(any(b"victim" in l for l in self.sink.lines()))

    def test_normalize_mode(self):
        for i, ending in enumerate(SMUGGLE_ENDINGS):
            c = self.attempt("norm", ending)
            self.assertEqual(c.reply()[0], 250, ending)
            msgs = poll(lambda: len(self.sink.messages()) == i + 1 and self.sink.messages())
            self.assertTrue(msgs, ending)
            self.assertIn(b"smuggled", msgs[-1])
            self.assertIn(b"evil@attacker", msgs[-1])  # content, not a command
            c.close()
        self.assertFalse(any(b"victim" in l for l in self.sink.lines()))


class BackendReplies(Base):
    sink_args = ("--reject-rcpt", "nobody")

    def test_rcpt_rejection_relayed_exactly(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.cmd("MAIL FROM:<a@example.test>")
        self.assertEqual(c.cmd("RCPT TO:<nobody@example.test>"),
                         (550, ["550 5.1.1 <rejected>: Recipient address rejected"]))
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        self.assertEqual(c.reply()[0], 250)


class BackendRejectsData(Base):
    sink_args = ("--reject-data",)

    def test_data_rejection_relayed(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        self.assertEqual(self.send_message(c),
                         (554, ["554 5.7.1 Message rejected by content filter"]))
        self.assertEqual(self.sink.messages(), [])


class Timeouts(Base):
    listeners = {"in": {"idle_timeout": "1s"}}

    def test_stalled_client_gets_421(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.send(b"MAIL FROM:<a@exa")  # and stall
        code, lines = c.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.4.2", lines[0])
        self.assertTrue(c.closed())


class BackendDown(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_proxy(self, backend_port, extra):
        keys = {"backend": "127.0.0.1:%d" % backend_port}
        keys.update(extra)
        p = Proxy(self.tmp, {"in": keys})
        self.addCleanup(p.stop)
        return p

    def test_backend_unreachable(self):
        p = self.run_proxy(free_port(), {})
        c = Client(p.port())
        code, lines = c.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.4.1", lines[0])
        c.close()
        self.assertEqual(p.stop(), 0)
        self.assertIn("result=backend-unavailable", p.log())

    def test_backend_silent(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        p = self.run_proxy(silent.getsockname()[1], {"greeting_timeout": "1s"})
        c = Client(p.port())
        code, lines = c.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.4.2", lines[0])
        c.close()


class Limits(Base):
    listeners = {"in": {"max_connections_per_ip": "2"}}

    def test_per_ip_limit(self):
        a, b = self.client(), self.client()
        self.assertEqual(a.reply()[0], 220)
        self.assertEqual(b.reply()[0], 220)
        c = self.client()
        code, lines = c.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.7.0", lines[0])
        a.cmd("QUIT")
        a.close()
        time.sleep(0.3)
        d = self.client()
        self.assertEqual(d.reply()[0], 220)


class BigMessage(Base):
    def test_50mb_streamed_in_bounded_memory(self):
        c = self.client(timeout=120)
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        c.cmd("EHLO x.example")
        c.cmd("MAIL FROM:<a@example.test>")
        c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(c.cmd("DATA")[0], 354)
        line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ!!\r\n"
        chunk = line * 8192  # ~640 KB
        total = 0
        h = hashlib.sha256()
        while total < 50 * 1024 * 1024:
            c.send(chunk)
            h.update(chunk)
            total += len(chunk)
        c.send(b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        _, rest = self.one_message()
        self.assertEqual(hashlib.sha256(rest).hexdigest(), h.hexdigest())
        with open("/proc/%d/status" % self.proxy.proc.p.pid) as f:
            hwm = [l for l in f if l.startswith("VmHWM")][0]
        kb = int(hwm.split()[1])
        limit = 200 * 1024 if os.environ.get("STP_ASAN") else 64 * 1024
        self.assertLess(kb, limit, hwm)


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def check(self, text):
        path = os.path.join(self.tmp, "c.ini")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([BIN, "--check", "-c", path], capture_output=True, timeout=10)
        return out.returncode, out.stderr.decode(), path

    def test_check_good(self):
        rc, err, _ = self.check("[tls]\ncert = %s/ecdsa.pem\nkey = %s/ecdsa.key\n"
                                "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
                                "backend = 127.0.0.1:2526\nstarttls = require\n" % (CERTS, CERTS))
        self.assertEqual(rc, 0, err)

    def test_check_errors_have_file_and_line(self):
        rc, err, path = self.check("[proxy]\nbogus = 1\n[listener:a]\nmode = sideways\n"
                                   "listen = 127.0.0.1:2525\nbackend = 127.0.0.1:x\n"
                                   "[tls]\ncert = /nonexistent.pem\n")
        self.assertNotEqual(rc, 0)
        for line in ("%s:2:" % path, "%s:4:" % path, "%s:6:" % path, "%s:8:" % path):
            self.assertIn(line, err)
        self.assertIn("bogus", err)
        self.assertIn("sideways", err)

    def test_check_key_mismatch(self):
        rc, err, _ = self.check("[tls]\ncert = %s/ecdsa.pem\nkey = %s/rsa.key\n"
                                "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
                                "backend = 127.0.0.1:2526\n" % (CERTS, CERTS))
        self.assertNotEqual(rc, 0)
        self.assertIn("rsa.key", err)

    def test_version_and_help(self):
        out = subprocess.run([BIN, "--version"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertTrue(out.stdout.startswith(b"smtp-tls-proxy "))
        out = subprocess.run([BIN, "--help"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertIn(b"--check", out.stdout)
        out = subprocess.run([BIN, "--bogus"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 2)

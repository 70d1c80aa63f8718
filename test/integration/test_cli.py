"""The command line, config validation (--check), the session log, and a
clean exit at SIGTERM (which the ASan pass turns into a leak check)."""
import re
import os
import shutil
import subprocess
import unittest

from harness import BIN, CERTS, Process, ProxyCase, log_fields, poll, tmpdir


class Check(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def check(self, text):
        path = os.path.join(self.tmp, "c.ini")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([BIN, "--check", "-c", path], capture_output=True, timeout=10)
        return out.returncode, out.stderr.decode() + out.stdout.decode(), path

    GOOD = ("[proxy]\nhostname = mx.example.test\n"
            "[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/ecdsa.key\ncert = {c}/rsa.pem\nkey = {c}/rsa.key\n"
            "[listener:smtp]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n"
            "starttls = offer\n"
            "[listener:submission]\nmode = inbound\nlisten = [::1]:5870\n"
            "backend = 127.0.0.1:2526\nstarttls = require\nbare_newlines = normalize\n"
            "idle_timeout = 30s\nmax_line_length = 4096\nmax_connections_per_ip = 5\n"
            "[listener:smtps]\nmode = inbound\nlisten = 127.0.0.1:4650\n"
            "backend = 127.0.0.1:2526\nstarttls = implicit\n")

    def test_good_config(self):
        rc, out, _ = self.check(self.GOOD.format(c=CERTS))
        self.assertEqual(rc, 0, out)

    def test_each_error_has_file_and_line(self):
        cases = [
            ("unknown key", "[proxy]\nbogus_key = 1\n", 2, "bogus_key"),
            ("unknown mode", "[listener:a]\nmode = sideways\nlisten = 127.0.0.1:1\n"
             "backend = 127.0.0.1:2\n", 2, "sideways"),
            ("bad port", "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:1\n"
             "backend = 127.0.0.1:x\n", 4, "backend"),
            ("bad starttls", "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:1\n"
             "backend = 127.0.0.1:2\nstarttls = maybe\n", 5, "maybe"),
            ("bad duration", "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:1\n"
             "backend = 127.0.0.1:2\nidle_timeout = soon\n", 5, "idle_timeout"),
            ("missing cert file", "[tls]\ncert = /nonexistent/cert.pem\nkey = /nonexistent/k.pem\n",
             2, "/nonexistent/cert.pem"),
            ("unknown section", "[frobnicate]\nx = 1\n", 1, "frobnicate"),
            # would pass and then defer every message: "no name to verify"
            ("original-dst verify without servername",
             "[listener:o]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
             "route = original-dst\ntls = verify\n", 5, "needs 'servername'"),
            # one client made such a proxy open 21 sessions to itself
            ("relay to itself",
             "[listener:o]\nmode = outbound\nlisten = 0.0.0.0:10025\n"
             "route = relay:127.0.0.1:10025\n", 4, "would loop"),
            # passed --check, then failed at start without a line
            ("unknown user", "[proxy]\nhostname = mx.example.test\nuser = no-such-user-stp\n"
             "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n",
             3, "unknown user 'no-such-user-stp'"),
            ("unknown group", "[proxy]\nhostname = mx.example.test\ngroup = no-such-group-stp\n"
             "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n",
             3, "unknown group 'no-such-group-stp'"),
            ("metrics on a listener's address",
             "[proxy]\nhostname = mx.example.test\nmetrics = 127.0.0.1:2525\n"
             "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n",
             3, "overlaps the listen address of [listener:a]"),
        ]
        for label, text, line, word in cases:
            with self.subTest(label):
                rc, out, path = self.check(text)
                self.assertNotEqual(rc, 0, label)
                self.assertIn("%s:%d:" % (path, line), out, label)
                self.assertIn(word, out, label)

    def test_relay_by_name_that_is_the_listener_itself(self):
        """route = relay:NAME:PORT whose name resolves to the listener's own
        address: refused at the route line like the same relay given by
        address (it was accepted, and each connection looped back into the
        proxy until max_connections)."""
        import socket
        fam = socket.getaddrinfo("localhost", 25, type=socket.SOCK_STREAM)[0][0]
        listen = "127.0.0.1" if fam == socket.AF_INET else "[::1]"
        for relay in ("localhost", listen):
            rc, out, path = self.check("[listener:out]\nmode = outbound\nlisten = %s:47023\n"
                                       "route = relay:%s:47023\ntls = none\n" % (listen, relay))
            self.assertNotEqual(rc, 0, out)
            self.assertIn("%s:4: route" % path, out)
            self.assertIn("the listener's own address", out)
        rc, out, _ = self.check("[listener:out]\nmode = outbound\nlisten = %s:47023\n"
                                "route = relay:localhost:47024\ntls = none\n" % listen)
        self.assertEqual(rc, 0, out)

    def test_all_errors_reported(self):
        rc, out, path = self.check("[proxy]\nbogus = 1\n[listener:a]\nmode = sideways\n"
                                   "listen = 127.0.0.1:2525\nbackend = 127.0.0.1:x\n"
                                   "[tls]\ncert = /nonexistent.pem\n")
        self.assertNotEqual(rc, 0)
        for n in (2, 4, 6, 8):
            self.assertIn("%s:%d:" % (path, n), out)

    def test_key_does_not_match_cert(self):
        rc, out, _ = self.check("[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/rsa.key\n"
                                "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
                                "backend = 127.0.0.1:2526\n".format(c=CERTS))
        self.assertNotEqual(rc, 0)
        self.assertIn("rsa.key", out)

    HEAD = "[proxy]\nhostname = mx.example.test\n"  # lines 1-2
    INBOUND = "[listener:a]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n"

    def test_two_certificates_of_one_name_and_type_have_a_line(self):
        # the second of the two is the one that can never be chosen
        rc, out, path = self.check(self.HEAD + "[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/ecdsa.key\n"
                                   "cert = {c}/soon.pem\nkey = {c}/soon.key\n".format(c=CERTS)
                                   + self.INBOUND)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("%s:6: cert %s/ecdsa.pem and cert %s/soon.pem: same name and key type"
                      % (path, CERTS, CERTS), out)

    def test_certificate_errors_have_file_and_line(self):
        # read when the snapshot is built, after the file parsed: these had
        # no line ("m.ini: key ... does not match ...")
        c = CERTS
        cases = [
            ("key does not match", "[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/rsa.key\n", 5,
             "key {c}/rsa.key does not match certificate {c}/ecdsa.pem"),
            ("no private key", "[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/ecdsa.pem\n", 5,
             "key {c}/ecdsa.pem: no private key found"),
            ("no certificate", "[tls]\ncert = {c}/ecdsa.key\nkey = {c}/ecdsa.key\n", 4,
             "cert {c}/ecdsa.key: no certificate found"),
        ]
        for label, tls, line, want in cases:
            with self.subTest(label):
                rc, out, path = self.check(self.HEAD + tls.format(c=c) + self.INBOUND)
                self.assertEqual(rc, 1, out)
                self.assertIn("%s:%d: %s\n" % (path, line, want.format(c=c)), out)

    def test_listener_errors_have_file_and_line(self):
        c = CERTS
        cases = [
            ("ca_file of the listener",
             "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
             "route = relay:127.0.0.1:2526\nca_file = {c}/ecdsa.key\n", 7,
             "listener 'out': ca_file {c}/ecdsa.key: no certificate found"),
            ("ca_file of [tls]",
             "[tls]\nca_file = {c}/ecdsa.key\n[listener:out]\nmode = outbound\n"
             "listen = 127.0.0.1:10025\nroute = relay:127.0.0.1:2526\n", 4,
             "listener 'out': ca_file {c}/ecdsa.key: no certificate found"),
            ("relay that does not resolve",
             "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
             "route = relay:smtp.provider.invalid:25\n", 6,
             "listener 'out': cannot resolve relay 'smtp.provider.invalid'"),
        ]
        for label, text, line, want in cases:
            with self.subTest(label):
                rc, out, path = self.check(self.HEAD + text.format(c=c))
                self.assertEqual(rc, 1, out)
                self.assertIn("%s:%d: %s" % (path, line, want.format(c=c)), out)

    def test_all_certificate_problems_reported(self):
        c = CERTS
        rc, out, path = self.check(
            self.HEAD + "[tls]\ncert = {c}/ecdsa.pem\nkey = {c}/rsa.key\n"     # 3-5
            "cert = {c}/rsa.pem\nkey = {c}/rsa.pem\n"                             # 6-7
            "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"       # 8-10
            "route = relay:smtp.provider.invalid:25\nca_file = {c}/rsa.key\n"     # 11-12
            .format(c=c))
        self.assertEqual(rc, 1, out)
        for line, word in ((5, "does not match"), (7, "no private key found"),
                           (11, "cannot resolve relay"), (12, "ca_file")):
            self.assertIn("%s:%d: " % (path, line), out)
            self.assertIn(word, out.split("%s:%d: " % (path, line))[1].split("\n")[0])
        self.assertTrue(out.endswith("test failed\n"), out)

    def test_expired_certificate_warns(self):
        # start-up runs with it (and logs expired=yes at error): --check
        # passes, but says so
        rc, out, path = self.check(self.HEAD + "[tls]\ncert = {c}/expired.pem\nkey = {c}/expired.key\n"
                                   .format(c=CERTS) + self.INBOUND)
        self.assertEqual(rc, 0, out)
        self.assertIn("%s:4: warning: certificate %s/expired.pem expired on 2020-02-01T00:00:00Z"
                      % (path, CERTS), out)
        self.assertIn("test is successful", out)

    def test_soon_expiring_certificate_warns(self):
        rc, out, path = self.check(self.HEAD + "[tls]\ncert = {c}/soon.pem\nkey = {c}/soon.key\n"
                                   "cert = {c}/rsa.pem\nkey = {c}/rsa.key\n".format(c=CERTS)
                                   + self.INBOUND)
        self.assertEqual(rc, 0, out)
        m = re.search(r"%s:4: warning: certificate %s/soon.pem expires on \S+, in (\d+) days\n"
                      % (re.escape(path), re.escape(CERTS)), out)
        self.assertIsNotNone(m, out)
        # gen.sh makes it valid for 10 days: 10 whole days are left within its first second
        self.assertIn(int(m.group(1)), range(0, 11), out)
        self.assertNotIn("rsa.pem", out)  # not expiring: nothing said

    def test_missing_file(self):
        out = subprocess.run([BIN, "--check", "-c", os.path.join(self.tmp, "nope.ini")],
                             capture_output=True, timeout=10)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(b"nope.ini", out.stderr)

    def test_run_with_bad_config_exits(self):
        path = os.path.join(self.tmp, "bad.ini")
        with open(path, "w") as f:
            f.write("[proxy]\nbogus = 1\n")
        out = subprocess.run([BIN, "-c", path], capture_output=True, timeout=10)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(("%s:2:" % path).encode(), out.stderr)


class DaneResolver(unittest.TestCase):
    """DANE takes "validated" from the resolver's AD bit, which only a
    resolver on this host's loopback cannot have forged on its way: a
    route = mx listener under a DANE policy (the built-in default) behind any
    other resolver is warned about, with the line of [proxy] resolver (or
    naming /etc/resolv.conf when it is not set), by --check and at start-up.
    A warning, never a refusal. /etc/resolv.conf is replaced in a mount
    namespace of the proxy's own, and the start-up runs in a network
    namespace with only loopback, so no DNS query leaves the machine."""

    MX = "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = mx\n"
    WARNING = "warning: DANE trusts the AD bit of "

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, text):
        path = os.path.join(self.tmp, "c.ini")
        with open(path, "w") as f:
            f.write("[proxy]\nhostname = mx.example.test\ndns_timeout = 1s\n" + text)
        return path

    def in_namespace(self, resolv_conf, argv, net=False):
        """argv run with its own /etc/resolv.conf (and only loopback, net=True)."""
        rc = os.path.join(self.tmp, "resolv.conf")
        with open(rc, "w") as f:
            f.write(resolv_conf)
        script = ("%smount --bind %s /etc/resolv.conf && exec \"$@\""
                  % ("ip link set lo up && " if net else "", rc))
        return ["unshare", "-m"] + (["-n"] if net else []) + ["sh", "-c", script, "sh"] + argv

    def check(self, text, resolv_conf=None):
        path = self.write(text)
        argv = [BIN, "--check", "-c", path]
        if resolv_conf is not None:
            argv = self.in_namespace(resolv_conf, argv)
        out = subprocess.run(argv, capture_output=True, timeout=20)
        err = out.stderr.decode() + out.stdout.decode()
        if resolv_conf is not None and "unshare" in err and out.returncode != 0:
            self.skipTest("no mount namespace here: " + err)
        self.assertEqual(out.returncode, 0, err)
        self.assertIn("test is successful", err)
        return err, path

    def test_remote_resolver_warned_with_its_line(self):
        for resolver in ("198.51.100.53:53", "[2001:db8::53]:53", "10.0.0.1:5353"):
            out, path = self.check("resolver = %s\n" % resolver + self.MX)
            self.assertIn("%s:4: %sthe resolver %s ([proxy] resolver), which is not on a "
                          "loopback address" % (path, self.WARNING, resolver), out)

    def test_loopback_resolver_not_warned(self):
        for resolver in ("127.0.0.1:53", "127.0.1.53:5353", "[::1]:53"):
            out, _ = self.check("resolver = %s\n" % resolver + self.MX)
            self.assertNotIn(self.WARNING, out)

    def test_without_dane_or_route_mx_not_warned(self):
        out, _ = self.check("resolver = 198.51.100.53:53\n" + self.MX
                            + "[policy:default]\ntls = mta-sts\n[policy:a.test]\ntls = secure\n")
        self.assertNotIn(self.WARNING, out)
        # dane-only for one domain is enough
        out, _ = self.check("resolver = 198.51.100.53:53\n" + self.MX
                            + "[policy:default]\ntls = mta-sts\n[policy:a.test]\ntls = dane-only\n")
        self.assertIn(self.WARNING, out)
        # no route = mx listener: DANE is never used
        out, _ = self.check("resolver = 198.51.100.53:53\n[listener:out]\nmode = outbound\n"
                            "listen = 127.0.0.1:10025\nroute = relay:127.0.0.1:2525\n")
        self.assertNotIn(self.WARNING, out)

    def test_resolv_conf_named_when_no_resolver_is_set(self):
        out, path = self.check(self.MX, resolv_conf="search example.test\nnameserver 127.0.0.53\n"
                               "nameserver 192.0.2.53\n  nameserver\tfe80::1%eth0\n")
        self.assertIn("%s: %sthe nameservers of /etc/resolv.conf (192.0.2.53, fe80::1; [proxy] "
                      "resolver is not set)" % (path, self.WARNING), out)
        out, _ = self.check(self.MX, resolv_conf="nameserver 127.0.0.53\nnameserver ::1\n")
        self.assertNotIn(self.WARNING, out)

    def test_warned_at_start_up(self):
        path = self.write("resolver = 198.51.100.53:53\nlog_level = info\n" + self.MX)
        p = Process(self.in_namespace("", [BIN, "-c", path], net=True),
                    os.path.join(self.tmp, "proxy.log"))
        self.addCleanup(p.stop)
        self.assertTrue(poll(lambda: " start version=" in p.log() or not p.running(), 20),
                        p.log())
        if not p.running() and "unshare" in p.log():
            self.skipTest("no namespaces here: " + p.log())
        lines = [l for l in p.log().splitlines() if "dnssec WARNING: DANE trusts the AD bit" in l]
        self.assertEqual(len(lines), 1, p.log())
        self.assertIn("the resolver 198.51.100.53:53 ([proxy] resolver)", lines[0])
        self.assertTrue(lines[0].endswith("(%s:4)" % path), lines[0])
        self.assertEqual(p.stop(), 0, p.log())


class Flags(unittest.TestCase):
    def test_version(self):
        out = subprocess.run([BIN, "--version"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout.decode(), r"^smtp-tls-proxy \d+\.\d+")

    def test_help(self):
        out = subprocess.run([BIN, "--help"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        for flag in (b"--check", b"-c", b"--version"):
            self.assertIn(flag, out.stdout)

    def test_unknown_flag(self):
        out = subprocess.run([BIN, "--bogus"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertTrue(out.stderr)


class SessionLog(ProxyCase):
    def test_tls_session_line(self):
        c = self.ready_client(helo="log.example")
        self.assertEqual(self.send_message(c)[0], 250)
        c.cmd("QUIT")
        line = poll(lambda: self.proxy.log_lines("session"))
        self.assertEqual(len(line), 1, self.proxy.log())
        f = log_fields(line[0])
        self.assertRegex(f.get("client", ""), r"^127\.0\.0\.1:\d+$")
        self.assertEqual(f.get("tls"), "TLSv1.3")
        self.assertRegex(f.get("cipher", ""), r"^TLS_")
        self.assertEqual(f.get("backend"), "127.0.0.1:%d" % self.sink.port)
        self.assertEqual(f.get("messages"), "1")
        self.assertEqual(f.get("result"), "ok")
        self.assertRegex(f.get("duration", ""), r"^\d")
        self.assertIn("bytes_in", f)
        msg = self.proxy.log_lines("message")
        self.assertEqual(len(msg), 1)
        m = log_fields(msg[0])
        self.assertEqual(m.get("result"), "accepted")
        self.assertEqual(m.get("tls"), "TLSv1.3")

    def test_plaintext_session_line(self):
        c = self.ready_client(tls=False)
        c.cmd("QUIT")
        line = poll(lambda: self.proxy.log_lines("session"))
        f = log_fields(line[0])
        self.assertEqual(f.get("tls"), "none")
        self.assertEqual(f.get("messages"), "0")

    def test_one_line_per_session(self):
        for _ in range(3):
            c = self.ready_client(tls=False)
            c.cmd("QUIT")
            c.close()
        self.assertEqual(len(poll(lambda: len(self.proxy.log_lines("session")) == 3 and
                                  self.proxy.log_lines("session"))), 3)


class Shutdown(ProxyCase):
    def test_sigterm_with_idle_session_exits_cleanly(self):
        # stop_proxy asserts exit code 0 (and, under ASan, no leaks) while a
        # client is still connected and silent.
        c = self.ready_client()
        proxy = self.proxy
        self.stop_proxy()
        self.assertIn(" stop ", proxy.log())
        self.assertTrue(c.closed(5))

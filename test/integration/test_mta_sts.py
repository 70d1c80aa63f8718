"""MTA-STS policy fetch against a real HTTPS server.

One nginx (started by the test, stopped by PID) serves mta-sts.example.test
with a certificate from the test CA on a separate loopback port per case, and
test/mtasts/fetch (the proxy's fetch code in a small binary) fetches from it
and prints the result as JSON. The fetch connects to the address it is given;
the name is only for SNI, Host and verification, so no DNS is involved.

Env: STP_MTA_STS_FETCH (default bazel-bin/test/mtasts/fetch), so the same
tests run against the ASan+UBSan build.
"""
import json
import os
import shutil
import subprocess
import time
import unittest

from harness import ASAN, CERTS, ROOT, Process, free_port, poll, tmpdir, wait_port

FETCH = os.path.abspath(os.environ.get("STP_MTA_STS_FETCH",
                                       os.path.join(ROOT, "bazel-bin/test/mtasts/fetch")))
DOMAIN = "example.test"
POLICY = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmx: *.backup.example.test\nmax_age: 86400\n"


def leaf(tmp, name, san, ca):
    """A P-256 certificate for `san` signed by CERTS/<ca>.pem; returns (cert, key)."""
    key, csr, crt = (os.path.join(tmp, name + ext) for ext in (".key", ".csr", ".pem"))
    ext = os.path.join(tmp, name + ".cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" % san)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=" + san.split(":", 1)[1], "-keyout", key, "-out", csr],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(CERTS, ca + ".pem"),
                    "-CAkey", os.path.join(CERTS, ca + ".key"), "-CAcreateserial", "-CAserial",
                    os.path.join(tmp, ca + ".srl"), "-days", "2", "-extfile", ext, "-out", crt],
                   check=True, capture_output=True)
    return crt, key


class PolicyFetch(unittest.TestCase):
    """Each case is one server block of one nginx (started for each test: the
    runner runs every test on its own), on a port of its own."""

    def setUp(self):
        if not os.access(FETCH, os.X_OK):
            self.fail("no fetch binary at %s (bazel build //test/mtasts:fetch)" % FETCH)
        cls = self
        cls.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, cls.tmp, True)
        good_crt, good_key = leaf(cls.tmp, "mta-sts", "DNS:mta-sts.example.test", "ca")
        bad_crt, bad_key = leaf(cls.tmp, "untrusted", "DNS:mta-sts.example.test", "otherca")
        www = os.path.join(cls.tmp, "www")
        os.makedirs(os.path.join(www, "good", ".well-known"))
        with open(os.path.join(www, "good", ".well-known", "mta-sts.txt"), "w") as f:
            f.write(POLICY)
        cls.big_policy = POLICY + "".join("x%d: %s\n" % (i, "a" * 900) for i in range(80))
        assert len(cls.big_policy) > 65536
        # under the cap, but at 2 KB/s it takes half a minute
        cls.slow_policy = POLICY + "".join("x%d: %s\n" % (i, "a" * 900) for i in range(60))
        assert len(cls.slow_policy) < 65536
        files = {
            "big": cls.big_policy,
            "slow": cls.slow_policy,
            "dup": "version: STSv1\nmode: enforce\nmode: testing\nmx: mx.example.test\nmax_age: 1\n",
            "sub": POLICY.replace("mode: enforce", "mode: PLACEHOLDER"),
        }
        for name, text in files.items():
            os.makedirs(os.path.join(www, name, ".well-known"))
            with open(os.path.join(www, name, ".well-known", "mta-sts.txt"), "w") as f:
                f.write(text)
        cls.ports = {}
        blocks = []
        cases = {
            # name: (certificate, key, nginx directives)
            "good": (good_crt, good_key, "root %s/good;" % www),
            "chunked": (good_crt, good_key, "root %s/sub; sub_filter PLACEHOLDER enforce; "
                                            "sub_filter_types text/plain;" % www),
            "redirect": (good_crt, good_key,
                         "return 301 https://elsewhere.example.test/.well-known/mta-sts.txt;"),
            "notfound": (good_crt, good_key, "root %s/nothing;" % www),
            "html": (good_crt, good_key, "root %s/good; types { } default_type text/html;" % www),
            "big": (good_crt, good_key, "root %s/big;" % www),
            "slow": (good_crt, good_key, "root %s/slow; limit_rate 2k;" % www),
            "invalid": (good_crt, good_key, "root %s/dup;" % www),
            "wrongname": (os.path.join(CERTS, "wrongname.pem"), os.path.join(CERTS, "wrongname.key"),
                          "root %s/good;" % www),
            "untrusted": (bad_crt, bad_key, "root %s/good;" % www),
        }
        for name, (crt, key, body) in cases.items():
            port = free_port()
            cls.ports[name] = port
            blocks.append("""
    server {
        listen 127.0.0.1:%d ssl;
        server_name mta-sts.example.test;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location = /.well-known/mta-sts.txt { %s }
    }""" % (port, crt, key, body))
        conf = os.path.join(cls.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
user root;
worker_processes 1;
daemon off;
master_process off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log info;
events {}
http {
    access_log %(tmp)s/access.log;
    client_body_temp_path %(tmp)s; proxy_temp_path %(tmp)s; fastcgi_temp_path %(tmp)s;
    uwsgi_temp_path %(tmp)s; scgi_temp_path %(tmp)s;
    types { text/plain txt; }
    default_type application/octet-stream;
    %(blocks)s
}
""" % {"tmp": cls.tmp, "blocks": "\n".join(blocks)})
        cls.nginx = Process(["/usr/sbin/nginx", "-p", cls.tmp, "-c", conf, "-e",
                             os.path.join(cls.tmp, "nginx-stderr.log")],
                            os.path.join(cls.tmp, "nginx.out"))
        self.addCleanup(cls.nginx.stop)
        for port in cls.ports.values():
            wait_port(port)

    def fetch(self, case, timeout_ms=10000, ca=None, domain=DOMAIN, port=None,
              ips=("127.0.0.1",)):
        """Runs the fetch binary (on `ips` in that order, each at the port);
        returns the JSON result."""
        port = port or self.ports[case]
        argv = [FETCH, domain, ",".join("%s:%d" % (ip, port) for ip in ips), "--ca",
                ca or os.path.join(CERTS, "ca.pem"), "--timeout", str(timeout_ms)]
        t0 = time.time()
        out = subprocess.run(argv, capture_output=True, timeout=60 * (2 if ASAN else 1))
        self.elapsed = time.time() - t0
        self.assertNotEqual(out.returncode, 3, "handles left open: " + out.stderr.decode())
        self.assertEqual(out.stderr, b"", out.stderr.decode())
        result = json.loads(out.stdout)
        self.assertEqual(out.returncode, 0 if result["status"] == "ok" else 1)
        return result

    def test_good_policy(self):
        r = self.fetch("good")
        self.assertEqual(r["status"], "ok", r)
        self.assertEqual(r["http_status"], 200)
        self.assertEqual(r["policy"], {"mode": "enforce", "max_age": 86400,
                                       "mx": ["mx.example.test", "*.backup.example.test"]})
        # nginx logs a request once its response is sent: the line may come
        # a moment after the fetch has finished.
        line = '"GET /.well-known/mta-sts.txt HTTP/1.1" 200'
        access = os.path.join(self.tmp, "access.log")
        poll(lambda: line in open(access).read(), 5)
        with open(access) as f:
            self.assertIn(line, f.read())

    def test_domain_case_and_trailing_dot(self):
        r = self.fetch("good", domain="Example.TEST.")
        self.assertEqual(r["status"], "ok", r)

    def test_chunked_policy(self):
        r = self.fetch("chunked")
        self.assertEqual(r["status"], "ok", r)
        self.assertEqual(r["policy"]["mode"], "enforce")

    def test_redirect_not_followed(self):
        r = self.fetch("redirect")
        self.assertEqual(r["status"], "http")
        self.assertEqual(r["http_status"], 301)
        self.assertIn("redirects are not followed", r["error"])
        self.assertIn("elsewhere.example.test", r["error"])

    def test_not_found(self):
        r = self.fetch("notfound")
        self.assertEqual((r["status"], r["http_status"]), ("http", 404))
        self.assertIn("only 200 is accepted", r["error"])

    def test_text_html_refused(self):
        r = self.fetch("html")
        self.assertEqual((r["status"], r["http_status"]), ("http", 200))
        self.assertIn("'text/html' is not text/plain", r["error"])

    def test_over_64k_refused(self):
        r = self.fetch("big")
        self.assertEqual(r["status"], "too-big", r)
        self.assertEqual(r["error"], "body over 65536 bytes")

    def test_slow_body_hits_the_time_cap(self):
        r = self.fetch("slow", timeout_ms=2000)
        self.assertEqual(r["status"], "timeout", r)
        self.assertIn("within 2000 ms", r["error"])
        self.assertLess(self.elapsed, 10)
        self.assertGreaterEqual(r["elapsed_ms"], 1900)

    def test_invalid_policy(self):
        r = self.fetch("invalid")
        self.assertEqual(r["status"], "policy", r)
        self.assertEqual(r["error"], "invalid policy: line 3: duplicate 'mode' field")

    def test_wrong_certificate_name(self):
        r = self.fetch("wrongname")
        self.assertEqual(r["status"], "certificate", r)
        self.assertIn("wanted mta-sts.example.test", r["error"])
        self.assertIn("other.example.test", r["error"])
        self.assertEqual(r["http_status"], 0)  # nothing was requested

    def test_untrusted_ca(self):
        r = self.fetch("untrusted")
        self.assertEqual(r["status"], "certificate", r)
        self.assertIn("unable to get local issuer certificate", r["error"])

    def test_other_domain_name_refused(self):
        # the right server, but for another domain the certificate is wrong
        r = self.fetch("good", domain="example.org")
        self.assertEqual(r["status"], "certificate", r)
        self.assertIn("wanted mta-sts.example.org", r["error"])

    def test_system_store_does_not_trust_the_test_ca(self):
        out = subprocess.run([FETCH, DOMAIN, "127.0.0.1:%d" % self.ports["good"]],
                             capture_output=True, timeout=60)
        r = json.loads(out.stdout)
        self.assertEqual((out.returncode, r["status"]), (1, "certificate"))

    def test_connection_refused(self):
        r = self.fetch(None, port=free_port())
        self.assertEqual(r["status"], "connect", r)
        self.assertIn("connection refused", r["error"])

    def test_next_address_after_a_refused_one(self):
        """mta-sts.DOMAIN has several addresses and the first refuses the
        connection (nothing listens on 127.0.0.61): the next one is tried,
        within the same time cap, and its policy taken."""
        r = self.fetch("good", ips=("127.0.0.61", "127.0.0.1"))
        self.assertEqual(r["status"], "ok", r)
        self.assertEqual(r["policy"]["mode"], "enforce")

    def test_every_address_refused_names_each(self):
        r = self.fetch("good", ips=("127.0.0.61", "127.0.0.62"))
        self.assertEqual(r["status"], "connect", r)
        self.assertIn("at any address", r["error"])
        for ip in ("127.0.0.61", "127.0.0.62"):
            self.assertIn("%s:%d: connection refused" % (ip, self.ports["good"]), r["error"])

    def test_a_tls_failure_is_not_a_reason_for_the_next_address(self):
        # the first address answers with a wrong certificate: that is the
        # policy host's answer (an attacker's, perhaps), not an address that
        # is down, so no other address is asked
        r = self.fetch("wrongname", ips=("127.0.0.1", "127.0.0.61"))
        self.assertEqual(r["status"], "certificate", r)
        self.assertNotIn("127.0.0.61", r["error"])

    def test_silent_server_hits_the_time_cap(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        t0 = time.time()
        r = self.fetch(None, timeout_ms=500, port=s.getsockname()[1])
        self.assertEqual(r["status"], "timeout", r)
        # the cap, not a default or the handshake's own timer (slack for ASan)
        self.assertGreaterEqual(time.time() - t0, 0.45)
        self.assertLess(time.time() - t0, 5)


class CloseDelimited(unittest.TestCase):
    """A policy whose end is the end of the connection (HTTP/1.0, no
    Content-Length) is taken only if TLS ends with close_notify: a bare TCP
    FIN could be an attacker cutting the policy short. And connections that
    end too early. The server is a python ssl socket in a thread of the test."""

    CLOSE_DELIMITED = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + POLICY.encode()

    def serve(self, clean, response=CLOSE_DELIMITED, handshake=True):
        import socket
        import ssl
        import threading
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        crt, key = leaf(tmp, "mta-sts", "DNS:mta-sts.example.test", "ca")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        self.addCleanup(lsock.close)
        self.got = b""

        def run():
            conn, _ = lsock.accept()
            if not handshake:
                conn.close()  # before the ServerHello
                return
            with ctx.wrap_socket(conn, server_side=True) as s:
                while b"\r\n\r\n" not in self.got:
                    data = s.recv(4096)
                    if not data:
                        return
                    self.got += data
                s.sendall(response)
                if clean:
                    try:
                        s.unwrap()  # close_notify, then wait for the client's
                    except (ssl.SSLError, OSError):
                        pass  # the client closes without answering it
                # else: closing the socket sends a FIN without close_notify

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.addCleanup(t.join, 10)
        return lsock.getsockname()[1]

    def fetch(self, port):
        out = subprocess.run([FETCH, DOMAIN, "127.0.0.1:%d" % port, "--ca",
                              os.path.join(CERTS, "ca.pem"), "--timeout", "10000"],
                             capture_output=True, timeout=60)
        self.assertEqual(out.stderr, b"")
        return json.loads(out.stdout)

    def test_close_notify_ends_the_policy(self):
        r = self.fetch(self.serve(clean=True))
        self.assertEqual(r["status"], "ok", r)
        self.assertEqual(r["policy"]["mx"], ["mx.example.test", "*.backup.example.test"])
        self.assertIn(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.test:", self.got)
        self.assertIn(b"\r\nConnection: close\r\n", self.got)

    def test_fin_without_close_notify_is_refused(self):
        r = self.fetch(self.serve(clean=False))
        self.assertEqual(r["status"], "io", r)
        self.assertIn("without TLS close_notify", r["error"])

    def test_closed_during_handshake(self):
        r = self.fetch(self.serve(clean=False, handshake=False))
        self.assertEqual(r["status"], "tls", r)
        self.assertIn("connection closed during the TLS handshake", r["error"])

    def test_body_cut_short(self):
        cut = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n" +
               POLICY.encode())
        r = self.fetch(self.serve(clean=True, response=cut))
        self.assertEqual(r["status"], "io", r)
        self.assertEqual(r["error"], "connection closed before the end of the body")
        self.assertEqual(r["http_status"], 200)

    def test_headers_cut_short(self):
        r = self.fetch(self.serve(clean=True, response=b"HTTP/1.1 200 OK\r\nContent-Type: te"))
        self.assertEqual(r["status"], "io", r)
        self.assertEqual(r["error"], "connection closed before the end of the headers")

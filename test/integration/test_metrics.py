"""Metrics endpoint: known traffic, then the exact counters in /metrics
(fetched with curl), /healthz, /readyz (503 while draining), 404 and
refused requests.

Traffic: 3 inbound sessions with STARTTLS (TLS 1.3), two of them sending one
message each; 1 plaintext inbound session; 1 outbound session whose next hop
strips STARTTLS under tls = encrypt (a refused downgrade).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (BODY, CERTS, Client, NextHop, Proxy, Sink, free_port, log_fields, poll,
                     tmpdir)
from test_outbound import attempt


def curl(port, path, *args):
    """(status, body) of one request made by curl."""
    out = subprocess.run(["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", *args,
                          "http://127.0.0.1:%d%s" % (port, path)],
                         stdout=subprocess.PIPE, check=False).stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def series(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    got = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        got[key] = float(value)
    return got


def raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    finally:
        s.close()


class Metrics(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.hop = NextHop(self.tmp, "strip")
        self.addCleanup(self.hop.stop)
        self.mport = free_port()
        self.proxy = Proxy(self.tmp, {
            "in": {"backend": "127.0.0.1:%d" % self.sink.port},
            "out": {"mode": "outbound", "route": "relay:127.0.0.1:%d" % self.hop.port,
                    "tls": "encrypt"},
        }, proxy_extra={"metrics": "127.0.0.1:%d" % self.mport})
        self.addCleanup(self.proxy.stop)

    def session(self, tls, message):
        c = Client(self.proxy.port("in"))
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            if tls:
                c.starttls()
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
            if message:
                self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                c.send(BODY + b".\r\n")
                self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            c.close()

    def test_counters_after_known_traffic(self):
        self.session(True, True)
        self.session(True, True)
        self.session(True, False)
        self.session(False, False)
        got = attempt(self.proxy.port("out"))
        self.assertEqual(got[0], "refused", got)
        self.assertIn(" 4.7.4 ", " " + got[2])
        # every session has ended (and logged) before the scrape
        poll(lambda: len(self.proxy.log_lines("session")) >= 5)
        self.assertEqual(len(self.proxy.log_lines("session")), 5, self.proxy.log())
        sizes = [int(log_fields(l)["size"]) for l in self.proxy.log_lines("message")]
        self.assertEqual(len(sizes), 2)
        self.assertGreaterEqual(min(sizes), len(BODY) - 1)

        code, text = curl(self.mport, "/metrics", "-D", self.tmp + "/headers")
        self.assertEqual(code, 200, text)
        headers = open(self.tmp + "/headers").read().lower()
        self.assertIn("content-type: text/plain; version=0.0.4", headers)
        self.assertIn("connection: close", headers)
        m = series(text)
        want = {
            'stp_sessions_total{listener="in",tls="TLSv1.3"}': 3,
            'stp_sessions_total{listener="in",tls="none"}': 1,
            'stp_sessions_total{listener="out",tls="none"}': 1,
            'stp_sessions_active{listener="in"}': 0,
            'stp_sessions_active{listener="out"}': 0,
            'stp_starttls_total{listener="in",result="offered",reason=""}': 4,
            'stp_starttls_total{listener="in",result="accepted",reason=""}': 3,
            'stp_tls_handshakes_total{listener="in",side="server",version="TLSv1.3",result="ok"}': 3,
            'stp_tls_handshake_seconds_count{listener="in",side="server"}': 3,
            'stp_downgrades_refused_total{listener="out",level="encrypt",reason="not_offered"}': 1,
            'stp_policy_decisions_total{listener="out",source="config",decision="refused"}': 1,
            'stp_messages_total{listener="in",result="accepted"}': 2,
            'stp_message_bytes_total{listener="in"}': sum(sizes),
        }
        for k, v in want.items():
            self.assertEqual(m.get(k), v, "%s in\n%s" % (k, text))
        # nothing else was counted: no refusals, failures or client-side handshakes
        for k in m:
            self.assertFalse(k.startswith("stp_connections_refused_total"), k)
            self.assertNotIn('result="failed"', k)
            self.assertNotIn('side="client"', k)
        self.assertEqual(m['stp_tls_handshake_seconds_bucket{listener="in",side="server",le="+Inf"}'], 3)

    def test_failed_handshakes_counted_whatever_ended_them(self):
        """A client handshake refused (garbage), given up by the client
        (closed) or timed out: each a failed TLS handshake in
        stp_tls_handshakes_total and the histogram, beside its
        stp_starttls_total reason (only the refused one was counted there:
        a handshake slowloris left the failure counters flat)."""
        p = Proxy(self.tmp, {"hs": {"backend": "127.0.0.1:%d" % self.sink.port,
                                    "handshake_timeout": "1s"}},
                  proxy_extra={"metrics": "127.0.0.1:%d" % self.mport2()})
        self.addCleanup(p.stop)
        for how in ("garbage", "close", "silence"):
            c = Client(p.port("hs"))
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            if how == "garbage":
                c.send(b"this is not a TLS record\r\n" * 4)
            elif how == "close":
                c.send(b"\x16\x03\x01\x00\x80")  # a ClientHello's header, no body
                time.sleep(0.2)
            c.closed(5) if how != "close" else None
            c.close()
        poll(lambda: len(p.log_lines("session")) >= 3, 10)
        m = series(curl(self.mport2(), "/metrics")[1])
        for reason in ("handshake", "closed", "timeout"):
            self.assertEqual(m.get('stp_starttls_total{listener="hs",result="failed",'
                                   'reason="%s"}' % reason), 1, (reason, m))
        self.assertEqual(m.get('stp_tls_handshakes_total{listener="hs",side="server",'
                               'version="none",result="failed"}'), 3, m)
        self.assertEqual(m.get('stp_tls_handshake_seconds_count{listener="hs",side="server"}'),
                         3, m)

    def mport2(self):
        if not hasattr(self, "_mport2"):
            self._mport2 = free_port()
        return self._mport2

    def test_certificate_expiry_follows_the_configuration(self):
        # a reload that drops a certificate drops its expiry series: an alert
        # on it would fire for a certificate nobody serves any more
        old = os.path.join(CERTS, "rsa.pem")
        self.assertIn('cert="%s"' % old, curl(self.mport, "/metrics")[1])
        d = os.path.join(self.tmp, "renewed")
        os.makedirs(d)
        for f in ("rsa.pem", "rsa.key"):
            shutil.copy(os.path.join(CERTS, f), os.path.join(d, f))
        with open(self.proxy.ini) as f:
            ini = f.read()
        with open(self.proxy.ini, "w") as f:
            f.write(ini.replace("cert = %s" % old, "cert = %s/rsa.pem" % d)
                       .replace("key = %s/rsa.key" % CERTS, "key = %s/rsa.key" % d))
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.assertTrue(poll(lambda: "reload result=ok" in self.proxy.log()), self.proxy.log())
        m = series(curl(self.mport, "/metrics")[1])
        certs = sorted(k for k in m if k.startswith("stp_certificate_expiry_timestamp_seconds"))
        self.assertEqual(certs, sorted('stp_certificate_expiry_timestamp_seconds{cert="%s"}' % c
                                       for c in (os.path.join(CERTS, "ecdsa.pem"),
                                                 os.path.join(d, "rsa.pem"))), certs)

    def test_health_ready_and_refusals(self):
        self.assertEqual(curl(self.mport, "/healthz"), (200, "ok\n"))
        self.assertEqual(curl(self.mport, "/readyz"), (200, "ready\n"))
        self.assertEqual(curl(self.mport, "/nope")[0], 404)
        self.assertEqual(curl(self.mport, "/metrics", "-X", "POST")[0], 405)
        self.assertEqual(curl(self.mport, "/healthz", "-I")[0], 200)
        self.assertEqual(curl(self.mport, "/healthz", "--http1.0")[0], 200)
        big = raw(self.mport, b"GET / HTTP/1.1\r\nX: " + b"x" * 5000 + b"\r\n\r\n")
        self.assertTrue(big.startswith(b"HTTP/1.1 431 "), big[:80])
        bare = raw(self.mport, b"GET /metrics HTTP/1.1\nHost: x\n\n")
        self.assertTrue(bare.startswith(b"HTTP/1.1 400 "), bare[:80])
        # a silent client is dropped by the read timer
        s = socket.create_connection(("127.0.0.1", self.mport), timeout=10)
        t0 = time.time()
        self.assertEqual(s.recv(10), b"")
        self.assertLess(time.time() - t0, 9)
        s.close()

        # draining: /readyz says 503 while a message in flight keeps the
        # process up
        c = Client(self.proxy.port("in"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        for cmd, code in (("EHLO client.example", 250), ("MAIL FROM:<a@example.test>", 250),
                          ("RCPT TO:<b@example.test>", 250), ("DATA", 354)):
            self.assertEqual(c.cmd(cmd)[0], code)
        c.send(BODY)
        self.proxy.proc._signal(signal.SIGTERM)
        self.assertTrue(poll(lambda: "draining=yes" in self.proxy.log()))
        self.assertEqual(curl(self.mport, "/readyz"), (503, "draining\n"))
        self.assertEqual(curl(self.mport, "/healthz")[0], 200)
        c.send(b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.close()
        # it exits by itself once drained (a second SIGTERM could land after
        # its signal handlers are gone)
        self.assertTrue(poll(lambda: not self.proxy.proc.running(), timeout=30))
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-3000:])


class Connections(unittest.TestCase):
    """The endpoint's connection table (32) and timers: probes are answered
    while idle connections fill it, and an answer nobody reads is dropped."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.mport = free_port()

    def start(self, names):
        self.proxy = Proxy(self.tmp, {n: {"backend": "127.0.0.1:%d" % self.sink.port}
                                      for n in names},
                           proxy_extra={"metrics": "127.0.0.1:%d" % self.mport})
        self.addCleanup(self.proxy.stop)

    def test_probe_answered_while_idle_connections_fill_the_table(self):
        self.start(["in"])
        before = len(self.proxy.log())
        idle = []
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", self.mport), timeout=10)
            self.addCleanup(s.close)
            idle.append(s)
        # Within the idle connections' 5 s read timer (after it, a table that
        # refuses newcomers would have room again and prove nothing).
        t0 = time.time()
        self.assertEqual(poll(lambda: curl(self.mport, "/healthz") == (200, "ok\n"), timeout=2),
                         True)
        self.assertEqual(curl(self.mport, "/readyz"), (200, "ready\n"))
        self.assertLess(time.time() - t0, 4.5)
        # the oldest idle connections made room: closed, without an answer
        idle[0].settimeout(5)
        self.assertEqual(idle[0].recv(10), b"")
        alarming = [l for l in self.proxy.log()[before:].splitlines()
                    if l.split()[1:2] in (["warn"], ["error"])]
        self.assertEqual(alarming, [])
        self.assertTrue(self.proxy.proc.running())

    def test_unread_answer_is_dropped_by_the_write_timer(self):
        # /metrics larger than what the sockets buffer: a TLS session on each
        # of 32 listeners with long names gives about 80 KB.
        names = ["l%02d_%s" % (i, "x" * 55) for i in range(32)]
        self.start(names)
        for n in names:
            c = Client(self.proxy.port(n))
            try:
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                c.starttls()
                self.assertEqual(c.cmd("QUIT")[0], 221)
            finally:
                c.close()
        self.assertTrue(poll(lambda: len(self.proxy.log_lines("session")) >= len(names)))
        code, text = curl(self.mport, "/metrics")
        self.assertEqual(code, 200)
        self.assertGreater(len(text), 65536)
        # a scraper that asks and then never reads: tiny receive window
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.mport))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(12)  # deliberate: the 10 s write timer must fire meanwhile
        got = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except ConnectionResetError:
            pass
        head, _, body = got.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:80])
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        # cut short: the proxy gave up on the write instead of holding the
        # connection (and its slot) for as long as the client stalls
        self.assertLess(len(body), length)
        self.assertTrue(self.proxy.proc.running())


if __name__ == "__main__":
    unittest.main()

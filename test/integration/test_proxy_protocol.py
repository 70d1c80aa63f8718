"""PROXY protocol on an inbound listener (proxy_protocol = yes): a real
haproxy in front (send-proxy and send-proxy-v2), clients connecting to it
from other loopback addresses (127.0.0.2, 127.0.0.3) so that the real client
address differs from haproxy's (127.0.0.1, the only proxy_from network).

Checked: the backend's Received: header and the proxy's log carry the
original client address; per-IP limits count the original address, so the
check happens after the header; a direct connection from an address outside
proxy_from and a malformed header from an allowed one are closed without a
greeting and logged.
"""
import os
import shutil
import smtplib
import socket
import struct
import unittest

from harness import (BODY, Process, Proxy, Sink, free_port, log_fields, parse_trace, poll,
                     split_trace, tmpdir)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class Haproxy:
    """haproxy in the foreground with one TCP frontend per (port, server option)."""

    def __init__(self, tmp, target_port, options):
        self.ports = {}
        lines = ["global", "    maxconn 100", "defaults", "    mode tcp",
                 "    timeout connect 5s", "    timeout client 30s", "    timeout server 30s"]
        for name, opt in options.items():
            port = free_port()
            self.ports[name] = port
            lines += ["frontend f_%s" % name, "    bind 127.0.0.1:%d" % port,
                      "    default_backend b_%s" % name,
                      "backend b_%s" % name,
                      "    server s1 127.0.0.1:%d %s" % (target_port, opt)]
        self.cfg = os.path.join(tmp, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = Process([HAPROXY, "-db", "-f", self.cfg], self.cfg + ".log")
        for port in self.ports.values():
            if not poll(lambda p=port: listening(p)):
                raise RuntimeError("haproxy did not listen:\n" + self.proc.log())

    def stop(self):
        self.proc.stop()


def listening(port):
    """True once something listens on 127.0.0.1:port (read from /proc, so
    no connection is made)."""
    want = ":%04X" % port
    for path in ("/proc/net/tcp",):
        with open(path) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(want) and cols[3] == "0A":
                    return True
    return False


@unittest.skipUnless(os.path.exists(HAPROXY), "haproxy not installed (deploy/install-deps.sh)")
class ProxyProtocol(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.proxy = Proxy(self.tmp, {"in": {
            "backend": "127.0.0.1:%d" % self.sink.port, "proxy_protocol": "yes",
            "proxy_from": "127.0.0.1/32", "max_connections_per_ip": "1"}})
        self.addCleanup(self.proxy.stop)
        self.ha = Haproxy(self.tmp, self.proxy.port("in"),
                          {"v1": "send-proxy", "v2": "send-proxy-v2"})
        self.addCleanup(self.ha.stop)

    def send_via(self, name, source):
        s = smtplib.SMTP(timeout=10, source_address=(source, 0))
        s.connect("127.0.0.1", self.ha.ports[name])
        port = s.sock.getsockname()[1]
        s.ehlo("client.example")
        s.sendmail("a@example.test", ["b@example.test"], BODY)
        s.quit()
        return port

    def check_version(self, name, version):
        port = self.send_via(name, "127.0.0.2")
        header, _ = split_trace(self.sink.messages()[-1])
        self.assertEqual(parse_trace(header)["ip"], "127.0.0.2", header)
        poll(lambda: self.proxy.log_lines("session"))
        pp = [log_fields(l) for l in self.proxy.log_lines("proxy_protocol")]
        self.assertEqual([(f["client"], f["version"]) for f in pp],
                         [("127.0.0.2:%d" % port, version)], self.proxy.log())
        self.assertTrue(pp[0]["via"].startswith("127.0.0.1:"), pp)
        sess = [log_fields(l) for l in self.proxy.log_lines("session")]
        self.assertEqual([f["client"] for f in sess], ["127.0.0.2:%d" % port], self.proxy.log())

    def test_v1_via_haproxy(self):
        self.check_version("v1", "1")

    def test_v2_via_haproxy(self):
        self.check_version("v2", "2")

    def test_limits_use_the_real_address(self):
        # two clients behind the same haproxy: one connection each is allowed
        a = socket.create_connection(("127.0.0.1", self.ha.ports["v2"]), timeout=10,
                                     source_address=("127.0.0.2", 0))
        self.addCleanup(a.close)
        self.assertTrue(a.recv(512).startswith(b"220 "))
        b = socket.create_connection(("127.0.0.1", self.ha.ports["v2"]), timeout=10,
                                     source_address=("127.0.0.3", 0))
        self.addCleanup(b.close)
        self.assertTrue(b.recv(512).startswith(b"220 "))
        # a second one from 127.0.0.2 is over its per-IP limit
        c = socket.create_connection(("127.0.0.1", self.ha.ports["v1"]), timeout=10,
                                     source_address=("127.0.0.2", 0))
        self.addCleanup(c.close)
        self.assertTrue(c.recv(512).startswith(b"421 4.7.0 "))

    def test_direct_from_outside_proxy_from_is_closed(self):
        s = socket.create_connection(("127.0.0.1", self.proxy.port("in")), timeout=10,
                                     source_address=("127.0.0.3", 0))
        self.addCleanup(s.close)
        s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 25\r\n")
        # no greeting, closed; the close may arrive as a reset when the
        # proxy never read the header it was sent (TCP's rule, RFC 1122)
        try:
            got = s.recv(512)
        except ConnectionResetError:
            got = b""
        self.assertEqual(got, b"")
        self.assertTrue(poll(lambda: self.proxy.log_lines("proxy_protocol")))
        f = log_fields(self.proxy.log_lines("proxy_protocol")[0])
        self.assertEqual(f["result"], "denied")
        self.assertTrue(f["client"].startswith("127.0.0.3:"), f)
        self.assertEqual(self.sink.messages(), [])

    def test_malformed_header_is_closed(self):
        for bad in (b"EHLO x\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 25\r\n",
                    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + struct.pack("!I", 0)):
            s = socket.create_connection(("127.0.0.1", self.proxy.port("in")), timeout=10)
            s.sendall(bad)
            self.assertEqual(s.recv(512), b"", bad)
            s.close()
        self.assertTrue(poll(lambda: len(self.proxy.log_lines("proxy_protocol")) == 3))
        for l in self.proxy.log_lines("proxy_protocol"):
            self.assertEqual(log_fields(l)["result"], "invalid", l)


class MappedAddress(unittest.TestCase):
    """A load balancer on a dual-stack socket sends an IPv4 client as
    ::ffff:a.b.c.d: that is an IPv4 client for the Received header, the
    logs and XCLIENT, not an IPv6 one."""

    def test_ipv4_mapped_source_is_ipv4(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        sink = Sink(tmp)
        self.addCleanup(sink.stop)
        proxy = Proxy(tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port,
                                   "proxy_protocol": "yes", "proxy_from": "127.0.0.1/32"}})
        self.addCleanup(proxy.stop)
        s = socket.create_connection(("127.0.0.1", proxy.port("in")), timeout=10)
        self.addCleanup(s.close)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                self.assertTrue(line, "closed by the proxy")
                if line[3:4] != b"-":
                    return int(line[:3])

        s.sendall(b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:127.0.0.1 40000 25\r\n")
        self.assertEqual(reply(), 220)
        for cmd, code in ((b"EHLO client.example", 250), (b"MAIL FROM:<a@example.test>", 250),
                          (b"RCPT TO:<b@example.test>", 250), (b"DATA", 354)):
            s.sendall(cmd + b"\r\n")
            self.assertEqual(reply(), code, cmd)
        s.sendall(BODY + b".\r\n")
        self.assertEqual(reply(), 250)
        s.sendall(b"QUIT\r\n")
        self.assertEqual(reply(), 221)
        header, _ = split_trace(sink.messages()[-1])
        self.assertEqual(parse_trace(header)["ip"], "192.0.2.7", header)
        self.assertTrue(poll(lambda: proxy.log_lines("session")))
        sess = [log_fields(l) for l in proxy.log_lines("session")]
        self.assertEqual([x["client"] for x in sess], ["192.0.2.7:40000"], proxy.log())


class HeaderTimeout(unittest.TestCase):
    """An allowed peer that sends no PROXY header, or only part of one, is
    closed without a greeting after 5 s (README: a load balancer sends it at
    once), logged proxy_protocol result=timeout; nothing reaches the
    backend, and the session's slot (max_connections) is given back."""

    def test_silent_and_partial_headers_time_out(self):
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        sink = Sink(tmp)
        self.addCleanup(sink.stop)
        proxy = Proxy(tmp, {"in": {"backend": "127.0.0.1:%d" % sink.port,
                                   "proxy_protocol": "yes", "proxy_from": "127.0.0.1/32",
                                   "max_connections": "2"}})
        self.addCleanup(proxy.stop)
        socks = []
        for first in (b"", b"PROXY TCP4 192.0.2.9 127.0.0.1 4"):
            s = socket.create_connection(("127.0.0.1", proxy.port("in")), timeout=15)
            self.addCleanup(s.close)
            s.sendall(first)
            socks.append(s)
        for s in socks:
            self.assertEqual(s.recv(512), b"", "no greeting before the header, then closed")
        self.assertTrue(poll(lambda: len(proxy.log_lines("proxy_protocol")) == 2))
        for l in proxy.log_lines("proxy_protocol"):
            self.assertEqual(log_fields(l)["result"], "timeout", l)
        self.assertTrue(poll(lambda: len(proxy.log_lines("session")) == 2))
        for l in proxy.log_lines("session"):
            self.assertEqual(log_fields(l)["result"], "proxy-protocol", l)
        self.assertEqual(sink.lines(), [], "the backend was contacted")
        # both slots are free again: a well-behaved load balancer gets through
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", proxy.port("in")), timeout=10)
            self.addCleanup(s.close)
            s.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n")
            self.assertTrue(s.recv(512).startswith(b"220 "))


class HeaderAndClientHelloTogether(unittest.TestCase):
    """Implicit TLS behind a load balancer that sends the PROXY header and
    the client's ClientHello in one segment: the bytes behind the header
    are the handshake's (they used to be taken for plaintext and held, and
    the session died at the handshake timeout)."""

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sink = Sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.proxy = Proxy(self.tmp, {"in": {
            "backend": "127.0.0.1:%d" % self.sink.port, "starttls": "implicit",
            "proxy_protocol": "yes", "proxy_from": "127.0.0.1/32", "handshake_timeout": "20s"}})
        self.addCleanup(self.proxy.stop)

    def test_one_send(self):
        import ssl
        from harness import client_ctx
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ctx().wrap_bio(incoming, outgoing, server_hostname="mx.example.test")
        s = socket.create_connection(("127.0.0.1", self.proxy.port("in")), timeout=10)
        self.addCleanup(s.close)

        def pump(step):
            """Runs step() on the TLS object, moving bytes until it succeeds."""
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    out = outgoing.read()
                    if out:
                        s.sendall(out)
                    data = s.recv(65536)
                    self.assertTrue(data, "closed by the proxy")
                    incoming.write(data)
                finally:
                    out = outgoing.read()
                    if out:
                        s.sendall(out)

        with self.assertRaises(ssl.SSLWantReadError):
            tls.do_handshake()
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 465\r\n" + outgoing.read())
        pump(tls.do_handshake)
        self.assertTrue(pump(lambda: tls.read(4096)).startswith(b"220 "))
        tls.write(b"EHLO client.example\r\n")
        self.assertTrue(pump(lambda: tls.read(4096)).startswith(b"250"))
        tls.write(b"QUIT\r\n")
        self.assertTrue(pump(lambda: tls.read(4096)).startswith(b"221"))
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")))
        f = log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual((f["client"], f["tls"], f["result"]), ("192.0.2.7:40000", "TLSv1.3", "ok"),
                         f)


if __name__ == "__main__":
    unittest.main()
